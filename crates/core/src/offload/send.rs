//! Writing a planned response: a generic path for any `AsyncWrite` (TLS relay, tests,
//! uwsgi) and a zero-copy path for a plain `TcpStream` with `sendfile(2)`.
//!
//! Invariants:
//! * the runtime never blocks on the disk in the generic path: the file is read with
//!   `pread` inside `spawn_blocking`, in [`CHUNK`]-byte chunks, the next chunk being
//!   read while the current one is written;
//! * the sendfile path is driven by the socket's writable readiness (`writable()` then
//!   `try_io`), so it never blocks on the socket; a page-cache miss does make one
//!   `sendfile` call wait for the disk, bounded by what the socket buffer takes (the
//!   trade-off nginx makes with `sendfile on` and no thread pool);
//! * exactly the planned number of bytes is sent; a file that shrinks while it is
//!   sent is an `UnexpectedEof` error, and the caller closes the connection (the
//!   client then sees a short body, never wrong bytes framed as a full one);
//! * the head goes out with `MSG_MORE` before sendfile so that head and body share
//!   packets even with `TCP_NODELAY`.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::MsgFlags;
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::plan::{Body, Plan};

/// Bytes read from the file per blocking read in the generic path.
pub const CHUNK: usize = 256 * 1024;

/// Most bytes asked of one `sendfile` call; the socket buffer limits it further.
const SENDFILE_MAX: u64 = 16 * 1024 * 1024;

/// Writes a planned response to any stream. `file` is needed when the plan has a
/// body. A client that takes none of it for `stall` fails the response
/// (`TimedOut`), so a reader that stops cannot hold the connection for ever.
pub async fn write_response<S>(stream: &mut S, plan: &Plan, file: Option<&Arc<File>>, stall: Duration) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let mut stream = Stalling { inner: stream, stall, deadline: None };
    let stream = &mut stream;
    match &plan.body {
        Body::Empty => stream.write_all(&plan.head).await?,
        Body::File { start, len } => copy_range(stream, need(file)?, *start, *len, plan.head.clone()).await?,
        Body::Multipart { parts, trailer } => {
            let file = need(file)?;
            let mut prefix = plan.head.clone();
            for part in parts {
                prefix.extend_from_slice(&part.header);
                copy_range(stream, file, part.start, part.len, std::mem::take(&mut prefix)).await?;
            }
            stream.write_all(trailer).await?;
        }
    }
    stream.flush().await
}

/// Writes a planned response to a plain TCP stream, sending a single-range body with
/// `sendfile(2)`; everything else goes through [`write_response`].
pub async fn write_response_tcp(
    stream: &mut TcpStream,
    plan: &Plan,
    file: Option<&Arc<File>>,
    stall: Duration,
) -> io::Result<()> {
    let Body::File { start, len } = plan.body else {
        return write_response(stream, plan, file, stall).await;
    };
    let file = need(file)?;
    send_more(stream, &plan.head, stall).await?;
    sendfile_range(stream, file, start, len, stall).await
}

/// Waits until the socket takes more bytes, at most `stall`.
async fn writable_within(stream: &TcpStream, stall: Duration) -> io::Result<()> {
    match tokio::time::timeout(stall, stream.writable()).await {
        Ok(r) => r,
        Err(_) => Err(stalled()),
    }
}

fn stalled() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the client took no bytes of the response within http-timeout")
}

/// A writer that fails with `TimedOut` when a write makes no progress for
/// `stall` (the timer runs only while the stream is not writable).
struct Stalling<'a, S> {
    inner: &'a mut S,
    stall: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncWrite + Unpin> Stalling<'_, S> {
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.deadline = None;
            return r;
        }
        let stall = self.stall;
        let deadline = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(stalled()));
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stalling<'_, S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut *self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut *self.inner).poll_flush(cx);
        self.watch(cx, r)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut *self.inner).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

fn need(file: Option<&Arc<File>>) -> io::Result<&Arc<File>> {
    file.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a planned body needs its file"))
}

/// Copies `len` bytes from `start`, after `prefix` (written with the first chunk).
async fn copy_range<S>(stream: &mut S, file: &Arc<File>, start: u64, len: u64, prefix: Vec<u8>) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let end = start.saturating_add(len);
    if len == 0 {
        return stream.write_all(&prefix).await;
    }
    let mut offset = start;
    let mut pending = Some(read_chunk(file, offset, chunk_len(offset, end), prefix));
    let mut spare: Option<Vec<u8>> = None;
    while let Some(reading) = pending.take() {
        let (buf, got) = reading.await.map_err(io::Error::other)??;
        if got == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while it was being sent"));
        }
        offset += got as u64;
        if offset < end {
            let mut next = spare.take().unwrap_or_default();
            next.clear();
            pending = Some(read_chunk(file, offset, chunk_len(offset, end), next));
        }
        stream.write_all(&buf).await?;
        spare = Some(buf);
    }
    Ok(())
}

fn chunk_len(offset: u64, end: u64) -> usize {
    (end - offset).min(CHUNK as u64) as usize
}

/// Reads up to `want` bytes at `offset` on the blocking pool, appending them to `buf`.
/// Yields the buffer and the number of bytes appended.
fn read_chunk(
    file: &Arc<File>,
    offset: u64,
    want: usize,
    mut buf: Vec<u8>,
) -> JoinHandle<io::Result<(Vec<u8>, usize)>> {
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        let base = buf.len();
        buf.resize(base + want, 0);
        let got = loop {
            match file.read_at(&mut buf[base..], offset) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        buf.truncate(base + got);
        Ok((buf, got))
    })
}

/// Writes `bytes` with `MSG_MORE`: the kernel holds them until the body follows.
async fn send_more(stream: &TcpStream, bytes: &[u8], stall: Duration) -> io::Result<()> {
    let flags = MsgFlags::from_bits_retain(nix::libc::MSG_MORE) | MsgFlags::MSG_NOSIGNAL;
    let mut sent = 0;
    while sent < bytes.len() {
        writable_within(stream, stall).await?;
        let fd = stream.as_raw_fd();
        match stream
            .try_io(Interest::WRITABLE, || nix::sys::socket::send(fd, &bytes[sent..], flags).map_err(io::Error::from))
        {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends `len` bytes of `file` from `start` with `sendfile(2)`, falling back to the
/// generic copy where the file system cannot (`EINVAL`, `ENOSYS`, `EOPNOTSUPP`).
async fn sendfile_range(
    stream: &mut TcpStream,
    file: &Arc<File>,
    start: u64,
    len: u64,
    stall: Duration,
) -> io::Result<()> {
    let end = start.saturating_add(len);
    let mut offset =
        i64::try_from(start).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    loop {
        let done = u64::try_from(offset).unwrap_or(end);
        if done >= end {
            return Ok(());
        }
        let count = (end - done).min(SENDFILE_MAX) as usize;
        writable_within(stream, stall).await?;
        let sock: &TcpStream = stream;
        let result = sock.try_io(Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile64(sock.as_fd(), file.as_fd(), Some(&mut offset), count)
                .map_err(io::Error::from)
        });
        match result {
            Ok(0) => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while it was being sent"))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e)
                if [Errno::EINVAL, Errno::ENOSYS, Errno::EOPNOTSUPP]
                    .map(|n| Some(n as i32))
                    .contains(&e.raw_os_error()) =>
            {
                tracing::debug!(error = %e, "sendfile unavailable for this file; copying instead");
                let done = u64::try_from(offset).unwrap_or(end);
                copy_range(stream, file, done, end - done, Vec::new()).await?;
                return stream.flush().await;
            }
            Err(e) => return Err(e),
        }
    }
}
