//! Direct accept (`zerg-direct-accept` in the pool, LISTEN in the protocol): the
//! zergling accepts on one of the pool's uwsgi listeners itself and serves what it
//! accepts, static-map included, with no pool in between.
//!
//! The zergling stops accepting when it drains or when its session with the pool
//! ends (a pool that comes back must be able to bind its ports again), and never
//! serves more than its capacity at once: past it, connections wait in the listen
//! queue for another zergling, or for the pool, which accepts again as soon as no
//! ready zergling does.

use std::error::Error as StdError;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Body;
use socket2::Socket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{report_http1_end, run_http1, uwsgi, ConnInfo, Http1Ctx, Http1End, Prefixed, Worker, ZerglingService};
use zergpool_core::net::{is_fd_exhaustion, Accepted, AnyListener, Bound, Endpoint, ListenAddr};
use zergpool_core::proto::{Channel, ConnId, ConnMeta, ListenerKind, ZerglingId};

/// Ids of connections accepted directly: counted down from the top, so that they
/// never meet the pool's (counted up from 1) in the logs.
static DIRECT_CONN_IDS: AtomicU64 = AtomicU64::new(u64::MAX);

/// A pool listener this zergling accepts on.
pub(super) struct Acceptor {
    /// The pool's name for it (`uwsgi0`, `http0`, …).
    pub(super) name: String,
    /// What its connections speak: uwsgi, or plain HTTP/1.1
    /// (`zerg-direct-accept-http`).
    kind: ListenerKind,
    /// The address it is bound to, as the pool said.
    pub(super) local: ListenAddr,
    listener: AnyListener,
    settings: uwsgi::UwsgiSettings,
}

impl Acceptor {
    /// Takes a listening socket received with LISTEN (TCP or Unix) and registers it
    /// with the runtime.
    pub(super) fn new(
        fd: OwnedFd,
        name: String,
        kind: ListenerKind,
        local: Endpoint,
        settings: uwsgi::UwsgiSettings,
    ) -> io::Result<Self> {
        if !matches!(kind, ListenerKind::Uwsgi | ListenerKind::Http) {
            return Err(io::Error::other(format!("{name}: cannot accept {} connections directly", kind.as_str())));
        }
        let socket = Socket::from(fd);
        if !socket.is_listener()? {
            return Err(io::Error::other(format!("{name}: the socket received is not listening")));
        }
        socket.set_nonblocking(true)?;
        let domain = socket.domain()?;
        let bound = if domain == socket2::Domain::UNIX {
            Bound::Unix(socket.into())
        } else if domain == socket2::Domain::IPV4 || domain == socket2::Domain::IPV6 {
            Bound::Tcp(socket.into())
        } else {
            return Err(io::Error::other(format!("{name}: not a TCP or Unix listening socket ({domain:?})")));
        };
        Ok(Acceptor { name, kind, local: ListenAddr::new(local), listener: AnyListener::from_bound(bound)?, settings })
    }
}

/// Accepts and serves until the zergling drains or `session_over` fires.
pub(super) async fn accept_loop<S, B>(
    acceptor: Acceptor,
    id: ZerglingId,
    worker: Arc<Worker<S>>,
    chan: Arc<Channel>,
    session_over: CancellationToken,
) where
    S: ZerglingService<B>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let capacity = worker.config.capacity.max(1) as usize;
    loop {
        // At capacity: leave new connections in the listen queue for others.
        // Woken when a connection ends (no timer: see IdleConns::wait_below).
        tokio::select! {
            _ = session_over.cancelled() => return,
            _ = worker.drain_requested.cancelled() => return,
            _ = worker.idle.wait_below(capacity) => {}
        }
        // The same accept as the pool's (net::AnyListener::accept: addresses as
        // the pool would record them), and the same back-off when out of
        // descriptors; what gates the loop differs: capacity and drain here, the
        // connection limit and the pause for direct accept there.
        let Accepted { stream, peer, local } = tokio::select! {
            _ = session_over.cancelled() => break,
            _ = worker.drain_requested.cancelled() => break,
            _ = worker.drain.cancelled() => break,
            r = acceptor.listener.accept(&acceptor.local) => match r {
                Ok(x) => x,
                Err(e) if is_fd_exhaustion(&e) => {
                    zergpool_core::warn_limited!(listener = %acceptor.name, error = %e,
                        "out of file descriptors: pausing accept for 100 ms (raise the descriptor limit or lower --capacity)");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => {
                    // ECONNABORTED and friends concern one connection only.
                    debug!(listener = %acceptor.name, error = %e, "accept failed");
                    continue;
                }
            },
        };
        let conn = ConnId(DIRECT_CONN_IDS.fetch_sub(1, Ordering::Relaxed));
        let meta = ConnMeta::accepted(conn, acceptor.name.clone(), acceptor.kind, peer, local);
        let info = Arc::new(ConnInfo::new(id, &meta, &worker.strings));
        worker.tally.accepted.fetch_add(1, Ordering::Relaxed);
        let service = worker.service.clone();
        // Counted with the pool's connections: they share the capacity.
        let owned = super::Owned::new(&worker.idle);
        if acceptor.kind == ListenerKind::Http {
            let (worker, chan) = (worker.clone(), chan.clone());
            worker.conns.clone().spawn(async move {
                let handback = || worker.handback.load(Ordering::SeqCst);
                let ctx = Http1Ctx {
                    info: info.clone(),
                    service,
                    statics: worker.statics.load_full(),
                    drain: worker.drain.clone(),
                    going_away: worker.going_away.clone(),
                    timeouts: **worker.timeouts.load(),
                    head_limit: worker.head_limit.load(Ordering::Relaxed),
                    idle: Some(worker.idle.clone()),
                    watch_clients: worker.config.watch_clients,
                };
                let end = Box::pin(run_http1(Prefixed::new(Bytes::new(), stream), ctx, handback)).await;
                drop(owned);
                // The pool never counted it: only a hand-back is news to it.
                if let Http1End::HandBack { .. } = end {
                    Box::pin(report_http1_end(&chan, &worker.tally, &info, end)).await;
                } else {
                    worker.tally.finished.fetch_add(1, Ordering::Relaxed);
                }
            });
            continue;
        }
        let mut settings = acceptor.settings.clone();
        // Static-map as the pool's last WELCOME said.
        settings.statics = Some(worker.statics.load_full());
        let release = super::watch_of(&worker.config, &stream).map(|(w, r)| {
            settings.watch = Some(w);
            r
        });
        worker.conns.spawn(async move {
            // Released (the duplicate closed) when the connection is over.
            let _release = release;
            Box::pin(uwsgi::serve_uwsgi(stream, info, service, settings)).await;
            drop(owned);
        });
    }
    info!(listener = %acceptor.name, "stopped accepting on the pool's listener");
}
