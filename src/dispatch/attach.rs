//! The attach socket (`zerg-server`) and the task that speaks to one zergling.
//!
//! The door is locked twice: the socket file's mode (0600 unless
//! `chmod-zerg-server`), and an `SO_PEERCRED` check of every peer against root, the
//! pool's own uid and `zerg-allow-uid`.
//!
//! Descriptor ownership in a zergling's task: a connection taken from the order
//! channel is sent with CONN and kept in `unacked` until the zergling's ACK, which
//! drops (closes) the pool's copy. When the channel ends for any reason, the task
//! first unregisters (so nothing new arrives), then re-dispatches everything still
//! unacknowledged and everything left in the order channel: nothing is lost.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::{Dispatcher, Order, Pending};
use crate::proto::{self, Channel, ChannelError, ConnId, Message, RecvBuf, SeqpacketListener, ZerglingId};

/// How long an attaching peer has to send HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the attach socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// Another live process listens on the path.
    #[error("{0}: another process is listening on this zerg-server socket; stop it or choose another path")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0}: exists and is not a socket; remove it or choose another zerg-server path")]
    NotASocket(PathBuf),
    /// A system call failed.
    #[error("{path}: cannot set up the zerg-server socket")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The bound attach socket. Removing the file on drop is the owner's job
/// ([`AttachSocket::remove_file`]), since only the pool that created it may do so.
#[derive(Debug)]
pub struct AttachSocket {
    listener: SeqpacketListener,
    path: PathBuf,
}

impl AttachSocket {
    /// Binds `path` with file mode `mode`. A stale socket file (nobody listening)
    /// is replaced; a live one is an error.
    pub fn bind(path: &Path, mode: u32) -> Result<Self, AttachError> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let io_err = |source| AttachError::Io { path: path.to_owned(), source };
        match std::fs::symlink_metadata(path) {
            Ok(md) if !md.file_type().is_socket() => return Err(AttachError::NotASocket(path.to_owned())),
            Ok(_) if proto::someone_listens(path) => return Err(AttachError::InUse(path.to_owned())),
            Ok(_) => {
                warn!(path = %path.display(), "replacing a stale zerg-server socket file");
                std::fs::remove_file(path).map_err(io_err)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        // Bind under a tight umask so the socket is never reachable with a looser
        // mode, then set the requested mode.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = SeqpacketListener::bind(path, 128);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(io_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err)?;
        Ok(AttachSocket { listener, path: path.to_owned() })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file, if it is still ours.
    pub fn remove_file(&self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                warn!(path = %self.path.display(), error = %e, "could not remove the zerg-server socket");
            }
        }
    }
}

/// Who may attach, and what they are told when they do.
#[derive(Debug, Clone)]
pub struct AttachPolicy {
    /// Uids allowed besides root and the pool's effective uid.
    pub allow_uids: Vec<u32>,
    /// The static-map options sent in WELCOME (`key=value`); swapped on SIGHUP.
    pub statics: Arc<arc_swap::ArcSwap<Vec<String>>>,
    /// Listeners sent with LISTEN to zerglings that can accept on them
    /// (`zerg-direct-accept`); empty when the option is off.
    pub direct: Vec<DirectListener>,
}

/// A listener zerglings accept on themselves (`zerg-direct-accept`): what LISTEN says
/// about it, and the pool's copy of its descriptor.
#[derive(Debug, Clone)]
pub struct DirectListener {
    /// The listener's name (`uwsgi0`, …).
    pub name: String,
    /// The address it is bound to.
    pub local: String,
    /// The listening socket (a duplicate of the pool's own).
    pub fd: Arc<std::os::fd::OwnedFd>,
    /// Largest uwsgi packet head (`buffer-size`).
    pub buffer_size: u32,
    /// Time a client has to send its packet.
    pub head_timeout: Duration,
}

/// The HELLO tag of a zergling that can accept on uwsgi listeners itself.
pub const ACCEPT_UWSGI_TAG: &str = "accept=uwsgi";

impl AttachPolicy {
    fn allows(&self, uid: u32) -> bool {
        uid == 0 || uid == nix::unistd::geteuid().as_raw() || self.allow_uids.contains(&uid)
    }
}

/// Accepts zerglings until `stop` is cancelled.
pub async fn serve(
    socket: Arc<AttachSocket>,
    dispatcher: Arc<Dispatcher>,
    policy: AttachPolicy,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let chan = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.listener.accept() => r,
        };
        match chan {
            Ok(chan) => {
                let (d, p) = (dispatcher.clone(), policy.clone());
                tracker.spawn(zergling_session(chan, d, p));
            }
            Err(e) => {
                warn!(error = %e, "accept on the zerg-server socket failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Handshake, then the life of one attached zergling.
async fn zergling_session(chan: Channel, dispatcher: Arc<Dispatcher>, policy: AttachPolicy) {
    let (pid, capacity, tags) = match chan.recv_timeout(HELLO_TIMEOUT).await {
        Ok((Message::Hello { version, pid, capacity, tags }, _)) => {
            if version != proto::VERSION {
                let reason =
                    format!("protocol version {version} is not supported; this pool speaks version {}", proto::VERSION);
                warn!(pid, version, "attach refused: unsupported protocol version");
                let _ = chan.send(&Message::Refuse { reason }, None).await;
                return;
            }
            if capacity == 0 {
                warn!(pid, "attach refused: capacity 0");
                let _ = chan.send(&Message::Refuse { reason: "capacity must be at least 1".into() }, None).await;
                return;
            }
            (pid, capacity, tags)
        }
        Ok((other, _)) => {
            warn!(message = other.name(), "attach refused: first message was not HELLO");
            return;
        }
        Err(e) => {
            debug!(error = %e, "attaching peer went away before HELLO");
            return;
        }
    };
    let cred = match getsockopt(&chan.as_fd(), sockopt::PeerCredentials) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "SO_PEERCRED failed on an attaching peer; refused");
            return;
        }
    };
    // Checked after HELLO, so that the refusal is the answer to it.
    if !policy.allows(cred.uid()) {
        warn!(uid = cred.uid(), pid = cred.pid(), "attach refused: uid not allowed (add it with zerg-allow-uid)");
        let reason = format!(
            "uid {} is not allowed to attach to this pool (the pool's zerg-allow-uid option lists who is)",
            cred.uid()
        );
        let _ = chan.send(&Message::Refuse { reason }, None).await;
        return;
    }
    let direct = !policy.direct.is_empty() && tags.iter().any(|t| t == ACCEPT_UWSGI_TAG);
    let (id, orders) = dispatcher.register(pid, capacity, direct);
    let welcome = Message::Welcome { version: proto::VERSION, id, statics: policy.statics.load().to_vec() };
    if let Err(e) = chan.send(&welcome, None).await {
        warn!(%id, error = %e, "could not welcome zergling");
        dispatcher.unregister(id);
        recover(&dispatcher, id, orders, HashMap::new());
        return;
    }
    info!(%id, pid, capacity, tags = tags.join(","), "zergling attached");
    if direct {
        for l in &policy.direct {
            let listen = Message::Listen {
                listener: l.name.clone(),
                kind: proto::ListenerKind::Uwsgi,
                local: l.local.clone(),
                buffer_size: l.buffer_size,
                head_timeout_ms: l.head_timeout.as_millis().min(u128::from(u32::MAX)) as u32,
            };
            if let Err(e) = chan.send(&listen, Some(l.fd.as_fd())).await {
                // It would count as accepting where it does not: let it go.
                warn!(%id, listener = %l.name, error = %e, "could not send LISTEN; detaching the zergling");
                dispatcher.unregister(id);
                recover(&dispatcher, id, orders, HashMap::new());
                return;
            }
        }
        info!(%id, listeners = policy.direct.len(), "zergling accepts on the uwsgi listeners itself");
    }
    let (orders, unacked, why) = run_session(&chan, &dispatcher, id, orders).await;
    dispatcher.unregister(id);
    info!(%id, pid, reason = why, "zergling detached");
    recover(&dispatcher, id, orders, unacked);
}

/// Sends orders and reads the zergling's messages until the channel ends.
async fn run_session(
    chan: &Channel,
    dispatcher: &Dispatcher,
    id: ZerglingId,
    mut orders: tokio::sync::mpsc::UnboundedReceiver<Order>,
) -> (tokio::sync::mpsc::UnboundedReceiver<Order>, HashMap<ConnId, Pending>, String) {
    let mut unacked: HashMap<ConnId, Pending> = HashMap::new();
    let mut draining = false;
    // What went through this session, logged when it ends.
    let (mut sent_n, mut acked_n, mut closed_n, mut handed_back_n) = (0u64, 0u64, 0u64, 0u64);
    // Reading never waits for sending: a reader runs beside the loop below and
    // queues what arrives, so a CONN stuck on a full socket cannot stop the ACKs
    // that would free it (both sides waiting to send, neither reading).
    let (inbox_tx, mut inbox) = tokio::sync::mpsc::unbounded_channel();
    let reader = async {
        let mut buf = RecvBuf::new();
        loop {
            let r = chan.recv_with(&mut buf).await;
            let end = r.is_err();
            if inbox_tx.send(r).is_err() || end {
                break;
            }
        }
        std::future::pending::<()>().await
    };
    let main = async {
        loop {
            tokio::select! {
                order = orders.recv() => match order {
                    Some(Order::Conn(p)) => {
                        let conn = p.meta.conn;
                        let sent = chan.send(&Message::Conn(p.meta.clone()), Some(p.fd.as_fd())).await;
                        sent_n += 1;
                        if unacked.insert(conn, p).is_some() {
                            warn!(%id, %conn, "two connections with one id");
                        }
                        if let Err(e) = sent {
                            break format!("sending CONN failed: {e}");
                        }
                    }
                    Some(Order::Drain { handback }) => {
                        draining = true;
                        if let Err(e) = chan.send(&Message::Drain { handback }, None).await {
                            break format!("sending DRAIN failed: {e}");
                        }
                    }
                    None => break "order channel closed".to_owned(),
                },
                Some(msg) = inbox.recv() => match msg {
                    Ok((Message::Ack { conn }, _)) => {
                        // Dropping the Pending closes the pool's copy of the descriptor.
                        acked_n += 1;
                        if unacked.remove(&conn).is_none() {
                            debug!(%id, %conn, "ACK for a connection not waiting for one");
                        }
                    }
                    Ok((Message::Closed { .. }, _)) => {
                        closed_n += 1;
                        dispatcher.closed(id);
                    }
                    Ok((Message::Draining, _)) => {
                        info!(%id, "zergling is draining");
                        dispatcher.drain(id);
                    }
                    Ok((Message::HandBack(meta), Some(fd))) => {
                        // An idle connection given back: it counts as closed here, and
                        // the pool classifies it again like a new connection.
                        handed_back_n += 1;
                        dispatcher.closed(id);
                        debug!(%id, conn = %meta.conn, peer = %meta.peer, buffered = meta.prefix.len(), "connection handed back");
                        dispatcher.hand_back(fd, meta);
                    }
                    Ok((other, _)) => break format!("protocol violation: unexpected {}", other.name()),
                    Err(ChannelError::Closed) => break "channel closed".to_owned(),
                    Err(e) => break format!("channel error: {e}"),
                },
            }
        }
    };
    let why = tokio::select! {
        why = main => why,
        _ = reader => unreachable!("the reader never ends"),
    };
    info!(%id, sent = sent_n, acked = acked_n, closed = closed_n, handed_back = handed_back_n, unacked = unacked.len(), "session totals");
    if !draining {
        let lost = dispatcher.outstanding(id);
        if lost > 0 {
            warn!(%id, connections = lost, "zergling vanished while owning connections; requests in flight there may have failed");
        }
    }
    (orders, unacked, why)
}

/// Re-dispatches what a departed zergling had not acknowledged, and what was
/// still on its way to it.
fn recover(
    dispatcher: &Dispatcher,
    id: ZerglingId,
    mut orders: tokio::sync::mpsc::UnboundedReceiver<Order>,
    unacked: HashMap<ConnId, Pending>,
) {
    orders.close();
    let mut again: Vec<Pending> = unacked.into_values().collect();
    while let Ok(order) = orders.try_recv() {
        if let Order::Conn(p) = order {
            again.push(p);
        }
    }
    if again.is_empty() {
        return;
    }
    // Oldest first, and redispatch puts each at the front: go newest to oldest.
    again.sort_by_key(|p| std::cmp::Reverse(p.meta.conn));
    warn!(%id, count = again.len(), "recovering connections the zergling had not acknowledged");
    for p in again {
        dispatcher.redispatch(p);
    }
}
