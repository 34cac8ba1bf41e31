//! Pure parser of a uwsgi request packet: what nginx sends with `uwsgi_pass`.
//!
//! A packet is a 4-byte header (`modifier1: u8`, `datasize: u16` little-endian,
//! `modifier2: u8`) and a vars block of exactly `datasize` bytes: a sequence of
//! `u16le key length, key, u16le value length, value` with no terminator. The request
//! body (exactly `CONTENT_LENGTH` raw bytes, never chunked) follows the block and is
//! not part of the packet. Reference: `../shared/reference/uwsgi-compat.md` §2.
//!
//! [`parse_packet`] takes the bytes read so far and returns a value, as the HTTP head
//! parser does: [`UwsgiParse::Complete`], [`UwsgiParse::Partial`] or
//! [`UwsgiParse::Invalid`]. Its invariants (tested at every truncation point of
//! packets captured from a real nginx under `crates/core/tests/data/uwsgi/`, and fuzzed by
//! `fuzz/fuzz_targets/uwsgi_packet.rs`):
//!
//! * it never panics and never reads past `buf`;
//! * every strict prefix of a valid packet is `Partial`; a prefix of an invalid one is
//!   `Partial` or the very `Invalid` the whole packet gets, so the outcome does not
//!   depend on how the bytes were split by the network;
//! * it allocates only for a complete, valid packet (one copy of the vars block, that
//!   the vars then share), so rejected input costs nothing;
//! * a block larger than `buffer_size` is rejected from its 4-byte header, before any
//!   byte of it is buffered, as uWSGI does (`invalid request block size: N (max M)`).
//!
//! Keys and values are kept as bytes, in order, duplicates included: nginx forwards
//! header bytes as the client sent them (obs-text included) and `PATH_INFO` decoded,
//! so a value that is not UTF-8 is not an invalid packet. The `&str` accessors
//! ([`UwsgiRequest::var`] and the helpers built on it) return `None` for a value that
//! is not UTF-8, exactly as for an absent one; [`UwsgiRequest::var_bytes`] gives the
//! raw bytes.

use bytes::Bytes;

/// The size of the packet header (`modifier1`, `datasize`, `modifier2`).
pub const HEADER_LEN: usize = 4;
/// Largest vars block accepted when `buffer-size` is not set (uWSGI's default).
pub const DEFAULT_BUFFER_SIZE: usize = 4096;
/// The largest `buffer-size` (uWSGI clamps to it; `datasize` is 16 bits anyway).
pub const MAX_BUFFER_SIZE: usize = 65535;

/// The first four bytes of the HTTP requests a misdirected client sends: each one
/// read as a uwsgi header gives a nonsense modifier pair (`GET ` is `datasize`
/// 21573, the "invalid request block size: 21573" users meet in uWSGI's log).
const HTTP_STARTS: [&[u8; 4]; 10] =
    [b"GET ", b"HEAD", b"POST", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC", b"PRI "];

/// The result of looking at the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UwsgiParse {
    /// A whole packet (the body, if any, starts at [`UwsgiRequest::head_len`]).
    Complete(UwsgiRequest),
    /// Valid so far; more bytes are needed.
    Partial,
    /// Never a valid packet, whatever follows: close the connection and log the reason.
    Invalid(UwsgiError),
}

/// One parsed uwsgi request packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UwsgiRequest {
    /// The first header byte (0 from nginx unless `uwsgi_modifier1` is set).
    pub modifier1: u8,
    /// The last header byte (0 from nginx unless `uwsgi_modifier2` is set).
    pub modifier2: u8,
    /// The vars in packet order, duplicates kept; all share one copy of the block.
    pub vars: Vec<(Bytes, Bytes)>,
    /// Length of the packet (header and vars block); the body starts here.
    pub head_len: usize,
}

/// Why bytes are not a uwsgi packet (or, for [`UwsgiError::TooLargeToEncode`], cannot
/// become one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UwsgiError {
    /// The header announces a vars block larger than `buffer-size`.
    #[error("invalid request block size: {size} (max {max}); raise buffer-size if this is a legitimate request")]
    BlockTooLarge {
        /// The announced `datasize`.
        size: usize,
        /// The `buffer-size` in force.
        max: usize,
    },
    /// The first bytes are an HTTP request line, not a uwsgi header.
    #[error("this looks like HTTP sent to a uwsgi socket (block size {size}); use --http for HTTP clients or uwsgi_pass in nginx")]
    LooksLikeHttp {
        /// The `datasize` those bytes give (21573 for `GET `).
        size: usize,
    },
    /// A key of length zero (uWSGI: "uwsgi key cannot be null").
    #[error("uwsgi key cannot be empty (var at byte {offset} of the packet)")]
    EmptyKey {
        /// Offset of the key's length field from the start of the packet.
        offset: usize,
    },
    /// A length field, or the key or value it announces, does not fit in the block.
    #[error("uwsgi {field} of {len} bytes at byte {offset} runs past the end of the {block}-byte vars block")]
    PastBlock {
        /// Which part of a var overflows.
        field: VarField,
        /// Offset of that part from the start of the packet.
        offset: usize,
        /// Its length in bytes (2 for a length field).
        len: usize,
        /// The block's `datasize`.
        block: usize,
    },
    /// `CONTENT_LENGTH` starts with more digits than a `u64` holds.
    #[error("CONTENT_LENGTH does not fit in 64 bits")]
    ContentLengthTooLarge,
    /// [`encode_packet`] was given a key, a value or a set of vars over 65535 bytes.
    #[error("cannot encode a uwsgi packet: {what} of {len} bytes (max 65535)")]
    TooLargeToEncode {
        /// `key`, `value` or `vars block`.
        what: &'static str,
        /// Its length.
        len: usize,
    },
}

/// The part of a var named in [`UwsgiError::PastBlock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarField {
    /// The 2-byte length of a key.
    KeyLength,
    /// A key's bytes.
    Key,
    /// The 2-byte length of a value.
    ValueLength,
    /// A value's bytes.
    Value,
}

impl std::fmt::Display for VarField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VarField::KeyLength => "key length",
            VarField::Key => "key",
            VarField::ValueLength => "value length",
            VarField::Value => "value",
        })
    }
}

/// Parses `buf`, which starts at the first byte of a packet. A `datasize` above
/// `buffer_size` (clamped to [`MAX_BUFFER_SIZE`]) is refused.
pub fn parse_packet(buf: &[u8], buffer_size: usize) -> UwsgiParse {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return UwsgiParse::Partial;
    };
    let size = usize::from(u16::from_le_bytes([header[1], header[2]]));
    if HTTP_STARTS.contains(&header) {
        return UwsgiParse::Invalid(UwsgiError::LooksLikeHttp { size });
    }
    let max = buffer_size.min(MAX_BUFFER_SIZE);
    if size > max {
        return UwsgiParse::Invalid(UwsgiError::BlockTooLarge { size, max });
    }
    // First pass: validate what has arrived and count the vars, without allocating.
    let available = buf.len().min(HEADER_LEN + size);
    let count = match walk(&buf[HEADER_LEN..available], size, |_, _| {}) {
        Walk::Done(count) => count,
        Walk::NeedMore => return UwsgiParse::Partial,
        Walk::Invalid(e) => return UwsgiParse::Invalid(e),
    };
    if available < HEADER_LEN + size {
        return UwsgiParse::Partial;
    }
    // Second pass over the whole, valid block: one copy, shared by every var.
    let block = Bytes::copy_from_slice(&buf[HEADER_LEN..HEADER_LEN + size]);
    let mut vars = Vec::with_capacity(count);
    walk(&block, size, |k, v| vars.push((block.slice(k), block.slice(v))));
    UwsgiParse::Complete(UwsgiRequest { modifier1: header[0], modifier2: header[3], vars, head_len: HEADER_LEN + size })
}

/// Encodes `vars` as a packet with both modifiers 0, as nginx does (for tests and
/// benches). It does not refuse empty keys, so that tests can build that malformed
/// case with it.
pub fn encode_packet<I, K, V>(vars: I) -> Result<Vec<u8>, UwsgiError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut out = vec![0u8; HEADER_LEN];
    for (k, v) in vars {
        for (what, part) in [("key", k.as_ref()), ("value", v.as_ref())] {
            let len = u16::try_from(part.len()).map_err(|_| UwsgiError::TooLargeToEncode { what, len: part.len() })?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    let size = out.len() - HEADER_LEN;
    let len = u16::try_from(size).map_err(|_| UwsgiError::TooLargeToEncode { what: "vars block", len: size })?;
    out[1..3].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

impl UwsgiRequest {
    /// The raw value of `key`; the last one when the key is repeated (uWSGI's environ
    /// keeps the last).
    pub fn var_bytes(&self, key: &str) -> Option<&[u8]> {
        self.vars.iter().rev().find(|(k, _)| k.as_ref() == key.as_bytes()).map(|(_, v)| v.as_ref())
    }

    /// The value of `key` as text; the last one when repeated. `None` when absent or
    /// not UTF-8 (use [`UwsgiRequest::var_bytes`] to tell the two apart).
    pub fn var(&self, key: &str) -> Option<&str> {
        self.var_bytes(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `key`, in packet order.
    pub fn var_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.vars.iter().filter(move |(k, _)| k.as_ref() == key.as_bytes()).map(|(_, v)| v.as_ref())
    }

    /// `REQUEST_METHOD`.
    pub fn method(&self) -> Option<&str> {
        self.var("REQUEST_METHOD")
    }

    /// `PATH_INFO`: the path nginx normalised and percent-decoded (`$document_uri`).
    /// `None` when absent or not UTF-8; static-map must then treat it as no match.
    pub fn path_info(&self) -> Option<&str> {
        self.var("PATH_INFO")
    }

    /// `REQUEST_URI`: the request target as the client sent it.
    pub fn request_uri(&self) -> Option<&str> {
        self.var("REQUEST_URI")
    }

    /// `QUERY_STRING`, undecoded.
    pub fn query_string(&self) -> Option<&str> {
        self.var("QUERY_STRING")
    }

    /// The body length: the leading decimal digits of `CONTENT_LENGTH`, as uWSGI reads
    /// it (`""`, absent, or no leading digit mean 0; `"12abc"` means 12). More digits
    /// than a `u64` holds is an error rather than a wrapped number.
    pub fn content_length(&self) -> Result<u64, UwsgiError> {
        let Some(raw) = self.var_bytes("CONTENT_LENGTH") else {
            return Ok(0);
        };
        raw.iter().take_while(|b| b.is_ascii_digit()).try_fold(0u64, |n, d| {
            n.checked_mul(10).and_then(|n| n.checked_add(u64::from(d - b'0'))).ok_or(UwsgiError::ContentLengthTooLarge)
        })
    }
}

/// What a walk over the part of a vars block that has arrived found.
enum Walk {
    /// The whole block is well-formed; this many vars.
    Done(usize),
    /// Well-formed so far; a length field has not arrived yet.
    NeedMore,
    /// Malformed, whatever follows.
    Invalid(UwsgiError),
}

/// Walks `avail`, the first bytes of a `size`-byte vars block, calling `each` with the
/// key and value ranges (in the block) of every var whose length fields have arrived.
/// Every length is checked against `size`, never against `avail`: a length that
/// cannot fit is invalid as soon as its 2 bytes are there.
fn walk(avail: &[u8], size: usize, mut each: impl FnMut(std::ops::Range<usize>, std::ops::Range<usize>)) -> Walk {
    let mut pos = 0;
    let mut count = 0;
    while pos < size {
        let key_at = pos;
        let key_len = match length(avail, size, &mut pos, VarField::KeyLength, VarField::Key) {
            Ok(Some(len)) => len,
            Ok(None) => return Walk::NeedMore,
            Err(e) => return Walk::Invalid(e),
        };
        if key_len == 0 {
            return Walk::Invalid(UwsgiError::EmptyKey { offset: HEADER_LEN + key_at });
        }
        let key = pos..pos + key_len;
        pos += key_len;
        let value_len = match length(avail, size, &mut pos, VarField::ValueLength, VarField::Value) {
            Ok(Some(len)) => len,
            Ok(None) => return Walk::NeedMore,
            Err(e) => return Walk::Invalid(e),
        };
        let value = pos..pos + value_len;
        pos += value_len;
        each(key, value);
        count += 1;
    }
    Walk::Done(count)
}

/// Reads the length field at `*pos` and checks that it and the bytes it announces fit
/// in the `size`-byte block; on success `*pos` is just after the field.
/// `Ok(None)`: the field has not fully arrived.
fn length(
    avail: &[u8],
    size: usize,
    pos: &mut usize,
    field: VarField,
    part: VarField,
) -> Result<Option<usize>, UwsgiError> {
    let at = *pos;
    if size - at < 2 {
        return Err(UwsgiError::PastBlock { field, offset: HEADER_LEN + at, len: 2, block: size });
    }
    let Some(&[lo, hi]) = avail.get(at..at + 2).and_then(|s| s.first_chunk::<2>()) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_le_bytes([lo, hi]));
    *pos = at + 2;
    if len > size - *pos {
        return Err(UwsgiError::PastBlock { field: part, offset: HEADER_LEN + *pos, len, block: size });
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from nginx 1.22.1 (Debian 12) by `crates/core/tests/data/uwsgi/capture.py`:
    /// (name, bytes, packet length, body length).
    const CAPTURES: [(&str, &[u8], usize, usize); 5] = [
        ("get-root", include_bytes!("../../tests/data/uwsgi/get-root.bin"), 364, 0),
        ("head-root", include_bytes!("../../tests/data/uwsgi/head-root.bin"), 365, 0),
        ("get-query-headers", include_bytes!("../../tests/data/uwsgi/get-query-headers.bin"), 874, 0),
        ("post-small", include_bytes!("../../tests/data/uwsgi/post-small.bin"), 487, 21),
        ("post-chunked", include_bytes!("../../tests/data/uwsgi/post-chunked.bin"), 478, 142),
    ];

    fn complete(buf: &[u8]) -> UwsgiRequest {
        match parse_packet(buf, DEFAULT_BUFFER_SIZE) {
            UwsgiParse::Complete(r) => r,
            other => panic!("expected a complete packet, got {other:?}"),
        }
    }

    fn invalid(buf: &[u8], buffer_size: usize) -> UwsgiError {
        match parse_packet(buf, buffer_size) {
            UwsgiParse::Invalid(e) => e,
            other => panic!("expected an invalid packet, got {other:?}"),
        }
    }

    #[test]
    fn captured_packets_parse_whole_and_with_their_body() {
        for (name, bytes, head_len, body_len) in CAPTURES {
            assert_eq!(bytes.len(), head_len + body_len, "{name}");
            let req = complete(bytes);
            assert_eq!(req.head_len, head_len, "{name}");
            assert_eq!((req.modifier1, req.modifier2), (0, 0), "{name}");
            assert_eq!(complete(&bytes[..head_len]), req, "{name}: the body is not part of the packet");
            assert_eq!(req.content_length(), Ok(body_len as u64), "{name}");
            assert_eq!(req.var("REMOTE_ADDR"), Some("127.0.0.1"), "{name}");
            assert_eq!(req.var("SERVER_PROTOCOL"), Some("HTTP/1.1"), "{name}");
            // Re-encoding the vars gives back the very bytes nginx sent.
            let again = encode_packet(req.vars.iter().map(|(k, v)| (k, v))).expect("fits");
            assert_eq!(&again[..], &bytes[..head_len], "{name}");
        }
    }

    #[test]
    fn every_truncation_of_captured_packets_is_partial() {
        for (name, bytes, head_len, _) in CAPTURES {
            for cut in 0..head_len {
                assert_eq!(
                    parse_packet(&bytes[..cut], DEFAULT_BUFFER_SIZE),
                    UwsgiParse::Partial,
                    "{name} cut at {cut}"
                );
            }
            for cut in head_len..=bytes.len() {
                assert!(
                    matches!(parse_packet(&bytes[..cut], DEFAULT_BUFFER_SIZE), UwsgiParse::Complete(_)),
                    "{name} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn buffer_size_is_checked_from_the_header_at_every_truncation() {
        for (name, bytes, head_len, _) in CAPTURES {
            let size = head_len - HEADER_LEN;
            assert!(matches!(parse_packet(bytes, size), UwsgiParse::Complete(_)), "{name}: exactly buffer-size fits");
            for cut in 0..=bytes.len() {
                let got = parse_packet(&bytes[..cut], size - 1);
                if cut < HEADER_LEN {
                    assert_eq!(got, UwsgiParse::Partial, "{name} cut at {cut}");
                } else {
                    assert_eq!(
                        got,
                        UwsgiParse::Invalid(UwsgiError::BlockTooLarge { size, max: size - 1 }),
                        "{name} cut at {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn vars_keep_order_and_duplicates_and_the_last_wins() {
        let req = complete(CAPTURES[2].1);
        let keys: Vec<&[u8]> = req.vars.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys.first(), Some(&&b"QUERY_STRING"[..]));
        assert_eq!(keys.iter().filter(|k| **k == b"HTTP_X_FOO").count(), 2);
        assert_eq!(req.var_all("HTTP_X_FOO").collect::<Vec<_>>(), vec![&b"first"[..], &b"second"[..]]);
        assert_eq!(req.var("HTTP_X_FOO"), Some("second"));
        assert_eq!(req.var("HTTP_X_EMPTY"), Some(""));
        assert_eq!(req.method(), Some("GET"));
        assert_eq!(req.path_info(), Some("/search/café/a b"));
        assert_eq!(req.request_uri(), Some("/search/caf%C3%A9/a%20b?q=zerg+pool&lang=en&empty=&x=%2F"));
        assert_eq!(req.query_string(), Some("q=zerg+pool&lang=en&empty=&x=%2F"));
        assert_eq!(req.var("CONTENT_LENGTH"), Some(""));
        assert_eq!(req.content_length(), Ok(0));
        assert_eq!(req.var("NOT_THERE"), None);

        let chunked = complete(CAPTURES[4].1);
        assert_eq!(chunked.var("HTTP_TRANSFER_ENCODING"), Some("chunked"));
        assert_eq!(chunked.content_length(), Ok(142));
        assert_eq!(complete(CAPTURES[1].1).method(), Some("HEAD"));
    }

    #[test]
    fn content_length_reads_leading_digits() {
        let cl = |v: &str| complete(&encode_packet([("CONTENT_LENGTH", v)]).expect("fits")).content_length();
        assert_eq!(cl(""), Ok(0));
        assert_eq!(cl("0"), Ok(0));
        assert_eq!(cl("42"), Ok(42));
        assert_eq!(cl("12abc"), Ok(12));
        assert_eq!(cl("abc"), Ok(0));
        assert_eq!(cl(" 7"), Ok(0));
        assert_eq!(cl("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(cl("18446744073709551616"), Err(UwsgiError::ContentLengthTooLarge));
        assert_eq!(complete(&encode_packet([("A", "b")]).expect("fits")).content_length(), Ok(0));
    }

    #[test]
    fn non_utf8_values_are_kept_as_bytes() {
        let req = complete(&encode_packet([("PATH_INFO", &b"/caf\xe9"[..])]).expect("fits"));
        assert_eq!(req.path_info(), None);
        assert_eq!(req.var_bytes("PATH_INFO"), Some(&b"/caf\xe9"[..]));
    }

    #[test]
    fn empty_block_and_modifiers() {
        let req = complete(&[7, 0, 0, 9]);
        assert_eq!((req.modifier1, req.modifier2, req.head_len), (7, 9, 4));
        assert!(req.vars.is_empty());
        assert!(matches!(parse_packet(&[0, 0, 0, 0], 0), UwsgiParse::Complete(_)));
        // A buffer size over 65535 is clamped, and every datasize then fits.
        assert_eq!(parse_packet(&[0, 0xff, 0xff, 0], usize::MAX), UwsgiParse::Partial);
    }

    #[test]
    fn block_larger_than_buffer_size() {
        let e = invalid(&[0, 0x88, 0x13, 0], DEFAULT_BUFFER_SIZE);
        assert_eq!(e, UwsgiError::BlockTooLarge { size: 5000, max: 4096 });
        assert!(e.to_string().starts_with("invalid request block size: 5000 (max 4096)"), "{e}");
    }

    #[test]
    fn http_sent_to_a_uwsgi_socket() {
        for req in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /echo HTTP/1.1\r\n",
            b"HEAD / HTTP/1.0\r\n\r\n",
            b"PUT /x HTTP/1.1\r\n",
            b"DELETE /x HTTP/1.1\r\n",
            b"OPTIONS * HTTP/1.1\r\n",
            b"PATCH /x HTTP/1.1\r\n",
            b"CONNECT a:443 HTTP/1.1\r\n",
            b"TRACE / HTTP/1.1\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            // Even with a buffer-size that would fit the nonsense datasize.
            for buffer_size in [DEFAULT_BUFFER_SIZE, MAX_BUFFER_SIZE] {
                let e = invalid(req, buffer_size);
                assert!(matches!(e, UwsgiError::LooksLikeHttp { .. }), "{e:?}");
            }
        }
        let e = invalid(b"GET / HTTP/1.1\r\n", DEFAULT_BUFFER_SIZE);
        assert_eq!(e, UwsgiError::LooksLikeHttp { size: 21573 });
        assert!(e.to_string().contains("this looks like HTTP sent to a uwsgi socket"), "{e}");
        assert!(e.to_string().contains("use --http for HTTP clients or uwsgi_pass in nginx"), "{e}");
        assert_eq!(parse_packet(b"GET", DEFAULT_BUFFER_SIZE), UwsgiParse::Partial);
    }

    #[test]
    fn zero_length_key() {
        let pkt = encode_packet([("A", "1"), ("", "x")]).expect("fits");
        assert_eq!(invalid(&pkt, DEFAULT_BUFFER_SIZE), UwsgiError::EmptyKey { offset: 10 });
        assert!(invalid(&pkt, DEFAULT_BUFFER_SIZE).to_string().contains("key cannot be empty"));
    }

    #[test]
    fn lengths_running_past_the_block() {
        // Key length 10 in a 6-byte block.
        let e = invalid(&[0, 6, 0, 0, 10, 0, b'A', b'B', b'C', b'D'], DEFAULT_BUFFER_SIZE);
        assert_eq!(e, UwsgiError::PastBlock { field: VarField::Key, offset: 6, len: 10, block: 6 });
        assert!(e.to_string().contains("runs past the end of the 6-byte vars block"), "{e}");
        // Value length 200 in a 10-byte block.
        let e = invalid(&[0, 10, 0, 0, 1, 0, b'A', 200, 0, b'x', b'y', b'z', b'w', b'v'], DEFAULT_BUFFER_SIZE);
        assert_eq!(e, UwsgiError::PastBlock { field: VarField::Value, offset: 9, len: 200, block: 10 });
        // A block that ends in the middle of a key length field (odd size).
        let e = invalid(&[0, 1, 0, 0, 1], DEFAULT_BUFFER_SIZE);
        assert_eq!(e, UwsgiError::PastBlock { field: VarField::KeyLength, offset: 4, len: 2, block: 1 });
        // ... or right where the value length field should be.
        let e = invalid(&[0, 3, 0, 0, 1, 0, b'A'], DEFAULT_BUFFER_SIZE);
        assert_eq!(e, UwsgiError::PastBlock { field: VarField::ValueLength, offset: 7, len: 2, block: 3 });
        // Lengths are checked against the announced block, not the bytes after it:
        // a body following a short block does not make a long key valid.
        let mut pkt = encode_packet([("A", "1")]).expect("fits");
        pkt[4] = 9;
        pkt.extend_from_slice(b"body bytes after the block");
        assert!(matches!(invalid(&pkt, DEFAULT_BUFFER_SIZE), UwsgiError::PastBlock { field: VarField::Key, .. }));
    }

    #[test]
    fn truncated_malformed_packets_are_partial_or_the_same_error() {
        let mut empty_key = encode_packet([("REQUEST_METHOD", "GET"), ("", "x"), ("PATH_INFO", "/")]).expect("fits");
        empty_key.extend_from_slice(b"body");
        let mut long_value = CAPTURES[0].1.to_vec();
        // QUERY_STRING's value length (empty in the capture) becomes 65535.
        long_value[4 + 2 + 12] = 0xff;
        long_value[4 + 2 + 12 + 1] = 0xff;
        for (name, pkt) in [("empty key", empty_key), ("long value", long_value)] {
            let whole = invalid(&pkt, DEFAULT_BUFFER_SIZE);
            for cut in 0..pkt.len() {
                match parse_packet(&pkt[..cut], DEFAULT_BUFFER_SIZE) {
                    UwsgiParse::Partial => {}
                    UwsgiParse::Invalid(e) => assert_eq!(e, whole, "{name} cut at {cut}"),
                    UwsgiParse::Complete(_) => panic!("{name} cut at {cut} parsed"),
                }
            }
        }
    }

    #[test]
    fn encode_refuses_what_does_not_fit() {
        let big = vec![b'x'; 65536];
        assert_eq!(encode_packet([("K", &big[..])]), Err(UwsgiError::TooLargeToEncode { what: "value", len: 65536 }));
        assert_eq!(encode_packet([(&big[..], "v")]), Err(UwsgiError::TooLargeToEncode { what: "key", len: 65536 }));
        let half = vec![b'x'; 40000];
        assert!(matches!(
            encode_packet([("A", &half[..]), ("B", &half[..])]),
            Err(UwsgiError::TooLargeToEncode { what: "vars block", .. })
        ));
        let max = vec![b'x'; MAX_BUFFER_SIZE - 5];
        let pkt = encode_packet([("K", &max[..])]).expect("exactly 65535");
        assert_eq!(complete_with(&pkt, MAX_BUFFER_SIZE).head_len, HEADER_LEN + MAX_BUFFER_SIZE);
    }

    fn complete_with(buf: &[u8], buffer_size: usize) -> UwsgiRequest {
        match parse_packet(buf, buffer_size) {
            UwsgiParse::Complete(r) => r,
            other => panic!("expected a complete packet, got {other:?}"),
        }
    }
}
