//! Rate-limited warnings for events a client or a zergling can cause at will (a bad
//! uwsgi packet, a full queue, a protocol error): each call site logs at most
//! [`PER_WINDOW`] lines per [`WINDOW`], and the first line after a quiet stretch
//! says how many were suppressed, so an attack cannot fill the disk through the
//! log while an operator still sees that it happens and how much.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Length of one window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Lines one call site may write per window.
pub const PER_WINDOW: u32 = 5;

/// The budget of one call site (a `static`).
#[derive(Debug)]
pub struct WarnLimit {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    window_start: Option<Instant>,
    shown: u32,
    suppressed: u64,
}

impl WarnLimit {
    /// A fresh budget.
    pub const fn new() -> Self {
        WarnLimit { state: Mutex::new(State { window_start: None, shown: 0, suppressed: 0 }) }
    }

    /// `Some(n)` when this event may be logged, `n` being how many were suppressed
    /// since the last line written; `None` when it must be dropped (and counted).
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.window_start.map_or(true, |start| now.duration_since(start) >= WINDOW) {
            st.window_start = Some(now);
            st.shown = 0;
        }
        if st.shown < PER_WINDOW {
            st.shown += 1;
            return Some(std::mem::take(&mut st.suppressed));
        }
        st.suppressed += 1;
        None
    }
}

impl Default for WarnLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// `warn!` through a [`WarnLimit`] of its own: at most [`PER_WINDOW`] lines per
/// [`WINDOW`] from this call site, each with a `suppressed` count.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::warn_limit::WarnLimit = $crate::warn_limit::WarnLimit::new();
        if let Some(suppressed) = LIMIT.allow() {
            ::tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_and_counted() {
        let l = WarnLimit::new();
        let t0 = Instant::now();
        let shown = (0..1000).filter(|_| l.allow_at(t0).is_some()).count();
        assert_eq!(shown, PER_WINDOW as usize);
        // The next window's first line reports what the last one dropped.
        assert_eq!(l.allow_at(t0 + WINDOW), Some(1000 - u64::from(PER_WINDOW)));
        assert_eq!(l.allow_at(t0 + WINDOW), Some(0));
    }
}
