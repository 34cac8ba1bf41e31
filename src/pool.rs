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

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::classify::{self, Classification};
use crate::config::Config;
use crate::dispatch::attach::{self, AttachError, AttachPolicy, AttachSocket};
use crate::dispatch::{Dispatcher, Pending, Submitted};
use crate::listener::{self, ListenerInfo};
use crate::proto::{ConnMeta, ListenerKind};
use crate::reply::{self, Canned};
use crate::supervise::Supervisor;

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
        let graceful = CancellationToken::new();
        let immediate = CancellationToken::new();
        spawn_signal_task(graceful.clone(), immediate.clone())?;
        self.run_until(graceful, immediate).await;
        Ok(())
    }

    /// Runs until `graceful` (or `immediate`) is cancelled.
    pub async fn run_until(self, graceful: CancellationToken, immediate: CancellationToken) {
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
            background.spawn(listener::accept_loop(
                l,
                info,
                stop_accept.clone(),
                conns.clone(),
                move |info, s, peer| handle_connection(c.clone(), info, s, peer),
            ));
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
        let supervisor = Supervisor::start(&self.config.zerglings, self.attach.path().to_owned());

        tokio::select! {
            _ = graceful.cancelled() => {}
            _ = immediate.cancelled() => {}
        }
        let kind = if immediate.is_cancelled() { StopKind::Immediate } else { StopKind::Graceful };
        info!(?kind, "stopping");
        stop_accept.cancel();
        if kind == StopKind::Graceful {
            let finished = tokio::select! {
                _ = graceful_stop(&ctx, &conns, &supervisor) => true,
                _ = immediate.cancelled() => false,
            };
            if !finished {
                info!("second signal: stopping at once");
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
        info!("stopped");
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

/// Installs the signal handlers. Every signal the pool can receive by accident is
/// handled (SIGHUP, SIGUSR1, SIGUSR2 are logged), so none of them kills it.
fn spawn_signal_task(graceful: CancellationToken, immediate: CancellationToken) -> Result<(), PoolError> {
    let mut term = signal(SignalKind::terminate()).map_err(PoolError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(PoolError::Signals)?;
    let mut quit = signal(SignalKind::quit()).map_err(PoolError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(PoolError::Signals)?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(PoolError::Signals)?;
    let mut usr2 = signal(SignalKind::user_defined2()).map_err(PoolError::Signals)?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = quit.recv() => "SIGQUIT",
                _ = hup.recv() => { info!("SIGHUP: nothing to reload in this version"); continue; }
                _ = usr1.recv() => { info!("SIGUSR1 ignored"); continue; }
                _ = usr2.recv() => { info!("SIGUSR2 ignored"); continue; }
            };
            if name == "SIGQUIT" || graceful.is_cancelled() {
                info!(signal = name, "immediate stop");
                immediate.cancel();
            } else {
                info!(signal = name, "graceful stop");
                graceful.cancel();
            }
        }
    });
    Ok(())
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
async fn handle_connection(ctx: Arc<Ctx>, listener: Arc<ListenerInfo>, mut stream: TcpStream, peer: SocketAddr) {
    let arrived = Instant::now();
    let mut buf = BytesMut::with_capacity(2048);
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
        Classification::Timeout => {
            debug!("request head too slow: 408");
            Some(Canned::RequestTimeout)
        }
    };
    if let Some(c) = canned {
        let _ = reply::answer(&mut stream, c).await;
        return;
    }
    let local = stream.local_addr().unwrap_or(listener.local);
    let meta = ConnMeta {
        conn: ctx.dispatcher.next_conn_id(),
        listener: listener.name.clone(),
        kind: listener.kind,
        scheme: "http".to_owned(),
        peer: peer.to_string(),
        local: local.to_string(),
        sni: None,
        alpn: None,
        tls_version: None,
        prefix: buf.freeze(),
    };
    let fd: OwnedFd = match stream.into_std() {
        Ok(s) => s.into(),
        Err(e) => {
            warn!(error = %e, "cannot detach the connection from the runtime");
            return;
        }
    };
    dispatch_or_answer(&ctx.dispatcher, Pending { fd, meta, arrived });
}

/// Submits a connection; when the queue is full, answers 503 in a task of its own.
pub(crate) fn dispatch_or_answer(dispatcher: &Dispatcher, p: Pending) {
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
