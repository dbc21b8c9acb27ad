//! Property tests of the protocol types (issue 10, "Proof"): the request
//! parser, the record rules and the reply encoder, over generated input.
//! Case counts stay modest so `tests/run` stays fast; `PROPTEST_CASES`
//! raises them for a longer run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keygate_core::{AgentRecord, ErrorCode, Reply, Request, RequestError};
use proptest::prelude::*;

/// Bytes that look a little like requests, so the parser's deeper branches
/// are reached, mixed with arbitrary bytes.
fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
    let prefix = prop_oneof![
        Just(b"id:".to_vec()),
        Just(b"ip:".to_vec()),
        Just(b"id".to_vec()),
        Just(Vec::new()),
    ];
    let tail = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "[0-9a-fA-F.:/ \\r\\n%*()'=-]{0,60}".prop_map(String::into_bytes),
        "\\PC{0,40}".prop_map(String::into_bytes),
    ];
    (prefix, tail).prop_map(|(mut p, t)| {
        p.extend(t);
        p
    })
}

/// A valid agent id: 3 to 8 digits, not all zeros.
fn valid_id() -> impl Strategy<Value = String> {
    "[0-9]{3,8}".prop_filter("000 is the manager", |s| s.bytes().any(|b| b != b'0'))
}

/// A valid address: `any`, an IPv4/IPv6 host, or a network.
fn valid_ip() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("any".to_owned()),
        any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
        (any::<std::net::Ipv4Addr>(), 0u8..=32).prop_map(|(a, p)| format!("{a}/{p}")),
        (any::<std::net::Ipv6Addr>(), 0u8..=128).prop_map(|(a, p)| format!("{a}/{p}")),
    ]
}

/// A record that passes validation.
fn valid_record() -> impl Strategy<Value = AgentRecord> {
    (
        valid_id(),
        "[A-Za-z0-9._-]{1,127}",
        valid_ip(),
        "[!-~]{1,127}",
    )
        .prop_map(|(id, name, ip, key)| AgentRecord::parse(&id, &name, &ip, &key).unwrap())
}

/// Text fields from a hostile alphabet: whitespace, quotes, control bytes,
/// non-ASCII, and the characters that are valid.
fn any_field() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,10}",
        "[ -~]{0,40}",
        "[a-z0-9 \\t\\r\\n\\x00\"\\\\/:.é€]{0,20}",
        "\\PC{0,20}",
        valid_ip(),
    ]
}

fn line_of(r: &AgentRecord) -> String {
    format!(
        "{} {} {} {}",
        r.id.as_str(),
        r.name.as_str(),
        r.ip.as_str(),
        r.key.expose()
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Request parsing never panics: any bytes give Ok or a typed error
    /// with code 1 or 3, and an accepted request prints back to itself.
    #[test]
    fn request_parsing_is_total(raw in request_bytes()) {
        match Request::parse(&raw) {
            Ok(req) => {
                prop_assert_eq!(Request::parse(req.to_string().as_bytes()), Ok(req.clone()));
                prop_assert!(req.value().bytes().all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':'));
            }
            Err(e) => {
                prop_assert!(matches!(e.code(), ErrorCode::Incomplete | ErrorCode::BadRequest));
                if raw.len() > keygate_core::request::MAX_REQUEST_LEN {
                    prop_assert_eq!(e, RequestError::TooLong);
                }
            }
        }
    }

    /// Every record that validation accepts re-serialises to a client.keys
    /// line that splits into exactly 4 fields and parses back to itself.
    #[test]
    fn accepted_records_round_trip_through_client_keys(
        id in any_field(), name in any_field(), ip in any_field(), key in any_field()
    ) {
        if let Ok(record) = AgentRecord::parse(&id, &name, &ip, &key) {
            let line = line_of(&record);
            let fields: Vec<&str> = line.split(' ').collect();
            prop_assert_eq!(fields.len(), 4);
            prop_assert!(!line.contains(['\n', '\r', '\t', '\0']));
            let back = AgentRecord::parse(fields[0], fields[1], fields[2], fields[3]).unwrap();
            prop_assert_eq!(back, record);
        }
    }

    /// The same for records built from the valid alphabet, which the
    /// hostile generator above rarely produces whole.
    #[test]
    fn valid_records_round_trip_through_client_keys(record in valid_record()) {
        let line = line_of(&record);
        let fields: Vec<&str> = line.split(' ').collect();
        prop_assert_eq!(fields.len(), 4);
        prop_assert_eq!(AgentRecord::parse(fields[0], fields[1], fields[2], fields[3]).unwrap(), record);
    }

    /// The encoder always emits one line of valid JSON with string data
    /// fields, and a found reply reads back to itself.
    #[test]
    fn found_replies_are_one_line_of_json(record in valid_record()) {
        let reply = Reply::Found(record.clone());
        let bytes = reply.encode();
        prop_assert!(!bytes.contains(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(v["error"].as_u64(), Some(0));
        for (field, text) in [
            ("id", record.id.as_str()),
            ("name", record.name.as_str()),
            ("ip", record.ip.as_str()),
            ("key", record.key.expose()),
        ] {
            prop_assert_eq!(v["data"][field].as_str(), Some(text));
        }
        let query = Request::parse(format!("id:{}", record.id.as_str()).as_bytes()).unwrap();
        prop_assert_eq!(Reply::decode(&bytes, &query).unwrap(), reply);
    }

    /// Error replies with any message text are one line of valid JSON
    /// carrying the code and the message unchanged.
    #[test]
    fn error_replies_are_one_line_of_json(code in 1u8..=6, message in "\\PC*|[\\x00-\\x7f]{0,80}") {
        let code = ErrorCode::from_u8(code).unwrap();
        let reply = Reply::error(code, message.clone());
        let bytes = reply.encode();
        prop_assert!(!bytes.contains(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(v["error"].as_u64(), Some(u64::from(code.as_u8())));
        prop_assert_eq!(v["message"].as_str(), Some(message.as_str()));
    }

    /// Reading a reply (exec mode asking the daemon) never panics on any
    /// bytes, and whatever it accepts re-encodes to one line of JSON.
    #[test]
    fn reply_decoding_is_total(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        let query = Request::parse(b"id:001").unwrap();
        if let Ok(reply) = Reply::decode(&raw, &query) {
            prop_assert!(!reply.encode().contains(&b'\n'));
        }
    }
}
