//! The pool's life: bind every socket (then drop privileges), run, stop. The data
//! path of one connection is in [`conn`], top to bottom.
//!
//! Start order: bind every listener, read every certificate and key, create the
//! attach socket and the master FIFO, then drop privileges (`uid`/`gid`). Nothing
//! is bound after that, and reloads never rebind.
//!
//! Stopping has one shape (STYLE.md 8): every trigger (signals, the master FIFO)
//! becomes a [`Control`]. Graceful: stop accepting; let connections being
//! classified finish; let the queue empty (into zerglings, or 503 at its
//! timeout); SIGTERM the spawned zerglings, which drain; SIGKILL what is left
//! after `reload-mercy`; remove the attach socket; exit 0. A second stop request,
//! or an immediate one: SIGKILL the spawned zerglings, remove the socket, exit.

mod conn;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use crate::config::{Config, ConfigError, UwsgiAddr};
use crate::control::{self, Control};
use crate::dispatch::attach::{self, AttachError, AttachPolicy, AttachSocket, DirectListener};
use crate::dispatch::Dispatcher;
use crate::listener::limit::{self, ConnLimit};
use crate::listener::privileges::{self, PrivilegeError};
use crate::listener::tls::{TlsError, TlsStore};
use crate::listener::{self, AnyListener, Bound, Endpoint, ListenerInfo, Role};
use crate::offload::StaticOptions;
use crate::proto::ConnMeta;
use crate::reply::Canned;
use crate::supervise::{self, Supervisor};

/// Why the pool could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({name}); is another server using it, or does it need root?")]
    Bind {
        /// The listener's name.
        name: String,
        /// Its address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key could not be loaded.
    #[error("cannot set up TLS")]
    Tls(#[from] TlsError),
    /// The options for TLS or static files are wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Dropping privileges failed.
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    /// A socket file could not be given to the unprivileged user.
    #[error("cannot give {path} to uid {uid}")]
    Chown {
        /// The file.
        path: PathBuf,
        /// The target user.
        uid: u32,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The attach socket could not be set up.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// A pid file could not be written.
    #[error("cannot write the pid file {path} (pidfile, safe-pidfile, pidfile2): check that its folder exists and is writable by the user the pool is then")]
    PidFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// The master FIFO could not be created.
    #[error(transparent)]
    Fifo(#[from] control::FifoError),
    /// `max-fd` could not be applied.
    #[error("cannot set the descriptor limit to {max_fd} (max-fd): above the hard limit it needs root; lower max-fd or start the pool as root")]
    MaxFd {
        /// The limit asked for.
        max_fd: u64,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
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
    /// Static-map, swapped whole on SIGHUP (folders resolved again).
    statics: ArcSwap<StaticOptions>,
    /// The same settings as sent to zerglings in WELCOME, swapped with `statics`.
    static_settings: Arc<ArcSwap<crate::proto::StaticSettings>>,
    /// TLS relays: they live as long as their client connections.
    relays: TaskTracker,
    /// The connection limit (`zerg-max-connections`) every held connection counts in.
    limit: Arc<ConnLimit>,
    /// Cancelled when the pool stops: idle keep-alive connections it holds close
    /// at once instead of holding the stop up (nginx does the same).
    stopping: CancellationToken,
}

/// A pool with its sockets bound, ready to run.
#[derive(Debug)]
pub struct Pool {
    config: Arc<Config>,
    listeners: Vec<(Arc<ListenerInfo>, Bound)>,
    tls_stores: Vec<Arc<TlsStore>>,
    statics: StaticOptions,
    attach: Arc<AttachSocket>,
    fifo: Option<(PathBuf, tokio::net::unix::pipe::Receiver)>,
    /// Unix socket files of uwsgi listeners, removed at exit.
    unix_paths: Vec<PathBuf>,
    /// The connection limit.
    limit: Arc<ConnLimit>,
    /// The stats server's socket (`stats`).
    stats: Option<(Bound, Endpoint)>,
    /// The metrics listener (`metrics`).
    metrics: Option<(Bound, Endpoint)>,
}

impl Pool {
    /// Binds every listener and the attach socket, reads certificates, then drops
    /// privileges. Must run inside a tokio runtime.
    pub fn bind(config: Config) -> Result<Pool, PoolError> {
        Self::bind_inherited(config, Vec::new())
    }

    /// [`Pool::bind`], using the listening sockets a service manager passed
    /// (systemd's socket activation, [`crate::proto::sys::take_inherited`])
    /// where one matches a configured listener: by its `FileDescriptorName=`
    /// (`http0`, `https0`, `uwsgi0`, …) or by its address, as uWSGI matches
    /// them. A configured listener with no inherited socket is bound as usual;
    /// an inherited socket no listener wants is closed, with a warning.
    pub fn bind_inherited(config: Config, inherited: Vec<crate::proto::sys::Inherited>) -> Result<Pool, PoolError> {
        let limit = connection_limit(&config)?;
        let backlog = listener::effective_backlog(config.listen_backlog);
        let mut listeners = Vec::new();
        let inherited = std::cell::RefCell::new(inherited);
        let take_inherited = |name: &str, wanted: &dyn Fn(&socket2::SockAddr) -> bool| {
            let mut all = inherited.borrow_mut();
            let at = all.iter().position(|i| {
                i.name.as_deref() == Some(name) || socket2::SockRef::from(&i.fd).local_addr().is_ok_and(|a| wanted(&a))
            })?;
            let found = all.remove(at);
            info!(listener = name, "listening socket inherited from the service manager");
            Some(found.fd)
        };
        let bind_tcp = |name: &str, addr: std::net::SocketAddr| {
            if let Some(fd) = take_inherited(name, &|a| a.as_socket() == Some(addr)) {
                let l = std::net::TcpListener::from(fd);
                let ready = l.set_nonblocking(true).and_then(|()| l.local_addr());
                let local = ready.map_err(|source| PoolError::Bind {
                    name: name.to_owned(),
                    addr: addr.to_string(),
                    source,
                })?;
                return Ok::<_, PoolError>((l, Endpoint::Tcp(local)));
            }
            let l = listener::bind_tcp(addr, backlog).map_err(|source| PoolError::Bind {
                name: name.to_owned(),
                addr: addr.to_string(),
                source,
            })?;
            let local = Endpoint::Tcp(l.local_addr().unwrap_or(addr));
            Ok::<_, PoolError>((l, local))
        };
        for (i, addr) in config.http.iter().enumerate() {
            let name = format!("http{i}");
            let (l, local) = bind_tcp(&name, *addr)?;
            listeners.push((Arc::new(ListenerInfo::new(name, Role::Http, local)), Bound::Tcp(l)));
        }
        let mut tls_stores = Vec::new();
        let mut https_port = None;
        for (i, h) in config.https.iter().enumerate() {
            let name = format!("https{i}");
            let addr = h.addr;
            let store = Arc::new(TlsStore::new(h.settings.clone())?);
            let (l, local) = bind_tcp(&name, addr)?;
            https_port.get_or_insert(l.local_addr().map_or(addr.port(), |a| a.port()));
            tls_stores.push(store.clone());
            listeners.push((Arc::new(ListenerInfo::new(name, Role::Https(store), local)), Bound::Tcp(l)));
        }
        for (i, addr) in config.http_to_https.iter().enumerate() {
            let name = format!("redirect{i}");
            let (l, local) = bind_tcp(&name, *addr)?;
            let role = Role::RedirectToHttps { https_port: https_port.unwrap_or(443) };
            listeners.push((Arc::new(ListenerInfo::new(name, role, local)), Bound::Tcp(l)));
        }
        let mut unix_paths = Vec::new();
        for (i, addr) in config.uwsgi_sockets.iter().enumerate() {
            let name = format!("uwsgi{i}");
            match addr {
                UwsgiAddr::Tcp(a) => {
                    let (l, local) = bind_tcp(&name, *a)?;
                    listeners.push((Arc::new(ListenerInfo::new(name, Role::Uwsgi, local)), Bound::Tcp(l)));
                }
                UwsgiAddr::Unix(path) => {
                    let bind_err =
                        |source| PoolError::Bind { name: name.clone(), addr: path.display().to_string(), source };
                    let same_path = |a: &socket2::SockAddr| a.as_pathname() == Some(path.as_path());
                    if let Some(fd) = take_inherited(&name, &same_path) {
                        // The service manager made (and owns) the file: no chmod, no removal.
                        let l = std::os::unix::net::UnixListener::from(fd);
                        l.set_nonblocking(true).map_err(bind_err)?;
                        let local = Endpoint::unix(&path.display().to_string());
                        listeners.push((Arc::new(ListenerInfo::new(name, Role::Uwsgi, local)), Bound::Unix(l)));
                        continue;
                    }
                    let l = listener::bind_unix(path, backlog, config.chmod_socket).map_err(bind_err)?;
                    if let Some((uid, gid)) = config.chown_socket {
                        nix::unistd::chown(
                            path,
                            Some(nix::unistd::Uid::from_raw(uid)),
                            gid.map(nix::unistd::Gid::from_raw),
                        )
                        .map_err(|source| PoolError::Chown {
                            path: path.clone(),
                            uid,
                            source,
                        })?;
                    }
                    unix_paths.push(path.clone());
                    let local = Endpoint::unix(&path.display().to_string());
                    listeners.push((Arc::new(ListenerInfo::new(name, Role::Uwsgi, local)), Bound::Unix(l)));
                }
            }
        }
        let stats = match &config.stats {
            None => None,
            Some(UwsgiAddr::Tcp(a)) => {
                let (l, local) = bind_tcp("stats", *a)?;
                Some((Bound::Tcp(l), local))
            }
            Some(UwsgiAddr::Unix(path)) => {
                let bind_err =
                    |source| PoolError::Bind { name: "stats".into(), addr: path.display().to_string(), source };
                let l = listener::bind_unix(path, backlog, config.chmod_socket).map_err(bind_err)?;
                unix_paths.push(path.clone());
                Some((Bound::Unix(l), Endpoint::unix(&path.display().to_string())))
            }
        };
        let metrics = match config.metrics {
            Some(a) => {
                let (l, local) = bind_tcp("metrics", a)?;
                Some((Bound::Tcp(l), local))
            }
            None => None,
        };
        for unused in std::mem::take(&mut *inherited.borrow_mut()) {
            let addr = socket2::SockRef::from(&unused.fd).local_addr().ok().and_then(|a| a.as_socket());
            warn!(name = ?unused.name, ?addr, "the service manager passed a socket no listener is configured for; closing it (add the listener, or remove the socket from the unit)");
        }
        let mut statics = config.statics.resolve()?;
        statics.set_send_timeout(config.http_timeout);
        let path = config
            .zerg_server
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("zergpool-{}.sock", std::process::id())));
        let attach = Arc::new(AttachSocket::bind(&path, config.zerg_server_mode)?);
        let fifo = match &config.master_fifo {
            Some(p) => Some((p.clone(), control::open_fifo(p)?)),
            None => None,
        };
        // Files the pool created are given to the user it becomes, so that it can
        // still remove them, and zerglings running as that user can attach.
        if let Some((uid, gid)) = privileges::target_ids(config.uid, config.gid) {
            let mut owned = vec![path];
            if config.chown_socket.is_none() {
                owned.extend(unix_paths.iter().cloned());
            }
            owned.extend(fifo.as_ref().map(|(p, _)| p.clone()));
            for p in owned {
                nix::unistd::chown(&p, Some(uid), Some(gid)).map_err(|source| PoolError::Chown {
                    path: p.clone(),
                    uid: uid.as_raw(),
                    source,
                })?;
            }
        }
        let pid_err = |(path, source)| PoolError::PidFile { path, source };
        config.pidfiles.write_before_drop().map_err(pid_err)?;
        privileges::drop_privileges(config.uid, config.gid)?;
        config.pidfiles.write_after_drop().map_err(pid_err)?;
        Ok(Pool {
            config: Arc::new(config),
            listeners,
            tls_stores,
            statics,
            attach,
            fifo,
            unix_paths,
            limit,
            stats,
            metrics,
        })
    }

    /// The connection limit in effect.
    pub fn max_connections(&self) -> usize {
        self.limit.max()
    }

    /// The bound listeners (name and address), in declaration order.
    pub fn local_addrs(&self) -> Vec<(String, Endpoint)> {
        self.listeners.iter().map(|(i, _)| (i.name.clone(), i.local.addr.clone())).collect()
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
    pub async fn run_with(
        self,
        tx: mpsc::UnboundedSender<Control>,
        mut rx: mpsc::UnboundedReceiver<Control>,
    ) -> Result<(), PoolError> {
        let Pool { config, listeners, tls_stores, statics, attach, fifo, unix_paths, limit, stats, metrics } = self;
        let running = Running::start(config, Sockets { listeners, fifo, stats, metrics }, statics, &attach, limit, &tx);
        let kind = running.control_loop(&tls_stores, &mut rx).await;
        running.shutdown(kind, &mut rx).await;
        attach.remove_file();
        for path in running.fifo_path.iter().chain(&unix_paths) {
            let _ = std::fs::remove_file(path);
        }
        running.ctx.config.pidfiles.remove();
        info!("stopped");
        crate::events::emit("stopped", serde_json::json!({}));
        Ok(())
    }
}

/// The sockets a pool bound that [`Running::start`] puts to work.
struct Sockets {
    listeners: Vec<(Arc<ListenerInfo>, Bound)>,
    fifo: Option<(PathBuf, tokio::net::unix::pipe::Receiver)>,
    stats: Option<(Bound, Endpoint)>,
    metrics: Option<(Bound, Endpoint)>,
}

/// A started pool: what its control loop and its shutdown work with.
struct Running {
    ctx: Arc<Ctx>,
    /// Stops the accept loops.
    stop_accept: CancellationToken,
    /// Stops the attach socket, the sessions and the background tasks.
    stop_attach: CancellationToken,
    /// Connection tasks (classification, static responses, hand-backs).
    conns: TaskTracker,
    /// Accept loops, the attach socket, queue expiry, hand-backs, FIFO, touch files.
    background: TaskTracker,
    /// One task per attached zergling.
    sessions: TaskTracker,
    supervisor: Arc<Supervisor>,
    fifo_path: Option<PathBuf>,
}

impl Running {
    /// Starts everything: the accept loops, the attach socket and its sessions,
    /// queue expiry, hand-backs, the master FIFO, touch files, and the spawned
    /// zerglings.
    fn start(
        config: Arc<Config>,
        sockets: Sockets,
        statics: StaticOptions,
        attach: &Arc<AttachSocket>,
        limit: Arc<ConnLimit>,
        tx: &mpsc::UnboundedSender<Control>,
    ) -> Running {
        let Sockets { listeners, fifo, stats, metrics } = sockets;
        crate::reqlog::set_policy(config.request_log.clone());
        let ctx = Arc::new(Ctx {
            config: config.clone(),
            dispatcher: Arc::new(Dispatcher::new(config.queue_limit, config.queue_timeout)),
            static_settings: Arc::new(ArcSwap::from_pointee(statics.to_settings())),
            statics: ArcSwap::from_pointee(statics),
            relays: TaskTracker::new(),
            limit,
            stopping: CancellationToken::new(),
        });
        let stop_accept = CancellationToken::new();
        let conns = TaskTracker::new();
        let background = TaskTracker::new();
        let stats_source = Arc::new(crate::stats::Source {
            spawn_slots: config.zerglings.len(),
            dispatcher: ctx.dispatcher.clone(),
            limit: ctx.limit.clone(),
            sockets: listeners
                .iter()
                .map(|(i, _)| crate::stats::SocketInfo {
                    addr: i.local.addr.clone(),
                    proto: match i.role.kind() {
                        crate::proto::ListenerKind::Uwsgi => "uwsgi",
                        crate::proto::ListenerKind::Https => "https",
                        _ => "http",
                    },
                    // As bound (effective_backlog, without its warning again).
                    backlog: listener::somaxconn().map_or(config.listen_backlog, |m| config.listen_backlog.min(m)),
                })
                .collect(),
            http: config.stats_http,
            minified: config.stats_minified,
        });

        // zerg-direct-accept(-http): zerglings get a copy of every uwsgi (and plain
        // http) listener and accept there themselves; the pool's accept loop for it
        // pauses while they do.
        let mut direct = Vec::new();
        for (info, l) in &listeners {
            let kind = match info.role {
                Role::Uwsgi if config.direct_accept => crate::proto::ListenerKind::Uwsgi,
                Role::Http if config.direct_accept_http => crate::proto::ListenerKind::Http,
                _ => continue,
            };
            match l.duplicate() {
                Ok(fd) => direct.push(DirectListener {
                    name: info.name.clone(),
                    kind,
                    local: info.local.addr.clone(),
                    fd: Arc::new(fd),
                    buffer_size: match kind {
                        crate::proto::ListenerKind::Uwsgi => config.uwsgi_buffer_size as u32,
                        _ => u32::try_from(config.buffer_size).unwrap_or(u32::MAX),
                    },
                    head_timeout: config.http_timeout,
                }),
                Err(e) => {
                    warn!(listener = %info.name, error = %e, "cannot share the listener; the pool accepts there alone")
                }
            }
        }
        if config.direct_accept && config.uwsgi_sockets.is_empty() {
            warn!("zerg-direct-accept applies to uwsgi listeners only and there is none: it has no effect (add --socket ADDR, or drop the option)");
        }
        if config.direct_accept_http && config.http.is_empty() {
            warn!("zerg-direct-accept-http applies to plain http listeners only and there is none: it has no effect (add --http ADDR, or drop the option)");
        }
        for (info, l) in listeners {
            info!(listener = %info.name, kind = info.role.kind().as_str(), addr = %info.local.addr, "listening");
            crate::events::emit(
                "listening",
                serde_json::json!({ "listener": info.name, "kind": info.role.kind().as_str(), "addr": info.local.addr.to_string() }),
            );
            let pause = direct.iter().any(|d| d.name == info.name).then(|| ctx.dispatcher.direct_ready());
            let l = match AnyListener::from_bound(l) {
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
                pause,
                ctx.limit.clone(),
                move |info, accepted, slot| conn::handle_connection(c.clone(), info, accepted, slot),
            ));
        }
        let stop_attach = CancellationToken::new();
        let sessions = TaskTracker::new();
        info!(path = %attach.path().display(), "zerg-server ready");
        crate::events::emit(
            "ready",
            serde_json::json!({ "pid": std::process::id(), "zerg_server": attach.path().display().to_string() }),
        );
        crate::notify::ready();
        background.spawn(attach::serve(
            attach.clone(),
            ctx.dispatcher.clone(),
            AttachPolicy {
                allow_uids: config.zerg_allow_uid.clone(),
                statics: ctx.static_settings.clone(),
                direct,
                ack_timeout: config.ack_timeout,
                timeouts: crate::proto::Timeouts::new(
                    config.http_timeout,
                    config.keepalive_timeout,
                    Some(config.worker_reload_mercy),
                ),
                buffer_size: u32::try_from(config.buffer_size).unwrap_or(u32::MAX),
                request_log: config.request_log.clone(),
            },
            stop_attach.clone(),
            sessions.clone(),
        ));
        background.spawn(expire_queue(ctx.dispatcher.clone(), stop_attach.clone()));
        background.spawn(crate::notify::run(ctx.dispatcher.clone(), stop_attach.clone()));
        if let Some((bound, local)) = metrics {
            let source = Arc::new(crate::metrics::Source {
                dispatcher: ctx.dispatcher.clone(),
                limit: ctx.limit.clone(),
                listeners: stats_source.sockets.iter().map(|s| s.addr.clone()).collect(),
            });
            match AnyListener::from_bound(bound) {
                Ok(l) => {
                    background.spawn(crate::metrics::serve(l, local, source, stop_attach.clone()));
                }
                Err(e) => warn!(error = %e, "cannot serve metrics"),
            }
        }
        if let Some((bound, local)) = stats {
            match AnyListener::from_bound(bound) {
                Ok(l) => {
                    background.spawn(crate::stats::serve(l, local, stats_source, stop_attach.clone()));
                }
                Err(e) => warn!(error = %e, "cannot serve stats"),
            }
        }
        let (handback_tx, handback_rx) = mpsc::unbounded_channel();
        ctx.dispatcher.set_handback_sink(handback_tx);
        background.spawn(serve_handbacks(ctx.clone(), handback_rx, conns.clone(), stop_attach.clone()));
        let fifo_path = match fifo {
            Some((path, rx)) => {
                info!(path = %path.display(), "master FIFO ready");
                background.spawn(control::read_fifo(rx, tx.clone(), stop_attach.clone()));
                Some(path)
            }
            None => None,
        };
        background.spawn(control::watch_touch_files(
            config.touch_logreopen.clone(),
            Control::ReopenLog { why: "touch-logreopen" },
            tx.clone(),
            stop_attach.clone(),
        ));
        for (files, why) in [(&config.touch_reload, "touch-reload"), (&config.touch_chain_reload, "touch-chain-reload")]
        {
            background.spawn(control::watch_touch_files(
                files.clone(),
                Control::ChainReload { why },
                tx.clone(),
                stop_attach.clone(),
            ));
        }
        let settings =
            supervise::Settings { worker_mercy: config.worker_reload_mercy, attach_timeout: config.attach_timeout };
        let supervisor =
            Supervisor::start(&config.zerglings, attach.path().to_owned(), ctx.dispatcher.clone(), settings);
        Running { ctx, stop_accept, stop_attach, conns, background, sessions, supervisor, fifo_path }
    }

    /// Serves until a stop is asked for: reloads (certificates, static-map, a
    /// chain reload of the zerglings) on the way.
    async fn control_loop(&self, tls_stores: &[Arc<TlsStore>], rx: &mut mpsc::UnboundedReceiver<Control>) -> StopKind {
        loop {
            match rx.recv().await {
                Some(Control::ReopenLog { why }) => match crate::logfile::reopen() {
                    Ok(()) => info!(trigger = why, "log reopened"),
                    Err(e) => {
                        warn!(trigger = why, error = %e, "cannot reopen the log file; still writing to the old one")
                    }
                },
                Some(Control::ChainReload { why }) => {
                    if self.ctx.config.log_reopen {
                        if let Err(e) = crate::logfile::reopen() {
                            warn!(error = %e, "cannot reopen the log file (log-reopen); still writing to the old one");
                        }
                    }
                    info!(trigger = why, "reload");
                    reload_certificates(tls_stores);
                    reload_statics(&self.ctx);
                    crate::notify::reloading();
                    let sup = self.supervisor.clone();
                    tokio::spawn(async move {
                        let _ = sup.chain_reload().await;
                        crate::notify::ready();
                    });
                }
                Some(Control::GracefulStop) => return StopKind::Graceful,
                Some(Control::ImmediateStop) | None => return StopKind::Immediate,
            }
        }
    }

    /// Stops (see the module docs); a second stop request during a graceful one
    /// makes it immediate. Returns when every task the pool started has ended.
    async fn shutdown(&self, kind: StopKind, rx: &mut mpsc::UnboundedReceiver<Control>) {
        let ctx = &self.ctx;
        let mercy = ctx.config.reload_mercy;
        info!(?kind, "stopping");
        crate::notify::stopping();
        self.stop_accept.cancel();
        ctx.stopping.cancel();
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
                _ = graceful_stop(ctx, &self.conns, &self.supervisor) => true,
                _ = second => false,
            };
            if finished {
                // Zerglings are gone; what they wrote may still be on its way to
                // TLS clients through the relays, and 503s being written.
                ctx.relays.close();
                if tokio::time::timeout(mercy, ctx.relays.wait()).await.is_err() {
                    warn!("TLS relays still running after reload-mercy; closing them");
                }
                ctx.dispatcher.finish_answers(mercy).await;
            } else {
                info!("second stop request: stopping at once");
                self.supervisor.kill_now().await;
            }
        } else {
            self.supervisor.kill_now().await;
        }
        self.stop_attach.cancel();
        for p in ctx.dispatcher.take_queue() {
            drop(p); // closing is all we can still do
        }
        // Every task the pool started ends before it exits (bounded: sessions and
        // background tasks stop at once on `stop_attach`).
        for (what, tracker) in
            [("attach sessions", &self.sessions), ("background tasks", &self.background), ("connections", &self.conns)]
        {
            tracker.close();
            if tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.is_err() {
                warn!("{what} still running 5 s after the stop; exiting anyway");
            }
        }
    }
}

/// Re-reads every https listener's certificates; a failure keeps the old ones.
fn reload_certificates(stores: &[Arc<TlsStore>]) {
    for store in stores {
        match store.reload() {
            Ok(()) => info!(certificate = %store.settings().default.cert.display(), "certificates reloaded"),
            Err(e) => {
                warn!(error = %crate::error_chain(&e), "certificate reload failed; keeping the certificates in use")
            }
        }
    }
}

/// Builds static-map again from the configuration: folders are resolved anew (a
/// `current` symlink switched by a deploy is followed), the resolution cache starts
/// empty. Zerglings attaching from now on (the chain reload's replacements) get the
/// new options; a failure keeps the old ones.
fn reload_statics(ctx: &Ctx) {
    if ctx.config.statics.is_empty() {
        return;
    }
    match ctx.config.statics.resolve() {
        Ok(mut statics) => {
            statics.set_send_timeout(ctx.config.http_timeout);
            ctx.static_settings.store(Arc::new(statics.to_settings()));
            ctx.statics.store(Arc::new(statics));
            info!("static-map reloaded");
        }
        Err(e) => warn!(error = %crate::error_chain(&e), "static-map reload failed; keeping the maps in use"),
    }
}

/// The graceful part of stopping (see the module docs).
async fn graceful_stop(ctx: &Ctx, conns: &TaskTracker, supervisor: &Supervisor) {
    let mercy = ctx.config.reload_mercy;
    conns.close();
    if tokio::time::timeout(mercy, conns.wait()).await.is_err() {
        warn!("connections still being classified after reload-mercy; going on");
    }
    // The queue empties into zerglings, or expires (503) within zerg-queue-timeout.
    let queue_limit = ctx.config.queue_timeout + Duration::from_secs(1);
    let _ = tokio::time::timeout(queue_limit, ctx.dispatcher.wait_until(|d| d.queue_len() == 0)).await;
    supervisor.stop(mercy).await;
}

/// Answers 503 to queued connections older than `zerg-queue-timeout`: sleeps until
/// the oldest one's deadline, and is woken when the front gets an earlier one (a
/// connection queued into an empty queue). Connections leaving the queue only make
/// the front's deadline later, so waking early for them is never needed.
async fn expire_queue(dispatcher: Arc<Dispatcher>, stop: CancellationToken) {
    loop {
        let next = dispatcher.next_expiry().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next.unwrap_or_else(tokio::time::Instant::now)), if next.is_some() => {}
            _ = dispatcher.front_changed() => {}
        }
        for p in dispatcher.expire(Instant::now()) {
            crate::warn_limited!(conn = %p.meta.conn, waited_ms = p.arrived.elapsed().as_millis() as u64, "no zergling took the connection in time: 503");
            dispatcher.answer(p, Canned::Unavailable);
        }
    }
}

/// Connections given back by draining zerglings: classified again like new ones.
async fn serve_handbacks(
    ctx: Arc<Ctx>,
    mut rx: mpsc::UnboundedReceiver<(OwnedFd, ConnMeta)>,
    conns: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let (fd, meta) = tokio::select! {
            _ = stop.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let span = tracing::debug_span!("conn", listener = %meta.listener, peer = %meta.peer, handed_back = true);
        conns.spawn(conn::handed_back(ctx.clone(), fd, meta).instrument(span));
    }
}

/// Applies `max-fd` (or raises the soft descriptor limit to the hard one) and
/// derives the connection limit from the result, keeping a reserve.
fn connection_limit(config: &Config) -> Result<Arc<ConnLimit>, PoolError> {
    let nofile = match limit::raise_nofile(config.max_fd) {
        Ok(n) => n,
        Err(source) => match config.max_fd {
            Some(max_fd) => return Err(PoolError::MaxFd { max_fd, source }),
            None => {
                warn!(error = %source, "cannot raise the descriptor limit; keeping it");
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                    .map_or(1024, |(soft, _)| soft)
            }
        },
    };
    let fits = limit::fitting_max_connections(nofile);
    let max = match config.max_connections {
        Some(n) if n > fits => {
            warn!(max_connections = n, descriptors = nofile, fits,
                "zerg-max-connections is more than the descriptor limit leaves room for; using {fits} (raise max-fd to allow more)");
            fits
        }
        Some(n) => n,
        None => limit::default_max_connections(nofile),
    };
    info!(max_connections = max, descriptors = nofile, "connection limit");
    Ok(ConnLimit::new(max))
}
