//! Pure response planning for a static hit: from the file's metadata and the request
//! headers to a status, the serialised head and the byte ranges of the body.
//!
//! Invariants:
//! * `Content-Length` always equals the number of body bytes a `GET` would get,
//!   multipart framing included (a `HEAD` gets the same head and no body);
//! * every [`Body::File`] range and every multipart part lies inside `0..len` of the
//!   file as it was measured (`fstat` on the opened file);
//! * the total of the ranges served never exceeds the file's length (overlapping
//!   ranges that add up to more are answered with the whole file, `200`), and at most
//!   [`MAX_RANGES`] ranges are honoured, so a request cannot amplify a file;
//! * no header value here comes from the request unchecked (only the `Location` of a
//!   redirect, which [`super::path`] re-encodes).
//!
//! Decisions (RFC 9110 §13.2.2 order): `If-None-Match` (weak comparison, `*`) → 304;
//! otherwise `If-Modified-Since` (`Last-Modified <= date`) → 304; then `If-Range`
//! (a strong ETag, or a date equal to `Last-Modified`) gates `Range`; a malformed or
//! non-`bytes` `Range` is ignored (200); no satisfiable range → 416.

use std::fmt::Write as _;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::request::{Encoding, Persistence, RequestHeaders};

/// Most ranges honoured in one request; more and the `Range` header is ignored.
pub const MAX_RANGES: usize = 32;

/// What the response depends on of the file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// Length in bytes.
    pub len: u64,
    /// Modification time.
    pub mtime: SystemTime,
    /// A strong ETag, quoted: inode, length and mtime in nanoseconds, so that a
    /// replaced or rewritten file gets a new one.
    pub etag: String,
}

impl FileMeta {
    /// Derives the metadata from `fstat` of the opened file.
    pub fn from_metadata(md: &Metadata) -> FileMeta {
        FileMeta {
            len: md.len(),
            mtime: md.modified().unwrap_or(UNIX_EPOCH),
            etag: format!("\"{:x}-{:x}-{:x}.{:x}\"", md.ino(), md.len(), md.mtime() as u64, md.mtime_nsec() as u64),
        }
    }
}

/// The representation being served: the file, or its precompressed variant.
#[derive(Debug, Clone, Copy)]
pub struct Representation<'a> {
    /// The metadata of the file actually sent.
    pub meta: &'a FileMeta,
    /// `Content-Type`, from the name the client asked for.
    pub content_type: &'a str,
    /// The variant's `Content-Encoding`, if a variant is sent.
    pub encoding: Option<Encoding>,
    /// Whether to send `Vary: Accept-Encoding` (the gzip options cover this file).
    pub vary: bool,
    /// `Cache-Control: max-age` and `Expires`, from the expires options.
    pub max_age: Option<u64>,
}

/// What a plan depends on besides the file and the request headers; kept apart so
/// that planning stays pure.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// `HEAD`: the head a `GET` would get, no body.
    pub head_only: bool,
    /// Whether the connection stays open, and the `Connection` header to send.
    pub persistence: Persistence,
    /// The time of the response (`Date`, `Expires`).
    pub now: SystemTime,
    /// The multipart boundary, used only for several ranges.
    pub boundary: &'a str,
}

/// The body of a response, as parts of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// No body (HEAD, 304, 416, redirects; small fixed bodies are in the head bytes).
    Empty,
    /// One range of the file.
    File {
        /// First byte.
        start: u64,
        /// Number of bytes.
        len: u64,
    },
    /// `multipart/byteranges`: each part's header, then its range; then the trailer.
    Multipart {
        /// The parts, in the order the client asked for them.
        parts: Vec<Part>,
        /// The closing delimiter.
        trailer: Vec<u8>,
    },
}

/// One part of a `multipart/byteranges` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Delimiter and part headers, blank line included.
    pub header: Vec<u8>,
    /// First byte.
    pub start: u64,
    /// Number of bytes.
    pub len: u64,
}

/// A planned response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The status code.
    pub status: u16,
    /// The serialised status line and headers, blank line included (and the few
    /// bytes of a fixed body such as 403's).
    pub head: Vec<u8>,
    /// What follows the head.
    pub body: Body,
    /// Whether the connection stays open afterwards.
    pub keep_alive: bool,
}

impl Plan {
    /// The number of body bytes that follow [`Plan::head`].
    pub fn body_len(&self) -> u64 {
        match &self.body {
            Body::Empty => 0,
            Body::File { len, .. } => *len,
            Body::Multipart { parts, trailer } => {
                parts.iter().map(|p| p.header.len() as u64 + p.len).sum::<u64>() + trailer.len() as u64
            }
        }
    }
}

/// Plans the response to a `GET`/`HEAD` of a file.
pub fn plan_file(rep: &Representation<'_>, req: &RequestHeaders, cx: &Context<'_>) -> Plan {
    let len = rep.meta.len;
    let last_modified = last_modified(rep.meta.mtime, cx.now);

    if not_modified(req, &rep.meta.etag, last_modified) {
        let mut h = HeadWriter::status(304, "Not Modified", cx.now);
        h.validators(rep, last_modified, cx);
        return h.finish(cx.persistence, Body::Empty, cx.head_only);
    }

    let range = req
        .range
        .as_deref()
        .filter(|_| req.if_range.as_deref().map_or(true, |v| if_range_matches(v, &rep.meta.etag, last_modified)));
    let selection = range.and_then(parse_range).map_or(Selection::Full, |specs| select(&specs, len));

    match selection {
        Selection::Unsatisfiable => {
            let mut h = HeadWriter::status(416, "Range Not Satisfiable", cx.now);
            h.header("Content-Range", format_args!("bytes */{len}"));
            h.header("Content-Length", 0);
            h.header("Accept-Ranges", "bytes");
            h.finish(cx.persistence, Body::Empty, cx.head_only)
        }
        Selection::Full => {
            let mut h = HeadWriter::status(200, "OK", cx.now);
            h.header("Content-Type", rep.content_type);
            h.header("Content-Length", len);
            h.validators(rep, last_modified, cx);
            h.header("Accept-Ranges", "bytes");
            h.encoding(rep);
            let body = if len == 0 { Body::Empty } else { Body::File { start: 0, len } };
            h.finish(cx.persistence, body, cx.head_only)
        }
        Selection::One(start, end) => {
            let mut h = HeadWriter::status(206, "Partial Content", cx.now);
            h.header("Content-Type", rep.content_type);
            h.header("Content-Length", end - start + 1);
            h.header("Content-Range", format_args!("bytes {start}-{end}/{len}"));
            h.validators(rep, last_modified, cx);
            h.header("Accept-Ranges", "bytes");
            h.encoding(rep);
            h.finish(cx.persistence, Body::File { start, len: end - start + 1 }, cx.head_only)
        }
        Selection::Many(ranges) => {
            let parts: Vec<Part> = ranges
                .iter()
                .map(|&(start, end)| Part {
                    header: format!(
                        "\r\n--{}\r\nContent-Type: {}\r\nContent-Range: bytes {start}-{end}/{len}\r\n\r\n",
                        cx.boundary, rep.content_type
                    )
                    .into_bytes(),
                    start,
                    len: end - start + 1,
                })
                .collect();
            let trailer = format!("\r\n--{}--\r\n", cx.boundary).into_bytes();
            let body = Body::Multipart { parts, trailer };
            let mut h = HeadWriter::status(206, "Partial Content", cx.now);
            h.header("Content-Type", format_args!("multipart/byteranges; boundary={}", cx.boundary));
            h.header("Content-Length", body_len(&body));
            h.validators(rep, last_modified, cx);
            h.header("Accept-Ranges", "bytes");
            h.encoding(rep);
            h.finish(cx.persistence, body, cx.head_only)
        }
    }
}

/// Plans the `301` from `/dir` to `/dir/` (nginx's behaviour; uWSGI serves the
/// index without redirecting, which breaks relative links).
pub fn plan_redirect(location: &str, cx: &Context<'_>) -> Plan {
    let mut h = HeadWriter::status(301, "Moved Permanently", cx.now);
    h.header("Location", location);
    h.header("Content-Length", 0);
    h.finish(cx.persistence, Body::Empty, cx.head_only)
}

/// Plans the `403` for a refused path.
pub fn plan_forbidden(cx: &Context<'_>) -> Plan {
    const BODY: &str = "Forbidden\n";
    let mut h = HeadWriter::status(403, "Forbidden", cx.now);
    h.header("Content-Type", "text/plain; charset=utf-8");
    h.header("Content-Length", BODY.len());
    let mut plan = h.finish(cx.persistence, Body::Empty, cx.head_only);
    if !cx.head_only {
        plan.head.extend_from_slice(BODY.as_bytes());
    }
    plan
}

/// The `Content-Type` for a file name: `mime_guess`, `application/octet-stream` when
/// unknown, and `; charset=utf-8` for text types.
pub fn content_type(name: &std::path::Path) -> String {
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let essence = mime.essence_str();
    let texty = mime.type_() == mime_guess::mime::TEXT
        || matches!(essence, "application/javascript" | "application/json" | "application/xml" | "image/svg+xml");
    if texty && mime.get_param("charset").is_none() {
        format!("{essence}; charset=utf-8")
    } else {
        mime.to_string()
    }
}

/// Formats a time as an HTTP date, clamped to what the format can hold.
pub fn http_date(t: SystemTime) -> String {
    const YEAR_9999_END: u64 = 253_402_300_799;
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()).min(YEAR_9999_END);
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

/// `Last-Modified`: the mtime to the second, never later than `now` (RFC 9110
/// §8.8.2.1) and never before the epoch.
fn last_modified(mtime: SystemTime, now: SystemTime) -> SystemTime {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs(mtime).min(secs(now)))
}

fn not_modified(req: &RequestHeaders, etag: &str, last_modified: SystemTime) -> bool {
    if let Some(inm) = req.if_none_match.as_deref() {
        return etag_list_matches_weak(inm, etag);
    }
    match req.if_modified_since.as_deref().map(httpdate::parse_http_date) {
        Some(Ok(since)) => last_modified <= since,
        _ => false,
    }
}

/// `If-None-Match`: `*`, or a list of entity tags compared weakly (`W/` ignored).
/// A malformed list matches nothing.
fn etag_list_matches_weak(list: &str, etag: &str) -> bool {
    if list.trim() == "*" {
        return true;
    }
    let ours = etag.trim_start_matches("W/");
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return false;
        }
        let tag_start = rest.strip_prefix("W/").unwrap_or(rest);
        let Some(after_quote) = tag_start.strip_prefix('"') else {
            return false;
        };
        let Some(close) = after_quote.find('"') else {
            return false;
        };
        let tag = &tag_start[..close + 2];
        if tag == ours {
            return true;
        }
        rest = &after_quote[close + 1..];
    }
}

/// `If-Range`: a strong ETag equal to ours, or a date equal to `Last-Modified`.
/// A weak ETag never matches.
fn if_range_matches(value: &str, etag: &str, last_modified: SystemTime) -> bool {
    let value = value.trim();
    if value.starts_with('"') {
        return value == etag;
    }
    if value.starts_with("W/") {
        return false;
    }
    httpdate::parse_http_date(value).is_ok_and(|d| d == last_modified)
}

/// One range as written in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSpec {
    /// `a-b` or `a-` (`None`: to the end).
    From(u64, Option<u64>),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// What to send of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selection {
    Full,
    Unsatisfiable,
    /// One range, inclusive bounds.
    One(u64, u64),
    /// Several ranges, inclusive bounds, in the order asked.
    Many(Vec<(u64, u64)>),
}

/// Parses `bytes=…`; `None` when the header is to be ignored (another unit,
/// a syntax error, `a-b` with `b < a`, more than [`MAX_RANGES`] ranges).
fn parse_range(value: &str) -> Option<Vec<RangeSpec>> {
    let (unit, set) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    for element in set.split(',') {
        let element = element.trim();
        if element.is_empty() {
            continue;
        }
        if specs.len() == MAX_RANGES {
            return None;
        }
        let (first, last) = element.split_once('-')?;
        let (first, last) = (first.trim(), last.trim());
        let spec = if first.is_empty() {
            RangeSpec::Suffix(parse_digits(last)?)
        } else {
            let first = parse_digits(first)?;
            let last = if last.is_empty() { None } else { Some(parse_digits(last)?) };
            if last.is_some_and(|l| l < first) {
                return None;
            }
            RangeSpec::From(first, last)
        };
        specs.push(spec);
    }
    if specs.is_empty() {
        None
    } else {
        Some(specs)
    }
}

/// ASCII digits only (no sign, no space), saturating at `u64::MAX`.
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, b| n.saturating_mul(10).saturating_add(u64::from(b - b'0'))))
}

/// Applies the specs to a file of `len` bytes.
fn select(specs: &[RangeSpec], len: u64) -> Selection {
    let mut ranges = Vec::with_capacity(specs.len());
    for spec in specs {
        let range = match *spec {
            RangeSpec::From(first, _) if first >= len => continue,
            RangeSpec::From(first, last) => (first, last.map_or(len - 1, |l| l.min(len - 1))),
            RangeSpec::Suffix(0) => continue,
            RangeSpec::Suffix(_) if len == 0 => continue,
            RangeSpec::Suffix(n) => (len - n.min(len), len - 1),
        };
        ranges.push(range);
    }
    let total = ranges.iter().fold(0u64, |t, (s, e)| t.saturating_add(e - s + 1));
    match ranges.len() {
        0 => Selection::Unsatisfiable,
        _ if total > len => Selection::Full,
        1 => Selection::One(ranges[0].0, ranges[0].1),
        _ => Selection::Many(ranges),
    }
}

fn body_len(body: &Body) -> u64 {
    Plan { status: 0, head: Vec::new(), body: body.clone(), keep_alive: false }.body_len()
}

/// Builds a response head line by line.
struct HeadWriter {
    status: u16,
    buf: String,
}

impl HeadWriter {
    fn status(status: u16, reason: &str, now: SystemTime) -> HeadWriter {
        let mut h = HeadWriter { status, buf: String::with_capacity(384) };
        let _ = write!(h.buf, "HTTP/1.1 {status} {reason}\r\n");
        h.header("Date", http_date(now));
        h
    }

    fn header(&mut self, name: &str, value: impl std::fmt::Display) {
        // Writing to a String cannot fail.
        let _ = write!(self.buf, "{name}: {value}\r\n");
    }

    /// ETag, Last-Modified, Vary and the expiry headers: what a 304 repeats.
    fn validators(&mut self, rep: &Representation<'_>, last_modified: SystemTime, cx: &Context<'_>) {
        self.header("Last-Modified", http_date(last_modified));
        self.header("ETag", &rep.meta.etag);
        if rep.vary {
            self.header("Vary", "Accept-Encoding");
        }
        if let Some(max_age) = rep.max_age {
            self.header("Cache-Control", format_args!("max-age={max_age}"));
            if let Some(expires) = cx.now.checked_add(Duration::from_secs(max_age)) {
                self.header("Expires", http_date(expires));
            }
        }
    }

    fn encoding(&mut self, rep: &Representation<'_>) {
        if let Some(e) = rep.encoding {
            self.header("Content-Encoding", e.token());
        }
    }

    fn finish(mut self, persistence: Persistence, body: Body, head_only: bool) -> Plan {
        if let Some(c) = persistence.header() {
            self.header("Connection", c);
        }
        self.buf.push_str("\r\n");
        Plan {
            status: self.status,
            head: self.buf.into_bytes(),
            body: if head_only { Body::Empty } else { body },
            keep_alive: persistence.keep_alive(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(len: u64) -> FileMeta {
        FileMeta { len, mtime: UNIX_EPOCH + Duration::from_secs(1_700_000_000), etag: "\"abc-1\"".into() }
    }

    fn plan(len: u64, req: RequestHeaders) -> Plan {
        let m = meta(len);
        let rep = Representation {
            meta: &m,
            content_type: "text/plain; charset=utf-8",
            encoding: None,
            vary: false,
            max_age: None,
        };
        let cx = Context {
            head_only: false,
            persistence: Persistence::KeepAlive,
            now: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            boundary: "B",
        };
        plan_file(&rep, &req, &cx)
    }

    fn ranged(len: u64, range: &str) -> Plan {
        plan(len, RequestHeaders { range: Some(range.into()), ..Default::default() })
    }

    fn header<'a>(p: &'a Plan, name: &str) -> Option<&'a str> {
        let head = std::str::from_utf8(&p.head).ok()?;
        head.split("\r\n")
            .find_map(|l| l.split_once(": ").filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v))
    }

    #[test]
    fn range_edges() {
        let cases: &[(&str, u16, Option<&str>)] = &[
            ("bytes=0-1", 206, Some("bytes 0-1/10")),
            ("bytes=5-", 206, Some("bytes 5-9/10")),
            ("bytes=-3", 206, Some("bytes 7-9/10")),
            ("bytes=-20", 206, Some("bytes 0-9/10")),
            ("bytes=0-99999999999999999999999", 206, Some("bytes 0-9/10")),
            ("bytes=9-9", 206, Some("bytes 9-9/10")),
            ("bytes=10-", 416, Some("bytes */10")),
            ("bytes=10-20", 416, Some("bytes */10")),
            ("bytes=-0", 416, Some("bytes */10")),
            ("bytes=10-, 20-30", 416, Some("bytes */10")),
            ("bytes=5-3", 200, None),
            ("bytes=abc", 200, None),
            ("bytes=1-2-3", 200, None),
            ("bytes=", 200, None),
            ("items=0-1", 200, None),
            ("bytes=+1-2", 200, None),
            ("bytes=0-9,0-9", 200, None),
            ("bytes=0-1, 20-30", 206, Some("bytes 0-1/10")),
            (" BYTES = 0-1 ,", 206, Some("bytes 0-1/10")),
        ];
        for (range, status, content_range) in cases {
            let p = ranged(10, range);
            assert_eq!(p.status, *status, "{range}");
            assert_eq!(header(&p, "content-range"), *content_range, "{range}");
        }
        assert_eq!(ranged(10, "bytes=-20").body, Body::File { start: 0, len: 10 });
        assert_eq!(ranged(0, "bytes=0-").status, 416);
        assert_eq!(ranged(0, "bytes=-5").status, 416);
        let many: String =
            format!("bytes={}", (0..=MAX_RANGES).map(|i| format!("{i}-{i}")).collect::<Vec<_>>().join(","));
        assert_eq!(ranged(100, &many).status, 200);
    }

    #[test]
    fn several_ranges_are_multipart_with_an_exact_length() {
        let p = ranged(10, "bytes=0-1,4-5,-2");
        assert_eq!(p.status, 206);
        assert_eq!(header(&p, "content-type"), Some("multipart/byteranges; boundary=B"));
        let Body::Multipart { parts, trailer } = &p.body else { panic!("not multipart: {:?}", p.body) };
        assert_eq!(parts.iter().map(|p| (p.start, p.len)).collect::<Vec<_>>(), [(0, 2), (4, 2), (8, 2)]);
        assert_eq!(
            String::from_utf8_lossy(&parts[1].header),
            "\r\n--B\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 4-5/10\r\n\r\n"
        );
        assert_eq!(trailer.as_slice(), b"\r\n--B--\r\n");
        assert_eq!(header(&p, "content-length"), Some(p.body_len().to_string().as_str()));
    }

    #[test]
    fn conditionals() {
        let lm = http_date(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let earlier = http_date(UNIX_EPOCH + Duration::from_secs(1_600_000_000));
        let req = |inm: Option<&str>, ims: Option<&str>| RequestHeaders {
            if_none_match: inm.map(str::to_owned),
            if_modified_since: ims.map(str::to_owned),
            ..Default::default()
        };
        assert_eq!(plan(10, req(Some("\"abc-1\""), None)).status, 304);
        assert_eq!(plan(10, req(Some("W/\"abc-1\""), None)).status, 304);
        assert_eq!(plan(10, req(Some("\"x\", \"abc-1\""), None)).status, 304);
        assert_eq!(plan(10, req(Some("\"a,b\",W/\"abc-1\""), None)).status, 304);
        assert_eq!(plan(10, req(Some("*"), None)).status, 304);
        assert_eq!(plan(10, req(Some("\"x\""), None)).status, 200);
        assert_eq!(plan(10, req(Some("garbage"), None)).status, 200);
        assert_eq!(plan(10, req(None, Some(&lm))).status, 304);
        assert_eq!(plan(10, req(None, Some(&earlier))).status, 200);
        assert_eq!(plan(10, req(None, Some("yesterday"))).status, 200);
        // If-None-Match present: If-Modified-Since is ignored.
        assert_eq!(plan(10, req(Some("\"x\""), Some(&lm))).status, 200);
        let p = plan(10, req(Some("\"abc-1\""), None));
        assert_eq!(p.body, Body::Empty);
        assert_eq!(header(&p, "etag"), Some("\"abc-1\""));
        assert_eq!(header(&p, "last-modified"), Some(lm.as_str()));
        assert_eq!(header(&p, "content-length"), None);
    }

    #[test]
    fn if_range_gates_the_range() {
        let lm = http_date(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let req = |ir: &str| RequestHeaders {
            range: Some("bytes=0-1".into()),
            if_range: Some(ir.into()),
            ..Default::default()
        };
        assert_eq!(plan(10, req("\"abc-1\"")).status, 206);
        assert_eq!(plan(10, req("\"other\"")).status, 200);
        assert_eq!(plan(10, req("W/\"abc-1\"")).status, 200);
        assert_eq!(plan(10, req(&lm)).status, 206);
        assert_eq!(plan(10, req("Mon, 01 Jan 2001 00:00:00 GMT")).status, 200);
        assert_eq!(plan(10, req("nonsense")).status, 200);
    }

    #[test]
    fn content_types() {
        use std::path::Path;
        assert_eq!(content_type(Path::new("a.txt")), "text/plain; charset=utf-8");
        assert_eq!(content_type(Path::new("a.html")), "text/html; charset=utf-8");
        assert!(content_type(Path::new("a.js")).ends_with("javascript; charset=utf-8"));
        assert_eq!(content_type(Path::new("a.json")), "application/json; charset=utf-8");
        assert_eq!(content_type(Path::new("a.png")), "image/png");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }

    #[test]
    fn dates_never_panic() {
        assert_eq!(http_date(UNIX_EPOCH - Duration::from_secs(10)), "Thu, 01 Jan 1970 00:00:00 GMT");
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert!(http_date(far).contains("9999"));
        // A file from the future gets Last-Modified = now.
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(last_modified(far, now), now);
    }
}
