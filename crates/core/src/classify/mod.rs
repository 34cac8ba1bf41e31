//! Classification: read the first request head of a connection, bounded in size
//! and time, and say what to do with the connection.
//!
//! The pure parser lives in [`http`]; this file is the I/O half that owns the
//! buffer. The result is a value with one variant per outcome, so later stages
//! (static-map, redirects, uwsgi) slot in as new variants.

pub mod http;
pub mod uwsgi;

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

pub use http::{parse_head, HeadParse, RequestHead};

/// Most bytes one read takes; the bytes read past a head are at most this many.
pub const READ_AHEAD: usize = 16 * 1024;

/// What to do with a connection after its first head was looked at.
#[derive(Debug)]
pub enum Classification {
    /// A request for the application: hand the connection to a zergling.
    Dynamic(RequestHead),
    /// The client closed (or reset) before sending a whole head: nothing to answer.
    Gone,
    /// Not HTTP: answer 400 and close.
    Malformed(&'static str),
    /// Head larger than `buffer-size`, or too many header lines: answer 431 and close.
    TooLarge,
    /// Request target longer than [`http::MAX_TARGET`]: answer 414 and close.
    TargetTooLong,
    /// Head not complete within `http-timeout`: answer 408 and close.
    Timeout,
}

/// Reads from `stream` into `buf` until a whole head is there, the head outgrows
/// `max`, or `timeout` passes. `buf` keeps every byte read (the head and any bytes
/// after it), so that they can travel with the connection.
pub async fn read_http_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
    timeout: Duration,
) -> Classification {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !buf.is_empty() {
            match parse_head(buf) {
                HeadParse::Complete(head) => return Classification::Dynamic(head),
                HeadParse::Partial if buf.len() >= max => return Classification::TooLarge,
                HeadParse::Partial => {}
                HeadParse::TooManyHeaders => return Classification::TooLarge,
                HeadParse::TargetTooLong => return Classification::TargetTooLong,
                HeadParse::Invalid(why) => return Classification::Malformed(why),
            }
        }
        // Read at most up to the limit (plus one byte so "exactly full" is seen),
        // and never more than READ_AHEAD past it, whatever the buffer's capacity:
        // every byte read travels with the connection (see `proto::MAX_HEAD`).
        let room = (max + 1).saturating_sub(buf.len()).clamp(1, READ_AHEAD);
        buf.reserve(room);
        let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut (&mut *buf).limit(room))).await;
        match read {
            Err(_elapsed) => return Classification::Timeout,
            Ok(Ok(0)) | Ok(Err(_)) => return Classification::Gone,
            Ok(Ok(_)) => {}
        }
    }
}

/// Why a uwsgi packet could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UwsgiReadError {
    /// Not a valid packet (the reason says which rule it broke).
    #[error(transparent)]
    Invalid(#[from] uwsgi::UwsgiError),
    /// The packet did not arrive within the head timeout.
    #[error("uwsgi packet not complete within the timeout ({got} bytes read)")]
    Timeout {
        /// Bytes read by then.
        got: usize,
    },
    /// The connection closed in the middle of a packet.
    #[error("connection closed after {got} bytes of a uwsgi packet")]
    Truncated {
        /// Bytes read by then.
        got: usize,
    },
}

/// Reads a uwsgi packet head (header and vars) into `buf`, bounded by
/// `buffer_size` and `timeout`. `Ok(None)`: the peer closed before sending
/// anything. `buf` keeps every byte read (the packet and any body bytes after it).
pub async fn read_uwsgi_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    buffer_size: usize,
    timeout: Duration,
) -> Result<Option<uwsgi::UwsgiRequest>, UwsgiReadError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !buf.is_empty() {
            match uwsgi::parse_packet(buf, buffer_size) {
                uwsgi::UwsgiParse::Complete(r) => return Ok(Some(r)),
                uwsgi::UwsgiParse::Invalid(e) => return Err(e.into()),
                uwsgi::UwsgiParse::Partial => {}
            }
        }
        // As for HTTP: the packet head, and at most READ_AHEAD bytes after it.
        let room = (buffer_size + 4 + READ_AHEAD).saturating_sub(buf.len()).clamp(1, READ_AHEAD);
        buf.reserve(room);
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut (&mut *buf).limit(room))).await {
            Err(_elapsed) => return Err(UwsgiReadError::Timeout { got: buf.len() }),
            Ok(Ok(0)) | Ok(Err(_)) if buf.is_empty() => return Ok(None),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(UwsgiReadError::Truncated { got: buf.len() }),
            Ok(Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outcomes() {
        let mut buf = BytesMut::new();
        let mut input: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest";
        let c = read_http_head(&mut input, &mut buf, 8192, Duration::from_secs(1)).await;
        assert!(matches!(c, Classification::Dynamic(ref h) if h.len == 27));
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest");

        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "a".repeat(9000));
        let mut input = big.as_bytes();
        let c = read_http_head(&mut input, &mut BytesMut::new(), 8192, Duration::from_secs(1)).await;
        assert!(matches!(c, Classification::TooLarge));

        let mut input: &[u8] = b"GET / HT";
        let c = read_http_head(&mut input, &mut BytesMut::new(), 8192, Duration::from_secs(1)).await;
        assert!(matches!(c, Classification::Gone));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_head_times_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\n").await.unwrap();
        let c = read_http_head(&mut server, &mut BytesMut::new(), 8192, Duration::from_secs(60)).await;
        assert!(matches!(c, Classification::Timeout));
    }
}
