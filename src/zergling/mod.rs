//! The zergling library: turn any hyper service into a zergling of a pool.
//!
//! ```no_run
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper::{body::Incoming, Request, Response};
//! use zergpool::zergling::{serve_blocking, ZerglingConfig};
//!
//! async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     Ok(Response::new(Full::new(Bytes::from_static(b"Hello, world!"))))
//! }
//!
//! fn main() -> Result<(), zergpool::zergling::ZerglingError> {
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
//! * if the pool goes away, connections already owned keep being served while the
//!   zergling re-attaches with back-off;
//! * on SIGTERM, SIGINT or SIGHUP (or DRAIN from the pool): send DRAINING, wait for
//!   the pool's DRAIN (nothing is dispatched after it), let requests in flight
//!   finish (closing idle keep-alive connections), up to the mercy; then return.
//!
//! Each request carries a [`ConnInfo`] in its extensions: the listener, the
//! client's address, the scheme, and the zergling's id.

mod io;
pub mod uwsgi;

use std::error::Error as StdError;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use io::{ConnStream, Prefixed};

use crate::proto::{self, Channel, ChannelError, ConnId, ConnMeta, ListenerKind, Message, RecvBuf, ZerglingId};

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

/// Test-only misbehaviour, to provoke the pool's failure paths deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Exit the process on the first CONN, before acknowledging it.
    ExitBeforeAck,
}

/// How a zergling attaches and behaves.
#[derive(Debug, Clone)]
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
    /// Fault injection for tests; `None` in real use.
    pub fault: Option<Fault>,
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
            fault: None,
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
    /// The pool listener's name.
    pub listener: String,
    /// What the listener speaks.
    pub kind: ListenerKind,
    /// `http` or `https` as the client sees it.
    pub scheme: String,
    /// The client's address.
    pub peer: String,
    /// The address the client connected to.
    pub local: String,
    /// TLS server name, when the pool terminated TLS.
    pub sni: Option<String>,
    /// Negotiated ALPN protocol.
    pub alpn: Option<String>,
    /// Negotiated TLS version.
    pub tls_version: Option<String>,
}

impl ConnInfo {
    fn new(zergling: ZerglingId, m: &ConnMeta) -> Self {
        ConnInfo {
            zergling,
            conn: m.conn,
            listener: m.listener.clone(),
            kind: m.kind,
            scheme: m.scheme.clone(),
            peer: m.peer.clone(),
            local: m.local.clone(),
            sni: m.sni.clone(),
            alpn: m.alpn.clone(),
            tls_version: m.tls_version.clone(),
        }
    }
}

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
    /// Cancelled when draining starts.
    drain: CancellationToken,
    /// Every connection being served.
    conns: TaskTracker,
}

/// Runs a zergling on the current tokio runtime until it has drained.
pub async fn serve<S, B>(config: ZerglingConfig, service: S) -> Result<(), ZerglingError>
where
    S: ZerglingService<B>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let worker = Arc::new(Worker { config, service, drain: CancellationToken::new(), conns: TaskTracker::new() });
    if worker.config.handle_signals {
        install_signals(worker.drain.clone()).map_err(ZerglingError::Runtime)?;
    }
    follow_parent_if_spawned(&worker.drain);
    let mut delay = REATTACH_MIN;
    let mut failures: u64 = 0;
    while !worker.drain.is_cancelled() {
        match attach(&worker.config).await {
            Ok((chan, id)) => {
                delay = REATTACH_MIN;
                failures = 0;
                info!(zergling = %id, socket = %worker.config.socket.display(), "attached to the pool");
                session(Arc::new(chan), id, &worker).await;
                if !worker.drain.is_cancelled() {
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
                    _ = worker.drain.cancelled() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(REATTACH_MAX);
            }
        }
    }
    worker.conns.close();
    if tokio::time::timeout(worker.config.mercy, worker.conns.wait()).await.is_err() {
        warn!(mercy_s = worker.config.mercy.as_secs_f64(), "connections still open after the mercy; exiting anyway");
    }
    info!("drained");
    Ok(())
}

/// Runs a zergling on a new multi-threaded runtime; returns once it has drained.
pub fn serve_blocking<S, B>(config: ZerglingConfig, service: S) -> Result<(), ZerglingError>
where
    S: ZerglingService<B>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ZerglingError::Runtime)?
        .block_on(serve(config, service))
}

enum AttachFailure {
    Refused(String),
    Other(Box<dyn StdError + Send + Sync>),
}

impl From<ChannelError> for AttachFailure {
    fn from(e: ChannelError) -> Self {
        AttachFailure::Other(Box::new(e))
    }
}

/// Connects and does the handshake.
async fn attach(config: &ZerglingConfig) -> Result<(Channel, ZerglingId), AttachFailure> {
    let chan = Channel::connect(&config.socket).await.map_err(|e| AttachFailure::Other(Box::new(e)))?;
    let hello = Message::Hello {
        version: proto::VERSION,
        pid: std::process::id(),
        capacity: config.capacity,
        tags: config.tags.clone(),
    };
    chan.send(&hello, None).await?;
    match chan.recv_timeout(HANDSHAKE_TIMEOUT).await? {
        (Message::Welcome { id, .. }, _) => Ok((chan, id)),
        (Message::Refuse { reason }, _) => Err(AttachFailure::Refused(reason)),
        (other, _) => Err(AttachFailure::Other(format!("unexpected {} during the handshake", other.name()).into())),
    }
}

/// Serves one attachment until the pool goes away or confirms our drain.
async fn session<S, B>(chan: Arc<Channel>, id: ZerglingId, worker: &Arc<Worker<S>>)
where
    S: ZerglingService<B>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut buf = RecvBuf::new();
    let mut draining_sent = false;
    // Armed when DRAINING is sent; until then it never fires.
    let confirm_deadline = tokio::time::sleep(Duration::from_secs(86_400 * 365));
    tokio::pin!(confirm_deadline);
    loop {
        tokio::select! {
            _ = worker.drain.cancelled(), if !draining_sent => {
                draining_sent = true;
                confirm_deadline.as_mut().reset(tokio::time::Instant::now() + HANDSHAKE_TIMEOUT);
                if chan.send(&Message::Draining, None).await.is_err() {
                    return;
                }
            }
            _ = &mut confirm_deadline, if draining_sent => {
                warn!("the pool did not confirm the drain in time; draining anyway");
                return;
            }
            msg = chan.recv_with(&mut buf) => match msg {
                Ok((Message::Conn(meta), Some(fd))) => accept_conn(&chan, id, worker, meta, fd).await,
                Ok((Message::Drain, _)) => {
                    info!("the pool confirmed the drain");
                    worker.drain.cancel();
                    return;
                }
                Ok((other, _)) => {
                    warn!(message = other.name(), "unexpected message from the pool; detaching");
                    return;
                }
                Err(ChannelError::Closed) => return,
                Err(e) => {
                    warn!(error = %e, "attach channel failed; detaching");
                    return;
                }
            },
        }
    }
}

/// Takes ownership of a received connection: ACK, then serve it in its own task.
async fn accept_conn<S, B>(chan: &Arc<Channel>, id: ZerglingId, worker: &Arc<Worker<S>>, meta: ConnMeta, fd: OwnedFd)
where
    S: ZerglingService<B>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    if worker.config.fault == Some(Fault::ExitBeforeAck) {
        warn!(conn = %meta.conn, "fault injection: exiting before ACK");
        std::process::exit(3);
    }
    let conn = meta.conn;
    if let Err(e) = chan.send(&Message::Ack { conn }, None).await {
        // The pool is gone; we hold the only copy now, so serve it anyway.
        debug!(%conn, error = %e, "ACK not delivered");
    }
    let stream = match ConnStream::from_fd(fd) {
        Ok(s) => s,
        Err(e) => {
            warn!(%conn, error = %e, "cannot use the received connection");
            let _ = chan.send(&Message::Closed { conn }, None).await;
            return;
        }
    };
    let (chan, worker) = (chan.clone(), worker.clone());
    let info = Arc::new(ConnInfo::new(id, &meta));
    worker.conns.clone().spawn(async move {
        serve_http1(Prefixed::new(meta.prefix, stream), info, worker.service.clone(), worker.drain.clone()).await;
        let _ = chan.send(&Message::Closed { conn }, None).await;
    });
}

/// Serves HTTP/1.1 with keep-alive on one connection; on drain, finishes the
/// request in flight and closes.
pub async fn serve_http1<IO, S, B>(io: IO, info: Arc<ConnInfo>, service: S, drain: CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: ZerglingService<B>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        service.call(req)
    });
    let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let res = tokio::select! {
        r = conn.as_mut() => r,
        _ = drain.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        debug!(error = %e, "connection ended with an error");
    }
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
fn follow_parent_if_spawned(drain: &CancellationToken) {
    if std::env::var_os("ZERGPOOL_SPAWNED").is_none() {
        return;
    }
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGTERM)) {
        warn!(error = %e, "cannot ask to be told of the pool's death");
    }
    if nix::unistd::getppid().as_raw() == 1 {
        drain.cancel();
    }
}
