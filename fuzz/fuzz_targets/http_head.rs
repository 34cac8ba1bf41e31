//! Fuzz target `http_head`: the pool's classification of an HTTP request head
//! (`classify::http::parse_head`) on arbitrary bytes, checked against the HTTP/1
//! server the zergling runs (hyper), since the pool hands over exactly the heads
//! it calls complete:
//!
//! * `Complete`: the head lies within the input, its own bytes give the same
//!   verdict, its target is within `MAX_TARGET`, and hyper (configured as the
//!   zergling configures it) parses the same bytes into a request with the same
//!   method and target: a head the pool hands over is never one the zergling
//!   would refuse with a silent close;
//! * every other verdict: nothing to check beyond "no panic".

#![no_main]

use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;
use zergpool::classify::http::{parse_head, HeadParse, RequestHead, MAX_TARGET};

thread_local! {
    static RUNTIME: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
}

fuzz_target!(|data: &[u8]| {
    let verdict = parse_head(data);
    let HeadParse::Complete(head) = &verdict else {
        return;
    };
    assert!(head.len <= data.len(), "a head longer than the input");
    assert_eq!(parse_head(&data[..head.len]), verdict, "the verdict depends on bytes after the head");
    assert!(head.target.len() <= MAX_TARGET);
    let seen = RUNTIME.with(|rt| rt.block_on(hyper_reads(&data[..head.len])));
    match seen {
        Some((method, target)) => {
            assert_eq!(method, head.method, "hyper read another method");
            // hyper (http::Uri) drops a `#fragment`, which RFC 9112 does not allow
            // in a request target anyway; the pool's static-map ignores it as well.
            let ours = head.target.split('#').next().unwrap_or_default();
            if ours.starts_with('/') {
                assert_eq!(target, ours, "hyper read another target");
            }
        }
        None => panic!("the pool calls this head complete and hyper refuses it: {head:?}\n{:?}", show(data, head)),
    }
});

/// What hyper's HTTP/1 server makes of `bytes`: the request's method and target,
/// or `None` when it never calls the service.
async fn hyper_reads(bytes: &[u8]) -> Option<(String, String)> {
    let (mut client, server) = tokio::io::duplex(256 * 1024);
    client.write_all(bytes).await.ok()?;
    client.shutdown().await.ok()?;
    let seen: Rc<RefCell<Option<(String, String)>>> = Rc::default();
    let record = Rc::clone(&seen);
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        // Origin form compares byte for byte; other forms as hyper prints them.
        let target = match req.uri().path_and_query() {
            Some(p) if req.uri().scheme().is_none() && req.uri().authority().is_none() => p.as_str().to_owned(),
            _ => req.uri().to_string(),
        };
        *record.borrow_mut() = Some((req.method().as_str().to_owned(), target));
        async { Ok::<_, Infallible>(hyper::Response::new(http_body_util::Empty::<bytes::Bytes>::new())) }
    });
    // As in zergling::run_hyper (its timers do not matter here).
    let conn = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .serve_connection(hyper_util::rt::TokioIo::new(server), service);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
    seen.take()
}

fn show(data: &[u8], head: &RequestHead) -> String {
    String::from_utf8_lossy(&data[..head.len]).into_owned()
}
