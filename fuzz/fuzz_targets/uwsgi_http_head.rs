//! Fuzz target `uwsgi_http_head`: what the zergling makes of a uwsgi request. Every
//! packet that parses is turned into an HTTP/1.0 request head
//! (`zergling::uwsgi::http_head`); when that succeeds, httparse must read back exactly
//! one head of exactly that length with exactly the announced number of headers, and a
//! target `http::Uri` accepts (hyper's two steps): no var can smuggle a header line, a
//! second request or a broken request line to hyper.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zergpool::classify::uwsgi::{parse_packet, UwsgiParse, MAX_BUFFER_SIZE};
use zergling::uwsgi::http_head;

fuzz_target!(|data: &[u8]| {
    let UwsgiParse::Complete(req) = parse_packet(data, MAX_BUFFER_SIZE) else {
        return;
    };
    let Ok(head) = http_head(&req) else {
        return;
    };
    let mut headers = vec![httparse::EMPTY_HEADER; head.headers + 1];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(&head.bytes) {
        Ok(httparse::Status::Complete(len)) => {
            assert_eq!(len, head.bytes.len(), "the head ends where it was written to end");
            assert_eq!(parsed.headers.len(), head.headers, "no header line was injected or lost");
            assert_eq!(parsed.version, Some(0));
            let target = parsed.path.expect("a complete head has a target");
            assert!(http::Uri::try_from(target).is_ok(), "hyper would refuse the target {target:?}");
            if let Some(method) = req.method().filter(|m| !m.is_empty()) {
                assert_eq!(parsed.method, Some(method));
            }
        }
        other => panic!("hyper could not read the head we wrote: {other:?}\n{}", String::from_utf8_lossy(&head.bytes)),
    }
});
