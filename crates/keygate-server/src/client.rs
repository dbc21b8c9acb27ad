//! The Wazuh side of the conversation: connect, one send without a
//! terminator, one recv of at most 64 KiB, close.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The most Wazuh's client reads in its one `recv()`.
pub const MAX_REPLY_LEN: usize = 65536;

/// Why a round trip failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody listens on the socket (missing file or connection refused).
    #[error("no daemon on the socket: {0}")]
    NoDaemon(std::io::Error),
    /// Connected, but the exchange failed.
    #[error("socket I/O error: {0}")]
    Io(std::io::Error),
    /// No reply within the deadline.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The daemon closed the connection without replying.
    #[error("the daemon closed the connection without a reply")]
    Empty,
}

/// Sends `request` as Wazuh does and returns the raw reply.
pub async fn ask(
    socket: &Path,
    request: &[u8],
    deadline: Duration,
) -> Result<Vec<u8>, ClientError> {
    tokio::time::timeout(deadline, async {
        let mut stream = UnixStream::connect(socket)
            .await
            .map_err(ClientError::NoDaemon)?;
        stream.write_all(request).await.map_err(ClientError::Io)?;
        let mut buf = vec![0u8; MAX_REPLY_LEN];
        let n = stream.read(&mut buf).await.map_err(ClientError::Io)?;
        if n == 0 {
            return Err(ClientError::Empty);
        }
        buf.truncate(n);
        Ok(buf)
    })
    .await
    .unwrap_or(Err(ClientError::Timeout(deadline)))
}
