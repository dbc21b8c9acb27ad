//! Where a password comes from, read at build time and never printed:
//! a file (`password_file`), an environment variable (`password_env`) or a
//! systemd credential (`password_credential`, read from
//! `$CREDENTIALS_DIRECTORY/<name>`, what `LoadCredential=` provides).

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::{BuildError, FileError};
use crate::Problems;

/// The password keys of a backend with a login ([`crate::endpoint::HostList`]);
/// at most one is set. Whichever is set overrides a password in the URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PasswordSource {
    /// A file whose first line is the password. Relative paths are resolved
    /// against the config file's directory.
    pub password_file: Option<PathBuf>,
    /// The name of an environment variable holding the password (read once,
    /// when the backend is built).
    pub password_env: Option<String>,
    /// The name of a systemd credential (`LoadCredential=<name>:<file>` in
    /// the unit): the password is the first line of
    /// `$CREDENTIALS_DIRECTORY/<name>`.
    pub password_credential: Option<String>,
}

/// The keys of [`PasswordSource`], for messages.
pub const PASSWORD_KEYS: &str = "password_file, password_env or password_credential";

impl PasswordSource {
    /// Whether any source is set.
    pub fn is_set(&self) -> bool {
        self.password_file.is_some()
            || self.password_env.is_some()
            || self.password_credential.is_some()
    }

    /// The key of the source that is set (the first, if several are).
    pub fn key(&self) -> &'static str {
        if self.password_env.is_some() {
            "password_env"
        } else if self.password_credential.is_some() {
            "password_credential"
        } else {
            "password_file"
        }
    }

    /// Reports an empty value, a credential name that is a path, or more
    /// than one source.
    pub fn validate(&self, problems: &mut Problems<'_>) {
        let set = [
            self.password_file.is_some(),
            self.password_env.is_some(),
            self.password_credential.is_some(),
        ];
        if set.iter().filter(|s| **s).count() > 1 {
            problems.push(self.key(), format!("set only one of {PASSWORD_KEYS}"));
        }
        if self
            .password_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            problems.push("password_file", "must not be empty");
        }
        if let Some(var) = &self.password_env {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                problems.push(
                    "password_env",
                    "must be the name of an environment variable",
                );
            }
        }
        if let Some(name) = &self.password_credential {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                problems.push(
                    "password_credential",
                    "must be a credential name (LoadCredential=<name>:...), not a path",
                );
            }
        }
    }

    /// Reads the password, if a source is set. Errors name the source (the
    /// file, the variable), never the password.
    pub fn read(&self) -> Result<Option<Zeroizing<String>>, BuildError> {
        if let Some(path) = &self.password_file {
            return read_password_file("password_file", path).map(Some);
        }
        if let Some(var) = &self.password_env {
            let value = std::env::var_os(var).ok_or_else(|| {
                BuildError::invalid(
                    "password_env",
                    format!("environment variable {var} is not set"),
                )
            })?;
            let value = Zeroizing::new(value.into_string().map_err(|_| {
                BuildError::invalid(
                    "password_env",
                    format!("environment variable {var} is not UTF-8"),
                )
            })?);
            return first_line(&value)
                .ok_or_else(|| {
                    BuildError::invalid(
                        "password_env",
                        format!("environment variable {var} is empty"),
                    )
                })
                .map(Some);
        }
        if let Some(name) = &self.password_credential {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                BuildError::invalid(
                    "password_credential",
                    "$CREDENTIALS_DIRECTORY is not set (start keygate from a systemd unit \
                     with LoadCredential=)",
                )
            })?;
            return read_password_file("password_credential", &Path::new(&dir).join(name))
                .map(Some);
        }
        Ok(None)
    }
}

/// The first line of `text` without its terminator, if not empty.
fn first_line(text: &str) -> Option<Zeroizing<String>> {
    let line = text.lines().next().unwrap_or("");
    (!line.is_empty()).then(|| Zeroizing::new(line.to_owned()))
}

/// Reads a password file: the first line, without its line terminator.
/// Errors name the key and the file, never its content.
pub fn read_password_file(key: &'static str, path: &Path) -> Result<Zeroizing<String>, BuildError> {
    let raw =
        Zeroizing::new(std::fs::read_to_string(path).map_err(|e| FileError::new(key, path, e))?);
    first_line(&raw).ok_or_else(|| BuildError::invalid(key, format!("{} is empty", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(s: &PasswordSource) -> Vec<String> {
        let mut list = Vec::new();
        s.validate(&mut Problems::new("backend[0]", &mut list));
        list.into_iter().map(|p| p.to_string()).collect()
    }

    /// `password_file`: the first line; an empty or missing file is an
    /// error naming the key and the file, never the content.
    #[test]
    fn password_file_gives_its_first_line_and_never_shows_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\nsecond line\n").unwrap();
        let source = PasswordSource {
            password_file: Some(p.clone()),
            ..PasswordSource::default()
        };
        assert_eq!(source.read().unwrap().unwrap().as_str(), "s3cret");
        std::fs::write(&p, "\n").unwrap();
        let e = source.read().unwrap_err().to_string();
        assert!(
            e.starts_with("password_file: ") && e.ends_with("is empty"),
            "{e}"
        );
        let missing = dir.path().join("missing");
        let e = read_password_file("password_file", &missing).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "password_file: cannot read {}: No such file or directory",
                missing.display()
            )
        );
    }

    /// `password_env`: the variable's value; an unset variable names the
    /// variable.
    #[test]
    fn password_env_reads_the_named_variable() {
        // A variable no other test uses, set once: tests run in threads.
        std::env::set_var("KEYGATE_TEST_SECRET_ENV_PW", "from-env\n");
        let source = PasswordSource {
            password_env: Some("KEYGATE_TEST_SECRET_ENV_PW".into()),
            ..PasswordSource::default()
        };
        assert_eq!(source.read().unwrap().unwrap().as_str(), "from-env");
        let unset = PasswordSource {
            password_env: Some("KEYGATE_TEST_SECRET_ENV_UNSET".into()),
            ..PasswordSource::default()
        };
        assert_eq!(
            unset.read().unwrap_err().to_string(),
            "password_env: environment variable KEYGATE_TEST_SECRET_ENV_UNSET is not set"
        );
    }

    /// `password_credential`: `$CREDENTIALS_DIRECTORY/<name>`, as systemd's
    /// `LoadCredential=` provides it. The only test that sets
    /// CREDENTIALS_DIRECTORY, so it runs alone in its thread safely.
    #[test]
    fn password_credential_reads_from_the_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db-password"), "from-credential\n").unwrap();
        let source = PasswordSource {
            password_credential: Some("db-password".into()),
            ..PasswordSource::default()
        };
        std::env::remove_var("CREDENTIALS_DIRECTORY");
        let e = source.read().unwrap_err().to_string();
        assert!(
            e.starts_with("password_credential: $CREDENTIALS_DIRECTORY is not set"),
            "{e}"
        );
        std::env::set_var("CREDENTIALS_DIRECTORY", dir.path());
        assert_eq!(source.read().unwrap().unwrap().as_str(), "from-credential");
        let missing = PasswordSource {
            password_credential: Some("other".into()),
            ..PasswordSource::default()
        };
        let e = missing.read().unwrap_err().to_string();
        assert!(e.starts_with("password_credential: cannot read "), "{e}");
        std::env::remove_var("CREDENTIALS_DIRECTORY");
    }

    #[test]
    fn one_source_at_most_and_no_paths_as_credential_names() {
        let both = PasswordSource {
            password_file: Some("/pw".into()),
            password_env: Some("PW".into()),
            password_credential: Some("../etc/shadow".into()),
        };
        assert_eq!(
            problems(&both),
            [
                "backend[0].password_env: set only one of password_file, password_env or \
                 password_credential",
                "backend[0].password_credential: must be a credential name \
                 (LoadCredential=<name>:...), not a path",
            ]
        );
        assert!(problems(&PasswordSource::default()).is_empty());
    }
}
