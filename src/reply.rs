//! Responses the pool writes itself (errors and the queue's 503), and the polite
//! way to close a connection after one.
//!
//! Each response says `Connection: close`, has a short text body, and is followed
//! by a *lingering close*: shut down our sending side, then read and discard what
//! the client still sends for a moment, so that unread request bytes do not turn
//! our close into a reset that destroys the response before the client reads it.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a lingering close waits for the client to finish sending.
const LINGER: Duration = Duration::from_millis(500);
/// The most bytes a lingering close reads and discards.
const LINGER_BYTES: usize = 256 * 1024;

/// A canned response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canned {
    /// 400: malformed request head.
    BadRequest,
    /// 408: the head did not arrive in time.
    RequestTimeout,
    /// 414: the request target is too long.
    UriTooLong,
    /// 431: the head is too large.
    HeadTooLarge,
    /// 503: no zergling could take the connection in time, or the queue is full.
    Unavailable,
}

impl Canned {
    /// The status code, for logs.
    pub fn status(self) -> u16 {
        match self {
            Canned::BadRequest => 400,
            Canned::RequestTimeout => 408,
            Canned::UriTooLong => 414,
            Canned::HeadTooLarge => 431,
            Canned::Unavailable => 503,
        }
    }

    /// The length of its body (for the request log).
    pub fn body_len(self) -> u64 {
        let b = self.bytes();
        b.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |i| (b.len() - i - 4) as u64)
    }

    /// The whole response, head and body.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Canned::BadRequest => b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nBad Request\n",
            Canned::RequestTimeout => b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 16\r\nConnection: close\r\n\r\nRequest Timeout\n",
            Canned::UriTooLong => b"HTTP/1.1 414 URI Too Long\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nURI Too Long\n",
            Canned::HeadTooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nContent-Length: 32\r\nConnection: close\r\n\r\nRequest Header Fields Too Large\n",
            Canned::Unavailable => b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nRetry-After: 5\r\nConnection: close\r\n\r\nService Unavailable\n",
        }
    }
}

/// Writes `resp` on a stream the pool holds, then closes it lingering.
pub async fn answer<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, resp: Canned) -> io::Result<()> {
    stream.write_all(resp.bytes()).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 8192];
    let mut total = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while total < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    Ok(())
}

/// Writes `resp` on a connection held only as a descriptor (a queued connection,
/// TCP or Unix), then closes it lingering.
pub async fn answer_fd(fd: OwnedFd, resp: Canned) -> io::Result<()> {
    let mut stream = FdStream(crate::proto::sys::register(fd)?);
    answer(&mut stream, resp).await
}

/// A minimal async stream over any connected stream socket descriptor.
struct FdStream(AsyncFd<OwnedFd>);

impl AsyncRead for FdStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        loop {
            let mut guard = std::task::ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(fd.get_ref()), unfilled).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        loop {
            let mut guard = std::task::ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| {
                nix::sys::socket::send(
                    std::os::fd::AsRawFd::as_raw_fd(fd.get_ref()),
                    buf,
                    nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                )
                .map_err(io::Error::from)
            }) {
                Ok(r) => return std::task::Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let r = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(self.0.get_ref()),
            nix::sys::socket::Shutdown::Write,
        );
        std::task::Poll::Ready(r.map_err(io::Error::from))
    }
}

/// The `Location` of an `http-to-https` redirect: the request's host with its
/// port replaced by `https_port` (left out when 443), then the request target.
/// `fallback_host` (the listener's address) is used when the request has no Host.
pub fn https_location(host: Option<&str>, target: &str, https_port: u16, fallback_host: &str) -> String {
    let host = host.filter(|h| !h.is_empty()).unwrap_or(fallback_host);
    // Strip a port: `name:8080`, `[::1]:8080`; keep IPv6 brackets.
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, _)) => format!("[{inside}]"),
            None => host.to_owned(),
        }
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n).to_owned()
    };
    let target = if target.starts_with('/') { target } else { "/" };
    if https_port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{https_port}{target}")
    }
}

/// The whole `301` response of an `http-to-https` listener.
pub fn redirect_response(location: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\nMoved to {location}\n",
        location.len() + 10
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_locations() {
        assert_eq!(https_location(Some("example.test"), "/a?b=1", 443, "x"), "https://example.test/a?b=1");
        assert_eq!(https_location(Some("example.test:8080"), "/", 443, "x"), "https://example.test/");
        assert_eq!(https_location(Some("example.test:8080"), "/p?q", 8443, "x"), "https://example.test:8443/p?q");
        assert_eq!(https_location(Some("[::1]:8080"), "/", 8443, "x"), "https://[::1]:8443/");
        assert_eq!(https_location(None, "/", 443, "127.0.0.1"), "https://127.0.0.1/");
        assert_eq!(https_location(Some("h"), "*", 443, "x"), "https://h/");
    }

    #[test]
    fn redirect_body_length_is_exact() {
        let r = String::from_utf8(redirect_response("https://h/")).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
