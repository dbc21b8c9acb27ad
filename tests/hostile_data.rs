//! Hostile stored values (issue 10, "Proof"): newlines, spaces, NUL, 10 KB
//! keys and non-UTF-8 bytes inside names or keys, stored in every backend
//! (file in both formats, SQLite, MySQL, PostgreSQL, Redis, LDAP). Each such
//! agent answers 5 by id and by address, and nothing of the value reaches
//! the reply (every value carries the marker `HOSTILE`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::process::Command;

use keygate_testkit::daemon::Daemon;
use keygate_testkit::redis::{RedisServer, REDIS_PASSWORD};
use keygate_testkit::slapd::{Slapd, LDAP_BIND_DN};
use keygate_testkit::sql::{run_sql, Kind, TestDb};

/// One hostile agent: id, name, key (raw bytes); its address is
/// `10.2.0.<last digit of id>`.
struct Hostile {
    id: &'static str,
    name: Vec<u8>,
    key: Vec<u8>,
    /// What is wrong with it.
    what: &'static str,
}

impl Hostile {
    fn ip(&self) -> String {
        format!("10.2.0.{}", &self.id[2..])
    }
}

const GOOD_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn hostile() -> Vec<Hostile> {
    let mut long_key = b"HOSTILE".to_vec();
    long_key.extend(std::iter::repeat_n(b'k', 10 * 1024));
    vec![
        Hostile {
            id: "201",
            name: b"HOSTILE\nname".to_vec(),
            key: GOOD_KEY.to_vec(),
            what: "newline in the name",
        },
        Hostile {
            id: "202",
            name: b"HOSTILE name".to_vec(),
            key: GOOD_KEY.to_vec(),
            what: "space in the name",
        },
        Hostile {
            id: "203",
            name: b"web-203".to_vec(),
            key: b"HOSTILE\0key".to_vec(),
            what: "NUL in the key",
        },
        Hostile {
            id: "204",
            name: b"web-204".to_vec(),
            key: long_key,
            what: "10 KB key",
        },
        Hostile {
            id: "205",
            name: b"HOSTILE\xe9t\xe9".to_vec(),
            key: GOOD_KEY.to_vec(),
            what: "non-UTF-8 name",
        },
        Hostile {
            id: "206",
            name: b"web-206".to_vec(),
            key: b"HOSTILE\xff\xfekey".to_vec(),
            what: "non-UTF-8 key",
        },
        Hostile {
            id: "207",
            name: b"web-207".to_vec(),
            key: b"HOSTILE key\r\n".to_vec(),
            what: "space and CRLF in the key",
        },
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asks for each agent in `agents` by id and by address: 5, no trace of
/// the value in the reply, none in the daemon's log either. A good agent
/// stored beside them answers 0, so the backend itself works.
fn assert_refused(d: &Daemon, agents: &[&Hostile], backend: &str) {
    assert_refused_but(d, agents, backend, &[]);
}

/// Like [`assert_refused`]; for the ids in `no_address`, the stored entry
/// is too broken to say which field is the address (a client.keys line
/// with five fields), so asking by address finds nothing (4) while asking
/// by id answers 5.
fn assert_refused_but(d: &Daemon, agents: &[&Hostile], backend: &str, no_address: &[&str]) {
    let good = d.request("id:200");
    assert_eq!(
        good["error"],
        0,
        "{backend}: the good agent 200: {good}\n{}",
        d.log()
    );
    for h in agents {
        for req in [format!("id:{}", h.id), format!("ip:{}", h.ip())] {
            let raw = d.request_raw(req.as_bytes());
            let v: serde_json::Value = serde_json::from_slice(&raw)
                .unwrap_or_else(|e| panic!("{backend} {req}: not JSON ({e}): {raw:?}"));
            let expected = if req.starts_with("ip:") && no_address.contains(&h.id) {
                4
            } else {
                5
            };
            assert_eq!(
                v["error"],
                expected,
                "{backend}, {} ({req}): {v}\n{}",
                h.what,
                d.log()
            );
            assert!(
                !raw.windows(7).any(|w| w == b"HOSTILE"),
                "{backend}, {}: the reply shows the value: {v}",
                h.what
            );
        }
    }
    assert!(
        !d.log().contains("HOSTILE"),
        "{backend}: the log shows a value:\n{}",
        d.log()
    );
}

fn start(backend: &str) -> Daemon {
    Daemon::start(&format!("[cache]\nenabled = false\n\n{backend}"))
}

/// client.keys: every hostile value a line can hold (a newline ends the
/// line, so 201 is tested in CSV). A space in the name makes five fields:
/// by id that line answers 5; by address it cannot be found (4), since no
/// field of it can be trusted to be the address.
#[test]
fn file_client_keys_refuses_hostile_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.keys");
    let mut text = format!(
        "200 web-200 10.2.0.100 {}\n",
        std::str::from_utf8(GOOD_KEY).unwrap()
    )
    .into_bytes();
    let all = hostile();
    let agents: Vec<&Hostile> = all
        .iter()
        .filter(|h| !h.name.contains(&b'\n') && !h.key.ends_with(b"\r\n"))
        .collect();
    for h in &agents {
        text.extend(format!("{} ", h.id).as_bytes());
        text.extend(&h.name);
        text.extend(format!(" {} ", h.ip()).as_bytes());
        text.extend(&h.key);
        text.push(b'\n');
    }
    std::fs::write(&path, text).unwrap();
    let d = start(&format!(
        "[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"{}\"\n",
        path.display()
    ));
    assert_refused_but(&d, &agents, "file (client.keys)", &["202"]);
}

/// CSV: quoted fields hold every hostile value, newlines included.
#[test]
fn file_csv_refuses_hostile_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agents.csv");
    let mut text = format!(
        "id,name,ip,key\n200,web-200,10.2.0.100,{}\n",
        std::str::from_utf8(GOOD_KEY).unwrap()
    )
    .into_bytes();
    let all = hostile();
    for h in &all {
        text.extend(format!("{},\"", h.id).as_bytes());
        text.extend(&h.name);
        text.extend(format!("\",{},\"", h.ip()).as_bytes());
        text.extend(&h.key);
        text.extend(b"\"\n");
    }
    std::fs::write(&path, text).unwrap();
    let d = start(&format!(
        "[[backend]]\nname = \"csv\"\ntype = \"file\"\nformat = \"csv\"\npath = \"{}\"\n",
        path.display()
    ));
    assert_refused(&d, &all.iter().collect::<Vec<_>>(), "file (CSV)");
}

/// SQLite: the values stored as TEXT with the hostile bytes.
#[test]
fn sqlite_refuses_hostile_values() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agents.db");
    let mut sql = format!(
        "CREATE TABLE agent (id TEXT, name TEXT, ip TEXT, agent_key TEXT);\n\
         INSERT INTO agent VALUES ('200', 'web-200', '10.2.0.100', '{}');\n",
        std::str::from_utf8(GOOD_KEY).unwrap()
    );
    let all = hostile();
    for h in &all {
        sql.push_str(&format!(
            "INSERT INTO agent VALUES ('{}', CAST(X'{}' AS TEXT), '{}', CAST(X'{}' AS TEXT));\n",
            h.id,
            hex(&h.name),
            h.ip(),
            hex(&h.key)
        ));
    }
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg(&sql)
        .output()
        .expect("sqlite3 is not installed");
    assert!(out.status.success(), "{out:?}");
    let d = start(&format!(
        "[[backend]]\nname = \"lite\"\ntype = \"sqlite\"\npath = \"{}\"\n\
         query_by_id = \"SELECT id, name, ip, agent_key FROM agent WHERE id = ?\"\n\
         query_by_ip = \"SELECT id, name, ip, agent_key FROM agent WHERE ip = ?\"\n",
        db.display()
    ));
    assert_refused(&d, &all.iter().collect::<Vec<_>>(), "sqlite");
}

/// MySQL: binary columns (VARBINARY, BLOB) hold every hostile byte.
#[test]
fn mysql_refuses_hostile_values() {
    let db = TestDb::mysql();
    let mut sql = format!(
        "CREATE TABLE hostile (id VARCHAR(8), name VARBINARY(255), ip VARCHAR(19), agent_key BLOB);\n\
         INSERT INTO hostile VALUES ('200', 'web-200', '10.2.0.100', '{}');\n",
        std::str::from_utf8(GOOD_KEY).unwrap()
    );
    let all = hostile();
    for h in &all {
        sql.push_str(&format!(
            "INSERT INTO hostile VALUES ('{}', X'{}', '{}', X'{}');\n",
            h.id,
            hex(&h.name),
            h.ip(),
            hex(&h.key)
        ));
    }
    run_sql(Kind::Mysql, db.url(), &sql);
    let d = start(&format!(
        "[[backend]]\nname = \"my\"\ntype = \"mysql\"\nurl = \"{}\"\n\
         query_by_id = \"SELECT id, name, ip, agent_key FROM hostile WHERE id = ?\"\n\
         query_by_ip = \"SELECT id, name, ip, agent_key FROM hostile WHERE ip = ?\"\n",
        db.url()
    ));
    assert_refused(&d, &all.iter().collect::<Vec<_>>(), "mysql");
}

/// PostgreSQL: BYTEA columns hold every hostile byte (a TEXT column cannot
/// hold NUL or non-UTF-8 at all).
#[test]
fn postgres_refuses_hostile_values() {
    let db = TestDb::postgres();
    let mut sql = format!(
        "CREATE TABLE hostile (id TEXT, name BYTEA, ip TEXT, agent_key BYTEA);\n\
         INSERT INTO hostile VALUES ('200', 'web-200'::bytea, '10.2.0.100', '{}'::bytea);\n",
        std::str::from_utf8(GOOD_KEY).unwrap()
    );
    let all = hostile();
    for h in &all {
        sql.push_str(&format!(
            "INSERT INTO hostile VALUES ('{}', '\\x{}'::bytea, '{}', '\\x{}'::bytea);\n",
            h.id,
            hex(&h.name),
            h.ip(),
            hex(&h.key)
        ));
    }
    run_sql(Kind::Postgres, db.url(), &sql);
    let d = start(&format!(
        "[[backend]]\nname = \"pg\"\ntype = \"postgres\"\nurl = \"{}\"\n\
         query_by_id = \"SELECT id, name, ip, agent_key FROM hostile WHERE id = $1\"\n\
         query_by_ip = \"SELECT id, name, ip, agent_key FROM hostile WHERE ip = $1\"\n",
        db.url()
    ));
    assert_refused(&d, &all.iter().collect::<Vec<_>>(), "postgres");
}

/// One Redis command in RESP, binary-safe.
fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n", a.len()).as_bytes());
        out.extend(*a);
        out.extend(b"\r\n");
    }
    out
}

/// Redis: hashes with the hostile bytes, written with binary-safe RESP.
#[test]
fn redis_refuses_hostile_values() {
    let redis = RedisServer::start();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
    let mut cmds = resp(&[b"AUTH", REDIS_PASSWORD.as_bytes()]);
    let mut count = 1;
    let all = hostile();
    let good = Hostile {
        id: "200",
        name: b"web-200".to_vec(),
        key: GOOD_KEY.to_vec(),
        what: "good",
    };
    for h in all.iter().chain([&good]) {
        let ip = if h.id == "200" {
            "10.2.0.100".to_owned()
        } else {
            h.ip()
        };
        let key = format!("wazuh:agent:{}", h.id);
        cmds.extend(resp(&[
            b"HSET",
            key.as_bytes(),
            b"id",
            h.id.as_bytes(),
            b"name",
            &h.name,
            b"ip",
            ip.as_bytes(),
            b"key",
            &h.key,
        ]));
        cmds.extend(resp(&[
            b"SET",
            format!("wazuh:agent-ip:{ip}").as_bytes(),
            h.id.as_bytes(),
        ]));
        count += 2;
    }
    s.write_all(&cmds).unwrap();
    // Read until every command has answered (one line each, no errors).
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while seen.iter().filter(|&&b| b == b'\n').count() < count {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "redis closed: {}", String::from_utf8_lossy(&seen));
        seen.extend(&buf[..n]);
    }
    assert!(!seen.contains(&b'-'), "{}", String::from_utf8_lossy(&seen));
    let d = start(&format!(
        "[[backend]]\nname = \"r\"\ntype = \"redis\"\nurl = \"{}\"\npassword_file = \"{}\"\n",
        redis.url(),
        redis.password_file().display()
    ));
    assert_refused(&d, &all.iter().collect::<Vec<_>>(), "redis");
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// LDAP: entries whose name (`l`) and key (`description`) attributes hold
/// the hostile values, added with base64 LDIF. slapd itself refuses
/// values that are not valid UTF-8 (and NUL) in these directoryString
/// attributes; those agents cannot be stored, and the test checks that
/// slapd refused them rather than assume it.
#[test]
fn ldap_refuses_hostile_values() {
    let slapd = Slapd::start();
    let all = hostile();
    let good = Hostile {
        id: "200",
        name: b"web-200".to_vec(),
        key: GOOD_KEY.to_vec(),
        what: "good",
    };
    let mut stored = Vec::new();
    for h in all.iter().chain([&good]) {
        let ip = if h.id == "200" {
            "10.2.0.100".to_owned()
        } else {
            h.ip()
        };
        let ldif = format!(
            "dn: cn=hostile-{id},ou=agents,dc=example,dc=org\nobjectClass: device\nobjectClass: ipHost\n\
             cn: hostile-{id}\nserialNumber: {id}\nipHostNumber: {ip}\nl:: {name}\ndescription:: {key}\n",
            id = h.id,
            name = base64(&h.name),
            key = base64(&h.key),
        );
        let mut child = Command::new("ldapadd")
            .args([
                "-x",
                "-H",
                &slapd.url(),
                "-D",
                "cn=admin,dc=example,dc=org",
                "-w",
                "admin-test-password",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ldapadd is not installed (bash tests/setup.sh)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            stored.push(h.id);
        } else {
            let utf8 = std::str::from_utf8(&h.name).is_ok() && std::str::from_utf8(&h.key).is_ok();
            assert!(
                !utf8 || h.key.contains(&0) || h.name.contains(&0),
                "slapd refused {} ({}): {}",
                h.id,
                h.what,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(
        stored.contains(&"200") && stored.len() >= 5,
        "stored only {stored:?}"
    );
    let d = start(&format!(
        "[[backend]]\nname = \"dir\"\ntype = \"ldap\"\nurls = [\"{}\"]\nbind_dn = \"{LDAP_BIND_DN}\"\n\
         password_file = \"{}\"\nbase_dn = \"ou=agents,dc=example,dc=org\"\nscope = \"sub\"\n\
         filter_by_id = \"(&(objectClass=device)(serialNumber={{id}}))\"\n\
         filter_by_ip = \"(&(objectClass=ipHost)(ipHostNumber={{ip}}))\"\n\
         [backend.attributes]\nid = \"serialNumber\"\nname = \"l\"\nip = \"ipHostNumber\"\nkey = \"description\"\n",
        slapd.url(),
        slapd.password_file().display()
    ));
    let agents: Vec<&Hostile> = all.iter().filter(|h| stored.contains(&h.id)).collect();
    assert_refused(&d, &agents, "ldap");
}
