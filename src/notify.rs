//! systemd's notification protocol (`sd_notify`, the sd-notify crate): the
//! pool tells its service manager
//!
//! * `READY=1` once it listens (its listeners, the attach socket and the queue
//!   are up: it does not wait for a ready zergling, because connections that
//!   arrive before one is ready wait in the pool's queue and none is lost);
//! * `STATUS=` with its zerglings (ready, draining) and queue, on every change,
//!   at most once a second;
//! * `RELOADING=1` with `MONOTONIC_USEC` when a reload (SIGHUP, a touch file,
//!   the master FIFO) starts, and `READY=1` when it is over;
//! * `STOPPING=1` when it stops;
//! * `WATCHDOG=1` every half of `WATCHDOG_USEC`, when the unit sets one.
//!
//! Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::dispatch::Dispatcher;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// The pool listens.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// A reload starts.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The pool stops.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Sends `STATUS=` whenever the zerglings or the queue change (at most once a
/// second), and `WATCHDOG=1` when asked for, until `stop`.
pub async fn run(dispatcher: Arc<Dispatcher>, stop: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut last = None;
    loop {
        let now = dispatcher.counts();
        if Some(now) != last {
            let (ready, draining, queued) = now;
            let status = format!("{ready} zergling(s) ready, {draining} draining, {queued} connection(s) queued");
            send(&[NotifyState::Status(&status)]);
            last = Some(now);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ping.tick(), if watchdog.is_some() => send(&[NotifyState::Watchdog]),
            // Checked at every change of the dispatcher: a comparison of three
            // counts, no allocation; then at most one STATUS a second.
            _ = async {
                dispatcher.wait_until(|d| Some(d.counts()) != last).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            } => {}
        }
    }
}
