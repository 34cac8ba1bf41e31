//! The stream types both sides use: a client connection that is a TCP socket or a
//! Unix stream ([`ConnStream`]: what a listener accepts, what a zergling
//! receives), and the bytes already read replayed in front of a stream
//! ([`Prefixed`], linkerd's `PrefixedIo` habit).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike, SockaddrStorage};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A client connection: a TCP socket (HTTP, uwsgi over TCP) or a Unix stream
/// (uwsgi over a Unix listener, or one end of the pool's TLS relay).
#[derive(Debug)]
pub enum ConnStream {
    /// The client's own TCP socket.
    Tcp(TcpStream),
    /// A Unix stream socket.
    Unix(UnixStream),
}

impl ConnStream {
    /// Adopts a received descriptor, choosing the type from its address family.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).map_err(io::Error::from)?;
        match addr.family() {
            Some(AddressFamily::Inet | AddressFamily::Inet6) => {
                let s = std::net::TcpStream::from(fd);
                s.set_nonblocking(true)?;
                Ok(ConnStream::Tcp(TcpStream::from_std(s)?))
            }
            Some(AddressFamily::Unix) => {
                let s = std::os::unix::net::UnixStream::from(fd);
                s.set_nonblocking(true)?;
                Ok(ConnStream::Unix(UnixStream::from_std(s)?))
            }
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("received a socket of unexpected family {other:?}"),
            )),
        }
    }

    /// Waits until the stream has bytes to read (or an error or end of file to
    /// report), without reading: an idle connection costs no buffer.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            ConnStream::Tcp(s) => s.readable().await,
            ConnStream::Unix(s) => s.readable().await,
        }
    }

    /// Waits until the peer has gone (end of file, or an error such as a reset:
    /// `true`) or has sent bytes (`false`), without reading anything: what is
    /// there stays for the stream's reader.
    pub async fn peer_gone(&self) -> bool {
        let fd = self.as_raw_fd();
        let peek = || {
            let mut byte = [0u8; 1];
            nix::sys::socket::recv(fd, &mut byte, nix::sys::socket::MsgFlags::MSG_PEEK).map_err(io::Error::from)
        };
        let r = match self {
            ConnStream::Tcp(s) => s.async_io(tokio::io::Interest::READABLE, peek).await,
            ConnStream::Unix(s) => s.async_io(tokio::io::Interest::READABLE, peek).await,
        };
        !matches!(r, Ok(n) if n > 0)
    }

    /// Turns the stream into a descriptor (to hand it over).
    pub fn into_fd(self) -> io::Result<OwnedFd> {
        Ok(match self {
            ConnStream::Tcp(s) => s.into_std()?.into(),
            ConnStream::Unix(s) => s.into_std()?.into(),
        })
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            ConnStream::Tcp($s) => $e,
            ConnStream::Unix($s) => $e,
        }
    };
}

/// A stream that can say "there is something to read" without reading it, so
/// that an idle connection waits holding no buffer.
pub trait Readable {
    /// Ready when a read would not block (bytes, end of file, or an error).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// A duplicate of the stream's descriptor (to watch it without reading it),
    /// or `None` for a stream without one.
    fn duplicate(&self) -> Option<io::Result<OwnedFd>> {
        None
    }

    /// Whether [`Readable::poll_sendfile`] works (a socket).
    fn can_sendfile(&self) -> bool {
        false
    }

    /// Sends up to `count` bytes of `file` from `*offset` (advanced by what
    /// went) with `sendfile(2)`, when the socket takes them: the kernel copies
    /// from the page cache, no byte passes through this process.
    fn poll_sendfile(
        &self,
        _cx: &mut Context<'_>,
        _file: &std::fs::File,
        _offset: &mut i64,
        _count: usize,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::Error::new(io::ErrorKind::Unsupported, "this stream cannot sendfile")))
    }
}

/// `sendfile(2)` on a tokio socket, driven by its write readiness.
macro_rules! socket_sendfile {
    ($sock:expr, $cx:expr, $file:expr, $offset:expr, $count:expr) => {{
        let sock = $sock;
        loop {
            std::task::ready!(sock.poll_write_ready($cx))?;
            match sock.try_io(tokio::io::Interest::WRITABLE, || {
                nix::sys::sendfile::sendfile64(sock.as_fd(), $file.as_fd(), Some(&mut *$offset), $count)
                    .map_err(io::Error::from)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }};
}

/// A tokio socket: readiness, a duplicate of its descriptor, `sendfile(2)`.
macro_rules! socket_readable {
    ($t:ty) => {
        impl Readable for $t {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_read_ready(self, cx)
            }
            fn duplicate(&self) -> Option<io::Result<OwnedFd>> {
                Some(self.as_fd().try_clone_to_owned())
            }
            fn can_sendfile(&self) -> bool {
                true
            }
            fn poll_sendfile(
                &self,
                cx: &mut Context<'_>,
                file: &std::fs::File,
                offset: &mut i64,
                count: usize,
            ) -> Poll<io::Result<usize>> {
                socket_sendfile!(self, cx, file, offset, count)
            }
        }
    };
}

socket_readable!(TcpStream);
socket_readable!(UnixStream);

impl AsRawFd for ConnStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            ConnStream::Tcp(s) => s.as_raw_fd(),
            ConnStream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Readable for ConnStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            ConnStream::Tcp(s) => s.poll_read_ready(cx),
            ConnStream::Unix(s) => s.poll_read_ready(cx),
        }
    }
    fn duplicate(&self) -> Option<io::Result<OwnedFd>> {
        match self {
            ConnStream::Tcp(s) => s.duplicate(),
            ConnStream::Unix(s) => s.duplicate(),
        }
    }
    fn can_sendfile(&self) -> bool {
        true
    }
    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        file: &std::fs::File,
        offset: &mut i64,
        count: usize,
    ) -> Poll<io::Result<usize>> {
        match self {
            ConnStream::Tcp(s) => s.poll_sendfile(cx, file, offset, count),
            ConnStream::Unix(s) => s.poll_sendfile(cx, file, offset, count),
        }
    }
}

/// The prefix is bytes already read: readable at once while any is left.
impl<S: Readable> Readable for Prefixed<S> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            self.inner.poll_read_ready(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }
    fn duplicate(&self) -> Option<io::Result<OwnedFd>> {
        self.inner.duplicate()
    }
    fn can_sendfile(&self) -> bool {
        self.inner.can_sendfile()
    }
    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        file: &std::fs::File,
        offset: &mut i64,
        count: usize,
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_sendfile(cx, file, offset, count)
    }
}

impl AsyncRead for ConnStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for ConnStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// A stream whose first reads return `prefix`, then the stream's own bytes.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    /// Replays `prefix` before reading from `inner`.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Prefixed { prefix, inner }
    }

    /// How many bytes of the prefix are still to be read.
    pub fn prefix_len(&self) -> usize {
        self.prefix.len()
    }

    /// The stream and the part of the prefix not read yet.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn prefix_comes_first() {
        let inner: &[u8] = b" world";
        let mut p = Prefixed::new(Bytes::from_static(b"hello"), inner);
        let mut out = String::new();
        p.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}
