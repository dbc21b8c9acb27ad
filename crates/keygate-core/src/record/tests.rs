//! Unit tests of the record fields and their client.keys rules.

use super::*;
use crate::Request;

const KEY: &str = "ac57f6a5e1d9b0c2e5a1d6f7c8b9a0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f50c71";

#[test]
fn valid_record_parses() {
    let r = AgentRecord::parse("001", "my_agent-1.lab", "192.168.1.100", KEY).unwrap();
    assert_eq!(r.id.as_str(), "001");
    assert_eq!(r.ip.as_str(), "192.168.1.100");
    assert!(AgentRecord::parse("12345678", "a", "any", "k").is_ok());
    assert!(AgentRecord::parse("100", "a", "10.0.0.0/24", "k").is_ok());
    assert!(AgentRecord::parse("100", "a", "2001:db8::/64", "k").is_ok());
    assert!(AgentRecord::parse("100", "a", "2001:db8::7", "k").is_ok());
}

#[test]
fn ids_follow_client_keys_rules() {
    for bad in [
        "",
        "1",
        "01",
        "000",
        "00000000",
        "123456789",
        "00a",
        "0 1",
        "-01",
        "١٢٣",
    ] {
        assert!(AgentId::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(AgentId::from_integer(7).unwrap().as_str(), "007");
    assert_eq!(AgentId::from_integer(1234).unwrap().as_str(), "1234");
    assert!(AgentId::from_integer(0).is_err());
    assert!(AgentId::from_integer(-7).is_err());
    assert!(AgentId::from_integer(123_456_789).is_err());
}

#[test]
fn names_refuse_separators_quotes_and_non_ascii() {
    let long = "a".repeat(128);
    for bad in [
        "",
        "my agent",
        "a\tb",
        "a\nb",
        "a'b",
        "a\"b",
        "a%b",
        "a\0b",
        "agént",
        "a/b",
        "!removed",
        long.as_str(),
    ] {
        assert!(AgentName::parse(bad).is_err(), "{bad:?}");
    }
    assert!(AgentName::parse(&"a".repeat(127)).is_ok());
}

/// Names and keys of 128 bytes are refused (Wazuh would read them back
/// cut to 127); 127 bytes pass.
#[test]
fn names_and_keys_of_128_bytes_are_refused() {
    let rule =
        "longer than 127 bytes (Wazuh reads back at most 127 bytes of each client.keys field)";
    let name = "n".repeat(128);
    let key = "k".repeat(128);
    assert_eq!(
        AgentRecord::parse("001", &name, "any", "k"),
        Err(RecordError::Invalid {
            field: Field::Name,
            rule
        })
    );
    assert_eq!(
        AgentRecord::parse("001", "web", "any", &key),
        Err(RecordError::Invalid {
            field: Field::Key,
            rule
        })
    );
    let ok = AgentRecord::parse("001", &name[..127], "any", &key[..127]).unwrap();
    assert_eq!((ok.name.as_str().len(), ok.key.expose().len()), (127, 127));
}

#[test]
fn keys_are_printable_without_whitespace() {
    let long = "k".repeat(128);
    for bad in ["", "a b", "a\tb", "a\nb", "a\0b", "ké", long.as_str()] {
        assert!(AgentKey::parse(bad).is_err(), "{bad:?}");
    }
    assert!(AgentKey::parse(&"k".repeat(127)).is_ok());
    assert!(AgentKey::parse("a\"b\\c'%").is_ok());
}

#[test]
fn errors_and_debug_never_show_the_key() {
    let r = AgentRecord::parse("001", "a", "any", KEY).unwrap();
    assert!(!format!("{r:?}").contains(KEY));
    let e = AgentRecord::parse("001", "a", "any", "secret with space").unwrap_err();
    assert!(!e.to_string().contains("secret"));
    assert_eq!(
        e,
        RecordError::Invalid {
            field: Field::Key,
            rule: "only printable ASCII without whitespace is allowed"
        }
    );
}

#[test]
fn record_must_match_the_request() {
    let r = AgentRecord::parse("001", "a", "10.0.0.0/24", "k").unwrap();
    assert!(r.check_matches(&Request::parse(b"id:001").unwrap()).is_ok());
    assert!(r
        .check_matches(&Request::parse(b"id:0001").unwrap())
        .is_err());
    assert!(r
        .check_matches(&Request::parse(b"id:002").unwrap())
        .is_err());
    assert!(r
        .check_matches(&Request::parse(b"ip:10.0.0.7").unwrap())
        .is_ok());
    assert!(r
        .check_matches(&Request::parse(b"ip:10.0.1.7").unwrap())
        .is_err());
    let any = AgentRecord::parse("001", "a", "any", "k").unwrap();
    assert!(any
        .check_matches(&Request::parse(b"ip:10.0.0.7").unwrap())
        .is_err());
    let v6 = AgentRecord::parse("001", "a", "2001:db8::1", "k").unwrap();
    assert!(v6
        .check_matches(&Request::parse(b"ip:2001:DB8:0::1").unwrap())
        .is_ok());
}

/// A clone is the same copy (what a cache hit hands out); two parses
/// of the same text are equal but apart.
#[test]
fn clones_share_one_copy() {
    let r = AgentRecord::parse("001", "a", "10.0.0.1", KEY).unwrap();
    let c = r.clone();
    assert!(c.shares(&r));
    assert_eq!(c.key.expose(), KEY);
    let other = AgentRecord::parse("001", "a", "10.0.0.1", KEY).unwrap();
    assert_eq!(other, r);
    assert!(!other.shares(&r));
}

/// Names and addresses round-trip at every length, on both sides of
/// the inline limit, and ids at every allowed length.
#[test]
fn fields_round_trip_at_every_length() {
    for len in 1..=MAX_NAME_LEN {
        let name: String = "abcdefghij".chars().cycle().take(len).collect();
        let parsed = AgentName::parse(&name).unwrap();
        assert_eq!(parsed.as_str(), name);
        assert_eq!(parsed, AgentName::parse(&name).unwrap());
    }
    for ip in [
        "1.2.3.4",
        "255.255.255.255/32",
        "2001:db8::1",
        "2001:db8:1234:5678:9abc:def0:1234:5678",
        "2001:db8:1234:5678:9abc:def0:1234:5678/128",
        "0000:0000:0000:0000:0000:ffff:10.0.0.1",
    ] {
        assert_eq!(AgentAddress::parse(ip).unwrap().as_str(), ip);
    }
    for id in ["001", "0012", "12345678"] {
        let parsed = AgentId::parse(id).unwrap();
        assert_eq!(parsed.as_str(), id);
        assert_eq!(format!("{parsed:?}"), format!("AgentId({id:?})"));
    }
    assert_ne!(
        AgentId::parse("001").unwrap(),
        AgentId::parse("0001").unwrap()
    );
}

#[test]
fn missing_fields_are_reported_by_name() {
    let e = AgentRecord::from_options(Some("001"), Some("a"), Some("any"), None).unwrap_err();
    assert_eq!(e, RecordError::Missing(Field::Key));
    assert_eq!(e.to_string(), "field 'key' is missing or NULL");
}

/// Names Wazuh's `OS_IsValidName` refuses are still valid records (the
/// key-request path inserts them), but the rule they break is known.
#[test]
fn wazuh_name_rule_is_os_is_valid_name() {
    let rule = |n: &str| AgentName::parse(n).unwrap().wazuh_name_rule();
    assert_eq!(rule("a"), Some("Wazuh requires at least 2 characters"));
    for ok in ["ab", "web-01", "a.b_c-d", "-x", "_x", "x.", ".web"] {
        assert_eq!(rule(ok), None, "{ok}");
    }
}

/// A negative id and id 0 are refused for what they are: "-7" is not an id
/// with a dash in it, and 0 is the manager. (Kills the mutants of the sign
/// check in `from_integer`, whose other paths also fail.)
#[test]
fn integer_ids_are_refused_with_their_own_reason() {
    let rule = |n| match AgentId::from_integer(n) {
        Err(RecordError::Invalid { rule, .. }) => rule,
        other => panic!("{n}: {other:?}"),
    };
    assert_eq!(rule(-7), "must not be negative");
    assert_eq!(rule(-1), "must not be negative");
    assert_eq!(rule(0), "000 is the manager itself");
}

/// Names compare, hash and print by their text, inline (up to 22 bytes) or
/// on the heap: the cache's negative entries and the duplicate checks key on
/// them.
#[test]
fn names_compare_hash_and_print_by_their_text() {
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};
    let hash = |n: &AgentName| {
        let mut h = DefaultHasher::new();
        n.hash(&mut h);
        h.finish()
    };
    let long = "a-name-longer-than-twenty-two-bytes";
    for (a, b) in [
        ("web-1", "web-2"),
        (long, "a-name-longer-than-twenty-two-bytez"),
    ] {
        let (x, y) = (AgentName::parse(a).unwrap(), AgentName::parse(b).unwrap());
        assert_eq!(x, AgentName::parse(a).unwrap());
        assert_ne!(x, y, "{a} and {b} must differ");
        assert_eq!(hash(&x), hash(&AgentName::parse(a).unwrap()));
        assert_ne!(hash(&x), hash(&y), "{a} and {b} hash alike");
        assert_eq!(format!("{x:?}"), format!("AgentName({a:?})"));
    }
}

/// A record prints its id, name and address, never its key.
#[test]
fn a_record_prints_everything_but_its_key() {
    let r = AgentRecord::parse("001", "web-1", "10.0.0.1", KEY).unwrap();
    let shown = format!("{r:?}");
    assert_eq!(
        shown,
        r#"AgentRecord { id: AgentId("001"), name: AgentName("web-1"), ip: AgentAddress { text: "10.0.0.1", kind: Host(10.0.0.1) }, key: AgentKey(<redacted>) }"#
    );
    assert!(!shown.contains(KEY));
    assert_eq!(format!("{:?}", r.key), "AgentKey(<redacted>)");
}

/// Only `[A-Za-z0-9._-]` make a name: every other printable ASCII byte, and
/// a non-ASCII letter, is refused.
#[test]
fn every_byte_outside_the_name_alphabet_is_refused() {
    for b in 0x21u8..0x7f {
        let name = format!("ab{}", b as char);
        let allowed = b.is_ascii_alphanumeric() || b"-_.".contains(&b);
        assert_eq!(AgentName::parse(&name).is_ok(), allowed, "{name:?}");
    }
    assert!(AgentName::parse("abé").is_err());
}
