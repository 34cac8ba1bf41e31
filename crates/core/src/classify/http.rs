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
    /// A request target longer than [`MAX_TARGET`] (answered `414`).
    TargetTooLong,
    /// Not a valid request head; the reason is for the log.
    Invalid(&'static str),
}

/// Longest request target accepted (hyper's limit, so that the pool and the
/// zergling agree on which requests are `414`).
pub const MAX_TARGET: usize = u16::MAX as usize - 1;

/// The body framing of a request (RFC 9112 §6), checked the way the zergling's
/// HTTP/1 server (hyper) checks it, so that a head the pool hands over is never
/// one the zergling would refuse without an answer:
///
/// * every `Content-Length` is 1 to 20 ASCII digits (no sign, no list) fitting in
///   a `u64`, and all of them agree;
/// * `Transfer-Encoding` is refused in HTTP/1.0, and its last coding must be
///   `chunked`; a `Content-Length` after it is ignored, as hyper does.
#[derive(Debug, Default)]
struct Framing {
    content_length: Option<u64>,
    chunked: Option<bool>,
}

impl Framing {
    fn header(&mut self, name: &str, value: &[u8], minor_version: u8) -> Result<(), &'static str> {
        if name.eq_ignore_ascii_case("transfer-encoding") {
            if minor_version == 0 {
                return Err("Transfer-Encoding in an HTTP/1.0 request");
            }
            // hyper reads the value as a visible-ASCII string; any other byte makes
            // it "not chunked" (found by fuzz/http_head).
            let visible = value.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            self.chunked = Some(visible && last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            self.content_length = None;
        } else if name.eq_ignore_ascii_case("content-length") && self.chunked.is_none() {
            let len = content_length(value).ok_or("invalid Content-Length")?;
            if self.content_length.is_some_and(|prev| prev != len) {
                return Err("Content-Length headers that disagree");
            }
            self.content_length = Some(len);
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), &'static str> {
        match self.chunked {
            Some(false) => Err("Transfer-Encoding whose last coding is not chunked"),
            _ => Ok(()),
        }
    }
}

/// A `Content-Length` value: ASCII digits only, at most `u64::MAX - 2` (the
/// largest length hyper accepts).
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (n <= u64::MAX - 2).then_some(n)
}

/// Whether `value` is a valid `Host` header value (RFC 9110 §7.2, RFC 3986
/// §3.2.2): empty, or `host[:port]` where host is a registered name (unreserved,
/// percent-encoded and sub-delimiter characters), an IPv4 address, or an IP
/// literal in brackets; port is digits. `a b@c` is refused (space, `@`).
pub fn valid_host(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else { return false };
        let literal = &rest[..end];
        let ok = !literal.is_empty()
            && literal.iter().all(|&b| {
                b.is_ascii_hexdigit()
                    || matches!(b, b':' | b'.' | b'v' | b'V' | b'%' | b'-' | b'_' | b'~')
                    || is_sub_delim(b)
            });
        if !ok {
            return false;
        }
        match &rest[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&[][..], port),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(i) => (&value[..i], &value[i + 1..]),
            None => (value, &[][..]),
        }
    };
    let host_ok = host
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'%') || is_sub_delim(b));
    host_ok && port.iter().all(u8::is_ascii_digit)
}

fn is_sub_delim(b: u8) -> bool {
    matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
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
            let mut framing = Framing::default();
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("host") {
                    if host.is_some() {
                        return HeadParse::Invalid("more than one Host header");
                    }
                    if !valid_host(h.value) {
                        return HeadParse::Invalid("Host header is not a valid host[:port]");
                    }
                    match std::str::from_utf8(h.value) {
                        Ok(v) => host = Some(v.trim().to_owned()),
                        Err(_) => return HeadParse::Invalid("Host header is not UTF-8"),
                    }
                } else if let Err(why) = framing.header(h.name, h.value, minor_version) {
                    return HeadParse::Invalid(why);
                }
            }
            if let Err(why) = framing.finish() {
                return HeadParse::Invalid(why);
            }
            if minor_version == 1 && host.is_none() {
                return HeadParse::Invalid("HTTP/1.1 request without a Host header");
            }
            if target.len() > MAX_TARGET {
                return HeadParse::TargetTooLong;
            }
            // hyper parses the target with `http::Uri` and closes silently when that
            // fails: refuse it here, where the client gets its 400 (fuzz/http_head).
            if http::Uri::try_from(target).is_err() {
                return HeadParse::Invalid("the request target is not a valid URI");
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

    fn with_header(header: &str) -> HeadParse {
        parse_head(format!("POST / HTTP/1.1\r\nHost: a\r\n{header}\r\n\r\n").as_bytes())
    }

    /// RFC 9112 §6.3: a request whose framing cannot be determined gets 400; these
    /// are the heads hyper refuses, so the pool must refuse them too.
    #[test]
    fn framing_errors_are_invalid() {
        for bad in [
            "Content-Length: 3\r\nContent-Length: 5",
            "Content-Length: 3, 5",
            "Content-Length: 3, 3",
            "Content-Length: +3",
            "Content-Length: -1",
            "Content-Length: 99999999999999999999",
            "Content-Length: ",
            "Transfer-Encoding: chunked, identity",
            "Transfer-Encoding: xchunked",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip",
        ] {
            assert!(matches!(with_header(bad), HeadParse::Invalid(_)), "{bad:?} must be invalid");
        }
        for good in [
            "Content-Length: 3",
            "Content-Length: 3\r\nContent-Length: 3",
            "Content-Length: 18446744073709551613",
            "Transfer-Encoding: chunked",
            "Transfer-Encoding: gzip, Chunked",
            "Transfer-Encoding: chunked\r\nContent-Length: x",
            "Content-Length: 3\r\nTransfer-Encoding: chunked",
        ] {
            assert!(matches!(with_header(good), HeadParse::Complete(_)), "{good:?} must be accepted");
        }
        let te10 = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse_head(te10), HeadParse::Invalid(_)));
    }

    #[test]
    fn long_targets_are_414() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(MAX_TARGET));
        assert_eq!(parse_head(long.as_bytes()), HeadParse::TargetTooLong);
        let fits = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(MAX_TARGET - 1));
        assert!(matches!(parse_head(fits.as_bytes()), HeadParse::Complete(_)));
    }

    #[test]
    fn host_syntax() {
        for good in
            ["", "a", "example.org", "example.org:8080", "127.0.0.1:1", "[::1]", "[::1]:8443", "xn--d1a.b", "a_b"]
        {
            assert!(valid_host(good.as_bytes()), "{good:?} is a valid host");
        }
        for bad in ["a b@c", "a b", "u@h", "h/p", "h:p", "[::1", "[::1]x", "h:80:80", "a\\b", "[]"] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?} is not a valid host");
        }
        assert!(matches!(parse_head(b"GET / HTTP/1.1\r\nHost: a b@c\r\n\r\n"), HeadParse::Invalid(_)));
        // Found by fuzz/http_head: a target that is no URI (hyper closes silently).
        assert!(matches!(parse_head(b"GE T/ HTTP/1.1\r\nHost: a\r\n\r\n"), HeadParse::Invalid(_)));
        let te = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gz\xa4ip, chunked\r\n\r\n";
        assert!(matches!(parse_head(te), HeadParse::Invalid(_)));
    }
}
