//! The pool's life (bind → run → stop) and the data path of one connection,
//! top to bottom in [`handle_connection`].
//!
//! Stopping has one shape (STYLE.md 8): a signal task turns SIGTERM/SIGINT into a
//! *graceful* token and SIGQUIT or a second SIGTERM/SIGINT into an *immediate* one.
//! Graceful: stop accepting; let connections being classified finish; let the
//! queue empty (into zerglings, or 503 at its timeout); SIGTERM the spawned
//! zerglings, which drain; SIGKILL what is left after `reload-mercy`; remove the
//! attach socket; exit 0. Immediate: SIGKILL the spawned zerglings, remove the
//! socket, exit.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::classify::{self, Classification};
use crate::config::Config;
use crate::control::{self, Control};
use crate::dispatch::attach::{self, AttachError, AttachPolicy, AttachSocket};
use crate::dispatch::{Dispatcher, Pending, Submitted};
use crate::listener::{self, ListenerInfo};
use crate::proto::{ConnId, ConnMeta, ListenerKind};
use crate::reply::{self, Canned};
use crate::supervise::{self, Supervisor};

/// Why the pool could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({name}); is another server using the port, or does it need root?")]
    Bind {
        /// The listener's name.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The attach socket could not be set up.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// The master FIFO could not be created.
    #[error(transparent)]
    Fifo(#[from] control::FifoError),
}

/// How the pool was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// Finish what is in flight, then exit.
    Graceful,
    /// Exit now.
    Immediate,
}

/// What every connection task shares.
#[derive(Debug)]
struct Ctx {
    config: Arc<Config>,
    dispatcher: Arc<Dispatcher>,
}

/// A pool with its sockets bound, ready to run.
#[derive(Debug)]
pub struct Pool {
    config: Arc<Config>,
    listeners: Vec<(Arc<ListenerInfo>, std::net::TcpListener)>,
    attach: Arc<AttachSocket>,
}

impl Pool {
    /// Binds every listener and the attach socket. Must run inside a tokio runtime.
    pub fn bind(config: Config) -> Result<Pool, PoolError> {
        let backlog = listener::effective_backlog(config.listen_backlog);
        let mut listeners = Vec::new();
        for (i, addr) in config.http.iter().enumerate() {
            let name = format!("http{i}");
            let l = listener::bind_tcp(*addr, backlog).map_err(|source| PoolError::Bind {
                name: name.clone(),
                addr: *addr,
                source,
            })?;
            let local = l.local_addr().map_err(|source| PoolError::Bind { name: name.clone(), addr: *addr, source })?;
            listeners.push((Arc::new(ListenerInfo { name, kind: ListenerKind::Http, local }), l));
        }
        let path = config
            .zerg_server
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("zergpool-{}.sock", std::process::id())));
        let attach = Arc::new(AttachSocket::bind(&path, config.zerg_server_mode)?);
        Ok(Pool { config: Arc::new(config), listeners, attach })
    }

    /// The bound listeners (name and address), in declaration order.
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners.iter().map(|(i, _)| (i.name.clone(), i.local)).collect()
    }

    /// The attach socket's path.
    pub fn attach_path(&self) -> PathBuf {
        self.attach.path().to_owned()
    }

    /// Runs until SIGTERM/SIGINT/SIGQUIT and stops as described in the module docs.
    pub async fn run(self) -> Result<(), PoolError> {
        let (tx, rx) = mpsc::unbounded_channel();
        control::spawn_signals(tx.clone(), &self.config.signals).map_err(PoolError::Signals)?;
        self.run_with(tx, rx).await
    }

    /// Runs until a stop arrives on `rx` (signals, the master FIFO and touch files
    /// send theirs on `tx`).
    pub async fn run_with(self, tx: mpsc::UnboundedSender<Control>, mut rx: mpsc::UnboundedReceiver<Control>) -> Result<(), PoolError> {
        let ctx = Arc::new(Ctx {
            config: self.config.clone(),
            dispatcher: Arc::new(Dispatcher::new(self.config.queue_limit, self.config.queue_timeout)),
        });
        let stop_accept = CancellationToken::new();
        let conns = TaskTracker::new();
        let background = TaskTracker::new();

        for (info, l) in self.listeners {
            info!(listener = %info.name, kind = info.kind.as_str(), addr = %info.local, "listening");
            let l = match TcpListener::from_std(l) {
                Ok(l) => l,
                Err(e) => {
                    warn!(listener = %info.name, error = %e, "cannot register listener with the runtime");
                    continue;
                }
            };
            let c = ctx.clone();
            background.spawn(listener::accept_loop(l, info, stop_accept.clone(), conns.clone(), move |info, s, peer| {
                handle_connection(c.clone(), info, s, peer)
            }));
        }
        let stop_attach = CancellationToken::new();
        let sessions = TaskTracker::new();
        info!(path = %self.attach.path().display(), "zerg-server ready");
        background.spawn(attach::serve(
            self.attach.clone(),
            ctx.dispatcher.clone(),
            AttachPolicy { allow_uids: self.config.zerg_allow_uid.clone() },
            stop_attach.clone(),
            sessions.clone(),
        ));
        background.spawn(expire_queue(ctx.dispatcher.clone(), stop_attach.clone()));
        let (handback_tx, handback_rx) = mpsc::unbounded_channel();
        ctx.dispatcher.set_handback_sink(handback_tx);
        background.spawn(serve_handbacks(ctx.clone(), handback_rx, conns.clone(), stop_attach.clone()));
        let fifo = match &self.config.master_fifo {
            Some(path) => {
                let rx = control::open_fifo(path)?;
                info!(path = %path.display(), "master FIFO ready");
                background.spawn(control::read_fifo(rx, tx.clone(), stop_attach.clone()));
                Some(path.clone())
            }
            None => None,
        };
        let reload = Control::ChainReload { why: "touch-reload" };
        background.spawn(control::watch_touch_files(self.config.touch_reload.clone(), reload, tx.clone(), stop_attach.clone()));
        let chain = Control::ChainReload { why: "touch-chain-reload" };
        background.spawn(control::watch_touch_files(self.config.touch_chain_reload.clone(), chain, tx.clone(), stop_attach.clone()));
        let settings = supervise::Settings {
            worker_mercy: self.config.worker_reload_mercy,
            attach_timeout: self.config.attach_timeout,
        };
        let supervisor = Supervisor::start(&self.config.zerglings, self.attach.path().to_owned(), ctx.dispatcher.clone(), settings);

        let kind = loop {
            match rx.recv().await {
                Some(Control::ChainReload { why }) => {
                    info!(trigger = why, "reload");
                    let sup = supervisor.clone();
                    tokio::spawn(async move {
                        let _ = sup.chain_reload().await;
                    });
                }
                Some(Control::GracefulStop) => break StopKind::Graceful,
                Some(Control::ImmediateStop) | None => break StopKind::Immediate,
            }
        };
        info!(?kind, "stopping");
        stop_accept.cancel();
        ctx.dispatcher.set_stopping();
        if kind == StopKind::Graceful {
            let second = async {
                loop {
                    match rx.recv().await {
                        Some(Control::ChainReload { .. }) => info!("stopping: reload ignored"),
                        _ => return,
                    }
                }
            };
            let finished = tokio::select! {
                _ = graceful_stop(&ctx, &conns, &supervisor) => true,
                _ = second => false,
            };
            if !finished {
                info!("second stop request: stopping at once");
                supervisor.kill_now().await;
            }
        } else {
            supervisor.kill_now().await;
        }
        stop_attach.cancel();
        for p in ctx.dispatcher.take_queue() {
            drop(p); // closing is all we can still do
        }
        self.attach.remove_file();
        if let Some(path) = fifo {
            let _ = std::fs::remove_file(path);
        }
        info!("stopped");
        Ok(())
    }
}

/// The graceful part of stopping (see the module docs).
async fn graceful_stop(ctx: &Ctx, conns: &TaskTracker, supervisor: &Supervisor) {
    let mercy = ctx.config.reload_mercy;
    conns.close();
    if tokio::time::timeout(mercy, conns.wait()).await.is_err() {
        warn!("connections still being classified after reload-mercy; going on");
    }
    let queue_deadline = Instant::now() + ctx.config.queue_timeout + Duration::from_secs(1);
    while ctx.dispatcher.queue_len() > 0 && Instant::now() < queue_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    supervisor.stop(mercy).await;
}

/// Answers 503 to queued connections older than `zerg-queue-timeout`.
async fn expire_queue(dispatcher: Arc<Dispatcher>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for p in dispatcher.expire(Instant::now()) {
            warn!(conn = %p.meta.conn, waited_ms = p.arrived.elapsed().as_millis() as u64, "no zergling took the connection in time: 503");
            tokio::spawn(reply::answer_fd(p.fd, Canned::Unavailable));
        }
    }
}

/// The data path of one accepted connection, in order: classify the first head,
/// answer errors, then hand the connection to dispatch with the bytes read.
async fn handle_connection(ctx: Arc<Ctx>, listener: Arc<ListenerInfo>, stream: TcpStream, peer: SocketAddr) {
    let local = stream.local_addr().unwrap_or(listener.local);
    let meta = ConnMeta {
        conn: ConnId(0), // given when dispatched
        listener: listener.name.clone(),
        kind: listener.kind,
        scheme: "http".to_owned(),
        peer: peer.to_string(),
        local: local.to_string(),
        sni: None,
        alpn: None,
        tls_version: None,
        prefix: Bytes::new(),
    };
    classify_and_dispatch(ctx, stream, meta).await;
}

/// Classifies the next request on `stream` (after the bytes in `meta.prefix`,
/// already read) and dispatches the connection, or answers an error.
async fn classify_and_dispatch(ctx: Arc<Ctx>, mut stream: TcpStream, mut meta: ConnMeta) {
    let arrived = Instant::now();
    let mut buf = BytesMut::with_capacity(2048);
    buf.extend_from_slice(&meta.prefix);
    let class = classify::read_http_head(&mut stream, &mut buf, ctx.config.buffer_size, ctx.config.http_timeout).await;
    let canned = match class {
        Classification::Dynamic(head) => {
            debug!(method = %head.method, target = %head.target, "dynamic request");
            None
        }
        Classification::Gone => return,
        Classification::Malformed(why) => {
            debug!(why, "malformed request head: 400");
            Some(Canned::BadRequest)
        }
        Classification::TooLarge => {
            debug!(limit = ctx.config.buffer_size, "request head too large: 431");
            Some(Canned::HeadTooLarge)
        }
        // An idle connection that never started a request is closed silently, as
        // keep-alive timeouts are; a started head that stalls gets 408.
        Classification::Timeout if buf.is_empty() => return,
        Classification::Timeout => {
            debug!("request head too slow: 408");
            Some(Canned::RequestTimeout)
        }
    };
    if let Some(c) = canned {
        let _ = reply::answer(&mut stream, c).await;
        return;
    }
    meta.conn = ctx.dispatcher.next_conn_id();
    meta.prefix = buf.freeze();
    let fd: OwnedFd = match stream.into_std() {
        Ok(s) => s.into(),
        Err(e) => {
            warn!(error = %e, "cannot detach the connection from the runtime");
            return;
        }
    };
    dispatch_or_answer(&ctx.dispatcher, Pending { fd, meta, arrived });
}

/// Connections given back by draining zerglings: classified again like new ones.
async fn serve_handbacks(
    ctx: Arc<Ctx>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(OwnedFd, ConnMeta)>,
    conns: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let (fd, meta) = tokio::select! {
            _ = stop.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let std = std::net::TcpStream::from(fd);
        let stream = match std.set_nonblocking(true).and_then(|()| TcpStream::from_std(std)) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot take back a handed-back connection");
                continue;
            }
        };
        let span = tracing::debug_span!("conn", listener = %meta.listener, peer = %meta.peer, handed_back = true);
        conns.spawn(classify_and_dispatch(ctx.clone(), stream, meta).instrument(span));
    }
}

/// Submits a connection; when the queue is full, answers 503 in a task of its own.
fn dispatch_or_answer(dispatcher: &Dispatcher, p: Pending) {
    let conn = p.meta.conn;
    match dispatcher.submit(p) {
        Submitted::Dispatched(id) => debug!(%conn, zergling = %id, "dispatched"),
        Submitted::Queued => debug!(%conn, "queued: no zergling can take it now"),
        Submitted::Rejected(p) => {
            warn!(%conn, "zergling queue full (zerg-queue): 503");
            tokio::spawn(reply::answer_fd(p.fd, Canned::Unavailable));
        }
    }
}
