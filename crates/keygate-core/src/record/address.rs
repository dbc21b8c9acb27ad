//! The address field of a record, and the rules for matching an `ip:`
//! request against it.
//!
//! - `any`, and the networks that contain every address (`0.0.0.0/0`,
//!   `::/0`, which Wazuh itself writes for `any`), are never matched by ip:
//!   such an agent can only be found by id.
//! - IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, and networks of them
//!   with a prefix of at least 96) are the IPv4 address they carry, in a
//!   record as in a request ([`canonical`]).
//! - When several stored networks contain an address, the most specific
//!   one (longest prefix) is the answer; that choice belongs to the backend
//!   that holds them all, so only [`AddressKind`] and [`AgentAddress::contains`]
//!   live here.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use super::{invalid, Field, RecordError, Text};

/// An agent address: `any`, a host address, or a network in CIDR notation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AgentAddress {
    text: Text,
    kind: AddressKind,
}

/// The parsed form of an [`AgentAddress`], in canonical form: IPv4-mapped
/// addresses as IPv4, and a network of every address as [`AddressKind::Any`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressKind {
    /// `any`, `0.0.0.0/0` or `::/0`: the agent may connect from anywhere,
    /// and cannot be identified by address.
    Any,
    /// One host.
    Host(IpAddr),
    /// A network; requests from any address inside it match.
    Net(IpNet),
}

impl AddressKind {
    fn of_host(ip: IpAddr) -> Self {
        Self::Host(canonical(ip))
    }

    fn of_net(net: IpNet) -> Self {
        if net.prefix_len() == 0 {
            return Self::Any;
        }
        match net {
            IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
                Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96)
                    .map_or(Self::Net(net), |n| Self::Net(IpNet::V4(n))),
                None => Self::Net(net),
            },
            _ => Self::Net(net),
        }
    }
}

impl AgentAddress {
    /// Parses an address: `any`, an IPv4/IPv6 address, or address/prefix.
    pub fn parse(s: &str) -> Result<Self, RecordError> {
        if s.is_empty() {
            return Err(RecordError::Missing(Field::Ip));
        }
        let kind = if s == "any" {
            AddressKind::Any
        } else if !s
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b'/'))
        {
            return Err(invalid(
                Field::Ip,
                "not an IP address, address/prefix or 'any'",
            ));
        } else if let Ok(ip) = s.parse::<IpAddr>() {
            AddressKind::of_host(ip)
        } else if let Ok(net) = s.parse::<IpNet>() {
            AddressKind::of_net(net)
        } else {
            return Err(invalid(
                Field::Ip,
                "not an IP address, address/prefix or 'any'",
            ));
        };
        Ok(Self {
            text: Text::new(s),
            kind,
        })
    }

    /// Builds the address of one host.
    pub fn host(ip: IpAddr) -> Self {
        Self {
            text: Text::new(&ip.to_string()),
            kind: AddressKind::of_host(ip),
        }
    }

    /// Builds an address from a network; a full-length prefix (`/32`,
    /// `/128`) is a host and is written without it.
    pub fn network(net: IpNet) -> Self {
        if net.prefix_len() == net.max_prefix_len() {
            Self::host(net.addr())
        } else {
            Self {
                text: Text::new(&net.to_string()),
                kind: AddressKind::of_net(net),
            }
        }
    }

    /// The address text, as it goes into client.keys.
    pub fn as_str(&self) -> &str {
        self.text.as_str()
    }

    /// The parsed, canonical form.
    pub fn kind(&self) -> AddressKind {
        self.kind
    }

    /// Whether a request from `ip` is this address or inside this network.
    /// `any` (and `/0`) contains nothing here: it cannot identify an agent
    /// by address.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match self.kind {
            AddressKind::Any => false,
            AddressKind::Host(h) => h == canonical(*ip),
            AddressKind::Net(n) => n.contains(&canonical(*ip)),
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it
/// carries; any other address unchanged. Requests are parsed into this form
/// (so every backend is asked for `a.b.c.d`), and records are compared in it.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::q;
    use crate::AgentRecord;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_ips_prefixes_or_any() {
        for bad in [
            "",
            "ANY",
            "10.0.0.256",
            "10.0.0.1/33",
            "host.example",
            "10.0.0.1 ",
            "fe80::1%eth0",
            "10.0.0.1/24/1",
        ] {
            assert!(AgentAddress::parse(bad).is_err(), "{bad:?}");
        }
        let net = AgentAddress::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(&ip("10.1.2.3")));
        assert!(!net.contains(&ip("10.2.0.1")));
        assert!(!AgentAddress::parse("any")
            .unwrap()
            .contains(&ip("10.0.0.1")));
        assert_eq!(
            AgentAddress::network("10.0.0.5/32".parse().unwrap()).as_str(),
            "10.0.0.5"
        );
        assert_eq!(
            AgentAddress::network("10.0.0.0/8".parse().unwrap()).as_str(),
            "10.0.0.0/8"
        );
    }

    /// `0.0.0.0/0` and `::/0` are `any`: kept as written, never matched by
    /// ip, so a record holding them cannot answer an `ip:` request.
    #[test]
    fn networks_of_every_address_are_any() {
        for text in ["0.0.0.0/0", "::/0", "10.0.0.1/0"] {
            let a = AgentAddress::parse(text).unwrap();
            assert_eq!(a.kind(), AddressKind::Any, "{text}");
            assert_eq!(a.as_str(), text);
            assert!(!a.contains(&ip("8.8.8.8")), "{text}");
            assert!(!a.contains(&ip("2001:db8::1")), "{text}");
        }
        assert_eq!(
            AgentAddress::network("::/0".parse().unwrap()).kind(),
            AddressKind::Any
        );
        let r = AgentRecord::parse("002", "everywhere", "0.0.0.0/0", "k").unwrap();
        assert!(matches!(
            r.check_matches(&q("ip:8.8.8.8")),
            Err(RecordError::IpMismatch { .. })
        ));
        assert!(r.check_matches(&q("id:002")).is_ok());
        // A /1 is still a network.
        assert!(AgentAddress::parse("0.0.0.0/1")
            .unwrap()
            .contains(&ip("8.8.8.8")));
    }

    /// `::ffff:a.b.c.d` in a record is the IPv4 host or network it carries.
    #[test]
    fn ipv4_mapped_records_are_their_ipv4_form() {
        let host = AgentAddress::parse("::ffff:192.168.1.100").unwrap();
        assert_eq!(host.kind(), AddressKind::Host(ip("192.168.1.100")));
        assert_eq!(host.as_str(), "::ffff:192.168.1.100");
        assert!(host.contains(&ip("192.168.1.100")));
        assert!(host.contains(&ip("::ffff:192.168.1.100")));
        let net = AgentAddress::parse("::ffff:10.0.0.0/104").unwrap();
        assert_eq!(net.kind(), AddressKind::Net("10.0.0.0/8".parse().unwrap()));
        assert!(net.contains(&ip("10.9.9.9")));
        let plain = AgentAddress::parse("192.168.1.100").unwrap();
        assert!(plain.contains(&ip("::ffff:192.168.1.100")));
        assert_eq!(canonical(ip("2001:db8::1")), ip("2001:db8::1"));
    }
}
