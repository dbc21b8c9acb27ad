//! Property tests of the protocol types (issue 10, "Proof"): the request
//! parser, the record rules and the reply encoder, over generated input.
//! Case counts stay modest so `tests/run` stays fast; `PROPTEST_CASES`
//! raises them for a longer run. A failing case's seed is kept under the
//! target directory ([`config`]), never in the source tree.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keygate_core::record::Field;
use keygate_core::{
    AgentRecord, DecodeError, ErrorCode, RecordError, Reply, Request, RequestError,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// `cases` cases, with the seeds of failing cases saved under the target
/// directory (proptest's default would write them next to this file).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_TARGET_TMPDIR"),
            "/proptest-regressions/keygate-core-properties.txt"
        )))),
        ..ProptestConfig::default()
    }
}

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

/// The four text fields (id, name, ip, key) of a record that passes
/// validation.
fn valid_fields() -> impl Strategy<Value = [String; 4]> {
    (
        valid_id(),
        "[A-Za-z0-9._-]{1,127}",
        valid_ip(),
        "[!-~]{1,127}",
    )
        .prop_map(|(id, name, ip, key)| [id, name, ip, key])
}

/// A record that passes validation.
fn valid_record() -> impl Strategy<Value = AgentRecord> {
    valid_fields()
        .prop_map(|[id, name, ip, key]| AgentRecord::parse(&id, &name, &ip, &key).unwrap())
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

/// What replaces one field of a valid record: a hostile value, or the
/// valid value with one character slipped in at a position (whitespace and
/// NUL, which no field may hold and which would split a client.keys line;
/// characters some fields take and others refuse).
#[derive(Clone, Debug)]
enum Damage {
    Replace(String),
    Insert(char, usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    let insert = |chars: Vec<char>| {
        (prop::sample::select(chars), any::<usize>()).prop_map(|(c, at)| Damage::Insert(c, at))
    };
    prop_oneof![
        1 => any_field().prop_map(Damage::Replace),
        2 => insert(vec![' ', '\t', '\r', '\n', '\0']),
        1 => insert(vec!['\x7f', 'é', '"', '/', ':', '!', '#', '-']),
    ]
}

/// Four fields of a valid record, most often with one of them (its index
/// is returned) damaged: near misses, which validation must either refuse
/// naming that field or accept as a record that round-trips.
fn near_valid_fields() -> impl Strategy<Value = ([String; 4], Option<usize>)> {
    (
        valid_fields(),
        prop::option::weighted(0.9, (0usize..4, damage())),
    )
        .prop_map(|(mut fields, damage)| {
            let which = damage.map(|(i, damage)| {
                match damage {
                    Damage::Replace(text) => fields[i] = text,
                    // Valid fields are ASCII: every index is a char boundary.
                    Damage::Insert(c, at) => {
                        let at = at % (fields[i].len() + 1);
                        fields[i].insert(at, c);
                    }
                }
                i
            });
            (fields, which)
        })
}

const FIELDS: [Field; 4] = [Field::Id, Field::Name, Field::Ip, Field::Key];

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
    #![proptest_config(config(512))]

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
    /// The input is a valid record with at most one field damaged, so about
    /// a fifth of the cases are accepted (an undamaged record must be) and
    /// the rest are near misses, refused naming the damaged field; a key
    /// with a space comes up more than ten times a run.
    #[test]
    fn accepted_records_round_trip_through_client_keys(
        (fields, damaged) in near_valid_fields()
    ) {
        let [id, name, ip, key] = &fields;
        match AgentRecord::parse(id, name, ip, key) {
            Ok(record) => {
                let line = line_of(&record);
                let split: Vec<&str> = line.split(' ').collect();
                prop_assert_eq!(split.len(), 4, "{:?}", line);
                prop_assert!(!line.contains(['\n', '\r', '\t', '\0']), "{:?}", line);
                let back = AgentRecord::parse(split[0], split[1], split[2], split[3]);
                prop_assert_eq!(back, Ok(record));
            }
            Err(RecordError::Missing(field) | RecordError::Invalid { field, .. }) => {
                prop_assert!(damaged.is_some(), "a valid record was refused: {:?}", field);
                prop_assert_eq!(Some(field), damaged.map(|i| FIELDS[i]));
            }
            Err(e) => prop_assert!(false, "not a field error: {}", e),
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

    /// Reading a reply (exec mode asking the daemon, for `id:001`) never
    /// panics on any bytes, and whatever it accepts re-encodes to one line
    /// of JSON that reads back to the same reply. The input is our own
    /// encoder's output (which must read back to what was encoded; a record
    /// for another id is refused), the same damaged, or any bytes.
    #[test]
    fn reply_decoding_is_total((raw, sent) in reply_bytes()) {
        let query = Request::parse(b"id:001").unwrap();
        match (Reply::decode(&raw, &query), sent) {
            (Ok(reply), sent) => {
                let line = reply.encode();
                prop_assert!(!line.contains(&b'\n'));
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&line).is_ok());
                prop_assert_eq!(Reply::decode(&line, &query).ok(), Some(reply.clone()));
                if let Some(sent) = sent {
                    prop_assert!(answers_001(&sent), "{:?} was accepted for id:001", sent);
                    prop_assert_eq!(reply, sent);
                }
            }
            (Err(e), Some(sent)) => match &sent {
                Reply::Found(record) if !answers_001(&sent) => {
                    prop_assert!(
                        matches!(e, DecodeError::Record(RecordError::IdMismatch { .. })),
                        "{}: {}", record.id.as_str(), e
                    );
                }
                _ => prop_assert!(false, "our own encoding of {:?} was refused: {}", sent, e),
            },
            (Err(_), None) => {}
        }
    }
}

/// Whether a reply is one keygate could send for `id:001`.
fn answers_001(reply: &Reply) -> bool {
    match reply {
        Reply::Found(record) => record.id.as_str() == "001",
        Reply::Error { .. } => true,
    }
}

/// A reply keygate could send: a record (for `001` or another id), or an
/// error with any code but 0 and any message.
fn any_reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        valid_fields().prop_map(|[_, name, ip, key]| {
            Reply::Found(AgentRecord::parse("001", &name, &ip, &key).unwrap())
        }),
        valid_record().prop_map(Reply::Found),
        (1u8..=6, "\\PC{0,40}|[\\x00-\\x7f]{0,40}").prop_map(|(code, message)| {
            Reply::error(ErrorCode::from_u8(code).unwrap(), message)
        }),
    ]
}

/// Bytes for [`Reply::decode`], with the reply they encode when they are
/// one: an encoded reply (with or without a trailing newline); the same
/// with a byte changed, inserted or the end cut off; or any bytes.
fn reply_bytes() -> impl Strategy<Value = (Vec<u8>, Option<Reply>)> {
    prop_oneof![
        (any_reply(), any::<bool>()).prop_map(|(reply, newline)| {
            let mut bytes = reply.encode();
            if newline {
                bytes.push(b'\n');
            }
            (bytes, Some(reply))
        }),
        (any_reply(), any::<usize>(), any::<u8>(), 0u8..3).prop_map(|(reply, at, byte, how)| {
            let mut bytes = reply.encode();
            let at = at % bytes.len();
            match how {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => bytes.truncate(at),
            }
            (bytes, None)
        }),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|bytes| (bytes, None)),
    ]
}
