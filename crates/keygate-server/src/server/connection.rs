//! One accepted connection: its peer's credentials, reads and writes tried
//! at once before the runtime's poller is involved, and the connection
//! slot it holds (parked among the idle ones while it waits for its
//! request, so that a new connection may take it at the limit).

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;

use nix::sys::socket::MsgFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::slots::Slot;
use crate::idle::IdleSet;

/// Who is on the other end of a connection (SO_PEERCRED), kept with every
/// request for access control, logs and the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
    /// The peer's process id, when the kernel reports one.
    pub pid: Option<i32>,
}

impl Peer {
    /// The credentials (SO_PEERCRED) of the process that connected `stream`;
    /// `None` if the kernel does not say (never on Linux).
    pub fn of(stream: &impl AsFd) -> Option<Self> {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let cred = getsockopt(stream, PeerCredentials).ok()?;
        Some(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: Some(cred.pid()).filter(|&p| p > 0),
        })
    }
}

/// One accepted connection, with its peer's credentials.
///
/// Fresh from the listener it is a plain socket that the runtime does not
/// watch: [`read`](Self::read) and [`write_all`](Self::write_all) first try
/// the system call at once without waiting (`MSG_DONTWAIT`, whatever the
/// socket's own mode), and only when it would block is the socket made
/// non-blocking, registered with the runtime's poller (once; it stays so)
/// and the call awaited. A Wazuh client sends its
/// request as soon as it is connected and reads a reply that fits the
/// socket buffer, so most connections never wait in the poller.
///
/// Admitted by the accept loop, it holds its connection slot until it is
/// dropped. While it waits for its first bytes, the slot is parked in the
/// socket's idle set: at the limit the accept loop may give it to a new
/// connection, and this one's read then fails (`ConnectionAborted`).
#[derive(Debug)]
pub struct Connection {
    state: State,
    peer: Option<Peer>,
    /// Bytes [`read_once`](Self::read_once) left in the socket (peeked,
    /// not consumed), discarded after the reply or at the latest on drop.
    peeked: usize,
    /// The connection slot, and the idle set it is parked in while the
    /// connection waits for its request.
    slot: Option<Slot>,
    idle: Option<Arc<IdleSet<Slot>>>,
    /// Whether a byte was read: an idle connection is one that has not
    /// sent anything.
    requested: bool,
}

#[derive(Debug)]
enum State {
    /// Not registered with the runtime; blocking or not.
    Plain(std::os::unix::net::UnixStream),
    /// Registered with the runtime's poller.
    Watched(UnixStream),
    /// Registering failed; the socket is closed.
    Lost,
}

/// What [`Connection::into_tokio`] hands over with the stream: the
/// connection's slot, to keep until the stream is closed.
#[derive(Debug)]
pub struct Held(#[allow(dead_code)] Option<Slot>);

impl Connection {
    fn new(state: State, peer: Option<Peer>) -> Self {
        Self {
            state,
            peer,
            peeked: 0,
            slot: None,
            idle: None,
            requested: false,
        }
    }

    /// A connection fresh from the listener (registered with the runtime,
    /// as tokio's `accept` leaves it): its peer is read, then it is taken
    /// off the poller and its first read is tried at once.
    pub fn accepted(stream: UnixStream) -> io::Result<Self> {
        Ok(Self::plain(stream.into_std()?))
    }

    /// A connection fresh from a blocking `accept()`: its peer is read,
    /// and its first read is tried at once.
    pub fn plain(stream: std::os::unix::net::UnixStream) -> Self {
        let peer = Peer::of(&stream);
        Self::new(State::Plain(stream), peer)
    }

    /// A connection that stays registered with the runtime.
    pub fn watched(stream: UnixStream) -> Self {
        let peer = Peer::of(&stream);
        Self::new(State::Watched(stream), peer)
    }

    /// Who connected; `None` if the kernel does not say.
    pub fn peer(&self) -> Option<Peer> {
        self.peer
    }

    /// Gives the connection its slot, parked in `idle` while it waits for
    /// its request.
    pub(crate) fn hold(&mut self, slot: Slot, idle: Arc<IdleSet<Slot>>) {
        self.slot = Some(slot);
        self.idle = Some(idle);
    }

    /// Reads what the peer sent, at most `buf.len()` bytes; 0 at its end.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let State::Plain(s) = &self.state {
            if let Some(n) = recv_now(s.as_raw_fd(), buf, MsgFlags::empty())? {
                self.requested |= n > 0;
                return Ok(n);
            }
        }
        self.wait_read(buf).await
    }

    /// Reads the one request of a connection that reads nothing more:
    /// what is there is copied without being consumed (`MSG_PEEK`), and
    /// consumed only after the reply is written (or when the connection is
    /// dropped). Consuming the client's bytes wakes a client already
    /// waiting for the reply (the kernel wakes a Unix socket's sender when
    /// its bytes are freed, and the waiting reader sleeps on the same
    /// queue): done after the reply, that wake-up finds the client awake.
    /// A request that is not there yet is read as [`read`](Self::read)
    /// does.
    pub async fn read_once(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let State::Plain(s) = &self.state {
            if let Some(n) = recv_now(s.as_raw_fd(), buf, MsgFlags::MSG_PEEK)? {
                self.peeked = n;
                self.requested |= n > 0;
                return Ok(n);
            }
        }
        // Not there yet: nothing to try again at once, wait for it.
        self.wait_read(buf).await
    }

    /// Waits in the poller for bytes to read. A connection that has not
    /// sent anything yet parks its slot among the idle ones meanwhile, and
    /// takes it back when the wait ends (bytes, an error, or the caller's
    /// timeout dropping this future); if the slot went to a new connection
    /// first, the read fails with `ConnectionAborted`.
    async fn wait_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Self {
            state,
            slot,
            idle,
            requested,
            ..
        } = self;
        let read = match (idle.as_deref(), slot.take(), *requested) {
            (Some(set), Some(held), false) => {
                let (ticket, evicted) = set.park(held);
                let unpark = Unpark {
                    idle: set,
                    ticket,
                    slot: &mut *slot,
                };
                let read = match registered(state) {
                    Ok(stream) => tokio::select! {
                        biased;
                        read = stream.read(buf) => Some(read),
                        _ = evicted => None,
                    },
                    Err(e) => Some(Err(e)),
                };
                drop(unpark);
                match read {
                    Some(read) if slot.is_some() => read,
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "closed while idle: its slot went to a new connection",
                        ))
                    }
                }
            }
            (_, held, _) => {
                *slot = held;
                registered(state)?.read(buf).await
            }
        };
        if let Ok(n) = read {
            *requested |= n > 0;
        }
        read
    }

    /// Consumes what [`read_once`](Self::read_once) peeked, so closing the
    /// socket with it unread does not reset the client's connection.
    fn discard_peeked(&mut self) {
        let Some(fd) = self.fd() else { return };
        let mut scratch = [0u8; 1024];
        while self.peeked > 0 {
            let want = self.peeked.min(scratch.len());
            match recv_now(fd, &mut scratch[..want], MsgFlags::empty()) {
                Ok(Some(n)) if n > 0 => self.peeked -= n,
                _ => break,
            }
        }
        self.peeked = 0;
    }

    fn fd(&self) -> Option<RawFd> {
        match &self.state {
            State::Plain(s) => Some(s.as_raw_fd()),
            State::Watched(s) => Some(s.as_raw_fd()),
            State::Lost => None,
        }
    }

    /// For a connection refused at accept: what the peer already sent is
    /// read and discarded (so closing does not reset its connection), and
    /// `reply` is sent if the socket takes it at once, never waited for.
    /// The connection is then closed.
    pub(crate) fn reply_now_and_close(self, reply: &[u8]) {
        use nix::sys::socket::send;
        let Some(fd) = self.fd() else { return };
        let mut scratch = [0u8; 1024];
        // A request is at most a few hundred bytes; do not read a flood.
        for _ in 0..4 {
            match recv_now(fd, &mut scratch, MsgFlags::empty()) {
                Ok(Some(n)) if n > 0 => continue,
                _ => break,
            }
        }
        let _ = send(fd, reply, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL);
    }

    /// Writes all of `bytes`.
    pub async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        use nix::sys::socket::send;
        if let State::Plain(s) = &mut self.state {
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            while !bytes.is_empty() {
                match send(s.as_raw_fd(), bytes, flags) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => bytes = &bytes[n..],
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            if bytes.is_empty() {
                self.discard_peeked();
                return Ok(());
            }
        }
        registered(&mut self.state)?.write_all(bytes).await?;
        self.discard_peeked();
        Ok(())
    }

    /// The connection as a tokio stream, registered with the runtime (for
    /// handlers that want tokio's reading and writing helpers), with the
    /// connection's slot to keep until the stream is closed. The slot is
    /// no longer parked while the stream waits: such a connection is never
    /// evicted as idle.
    pub fn into_tokio(mut self) -> io::Result<(UnixStream, Held)> {
        registered(&mut self.state)?;
        let held = Held(self.slot.take());
        match std::mem::replace(&mut self.state, State::Lost) {
            State::Watched(s) => Ok((s, held)),
            _ => Err(lost()),
        }
    }

    #[cfg(test)]
    pub(crate) fn peek_now(&self, buf: &mut [u8]) -> Option<usize> {
        let State::Plain(s) = &self.state else {
            return None;
        };
        recv_now(s.as_raw_fd(), buf, MsgFlags::MSG_PEEK).ok()?
    }
}

/// Takes a parked slot back into its connection, also when the wait is
/// cancelled (the caller's read timeout drops the read).
struct Unpark<'a> {
    idle: &'a IdleSet<Slot>,
    ticket: crate::idle::Ticket,
    slot: &'a mut Option<Slot>,
}

impl Drop for Unpark<'_> {
    fn drop(&mut self) {
        *self.slot = self.idle.unpark(self.ticket);
    }
}

/// Registers the socket with the runtime if it is not yet.
fn registered(state: &mut State) -> io::Result<&mut UnixStream> {
    if matches!(state, State::Plain(_)) {
        let State::Plain(plain) = std::mem::replace(state, State::Lost) else {
            return Err(lost());
        };
        // A socket from a blocking accept() is blocking; the poller
        // needs it not to be.
        plain.set_nonblocking(true)?;
        *state = State::Watched(UnixStream::from_std(plain)?);
    }
    match state {
        State::Watched(s) => Ok(s),
        _ => Err(lost()),
    }
}

/// One `recv` at once, whatever the socket's own mode (`MSG_DONTWAIT` is
/// added to `flags`), retried when interrupted: `None` when it would block.
fn recv_now(fd: RawFd, buf: &mut [u8], flags: MsgFlags) -> io::Result<Option<usize>> {
    loop {
        match nix::sys::socket::recv(fd, buf, flags | MsgFlags::MSG_DONTWAIT) {
            Ok(n) => return Ok(Some(n)),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.discard_peeked();
    }
}

fn lost() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection could not be registered with the runtime",
    )
}
