//! Unit tests of the http backend: validation with key paths, the
//! encoding of values into URLs, the pointers, secrets never shown. The
//! backend against a real HTTPS server: `tests/http.rs`.

use keygate_core::{BackendError, RecordError};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::record::{split_list, Pointers};
use super::*;

const KEY: &str = "ac57f6a5e1d9b0c2e5a1d6f7c8b9a0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f50c71";

fn config(v: Value) -> HttpConfig {
    serde_json::from_value(v).unwrap()
}

/// The issue's example.
fn example() -> Value {
    json!({
        "url_by_id": "https://cmdb.example.org/api/agents/{id}",
        "url_by_ip": "https://cmdb.example.org/api/agents?ip={ip}",
        "token_file": "/etc/keygate/cmdb.token",
        "ca_file": "/etc/keygate/cmdb-ca.pem",
        "fields": {"id": "/data/0/agent_id", "name": "/data/0/hostname",
                   "ip": "/data/0/ip", "key": "/data/0/wazuh_key"}
    })
}

fn problems(c: &HttpConfig) -> Vec<String> {
    let mut list = Vec::new();
    c.validate(&mut Problems::new("backend[2]", &mut list));
    list.into_iter().map(|p| p.to_string()).collect()
}

#[test]
fn the_issues_example_is_valid_and_its_host_is_the_templates_origin() {
    let c = config(example());
    assert_eq!(problems(&c), Vec::<String>::new());
    assert_eq!(
        c.host_list().url.as_deref(),
        Some("https://cmdb.example.org")
    );
    assert_eq!(c.path_of(&c.url_by_ip), "/api/agents?ip={ip}");
    assert_eq!(c.not_found_status, [404]);
    assert_eq!(c.page_size, 500);
}

/// Every problem at once, each under its own key, no URL quoted.
#[test]
fn every_problem_is_reported_with_its_key() {
    let c = config(json!({
        "urls": ["https://a.example.org", "https://kg:hunter2@b.example.org"],
        "url_by_id": "https://a.example.org/api/{id}",
        "url_by_ip": "/api/agents?ip={ip}&x={id}",
        "url_all": "/api/agents?offset={offset}",
        "page_size": 0,
        "token_file": "/t",
        "basic_user": "kg",
        "insecure": true,
        "ca_file": "/ca.pem",
        "not_found_status": [404, 500, 200],
        "fields": {"id": "/data/0/id", "name": "/other/0/name", "key": "data/0/key"}
    }));
    let p = problems(&c);
    let want = [
        "backend[2].urls[1]: must not hold a user or password",
        "backend[2].url_by_id: must be a path such as /api/agents/{id} when url or urls is set",
        "backend[2].url_by_ip: only {ip} may appear in braces",
        "backend[2].url_all: use {offset} and {limit} together",
        "backend[2].page_size: must be from 1 to 10000",
        "backend[2].insecure: set either ca_file or insecure, not both",
        "backend[2].not_found_status[1]: must be 204 or a 4xx status",
        "backend[2].not_found_status[2]: must be 204 or a 4xx status",
        "backend[2].basic_user: set either token_file or basic_user, not both",
        "backend[2].basic_user: needs a password",
        "backend[2].fields.key: must be a JSON pointer",
        "backend[2].fields.name: must go through the same result list as fields.id (/data/0)",
        "backend[2].fields.ip: must go through the same result list as fields.id (/data/0)",
        "backend[2].fields.key: must go through the same result list as fields.id (/data/0)",
    ];
    for w in want {
        assert!(
            p.iter().any(|m| m.starts_with(w)),
            "missing {w:?} in {p:#?}"
        );
    }
    assert_eq!(p.len(), want.len(), "{p:#?}");
    assert!(!p.iter().any(|m| m.contains("hunter2")), "{p:?}");
}

#[test]
fn templates_need_their_placeholder_and_one_host() {
    let mut v = example();
    v["url_by_id"] = json!("https://cmdb.example.org/api/agents");
    v["url_by_ip"] = json!("https://other.example.org/api/agents?ip={ip}");
    v["url_all"] = json!("https://cmdb.example.org/api/agents");
    let p = problems(&config(v));
    assert_eq!(
        p,
        [
            "backend[2].url_by_id: must contain {id}",
            "backend[2].url_by_ip: must be on the same host as url_by_id (several hosts: set \
             urls and make the templates paths)",
        ]
    );
    let mut v = example();
    v["url_by_id"] = json!("https://{id}.example.org/api");
    v["url_by_ip"] = json!("/api/agents?ip={ip}");
    let p = problems(&config(v));
    assert!(
        p[0].starts_with("backend[2].url_by_id: a placeholder may only be in the path"),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("backend[2].url_by_ip: must be an absolute https:// URL")),
        "{p:?}"
    );
}

/// A token or password goes in clear text only to this machine.
#[test]
fn credentials_over_plain_http_are_refused_except_to_loopback() {
    let mut v = example();
    v["url_by_id"] = json!("http://cmdb.example.org/api/agents/{id}");
    v["url_by_ip"] = json!("http://cmdb.example.org/api/agents?ip={ip}");
    v.as_object_mut().unwrap().remove("ca_file");
    assert_eq!(
        problems(&config(v.clone())),
        [
            "backend[2].token_file: would be sent in clear text to an http:// URL on another \
          machine: use https://"
        ]
    );
    v["url_by_id"] = json!("http://127.0.0.1:8080/api/agents/{id}");
    v["url_by_ip"] = json!("http://127.0.0.1:8080/api/agents?ip={ip}");
    assert_eq!(problems(&config(v.clone())), Vec::<String>::new());
    v.as_object_mut().unwrap().remove("token_file");
    v["password_file"] = json!("/pw");
    assert_eq!(
        problems(&config(v)),
        ["backend[2].password_file: is basic_user's password: set basic_user too"]
    );
}

/// `url_all` needs a result list to find the agents of a page.
#[test]
fn url_all_needs_pointers_through_a_result_list() {
    let c = config(json!({
        "url_by_id": "https://h/a/{id}", "url_by_ip": "https://h/a?ip={ip}",
        "url_all": "https://h/a?offset={offset}&limit={limit}"
    }));
    assert_eq!(
        problems(&c),
        [
            "backend[2].url_all: needs [backend.fields] pointers through a result list (like \
          /data/0/id) to find the agents in each page"
        ]
    );
}

#[test]
fn unknown_keys_are_refused() {
    let mut v = example();
    v["tokenfile"] = json!("/x");
    assert!(serde_json::from_value::<HttpConfig>(v).is_err());
}

/// Tokens in a template's query and passwords in URLs are never shown;
/// the config is flagged as holding a password.
#[test]
fn debug_output_never_shows_a_secret() {
    let c = config(json!({
        "urls": ["https://kg:hunter2@a.example.org"],
        "url_by_id": "/api/agents/{id}?token=hunter2",
        "url_by_ip": "/api/agents?ip={ip}",
        "basic_user": "kg", "password_env": "X"
    }));
    let text = format!("{c:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("/api/agents/{id}?token=***"), "{text}");
    assert!(c.has_inline_password());
    assert!(!config(example()).has_inline_password());
}

/// `insecure = true` is valid, and warned about under its key.
#[test]
fn insecure_is_warned_about() {
    let mut v = example();
    v.as_object_mut().unwrap().remove("ca_file");
    v["insecure"] = json!(true);
    let c = config(v);
    assert!(problems(&c).is_empty());
    let mut list = Vec::new();
    c.warnings(&mut Problems::new("backend[0]", &mut list));
    assert_eq!(list.len(), 1);
    assert!(list[0].to_string().starts_with(
        "backend[0].insecure: insecure = true: the inventory's TLS certificate is NOT verified"
    ));
    let mut none = Vec::new();
    config(example()).warnings(&mut Problems::new("backend[0]", &mut none));
    assert!(none.is_empty());
}

#[tokio::test]
async fn unreadable_token_or_ca_file_is_a_build_error_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = example();
    v["token_file"] = json!(dir.path().join("missing.token"));
    let e = config(v).build("cmdb").await.err().unwrap();
    assert_eq!(e.key(), "token_file");
    let token = dir.path().join("token");
    std::fs::write(&token, "abc\n").unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let mut v = example();
    v["token_file"] = json!(token);
    v["ca_file"] = json!(ca);
    let e = config(v).build("cmdb").await.err().unwrap();
    assert_eq!(e.key(), "ca_file");
    assert!(e.to_string().contains("holds no certificate"), "{e}");
}

#[test]
fn the_result_list_is_where_the_first_0_token_is() {
    assert_eq!(split_list("/data/0/agent_id"), (Some("/data"), "/agent_id"));
    assert_eq!(split_list("/0/id"), (Some(""), "/id"));
    assert_eq!(split_list("/a/10/b/0/c/0"), (Some("/a/10/b"), "/c/0"));
    assert_eq!(split_list("/data/agent_id"), (None, "/data/agent_id"));
    assert_eq!(split_list(""), (None, ""));
}

fn pointers() -> Pointers {
    Pointers::new(&config(example()).fields)
}

fn entry(id: Value, name: Value) -> Value {
    json!({"agent_id": id, "hostname": name, "ip": "10.0.0.7", "wazuh_key": KEY})
}

/// An empty list is not found, two entries are ambiguous, one is the
/// record; a number is converted only for the id.
#[test]
fn a_result_list_gives_none_one_or_ambiguous() {
    let p = pointers();
    assert!(p.lookup(&json!({"data": []})).unwrap().is_none());
    let one = p
        .lookup(&json!({"data": [entry(json!(7), json!("web"))]}))
        .unwrap()
        .unwrap();
    assert_eq!(one.id.as_str(), "007");
    let two = json!({"data": [entry(json!("007"), json!("a")), entry(json!("008"), json!("b"))]});
    assert!(matches!(p.lookup(&two), Err(BackendError::Ambiguous)));
    let e = p
        .lookup(&json!({"data": [entry(json!("007"), json!(5))]}))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid record: field 'name' is invalid: must be a JSON string"
    );
    let e = p
        .lookup(&json!({"data": [entry(json!(7.5), json!("a"))]}))
        .unwrap_err();
    assert!(e.to_string().contains("not an integer"), "{e}");
    let e = p
        .lookup(&json!({"data": [entry(json!("007"), Value::Null)]}))
        .unwrap_err();
    assert!(matches!(
        e,
        BackendError::InvalidRecord(RecordError::Missing(_))
    ));
}

/// A pointer to nothing: a bad record for a field, a clear error naming
/// the list's pointer for the list; never the response's content.
#[test]
fn pointers_that_lead_nowhere_are_clear_errors() {
    let p = pointers();
    let mut e = entry(json!("007"), json!("a"));
    e.as_object_mut().unwrap().remove("wazuh_key");
    let err = p.lookup(&json!({"data": [e]})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid record: field 'key' is invalid: the response has nothing at its \
         [backend.fields] pointer"
    );
    let err = p.lookup(&json!({"agents": []})).unwrap_err();
    assert_eq!(err.code(), keygate_core::ErrorCode::Internal);
    assert!(err.to_string().contains("nothing at \"/data\""), "{err}");
    let err = p.lookup(&json!({"data": {"0": "x"}})).unwrap_err();
    assert!(err.to_string().contains("no list (JSON array)"), "{err}");
    let err = record::parse(format!("{{\"key\": \"{KEY}\"").as_bytes()).unwrap_err();
    assert!(err.to_string().contains("is not JSON: EOF"), "{err}");
    assert!(!err.to_string().contains(KEY));
}

#[test]
fn encoding_keeps_only_unreserved_bytes() {
    assert_eq!(encode("10.0.0.1"), "10.0.0.1");
    assert_eq!(encode("2001:db8::1"), "2001%3Adb8%3A%3A1");
    assert_eq!(
        encode("a/b?c#d%e f&g=h+"),
        "a%2Fb%3Fc%23d%25e%20f%26g%3Dh%2B"
    );
    assert_eq!(encode("é"), "%C3%A9");
    // Dot segments would climb the path even encoded (%2E%2E is `..` to
    // URL parsers): refused, as is an empty segment.
    for value in ["", ".", ".."] {
        assert!(fill("https://h", "/a/{id}/b", &[("id", value)]).is_none());
    }
    assert_eq!(
        fill("https://h", "/a/{id}/b", &[("id", "...")])
            .unwrap()
            .path(),
        "/a/.../b"
    );
}

proptest! {
    // A unit test has no target directory to keep seeds in; proptest's
    // default would write them into the source tree, so none are kept (the
    // failure message shows the failing value).
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whatever the value, it stays one path segment and one query value:
    /// the path, the other parameters and the fragment never change.
    #[test]
    fn no_value_changes_the_path_or_the_query(value in any::<String>()) {
        let Some(url) = fill(
            "https://cmdb.example.org/base/",
            "/api/agents/{id}/key?ip={id}&format=json",
            &[("id", value.as_str())],
        ) else {
            prop_assert!(value.is_empty() || value == "." || value == "..");
            return Ok(());
        };
        let segments: Vec<&str> = url.path_segments().unwrap().collect();
        prop_assert_eq!(segments.len(), 5);
        prop_assert_eq!(&segments[..3], &["base", "api", "agents"][..]);
        prop_assert_eq!(segments[4], "key");
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        prop_assert_eq!(pairs.len(), 2);
        prop_assert_eq!(&pairs[0].1, &value);
        prop_assert_eq!(&pairs[1], &("format".to_owned(), "json".to_owned()));
        prop_assert!(url.fragment().is_none());
        prop_assert_eq!(url.host_str(), Some("cmdb.example.org"));
    }
}
