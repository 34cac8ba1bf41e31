//! The zergling library: turn any hyper service into a zergling of a pool.
//!
//! ```no_run
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper::{body::Incoming, Request, Response};
//! use zergling::{serve_blocking, ZerglingConfig};
//!
//! async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     Ok(Response::new(Full::new(Bytes::from_static(b"Hello, world!"))))
//! }
//!
//! fn main() -> Result<(), zergling::ZerglingError> {
//!     // Attaches to $ZERGPOOL_SOCKET, serves until SIGTERM, re-attaches if the pool restarts.
//!     serve_blocking(ZerglingConfig::from_env()?, hyper::service::service_fn(hello))
//! }
//! ```
//!
//! What happens underneath (`docs/PROTOCOL.md` has the wire format):
//!
//! * attach: connect to the pool's socket, send HELLO (version, pid, capacity),
//!   receive WELCOME with an id (or REFUSE with a reason, which is fatal);
//! * for each CONN: adopt the descriptor, send ACK at once (the pool then closes
//!   its copy), serve HTTP/1.1 with keep-alive on it, the bytes the pool already
//!   read replayed first; send CLOSED when the connection ends;
//! * for each LISTEN (`zerg-direct-accept` in the pool): accept on that uwsgi
//!   listener directly and serve its connections (static-map included) with no
//!   pool in between, while the zergling has room (capacity); stop and close the
//!   copy on drain or when the channel closes;
//! * if the pool goes away, connections already owned keep being served while the
//!   zergling re-attaches with back-off;
//! * on SIGTERM, SIGINT or SIGHUP (or DRAIN from the pool): send DRAINING, wait for
//!   the pool's DRAIN (nothing is dispatched after it), let requests in flight
//!   finish (closing idle keep-alive connections), up to the mercy; then
//!   [`GoingAway`] fires: long-lived exchanges (WebSockets, endless streams) end,
//!   with [`GOING_AWAY_GRACE`] to do it; then return.
//!
//! Each request carries a [`ConnInfo`] in its extensions: the listener, the
//! client's address, the scheme, and the zergling's id; and a [`GoingAway`];
//! and, when [`ZerglingConfig::watch_clients`] is set, a [`ClientWatch`] that
//! tells when the client has gone while the request is in flight.
//!
//! **Upgrades** (WebSockets) use hyper's API: answer `101 Switching Protocols`
//! and take the stream with `hyper::upgrade::on(&mut request)`. An upgraded
//! connection stays the zergling's until the application drops the stream: it
//! counts against the capacity, is never handed back, and a drain waits for it
//! up to the mercy, when [`GoingAway`] tells the application to close it (a
//! WebSocket with close code 1001). HTTP/1.1 only (no RFC 8441 over HTTP/2).
//! A response body of unknown length (chunked: server-sent events, endless
//! streams) is ended cleanly by the library itself when [`GoingAway`] fires.
//!
//! Files: this one has the public API and the worker's life (`serve`); `session`
//! the attach session and each received connection; `http1` HTTP/1.1 with its
//! deadlines, idle phase, drain and hand-back; `h2` HTTP/2; `uwsgi` uwsgi
//! connections; `statics` static-map answers; `idle` the owned and idle
//! connections; `direct` accepting on the pool's listeners (`zerg-direct-accept`);
//! `stats` the request counters reported to the pool (STATS); `watch` the
//! client watch.

mod direct;
mod h2;
mod http1;
mod idle;
mod session;
mod statics;
mod stats;
pub mod uwsgi;
mod watch;

use h2::*;
pub use http1::serve_http1;
use http1::*;
use idle::*;
use session::*;
pub use watch::ClientWatch;

use std::error::Error as StdError;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use zergpool_core::net::Endpoint;
pub use zergpool_core::proto::{AlpnProtocol, ConnId, ListenerKind, Scheme, ZerglingId};
pub use zergpool_core::sched::batch_scheduling;
pub use zergpool_core::stream::{ConnStream, Prefixed};

use zergpool_core::offload::StaticOptions;
use zergpool_core::proto::{self, Channel, ChannelError, ConnMeta, Message, RecvBuf};

/// How long the pool has to answer HELLO, and to confirm DRAINING.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest re-attach delay.
const REATTACH_MIN: Duration = Duration::from_millis(100);
const REATTACH_MAX: Duration = Duration::from_secs(5);

/// Why a zergling stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZerglingError {
    /// No socket path was given.
    #[error(
        "no pool socket: set ZERGPOOL_SOCKET (the pool sets it for zerglings it spawns) or pass the path explicitly"
    )]
    NoSocket,
    /// The pool refused the attach.
    #[error("the pool refused to attach this zergling: {0}")]
    Refused(String),
    /// The runtime or the signal handlers could not be set up.
    #[error("cannot set up the zergling runtime")]
    Runtime(#[source] std::io::Error),
}

/// Whether every request slot of the application is taken (all its threads
/// busy, say), as the application sees it; see [`ZerglingConfig::saturation`].
///
/// The pool is told only of saturation that lasts: a zergling busy with fast
/// requests is saturated for microseconds at a time, and telling the pool each
/// time would cost more than it saves. Saturation is reported once it has lasted
/// [`SATURATION_GRACE`] without a break, and its end at once.
#[derive(Debug)]
pub struct Saturation {
    state: tokio::sync::watch::Sender<bool>,
    /// Counts the ends of saturation, so that a grace period can tell whether it
    /// saw one uninterrupted stretch.
    ends: std::sync::atomic::AtomicU64,
}

/// How long saturation must last before the pool is told.
pub const SATURATION_GRACE: Duration = Duration::from_millis(20);

impl Saturation {
    /// Not saturated.
    pub fn new() -> Arc<Saturation> {
        Arc::new(Saturation { state: tokio::sync::watch::channel(false).0, ends: AtomicU64::new(0) })
    }

    /// Records the state.
    pub fn set(&self, saturated: bool) {
        let changed = self.state.send_if_modified(|v| std::mem::replace(v, saturated) != saturated);
        if changed && !saturated {
            self.ends.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The state last set.
    pub fn get(&self) -> bool {
        *self.state.borrow()
    }

    /// What the pool should be told, as it changes (see the type's docs): a task
    /// that lives as long as the returned receiver.
    fn reports(self: &Arc<Self>) -> tokio::sync::watch::Receiver<bool> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let me = self.clone();
        tokio::spawn(async move {
            let mut state = me.state.subscribe();
            loop {
                // Not reported saturated: wait for a stretch that lasts.
                if state.wait_for(|s| *s).await.is_err() {
                    return;
                }
                let ends = me.ends.load(Ordering::SeqCst);
                tokio::select! {
                    _ = tokio::time::sleep(SATURATION_GRACE) => {}
                    _ = tx.closed() => return,
                }
                if !(*state.borrow() && me.ends.load(Ordering::SeqCst) == ends) {
                    continue;
                }
                if tx.send(true).is_err() {
                    return;
                }
                if state.wait_for(|s| !*s).await.is_err() || tx.send(false).is_err() {
                    return;
                }
            }
        });
        rx
    }
}

/// How a zergling attaches and behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ZerglingConfig {
    /// The pool's attach socket.
    pub socket: PathBuf,
    /// The most connections served at once (the pool never sends more).
    pub capacity: u32,
    /// Free-form `key=value` labels sent in HELLO.
    pub tags: Vec<String>,
    /// How long requests in flight get to finish when draining
    /// (`worker-reload-mercy` in uWSGI's words).
    pub mercy: Duration,
    /// Install SIGTERM/SIGINT/SIGHUP handlers that start a drain.
    pub handle_signals: bool,
    /// Where the application says whether all its request slots are taken; the
    /// zergling reports each change to the pool (LOAD), which then prefers other
    /// zerglings. `None`: never saturated (an async service takes any number).
    pub saturation: Option<Arc<Saturation>>,
    /// Threads of the runtime [`serve_blocking`] builds (`None`: one per CPU).
    /// An application that does its work on threads of its own (the Python
    /// binding) needs few: every extra thread is a context switch away.
    pub io_threads: Option<usize>,
    /// Put a [`ClientWatch`] in every HTTP/1 and uwsgi request, which tells
    /// when the client has gone while the request is in flight. It costs a
    /// duplicate descriptor per connection, so it is off by default; the
    /// Python binding's ASGI bridge turns it on (`http.disconnect`).
    pub watch_clients: bool,
}

impl ZerglingConfig {
    /// A configuration attaching to `socket`, with capacity 1024 and mercy 60 s.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ZerglingConfig {
            socket: socket.into(),
            capacity: 1024,
            tags: Vec::new(),
            mercy: Duration::from_secs(60),
            handle_signals: true,
            io_threads: None,
            saturation: None,
            watch_clients: false,
        }
    }

    /// A configuration attaching to `$ZERGPOOL_SOCKET`.
    pub fn from_env() -> Result<Self, ZerglingError> {
        match std::env::var_os("ZERGPOOL_SOCKET") {
            Some(p) if !p.is_empty() => Ok(Self::new(PathBuf::from(p))),
            _ => Err(ZerglingError::NoSocket),
        }
    }
}

/// What a request knows about the connection it came on (in its extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// This zergling's id in the pool (0 when not served through a pool).
    pub zergling: ZerglingId,
    /// The connection's id in the pool.
    pub conn: ConnId,
    /// The pool listener's name (shared by the connections of one listener).
    pub listener: Arc<str>,
    /// What the listener speaks.
    pub kind: ListenerKind,
    /// `http` or `https` as the client sees it.
    pub scheme: Scheme,
    /// The client's address.
    pub peer: Endpoint,
    /// The address the client connected to.
    pub local: Endpoint,
    /// TLS server name, when the pool terminated TLS.
    pub sni: Option<String>,
    /// Negotiated ALPN protocol.
    pub alpn: Option<AlpnProtocol>,
    /// Negotiated TLS version.
    pub tls_version: Option<String>,
}

impl ConnInfo {
    fn new(zergling: ZerglingId, m: &ConnMeta, strings: &Interner) -> Self {
        ConnInfo {
            zergling,
            conn: m.conn,
            listener: strings.get(&m.listener),
            kind: m.kind,
            scheme: m.scheme,
            peer: strings.endpoint(&m.peer),
            local: strings.endpoint(&m.local),
            sni: m.sni.clone(),
            alpn: m.alpn,
            tls_version: m.tls_version.clone(),
        }
    }

    /// The connection described for a HANDBACK (the pool serves it from its own
    /// record; these fields only make the frame complete), with the bytes read.
    fn meta(&self, prefix: Bytes) -> ConnMeta {
        ConnMeta {
            conn: self.conn,
            listener: self.listener.to_string(),
            kind: self.kind,
            scheme: self.scheme,
            peer: self.peer.clone(),
            local: self.local.clone(),
            sni: self.sni.clone(),
            alpn: self.alpn,
            tls_version: self.tls_version.clone(),
            prefix,
        }
    }
}

/// The strings many connections share (listener names, schemes, local
/// addresses), kept once: each idle connection then holds references, not copies.
#[derive(Debug, Default)]
pub(crate) struct Interner(std::sync::Mutex<Vec<Arc<str>>>);

impl Interner {
    /// At most this many strings are kept (a wildcard listener has one local
    /// address per interface, not per connection).
    const MAX: usize = 64;

    pub(crate) fn get(&self, s: &str) -> Arc<str> {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = kept.iter().find(|k| ***k == *s) {
            return Arc::clone(found);
        }
        let new: Arc<str> = Arc::from(s);
        if kept.len() < Self::MAX {
            kept.push(Arc::clone(&new));
        }
        new
    }

    /// The endpoint with its name (a Unix path) shared; an IP address is a copy.
    pub(crate) fn endpoint(&self, e: &Endpoint) -> Endpoint {
        match e {
            Endpoint::Named(n) => Endpoint::Named(self.get(n)),
            other => other.clone(),
        }
    }
}

/// Fires when a draining zergling's mercy is over (`worker-reload-mercy`): an
/// application ends its long-lived exchanges now, a WebSocket with close code
/// 1001 (going away), so that its clients reconnect to another zergling. In every
/// request's extensions. Streamed response bodies of unknown length are ended by
/// the library at that moment without the application's help.
#[derive(Debug, Clone)]
pub struct GoingAway(Arc<CancellationToken>);

impl GoingAway {
    /// Waits until the zergling is going away.
    pub async fn wait(&self) {
        self.0.cancelled().await
    }

    /// Whether the zergling is going away now.
    pub fn is_now(&self) -> bool {
        self.0.is_cancelled()
    }

    /// A token that fires with it (for `select!` loops that hold one).
    pub fn token(&self) -> CancellationToken {
        (*self.0).clone()
    }

    /// Shared by the requests of a connection: a request's copy is an `Arc`'s,
    /// not a token's (whose clone takes the token tree's lock).
    pub(crate) fn new(token: CancellationToken) -> Self {
        GoingAway(Arc::new(token))
    }
}

/// A response body sent straight from a file. Put in a response's extensions,
/// it replaces the response's body with `len` bytes of `file` from `start`
/// (and gives the response a `Content-Length` if it has none). On an HTTP/1
/// connection the bytes go with `sendfile(2)`: from the page cache to the
/// socket, none through the process; on HTTP/2 and uwsgi they are read in
/// chunks. A file that turns out shorter than `len` aborts the connection (the
/// client never takes a cut response for a whole one).
#[derive(Debug, Clone)]
pub struct SendFile {
    /// The file (opened for reading).
    pub file: Arc<std::fs::File>,
    /// Where the body starts in it.
    pub start: u64,
    /// How many bytes.
    pub len: u64,
}

impl SendFile {
    /// Moves the [`SendFile`] of `resp`, if any, into its head: the
    /// `Content-Length` it implies, and the body to send instead of `resp`'s.
    pub(crate) fn take<B>(resp: &mut Response<B>) -> Option<SendFile> {
        let sf = resp.extensions_mut().remove::<SendFile>()?;
        let bodiless = resp.status().is_informational()
            || resp.status() == hyper::StatusCode::NO_CONTENT
            || resp.status() == hyper::StatusCode::NOT_MODIFIED;
        if !bodiless && !resp.headers().contains_key(hyper::header::CONTENT_LENGTH) {
            resp.headers_mut().insert(hyper::header::CONTENT_LENGTH, hyper::header::HeaderValue::from(sf.len));
        }
        Some(sf)
    }
}

/// How long long-lived exchanges have to end once [`GoingAway`] fired (a close
/// frame each way), before the zergling returns anyway.
pub const GOING_AWAY_GRACE: Duration = Duration::from_secs(1);

/// Time kept between the end of [`GOING_AWAY_GRACE`] and the pool's own
/// deadline (`worker-reload-mercy`), for the process to exit before the pool
/// would kill it.
const GOING_AWAY_MARGIN: Duration = Duration::from_millis(500);

/// The bounds a service must meet to be served.
pub trait ZerglingService<B>:
    Service<Request<Incoming>, Response = Response<B>, Error = Self::Err, Future = Self::Fut>
    + Clone
    + Send
    + Sync
    + 'static
{
    /// The service's error.
    type Err: Into<Box<dyn StdError + Send + Sync>>;
    /// The service's future.
    type Fut: std::future::Future<Output = Result<Response<B>, Self::Err>> + Send + 'static;
}

impl<S, B> ZerglingService<B> for S
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    S::Future: Send + 'static,
{
    type Err = S::Error;
    type Fut = S::Future;
}

/// Shared state of one zergling process.
struct Worker<S> {
    config: ZerglingConfig,
    service: S,
    /// Cancelled when a drain is asked for (signal, or DRAIN from the pool).
    drain_requested: CancellationToken,
    /// Cancelled when connections must act on the drain (after the pool's DRAIN,
    /// or at once when no pool can confirm it).
    drain: CancellationToken,
    /// What the pool's DRAIN said: give idle connections back, or close them.
    handback: AtomicBool,
    /// Every connection being served.
    conns: TaskTracker,
    /// Cancelled when the mercy is over (see [`GoingAway`]).
    going_away: CancellationToken,
    /// The pool's static-map options, as its last WELCOME said.
    statics: ArcSwap<StaticOptions>,
    /// Connections received from the pool, and how they ended (logged at the end).
    tally: ConnTally,
    /// The per-connection deadlines, as the pool's last WELCOME said.
    timeouts: ArcSwap<proto::Timeouts>,
    /// Idle connections, for giving the longest-idle back at capacity.
    idle: Arc<IdleConns>,
    /// Strings connections share (see [`ConnInfo`]).
    strings: Interner,
    /// The largest request head, as the pool's last WELCOME said (0: hyper's
    /// default).
    head_limit: AtomicUsize,
    /// The channel of the last attach (kept after its session ended: the
    /// request log lines of a drain's last requests travel on it).
    log_chan: arc_swap::ArcSwapOption<Channel>,
}

/// How many connections a zergling received and how each ended.
#[derive(Default)]
struct ConnTally {
    received: AtomicUsize,
    /// Accepted directly on a pool listener (LISTEN).
    accepted: AtomicUsize,
    finished: AtomicUsize,
    handed_back: AtomicUsize,
}

/// Runs a zergling on the current tokio runtime until it has drained.
pub async fn serve<S, B>(config: ZerglingConfig, service: S) -> Result<(), ZerglingError>
where
    S: ZerglingService<B>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let idle = Arc::new(IdleConns::new(config.capacity));
    let worker = Arc::new(Worker {
        config,
        service,
        drain_requested: CancellationToken::new(),
        drain: CancellationToken::new(),
        handback: AtomicBool::new(false),
        conns: TaskTracker::new(),
        going_away: CancellationToken::new(),
        statics: ArcSwap::from_pointee(StaticOptions::default()),
        tally: ConnTally::default(),
        timeouts: ArcSwap::from_pointee(proto::Timeouts::default()),
        strings: Interner::default(),
        head_limit: AtomicUsize::new(0),
        log_chan: arc_swap::ArcSwapOption::empty(),
        idle,
    });
    let stop_logs = CancellationToken::new();
    let logs = tokio::spawn(session::flush_logs(worker.clone(), stop_logs.clone()));
    if worker.config.handle_signals {
        install_signals(worker.drain_requested.clone()).map_err(ZerglingError::Runtime)?;
    }
    follow_parent_if_spawned(&worker.drain_requested);
    let mut delay = REATTACH_MIN;
    let mut failures: u64 = 0;
    while !worker.drain_requested.is_cancelled() {
        match attach(&worker.config).await {
            Ok((chan, id, statics, timeouts, buffer_size)) => {
                delay = REATTACH_MIN;
                failures = 0;
                worker.statics.store(Arc::new(StaticOptions::from_settings(&statics)));
                worker.timeouts.store(Arc::new(timeouts));
                worker.head_limit.store(buffer_size as usize, Ordering::Relaxed);
                info!(zergling = %id, socket = %worker.config.socket.display(), "attached to the pool");
                let chan = Arc::new(chan);
                worker.log_chan.store(Some(chan.clone()));
                session(chan, id, &worker).await;
                if !worker.drain_requested.is_cancelled() {
                    warn!("the pool went away; serving owned connections and re-attaching");
                }
            }
            Err(AttachFailure::Refused(reason)) => return Err(ZerglingError::Refused(reason)),
            Err(AttachFailure::Other(e)) => {
                // Said loudly once (a wrong path or permission shows at once), then rarely.
                if failures % 20 == 0 {
                    warn!(socket = %worker.config.socket.display(), error = %e, retry_ms = delay.as_millis() as u64, "cannot attach to the pool yet; retrying");
                }
                failures += 1;
                tokio::select! {
                    _ = worker.drain_requested.cancelled() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(REATTACH_MAX);
            }
        }
    }
    // No pool to confirm (or it did): connections finish and close, or were
    // already told to hand back.
    worker.drain.cancel();
    worker.conns.close();
    // The pool kills a zergling that outlives its worker-reload-mercy: go away
    // early enough to say goodbye within it.
    let mercy = match worker.timeouts.load().mercy {
        Some(pool) => worker.config.mercy.min(pool.saturating_sub(GOING_AWAY_GRACE + GOING_AWAY_MARGIN)),
        None => worker.config.mercy,
    };
    if tokio::time::timeout(mercy, worker.conns.wait()).await.is_err() {
        // WebSockets, endless streams, slow requests: told to end (GoingAway).
        info!(mercy_s = mercy.as_secs_f64(), "connections still open after the mercy; going away");
        worker.going_away.cancel();
        if tokio::time::timeout(GOING_AWAY_GRACE, worker.conns.wait()).await.is_err() {
            warn!("connections still open after going away; exiting anyway");
        }
    }
    // The last requests' log lines.
    stop_logs.cancel();
    let _ = logs.await;
    let t = &worker.tally;
    info!(
        received = t.received.load(Ordering::Relaxed),
        accepted = t.accepted.load(Ordering::Relaxed),
        finished = t.finished.load(Ordering::Relaxed),
        handed_back = t.handed_back.load(Ordering::Relaxed),
        "drained"
    );
    Ok(())
}

/// A client watch on a uwsgi connection, when the configuration asks for one.
fn watch_of(config: &ZerglingConfig, stream: &ConnStream) -> Option<(ClientWatch, watch::Release)> {
    if config.watch_clients {
        ClientWatch::of(stream)
    } else {
        None
    }
}

/// Runs a zergling on a new multi-threaded runtime; returns once it has drained.
pub fn serve_blocking<S, B>(config: ZerglingConfig, service: S) -> Result<(), ZerglingError>
where
    S: ZerglingService<B>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.io_threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = builder.enable_all().build().map_err(ZerglingError::Runtime)?;
    // Spawned, not run by `block_on` itself: the attach session then runs on a
    // worker thread like the connections it spawns, instead of waking a worker
    // (a futex and a context switch) for every connection it receives.
    runtime.block_on(async {
        tokio::spawn(serve(config, service))
            .await
            .map_err(|e| ZerglingError::Runtime(std::io::Error::other(format!("the zergling task failed: {e}"))))?
    })
}

/// SIGTERM, SIGINT and SIGHUP start a drain.
fn install_signals(drain: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
        };
        info!(signal = name, "draining");
        drain.cancel();
    });
    Ok(())
}

/// A zergling the pool spawned (`ZERGPOOL_SPAWNED=1`) drains when the pool dies,
/// so that a pool killed with SIGKILL leaves no orphan behind.
fn follow_parent_if_spawned(drain_requested: &CancellationToken) {
    if std::env::var_os("ZERGPOOL_SPAWNED").is_none() {
        return;
    }
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGTERM)) {
        warn!(error = %e, "cannot ask to be told of the pool's death");
    }
    if nix::unistd::getppid().as_raw() == 1 {
        drain_requested.cancel();
    }
}

#[cfg(test)]
mod tests {

    /// The direct-accept loop's wait for room is woken when a connection ends,
    /// with no timer (the runtime here has none).
    #[test]
    fn waiting_for_room_is_woken_when_a_connection_ends_without_timers() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let conns = Arc::new(IdleConns::new(2));
        rt.block_on(async {
            let a = Owned::new(&conns);
            let _b = Owned::new(&conns);
            let waiter = tokio::spawn({
                let conns = conns.clone();
                async move { conns.wait_below(2).await }
            });
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished(), "room was found at capacity");
            drop(a);
            waiter.await.unwrap();
        });
    }
    use super::*;
    use std::convert::Infallible;
    use std::sync::Mutex;
    use std::task::{Context, Poll, Waker};

    /// A file response ([`SendFile`]) on a real TCP connection: the body is the
    /// file's range, sent with sendfile (the marker bytes never reach the
    /// client), framed right so that keep-alive goes on; a file shorter than
    /// the response said aborts the connection instead of ending it cleanly.
    #[tokio::test]
    async fn file_responses_go_with_sendfile_and_keep_the_connection_in_step() {
        use std::io::Write as _;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        tmp.write_all(&content).unwrap();
        let file = Arc::new(std::fs::File::open(tmp.path()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let file = file.clone();
            async move {
                let mut resp = Response::new(http_body_util::Full::new(Bytes::from_static(b"small")));
                let (start, len) = match req.uri().path() {
                    "/file" => (100, 2_999_000),
                    "/short" => (0, 4_000_000),
                    _ => return Ok::<_, Infallible>(resp),
                };
                resp.extensions_mut().insert(SendFile { file, start, len });
                Ok(resp)
            }
        });
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let ctx = Http1Ctx {
                    info: info(),
                    service: svc.clone(),
                    statics: Arc::new(StaticOptions::default()),
                    drain: CancellationToken::new(),
                    going_away: CancellationToken::new(),
                    timeouts: proto::Timeouts::default(),
                    head_limit: 0,
                    idle: None,
                    watch_clients: false,
                };
                tokio::spawn(run_http1(Prefixed::new(Bytes::new(), ConnStream::Tcp(stream)), ctx, || false));
            }
        });
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Pipelined: two file responses, then a small one.
        c.write_all(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\nGET /file HTTP/1.1\r\nHost: x\r\n\r\nGET /other HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let expected_tail = b"\r\n\r\nsmall";
        while !got.ends_with(expected_tail) {
            let mut buf = [0u8; 65536];
            let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "closed after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        let mut rest = &got[..];
        for _ in 0..2 {
            let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let head = String::from_utf8_lossy(&rest[..head_end]).to_lowercase();
            assert!(head.starts_with("http/1.1 200") && head.contains("content-length: 2999000"), "{head}");
            let body = &rest[head_end..head_end + 2_999_000];
            let first = body.iter().zip(&content[100..]).position(|(a, b)| a != b);
            assert!(first.is_none(), "the file's range, byte for byte: differs at {first:?}");
            rest = &rest[head_end + 2_999_000..];
        }
        assert!(String::from_utf8_lossy(rest).starts_with("HTTP/1.1 200"), "the next response follows in step");

        // Shorter than said: never a clean end.
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await.unwrap();
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(got.len() - head_end, 3_000_000, "what the file had, then the connection ends short of 4 000 000");
    }

    /// A client socket that has sent its request and whose send buffer is not
    /// writable yet (as a descriptor just received, before the reactor has seen it
    /// writable): writes wait until `open` is called.
    #[derive(Clone, Default)]
    struct SlowSocket(Arc<Mutex<SlowState>>);

    #[derive(Default)]
    struct SlowState {
        writable: bool,
        written: Vec<u8>,
        waker: Option<Waker>,
    }

    impl SlowSocket {
        fn open(&self) {
            let mut st = self.0.lock().unwrap();
            st.writable = true;
            if let Some(w) = st.waker.take() {
                w.wake();
            }
        }
        fn written(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap().written).into_owned()
        }
    }

    impl zergpool_core::stream::Readable for SlowSocket {
        fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Pending // the client sends nothing more
        }
    }

    impl tokio::io::AsyncRead for SlowSocket {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Pending // the client waits for its answer
        }
    }

    impl tokio::io::AsyncWrite for SlowSocket {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let mut st = self.0.lock().unwrap();
            if !st.writable {
                st.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            st.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Tells the test, once, that the service was called.
    #[derive(Clone)]
    struct FirstCall(Arc<Mutex<Option<tokio::sync::oneshot::Sender<()>>>>);

    impl FirstCall {
        fn tell(&self) {
            if let Some(tx) = self.0.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
    }

    fn first_call() -> (FirstCall, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (FirstCall(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    /// Serves `request` (bytes already read) on `socket` in a task of its own, with
    /// hand-back allowed, as a zergling does with a connection from the pool.
    fn serve_on<S, B>(
        request: &'static [u8],
        socket: &SlowSocket,
        svc: S,
        drain: &CancellationToken,
    ) -> tokio::task::JoinHandle<Http1End<SlowSocket>>
    where
        S: ZerglingService<B>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let io = Prefixed::new(Bytes::from_static(request), socket.clone());
        let ctx = Http1Ctx {
            info: info(),
            service: svc,
            statics: Arc::new(StaticOptions::default()),
            drain: drain.clone(),
            going_away: CancellationToken::new(),
            timeouts: proto::Timeouts::default(),
            head_limit: 0,
            idle: None,
            watch_clients: false,
        };
        tokio::spawn(run_http1(io, ctx, || true))
    }

    fn info() -> Arc<ConnInfo> {
        Arc::new(ConnInfo {
            zergling: ZerglingId(1),
            conn: ConnId(1),
            listener: "test".into(),
            kind: ListenerKind::Http,
            scheme: Scheme::Http,
            peer: Endpoint::parse("127.0.0.1:1"),
            local: Endpoint::parse("127.0.0.1:2"),
            sni: None,
            alpn: None,
            tls_version: None,
        })
    }

    /// Serves `request` with an application that answers at once (adding
    /// `Connection: close` when `close_in_response`), lets hyper buffer the response
    /// on a socket not writable yet, drains, then lets the socket take bytes.
    /// Returns how the connection ended and what the client received.
    async fn drain_while_the_response_is_buffered(request: &'static [u8], close_in_response: bool) -> (bool, String) {
        let socket = SlowSocket::default();
        let (called, called_rx) = first_call();
        let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
            called.tell();
            async move {
                let mut resp = Response::new(http_body_util::Full::new(Bytes::from_static(b"answer")));
                if close_in_response {
                    resp.headers_mut()
                        .insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(resp)
            }
        });
        let drain = CancellationToken::new();
        let task = serve_on(request, &socket, svc, &drain);
        called_rx.await.expect("the request reached the service");
        for _ in 0..10 {
            tokio::task::yield_now().await; // hyper buffers the response, the write waits
        }
        drain.cancel();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        socket.open();
        let end =
            tokio::time::timeout(Duration::from_secs(5), task).await.expect("the connection ends").expect("no panic");
        (matches!(end, Http1End::HandBack { .. }), socket.written())
    }

    /// The request lost once in ~200,000 by the chain-reload load test: a
    /// `Connection: close` request answered, the response still in hyper's write
    /// buffer (a descriptor just received is not known writable yet) when the drain
    /// comes. The response must still reach the client.
    #[tokio::test]
    async fn a_drain_never_drops_a_buffered_response() {
        let req = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        let (handed_back, written) = drain_while_the_response_is_buffered(req, false).await;
        assert!(!handed_back, "a Connection: close exchange is never handed back");
        assert!(written.starts_with("HTTP/1.1 200"), "the response was dropped: {written:?}");
        assert!(written.ends_with("answer"), "{written:?}");
    }

    /// The same when the application's response says `Connection: close`.
    #[tokio::test]
    async fn a_drain_never_drops_a_buffered_response_that_closes() {
        let req = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
        let (handed_back, written) = drain_while_the_response_is_buffered(req, true).await;
        assert!(!handed_back);
        assert!(written.starts_with("HTTP/1.1 200"), "the response was dropped: {written:?}");
    }

    /// A request whose body the application did not read, and that has not all
    /// arrived: hyper cannot reuse the connection. It must never be handed back
    /// (the pool would read the rest of the body as a new request), and its
    /// response must still be sent.
    #[tokio::test]
    async fn a_drain_never_hands_back_a_connection_in_the_middle_of_a_body() {
        let req = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly part of the body";
        let (handed_back, written) = drain_while_the_response_is_buffered(req, false).await;
        assert!(!handed_back, "handed back in the middle of a request body");
        assert!(written.starts_with("HTTP/1.1 200"), "the response was dropped: {written:?}");
    }

    /// The drain comes while the application is still answering a request whose
    /// body has not all arrived (and that it does not read): when the answer
    /// comes, hyper gives up the connection; the drain must not take it for an
    /// idle one (it would be handed back in the middle of the body, whose rest the
    /// pool would then read as a new request). Repeated: the drain and the
    /// connection race in a `select!` whose order is random.
    #[tokio::test]
    async fn a_drain_during_the_answer_never_hands_back_a_connection_in_the_middle_of_a_body() {
        for round in 0..20 {
            let socket = SlowSocket::default();
            let (called_tx, called_rx) = tokio::sync::oneshot::channel::<()>();
            let (answer_tx, answer_rx) = tokio::sync::oneshot::channel::<()>();
            let gates = Arc::new(Mutex::new(Some((called_tx, answer_rx))));
            let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let gate = gates.lock().unwrap().take();
                async move {
                    if let Some((called, answer)) = gate {
                        let _ = called.send(());
                        let _ = answer.await;
                    }
                    Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::from_static(b"answer"))))
                }
            });
            let drain = CancellationToken::new();
            let req = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly part of the body";
            let task = serve_on(req, &socket, svc, &drain);
            called_rx.await.expect("the request reached the service");
            drain.cancel();
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
            let _ = answer_tx.send(());
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            socket.open();
            let end = tokio::time::timeout(Duration::from_secs(5), task).await.expect("ends").expect("no panic");
            assert!(matches!(end, Http1End::Finished), "round {round}: handed back in the middle of a body");
            assert!(socket.written().starts_with("HTTP/1.1 200"), "round {round}: {:?}", socket.written());
        }
    }

    /// A body of unknown length: HTTP/1.0 can only send it close-delimited.
    struct OneChunk(Option<Bytes>);

    impl Body for OneChunk {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.take().map(|b| Ok(hyper::body::Frame::data(b))))
        }
    }

    /// An HTTP/1.0 keep-alive request answered with a body of unknown length:
    /// hyper must close the connection to end the body, which it does once the
    /// response is flushed. A drain that comes while the response waits for the
    /// socket must neither drop it nor hand the connection back.
    #[tokio::test]
    async fn a_drain_waits_for_a_close_delimited_response_to_be_flushed() {
        for round in 0..20 {
            let socket = SlowSocket::default();
            let (called, called_rx) = first_call();
            let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                called.tell();
                async { Ok::<_, Infallible>(Response::new(OneChunk(Some(Bytes::from_static(b"streamed"))))) }
            });
            let drain = CancellationToken::new();
            let req = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
            let task = serve_on(req, &socket, svc, &drain);
            called_rx.await.expect("the request reached the service");
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
            drain.cancel();
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            socket.open();
            let end = tokio::time::timeout(Duration::from_secs(5), task).await.expect("ends").expect("no panic");
            let written = socket.written();
            assert!(matches!(end, Http1End::Finished), "round {round}: a close-delimited exchange was handed back");
            assert!(written.starts_with("HTTP/1.0 200") && written.ends_with("streamed"), "round {round}: {written:?}");
        }
    }

    /// And a keep-alive exchange: the response is flushed, then the connection is
    /// given back for its next request.
    #[tokio::test]
    async fn a_drain_flushes_a_keep_alive_response_then_hands_back() {
        let req = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
        let (handed_back, written) = drain_while_the_response_is_buffered(req, false).await;
        assert!(written.ends_with("answer"), "{written:?}");
        assert!(handed_back);
    }
}
