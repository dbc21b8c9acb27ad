//! The floors: responders that return a fixed reply with no lookup, run in
//! the same invocation as the load so every socket figure has its floor
//! measured beside it.
//!
//! - [`Floor::Blocking`], the real floor: plain threads (one per core, at
//!   least two) each blocking in `accept()` on the one listener, then one
//!   `read()`, one `write()` of the fixed reply, `close()`. No async runtime:
//!   what the kernel alone costs per Wazuh-style request on this machine.
//! - [`Floor::Tokio`], a second reference: the same reply from a
//!   multi-threaded tokio runtime, one task per connection (what an async
//!   server with no work of its own costs).

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::ValueEnum;

/// The fixed reply: a found record of the usual size.
const REPLY: &[u8] = br#"{"error":0,"data":{"id":"001","name":"floor","ip":"any","key":"0000000000000000000000000000000000000000000000000000000000000000"}}"#;

/// Which fixed-reply responder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Floor {
    /// Blocking threads, no runtime: the real floor.
    Blocking,
    /// A tokio multi-threaded runtime, one task per connection.
    Tokio,
}

impl Floor {
    /// The label its rows are printed with.
    pub fn label(self) -> &'static str {
        match self {
            Self::Blocking => "floor",
            Self::Tokio => "floor-tokio",
        }
    }
}

/// A responder started for the length of the run: its socket lives in a
/// temporary directory removed on drop (the threads are left to the end of
/// the process).
pub struct Running {
    _dir: tempfile::TempDir,
    /// The responder's socket.
    pub path: PathBuf,
}

/// Starts `floor` on a fresh socket.
pub fn start(floor: Floor) -> Result<Running> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("floor.sock");
    let listener = UnixListener::bind(&path)?;
    // One thread per core as the C responder had two on two cores.
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    match floor {
        Floor::Blocking => start_blocking(listener, threads)?,
        Floor::Tokio => start_tokio(listener, threads)?,
    }
    Ok(Running { _dir: dir, path })
}

fn start_blocking(listener: UnixListener, threads: usize) -> Result<()> {
    let listener = Arc::new(listener);
    for _ in 0..threads {
        let listener = listener.clone();
        std::thread::Builder::new()
            .name("floor".into())
            .spawn(move || {
                let mut buf = [0u8; 512];
                loop {
                    let Ok((mut s, _)) = listener.accept() else {
                        // EMFILE and the like: do not spin.
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        continue;
                    };
                    if let Ok(n) = s.read(&mut buf) {
                        if n > 0 {
                            let _ = s.write_all(REPLY);
                        }
                    }
                }
            })?;
    }
    Ok(())
}

fn start_tokio(listener: UnixListener, threads: usize) -> Result<()> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let Ok(listener) = tokio::net::UnixListener::from_std(listener) else {
                return;
            };
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use super::*;
    use crate::load::{one_request, Tally};

    fn answers(floor: Floor) {
        let running = start(floor).unwrap();
        for _ in 0..50 {
            if UnixStream::connect(&running.path).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut tally = Tally::default();
        let mut buf = vec![0u8; 65536];
        for _ in 0..20 {
            one_request(&running.path, b"id:001", &mut buf, &mut tally, false);
        }
        assert_eq!(tally.codes[0], 20, "{floor:?}");
        assert_eq!(tally.failed_connections + tally.bad_replies, 0);
    }

    /// The real floor (blocking threads) answers Wazuh-style requests.
    #[test]
    fn blocking_floor_answers() {
        answers(Floor::Blocking);
    }

    /// The tokio reference answers them too.
    #[test]
    fn tokio_floor_answers() {
        answers(Floor::Tokio);
    }
}
