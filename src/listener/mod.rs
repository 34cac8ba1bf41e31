//! Listeners: binding (socket2) and the accept loop.
//!
//! Listeners are bound once, before anything else runs and before privileges
//! are dropped (`privileges`), and live as long as the pool. The accept loop
//! survives anything one connection does: per-connection work runs in its own
//! task, `EMFILE`/`ENFILE` make the loop back off instead of spinning, and every
//! other accept error is logged and skipped.

pub mod limit;
pub mod privileges;
pub mod tls;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{warn, Instrument};

use crate::proto::ListenerKind;
use crate::stream::ConnStream;
use zergpool_core::net::is_fd_exhaustion;
pub use zergpool_core::net::{Accepted, AnyListener, Bound, Endpoint, ListenAddr};

/// What a listener does with the connections it accepts.
#[derive(Debug, Clone)]
pub enum Role {
    /// Plain HTTP/1.1 (`http`).
    Http,
    /// HTTPS, TLS terminated by the pool (`https`).
    Https(Arc<tls::TlsStore>),
    /// The uwsgi protocol (`socket`, `uwsgi-socket`).
    Uwsgi,
    /// Answers every request with a redirect to https (`http-to-https`).
    RedirectToHttps {
        /// The port of the https URL (left out of the URL when 443).
        https_port: u16,
    },
}

impl Role {
    /// What the zergling is told the connection speaks.
    pub fn kind(&self) -> ListenerKind {
        match self {
            Role::Http | Role::RedirectToHttps { .. } => ListenerKind::Http,
            Role::Https(_) => ListenerKind::Https,
            Role::Uwsgi => ListenerKind::Uwsgi,
        }
    }
}

/// What a connection knows about the listener that accepted it.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    /// Its name in logs and metadata (`http0`, `https0`, `uwsgi0`, …).
    pub name: String,
    /// What it does.
    pub role: Role,
    /// The address it is bound to (`127.0.0.1:8080`, or a Unix path).
    pub local: ListenAddr,
}

impl ListenerInfo {
    /// Describes a listener bound to `local`.
    pub fn new(name: String, role: Role, local: Endpoint) -> Self {
        ListenerInfo { name, role, local: ListenAddr::new(local) }
    }
}

/// Reads `net.core.somaxconn`, the kernel's cap on listen backlogs.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?.trim().parse().ok()
}

/// The backlog to use for a requested one, clamped to `somaxconn` with a warning.
pub fn effective_backlog(requested: u32) -> u32 {
    match somaxconn() {
        Some(max) if requested > max => {
            warn!(
                requested,
                somaxconn = max,
                "listen backlog is larger than net.core.somaxconn; using somaxconn (raise the sysctl to go higher)"
            );
            max
        }
        _ => requested,
    }
}

/// Binds a TCP listener (`SO_REUSEADDR`, IPv6 sockets IPv6-only so that `[::]` and
/// `0.0.0.0` can both be bound), non-blocking, with `TCP_NODELAY`, which Linux
/// copies to every accepted socket (one `setsockopt` per listener, not per
/// connection).
pub fn bind_tcp(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Binds a Unix stream listener at `path` (a stale socket file is replaced; any
/// other file is an error), with file mode `mode` when given (else the umask's).
pub fn bind_unix(path: &Path, backlog: u32, mode: Option<u32>) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if !md.file_type().is_socket() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket"));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "another process listens on this socket"));
        }
        std::fs::remove_file(path)?;
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    socket.set_nonblocking(true)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(std::os::unix::net::UnixListener::from(std::os::fd::OwnedFd::from(socket)))
}

/// Accepts connections until `stop` is cancelled, running `handle` for each one in
/// its own tracked task with a span naming the listener, the peer and an id.
///
/// Each connection takes a slot of `limit` before it is accepted: at the limit
/// the loop stops accepting (see [`limit`]). When `accept` runs out of
/// descriptors, the longest-waiting heads are closed and the loop backs off.
///
/// While `pause` says true (zerglings accept on this listener themselves,
/// `zerg-direct-accept`), the socket is taken out of the runtime, so that the pool
/// is not even woken by the connections the zerglings take; it comes back as soon as
/// `pause` says false.
pub async fn accept_loop<F, Fut>(
    mut listener: AnyListener,
    info: Arc<ListenerInfo>,
    stop: CancellationToken,
    tracker: TaskTracker,
    mut pause: Option<tokio::sync::watch::Receiver<bool>>,
    limit: Arc<limit::ConnLimit>,
    handle: F,
) where
    F: Fn(Arc<ListenerInfo>, Accepted, limit::ConnSlot) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut accepted: u64 = 0;
    loop {
        if let Some(p) = pause.as_mut() {
            if *p.borrow_and_update() {
                listener = match pause_until_needed(listener, &info, p, &stop).await {
                    Some(l) => l,
                    None => return,
                };
            }
        }
        let paused = async {
            match pause.as_mut() {
                Some(p) => {
                    let _ = p.wait_for(|paused| *paused).await;
                }
                None => std::future::pending().await,
            }
        };
        let slot = tokio::select! {
            _ = stop.cancelled() => return,
            s = limit.slot() => s,
        };
        let res = tokio::select! {
            _ = stop.cancelled() => return,
            _ = paused => continue,
            r = listener.accept(&info.local) => r,
        };
        match res {
            Ok(conn) => {
                accepted += 1;
                crate::metrics::metrics().accepted.inc();
                let span = tracing::debug_span!("conn", listener = %info.name, peer = %conn.peer, n = accepted);
                tracker.spawn(handle(info.clone(), conn, slot).instrument(span));
            }
            Err(e) if is_fd_exhaustion(&e) => {
                drop(slot);
                let closed = limit.evict_oldest(limit::EVICT_ON_EXHAUSTION, Duration::ZERO);
                crate::warn_limited!(listener = %info.name, error = %e, ?closed, open = limit.open(),
                    "out of file descriptors: closed the longest-waiting heads, pausing accept for 100 ms (lower zerg-max-connections or raise max-fd)");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                // ECONNABORTED and friends concern one connection only.
                tracing::debug!(listener = %info.name, error = %e, "accept failed");
            }
        }
    }
}

/// Serves every connection of a side listener (`stats`, `metrics`: one short
/// answer per connection, outside the connection limit) with `answer`, each in
/// a task of its own, until `stop`. `what` names it in the logs.
pub async fn serve_each<F, Fut>(
    listener: AnyListener,
    local: Endpoint,
    stop: CancellationToken,
    what: &'static str,
    answer: F,
) where
    F: Fn(ConnStream) -> Fut,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    let local = ListenAddr::new(local);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept(&local) => r,
        };
        match accepted {
            Ok(conn) => {
                let fut = answer(conn.stream);
                tokio::spawn(async move {
                    if let Err(e) = fut.await {
                        tracing::debug!(error = %e, what, "client");
                    }
                });
            }
            Err(e) if is_fd_exhaustion(&e) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => tracing::debug!(error = %e, what, "accept failed"),
        }
    }
}

/// Waits, with the socket out of the runtime, until `pause` turns false (then
/// registers it again) or `stop` fires (`None`).
async fn pause_until_needed(
    listener: AnyListener,
    info: &ListenerInfo,
    pause: &mut tokio::sync::watch::Receiver<bool>,
    stop: &CancellationToken,
) -> Option<AnyListener> {
    let bound = match listener.into_bound() {
        Ok(b) => b,
        Err(e) => {
            // Cannot happen with a socket the runtime holds; stay out of the way.
            warn!(listener = %info.name, error = %e, "cannot pause accepting; the pool stops accepting here");
            stop.cancelled().await;
            return None;
        }
    };
    tracing::info!(listener = %info.name, "zerglings accept here themselves; the pool pauses accepting");
    tokio::select! {
        _ = stop.cancelled() => return None,
        _ = pause.wait_for(|paused| !*paused) => {}
    }
    tracing::info!(listener = %info.name, "no zergling accepts here; the pool accepts (and queues) again");
    match AnyListener::from_bound(bound) {
        Ok(l) => Some(l),
        Err(e) => {
            warn!(listener = %info.name, error = %e, "cannot register the listener again; the pool stops accepting here");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepted sockets inherit TCP_NODELAY from the listener (Linux), which is
    /// why `accept` does not set it.
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay() {
        let bound = bind_tcp("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = bound.local_addr().unwrap();
        let listener = AnyListener::from_bound(Bound::Tcp(bound)).unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let conn = listener.accept(&ListenAddr::new(Endpoint::Tcp(addr))).await.unwrap();
        let crate::stream::ConnStream::Tcp(s) = conn.stream else { panic!("a TCP connection") };
        assert!(s.nodelay().unwrap());
    }
}
