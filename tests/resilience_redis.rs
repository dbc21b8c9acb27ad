//! Resilience against a real Redis that the test owns and kills mid-run:
//! cached agents are served stale while it is down, uncached ones get 2
//! within request_timeout, and the same daemon answers again once Redis is
//! back (the connection manager reconnects by itself).
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use keygate_testkit::daemon::{bin, Daemon};
use keygate_testkit::redis::{RedisServer, REDIS_PASSWORD};

#[test]
fn redis_outage_serves_stale_answers_2_for_the_rest_and_recovers() {
    let mut redis = RedisServer::start();
    let d = Daemon::start_with(
        "request_timeout = \"3s\"",
        &format!(
            "[cache]\nttl = \"1s\"\nnegative_ttl = \"1s\"\nstale_ttl = \"1h\"\nrefresh_ahead = 0.0\n\n\
             [[backend]]\nname = \"kv\"\ntype = \"redis\"\nurl = \"{}\"\npassword_file = \"{}\"\ntimeout = \"1s\"\nmax_retry_interval = \"1s\"\n",
            redis.url(),
            redis.password_file().display()
        ),
    );
    let pid = d.pid();
    assert_eq!(d.request("id:001")["data"]["name"], "web-01");
    assert_eq!(d.request("ip:10.0.0.1")["data"]["id"], "001");
    assert_eq!(d.request("id:099")["error"], 4);
    std::thread::sleep(Duration::from_millis(1300)); // all entries past their ttl

    redis.stop();
    assert_eq!(
        d.request("id:001")["data"]["name"],
        "web-01",
        "served stale"
    );
    assert_eq!(
        d.request("ip:10.0.0.1")["data"]["id"],
        "001",
        "served stale"
    );
    assert_eq!(
        d.request("id:099")["error"],
        2,
        "a not-found answer goes at its negative_ttl, never served stale"
    );
    for _ in 0..4 {
        let t = Instant::now();
        let v = d.request("id:011");
        assert_eq!(v["error"], 2, "{v}");
        assert!(
            t.elapsed() < Duration::from_millis(3500),
            "{:?}",
            t.elapsed()
        );
    }
    let out = Command::new(bin())
        .arg("--config")
        .arg(d.config())
        .args(["cache", "stats"])
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&out.stdout);
    let stale: u64 = stats
        .lines()
        .find_map(|l| {
            l.strip_prefix("stale_served")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    assert!(stale >= 2, "{stats}");
    assert!(
        !d.log().contains(REDIS_PASSWORD),
        "the password must never be logged"
    );

    redis.restart();
    let started = Instant::now();
    while d.request("id:011")["error"] != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no recovery:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(d.pid(), pid);
}
