//! Async framing over a `SOCK_SEQPACKET` Unix socket, used by both sides.
//!
//! A [`Channel`] is shared by reference: one task reads while others send (tokio's
//! `AsyncFd` allows both at once). Every received frame is checked against the
//! protocol's rules before it is returned: its size, its descriptor count (exactly
//! one for CONN and HANDBACK, none otherwise) and its encoding. A descriptor that
//! arrives where none is expected is closed at once.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use tokio::io::unix::AsyncFd;

use super::frame::{decode, encode, DecodeError, Message};
use super::{sys, MAX_FRAME, MAX_PREFIX};

/// Why a channel operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The socket failed.
    #[error("attach socket I/O failed")]
    Io(#[from] io::Error),
    /// The peer closed the channel.
    #[error("the peer closed the channel")]
    Closed,
    /// The frame did not decode.
    #[error("malformed frame")]
    Decode(#[from] DecodeError),
    /// The frame was larger than the protocol allows.
    #[error("frame larger than {MAX_FRAME} bytes (or bytes already read over {MAX_PREFIX})")]
    Oversize,
    /// More descriptors arrived than the frame may carry.
    #[error("too many descriptors with one frame (MSG_CTRUNC)")]
    TooManyFds,
    /// A frame came with the wrong number of descriptors.
    #[error("{message} arrived with {got} descriptors, expected {expected}")]
    WrongFdCount {
        /// The message.
        message: &'static str,
        /// Descriptors received.
        got: usize,
        /// Descriptors required.
        expected: usize,
    },
    /// No message arrived in time.
    #[error("timed out waiting for the peer")]
    Timeout,
}

/// One end of an attach channel.
#[derive(Debug)]
pub struct Channel {
    fd: AsyncFd<OwnedFd>,
}

impl Channel {
    /// Wraps a connected, non-blocking `SOCK_SEQPACKET` socket.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        Ok(Channel { fd: sys::register(fd)? })
    }

    /// Connects to the pool's attach socket at `path`.
    pub async fn connect(path: &Path) -> io::Result<Self> {
        let addr = UnixAddr::new(path).map_err(io::Error::from)?;
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io::Error::from)?;
        // A Unix connect completes at once unless the backlog is full (EAGAIN).
        let mut tries = 0;
        loop {
            match socket::connect(fd.as_raw_fd(), &addr) {
                Ok(()) => break,
                Err(nix::errno::Errno::EAGAIN) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Self::from_fd(fd)
    }

    /// The underlying socket (for `SO_PEERCRED`).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }

    /// Sends one message, with its descriptor when the message carries one.
    pub async fn send(&self, msg: &Message, fd: Option<BorrowedFd<'_>>) -> Result<(), ChannelError> {
        debug_assert_eq!(msg.carries_fd(), fd.is_some());
        if let Message::Conn(m) | Message::HandBack(m) = msg {
            // The receiver refuses a larger prefix: never send one.
            if m.prefix.len() > MAX_PREFIX {
                return Err(ChannelError::Oversize);
            }
        }
        let frame = encode(msg);
        if frame.len() > MAX_FRAME {
            return Err(ChannelError::Oversize);
        }
        loop {
            // tokio clears the write readiness only when this very attempt got
            // EAGAIN, and the kernel wakes a SOCK_SEQPACKET sender whose send failed
            // for want of room as soon as the peer reads (the failed send registers
            // it: unix_dgram_peer_wake_me), so no wake-up can be missed and no
            // timer is needed.
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|inner| sys::send_frame(inner.get_ref().as_fd(), &frame, fd)) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) if is_closed(&e) => return Err(ChannelError::Closed),
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one message and the descriptor it carries, if any.
    pub async fn recv(&self) -> Result<(Message, Option<OwnedFd>), ChannelError> {
        self.recv_with(&mut RecvBuf::new()).await
    }

    /// Like [`Channel::recv`], reusing a buffer (the hot paths keep one per channel).
    /// Cancel-safe: a frame is either fully received and returned, or not taken.
    pub async fn recv_with(&self, buf: &mut RecvBuf) -> Result<(Message, Option<OwnedFd>), ChannelError> {
        let buf = &mut buf.0[..];
        loop {
            let mut guard = self.fd.readable().await?;
            let got = match guard.try_io(|inner| sys::recv_frame(inner.get_ref().as_fd(), buf)) {
                Ok(Ok(got)) => got,
                Ok(Err(e)) if is_closed(&e) => return Err(ChannelError::Closed),
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => continue,
            };
            // `got.fds` are owned now: every early return below closes them.
            if got.ctrunc {
                return Err(ChannelError::TooManyFds);
            }
            if got.truncated || got.len > MAX_FRAME {
                return Err(ChannelError::Oversize);
            }
            if got.len == 0 {
                return Err(ChannelError::Closed);
            }
            let msg = decode(&buf[..got.len])?;
            let expected = usize::from(msg.carries_fd());
            if got.fds.len() != expected {
                return Err(ChannelError::WrongFdCount { message: msg.name(), got: got.fds.len(), expected });
            }
            let mut fds = got.fds;
            return Ok((msg, fds.pop()));
        }
    }

    /// Like [`Channel::recv`], bounded in time.
    pub async fn recv_timeout(&self, limit: Duration) -> Result<(Message, Option<OwnedFd>), ChannelError> {
        tokio::time::timeout(limit, self.recv()).await.map_err(|_| ChannelError::Timeout)?
    }
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(nix::errno::Errno::from_raw),
        Some(nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET | nix::errno::Errno::ENOTCONN)
    )
}

/// A receive buffer large enough for any frame.
#[derive(Debug)]
pub struct RecvBuf(Vec<u8>);

impl RecvBuf {
    /// A buffer of `MAX_FRAME + 1` bytes (the extra byte makes oversize frames visible).
    pub fn new() -> Self {
        RecvBuf(vec![0u8; MAX_FRAME + 1])
    }
}

impl Default for RecvBuf {
    fn default() -> Self {
        Self::new()
    }
}

/// The pool's listening attach socket.
#[derive(Debug)]
pub struct SeqpacketListener {
    fd: AsyncFd<OwnedFd>,
}

impl SeqpacketListener {
    /// Binds and listens at `path`. The caller has already dealt with a stale file.
    pub fn bind(path: &Path, backlog: i32) -> io::Result<Self> {
        let addr = UnixAddr::new(path).map_err(io::Error::from)?;
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io::Error::from)?;
        socket::bind(fd.as_raw_fd(), &addr).map_err(io::Error::from)?;
        socket::listen(&fd, Backlog::new(backlog).map_err(io::Error::from)?).map_err(io::Error::from)?;
        Ok(SeqpacketListener { fd: sys::register(fd)? })
    }

    /// Accepts the next attaching zergling.
    pub async fn accept(&self) -> io::Result<Channel> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| sys::accept(inner.get_ref().as_fd())) {
                Ok(Ok(fd)) => return Channel::from_fd(fd),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Tests whether something listens on the Unix socket at `path`: used to decide
/// whether an existing socket file is stale.
/// Anything but "connection refused" (nobody listens) or "no such file" counts as
/// in use, so that a socket of another kind is never stolen either.
pub fn someone_listens(path: &Path) -> bool {
    let Ok(addr) = UnixAddr::new(path) else { return false };
    let Ok(fd) = socket::socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None) else {
        return true;
    };
    !matches!(socket::connect(fd.as_raw_fd(), &addr), Err(nix::errno::Errno::ECONNREFUSED | nix::errno::Errno::ENOENT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ConnId;

    /// A send that finds the socket full waits for the peer to read, woken by the
    /// kernel: it completes on a runtime without timers (a poll with a sleep would
    /// panic there).
    #[test]
    fn a_send_on_a_full_socket_is_woken_by_the_reader_without_timers() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
        rt.block_on(async {
            let (a, b) = socket::socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            )
            .unwrap();
            let (a, b) = (Channel::from_fd(a).unwrap(), Channel::from_fd(b).unwrap());
            let msg = Message::Ack { conn: ConnId(1) };
            // Fill the socket until a send would block.
            let mut sent = 0usize;
            while sys::send_frame(a.as_fd(), &encode(&msg), None).is_ok() {
                sent += 1;
            }
            assert!(sent > 0);
            let a = std::sync::Arc::new(a);
            let pending = tokio::spawn({
                let a = a.clone();
                async move { a.send(&msg, None).await }
            });
            tokio::task::yield_now().await;
            assert!(!pending.is_finished(), "the send did not wait for room");
            let mut buf = RecvBuf::new();
            for _ in 0..=sent {
                b.recv_with(&mut buf).await.unwrap();
                if pending.is_finished() {
                    break;
                }
            }
            pending.await.unwrap().unwrap();
        });
    }
}
