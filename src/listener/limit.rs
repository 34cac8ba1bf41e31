//! The pool's connection limit (`zerg-max-connections`) and its descriptor reserve.
//!
//! Every connection the pool holds takes a [`ConnSlot`] from the [`ConnLimit`]:
//! from `accept` until the pool lets go of it (handed to a zergling that
//! acknowledged it, or closed). A TLS connection keeps its slot for as long as
//! its relay runs. At the limit the accept loops stop calling `accept`: new
//! clients wait in the kernel's backlog instead of being accepted and starved,
//! and the descriptors above the limit stay free for what the pool cannot do
//! without (the attach socket, zerglings' hand-backs, static files, logs).
//!
//! Connections that wait for a request head (a new one before its first head, a
//! kept-alive one between requests, a TLS handshake) register a [`HeadWait`].
//! When the limit is reached, the longest-waiting of them is closed to make room,
//! once it has waited [`EVICT_AFTER`]: as nginx drains its idle keep-alive
//! connections first when `worker_connections` run out, an idle or slow client
//! never keeps a working one out. When `accept` itself fails for want of
//! descriptors (`EMFILE`), up to [`EVICT_ON_EXHAUSTION`] waiting heads are closed
//! at once, whatever their age.
//!
//! Hand-backs from draining zerglings are always taken ([`ConnLimit::force_slot`]):
//! refusing them would drop a client; they count, and may take the count over the
//! limit for a moment.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// How long a connection must have waited for its head before the limit may close
/// it to make room: a burst of new clients (each waiting a few milliseconds for
/// its head) is never thinned out by the limit, only slow and idle ones.
pub const EVICT_AFTER: Duration = Duration::from_secs(1);

/// How many waiting connections are closed at once when `accept` runs out of
/// descriptors (nginx drains 32 reusable connections in the same case).
pub const EVICT_ON_EXHAUSTION: usize = 32;

/// Descriptors kept out of the connection budget: the attach socket and one per
/// zergling session, the master FIFO, stats and logs.
const RESERVE: u64 = 64;

/// Largest soft descriptor limit the pool raises itself to without `max-fd`.
const RAISE_CAP: u64 = 1 << 20;

/// The pool-wide count of held connections, and the connections waiting for a head.
#[derive(Debug)]
pub struct ConnLimit {
    max: usize,
    open: AtomicUsize,
    freed: Notify,
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    next: u64,
    heads: BTreeMap<(Instant, u64), CancellationToken>,
}

impl ConnLimit {
    /// A limit of `max` connections (at least 1).
    pub fn new(max: usize) -> Arc<ConnLimit> {
        Arc::new(ConnLimit {
            max: max.max(1),
            open: AtomicUsize::new(0),
            freed: Notify::new(),
            waiting: Mutex::default(),
        })
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections held now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections waiting for a request head now.
    pub fn waiting_heads(&self) -> usize {
        self.lock().heads.len()
    }

    /// A slot for one more connection; at the limit, waits until one is freed,
    /// closing the longest-waiting head (once it has waited [`EVICT_AFTER`]) to make
    /// room. Cancel-safe.
    pub async fn slot(self: &Arc<Self>) -> ConnSlot {
        let mut told = false;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let open = self.open.load(Ordering::Acquire);
            if open < self.max {
                if self.open.compare_exchange(open, open + 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    return ConnSlot { limit: Arc::clone(self) };
                }
                continue;
            }
            if !told {
                told = true;
                crate::warn_limited!(
                    max = self.max,
                    "connection limit reached (zerg-max-connections): accepting paused until one closes"
                );
            }
            match self.evict_oldest(1, EVICT_AFTER) {
                Eviction::Closed(_) => freed.await,
                Eviction::NoneOldEnough(oldest) => {
                    let _ = tokio::time::timeout_at(oldest + EVICT_AFTER, freed).await;
                }
                Eviction::NoneWaiting => freed.await,
            }
        }
    }

    /// A slot that is never refused (a hand-back): counted even over the limit.
    pub fn force_slot(self: &Arc<Self>) -> ConnSlot {
        self.open.fetch_add(1, Ordering::AcqRel);
        ConnSlot { limit: Arc::clone(self) }
    }

    /// Registers a connection as waiting for a request head until the returned
    /// guard is dropped; [`HeadWait::evicted`] fires if the limit closes it.
    pub fn head_wait(self: &Arc<Self>) -> HeadWait {
        let token = CancellationToken::new();
        let mut w = self.lock();
        let key = (Instant::now(), w.next);
        w.next += 1;
        w.heads.insert(key, token.clone());
        HeadWait { limit: Arc::clone(self), key, token }
    }

    /// Closes up to `n` waiting connections, longest-waiting first, among those that
    /// have waited at least `min_wait`.
    pub fn evict_oldest(&self, n: usize, min_wait: Duration) -> Eviction {
        let now = Instant::now();
        let mut w = self.lock();
        let mut closed = 0;
        while closed < n {
            let Some(entry) = w.heads.first_entry() else { break };
            let since = entry.key().0;
            if now.saturating_duration_since(since) < min_wait {
                if closed == 0 {
                    return Eviction::NoneOldEnough(since);
                }
                break;
            }
            entry.remove().cancel();
            closed += 1;
        }
        match closed {
            0 => Eviction::NoneWaiting,
            n => {
                tracing::debug!(closed = n, "closed connections waiting for a head to make room");
                Eviction::Closed(n)
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // The map stays consistent whatever panicked while holding it.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What [`ConnLimit::evict_oldest`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// This many connections were told to close.
    Closed(usize),
    /// Connections wait, none long enough; the oldest started waiting then.
    NoneOldEnough(Instant),
    /// No connection waits for a head.
    NoneWaiting,
}

/// One held connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnSlot {
    limit: Arc<ConnLimit>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.limit.open.fetch_sub(1, Ordering::AcqRel);
        self.limit.freed.notify_one();
    }
}

/// A connection's registration as waiting for a request head.
#[derive(Debug)]
pub struct HeadWait {
    limit: Arc<ConnLimit>,
    key: (Instant, u64),
    token: CancellationToken,
}

impl HeadWait {
    /// Completes when the limit closes this connection to make room.
    pub fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }
}

impl Drop for HeadWait {
    fn drop(&mut self) {
        self.limit.lock().heads.remove(&self.key);
    }
}

/// Sets the soft limit on open descriptors: to `max_fd` when given (`max-fd`,
/// raising the hard limit too, which needs root), otherwise to the hard limit
/// (capped at 2^20), as Go programs and nginx's `worker_rlimit_nofile` do: the soft
/// default of 1024 is far below what a front-end needs. Returns the soft limit in
/// effect afterwards.
pub fn raise_nofile(max_fd: Option<u64>) -> std::io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    let (want_soft, want_hard) = match max_fd {
        Some(n) => (n, hard.max(n)),
        None => (hard.min(RAISE_CAP).max(soft), hard),
    };
    if (want_soft, want_hard) != (soft, hard) {
        setrlimit(Resource::RLIMIT_NOFILE, want_soft, want_hard).map_err(std::io::Error::from)?;
    }
    Ok(want_soft)
}

/// The default connection limit for a descriptor limit of `nofile`: what is left
/// after the reserve and the static-file cache's share (an eighth), halved because
/// a TLS connection holds two descriptors (the client's and its relay's).
pub fn default_max_connections(nofile: u64) -> usize {
    let budget = nofile.saturating_sub(RESERVE + nofile / 8) / 2;
    usize::try_from(budget).unwrap_or(usize::MAX).max(16)
}

/// The largest `zerg-max-connections` that fits in `nofile` descriptors with the
/// reserve kept (plain connections hold one descriptor each).
pub fn fitting_max_connections(nofile: u64) -> usize {
    usize::try_from(nofile.saturating_sub(RESERVE + nofile / 8)).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_stop_at_the_limit_and_come_back_when_freed() {
        let limit = ConnLimit::new(2);
        let a = limit.slot().await;
        let _b = limit.slot().await;
        assert_eq!(limit.open(), 2);
        let waiting = tokio::spawn({
            let limit = Arc::clone(&limit);
            async move { limit.slot().await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!waiting.is_finished(), "a third slot was given at a limit of 2");
        drop(a);
        let _c = waiting.await.unwrap();
        assert_eq!(limit.open(), 2);
        let forced = limit.force_slot();
        assert_eq!(limit.open(), 3);
        drop(forced);
        assert_eq!(limit.open(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_the_longest_waiting_head_is_closed_once_it_waited_long_enough() {
        let limit = ConnLimit::new(2);
        let s1 = limit.slot().await;
        let w1 = limit.head_wait();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _s2 = limit.slot().await;
        let w2 = limit.head_wait();
        let next = tokio::spawn({
            let limit = Arc::clone(&limit);
            async move { limit.slot().await }
        });
        // Neither has waited EVICT_AFTER yet: nothing is closed.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!next.is_finished());
        assert_eq!(limit.waiting_heads(), 2);
        // Past it, the oldest (w1) is told to close, and w2 is not.
        tokio::time::sleep(Duration::from_millis(600)).await;
        tokio::time::timeout(Duration::from_millis(1), w1.evicted()).await.expect("the oldest head was evicted");
        assert!(tokio::time::timeout(Duration::from_millis(1), w2.evicted()).await.is_err());
        // Its connection closes: the slot goes to the new one.
        drop(w1);
        drop(s1);
        let _s3 = next.await.unwrap();
        assert_eq!(limit.waiting_heads(), 1);
    }

    #[test]
    fn exhaustion_closes_a_batch_whatever_the_age() {
        let limit = ConnLimit::new(100);
        let waits: Vec<HeadWait> = (0..40).map(|_| limit.head_wait()).collect();
        assert_eq!(limit.evict_oldest(EVICT_ON_EXHAUSTION, Duration::ZERO), Eviction::Closed(EVICT_ON_EXHAUSTION));
        assert!(waits[..EVICT_ON_EXHAUSTION].iter().all(|w| w.token.is_cancelled()));
        assert!(waits[EVICT_ON_EXHAUSTION..].iter().all(|w| !w.token.is_cancelled()));
        drop(waits);
        assert_eq!(limit.waiting_heads(), 0);
        assert_eq!(limit.evict_oldest(1, Duration::ZERO), Eviction::NoneWaiting);
    }

    #[test]
    fn the_default_keeps_a_reserve() {
        assert_eq!(default_max_connections(1024), (1024 - 64 - 128) / 2);
        assert_eq!(default_max_connections(10), 16);
        assert!(fitting_max_connections(1024) < 1024 - 64);
    }
}
