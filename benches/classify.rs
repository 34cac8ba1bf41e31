//! Criterion bench of request-head classification (`classify::parse_head`).
//!
//! Decision it informs: whether the pool can afford to parse every first head with
//! httparse on the accept path (it must cost far less than the hand-off itself,
//! a few microseconds), and whether a 100-header limit is cheap enough.
#![allow(missing_docs, reason = "criterion macros generate undocumented functions")]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use zergpool::classify::parse_head;

const CURL: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
const BROWSER: &[u8] = b"GET /api/histories?view=summary&keys=size HTTP/1.1\r\nHost: galaxy.example.org\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n\
Accept: application/json, text/plain, */*\r\nAccept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\nReferer: https://galaxy.example.org/\r\n\
Cookie: galaxysession=0123456789abcdef0123456789abcdef0123456789abcdef\r\n\
Connection: keep-alive\r\nSec-Fetch-Dest: empty\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Site: same-origin\r\n\r\n";

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_head");
    for (name, input) in [("curl", CURL), ("browser", BROWSER)] {
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(name, |b| b.iter(|| parse_head(black_box(input))));
    }
    g.bench_function("partial_half", |b| b.iter(|| parse_head(black_box(&BROWSER[..BROWSER.len() / 2]))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
