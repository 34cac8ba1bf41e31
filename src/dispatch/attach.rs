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
//! unacknowledged and everything left in the order channel: nothing is lost. A
//! connection that has failed to reach [`MAX_ATTEMPTS`](super::MAX_ATTEMPTS)
//! zerglings is answered `503` instead, so no connection circles for ever.
//!
//! Trust: the peer's pid and uid come from `SO_PEERCRED`; a zergling that does not
//! acknowledge in time (`zerg-ack-timeout`) is detached (and killed if the pool
//! spawned it); what the pool says about a connection handed back is its own
//! record, not the zergling's.

use std::collections::{HashMap, VecDeque};
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
use crate::proto::{
    self, Channel, ChannelError, ConnId, ConnMeta, Endpoint, Message, RecvBuf, SeqpacketListener, ZerglingId,
};
use crate::reply::Canned;

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
    pub statics: Arc<arc_swap::ArcSwap<proto::StaticSettings>>,
    /// Listeners sent with LISTEN to zerglings that can accept on them
    /// (`zerg-direct-accept`); empty when the option is off.
    pub direct: Vec<DirectListener>,
    /// How long a zergling has to take (read) and acknowledge a connection before
    /// it counts as stuck (`zerg-ack-timeout`).
    pub ack_timeout: Duration,
    /// The deadlines zerglings apply to the connections they own (WELCOME).
    pub timeouts: proto::Timeouts,
    /// The largest HTTP request head (`buffer-size`), sent in WELCOME.
    pub buffer_size: u32,
    /// Which requests zerglings log, and how (WELCOME).
    pub request_log: zergpool_core::reqlog::LogPolicy,
}

/// The pool's record of a connection a zergling accepted itself on the shared
/// http listener `listener` and now hands back: its addresses from the socket.
fn direct_record(fd: &std::os::fd::OwnedFd, listener: &str, dispatcher: &Dispatcher) -> io::Result<ConnMeta> {
    let sock = socket2::SockRef::from(fd);
    let addr = |a: socket2::SockAddr| a.as_socket().map_or_else(|| Endpoint::unix(""), Endpoint::Tcp);
    let peer = addr(sock.peer_addr()?);
    let local = addr(sock.local_addr()?);
    Ok(ConnMeta::accepted(dispatcher.next_conn_id(), listener.to_owned(), proto::ListenerKind::Http, peer, local))
}

/// A listener zerglings accept on themselves (`zerg-direct-accept`): what LISTEN says
/// about it, and the pool's copy of its descriptor.
#[derive(Debug, Clone)]
pub struct DirectListener {
    /// The listener's name (`uwsgi0`, `http0`, …).
    pub name: String,
    /// What its connections speak (`uwsgi`, or `http` with
    /// `zerg-direct-accept-http`).
    pub kind: proto::ListenerKind,
    /// The address it is bound to.
    pub local: proto::Endpoint,
    /// The listening socket (a duplicate of the pool's own).
    pub fd: Arc<std::os::fd::OwnedFd>,
    /// Largest uwsgi packet head or HTTP request head (`buffer-size`).
    pub buffer_size: u32,
    /// Time a client has to send its packet or head.
    pub head_timeout: Duration,
}

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
    let (pid, capacity, tags, accept_direct) = match chan.recv_timeout(HELLO_TIMEOUT).await {
        Ok((Message::Hello { version, pid, capacity, tags, accept_direct }, _)) => {
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
            (pid, capacity, tags, accept_direct)
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
    // The kernel's word for who is on the other end, not the peer's: the pid in
    // HELLO is informational only (a zergling in a pid namespace sees another).
    let peer_pid = u32::try_from(cred.pid()).unwrap_or(0);
    if peer_pid != pid {
        warn!(hello_pid = pid, peer_pid, "the pid in HELLO is not the peer's (SO_PEERCRED); using the peer's");
    }
    let pid = peer_pid;
    let direct = !policy.direct.is_empty() && accept_direct;
    let (id, orders) = dispatcher.register(pid, capacity, direct);
    let welcome = Message::Welcome {
        version: proto::VERSION,
        id,
        statics: proto::StaticSettings::clone(&policy.statics.load()),
        timeouts: policy.timeouts,
        buffer_size: policy.buffer_size,
        log: policy.request_log.clone(),
    };
    if let Err(e) = chan.send(&welcome, None).await {
        warn!(%id, error = %e, "could not welcome zergling");
        dispatcher.unregister(id);
        recover(&dispatcher, id, orders, HashMap::new());
        return;
    }
    info!(%id, pid, capacity, tags = tags.join(","), "zergling attached");
    crate::events::emit("attached", serde_json::json!({ "zergling": id.0, "pid": pid }));
    if direct {
        for l in &policy.direct {
            let listen = Message::Listen {
                listener: l.name.clone(),
                kind: l.kind,
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
        info!(%id, listeners = policy.direct.len(), "zergling accepts on the shared listeners itself");
    }
    // Hand-backs of connections it accepted itself come from these listeners.
    let direct_http: Vec<&str> = if direct {
        policy.direct.iter().filter(|l| l.kind == proto::ListenerKind::Http).map(|l| l.name.as_str()).collect()
    } else {
        Vec::new()
    };
    // Request log lines go straight to the pool's log file (LOGFILE), a new one
    // after each reopen.
    let log_files = policy.request_log.any().then(crate::logfile::opened);
    let (orders, unacked, end) =
        run_session(&chan, &dispatcher, id, orders, policy.ack_timeout, &direct_http, log_files).await;
    dispatcher.unregister(id);
    let why = crate::error_chain(&end);
    if end.stuck() {
        warn!(%id, pid, reason = %why, "zergling is stuck: detached");
        if is_our_child(pid) {
            // A spawned zergling: the supervisor sees it exit and starts another.
            warn!(%id, pid, "killing the stuck zergling (SIGKILL); it is respawned");
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    } else {
        info!(%id, pid, reason = %why, "zergling detached");
    }
    crate::events::emit(
        "detached",
        serde_json::json!({ "zergling": id.0, "pid": pid, "reason": why, "stuck": end.stuck() }),
    );
    recover(&dispatcher, id, orders, unacked);
}

/// Why a zergling's session ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    /// The zergling closed its end (it exited, or drained and left).
    #[error("channel closed")]
    Closed,
    /// The attach channel failed.
    #[error("channel error")]
    Channel(#[source] ChannelError),
    /// DRAIN could not be sent.
    #[error("sending DRAIN failed")]
    DrainNotSent(#[source] ChannelError),
    /// The dispatcher dropped this zergling's orders (the pool is stopping).
    #[error("order channel closed")]
    Orders,
    /// The zergling sent a message it must not send.
    #[error("protocol violation: unexpected {0}")]
    Unexpected(&'static str),
    /// A connection was not acknowledged within `zerg-ack-timeout`.
    #[error("a connection was not acknowledged within {0:?} (zerg-ack-timeout)")]
    NotAcknowledged(Duration),
    /// The zergling did not read its socket within `zerg-ack-timeout`.
    #[error("the zergling did not read its socket within {0:?} (zerg-ack-timeout)")]
    NotReading(Duration),
}

impl SessionEnd {
    /// It stopped taking connections: it is stuck, and replaced if the pool
    /// spawned it.
    fn stuck(&self) -> bool {
        matches!(self, SessionEnd::NotAcknowledged(_) | SessionEnd::NotReading(_))
    }
}

/// Sends orders and reads the zergling's messages until the channel ends.
///
/// The pool keeps its own record of every connection the zergling acknowledged
/// (`owned`: its metadata without the bytes read). A HANDBACK is served with that
/// record, never with what the zergling says about the client, and a CLOSED or
/// HANDBACK for a connection the zergling does not hold is a protocol error that
/// frees no capacity. A CONN that cannot be sent (too large, or refused by the
/// kernel) is answered and costs the zergling nothing; a zergling that does not
/// read its socket or acknowledge within `ack_timeout` is stuck.
async fn run_session(
    chan: &Channel,
    dispatcher: &Dispatcher,
    id: ZerglingId,
    mut orders: tokio::sync::mpsc::UnboundedReceiver<Order>,
    ack_timeout: Duration,
    direct_http: &[&str],
    mut log_files: Option<tokio::sync::watch::Receiver<u64>>,
) -> (tokio::sync::mpsc::UnboundedReceiver<Order>, HashMap<ConnId, Pending>, SessionEnd) {
    if let Some(rx) = log_files.as_mut() {
        rx.borrow_and_update();
        send_log_file(chan, id, ack_timeout).await;
    }
    let mut unacked: HashMap<ConnId, Pending> = HashMap::new();
    // CONNs in the order they were sent, with the time: the oldest one still
    // unacknowledged sets the acknowledgement deadline.
    let mut sent_at: VecDeque<(ConnId, tokio::time::Instant)> = VecDeque::new();
    let mut owned: HashMap<ConnId, ConnMeta> = HashMap::new();
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
            while sent_at.front().is_some_and(|(conn, _)| !unacked.contains_key(conn)) {
                sent_at.pop_front();
            }
            let deadline = sent_at.front().map(|(_, t)| *t + ack_timeout);
            let log_reopened = async {
                let changed = match log_files.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => false,
                };
                if !changed {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    break SessionEnd::NotAcknowledged(ack_timeout);
                }
                () = log_reopened => send_log_file(chan, id, ack_timeout).await,
                order = orders.recv() => match order {
                    Some(Order::Conn(p)) => {
                        let conn = p.meta.conn;
                        let sent =
                            tokio::time::timeout(ack_timeout, chan.send(&Message::Conn(p.meta.clone()), Some(p.fd.as_fd()))).await;
                        sent_n += 1;
                        match sent {
                            Ok(Ok(())) => {
                                crate::metrics::metrics().handed_off.inc();
                                sent_at.push_back((conn, tokio::time::Instant::now()));
                                if unacked.insert(conn, p).is_some() {
                                    warn!(%id, %conn, "two connections with one id");
                                }
                            }
                            Ok(Err(ChannelError::Closed)) => {
                                unacked.insert(conn, p);
                                break SessionEnd::Closed;
                            }
                            Ok(Err(e)) => {
                                // This connection cannot travel (a head larger than a frame,
                                // a message the kernel refuses); the zergling is not at fault.
                                dispatcher.closed(id);
                                let canned = if matches!(e, ChannelError::Oversize) { Canned::HeadTooLarge } else { Canned::Unavailable };
                                crate::warn_limited!(%id, %conn, error = %e, status = canned.status(), "cannot send the connection to the zergling; answering it");
                                dispatcher.answer(p, canned);
                            }
                            Err(_elapsed) => {
                                unacked.insert(conn, p);
                                break SessionEnd::NotReading(ack_timeout);
                            }
                        }
                    }
                    Some(Order::Drain { handback }) => {
                        draining = true;
                        if let Err(e) = chan.send(&Message::Drain { handback }, None).await {
                            break SessionEnd::DrainNotSent(e);
                        }
                    }
                    None => break SessionEnd::Orders,
                },
                Some(msg) = inbox.recv() => match msg {
                    Ok((Message::Ack { conn }, _)) => {
                        // Dropping the Pending closes the pool's copy of the descriptor;
                        // its metadata stays as the pool's record of the connection.
                        match unacked.remove(&conn) {
                            Some(p) => {
                                acked_n += 1;
                                crate::metrics::metrics().handoff.observe(crate::metrics::since(p.arrived));
                                let mut record = p.meta;
                                record.prefix = bytes::Bytes::new();
                                owned.insert(conn, record);
                            }
                            None => crate::warn_limited!(%id, %conn, "protocol error: ACK for a connection not waiting for one"),
                        }
                    }
                    Ok((Message::Closed { conn }, _)) => {
                        if owned.remove(&conn).is_some() {
                            closed_n += 1;
                            dispatcher.closed(id);
                        } else {
                            crate::warn_limited!(%id, %conn, "protocol error: CLOSED for a connection the zergling does not hold");
                        }
                    }
                    Ok((Message::Draining, _)) => {
                        info!(%id, "zergling is draining");
                        dispatcher.drain(id);
                    }
                    Ok((Message::Load { saturated }, _)) => {
                        debug!(%id, saturated, "load");
                        dispatcher.set_saturated(id, saturated);
                    }
                    Ok((Message::Stats(stats), _)) => dispatcher.set_stats(id, stats),
                    Ok((Message::Log { lines }, _)) => crate::logfile::write_raw(&lines),
                    Ok((Message::HandBack(meta), Some(fd))) => {
                        // An idle connection given back (a drain, or room made for new
                        // connections): it counts as closed here, and the pool serves it
                        // again like a new connection, described by its own record.
                        let mut record = match owned.remove(&meta.conn) {
                            Some(record) => {
                                dispatcher.closed(id);
                                record
                            }
                            // A connection it accepted itself on a shared http
                            // listener: described from the socket, never from
                            // what the zergling says.
                            None if direct_http.contains(&meta.listener.as_str()) => match direct_record(&fd, &meta.listener, dispatcher) {
                                Ok(record) => record,
                                Err(e) => {
                                    debug!(%id, error = %e, "hand-back of a directly accepted connection that is gone; closing it");
                                    continue;
                                }
                            },
                            None => {
                                crate::warn_limited!(%id, conn = %meta.conn, "protocol error: HANDBACK of a connection the zergling does not hold; closing it");
                                continue;
                            }
                        };
                        handed_back_n += 1;
                        record.prefix = meta.prefix;
                        debug!(%id, conn = %record.conn, peer = %record.peer, buffered = record.prefix.len(), "connection handed back");
                        dispatcher.hand_back(fd, record);
                    }
                    Ok((other, _)) => break SessionEnd::Unexpected(other.name()),
                    Err(ChannelError::Closed) => break SessionEnd::Closed,
                    Err(e) => break SessionEnd::Channel(e),
                },
            }
        }
    };
    let end = tokio::select! {
        end = main => end,
        _ = reader => unreachable!("the reader never ends"),
    };
    info!(%id, sent = sent_n, acked = acked_n, closed = closed_n, handed_back = handed_back_n, unacked = unacked.len(), "session totals");
    if !draining {
        let lost = dispatcher.outstanding(id);
        if lost > 0 {
            warn!(%id, connections = lost, "zergling vanished while owning connections; requests in flight there may have failed");
        }
    }
    (orders, unacked, end)
}

/// Gives the zergling the pool's log file for its request log lines (LOGFILE),
/// when the log is a file. A zergling that does not get it sends its lines in
/// LOG, which the pool writes: nothing is lost either way.
async fn send_log_file(chan: &Channel, id: ZerglingId, limit: Duration) {
    let Some(fd) = crate::logfile::file_for_zergling() else { return };
    match tokio::time::timeout(limit, chan.send(&Message::LogFile, Some(fd.as_fd()))).await {
        Ok(Ok(())) => debug!(%id, "log file given to the zergling"),
        Ok(Err(e)) => debug!(%id, error = %e, "LOGFILE not sent"),
        Err(_) => debug!(%id, "LOGFILE not sent in time"),
    }
}

/// Whether `pid` is a child of this process (a zergling the pool spawned), read
/// from `/proc/PID/stat`.
fn is_our_child(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let Some((_, rest)) = stat.rsplit_once(')') else { return false };
    let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
    ppid == Some(std::process::id())
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
    for mut p in again {
        p.attempts += 1;
        if p.attempts >= super::MAX_ATTEMPTS {
            crate::warn_limited!(conn = %p.meta.conn, peer = %p.meta.peer, attempts = p.attempts, "no zergling took the connection after this many attempts: 503");
            dispatcher.answer(p, Canned::Unavailable);
        } else {
            dispatcher.redispatch(p);
        }
    }
}
