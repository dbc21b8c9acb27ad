//! Unit tests of the Redis backend (no server).

use super::*;

fn config() -> RedisConfig {
    serde_json::from_str(r#"{"url":"redis://127.0.0.1:6379/0"}"#).unwrap()
}

fn problems(c: &RedisConfig) -> Vec<String> {
    let mut list = Vec::new();
    c.validate(&mut Problems::new("backend[0]", &mut list));
    list.into_iter().map(|p| p.to_string()).collect()
}

#[test]
fn defaults_and_renamed_fields_deserialize() {
    let c: RedisConfig =
        serde_json::from_str(r#"{"url":"redis://h","fields":{"key":"agent_key"}}"#).unwrap();
    assert_eq!(c.key_by_id, "wazuh:agent:{id}");
    assert_eq!(c.key_by_ip, "wazuh:agent-ip:{ip}");
    assert_eq!(c.fields.key, "agent_key");
    assert_eq!(c.fields.id, "id");
    assert_eq!(
        c.hosts.connect_timeout(DEFAULT_CONNECT_TIMEOUT),
        Duration::from_secs(2)
    );
    assert!(problems(&c).is_empty(), "{:?}", problems(&c));
    let unknown =
        serde_json::from_str::<RedisConfig>(r#"{"url":"redis://h","fields":{"secret":"x"}}"#);
    assert!(unknown.is_err());
    let unknown = serde_json::from_str::<RedisConfig>(r#"{"url":"redis://h","secret":"x"}"#);
    assert!(unknown.is_err());
    let c: RedisConfig =
        serde_json::from_str(r#"{"url":"redis://h","connect_timeout":"300ms"}"#).unwrap();
    assert_eq!(
        c.hosts.connect_timeout(DEFAULT_CONNECT_TIMEOUT),
        Duration::from_millis(300)
    );
}

#[test]
fn templates_accept_only_their_own_placeholder() {
    let mut c = config();
    c.key_by_id = "agent:{ip}".into();
    c.key_by_ip = "ip:{ip}:{name}".into();
    let p = problems(&c);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(
        p[0].starts_with("backend[0].key_by_id: must contain {id}"),
        "{p:?}"
    );
    assert!(p[1].starts_with("backend[0].key_by_id: only {id}"), "{p:?}");
    assert!(p[2].starts_with("backend[0].key_by_ip: only {ip}"), "{p:?}");
}

/// The `SCAN` pattern is `key_by_id` with `{id}` as `*` and the
/// template's own glob characters escaped.
#[test]
fn scan_pattern_escapes_glob_characters() {
    assert_eq!(
        list::scan_pattern("wazuh:agent:{id}", "{id}"),
        "wazuh:agent:*"
    );
    assert_eq!(
        list::scan_pattern("a*b?[c]\\:{id}:x", "{id}"),
        "a\\*b\\?\\[c\\]\\\\:*:x"
    );
}

#[test]
fn urls_are_checked_without_being_quoted() {
    for (url, ok) in [
        ("redis://127.0.0.1:6379/0", true),
        ("rediss://redis.example:6380", true),
        ("unix:///run/redis.sock", true),
        ("http://u:hunter2@host", false),
        ("hunter2", false),
    ] {
        let mut c = config();
        c.hosts.url = Some(url.into());
        let p = problems(&c);
        assert_eq!(p.is_empty(), ok, "{url}: {p:?}");
        assert!(!p.iter().any(|m| m.contains("hunter2")), "{p:?}");
    }
}

#[test]
fn debug_output_redacts_passwords_in_every_url() {
    let mut c = config();
    c.hosts.url = None;
    c.hosts.urls = vec![
        "redis://:hunter2@10.0.0.5:6379/0".into(),
        "redis://10.0.0.6:6379/0?password=hunter2".into(),
    ];
    let d = format!("{c:?}");
    assert!(!d.contains("hunter2"), "{d}");
    assert!(d.contains("redis://10.0.0.5:6379/0"), "{d}");
    assert!(d.contains("failback_after"), "{d}");
}

/// With two hosts down, one lookup tries both (each fails fast) and
/// answers 2 well inside the per-operation timeouts.
#[tokio::test]
async fn all_hosts_down_answers_2_quickly() {
    let mut c = config();
    c.hosts.url = None;
    c.hosts.urls = vec![
        "redis://127.0.0.1:1/0".into(),
        "redis://127.0.0.1:2/0".into(),
    ];
    let b = c.build("r").await.unwrap();
    let q = keygate_core::Request::parse(b"id:001").unwrap();
    let started = std::time::Instant::now();
    let e = b.lookup(&q).await.unwrap_err();
    assert_eq!(e.code(), keygate_core::ErrorCode::Unavailable, "{e}");
    assert!(
        started.elapsed() < DEFAULT_CONNECT_TIMEOUT * 2,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn builds_while_redis_is_down_and_reports_an_outage() {
    // Port 1 on loopback: nothing listens there.
    let mut c = config();
    c.hosts.url = Some("redis://127.0.0.1:1/0".into());
    let b = c.build("r").await.unwrap();
    let q = keygate_core::Request::parse(b"id:001").unwrap();
    let e = b.lookup(&q).await.unwrap_err();
    assert_eq!(e.code(), keygate_core::ErrorCode::Unavailable, "{e}");
    assert!(b.health().await.is_err());
}

/// A missing password file fails the build with its key and path.
#[tokio::test]
async fn password_file_is_read_at_build_and_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.hosts.password_file = Some(dir.path().join("missing"));
    let e = c.build("r").await.err().unwrap();
    assert_eq!(e.key(), "password_file");
    assert!(e.to_string().contains("cannot read"), "{e}");
}
