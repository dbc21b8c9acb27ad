//! The daemon under hostile conditions around its sockets: an idle-connection
//! flood, and a second instance run by another user.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate_testkit::daemon::{bin, Daemon};

const IDLE: usize = 2000;

fn keys_backend(dir: &std::path::Path) -> String {
    let keys = dir.join("client.keys");
    std::fs::write(&keys, "001 a 10.0.0.1 k1\n").unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    format!(
        "[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"{}\"\n",
        keys.display()
    )
}

/// Idle connections never stand between Wazuh and an answer: with 2,000
/// connections that never send anything, held open and refilled as the
/// daemon closes them (read timeout), each of 50 real requests is answered
/// in under 1 s. (Before, the connection limit was taken before accept and
/// each idle client held its slot for the whole read timeout: 4.8 s.)
#[test]
fn idle_connection_flood_does_not_delay_answers() {
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with("read_timeout = \"2s\"", &keys_backend(dir.path()));
    let stop = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicUsize::new(0));
    let refills = Arc::new(AtomicUsize::new(0));
    let holder = {
        let (socket, stop, open, refills) = (
            d.socket().to_owned(),
            stop.clone(),
            open.clone(),
            refills.clone(),
        );
        std::thread::spawn(move || {
            let connect = || {
                let s = UnixStream::connect(&socket).unwrap();
                s.set_nonblocking(true).unwrap();
                s
            };
            let mut idle: Vec<UnixStream> = (0..IDLE).map(|_| connect()).collect();
            open.store(idle.len(), Ordering::SeqCst);
            let mut buf = [0u8; 256];
            while !stop.load(Ordering::SeqCst) {
                for s in idle.iter_mut() {
                    match s.read(&mut buf) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        _ => {
                            // Answered (code 1) or closed: replace it.
                            *s = connect();
                            refills.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    while open.load(Ordering::SeqCst) < IDLE {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        assert_eq!(d.request("id:001")["error"], 0);
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(60));
    }
    stop.store(true, Ordering::SeqCst);
    holder.join().unwrap();
    assert!(
        refills.load(Ordering::SeqCst) >= IDLE,
        "the idle connections were not refilled after the read timeout"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a request took {slowest:?} behind {IDLE} idle connections"
    );
}

/// A second instance run by an unprivileged user, on a live root daemon's
/// socket it cannot connect to (permission denied), refuses to start and
/// never removes that socket, even where it could delete the file (a
/// directory its group may write).
#[test]
fn a_second_instance_under_another_uid_never_removes_a_live_socket() {
    const NOBODY: u32 = 65534;
    let dir = tempfile::tempdir().unwrap();
    let backends = keys_backend(dir.path());
    let d = Daemon::start_with("socket_mode = \"0600\"", &backends);
    let ino = std::fs::metadata(d.socket()).unwrap().ino();
    // The daemon's directory is writable by the group NOBODY is in.
    std::os::unix::fs::chown(d.dir(), Some(0), Some(NOBODY)).unwrap();
    std::fs::set_permissions(d.dir(), std::fs::Permissions::from_mode(0o770)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let second = d.dir().join("second.toml");
    std::fs::write(
        &second,
        format!(
            "[server]\nsocket = \"{}\"\n\n{backends}",
            d.socket().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&second, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(&second)
        .arg("serve")
        .env_remove("KEYGATE_CONFIG")
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the second instance started serving in place of the live daemon");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("refusing"), "{err}");
    let meta = std::fs::symlink_metadata(d.socket()).unwrap();
    assert_eq!(
        (meta.ino(), meta.uid()),
        (ino, 0),
        "the socket was replaced"
    );
    assert_eq!(
        d.request("id:001")["error"],
        0,
        "the live daemon is unreachable"
    );
}
