//! Criterion bench of the zergling protocol codec (`proto::encode` / `decode`).
//!
//! Decision it informs: whether a tag-length-value frame (extensible, easy for
//! other languages) is cheap enough on the hand-off path, compared with the
//! syscalls around it (`sendmsg` with `SCM_RIGHTS` costs a few microseconds).
#![allow(missing_docs, reason = "criterion macros generate undocumented functions")]

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use zergpool::proto::{decode, encode, ConnId, ConnMeta, ListenerKind, Message};

fn conn() -> Message {
    Message::Conn(ConnMeta {
        conn: ConnId(123_456),
        listener: "http0".into(),
        kind: ListenerKind::Http,
        scheme: zergpool::proto::Scheme::Http,
        peer: zergpool::proto::Endpoint::parse("127.0.0.1:54321"),
        local: zergpool::proto::Endpoint::parse("127.0.0.1:8080"),
        sni: None,
        alpn: None,
        tls_version: None,
        prefix: Bytes::from_static(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n"),
    })
}

fn bench(c: &mut Criterion) {
    let msg = conn();
    let frame = encode(&msg);
    c.bench_function("encode_conn", |b| b.iter(|| encode(black_box(&msg))));
    c.bench_function("decode_conn", |b| b.iter(|| decode(black_box(&frame))));
    let ack = encode(&Message::Ack { conn: ConnId(7) });
    c.bench_function("decode_ack", |b| b.iter(|| decode(black_box(&ack))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
