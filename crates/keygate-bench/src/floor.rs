//! The floor: a tokio responder with a fixed reply and no lookup, the
//! kernel's and runtime's cost measured in the same invocation.

use std::path::PathBuf;

use anyhow::Result;

pub fn start_floor() -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("floor.sock");
    let std_listener = std::os::unix::net::UnixListener::bind(&path)?;
    std_listener.set_nonblocking(true)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let Ok(listener) = tokio::net::UnixListener::from_std(std_listener) else { return };
            const REPLY: &[u8] = br#"{"error":0,"data":{"id":"001","name":"floor","ip":"any","key":"0000000000000000000000000000000000000000000000000000000000000000"}}"#;
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 512];
                    if let Ok(n) = s.read(&mut buf).await {
                        if n > 0 {
                            let _ = s.write_all(REPLY).await;
                        }
                    }
                });
            }
        });
    });
    Ok((dir, path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use super::*;
    use crate::load::{one_request, Tally};

    /// The floor responder answers a Wazuh-style request.
    #[test]
    fn floor_responder_answers() {
        let (_dir, path) = start_floor().unwrap();
        let mut tally = Tally::default();
        let mut buf = vec![0u8; 65536];
        for _ in 0..50 {
            if UnixStream::connect(&path).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        one_request(&path, b"id:001", &mut buf, &mut tally, false);
        assert_eq!(tally.codes[0], 1);
    }
}
