//! Pure reading of what a static response depends on in a request: the method, the
//! conditional and range headers, `Accept-Encoding`, and whether the connection stays
//! open.
//!
//! The pool's classifier keeps only the request line and `Host`, so this module
//! re-parses the raw head bytes (HTTP) or reads CGI-style variables (uwsgi).
//! Invariants: nothing here trusts a header to be well formed; repeated list headers
//! are joined with `, ` (RFC 9110 §5.3), which also makes a repeated `Range` or
//! `If-Range` malformed and therefore ignored; a header that is not UTF-8 counts as
//! absent.

use crate::classify::http::MAX_HEADERS;

/// The two methods static-map serves; every other method goes to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaticMethod {
    /// `GET`: headers and body.
    Get,
    /// `HEAD`: the headers a `GET` would get, no body.
    Head,
}

impl StaticMethod {
    /// `GET` or `HEAD` (method tokens are case-sensitive); anything else is `None`.
    pub fn from_token(method: &str) -> Option<StaticMethod> {
        match method {
            "GET" => Some(StaticMethod::Get),
            "HEAD" => Some(StaticMethod::Head),
            _ => None,
        }
    }
}

/// The request headers a static response depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHeaders {
    /// `Range`.
    pub range: Option<String>,
    /// `If-Range`.
    pub if_range: Option<String>,
    /// `If-None-Match`.
    pub if_none_match: Option<String>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<String>,
    /// `Accept-Encoding`.
    pub accept_encoding: Option<String>,
    /// `Connection`.
    pub connection: Option<String>,
    /// Whether the request has a body (`Content-Length` other than 0, or any
    /// `Transfer-Encoding`). Such requests are never static: simpler than reading
    /// and discarding a body, and a `GET` with a body is the application's business.
    pub has_body: bool,
}

impl RequestHeaders {
    /// Re-parses a complete HTTP/1.x request head. `None` if it does not parse as one
    /// (the classifier accepted it, so this does not happen in practice).
    pub fn from_head(head: &[u8]) -> Option<RequestHeaders> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return None,
        }
        let mut out = RequestHeaders::default();
        for h in req.headers.iter() {
            let Ok(value) = std::str::from_utf8(h.value) else {
                if h.name.eq_ignore_ascii_case("content-length") || h.name.eq_ignore_ascii_case("transfer-encoding") {
                    out.has_body = true;
                }
                continue;
            };
            out.add(h.name, value);
        }
        Some(out)
    }

    /// Reads CGI-style variables as nginx sends them over uwsgi (`HTTP_RANGE`,
    /// `CONTENT_LENGTH`, …).
    pub fn from_vars<'v>(vars: impl Fn(&str) -> Option<&'v str>) -> RequestHeaders {
        let mut out = RequestHeaders::default();
        for (var, name) in [
            ("HTTP_RANGE", "range"),
            ("HTTP_IF_RANGE", "if-range"),
            ("HTTP_IF_NONE_MATCH", "if-none-match"),
            ("HTTP_IF_MODIFIED_SINCE", "if-modified-since"),
            ("HTTP_ACCEPT_ENCODING", "accept-encoding"),
            ("HTTP_CONNECTION", "connection"),
            ("CONTENT_LENGTH", "content-length"),
            ("HTTP_TRANSFER_ENCODING", "transfer-encoding"),
        ] {
            if let Some(v) = vars(var) {
                // nginx sends CONTENT_LENGTH empty for requests without a body.
                if name == "content-length" && v.is_empty() {
                    continue;
                }
                out.add(name, v);
            }
        }
        out
    }

    fn add(&mut self, name: &str, value: &str) {
        let value = value.trim();
        let slot = if name.eq_ignore_ascii_case("range") {
            &mut self.range
        } else if name.eq_ignore_ascii_case("if-range") {
            &mut self.if_range
        } else if name.eq_ignore_ascii_case("if-none-match") {
            &mut self.if_none_match
        } else if name.eq_ignore_ascii_case("if-modified-since") {
            &mut self.if_modified_since
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            &mut self.accept_encoding
        } else if name.eq_ignore_ascii_case("connection") {
            &mut self.connection
        } else {
            if name.eq_ignore_ascii_case("content-length") {
                if value != "0" {
                    self.has_body = true;
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                self.has_body = true;
            }
            return;
        };
        match slot {
            Some(prev) => {
                prev.push_str(", ");
                prev.push_str(value);
            }
            None => *slot = Some(value.to_owned()),
        }
    }
}

/// Whether the connection stays open after the response, and what `Connection`
/// header says so.
///
/// HTTP/1.1 stays open unless the request says `Connection: close`; HTTP/1.0 stays
/// open only with `Connection: keep-alive` (and no `close`), which is echoed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// HTTP/1.1 default: open, no header needed.
    KeepAlive,
    /// HTTP/1.0 that asked for keep-alive: open, `Connection: keep-alive` sent.
    KeepAliveEcho,
    /// Closed after the response, `Connection: close` sent.
    Close,
}

impl Persistence {
    /// Decides from the request's minor version and its `Connection` header.
    pub fn decide(minor_version: u8, connection: Option<&str>) -> Persistence {
        let mut close = false;
        let mut keep_alive = false;
        for token in connection.unwrap_or_default().split(',').map(str::trim) {
            close |= token.eq_ignore_ascii_case("close");
            keep_alive |= token.eq_ignore_ascii_case("keep-alive");
        }
        match (minor_version, close, keep_alive) {
            (_, true, _) => Persistence::Close,
            (0, false, true) => Persistence::KeepAliveEcho,
            (0, false, false) => Persistence::Close,
            _ => Persistence::KeepAlive,
        }
    }

    /// Whether the connection stays open.
    pub fn keep_alive(self) -> bool {
        !matches!(self, Persistence::Close)
    }

    /// The value of the `Connection` header to send, if any.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Persistence::KeepAlive => None,
            Persistence::KeepAliveEcho => Some("keep-alive"),
            Persistence::Close => Some("close"),
        }
    }
}

/// A precompressed variant served from beside the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `FILE.br`, `Content-Encoding: br`.
    Brotli,
    /// `FILE.gz`, `Content-Encoding: gzip`.
    Gzip,
}

impl Encoding {
    /// The token for `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// The suffix of the variant's file name.
    pub fn suffix(self) -> &'static str {
        match self {
            Encoding::Brotli => ".br",
            Encoding::Gzip => ".gz",
        }
    }
}

/// The encodings the client accepts, best first (higher q-value first, `br` before
/// `gzip` on a tie).
///
/// q-values are honoured: `gzip;q=0` means *not* gzip (uWSGI only looks for the
/// substring, a knowing difference). `*` stands for codings not named. `x-gzip` is
/// `gzip`. No header means no encoding (RFC 9110 would allow any, but no server
/// relies on that). A malformed element is skipped.
pub fn accepted_encodings(accept_encoding: Option<&str>) -> Vec<Encoding> {
    let Some(value) = accept_encoding else {
        return Vec::new();
    };
    let (mut br, mut gzip, mut star) = (None, None, None);
    for element in value.split(',') {
        let mut parts = element.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        if coding.is_empty() {
            continue;
        }
        let mut q = Some(1000);
        for param in parts {
            let Some((name, v)) = param.split_once('=') else {
                q = None;
                break;
            };
            if name.trim().eq_ignore_ascii_case("q") {
                q = parse_qvalue(v.trim());
            }
        }
        let Some(q) = q else { continue };
        let slot = if coding.eq_ignore_ascii_case("br") {
            &mut br
        } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            &mut gzip
        } else if coding == "*" {
            &mut star
        } else {
            continue;
        };
        // If a coding is named twice, the higher weight wins.
        *slot = Some(slot.map_or(q, |prev: u16| prev.max(q)));
    }
    let br = br.or(star).unwrap_or(0);
    let gzip = gzip.or(star).unwrap_or(0);
    let mut out = Vec::with_capacity(2);
    if br > 0 && br >= gzip {
        out.push(Encoding::Brotli);
    }
    if gzip > 0 {
        out.push(Encoding::Gzip);
    }
    if br > 0 && br < gzip {
        out.push(Encoding::Brotli);
    }
    out
}

/// A qvalue (`0`, `0.5`, `1.000`) in thousandths; `None` if malformed.
fn parse_qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_from_the_head() {
        let head = b"GET /s/x HTTP/1.1\r\nHost: h\r\nrange: bytes=0-1\r\nIf-None-Match: \"a\"\r\nIf-None-Match: \"b\"\r\nAccept-Encoding: gzip\r\n\r\n";
        let h = RequestHeaders::from_head(head).expect("complete head");
        assert_eq!(h.range.as_deref(), Some("bytes=0-1"));
        assert_eq!(h.if_none_match.as_deref(), Some("\"a\", \"b\""));
        assert_eq!(h.accept_encoding.as_deref(), Some("gzip"));
        assert!(!h.has_body);
        assert!(RequestHeaders::from_head(b"GET / HTTP/1.1\r\nHost: h\r\n").is_none());
    }

    #[test]
    fn bodies_are_noticed() {
        for extra in ["Content-Length: 3", "Transfer-Encoding: chunked", "Content-Length: x"] {
            let head = format!("GET /s/x HTTP/1.1\r\nHost: h\r\n{extra}\r\n\r\n");
            assert!(RequestHeaders::from_head(head.as_bytes()).expect("head").has_body, "{extra}");
        }
        let head = b"GET /s/x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
        assert!(!RequestHeaders::from_head(head).expect("head").has_body);
        let vars = |k: &str| if k == "CONTENT_LENGTH" { Some("") } else { None };
        assert!(!RequestHeaders::from_vars(vars).has_body);
        let vars = |k: &str| if k == "CONTENT_LENGTH" { Some("12") } else { None };
        assert!(RequestHeaders::from_vars(vars).has_body);
    }

    #[test]
    fn persistence_follows_the_version_and_connection() {
        use Persistence::*;
        assert_eq!(Persistence::decide(1, None), KeepAlive);
        assert_eq!(Persistence::decide(1, Some("close")), Close);
        assert_eq!(Persistence::decide(1, Some("Keep-Alive, Close")), Close);
        assert_eq!(Persistence::decide(0, None), Close);
        assert_eq!(Persistence::decide(0, Some("keep-alive")), KeepAliveEcho);
        assert_eq!(Persistence::decide(0, Some("upgrade")), Close);
        assert_eq!(Close.header(), Some("close"));
        assert!(!Close.keep_alive() && KeepAliveEcho.keep_alive() && KeepAlive.keep_alive());
    }

    #[test]
    fn accept_encoding_honours_qvalues() {
        use Encoding::*;
        let cases: &[(Option<&str>, &[Encoding])] = &[
            (None, &[]),
            (Some(""), &[]),
            (Some("gzip"), &[Gzip]),
            (Some("gzip, deflate, br"), &[Brotli, Gzip]),
            (Some("gzip;q=0"), &[]),
            (Some("gzip;q=0.000, br"), &[Brotli]),
            (Some("br;q=0.5, gzip"), &[Gzip, Brotli]),
            (Some("*"), &[Brotli, Gzip]),
            (Some("*;q=0.1, gzip;q=0"), &[Brotli]),
            (Some("x-gzip"), &[Gzip]),
            (Some("GZIP ; Q=1"), &[Gzip]),
            (Some("gzip;q=2"), &[]),
            (Some("gzip;q=0.5.5"), &[]),
            (Some("identity"), &[]),
            (Some("gzip;q"), &[]),
        ];
        for (value, want) in cases {
            assert_eq!(accepted_encodings(*value), *want, "{value:?}");
        }
    }
}
