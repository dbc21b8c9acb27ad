//! Unit tests of the LDAP backend (no server).

use super::*;
use keygate_core::record::Field;

fn config() -> LdapConfig {
    serde_json::from_str(
        r#"{"urls":["ldap://127.0.0.1:1"],"base_dn":"ou=agents,dc=example,dc=org"}"#,
    )
    .unwrap()
}

fn problems(c: &LdapConfig) -> Vec<String> {
    let mut list = Vec::new();
    c.validate(&mut Problems::new("backend[0]", &mut list));
    list.into_iter().map(|p| p.to_string()).collect()
}

#[test]
fn escaping_keeps_filter_metacharacters_out_of_the_filter() {
    assert_eq!(ldap3::ldap_escape("*)(x=1"), r"\2a\29\28x=1");
    assert_eq!(
        render_filter(
            "(&(objectClass=device)(serialNumber={id}))",
            "{id}",
            "*)(x=1"
        ),
        r"(&(objectClass=device)(serialNumber=\2a\29\28x=1))"
    );
    assert_eq!(
        render_filter("(ipHostNumber={ip})", "{ip}", "fe80::1"),
        "(ipHostNumber=fe80::1)"
    );
    assert_eq!(render_filter("(a={id})", "{id}", "a\\b\0"), r"(a=a\5cb\00)");
}

#[test]
fn defaults_follow_the_documented_mapping() {
    let c = config();
    assert_eq!(c.scope, LdapScope::Sub);
    assert_eq!(c.pool_size, 4);
    assert_eq!(c.attributes.id, "serialNumber");
    assert_eq!(c.attributes.key, "description");
    assert!(problems(&c).is_empty(), "{:?}", problems(&c));
    let unknown = serde_json::from_str::<LdapConfig>(
        r#"{"urls":["ldap://h"],"base_dn":"dc=x","attributes":{"secret":"x"}}"#,
    );
    assert!(unknown.is_err());
}

#[test]
fn validation_reports_every_problem_with_its_key() {
    let mut c = config();
    c.hosts.urls = vec!["http://h".into(), "ldaps://u:pw@h".into()];
    c.starttls = true;
    c.bind_dn = Some("cn=keygate".into());
    c.base_dn = " ".into();
    c.pool_size = 0;
    c.filter_by_id = "(serialNumber={ip})".into();
    c.filter_by_ip = "(&(ipHostNumber={ip})".into();
    c.attributes.key = "desc ription".into();
    let p = problems(&c);
    let keys: Vec<&str> = p.iter().map(|m| m.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "backend[0].urls[0]",
            "backend[0].urls[1]",
            "backend[0].urls[1]",
            "backend[0].password_file",
            "backend[0].base_dn",
            "backend[0].pool_size",
            "backend[0].filter_by_id",
            "backend[0].filter_by_ip",
            "backend[0].attributes.key",
        ],
        "{p:?}"
    );
}

#[test]
fn multi_valued_attributes_pass_only_when_all_values_are_equal() {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(single_value(&v(&["k1", "k1"]), Field::Key).unwrap(), "k1");
    assert!(single_value(&v(&["k1", "k2"]), Field::Key).is_err());
    assert_eq!(
        single_value(&v(&[]), Field::Key).unwrap_err(),
        RecordError::Missing(Field::Key)
    );
}

#[tokio::test]
async fn builds_while_the_directory_is_down_and_reports_an_outage() {
    let b = config().build("dir").await.unwrap();
    let q = keygate_core::Request::parse(b"id:001").unwrap();
    let e = b.lookup(&q).await.unwrap_err();
    assert_eq!(e.code(), keygate_core::ErrorCode::Unavailable, "{e}");
    assert!(b.health().await.is_err());
}

#[tokio::test]
async fn unreadable_ca_file_is_a_build_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    let pem = dir.path().join("ca.pem");
    std::fs::write(&pem, "not a certificate\n").unwrap();
    c.ca_file = Some(pem);
    let e = c.build("dir").await.err().unwrap();
    assert_eq!(e.key(), "ca_file");
    assert!(e.to_string().contains("holds no certificate"), "{e}");
    c.ca_file = Some(dir.path().join("missing.pem"));
    let e = c.build("dir").await.err().unwrap();
    assert_eq!(
        e.problem("backend[3]").to_string(),
        format!(
            "backend[3].ca_file: cannot read {}: No such file or directory",
            dir.path().join("missing.pem").display()
        )
    );
}

/// `url` works like `urls` with one entry; `connect_timeout` is
/// configurable (default 2 s); a password source needs `bind_dn`.
#[test]
fn url_connect_timeout_and_password_sources_are_shared_keys() {
    let c: LdapConfig = serde_json::from_str(
        r#"{"url":"ldap://127.0.0.1:1","base_dn":"dc=x","connect_timeout":"300ms",
            "bind_dn":"cn=kg","password_env":"KEYGATE_TEST_LDAP_PW"}"#,
    )
    .unwrap();
    assert!(problems(&c).is_empty(), "{:?}", problems(&c));
    assert_eq!(
        c.hosts.connect_timeout(DEFAULT_CONNECT_TIMEOUT),
        Duration::from_millis(300)
    );
    let mut anonymous = c.clone();
    anonymous.bind_dn = None;
    assert_eq!(
        problems(&anonymous),
        ["backend[0].bind_dn: is required with password_env"]
    );
}

/// `filter_all` defaults to `filter_by_id` with `{id}` as `*`; set, it is
/// checked at load: no placeholder, a valid filter.
#[test]
fn filter_all_defaults_to_the_id_filter_and_is_validated() {
    let mut c = config();
    assert_eq!(c.filter_all(), "(&(objectClass=device)(serialNumber=*))");
    c.filter_by_id = "(employeeNumber=agent-{id})".into();
    assert_eq!(c.filter_all(), "(employeeNumber=agent-*)");
    c.filter_all = Some("(cn=*)".into());
    assert_eq!(c.filter_all(), "(cn=*)");
    assert!(problems(&c).is_empty(), "{:?}", problems(&c));
    for (filter, message) in [
        ("(serialNumber={id})", "takes no placeholder ({...})"),
        ("(&(cn=*)", "is not a valid LDAP filter (RFC 4515)"),
        ("  ", "must not be empty"),
    ] {
        c.filter_all = Some(filter.into());
        assert_eq!(
            problems(&c),
            [format!("backend[0].filter_all: {message}")],
            "{filter}"
        );
    }
}
