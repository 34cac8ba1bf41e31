//! Dispatch: the registry of attached zerglings, the choice of one for each
//! connection, and the queue of connections waiting for one.
//!
//! Invariants defended here (DESIGN.md 2 and 3):
//!
//! * only a zergling in state [`SlotState::Ready`] with `outstanding < capacity`
//!   is chosen, the least loaded (`outstanding / capacity`) first, ties in rotation;
//! * with no such zergling a connection waits in a FIFO queue bounded in count
//!   (`zerg-queue`) and age (`zerg-queue-timeout`); past either bound it is answered
//!   `503` by the caller ([`Dispatcher::submit`] returns it, [`Dispatcher::expire`]
//!   hands back the expired ones);
//! * a connection handed to a zergling that vanished before acknowledging it comes
//!   back through [`Dispatcher::redispatch`], ahead of newer arrivals.
//!
//! All state sits behind one short-held mutex; nothing awaits while holding it.
//! The descriptor of a connection is owned by exactly one place at a time: the
//! queue, a zergling's order channel, or its task's table of unacknowledged
//! connections (see [`attach`]).

pub mod attach;

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::listener::limit::ConnSlot;
use crate::proto::{self, ConnId, ConnMeta, ZerglingId};

/// A connection on its way to a zergling: the pool's copy of the descriptor and
/// everything needed to send it again.
#[derive(Debug)]
pub struct Pending {
    /// The client connection (TCP, or a Unix stream for uwsgi or the TLS relay).
    pub fd: OwnedFd,
    /// What goes with it, the bytes already read included.
    pub meta: ConnMeta,
    /// When the pool accepted it (queue age is measured from here).
    pub arrived: Instant,
    /// Zerglings it was sent to that went away (or were detached) before
    /// acknowledging it; at [`MAX_ATTEMPTS`] it is answered instead of sent again.
    pub attempts: u32,
    /// Its place in the pool's connection limit, freed when the pool lets go of the
    /// descriptor (`None` where another task holds it, as a TLS relay does).
    pub slot: Option<ConnSlot>,
}

impl Pending {
    /// A connection not sent anywhere yet.
    pub fn new(fd: OwnedFd, meta: ConnMeta, arrived: Instant) -> Self {
        Pending { fd, meta, arrived, attempts: 0, slot: None }
    }
}

/// How many zerglings may fail to take one connection before the pool gives up on
/// it and answers `503`: a connection that makes every zergling fail (a frame it
/// cannot decode, a crash it provokes) must not circle between them for ever.
pub const MAX_ATTEMPTS: u32 = 3;

/// What a zergling's task is told to do.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a connection moves by value once; boxing it would cost an allocation per connection"
)]
pub enum Order {
    /// Hand this connection over.
    Conn(Pending),
    /// Tell the zergling to drain (nothing more is sent after this); `handback`
    /// says whether it should give idle connections back or close them.
    Drain {
        /// Give idle keep-alive connections back (a restart) or close them (a stop).
        handback: bool,
    },
}

/// The state of an attached zergling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Takes new connections.
    Ready,
    /// Finishing what it has; gets nothing new.
    Draining,
}

/// One attached zergling as the dispatcher sees it.
#[derive(Debug)]
struct Slot {
    id: ZerglingId,
    pid: u32,
    capacity: u32,
    outstanding: u32,
    state: SlotState,
    orders: mpsc::UnboundedSender<Order>,
    /// Accepts on the pool's uwsgi listeners itself (`zerg-direct-accept`).
    direct: bool,
    /// Its last LOAD said every request slot is taken.
    saturated: bool,
    /// When it attached (uWSGI's `last_spawn`).
    attached: std::time::SystemTime,
    /// Its last STATS.
    stats: proto::ZerglingStats,
}

impl Slot {
    fn can_take(&self) -> bool {
        self.state == SlotState::Ready && self.outstanding < self.capacity
    }
}

/// The result of [`Dispatcher::submit`].
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a connection moves by value once; boxing it would cost an allocation per connection"
)]
pub enum Submitted {
    /// Sent to a zergling.
    Dispatched(ZerglingId),
    /// Waiting in the queue.
    Queued,
    /// The queue is full: answer 503.
    Rejected(Pending),
}

/// A summary of one attached zergling (for logs, stats and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZerglingInfo {
    /// Its id.
    pub id: ZerglingId,
    /// Its process id.
    pub pid: u32,
    /// Its declared capacity.
    pub capacity: u32,
    /// Connections handed over and not yet reported closed.
    pub outstanding: u32,
    /// Ready or draining.
    pub state: SlotState,
    /// When it attached.
    pub attached: std::time::SystemTime,
    /// Its last STATS (zeros until it reports).
    pub stats: proto::ZerglingStats,
    /// When the pool spawned it: its slot and how often that slot's process
    /// was replaced before (`None`: a zergling started by something else).
    pub spawned: Option<Spawned>,
}

/// A spawned zergling's place among the pool's (`zergling` commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    /// The slot (0 for the first `zergling` command, …).
    pub slot: usize,
    /// Processes the slot started before this one (respawns and reloads).
    pub respawns: u64,
    /// When this one was started.
    pub at: std::time::SystemTime,
}

#[derive(Debug, Default)]
struct State {
    slots: Vec<Slot>,
    queue: VecDeque<Pending>,
    rotation: usize,
    next_zergling: u64,
}

/// The registry, the selection and the queue.
#[derive(Debug)]
pub struct Dispatcher {
    state: Mutex<State>,
    /// The zerglings the pool spawned, by pid (see [`Spawned`]).
    spawned: Mutex<std::collections::HashMap<u32, Spawned>>,
    queue_limit: usize,
    queue_timeout: Duration,
    next_conn: AtomicU64,
    stopping: AtomicBool,
    handbacks: Mutex<Option<mpsc::UnboundedSender<(OwnedFd, ConnMeta)>>>,
    /// True while a ready zergling accepts on the uwsgi listeners itself: the pool's
    /// own accept loops for them pause meanwhile (see [`Dispatcher::direct_ready`]).
    direct_ready: tokio::sync::watch::Sender<bool>,
    /// Bumped after every change of the registry or the queue, so that waiters
    /// ([`Dispatcher::wait_until`]) wake exactly when something changed.
    changed: tokio::sync::watch::Sender<u64>,
    /// Notified when the front of the queue gets an earlier deadline (a connection
    /// queued into an empty queue, or put back in front): the expiry task sleeps
    /// until the front's deadline and needs waking only then.
    front_changed: tokio::sync::Notify,
    /// Answers sent in tasks of their own (503s), awaited at shutdown.
    answers: tokio_util::task::TaskTracker,
}

impl Dispatcher {
    /// A dispatcher with the queue bounds `zerg-queue` and `zerg-queue-timeout`.
    pub fn new(queue_limit: usize, queue_timeout: Duration) -> Self {
        Dispatcher {
            state: Mutex::new(State::default()),
            spawned: Mutex::new(std::collections::HashMap::new()),
            queue_limit,
            queue_timeout,
            next_conn: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            handbacks: Mutex::new(None),
            direct_ready: tokio::sync::watch::Sender::new(false),
            changed: tokio::sync::watch::Sender::new(0),
            front_changed: tokio::sync::Notify::new(),
            answers: tokio_util::task::TaskTracker::new(),
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Waits until `cond` holds. It is checked at once and again after every
    /// change of the registry or the queue; no wake-up can be missed (the watch is
    /// subscribed before the first check) and no timer is involved.
    pub async fn wait_until(&self, cond: impl Fn(&Dispatcher) -> bool) {
        let mut changes = self.changed.subscribe();
        loop {
            if cond(self) {
                return;
            }
            if changes.changed().await.is_err() {
                return; // the dispatcher is gone; nothing will change any more
            }
        }
    }

    /// Completes when the queue's front gets an earlier deadline than the one
    /// [`Dispatcher::next_expiry`] last gave (a permit is stored if nobody waits, so
    /// a change between the two calls is not lost).
    pub async fn front_changed(&self) {
        self.front_changed.notified().await
    }

    /// When the oldest queued connection reaches `zerg-queue-timeout`.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.lock().queue.front().map(|p| p.arrived + self.queue_timeout)
    }

    /// Follows whether some ready zergling accepts on the uwsgi listeners itself.
    /// While it is true the pool does not accept on them (it would only take
    /// connections away from the zerglings and pay a hand-off for each); once the
    /// last such zergling drains or goes away it is false and the pool accepts, and
    /// queues, again.
    pub fn direct_ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.direct_ready.subscribe()
    }

    fn publish_direct(&self, st: &State) {
        let now = st.slots.iter().any(|s| s.direct && s.state == SlotState::Ready);
        self.direct_ready.send_if_modified(|v| std::mem::replace(v, now) != now);
    }

    /// Answers a connection that will not be served (503, 431, …) and closes it,
    /// in a task the pool awaits before it exits.
    pub fn answer(&self, p: Pending, canned: crate::reply::Canned) {
        if canned.status() == 503 {
            crate::metrics::metrics().unavailable.inc();
        }
        crate::reqlog::log_unserved(&p.meta, canned.status(), canned.body_len(), p.arrived);
        self.answers.spawn(crate::reply::answer_fd(p.fd, canned));
    }

    /// Waits (up to `limit`) for the answers in flight; none is started after this.
    pub async fn finish_answers(&self, limit: Duration) {
        self.answers.close();
        let _ = tokio::time::timeout(limit, self.answers.wait()).await;
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock is a bug elsewhere; the state itself stays
        // consistent (every mutation is a single step), so keep going.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends a new connection to a zergling, or queues it, or gives it back to be
    /// answered 503 when the queue is full.
    pub fn submit(&self, p: Pending) -> Submitted {
        let out = {
            let mut st = self.lock();
            // Keep arrival order: nothing overtakes connections already waiting.
            if st.queue.is_empty() {
                match try_send(&mut st, p) {
                    Ok(id) => Submitted::Dispatched(id),
                    Err(back) => self.enqueue(&mut st, back),
                }
            } else {
                self.enqueue(&mut st, p)
            }
        };
        self.bump();
        out
    }

    fn enqueue(&self, st: &mut State, p: Pending) -> Submitted {
        if st.queue.len() >= self.queue_limit {
            return Submitted::Rejected(p);
        }
        st.queue.push_back(p);
        if st.queue.len() == 1 {
            self.front_changed.notify_one();
        }
        Submitted::Queued
    }

    /// Sends again a connection whose zergling vanished before acknowledging it. It
    /// goes ahead of the queue (it arrived earlier) and is never refused for size.
    pub fn redispatch(&self, p: Pending) {
        crate::metrics::metrics().redispatched.inc();
        {
            let mut st = self.lock();
            if let Err(back) = try_send(&mut st, p) {
                st.queue.push_front(back);
                self.front_changed.notify_one();
            }
        }
        self.bump();
    }

    /// Registers a zergling that completed the handshake; returns its id and the
    /// channel its task receives orders from. `direct`: it is being sent the uwsgi
    /// listeners (LISTEN) and accepts there itself; it counts as accepting from now
    /// on, so that a chain reload that sees it ready and drains the old zergling
    /// never leaves a moment with no zergling accepting (connections arriving before
    /// it starts wait in the listen queue).
    pub fn register(&self, pid: u32, capacity: u32, direct: bool) -> (ZerglingId, mpsc::UnboundedReceiver<Order>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.lock();
        st.next_zergling += 1;
        let id = ZerglingId(st.next_zergling);
        st.slots.push(Slot {
            id,
            pid,
            capacity,
            outstanding: 0,
            state: SlotState::Ready,
            orders: tx,
            direct,
            saturated: false,
            attached: std::time::SystemTime::now(),
            stats: proto::ZerglingStats::default(),
        });
        pump(&mut st);
        self.publish_direct(&st);
        drop(st);
        self.bump();
        (id, rx)
    }

    /// Forgets a zergling. After this returns nothing more is sent to its order
    /// channel, so its task can drain the channel and re-dispatch what it finds.
    pub fn unregister(&self, id: ZerglingId) {
        let mut st = self.lock();
        st.slots.retain(|s| s.id != id);
        self.publish_direct(&st);
        drop(st);
        self.bump();
    }

    /// A connection handed to `id` was closed: one unit of capacity is free.
    pub fn closed(&self, id: ZerglingId) {
        let mut st = self.lock();
        if let Some(s) = st.slots.iter_mut().find(|s| s.id == id) {
            s.outstanding = s.outstanding.saturating_sub(1);
        }
        pump(&mut st);
        drop(st);
        self.bump();
    }

    /// Records what `id`'s LOAD said.
    pub fn set_saturated(&self, id: ZerglingId, saturated: bool) {
        let mut st = self.lock();
        if let Some(s) = st.slots.iter_mut().find(|s| s.id == id) {
            s.saturated = saturated;
        }
    }

    /// Records what `id`'s STATS said.
    pub fn set_stats(&self, id: ZerglingId, stats: proto::ZerglingStats) {
        let mut st = self.lock();
        if let Some(s) = st.slots.iter_mut().find(|s| s.id == id) {
            s.stats = stats;
        }
    }

    /// Marks `id` draining and tells its task to send DRAIN. Returns false if no
    /// such zergling is attached.
    pub fn drain(&self, id: ZerglingId) -> bool {
        let handback = !self.stopping.load(Ordering::Relaxed);
        let mut st = self.lock();
        let Some(s) = st.slots.iter_mut().find(|s| s.id == id) else { return false };
        if s.state == SlotState::Ready {
            s.state = SlotState::Draining;
            let _ = s.orders.send(Order::Drain { handback });
        }
        self.publish_direct(&st);
        drop(st);
        self.bump();
        true
    }

    /// Drains every attached zergling whose process id is `pid`; returns how many.
    pub fn drain_pid(&self, pid: u32) -> usize {
        let ids: Vec<ZerglingId> = self.lock().slots.iter().filter(|s| s.pid == pid).map(|s| s.id).collect();
        ids.iter().filter(|id| self.drain(**id)).count()
    }

    /// Connections handed to `id` and not reported closed (0 if unknown).
    pub fn outstanding(&self, id: ZerglingId) -> u32 {
        self.lock().slots.iter().find(|s| s.id == id).map_or(0, |s| s.outstanding)
    }

    /// The pool is stopping: from now on DRAIN asks zerglings to close idle
    /// connections rather than give them back.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Where connections given back by draining zerglings go (the pool classifies
    /// them again like new ones).
    pub fn set_handback_sink(&self, sink: mpsc::UnboundedSender<(OwnedFd, ConnMeta)>) {
        *self.handbacks.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    /// A connection given back by a zergling.
    pub fn hand_back(&self, fd: OwnedFd, meta: ConnMeta) {
        crate::metrics::metrics().handed_back.inc();
        let sink = self.handbacks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match sink {
            Some(tx) => {
                let _ = tx.send((fd, meta));
            }
            None => drop(fd), // nobody to serve it: closing is all that is left
        }
    }

    /// Takes the queued connections older than `zerg-queue-timeout` at `now`.
    pub fn expire(&self, now: Instant) -> Vec<Pending> {
        let mut st = self.lock();
        let mut out = Vec::new();
        while st.queue.front().is_some_and(|p| now.duration_since(p.arrived) >= self.queue_timeout) {
            out.extend(st.queue.pop_front());
        }
        drop(st);
        if !out.is_empty() {
            self.bump();
        }
        out
    }

    /// Takes every queued connection (used when stopping).
    pub fn take_queue(&self) -> Vec<Pending> {
        let out: Vec<Pending> = self.lock().queue.drain(..).collect();
        self.bump();
        out
    }

    /// Zerglings ready, zerglings draining, connections queued: one lock, no
    /// allocation (for watchers woken at every change).
    pub fn counts(&self) -> (usize, usize, usize) {
        let st = self.lock();
        let ready = st.slots.iter().filter(|s| s.state == SlotState::Ready).count();
        (ready, st.slots.len() - ready, st.queue.len())
    }

    /// Connections waiting.
    pub fn queue_len(&self) -> usize {
        self.lock().queue.len()
    }

    /// The attached zerglings.
    pub fn zerglings(&self) -> Vec<ZerglingInfo> {
        // Looked up in place, not copied: this runs at every dispatcher change
        // while a chain reload waits for its replacement.
        let spawned = self.spawned.lock().unwrap_or_else(|p| p.into_inner());
        self.lock()
            .slots
            .iter()
            .map(|s| ZerglingInfo {
                id: s.id,
                pid: s.pid,
                capacity: s.capacity,
                outstanding: s.outstanding,
                state: s.state,
                attached: s.attached,
                stats: s.stats,
                spawned: spawned.get(&s.pid).copied(),
            })
            .collect()
    }

    /// The supervisor started `pid` for a slot.
    pub fn note_spawned(&self, pid: u32, spawned: Spawned) {
        self.spawned.lock().unwrap_or_else(|p| p.into_inner()).insert(pid, spawned);
    }

    /// A spawned process is gone.
    pub fn forget_spawned(&self, pid: u32) {
        self.spawned.lock().unwrap_or_else(|p| p.into_inner()).remove(&pid);
    }
}

/// Hands queued connections to zerglings while any can take one.
fn pump(st: &mut State) {
    while let Some(p) = st.queue.pop_front() {
        if let Err(back) = try_send(st, p) {
            st.queue.push_front(back);
            break;
        }
    }
}

/// Sends `p` to the best zergling, or gives it back if none can take it.
#[allow(
    clippy::result_large_err,
    reason = "the connection is given back by value; boxing it would cost an allocation per connection"
)]
fn try_send(st: &mut State, mut p: Pending) -> Result<ZerglingId, Pending> {
    loop {
        let Some(i) = select(&st.slots, st.rotation) else { return Err(p) };
        st.rotation = st.rotation.wrapping_add(1);
        let slot = &mut st.slots[i];
        let arrived = p.arrived;
        match slot.orders.send(Order::Conn(p)) {
            Ok(()) => {
                slot.outstanding += 1;
                crate::metrics::metrics().queue_wait.observe(crate::metrics::since(arrived));
                return Ok(slot.id);
            }
            Err(mpsc::error::SendError(order)) => {
                // Its task is gone; it will unregister shortly. Do not use it again.
                slot.state = SlotState::Draining;
                let Order::Conn(back) = order else { unreachable!("we sent a Conn") };
                p = back;
            }
        }
    }
}

/// The index of the slot to use: among those that can take a connection, one not
/// saturated (LOAD) before any saturated one, then the lowest
/// `outstanding / capacity`; ties go to the first at or after `rotation`.
fn select(slots: &[Slot], rotation: usize) -> Option<usize> {
    let n = slots.len();
    let mut best: Option<usize> = None;
    for k in 0..n {
        let i = (rotation + k) % n;
        let s = &slots[i];
        if !s.can_take() {
            continue;
        }
        best = match best {
            None => Some(i),
            Some(b) => {
                let cur = &slots[b];
                // s.o/s.c < cur.o/cur.c, compared without division.
                let less_loaded = u64::from(s.outstanding) * u64::from(cur.capacity)
                    < u64::from(cur.outstanding) * u64::from(s.capacity);
                if (!s.saturated && cur.saturated) || (s.saturated == cur.saturated && less_loaded) {
                    Some(i)
                } else {
                    Some(b)
                }
            }
        };
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: u64, outstanding: u32, capacity: u32, state: SlotState) -> Slot {
        let (tx, rx) = mpsc::unbounded_channel();
        std::mem::forget(rx);
        Slot {
            id: ZerglingId(id),
            pid: 0,
            capacity,
            outstanding,
            state,
            orders: tx,
            direct: false,
            saturated: false,
            attached: std::time::SystemTime::now(),
            stats: proto::ZerglingStats::default(),
        }
    }

    #[test]
    fn a_saturated_zergling_is_chosen_only_when_all_are() {
        let mut slots = vec![slot(1, 0, 10, SlotState::Ready), slot(2, 5, 10, SlotState::Ready)];
        slots[0].saturated = true;
        assert_eq!(select(&slots, 0), Some(1), "busier in connections, but a thread is free");
        slots[1].saturated = true;
        assert_eq!(select(&slots, 0), Some(0), "all saturated: the least loaded");
    }

    #[test]
    fn least_loaded_wins_and_ties_rotate() {
        let slots =
            vec![slot(1, 5, 10, SlotState::Ready), slot(2, 1, 10, SlotState::Ready), slot(3, 1, 10, SlotState::Ready)];
        assert_eq!(select(&slots, 0), Some(1));
        assert_eq!(select(&slots, 2), Some(2));
        // Load is relative to capacity: 3/100 beats 1/10.
        let slots = vec![slot(1, 1, 10, SlotState::Ready), slot(2, 3, 100, SlotState::Ready)];
        assert_eq!(select(&slots, 0), Some(1));
    }

    #[test]
    fn full_or_draining_gets_nothing() {
        let slots = vec![slot(1, 10, 10, SlotState::Ready), slot(2, 0, 10, SlotState::Draining)];
        assert_eq!(select(&slots, 0), None);
        assert_eq!(select(&[], 0), None);
    }

    fn pending(d: &Dispatcher) -> Pending {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        Pending::new(
            a.into(),
            ConnMeta {
                conn: d.next_conn_id(),
                listener: "t".into(),
                kind: crate::proto::ListenerKind::Http,
                scheme: crate::proto::Scheme::Http,
                peer: crate::proto::Endpoint::unix(""),
                local: crate::proto::Endpoint::unix(""),
                sni: None,
                alpn: None,
                tls_version: None,
                prefix: bytes::Bytes::new(),
            },
            Instant::now(),
        )
    }

    #[test]
    fn queue_bounds_and_order() {
        let d = Dispatcher::new(2, Duration::from_secs(1));
        assert!(matches!(d.submit(pending(&d)), Submitted::Queued));
        assert!(matches!(d.submit(pending(&d)), Submitted::Queued));
        assert!(matches!(d.submit(pending(&d)), Submitted::Rejected(_)));
        assert!(d.expire(Instant::now()).is_empty());
        assert_eq!(d.expire(Instant::now() + Duration::from_secs(2)).len(), 2);

        // Arrival order survives a zergling attaching; capacity is respected.
        let first = pending(&d);
        let first_id = first.meta.conn;
        d.submit(first);
        d.submit(pending(&d));
        let (_id, mut rx) = d.register(1, 1, false);
        let Ok(Order::Conn(got)) = rx.try_recv() else { panic!() };
        assert_eq!(got.meta.conn, first_id);
        assert!(rx.try_recv().is_err(), "capacity 1 must hold the second back");
        assert_eq!(d.queue_len(), 1);
        d.closed(_id);
        assert!(matches!(rx.try_recv(), Ok(Order::Conn(_))));
    }

    /// The pool's uwsgi accept loops pause exactly while a ready zergling accepts
    /// on them itself.
    #[test]
    fn direct_ready_follows_the_ready_direct_zerglings() {
        let d = Dispatcher::new(8, Duration::from_secs(1));
        let ready = d.direct_ready();
        let (a, _ra) = d.register(1, 4, true);
        assert!(*ready.borrow(), "a accepts from its registration on");
        let (b, _rb) = d.register(2, 4, true);
        d.drain(a);
        assert!(*ready.borrow(), "b still accepts");
        d.unregister(b);
        assert!(!*ready.borrow(), "a drains and b is gone: the pool accepts again");
        let (c, _rc) = d.register(3, 4, false);
        assert!(!*ready.borrow(), "c does not accept by itself");
        d.unregister(c);
        let (e, _re) = d.register(4, 4, true);
        assert!(*ready.borrow());
        d.unregister(e);
        assert!(!*ready.borrow());
    }

    /// Waiting for a state of the registry is a notification, not a poll: it
    /// completes on a runtime that has no timers at all (a sleep would panic).
    #[test]
    fn wait_until_wakes_on_a_change_without_timers() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let d = std::sync::Arc::new(Dispatcher::new(8, Duration::from_secs(1)));
        rt.block_on(async {
            let waiter = tokio::spawn({
                let d = d.clone();
                async move { d.wait_until(|d| d.zerglings().iter().any(|z| z.pid == 42)).await }
            });
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished());
            let (_id, _rx) = d.register(42, 1, false);
            waiter.await.unwrap();
        });
    }

    /// The expiry task learns of a connection queued into an empty queue at once
    /// (its deadline is the earliest), and of nothing else it does not need.
    #[tokio::test(start_paused = true)]
    async fn a_connection_queued_into_an_empty_queue_wakes_the_expiry_task() {
        let d = Dispatcher::new(8, Duration::from_secs(1));
        assert_eq!(d.next_expiry(), None);
        assert!(matches!(d.submit(pending(&d)), Submitted::Queued));
        tokio::time::timeout(Duration::from_millis(1), d.front_changed()).await.expect("woken");
        assert!(matches!(d.submit(pending(&d)), Submitted::Queued));
        assert!(
            tokio::time::timeout(Duration::from_millis(1), d.front_changed()).await.is_err(),
            "woken for a later deadline"
        );
        assert!(d.next_expiry().is_some());
    }
}
