//! Static-map in the zergling library: the same code and configuration as the
//! pool (`zergpool_core::offload`), so a static request is answered the same whoever holds
//! the connection. The pool sends its static options in WELCOME; a request for a
//! mapped file on a connection the zergling owns never reaches the application.
//!
//! The offload module plans a response as raw HTTP/1 bytes; here the plan is
//! turned into a hyper response (status, headers, and a body that reads the file
//! off the async runtime in large chunks), so that it works for HTTP/1.1 and
//! HTTP/2 alike.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode};
use tokio::task::JoinHandle;

use zergpool_core::classify::{parse_head, HeadParse};
use zergpool_core::offload::{self, Plan, StaticOptions};

/// Largest chunk read from a file at once.
const CHUNK: u64 = 256 * 1024;

/// Answers `req` from static-map if it is a static request.
pub(super) async fn answer(opts: &StaticOptions, req: &Request<Incoming>) -> Option<Response<StaticBody>> {
    if opts.is_empty() || !matches!(*req.method(), hyper::Method::GET | hyper::Method::HEAD) {
        return None;
    }
    // The offload module reads a request head: write the one this request had.
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut head = format!("{} {target} HTTP/1.1\r\n", req.method()).into_bytes();
    if !req.headers().contains_key(hyper::header::HOST) {
        let host = req.uri().authority().map_or("localhost", |a| a.as_str());
        head.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
    }
    for (name, value) in req.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let HeadParse::Complete(parsed) = parse_head(&head) else { return None };
    let answer = offload::answer_http(opts, &head, &parsed).await.ok()??;
    into_response(&answer.plan, answer.file)
}

/// Turns a planned response into a hyper response.
fn into_response(plan: &Plan, file: Option<Arc<std::fs::File>>) -> Option<Response<StaticBody>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = parsed.parse(&plan.head).ok()? else { return None };
    let mut resp = Response::builder().status(StatusCode::from_u16(parsed.code?).ok()?);
    for h in parsed.headers.iter() {
        // Connection management belongs to hyper (and does not exist in HTTP/2).
        if h.name.eq_ignore_ascii_case("connection") || h.name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        resp = resp.header(h.name, h.value);
    }
    let mut segments = VecDeque::new();
    if plan.head.len() > head_len {
        segments.push_back(Segment::Bytes(Bytes::copy_from_slice(&plan.head[head_len..])));
    }
    match &plan.body {
        offload::Body::Empty => {}
        offload::Body::File { start, len } => segments.push_back(Segment::File { start: *start, len: *len }),
        offload::Body::Multipart { parts, trailer } => {
            for p in parts {
                segments.push_back(Segment::Bytes(Bytes::copy_from_slice(&p.header)));
                segments.push_back(Segment::File { start: p.start, len: p.len });
            }
            segments.push_back(Segment::Bytes(Bytes::copy_from_slice(trailer)));
        }
    }
    resp.body(StaticBody { segments, file, pending: None }).ok()
}

enum Segment {
    Bytes(Bytes),
    File { start: u64, len: u64 },
}

/// A static response body: fixed bytes and file ranges, the file read on the
/// blocking pool one chunk at a time.
pub(super) struct StaticBody {
    segments: VecDeque<Segment>,
    file: Option<Arc<std::fs::File>>,
    pending: Option<JoinHandle<io::Result<Bytes>>>,
}

impl StaticBody {
    /// A body of fixed bytes (an error page).
    pub(super) fn text(bytes: Bytes) -> Self {
        StaticBody { segments: VecDeque::from([Segment::Bytes(bytes)]), file: None, pending: None }
    }

    /// `len` bytes of `file` from `start`, read one chunk at a time.
    pub(super) fn file_range(file: Arc<std::fs::File>, start: u64, len: u64) -> Self {
        StaticBody { segments: VecDeque::from([Segment::File { start, len }]), file: Some(file), pending: None }
    }
}

impl Body for StaticBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        loop {
            if let Some(h) = self.pending.as_mut() {
                let r = std::task::ready!(Pin::new(h).poll(cx));
                self.pending = None;
                return Poll::Ready(Some(match r {
                    Ok(Ok(b)) => Ok(Frame::data(b)),
                    Ok(Err(e)) => Err(e),
                    Err(join) => Err(io::Error::other(join)),
                }));
            }
            let file = self.file.clone();
            match self.segments.front_mut() {
                None => return Poll::Ready(None),
                Some(Segment::Bytes(b)) => {
                    let b = std::mem::take(b);
                    self.segments.pop_front();
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Some(Segment::File { len: 0, .. }) => {
                    self.segments.pop_front();
                }
                Some(Segment::File { start, len }) => {
                    let Some(file) = file else {
                        return Poll::Ready(Some(Err(io::Error::other("static body without a file"))));
                    };
                    let n = (*len).min(CHUNK);
                    let offset = *start;
                    *start += n;
                    *len -= n;
                    self.pending = Some(tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; n as usize];
                        file.read_exact_at(&mut buf, offset)?;
                        Ok(Bytes::from(buf))
                    }));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none()
            && self.segments.iter().all(|s| match s {
                Segment::Bytes(b) => b.is_empty(),
                Segment::File { len, .. } => *len == 0,
            })
    }

    fn size_hint(&self) -> SizeHint {
        if self.pending.is_some() {
            return SizeHint::default();
        }
        let total: u64 = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Bytes(b) => b.len() as u64,
                Segment::File { len, .. } => *len,
            })
            .sum();
        SizeHint::with_exact(total)
    }
}

use std::future::Future;
