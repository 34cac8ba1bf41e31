//! Fuzz target `uwsgi_packet`: `classify::uwsgi::parse_packet` on arbitrary bytes and
//! buffer sizes. The first two input bytes (little-endian) are the buffer size, the rest
//! is what arrived on the socket. Beyond "never panics", it checks the parser's
//! documented invariants:
//!
//! * `Complete`: the packet fits in the input and in the buffer size, re-encoding its
//!   vars gives back the very bytes of the block, no key is empty, and one byte less
//!   is `Partial`;
//! * `Partial`: the header has not arrived, or the block is not all there;
//! * `Invalid`: more bytes after it never change the verdict.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zergpool::classify::uwsgi::{encode_packet, parse_packet, UwsgiParse, HEADER_LEN, MAX_BUFFER_SIZE};

fuzz_target!(|data: &[u8]| {
    let Some((size_bytes, buf)) = data.split_first_chunk::<2>() else {
        return;
    };
    // 0xFFFF stands for "more than the maximum", to exercise the clamp.
    let buffer_size = match u16::from_le_bytes(*size_bytes) {
        u16::MAX => usize::MAX,
        n => usize::from(n),
    };
    let datasize = buf.first_chunk::<HEADER_LEN>().map(|h| usize::from(u16::from_le_bytes([h[1], h[2]])));
    match parse_packet(buf, buffer_size) {
        UwsgiParse::Complete(req) => {
            let datasize = datasize.expect("complete without a header");
            assert_eq!(req.head_len, HEADER_LEN + datasize);
            assert!(req.head_len <= buf.len());
            assert!(datasize <= buffer_size.min(MAX_BUFFER_SIZE));
            assert_eq!((req.modifier1, req.modifier2), (buf[0], buf[3]));
            assert!(req.vars.iter().all(|(k, _)| !k.is_empty()));
            let again = encode_packet(req.vars.iter().map(|(k, v)| (k, v))).expect("a parsed block re-encodes");
            assert_eq!(&again[HEADER_LEN..], &buf[HEADER_LEN..req.head_len]);
            assert_eq!(parse_packet(&buf[..req.head_len - 1], buffer_size), UwsgiParse::Partial);
            // The accessors never panic either.
            let _ = (req.content_length(), req.method(), req.path_info(), req.request_uri(), req.var("HTTP_HOST"));
        }
        UwsgiParse::Partial => {
            if let Some(datasize) = datasize {
                assert!(buf.len() < HEADER_LEN + datasize, "partial with the whole block there");
            }
        }
        UwsgiParse::Invalid(e) => {
            let _ = e.to_string();
            let mut longer = buf.to_vec();
            longer.extend_from_slice(&[0x41; 8]);
            assert_eq!(parse_packet(&longer, buffer_size), UwsgiParse::Invalid(e));
        }
    }
});
