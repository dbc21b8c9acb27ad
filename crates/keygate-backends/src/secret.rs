//! Reading secrets (passwords) from files without ever printing them.

use std::path::Path;

use keygate_core::BackendError;
use zeroize::Zeroizing;

/// Reads a password file: the first line, without its line terminator.
/// Errors name the file, never its content.
pub fn read_password_file(path: &Path) -> Result<Zeroizing<String>, BackendError> {
    let raw = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        BackendError::Internal(format!(
            "cannot read password_file {}: {}",
            path.display(),
            e.kind()
        ))
    })?);
    let line = raw.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(BackendError::Internal(format!(
            "password_file {} is empty",
            path.display()
        )));
    }
    Ok(Zeroizing::new(line.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_first_line_and_never_shows_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(read_password_file(&p).unwrap().as_str(), "s3cret");
        std::fs::write(&p, "\n").unwrap();
        let e = read_password_file(&p).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        let e = read_password_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read password_file"), "{e}");
    }
}
