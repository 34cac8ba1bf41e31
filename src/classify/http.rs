//! Pure parser of an HTTP/1.x request head (httparse underneath).
//!
//! It takes the bytes read so far and says whether they hold a complete head, need
//! more, or can never be a valid request. It never allocates for input it rejects
//! and never panics on any input (fuzzed through the criterion bench inputs and the
//! truncation tests below).

/// Most header lines accepted in one head; more is answered with 431.
pub const MAX_HEADERS: usize = 100;

/// What the pool needs to know of a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method token (`GET`, `POST`, …).
    pub method: String,
    /// The request target as sent (`/path?query`).
    pub target: String,
    /// Minor HTTP version (0 or 1).
    pub minor_version: u8,
    /// The `Host` header, if any.
    pub host: Option<String>,
    /// Length of the head in bytes, blank line included.
    pub len: usize,
}

/// The result of looking at the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadParse {
    /// A whole head.
    Complete(RequestHead),
    /// Valid so far; more bytes are needed.
    Partial,
    /// More header lines than [`MAX_HEADERS`].
    TooManyHeaders,
    /// Not a valid request head; the reason is for the log.
    Invalid(&'static str),
}

/// Parses `buf`, which starts at the first byte of a request.
pub fn parse_head(buf: &[u8]) -> HeadParse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version) else {
                return HeadParse::Invalid("incomplete request line");
            };
            let mut host = None;
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("host") {
                    if host.is_some() {
                        return HeadParse::Invalid("more than one Host header");
                    }
                    match std::str::from_utf8(h.value) {
                        Ok(v) => host = Some(v.trim().to_owned()),
                        Err(_) => return HeadParse::Invalid("Host header is not UTF-8"),
                    }
                }
            }
            if minor_version == 1 && host.is_none() {
                return HeadParse::Invalid("HTTP/1.1 request without a Host header");
            }
            HeadParse::Complete(RequestHead {
                method: method.to_owned(),
                target: target.to_owned(),
                minor_version,
                host,
                len,
            })
        }
        Ok(httparse::Status::Partial) => HeadParse::Partial,
        Err(httparse::Error::TooManyHeaders) => HeadParse::TooManyHeaders,
        Err(e) => HeadParse::Invalid(match e {
            httparse::Error::HeaderName => "invalid header name",
            httparse::Error::HeaderValue => "invalid header value",
            httparse::Error::NewLine => "invalid line ending",
            httparse::Error::Status => "invalid status",
            httparse::Error::Token => "invalid method token",
            httparse::Error::Version => "invalid HTTP version",
            _ => "malformed request head",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURL: &[u8] =
        b"GET /pid?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";

    #[test]
    fn complete_head() {
        let HeadParse::Complete(h) = parse_head(CURL) else { panic!() };
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/pid?x=1");
        assert_eq!(h.host.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(h.len, CURL.len());
    }

    #[test]
    fn every_truncation_is_partial() {
        for cut in 0..CURL.len() {
            assert_eq!(parse_head(&CURL[..cut]), HeadParse::Partial, "cut at {cut}");
        }
    }

    #[test]
    fn body_bytes_after_the_head_are_not_counted() {
        let mut buf = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n".to_vec();
        let head_len = buf.len();
        buf.extend_from_slice(b"abc");
        let HeadParse::Complete(h) = parse_head(&buf) else { panic!() };
        assert_eq!(h.len, head_len);
    }

    #[test]
    fn malformed_heads() {
        assert!(matches!(parse_head(b"GET / HTTP/1.1\r\nHost x\r\n\r\n"), HeadParse::Invalid(_)));
        assert!(matches!(parse_head(b"\x16\x03\x01\x02\x00"), HeadParse::Invalid(_)));
        assert!(matches!(parse_head(b"GET / HTTP/1.1\r\n\r\n"), HeadParse::Invalid(_)));
        assert!(matches!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), HeadParse::Invalid(_)));
        let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_head(&many), HeadParse::TooManyHeaders);
        // HTTP/1.0 needs no Host.
        assert!(matches!(parse_head(b"GET / HTTP/1.0\r\n\r\n"), HeadParse::Complete(_)));
    }
}
