//! Listeners: binding (socket2) and the accept loop.
//!
//! Listeners are bound once, before anything else runs (and, in a later stage,
//! before privileges are dropped), and live as long as the pool. The accept loop
//! survives anything one connection does: per-connection work runs in its own
//! task, `EMFILE`/`ENFILE` make the loop back off instead of spinning, and every
//! other accept error is logged and skipped.

pub mod tls;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{warn, Instrument};

use crate::proto::ListenerKind;

/// What a connection knows about the listener that accepted it.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    /// Its name in logs and metadata (`http0`, `http1`, …).
    pub name: String,
    /// What it speaks.
    pub kind: ListenerKind,
    /// The address it is bound to.
    pub local: SocketAddr,
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
/// `0.0.0.0` can both be bound), non-blocking.
pub fn bind_tcp(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Accepts connections until `stop` is cancelled, running `handle` for each one in
/// its own tracked task with a span naming the listener, the peer and an id.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    info: Arc<ListenerInfo>,
    stop: CancellationToken,
    tracker: TaskTracker,
    handle: F,
) where
    F: Fn(Arc<ListenerInfo>, TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut accepted: u64 = 0;
    loop {
        let res = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match res {
            Ok((stream, peer)) => {
                accepted += 1;
                let _ = stream.set_nodelay(true);
                let span = tracing::debug_span!("conn", listener = %info.name, %peer, n = accepted);
                tracker.spawn(handle(info.clone(), stream, peer).instrument(span));
            }
            Err(e) if is_fd_exhaustion(&e) => {
                warn!(listener = %info.name, error = %e, "out of file descriptors; pausing accept for 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                // ECONNABORTED and friends concern one connection only.
                tracing::debug!(listener = %info.name, error = %e, "accept failed");
            }
        }
    }
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE)
}
