//! Static-map offload: the pool (and later the zergling library, with the same code
//! and configuration) serves mapped files itself, so that static content keeps
//! flowing while no zergling is attached and never costs a trip to the application.
//!
//! ```text
//! request head ─► try_serve / try_serve_tcp / try_serve_vars
//!   ├─ not GET/HEAD, has a body, no mount point matches ─► Outcome::NotStatic (nothing written)
//!   ├─ path trick under a mount point ────────────────────► 403
//!   │    (under `/` itself: NotStatic, the application decides, as in uWSGI)
//!   └─ cache hit (fstat: unchanged) or spawn_blocking(resolve): canonicalise, contain, open once, fstat
//!        ├─ miss / directory without index ─► Outcome::NotStatic (nothing written)
//!        ├─ directory asked without `/`    ─► 301 to `dir/` (nginx's way)
//!        ├─ symlink out of the mapping     ─► 403
//!        └─ file ─► plan (pure: 200/206/304/416, headers) ─► send (sendfile or chunks)
//! ```
//!
//! Stages, one file each: [`options`] (uWSGI's option names → [`StaticOptions`]),
//! [`path`] (pure: decode once, segments, refusals, mount matching), [`request`]
//! (pure: the headers that matter, keep-alive), [`resolve`] (blocking: the file
//! system), [`cache`] (recent resolutions, files kept open, checked by `fstat`),
//! [`plan`] (pure: status, head, ranges), [`send`] (async I/O).
//!
//! Invariants:
//! * `Outcome::NotStatic` means not one byte was written: the caller hands the
//!   connection on with the bytes it already read;
//! * a refused path is answered `403` and never reaches `open`; nothing outside a
//!   mapped directory or a `static-safe` directory is ever read (see [`resolve`]);
//! * requests with a body (`Content-Length` > 0 or any `Transfer-Encoding`) are never
//!   static: nothing would read the body, and the next request would be misparsed;
//! * keep-alive: HTTP/1.1 stays open unless the request says `Connection: close`;
//!   HTTP/1.0 stays open only with `Connection: keep-alive`, echoed back; the uwsgi
//!   entry always closes. [`Outcome::Served`] reports it; an I/O error means close.
//!
//! Knowing differences from uWSGI (reference §3): mount points and containment use
//! `/` boundaries; encoded dot segments are refused; `gzip;q=0` means no gzip;
//! `Vary: Accept-Encoding`, `ETag`, `Accept-Ranges`, `Date` are sent; every range form
//! works (several ranges as `multipart/byteranges`, oversize suffix ranges served);
//! `If-None-Match` is honoured; `/dir` with an index is redirected to `/dir/`; a
//! file target serves its mount point only; `honour-range` and `offload-threads` are
//! accepted and have no effect.

pub mod cache;
pub mod options;
pub mod path;
pub mod plan;
pub mod request;
pub mod resolve;
pub mod send;

#[cfg(test)]
mod tests;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::classify::http::RequestHead;

pub use cache::{CacheKey, ResolutionCache};
pub use options::{Mapping, StaticOptions};
pub use path::{PathRefusal, RequestPath};
pub use plan::{Body, FileMeta, Plan};
pub use request::{accepted_encodings, Encoding, Persistence, RequestHeaders, StaticMethod};
pub use resolve::{precheck, resolve, Precheck, Refusal, Resolution, StaticFile};

/// What static-map did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not a static request: nothing was written; the application answers it.
    NotStatic,
    /// A full response was written.
    Served {
        /// Whether the connection may carry another request.
        keep_alive: bool,
        /// The response's status code.
        status: u16,
        /// Body bytes sent.
        bytes: u64,
    },
}

/// A planned response and the file its body comes from.
#[derive(Debug)]
pub struct Answer {
    /// The response.
    pub plan: Plan,
    /// The opened file, when the plan has a body.
    pub file: Option<Arc<std::fs::File>>,
}

/// Serves an HTTP request from static-map if it is one, on any stream (TLS relay,
/// tests). `head_bytes` is exactly the request head (`head.len` bytes).
pub async fn try_serve<S>(
    opts: &StaticOptions,
    stream: &mut S,
    head_bytes: &[u8],
    head: &RequestHead,
) -> io::Result<Outcome>
where
    S: AsyncWrite + Unpin,
{
    let Some(answer) = answer_http(opts, head_bytes, head).await? else {
        return Ok(Outcome::NotStatic);
    };
    send::write_response(stream, &answer.plan, answer.file.as_ref(), opts.send_timeout()).await?;
    Ok(Outcome::Served {
        keep_alive: answer.plan.keep_alive,
        status: answer.plan.status,
        bytes: answer.plan.body_len(),
    })
}

/// Serves an HTTP request from static-map if it is one, on a plain TCP connection,
/// with `sendfile(2)` for the body.
pub async fn try_serve_tcp(
    opts: &StaticOptions,
    stream: &mut TcpStream,
    head_bytes: &[u8],
    head: &RequestHead,
) -> io::Result<Outcome> {
    let Some(answer) = answer_http(opts, head_bytes, head).await? else {
        return Ok(Outcome::NotStatic);
    };
    send::write_response_tcp(stream, &answer.plan, answer.file.as_ref(), opts.send_timeout()).await?;
    Ok(Outcome::Served {
        keep_alive: answer.plan.keep_alive,
        status: answer.plan.status,
        bytes: answer.plan.body_len(),
    })
}

/// Serves a uwsgi request (nginx's `uwsgi_pass`) from static-map if it is one.
///
/// `vars` looks up the packet's variables by name: `REQUEST_METHOD`, `PATH_INFO`
/// (already decoded by nginx, so it is not decoded again), `QUERY_STRING`,
/// `CONTENT_LENGTH`, `HTTP_RANGE`, `HTTP_IF_NONE_MATCH`, … The response starts with
/// an HTTP status line, as nginx expects from a uwsgi server, and the connection is
/// always closed afterwards (`keep_alive: false`).
pub async fn try_serve_vars<'v, S, F>(opts: &StaticOptions, stream: &mut S, vars: F) -> io::Result<Outcome>
where
    S: AsyncWrite + Unpin,
    F: Fn(&str) -> Option<&'v str>,
{
    if opts.is_empty() {
        return Ok(Outcome::NotStatic);
    }
    let Some(method) = vars("REQUEST_METHOD").and_then(StaticMethod::from_token) else {
        return Ok(Outcome::NotStatic);
    };
    let headers = RequestHeaders::from_vars(&vars);
    if headers.has_body {
        return Ok(Outcome::NotStatic);
    }
    let Some(path) = RequestPath::from_decoded(vars("PATH_INFO").unwrap_or("/"), vars("QUERY_STRING")) else {
        return Ok(Outcome::NotStatic);
    };
    let Some(answer) = answer(opts, method, path, headers, Persistence::Close).await? else {
        return Ok(Outcome::NotStatic);
    };
    send::write_response(stream, &answer.plan, answer.file.as_ref(), opts.send_timeout()).await?;
    Ok(Outcome::Served { keep_alive: false, status: answer.plan.status, bytes: answer.plan.body_len() })
}

/// Decides the response to an HTTP request head without writing anything: `None`
/// when it is not static.
pub async fn answer_http(opts: &StaticOptions, head_bytes: &[u8], head: &RequestHead) -> io::Result<Option<Answer>> {
    if opts.is_empty() {
        return Ok(None);
    }
    let Some(method) = StaticMethod::from_token(&head.method) else {
        return Ok(None);
    };
    let Some(headers) = RequestHeaders::from_head(head_bytes) else {
        return Ok(None);
    };
    if headers.has_body {
        return Ok(None);
    }
    let Some(path) = RequestPath::from_target(&head.target) else {
        return Ok(None);
    };
    let persistence = Persistence::decide(head.minor_version, headers.connection.as_deref());
    answer(opts, method, path, headers, persistence).await
}

/// The common part of every entry: precheck, resolve on the blocking pool, plan.
async fn answer(
    opts: &StaticOptions,
    method: StaticMethod,
    path: RequestPath,
    headers: RequestHeaders,
    persistence: Persistence,
) -> io::Result<Option<Answer>> {
    let now = SystemTime::now();
    // Only several ranges need a multipart boundary.
    let boundary = if headers.range.as_deref().is_some_and(|r| r.contains(',')) { boundary() } else { String::new() };
    let cx = plan::Context { head_only: method == StaticMethod::Head, persistence, now, boundary: &boundary };
    match precheck(opts, &path) {
        Precheck::NoMount => return Ok(None),
        Precheck::Refused(r) => {
            tracing::debug!(refusal = %r, "static-map: refused request path");
            return Ok(Some(Answer { plan: plan::plan_forbidden(&cx), file: None }));
        }
        Precheck::Candidate => {}
    }
    let key = CacheKey { path, accepted: accepted_encodings(headers.accept_encoding.as_deref()) };
    let resolution = match opts.cache().get(&key, Instant::now()) {
        Some(cached) => cached,
        None => {
            let (opts_copy, key_copy) = (opts.clone(), key.clone());
            let method = match method {
                StaticMethod::Get => "GET",
                StaticMethod::Head => "HEAD",
            };
            let fresh =
                tokio::task::spawn_blocking(move || resolve(&opts_copy, method, &key_copy.path, &key_copy.accepted))
                    .await
                    .map_err(io::Error::other)?;
            opts.cache().put(key, fresh.clone(), Instant::now());
            fresh
        }
    };
    let answer = match resolution {
        Resolution::Fallthrough => return Ok(None),
        Resolution::Refused(_) => Answer { plan: plan::plan_forbidden(&cx), file: None },
        Resolution::Redirect { location } => Answer { plan: plan::plan_redirect(&location, &cx), file: None },
        Resolution::File(f) => {
            let rep = plan::Representation {
                meta: &f.meta,
                content_type: &f.content_type,
                encoding: f.encoding,
                vary: f.vary,
                max_age: f.max_age,
            };
            let plan = plan::plan_file(&rep, &headers, &cx);
            tracing::debug!(path = %f.path.display(), status = plan.status, "static-map hit");
            let file = (plan.body != Body::Empty).then(|| Arc::clone(&f.file));
            Answer { plan, file }
        }
    };
    Ok(Some(answer))
}

/// A multipart boundary that a file is unlikely to contain: 64 random bits (std's
/// randomly keyed hasher, mixed with the time).
fn boundary() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("zergpool-{:016x}", h.finish())
}
