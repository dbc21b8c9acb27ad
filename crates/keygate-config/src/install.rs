//! The Wazuh installation on this host and the version keygate serves:
//! read from files, never by running anything (`wazuh-control info` would
//! start a shell as root for a number printed in the script itself).
//!
//! - Wazuh 4.x writes `VERSION="v4.14.7"` near the top of
//!   `<home>/bin/wazuh-control`; 5.0 installs under `/var/wazuh-manager`,
//!   whose control script is `wazuh-manager-control`.
//! - Wazuh 3.x keeps `VERSION="v3.13.6"` and `DIRECTORY="/var/ossec"` in
//!   `/etc/ossec-init.conf`.
//!
//! The places looked at are a [`Places`] value, so tests point them at a
//! fake installation in a temp dir.

use std::io::Read;
use std::path::{Path, PathBuf};

use keygate_core::WazuhVersion;

use crate::wazuh::{VersionSetting, WazuhConfig, DEFAULT_CLIENT_KEYS};

/// Where Wazuh installs, in the order they are looked at: 3.x/4.x, then
/// 5.0.
pub const WAZUH_HOMES: [&str; 2] = ["/var/ossec", "/var/wazuh-manager"];

/// Wazuh 3.x's record of its installation.
pub const OSSEC_INIT_CONF: &str = "/etc/ossec-init.conf";

/// The control scripts that carry `VERSION=`, relative to the home.
const CONTROL_SCRIPTS: [&str; 3] = [
    "bin/wazuh-control",
    "bin/wazuh-manager-control",
    "bin/ossec-control",
];

/// The manager's config file, relative to the home: ossec.conf through
/// 4.x, then 5.0's name for it.
const MANAGER_CONFS: [&str; 2] = ["etc/ossec.conf", "etc/wazuh-manager.conf"];

/// How much of a control script is read: `VERSION=` is in its first lines.
const SCRIPT_HEAD: u64 = 16 * 1024;

/// Where an installation is looked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Places {
    /// Candidate homes, in order.
    pub homes: Vec<PathBuf>,
    /// Wazuh 3.x's `/etc/ossec-init.conf`.
    pub init_conf: PathBuf,
}

impl Places {
    /// The real places: [`WAZUH_HOMES`] and [`OSSEC_INIT_CONF`].
    pub fn system() -> Self {
        Self {
            homes: WAZUH_HOMES.iter().map(PathBuf::from).collect(),
            init_conf: PathBuf::from(OSSEC_INIT_CONF),
        }
    }

    /// Places under `root` instead of `/` (a fake installation in tests).
    pub fn under(root: &Path) -> Self {
        let at = |p: &str| root.join(p.trim_start_matches('/'));
        Self {
            homes: WAZUH_HOMES.iter().map(|h| at(h)).collect(),
            init_conf: at(OSSEC_INIT_CONF),
        }
    }
}

/// A Wazuh installation found on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installation {
    /// Its home (`/var/ossec`, `/var/wazuh-manager`).
    pub home: PathBuf,
    /// Its version, if a file said it.
    pub version: Option<WazuhVersion>,
    /// The file the version was read from.
    pub version_file: Option<PathBuf>,
}

impl Installation {
    /// The manager's config file under the home, if there is one.
    pub fn manager_conf(&self) -> Option<PathBuf> {
        MANAGER_CONFS
            .iter()
            .map(|c| self.home.join(c))
            .find(|p| p.is_file())
    }
}

/// Looks for an installation: the first home whose control script says
/// `VERSION=`, else 3.x's `/etc/ossec-init.conf`, else the first home that
/// exists (version unknown), else `None`.
pub fn detect(places: &Places) -> Option<Installation> {
    let mut first_home = None;
    for home in &places.homes {
        if !home.is_dir() {
            continue;
        }
        first_home.get_or_insert_with(|| home.clone());
        for script in CONTROL_SCRIPTS {
            let path = home.join(script);
            if let Some(version) = read_head(&path).as_deref().and_then(version_in) {
                return Some(Installation {
                    home: home.clone(),
                    version: Some(version),
                    version_file: Some(path),
                });
            }
        }
    }
    if let Some(text) = read_head(&places.init_conf) {
        if let Some(version) = version_in(&text) {
            let home = assignment(&text, "DIRECTORY")
                .map(PathBuf::from)
                .or_else(|| first_home.clone())
                .unwrap_or_else(|| PathBuf::from(WAZUH_HOMES[0]));
            return Some(Installation {
                home,
                version: Some(version),
                version_file: Some(places.init_conf.clone()),
            });
        }
    }
    first_home.map(|home| Installation {
        home,
        version: None,
        version_file: None,
    })
}

/// The first [`SCRIPT_HEAD`] bytes of `path` as text (lossy), if readable.
fn read_head(path: &Path) -> Option<String> {
    let mut head = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(SCRIPT_HEAD)
        .read_to_end(&mut head)
        .ok()?;
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// The value of a shell assignment `NAME="value"` (quotes optional) at the
/// start of a line.
fn assignment<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix(name)?.strip_prefix('=')?.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        (!value.is_empty()).then_some(value)
    })
}

/// The version a `VERSION="v4.14.7"` line says.
fn version_in(text: &str) -> Option<WazuhVersion> {
    assignment(text, "VERSION")?.parse().ok()
}

/// Where the version keygate serves comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionSource {
    /// `[wazuh] version` names it.
    Configured,
    /// Read from this file of the installation.
    Detected(PathBuf),
    /// `auto`, and no installation said it: treated as 4.4 or later.
    Unknown,
}

/// The Wazuh keygate serves, as decided from `[wazuh]` and this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The version answers are made for: the configured or detected one,
    /// or 4.4 when unknown.
    pub version: WazuhVersion,
    /// Where it comes from.
    pub source: VersionSource,
    /// The installation found on this host, if any.
    pub installation: Option<Installation>,
}

impl Served {
    /// `4.14.7 (from /var/ossec/bin/wazuh-control)`, `3.13 ([wazuh]
    /// version)`, `unknown (treated as 4.4 or later)`.
    pub fn describe(&self) -> String {
        match &self.source {
            VersionSource::Configured => format!("{} ([wazuh] version)", self.version),
            VersionSource::Detected(file) => {
                format!("{} (from {})", self.version, file.display())
            }
            VersionSource::Unknown => "unknown (treated as 4.4 or later)".to_owned(),
        }
    }
}

impl WazuhConfig {
    /// The version served, reading this host's installation when `version`
    /// is `auto` (a control script's first lines: no process is run).
    pub fn served(&self) -> Served {
        self.served_in(&Places::system())
    }

    /// [`WazuhConfig::served`], with the installation looked for in
    /// `places`.
    pub fn served_in(&self, places: &Places) -> Served {
        let installation = detect(places);
        let (version, source) = match (self.version, &installation) {
            (VersionSetting::Fixed(v), _) => (v, VersionSource::Configured),
            (
                VersionSetting::Auto,
                Some(Installation {
                    version: Some(v),
                    version_file: Some(file),
                    ..
                }),
            ) => (*v, VersionSource::Detected(file.clone())),
            (VersionSetting::Auto, _) => (WazuhVersion::IPV6_SINCE, VersionSource::Unknown),
        };
        Served {
            version,
            source,
            installation,
        }
    }

    /// The version answers are made for, read without looking at the
    /// installation when `version` names one.
    pub fn served_version(&self) -> WazuhVersion {
        match self.version {
            VersionSetting::Fixed(v) => v,
            VersionSetting::Auto => self.served().version,
        }
    }

    /// The manager's ossec.conf: `ossec_conf`, or the one under the
    /// installation found.
    pub fn ossec_conf_path(&self, installation: Option<&Installation>) -> Option<PathBuf> {
        self.ossec_conf
            .clone()
            .or_else(|| installation.and_then(Installation::manager_conf))
    }

    /// The manager's client.keys: `client_keys`, or the first readable of
    /// [`DEFAULT_CLIENT_KEYS`].
    pub fn client_keys_path(&self) -> Option<PathBuf> {
        self.client_keys.clone().or_else(|| {
            DEFAULT_CLIENT_KEYS
                .iter()
                .map(PathBuf::from)
                .find(|p| std::fs::File::open(p).is_ok())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const CONTROL: &str = "#!/bin/sh\n\n# Copyright (C) 2015, Wazuh Inc.\nLOCAL=`dirname $0`;\ncd ${LOCAL}\nPWD=`pwd`\nDIR=`dirname $PWD`;\n\n# Installation info\nVERSION=\"v4.14.7\"\nREVISION=\"41400\"\nTYPE=\"server\"\n";

    fn auto() -> WazuhConfig {
        WazuhConfig::default()
    }

    /// 4.x: the version is read from `bin/wazuh-control` under /var/ossec.
    #[test]
    fn a_4x_home_says_its_version_in_wazuh_control() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "var/ossec/bin/wazuh-control", CONTROL);
        write(root.path(), "var/ossec/etc/ossec.conf", "<ossec_config/>");
        let places = Places::under(root.path());
        let served = auto().served_in(&places);
        assert_eq!(served.version, "4.14.7".parse().unwrap());
        let script = root.path().join("var/ossec/bin/wazuh-control");
        assert_eq!(served.source, VersionSource::Detected(script.clone()));
        assert_eq!(
            served.describe(),
            format!("4.14.7 (from {})", script.display())
        );
        let install = served.installation.unwrap();
        assert_eq!(install.home, root.path().join("var/ossec"));
        assert_eq!(
            auto().ossec_conf_path(Some(&install)),
            Some(root.path().join("var/ossec/etc/ossec.conf"))
        );
    }

    /// 5.0 installs under /var/wazuh-manager with `wazuh-manager-control`.
    #[test]
    fn a_5_0_home_is_found_under_var_wazuh_manager() {
        let root = tempfile::tempdir().unwrap();
        write(
            root.path(),
            "var/wazuh-manager/bin/wazuh-manager-control",
            &CONTROL.replace("v4.14.7", "v5.0.0"),
        );
        let served = auto().served_in(&Places::under(root.path()));
        assert_eq!(served.version, "5.0.0".parse().unwrap());
        assert!(!served.version.has_key_polling());
        assert_eq!(
            served.installation.unwrap().home,
            root.path().join("var/wazuh-manager")
        );
    }

    /// 3.x: `/etc/ossec-init.conf` says the version and the home (its
    /// ossec-control has no `VERSION=` of its own).
    #[test]
    fn a_3x_installation_says_its_version_in_ossec_init_conf() {
        let root = tempfile::tempdir().unwrap();
        write(
            root.path(),
            "var/ossec/bin/ossec-control",
            "#!/bin/sh\n. /etc/ossec-init.conf\n",
        );
        write(
            root.path(),
            "etc/ossec-init.conf",
            "DIRECTORY=\"/var/ossec\"\nNAME=\"Wazuh\"\nVERSION=\"v3.13.6\"\nREVISION=\"31315\"\nDATE=\"Thu Oct  1 2020\"\nTYPE=\"server\"\n",
        );
        let served = auto().served_in(&Places::under(root.path()));
        assert_eq!(served.version, "3.13.6".parse().unwrap());
        assert!(!served.version.takes_ipv6());
        assert_eq!(
            served.source,
            VersionSource::Detected(root.path().join("etc/ossec-init.conf"))
        );
        // DIRECTORY is the home as the installation wrote it.
        assert_eq!(
            served.installation.unwrap().home,
            PathBuf::from("/var/ossec")
        );
    }

    /// Nothing installed, or a home without a readable version: unknown,
    /// treated as 4.4. A configured version wins over the installation.
    #[test]
    fn unknown_is_4_4_and_a_configured_version_wins() {
        let root = tempfile::tempdir().unwrap();
        let places = Places::under(root.path());
        let served = auto().served_in(&places);
        assert_eq!(served.version, WazuhVersion::new(4, 4));
        assert_eq!(served.source, VersionSource::Unknown);
        assert_eq!(served.installation, None);
        assert_eq!(served.describe(), "unknown (treated as 4.4 or later)");
        write(
            root.path(),
            "var/ossec/bin/wazuh-control",
            "#!/bin/sh\nVERSION=\n",
        );
        let served = auto().served_in(&places);
        assert_eq!(served.source, VersionSource::Unknown);
        assert_eq!(served.installation.unwrap().version, None);
        write(root.path(), "var/ossec/bin/wazuh-control", CONTROL);
        let fixed = WazuhConfig {
            version: VersionSetting::Fixed("3.13".parse().unwrap()),
            ..WazuhConfig::default()
        };
        let served = fixed.served_in(&places);
        assert_eq!(served.version, "3.13".parse().unwrap());
        assert_eq!(served.source, VersionSource::Configured);
        assert!(served.installation.is_some());
    }

    #[test]
    fn assignments_are_read_with_or_without_quotes() {
        assert_eq!(
            assignment("A=1\nVERSION=\"v4.1.0\"\n", "VERSION"),
            Some("v4.1.0")
        );
        assert_eq!(assignment("VERSION='v4.1.0'", "VERSION"), Some("v4.1.0"));
        assert_eq!(assignment("  VERSION=v4.1.0  ", "VERSION"), Some("v4.1.0"));
        assert_eq!(assignment("MY_VERSION=\"v4.1.0\"", "VERSION"), None);
        assert_eq!(assignment("VERSIONS=\"v4.1.0\"", "VERSION"), None);
        assert_eq!(version_in("VERSION=\"${X}\""), None);
    }
}
