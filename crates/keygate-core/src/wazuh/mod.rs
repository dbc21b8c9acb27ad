//! The Wazuh version keygate serves, and what depends on it.
//!
//! What Wazuh's key-request path accepts changed between versions
//! (`../shared/PROTOCOL.md`, "What Wazuh's own code does with an answer"):
//! before 4.4 an IPv6 ip in an answer ends wazuh-authd, and 5.0 removes key
//! polling altogether. The version is given in config (`[wazuh] version`) or
//! read from the local installation (keygate-config); this module says what
//! a version can take ([`WazuhVersion::refuses`]), and [`VersionGuard`]
//! refuses, at the top of the stack, what the version served cannot take.

mod guard;

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

pub use guard::VersionGuard;

use crate::{AgentAddress, AgentRecord, RecordError};

/// Why Wazuh before 4.4 cannot take an IPv6 ip (after "Wazuh 3.13 ").
pub const IPV6_EXITS: &str = "cannot take an IPv6 address; its authd would exit";

/// Whether an address is IPv6 as Wazuh reads it: any address or network
/// written with a `:` (IPv4-mapped ones such as `::ffff:192.168.7.7`, and
/// `::/0`, included). Wazuh before 4.4 parses the text, not keygate's
/// canonical form, and refuses all of them.
pub fn is_ipv6(address: &AgentAddress) -> bool {
    address.as_str().contains(':')
}

/// Which agents a warning was logged for, so that each is logged once
/// however often Wazuh asks again. Past `cap` agents it forgets them all
/// (each is then logged once more): memory stays bounded.
pub struct OncePerAgent {
    seen: Mutex<HashSet<String>>,
    cap: usize,
}

impl OncePerAgent {
    /// Remembers up to `cap` agents.
    pub fn new(cap: usize) -> Self {
        Self {
            seen: Mutex::new(HashSet::new()),
            cap,
        }
    }

    /// Whether this is the first time for agent `id` (true when the memory
    /// cannot be read: a line too many, never one lost).
    pub fn first(&self, id: &str) -> bool {
        self.seen.lock().map_or(true, |mut seen| {
            if seen.len() >= self.cap {
                seen.clear();
            }
            seen.insert(id.to_owned())
        })
    }

    /// Forgets every agent: the next time, each is logged again.
    pub fn forget(&self) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.clear();
        }
    }
}

/// A Wazuh release, `major.minor[.patch]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WazuhVersion {
    /// `4` in 4.14.7.
    pub major: u16,
    /// `14` in 4.14.7.
    pub minor: u16,
    /// `7` in 4.14.7; `None` when only `major.minor` is known.
    pub patch: Option<u16>,
}

impl WazuhVersion {
    /// The first release whose ip check takes IPv6 (4.4.0).
    pub const IPV6_SINCE: WazuhVersion = WazuhVersion::new(4, 4);
    /// The first release without key polling (5.0.0).
    pub const NO_KEY_POLLING_SINCE: WazuhVersion = WazuhVersion::new(5, 0);

    /// `major.minor`, patch unknown.
    pub const fn new(major: u16, minor: u16) -> Self {
        Self {
            major,
            minor,
            patch: None,
        }
    }

    /// Whether an answer may carry an IPv6 ip (IPv4-mapped included):
    /// before 4.4, authd's `OS_AddKey` exits on one.
    pub fn takes_ipv6(&self) -> bool {
        (self.major, self.minor) >= (Self::IPV6_SINCE.major, Self::IPV6_SINCE.minor)
    }

    /// Whether this release still asks for agent keys (before 5.0).
    pub fn has_key_polling(&self) -> bool {
        self.major < Self::NO_KEY_POLLING_SINCE.major
    }

    /// Why this release cannot take `record`, if it cannot: an IPv6 ip
    /// before 4.4 (Wazuh's `OS_AddKey` calls `merror_exit` on it and authd
    /// ends). Used by the stack ([`VersionGuard`]) and by the commands that
    /// report the store (`check`, `list`, `verify`).
    pub fn refuses(&self, record: &AgentRecord) -> Option<RecordError> {
        (!self.takes_ipv6() && is_ipv6(&record.ip)).then_some(RecordError::NotForWazuh {
            version: *self,
            why: IPV6_EXITS,
        })
    }
}

impl fmt::Display for WazuhVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.patch {
            Some(p) => write!(f, "{}.{}.{p}", self.major, self.minor),
            None => write!(f, "{}.{}", self.major, self.minor),
        }
    }
}

/// Why a version string was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Wazuh version: write it as \"4.14\" or \"4.14.7\" (3.8 or later)")]
pub struct VersionError;

impl FromStr for WazuhVersion {
    type Err = VersionError;

    /// `4.14`, `4.14.7` or `v4.14.7` (as Wazuh writes it in `VERSION=`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        let mut parts = s.split('.');
        // The next part: `None` when there is none, an error when it is not
        // 1 to 4 digits (no sign, no space).
        let mut number = || -> Result<Option<u16>, VersionError> {
            match parts.next() {
                None => Ok(None),
                Some(p)
                    if !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    p.parse().map(Some).map_err(|_| VersionError)
                }
                _ => Err(VersionError),
            }
        };
        let major = number()?.ok_or(VersionError)?;
        let minor = number()?.ok_or(VersionError)?;
        let patch = number()?;
        if parts.next().is_some() || (major, minor) < (3, 8) {
            return Err(VersionError);
        }
        Ok(Self {
            major,
            minor,
            patch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Versions parse as Wazuh writes them, and compare by number.
    #[test]
    fn versions_parse_and_compare_by_number() {
        let v: WazuhVersion = "v4.14.7".parse().unwrap();
        assert_eq!((v.major, v.minor, v.patch), (4, 14, Some(7)));
        assert_eq!(v.to_string(), "4.14.7");
        assert_eq!("4.3".parse::<WazuhVersion>().unwrap().to_string(), "4.3");
        assert!("4.10".parse::<WazuhVersion>().unwrap() > "4.9".parse().unwrap());
        assert_eq!("3.8".parse::<WazuhVersion>().unwrap().to_string(), "3.8");
        for bad in [
            "", "4", "4.", "4.x", "4.14.7.1", "3.7", "latest", "-4.1", "99999.1", "+4.1", "4.+1",
            "4.10000", "4. 1",
        ] {
            assert_eq!(bad.parse::<WazuhVersion>(), Err(VersionError), "{bad}");
        }
    }

    /// Each agent once; forgotten, each once more; past the cap, all are
    /// forgotten.
    #[test]
    fn once_per_agent_until_forgotten() {
        let once = OncePerAgent::new(3);
        assert!(once.first("001"));
        assert!(!once.first("001"));
        assert!(once.first("002"));
        once.forget();
        assert!(once.first("001"));
        assert!(once.first("002"));
        assert!(!once.first("002"));
        assert!(once.first("003"));
        // 3 remembered: the cap clears the memory.
        assert!(once.first("001"));
        assert!(!once.first("001"));
    }

    /// Before 4.4 every ip written with a `:` is refused, IPv4-mapped
    /// addresses and IPv6 networks included, with the reason; from 4.4 on
    /// nothing is.
    #[test]
    fn ipv6_records_are_refused_before_4_4_only() {
        let v = |s: &str| s.parse::<WazuhVersion>().unwrap();
        let record = |ip: &str| AgentRecord::parse("006", "v6", ip, "k").unwrap();
        for ip in ["2001:db8::6", "::ffff:192.168.7.7", "2001:db8::/64", "::/0"] {
            let refused = v("3.13").refuses(&record(ip)).expect(ip);
            assert_eq!(
                refused.to_string(),
                "Wazuh 3.13 cannot take an IPv6 address; its authd would exit"
            );
            assert!(v("4.3.11").refuses(&record(ip)).is_some(), "{ip}");
            assert_eq!(v("4.4").refuses(&record(ip)), None, "{ip}");
            assert_eq!(v("4.14").refuses(&record(ip)), None, "{ip}");
        }
        for ip in ["192.168.7.7", "10.0.0.0/8", "any", "0.0.0.0/0"] {
            assert_eq!(v("3.13").refuses(&record(ip)), None, "{ip}");
        }
    }

    /// IPv6 from 4.4.0 on; key polling until 5.0.
    #[test]
    fn what_each_version_takes() {
        let v = |s: &str| s.parse::<WazuhVersion>().unwrap();
        assert!(!v("3.13.6").takes_ipv6());
        assert!(!v("4.3.11").takes_ipv6());
        assert!(v("4.4").takes_ipv6());
        assert!(v("4.14.7").takes_ipv6());
        assert!(v("4.14").has_key_polling());
        assert!(!v("5.0").has_key_polling());
    }
}
