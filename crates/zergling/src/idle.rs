//! The connections a zergling owns and which of them are idle: the longest-idle
//! one goes back to the pool when the zergling is at capacity.

use super::*;

/// The idle keep-alive connections of a zergling, oldest first, so that a
/// zergling at capacity can give the longest-idle ones back to the pool
/// (DESIGN.md invariant 7: idle connections never starve new ones). Only
/// connections that came through a pool register (one that came from elsewhere
/// has nowhere to go back to).
pub(crate) struct IdleConns {
    capacity: usize,
    /// Connections this zergling owns now (sent by the pool, or accepted on a
    /// listener the pool shared).
    open: AtomicUsize,
    /// Notified each time one of them ends (the direct-accept loop waits for room).
    ended: tokio::sync::Notify,
    waiting: std::sync::Mutex<IdleQueue>,
}

#[derive(Default)]
pub(super) struct IdleQueue {
    next: u64,
    waiting: std::collections::BTreeMap<u64, CancellationToken>,
}

impl IdleConns {
    pub(crate) fn new(capacity: u32) -> Self {
        IdleConns {
            capacity: capacity as usize,
            open: AtomicUsize::new(0),
            ended: tokio::sync::Notify::new(),
            waiting: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdleQueue> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection is now owned; at capacity, the longest-idle one goes back.
    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.relieve();
    }

    /// A connection is no longer owned.
    pub(crate) fn ended(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        self.ended.notify_waiters();
    }

    /// Waits until fewer than `limit` connections are owned. The wake-up cannot be
    /// missed: the notification is armed before the count is read.
    pub(crate) async fn wait_below(&self, limit: usize) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.open.load(Ordering::SeqCst) < limit {
                return;
            }
            ended.await;
        }
    }

    /// While the zergling is at capacity, gives back the longest-idle connection.
    fn relieve(&self) {
        if self.open.load(Ordering::SeqCst) < self.capacity {
            return;
        }
        let oldest = self.lock().waiting.pop_first();
        if let Some((_, release)) = oldest {
            release.cancel();
        }
    }

    /// Registers an idle connection; `release` fires when it must go back. The
    /// token is the connection's own, made once when it starts (not at each idle
    /// phase: an allocation made while idle would land among the memory hyper just
    /// freed and keep those pages from going back to the system).
    pub(super) fn enter(self: &Arc<Self>, release: &CancellationToken) -> IdleEntry {
        let seq = {
            let mut q = self.lock();
            q.next += 1;
            let seq = q.next;
            q.waiting.insert(seq, release.clone());
            seq
        };
        self.relieve();
        IdleEntry { conns: self.clone(), seq }
    }
}

/// One connection this zergling owns, counted in [`IdleConns`] until dropped.
pub(crate) struct Owned(Arc<IdleConns>);

impl Owned {
    pub(crate) fn new(conns: &Arc<IdleConns>) -> Self {
        conns.opened();
        Owned(conns.clone())
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// One registered idle connection; unregisters when dropped.
pub(super) struct IdleEntry {
    conns: Arc<IdleConns>,
    seq: u64,
}

impl Drop for IdleEntry {
    fn drop(&mut self) {
        self.conns.lock().waiting.remove(&self.seq);
    }
}
