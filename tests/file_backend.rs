//! The file backend through the real daemon, as Wazuh asks it: a file
//! with bytes that are not UTF-8 keeps being served line by line, and the
//! address rules (`/0` is `any`, the most specific network wins, IPv4-mapped
//! requests find IPv4 records) hold end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keygate_testkit::daemon::{exec, Daemon};

const KEY1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const KEY3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

/// A daemon serving `contents` as client.keys, and the dir holding it.
fn serve(contents: &[u8]) -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.keys");
    std::fs::write(&path, contents).unwrap();
    let d = Daemon::start(&format!(
        "[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"{}\"\n",
        path.display()
    ));
    (dir, d)
}

/// A Latin-1 `ü` (0xFC) in a comment line and in one agent line: every
/// other agent is answered (0), the bad line answers 5, and the log names
/// its line number and rule without its key. (Before: code 2 for every
/// agent, the file "is not UTF-8 text".)
#[test]
fn one_non_utf8_byte_does_not_disable_the_file() {
    let mut file = b"# B\xfcro M\xfcnchen\n".to_vec();
    file.extend(format!("001 web-01 192.168.1.100 {KEY1}\n").as_bytes());
    file.extend(b"002 m\xfcnchen 192.168.1.102 ");
    file.extend(KEY3.as_bytes());
    file.extend(b"\n003 db-01 192.168.1.103 ");
    file.extend(KEY3.as_bytes());
    file.extend(b"\n");
    let (_dir, d) = serve(&file);
    let v = d.request("id:001");
    assert_eq!(v["error"], 0, "{v}");
    assert_eq!(v["data"]["key"], KEY1);
    assert_eq!(d.request("ip:192.168.1.103")["data"]["id"], "003");
    let v = d.request("id:002");
    assert_eq!(v["error"], 5, "{v}");
    assert!(!v.to_string().contains(KEY3));
    let log = d.log();
    assert!(
        log.contains("line=3") && log.contains("field 'name' is invalid: not UTF-8 text"),
        "{log}"
    );
    assert!(!log.contains(KEY3), "the log shows a key: {log}");
}

/// `0.0.0.0/0` and `::/0` are `any` (found by id only); overlapping
/// networks answer with the most specific, equal ones with 5; an
/// IPv4-mapped request finds the IPv4 record. (Before: `ip:8.8.8.8` got
/// agent 002, overlaps answered 5, the mapped address 4.)
#[test]
fn address_rules_end_to_end() {
    let file = format!(
        "001 web-01 192.168.1.100 {KEY1}\n\
         002 all-v4 0.0.0.0/0 {KEY1}\n\
         003 all-v6 ::/0 {KEY1}\n\
         004 wide 10.0.0.0/8 {KEY1}\n\
         005 narrow 10.1.0.0/16 {KEY1}\n\
         006 tie-a 172.16.0.0/12 {KEY1}\n\
         007 tie-b 172.16.0.0/12 {KEY1}\n"
    );
    let (_dir, d) = serve(file.as_bytes());
    assert_eq!(d.request("ip:8.8.8.8")["error"], 4);
    assert_eq!(d.request("ip:2001:db8::1")["error"], 4);
    assert_eq!(d.request("id:002")["data"]["ip"], "0.0.0.0/0");
    assert_eq!(d.request("ip:10.1.2.3")["data"]["id"], "005");
    assert_eq!(d.request("ip:10.2.0.1")["data"]["id"], "004");
    assert_eq!(d.request("ip:172.16.0.1")["error"], 5);
    let v = d.request("ip:::ffff:192.168.1.100");
    assert_eq!(v["error"], 0, "{v}");
    assert_eq!(v["data"]["id"], "001");
}

/// Two lines sharing an id (issue 24, point 10) are refused on every path:
/// by the id and by each one's address (5), in `keygate list` (one item
/// naming both lines) and in `keygate export` (written by neither). Before:
/// each was served by its address, and `export` wrote the first.
#[test]
fn lines_sharing_an_id_are_refused_on_every_path() {
    let file = format!(
        "001 web-01 192.168.1.100 {KEY1}\n002 db-a 192.168.1.102 {KEY3}\n002 db-b 192.168.1.103 {KEY3}\n"
    );
    let (dir, d) = serve(file.as_bytes());
    assert_eq!(d.request("id:001")["error"], 0);
    for req in ["id:002", "ip:192.168.1.102", "ip:192.168.1.103"] {
        let v = d.request(req);
        assert_eq!(v["error"], 5, "{req}: {v}");
    }
    let list = exec(d.config(), &["list"]);
    assert!(
        list.output.contains("lines 2, 3") && list.output.contains("id 002 is on 2 lines"),
        "{}",
        list.output
    );
    assert!(!list.output.contains("db-a"), "{}", list.output);
    let exported = dir.path().join("exported.keys");
    let export = exec(d.config(), &["export", "-o", exported.to_str().unwrap()]);
    assert!(export.output.contains("lines 2, 3"), "{}", export.output);
    assert!(!export.output.contains(KEY3), "{}", export.output);
    assert_eq!(
        std::fs::read_to_string(&exported).unwrap(),
        format!("001 web-01 192.168.1.100 {KEY1}\n")
    );
    let log = d.log();
    assert_eq!(
        log.matches("Agent id is on more than one line").count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("lines=2, 3") || log.contains("lines=\"2, 3\""),
        "{log}"
    );
}
