//! Pure handling of request paths for static-map: percent-decode once, split into
//! segments, refuse the tricks, and match mount points on segment boundaries.
//!
//! Invariants:
//! * A [`Segment::Clean`] is never empty, `.` or `..`, never holds `/`, `\`, NUL or
//!   another control byte, and is valid UTF-8 (so no overlong forms). Joined under a
//!   directory, clean segments name a path strictly below it *before symlinks*;
//!   symlinks are the business of [`super::resolve`], which checks the real path.
//! * Bytes are percent-decoded exactly once: `%252e` stays the three characters `%2e`.
//! * Empty segments (`//`) are merged away, as nginx's `merge_slashes` does: they can
//!   never climb, and refusing them would only break sloppy links.
//! * A mount point matches whole segments only: `/static` matches `/static` and
//!   `/static/…`, never `/staticfoo`.
//! * The query string never takes part in a lookup.

use std::fmt;

/// Why a request path under a mount point is refused (answered `403`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PathRefusal {
    /// A `%` not followed by two hexadecimal digits.
    BadEscape,
    /// `%2f`: a separator hidden inside a segment.
    EncodedSlash,
    /// A backslash, literal or `%5c`.
    Backslash,
    /// NUL or another control byte, literal or encoded.
    ControlByte,
    /// A `.` or `..` segment, in any encoding.
    DotSegment,
    /// The decoded bytes are not UTF-8 (overlong forms such as `%c0%ae` included).
    NotUtf8,
}

impl fmt::Display for PathRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathRefusal::BadEscape => "malformed percent escape",
            PathRefusal::EncodedSlash => "encoded slash",
            PathRefusal::Backslash => "backslash",
            PathRefusal::ControlByte => "control byte",
            PathRefusal::DotSegment => "dot segment",
            PathRefusal::NotUtf8 => "not UTF-8 once decoded",
        })
    }
}

/// One segment of a request path, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A segment that may be joined under a directory.
    Clean(String),
    /// A segment that must never reach the file system.
    Refused(PathRefusal),
}

/// A request path split into decoded segments (query kept aside for redirects only).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestPath {
    segments: Vec<Segment>,
    trailing_slash: bool,
    query: Option<String>,
}

/// How a request path relates to one mount point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountMatch<'a> {
    /// The path is not under the mount point.
    No,
    /// The path is under the mount point, but a later segment is refused.
    Refused(PathRefusal),
    /// The path is under the mount point; these clean segments follow it.
    Rest(Vec<&'a str>),
}

impl RequestPath {
    /// Splits an HTTP request target (`/a/b%20c?q`), percent-decoding each segment once.
    ///
    /// Returns `None` for targets that are not in origin form (`*`, `http://…`):
    /// those are never static and go to the application.
    pub fn from_target(target: &str) -> Option<RequestPath> {
        let end = target.find(['?', '#']).unwrap_or(target.len());
        let (path, rest) = target.split_at(end);
        if !path.starts_with('/') {
            return None;
        }
        let query = rest.strip_prefix('?').map(|q| q.split('#').next().unwrap_or_default().to_owned());
        let segments =
            path.split('/').filter(|s| !s.is_empty()).map(|s| percent_decode_segment(s.as_bytes())).collect();
        Some(RequestPath { segments, trailing_slash: path.ends_with('/'), query })
    }

    /// Splits a path that is already decoded, such as uwsgi's `PATH_INFO` (nginx
    /// decodes and normalises it): no percent-decoding happens here, so that a path is
    /// never decoded twice.
    pub fn from_decoded(path_info: &str, query: Option<&str>) -> Option<RequestPath> {
        let path = if path_info.is_empty() { "/" } else { path_info };
        if !path.starts_with('/') {
            return None;
        }
        let segments =
            path.split('/').filter(|s| !s.is_empty()).map(|s| check_segment(s.as_bytes().to_vec())).collect();
        Some(RequestPath {
            segments,
            trailing_slash: path.ends_with('/'),
            query: query.filter(|q| !q.is_empty()).map(str::to_owned),
        })
    }

    /// The decoded segments, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether the path ended with `/` (true for `/` itself).
    pub fn has_trailing_slash(&self) -> bool {
        self.trailing_slash
    }

    /// All segments, if every one is clean; otherwise the first refusal.
    pub fn clean_segments(&self) -> Result<Vec<&str>, PathRefusal> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Clean(c) => Ok(c.as_str()),
                Segment::Refused(r) => Err(*r),
            })
            .collect()
    }

    /// Matches a mount point given as its segments (`/static/css` is `["static", "css"]`,
    /// `/` is `[]`), on segment boundaries only.
    pub fn strip_mount(&self, mount: &[String]) -> MountMatch<'_> {
        if self.segments.len() < mount.len() {
            return MountMatch::No;
        }
        for (seg, m) in self.segments.iter().zip(mount) {
            match seg {
                Segment::Clean(s) if s == m => {}
                _ => return MountMatch::No,
            }
        }
        let mut rest = Vec::with_capacity(self.segments.len() - mount.len());
        for seg in &self.segments[mount.len()..] {
            match seg {
                Segment::Clean(s) => rest.push(s.as_str()),
                Segment::Refused(r) => return MountMatch::Refused(*r),
            }
        }
        MountMatch::Rest(rest)
    }

    /// The decoded, normalised path (`/a/b` or `/a/b/`), for `static-expires-uri`;
    /// `None` when a segment is refused.
    pub fn normalized(&self) -> Option<String> {
        let segs = self.clean_segments().ok()?;
        let mut out = String::from("/");
        out.push_str(&segs.join("/"));
        if self.trailing_slash && !segs.is_empty() {
            out.push('/');
        }
        Some(out)
    }

    /// The `Location` of the redirect from `/dir` to `/dir/`: the normalised path,
    /// re-encoded, with a slash appended and the query kept when it is plain visible
    /// ASCII. `None` when a segment is refused.
    pub fn location_with_slash(&self) -> Option<String> {
        let segs = self.clean_segments().ok()?;
        let mut out = String::new();
        for s in segs {
            out.push('/');
            percent_encode_into(s, &mut out);
        }
        out.push('/');
        if let Some(q) = self.query.as_deref().filter(|q| !q.is_empty() && q.bytes().all(|b| (0x21..0x7f).contains(&b)))
        {
            out.push('?');
            out.push_str(q);
        }
        Some(out)
    }
}

/// Validates a mount point from the configuration and splits it into segments.
/// It must start with `/` and have only clean segments.
pub fn mount_segments(mount: &str) -> Result<Vec<String>, String> {
    if !mount.starts_with('/') {
        return Err("the mount point must start with `/`".into());
    }
    mount
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| match check_segment(s.as_bytes().to_vec()) {
            Segment::Clean(c) => Ok(c),
            Segment::Refused(r) => Err(format!("the mount point has a forbidden segment `{s}` ({r})")),
        })
        .collect()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one raw segment (no `/` in it) exactly once, then checks it.
fn percent_decode_segment(raw: &[u8]) -> Segment {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let hi = raw.get(i + 1).copied().and_then(hex_value);
            let lo = raw.get(i + 2).copied().and_then(hex_value);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Segment::Refused(PathRefusal::BadEscape);
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    check_segment(out)
}

/// Checks one decoded segment.
fn check_segment(bytes: Vec<u8>) -> Segment {
    for &b in &bytes {
        let refusal = match b {
            b'/' => PathRefusal::EncodedSlash,
            b'\\' => PathRefusal::Backslash,
            0..=0x1f | 0x7f => PathRefusal::ControlByte,
            _ => continue,
        };
        return Segment::Refused(refusal);
    }
    match String::from_utf8(bytes) {
        Err(_) => Segment::Refused(PathRefusal::NotUtf8),
        Ok(s) if s == "." || s == ".." => Segment::Refused(PathRefusal::DotSegment),
        Ok(s) if s.is_empty() => Segment::Refused(PathRefusal::DotSegment),
        Ok(s) => Segment::Clean(s),
    }
}

/// Percent-encodes a segment for a `Location` header: unreserved characters,
/// sub-delimiters, `:` and `@` stay; every other byte becomes `%XX`.
fn percent_encode_into(segment: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in segment.as_bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b);
        if keep {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(target: &str) -> Option<PathRefusal> {
        RequestPath::from_target(target).and_then(|p| p.clean_segments().err())
    }

    fn clean(target: &str) -> Vec<String> {
        RequestPath::from_target(target)
            .map(|p| p.clean_segments().map(|v| v.into_iter().map(str::to_owned).collect()).unwrap_or_default())
            .unwrap_or_default()
    }

    #[test]
    fn decodes_once_and_splits() {
        assert_eq!(clean("/a/b%20c/d.txt?x=1"), ["a", "b c", "d.txt"]);
        assert_eq!(clean("/a//b///c"), ["a", "b", "c"]);
        assert_eq!(clean("/%252e%252e/x"), ["%2e%2e", "x"]);
        assert_eq!(clean("/caf%C3%A9"), ["café"]);
        assert_eq!(clean("/..."), ["..."]);
        assert!(clean("/").is_empty());
    }

    #[test]
    fn refuses_the_tricks() {
        let cases: &[(&str, PathRefusal)] = &[
            ("/s/../x", PathRefusal::DotSegment),
            ("/s/./x", PathRefusal::DotSegment),
            ("/s/%2e%2e/x", PathRefusal::DotSegment),
            ("/s/%2E%2E/x", PathRefusal::DotSegment),
            ("/s/.%2e/x", PathRefusal::DotSegment),
            ("/s/%2e./x", PathRefusal::DotSegment),
            ("/s/%2e/x", PathRefusal::DotSegment),
            ("/s/a%2fb", PathRefusal::EncodedSlash),
            ("/s/a%2Fb", PathRefusal::EncodedSlash),
            ("/s/a%5cb", PathRefusal::Backslash),
            ("/s/..\\x", PathRefusal::Backslash),
            ("/s/a%00.txt", PathRefusal::ControlByte),
            ("/s/a%0d%0aX:1", PathRefusal::ControlByte),
            ("/s/%c0%ae%c0%ae/x", PathRefusal::NotUtf8),
            ("/s/%ff", PathRefusal::NotUtf8),
            ("/s/%zz", PathRefusal::BadEscape),
            ("/s/%2", PathRefusal::BadEscape),
            ("/s/100%", PathRefusal::BadEscape),
        ];
        for (target, want) in cases {
            assert_eq!(refusal(target), Some(*want), "{target}");
        }
    }

    #[test]
    fn not_origin_form_is_not_static() {
        assert!(RequestPath::from_target("*").is_none());
        assert!(RequestPath::from_target("http://example.com/s/x").is_none());
        assert!(RequestPath::from_target("").is_none());
    }

    #[test]
    fn mounts_match_on_segment_boundaries() {
        let mount = mount_segments("/static").expect("valid mount");
        let m = |t: &str| RequestPath::from_target(t).map(|p| format!("{:?}", p.strip_mount(&mount)));
        assert_eq!(m("/static").as_deref(), Some("Rest([])"));
        assert_eq!(m("/static/").as_deref(), Some("Rest([])"));
        assert_eq!(m("/static/a/b").as_deref(), Some("Rest([\"a\", \"b\"])"));
        assert_eq!(m("/staticfoo").as_deref(), Some("No"));
        assert_eq!(m("/staticfoo/a").as_deref(), Some("No"));
        assert_eq!(m("/stat").as_deref(), Some("No"));
        assert_eq!(m("/static/%2e%2e/www2").as_deref(), Some("Refused(DotSegment)"));
        // A refused segment inside the mount prefix is simply not this mount.
        assert_eq!(m("/stat%2fic/x").as_deref(), Some("No"));
        let root = mount_segments("/").expect("valid mount");
        assert!(root.is_empty());
        let p = RequestPath::from_target("/anything").expect("origin form");
        assert_eq!(p.strip_mount(&root), MountMatch::Rest(vec!["anything"]));
    }

    #[test]
    fn bad_mounts_are_rejected() {
        assert!(mount_segments("static").is_err());
        assert!(mount_segments("/a/../b").is_err());
        assert_eq!(mount_segments("/a/b/").expect("valid"), ["a", "b"]);
    }

    #[test]
    fn decoded_paths_are_not_decoded_again() {
        let p = RequestPath::from_decoded("/s/%2e%2e/x", None).expect("origin form");
        assert_eq!(p.clean_segments(), Ok(vec!["s", "%2e%2e", "x"]));
        let p = RequestPath::from_decoded("/s/../x", None).expect("origin form");
        assert_eq!(p.clean_segments(), Err(PathRefusal::DotSegment));
        assert!(RequestPath::from_decoded("", None).expect("empty is /").has_trailing_slash());
    }

    #[test]
    fn redirect_location_is_reencoded() {
        let p = RequestPath::from_target("/s//my%20dir?a=1&b=2").expect("origin form");
        assert_eq!(p.location_with_slash().as_deref(), Some("/s/my%20dir/?a=1&b=2"));
        assert_eq!(p.normalized().as_deref(), Some("/s/my dir"));
        let p = RequestPath::from_decoded("/s/é", Some("x=1")).expect("origin form");
        assert_eq!(p.location_with_slash().as_deref(), Some("/s/%C3%A9/?x=1"));
    }
}
