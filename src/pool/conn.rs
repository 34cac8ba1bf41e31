//! The data path of one connection, top to bottom, in data-path order:
//!
//! ```text
//! handle_connection ── by listener role:
//!   http      ─► serve_http
//!   https     ─► TLS handshake (bounded) ─► first head read from TLS ─► socket pair + relay task
//!                 ─► serve_http on the plaintext end, the head as bytes already read
//!                 (ALPN h2: dispatched directly, no static-map)
//!   uwsgi     ─► serve_uwsgi
//!   redirect  ─► read the head ─► 301 to https
//!
//! serve_http:  loop { read head ─► static-map hit? serve it, next head : dispatch with the bytes read }
//! serve_uwsgi: read packet ─► static-map hit? serve it, close : dispatch with the bytes read
//! ```
//!
//! Every connection holds a slot of the pool's connection limit (`ConnSlot`) for
//! as long as the pool holds it (a TLS connection: as long as its relay runs), and
//! registers a `HeadWait` while it waits for a request head (or a TLS handshake):
//! at the limit, the longest-waiting of those is closed to make room
//! (`listener::limit`).
//!
//! A connection is always handed over as a descriptor: the client's own TCP (or
//! Unix) socket, or for HTTPS the pool's end of the relay's socket pair, so the
//! TLS session stays in the pool while the zergling sees plaintext.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tracing::{debug, warn};

use super::Ctx;
use crate::classify::{self, Classification};
use crate::dispatch::{Dispatcher, Pending, Submitted};
use crate::listener::limit::ConnSlot;
use crate::listener::{tls, Accepted, ListenerInfo, Role};
use crate::offload::{self, Outcome};
use crate::proto::{ConnId, ConnMeta, ListenerKind};
use crate::reply::{self, Canned};
use crate::stream::ConnStream;

/// Buffer size of the TLS relay from the client (requests, uploads): one TLS
/// record's worth. Both buffers are allocated and zeroed for every connection, so
/// they stay small (256 KiB each cost a visible share of a handshake).
const RELAY_BUF_UP: usize = 16 * 1024;
/// Buffer size of the TLS relay towards the client (responses): four records per
/// read, enough to keep large downloads at full speed.
const RELAY_BUF_DOWN: usize = 64 * 1024;
/// How long a TLS client gets to close its side after the server side closed.
const RELAY_LINGER: Duration = Duration::from_secs(2);

/// Entry point for every accepted connection.
pub(super) async fn handle_connection(ctx: Arc<Ctx>, listener: Arc<ListenerInfo>, conn: Accepted, slot: ConnSlot) {
    let Accepted { stream, peer, local } = conn;
    // The id is given when the connection is dispatched.
    let meta = ConnMeta::accepted(ConnId(0), listener.name.clone(), listener.role.kind(), peer, local);
    // Each role's future is boxed: this future is moved several times on its way
    // into a task, and would otherwise be as large as the largest role's (11 KB,
    // the TLS one), copied whole for every connection.
    match &listener.role {
        Role::Http => Box::pin(serve_http(ctx, stream, meta, Some(slot))).await,
        Role::Https(store) => Box::pin(serve_https(ctx, store, stream, meta, slot)).await,
        Role::Uwsgi => Box::pin(serve_uwsgi(ctx, stream, meta, slot)).await,
        Role::RedirectToHttps { https_port } => Box::pin(redirect(ctx, stream, meta, *https_port, slot)).await,
    }
}

/// HTTP on a stream the pool owns: serves static-map hits itself, as many as come
/// on a keep-alive connection, and hands the connection over at the first dynamic
/// request, with every byte read so far (`meta.prefix` holds bytes read before).
/// `slot` is `None` for a TLS relay's end (the relay holds the connection's slot).
pub(super) async fn serve_http(ctx: Arc<Ctx>, mut stream: ConnStream, mut meta: ConnMeta, slot: Option<ConnSlot>) {
    let mut buf = BytesMut::with_capacity(2048);
    buf.extend_from_slice(&meta.prefix);
    // A connection handed back (it has an id) or kept alive after a static
    // response waits for its next request up to `http-keepalive`; a new one gets
    // `http-timeout` for its first head from the start.
    let mut kept_alive = meta.conn.0 != 0;
    loop {
        let wait = ctx.limit.head_wait();
        let next = async {
            if kept_alive && buf.is_empty() {
                tokio::select! {
                    r = tokio::time::timeout(ctx.config.keepalive_timeout, stream.readable()) => match r {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) | Err(_) => return None, // idle too long, or gone: close quietly
                    },
                    _ = ctx.stopping.cancelled() => return None, // the pool stops: idle ones close
                }
            }
            let arrived = Instant::now();
            let class =
                classify::read_http_head(&mut stream, &mut buf, ctx.config.buffer_size, ctx.config.http_timeout).await;
            Some((arrived, class))
        };
        let (arrived, class) = tokio::select! {
            next = next => match next {
                Some(next) => next,
                None => return,
            },
            _ = wait.evicted() => return debug!("closed while waiting for a head, to make room (zerg-max-connections)"),
        };
        drop(wait);
        kept_alive = true;
        let head = match class {
            Classification::Dynamic(head) => head,
            Classification::Gone => return,
            // An idle connection that never started a request is closed silently, as
            // keep-alive timeouts are; a started head that stalls gets 408.
            Classification::Timeout if buf.is_empty() => return,
            other => return answer_error(&ctx, &mut stream, other, &meta.peer, &buf, arrived).await,
        };
        let statics = ctx.statics.load_full();
        if !statics.is_empty() {
            let started = Instant::now();
            // Boxed: only connections that reach static-map pay for its large future.
            let served = match &mut stream {
                ConnStream::Tcp(s) => Box::pin(offload::try_serve_tcp(&statics, s, &buf[..head.len], &head)).await,
                ConnStream::Unix(s) => Box::pin(offload::try_serve(&statics, s, &buf[..head.len], &head)).await,
            };
            match served {
                Ok(Outcome::NotStatic) => {}
                Ok(Outcome::Served { keep_alive, status, bytes }) => {
                    crate::metrics::static_response(status);
                    let request = crate::reqlog::http_request(&buf[..head.len]);
                    crate::reqlog::log(&meta.peer, &request, status, bytes, started);
                    if !keep_alive {
                        return;
                    }
                    debug!(target = %head.target, "static");
                    buf.advance(head.len);
                    continue;
                }
                Err(e) => {
                    debug!(error = %e, "static response failed");
                    return;
                }
            }
        }
        debug!(method = %head.method, target = %head.target, "dynamic request");
        meta.prefix = buf.freeze();
        return hand_over(&ctx.dispatcher, stream, meta, arrived, slot);
    }
}

/// Answers a classification error (400, 414, 431, 408) and closes, with a
/// request log line from what the head (`read`) shows.
async fn answer_error<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Ctx,
    stream: &mut S,
    class: Classification,
    peer: &zergpool_core::net::Endpoint,
    read: &[u8],
    started: Instant,
) {
    let canned = match class {
        Classification::Malformed(why) => {
            debug!(why, "malformed request head: 400");
            Canned::BadRequest
        }
        Classification::TooLarge => {
            debug!(limit = ctx.config.buffer_size, "request head too large: 431");
            Canned::HeadTooLarge
        }
        Classification::TargetTooLong => {
            debug!("request target too long: 414");
            Canned::UriTooLong
        }
        Classification::Timeout => {
            debug!("request head too slow: 408");
            Canned::RequestTimeout
        }
        Classification::Dynamic(_) | Classification::Gone => return,
    };
    let _ = reply::answer(stream, canned).await;
    crate::reqlog::log(peer, &crate::reqlog::http_request(read), canned.status(), canned.body_len(), started);
}

/// HTTPS: the handshake (bounded by `http-timeout`), then a socket pair whose one
/// end the pool relays to the TLS session, the other end treated like a plain
/// HTTP connection (static-map, classification, hand-over, hand-back).
async fn serve_https(ctx: Arc<Ctx>, store: &tls::TlsStore, stream: ConnStream, mut meta: ConnMeta, slot: ConnSlot) {
    let ConnStream::Tcp(tcp) = stream else { return };
    // The handshake and the first head are one wait for a head.
    let wait = ctx.limit.head_wait();
    let accept = store.acceptor().accept(tcp);
    let handshake = tokio::select! {
        r = tokio::time::timeout(ctx.config.http_timeout, accept) => r,
        _ = wait.evicted() => return debug!("closed during the TLS handshake, to make room (zerg-max-connections)"),
    };
    let tls = match handshake {
        Ok(Ok(tls)) => {
            crate::metrics::metrics().tls_handshakes.inc();
            tls
        }
        Ok(Err(e)) => {
            crate::metrics::metrics().tls_failures.inc();
            debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            crate::metrics::metrics().tls_failures.inc();
            debug!("TLS handshake timed out");
            return;
        }
    };
    let mut tls = tls;
    let facts = tls::handshake_facts(tls.get_ref().1);
    meta.scheme = crate::proto::Scheme::Https;
    meta.sni = facts.sni;
    meta.alpn = facts.alpn;
    meta.tls_version = facts.tls_version;
    if meta.alpn != Some(crate::proto::AlpnProtocol::H2) {
        // The first request head is read from the TLS session itself: it then
        // goes to serve_http as bytes already read, instead of through the relay
        // and the socket pair (two copies and a wake-up less per connection).
        let mut buf = BytesMut::with_capacity(2048);
        let started = Instant::now();
        let class = tokio::select! {
            c = classify::read_http_head(&mut tls, &mut buf, ctx.config.buffer_size, ctx.config.http_timeout) => c,
            _ = wait.evicted() => return debug!("closed while waiting for a head, to make room (zerg-max-connections)"),
        };
        match class {
            Classification::Dynamic(_) => meta.prefix = buf.freeze(),
            Classification::Gone => return,
            Classification::Timeout if buf.is_empty() => return,
            other => {
                answer_error(&ctx, &mut tls, other, &meta.peer, &buf, started).await;
                let _ = tls.shutdown().await;
                return;
            }
        }
    }
    drop(wait);
    let (ours, relay_end) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "cannot create the TLS relay's socket pair");
            return;
        }
    };
    // The relay holds the connection's slot: it holds its descriptors.
    ctx.relays.spawn(async move {
        relay(tls, relay_end, RELAY_LINGER).await;
        drop(slot);
    });
    if meta.alpn == Some(crate::proto::AlpnProtocol::H2) {
        // HTTP/2 is multiplexed: the zergling gets the whole connection.
        return hand_over(&ctx.dispatcher, ConnStream::Unix(ours), meta, Instant::now(), None);
    }
    serve_http(ctx, ConnStream::Unix(ours), meta, None).await;
}

/// Copies plaintext both ways between a TLS session and the relay's socket pair.
/// Runs as long as the client's connection lives, whichever zergling (or the pool
/// itself) holds the other end. When the plaintext side closes (the zergling
/// closed the connection), close_notify is sent and the client gets at most
/// `linger` to close its side: a client that never closes cannot hold the pool's
/// descriptors. When the client closes first, the zergling sees end of file and
/// may still finish its answer.
async fn relay<T: AsyncRead + AsyncWrite + Unpin>(tls: T, plain: UnixStream, linger: Duration) {
    let (tls_r, mut tls_w) = tokio::io::split(tls);
    let (plain_r, mut plain_w) = plain.into_split();
    let up = async {
        let mut r = tokio::io::BufReader::with_capacity(RELAY_BUF_UP, tls_r);
        let n = tokio::io::copy_buf(&mut r, &mut plain_w).await;
        let _ = plain_w.shutdown().await;
        n
    };
    let down = async {
        let mut r = tokio::io::BufReader::with_capacity(RELAY_BUF_DOWN, plain_r);
        let n = tokio::io::copy_buf(&mut r, &mut tls_w).await;
        let _ = tls_w.shutdown().await; // close_notify, then FIN
        n
    };
    tokio::pin!(up, down);
    tokio::select! {
        n = &mut down => {
            debug!(down = ?n.ok(), "TLS relay: server side closed");
            let _ = tokio::time::timeout(linger, up).await;
        }
        n = &mut up => {
            debug!(up = ?n.ok(), "TLS relay: client side closed");
            let _ = down.await;
        }
    }
}

/// uwsgi (from nginx's `uwsgi_pass`): read the packet head, serve static-map hits
/// (by `PATH_INFO`), hand everything else over with the bytes read.
async fn serve_uwsgi(ctx: Arc<Ctx>, mut stream: ConnStream, mut meta: ConnMeta, slot: ConnSlot) {
    let arrived = Instant::now();
    let mut buf = BytesMut::with_capacity(4096);
    let limit = ctx.config.uwsgi_buffer_size;
    let wait = ctx.limit.head_wait();
    let read = tokio::select! {
        r = classify::read_uwsgi_packet(&mut stream, &mut buf, limit, ctx.config.http_timeout) => r,
        _ = wait.evicted() => return debug!("closed while waiting for a packet, to make room (zerg-max-connections)"),
    };
    drop(wait);
    let request = match read {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            crate::warn_limited!(listener = %meta.listener, peer = %meta.peer, error = %e, "bad uwsgi request; closing");
            return;
        }
    };
    let statics = ctx.statics.load_full();
    if !statics.is_empty() {
        match offload::try_serve_vars(&statics, &mut stream, |k| request.var(k)).await {
            Ok(Outcome::NotStatic) => {}
            Ok(Outcome::Served { status, bytes, .. }) => {
                crate::reqlog::log(
                    &crate::reqlog::uwsgi_client(&request, &meta.peer),
                    &crate::reqlog::uwsgi_request(&request),
                    status,
                    bytes,
                    arrived,
                );
                return crate::metrics::static_response(status);
            }
            Err(e) => {
                debug!(error = %e, "static response failed");
                return;
            }
        }
    }
    debug!(
        method = request.method().unwrap_or("-"),
        path = request.path_info().unwrap_or("-"),
        "dynamic uwsgi request"
    );
    meta.prefix = buf.freeze();
    hand_over(&ctx.dispatcher, stream, meta, arrived, Some(slot));
}

/// `http-to-https`: every request gets `301` to the https URL, then the
/// connection closes.
async fn redirect(ctx: Arc<Ctx>, mut stream: ConnStream, meta: ConnMeta, https_port: u16, _slot: ConnSlot) {
    let started = Instant::now();
    let mut buf = BytesMut::with_capacity(1024);
    let wait = ctx.limit.head_wait();
    let class = tokio::select! {
        c = classify::read_http_head(&mut stream, &mut buf, ctx.config.buffer_size, ctx.config.http_timeout) => c,
        _ = wait.evicted() => return debug!("closed while waiting for a head, to make room (zerg-max-connections)"),
    };
    drop(wait);
    let head = match class {
        Classification::Dynamic(head) => head,
        Classification::Gone => return,
        Classification::Timeout if buf.is_empty() => return,
        other => return answer_error(&ctx, &mut stream, other, &meta.peer, &buf, started).await,
    };
    let fallback = meta.local.host();
    let location = reply::https_location(head.host.as_deref(), &head.target, https_port, &fallback);
    debug!(%location, "redirect to https");
    let response = reply::redirect_response(&location);
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
    let body = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |i| response.len() - i - 4);
    crate::reqlog::log(&meta.peer, &crate::reqlog::http_request(&buf[..head.len]), 301, body as u64, started);
    // Let the client read the answer before the socket goes away.
    let _ =
        tokio::time::timeout(Duration::from_millis(500), tokio::io::copy(&mut stream, &mut tokio::io::sink())).await;
}

/// Gives the connection to dispatch: a fresh id, the descriptor out of the runtime.
/// The slot goes with it until a zergling has acknowledged it.
fn hand_over(
    dispatcher: &Dispatcher,
    stream: ConnStream,
    mut meta: ConnMeta,
    arrived: Instant,
    slot: Option<ConnSlot>,
) {
    meta.conn = dispatcher.next_conn_id();
    let fd: OwnedFd = match stream.into_fd() {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, "cannot detach the connection from the runtime");
            return;
        }
    };
    let mut pending = Pending::new(fd, meta, arrived);
    pending.slot = slot;
    dispatch_or_answer(dispatcher, pending);
}

/// Submits a connection; when the queue is full, answers 503 in a task of its own.
fn dispatch_or_answer(dispatcher: &Dispatcher, p: Pending) {
    let conn = p.meta.conn;
    match dispatcher.submit(p) {
        Submitted::Dispatched(id) => debug!(%conn, zergling = %id, "dispatched"),
        Submitted::Queued => {
            crate::metrics::metrics().queued.inc();
            debug!(%conn, "queued: no zergling can take it now")
        }
        Submitted::Rejected(p) => {
            crate::warn_limited!(%conn, "zergling queue full (zerg-queue): 503");
            dispatcher.answer(p, Canned::Unavailable);
        }
    }
}

/// A connection given back by a draining zergling: classified again like a new
/// one (HTTP and HTTPS relay ends), or dispatched again at once (uwsgi, HTTP/2).
pub(super) async fn handed_back(ctx: Arc<Ctx>, fd: OwnedFd, meta: ConnMeta) {
    let stream = match ConnStream::from_fd(fd) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot take back a handed-back connection");
            return;
        }
    };
    // Counted, never refused (a TLS relay's end: its relay still holds the slot).
    let slot = meta.tls_version.is_none().then(|| ctx.limit.force_slot());
    let http1 = meta.kind != ListenerKind::Uwsgi && meta.alpn != Some(crate::proto::AlpnProtocol::H2);
    if http1 {
        serve_http(ctx, stream, meta, slot).await;
    } else {
        hand_over(&ctx.dispatcher, stream, meta, Instant::now(), slot);
    }
}
