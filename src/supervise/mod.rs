//! Spawned zerglings (`zergling = COMMAND`): start, log, respawn, chain-reload, stop.
//!
//! Each command is one slot with one process, started after the listeners and the
//! attach socket exist, with `ZERGPOOL_SOCKET` set so that the zergling library
//! finds the pool. Its stdout and stderr become log lines prefixed with its name.
//! A process that exits with an error (or a signal) is respawned after an
//! exponential back-off (reset once a process has lived long enough); one that
//! exits with status 0 drained on someone's request and is replaced at once.
//!
//! A **chain reload** replaces the slots one at a time: start the replacement,
//! wait until it has attached and is ready, ask the old one to drain (DRAIN over
//! its channel; SIGTERM if it never attached), wait for it to exit (SIGKILL after
//! `worker-reload-mercy`), go on. A replacement that does not attach in time is
//! killed and the chain stops there; the old processes keep serving.
//!
//! Stopping sends SIGTERM (the library drains on it), waits up to the mercy,
//! then sends SIGKILL.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::dispatch::{Dispatcher, SlotState};

/// First respawn delay.
const BACKOFF_START: Duration = Duration::from_millis(250);
/// Longest respawn delay.
const BACKOFF_MAX: Duration = Duration::from_secs(16);
/// A process that lived this long resets the back-off.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// Timing of supervision.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long an old zergling gets to drain during a chain reload before SIGKILL
    /// (`worker-reload-mercy`).
    pub worker_mercy: Duration,
    /// How long a replacement has to attach during a chain reload
    /// (`zerg-attach-timeout`).
    pub attach_timeout: Duration,
}

/// Why a chain reload stopped (the zerglings not yet replaced keep serving).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The pool is stopping.
    #[error("the pool is stopping")]
    Stopping,
    /// The zergling to replace is not running (its respawn is pending).
    #[error("{name} is not running (respawn pending)")]
    NotRunning {
        /// The slot's name (`zergling0`, …).
        name: String,
    },
    /// The replacement could not be started.
    #[error("cannot start the replacement")]
    Spawn(#[source] std::io::Error),
    /// The replacement exited before it attached.
    #[error("the replacement (pid {pid}) exited before attaching: {status:?}")]
    ExitedEarly {
        /// Its pid.
        pid: u32,
        /// How it exited, when known.
        status: Option<std::process::ExitStatus>,
    },
    /// The replacement did not attach in time.
    #[error("the replacement (pid {pid}) did not attach within {timeout:?} (zerg-attach-timeout)")]
    NotAttached {
        /// Its pid.
        pid: u32,
        /// `zerg-attach-timeout`.
        timeout: Duration,
    },
}

/// What a slot's task is asked to do.
enum SlotCommand {
    /// Replace the running process (one step of a chain reload).
    Replace(oneshot::Sender<Result<(), ReloadError>>),
}

/// The set of spawned zerglings.
#[derive(Debug)]
pub struct Supervisor {
    slots: Vec<mpsc::UnboundedSender<SlotCommand>>,
    pids: Mutex<HashSet<u32>>,
    stopping: CancellationToken,
    tracker: TaskTracker,
    chain: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SlotCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replace")
    }
}

/// Everything one slot's task needs.
struct Slot {
    /// Its index among the `zergling` commands.
    index: usize,
    /// Processes it started (the first is 0; the stats' `respawn_count`).
    spawns: std::sync::atomic::AtomicU64,
    name: String,
    argv: Vec<String>,
    socket: PathBuf,
    dispatcher: Arc<Dispatcher>,
    settings: Settings,
}

impl Supervisor {
    /// Starts one supervised process per command.
    pub fn start(
        commands: &[Vec<String>],
        socket: PathBuf,
        dispatcher: Arc<Dispatcher>,
        settings: Settings,
    ) -> Arc<Supervisor> {
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in commands {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            receivers.push(rx);
        }
        let sup = Arc::new(Supervisor {
            slots: senders,
            pids: Mutex::new(HashSet::new()),
            stopping: CancellationToken::new(),
            tracker: TaskTracker::new(),
            chain: tokio::sync::Mutex::new(()),
        });
        for ((index, argv), rx) in commands.iter().enumerate().zip(receivers) {
            let slot = Slot {
                index,
                spawns: std::sync::atomic::AtomicU64::new(0),
                name: format!("zergling{index}"),
                argv: argv.clone(),
                socket: socket.clone(),
                dispatcher: dispatcher.clone(),
                settings,
            };
            let s = sup.clone();
            sup.tracker.spawn(async move { s.keep_running(slot, rx).await });
        }
        sup.tracker.close();
        sup
    }

    /// Process ids of the spawned zerglings now running.
    pub fn pids(&self) -> Vec<u32> {
        self.lock().iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        self.pids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces every spawned zergling, one at a time. A chain already running
    /// absorbs this request.
    pub async fn chain_reload(&self) -> Result<(), ReloadError> {
        let Ok(_running) = self.chain.try_lock() else {
            info!("a chain reload is already running");
            return Ok(());
        };
        if self.slots.is_empty() {
            info!("chain reload: no spawned zerglings");
            return Ok(());
        }
        info!(zerglings = self.slots.len(), "chain reload started");
        for (index, slot) in self.slots.iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            if slot.send(SlotCommand::Replace(tx)).is_err() {
                return Err(ReloadError::Stopping);
            }
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => {
                    warn!(zergling = index, reason = %crate::error_chain(&why), "chain reload stopped; the zerglings not yet replaced keep serving");
                    return Err(why);
                }
                Err(_) => return Err(ReloadError::Stopping),
            }
        }
        info!("chain reload complete");
        crate::events::emit("reload-complete", serde_json::json!({}));
        Ok(())
    }

    async fn keep_running(&self, slot: Slot, mut commands: mpsc::UnboundedReceiver<SlotCommand>) {
        let mut backoff = BACKOFF_START;
        'respawn: while !self.stopping.is_cancelled() {
            let started = Instant::now();
            match self.spawn(&slot) {
                // The pid is kept from spawn time: after `wait` has reaped the
                // child, `Child::id` says nothing any more.
                Ok((mut child, mut pid)) => loop {
                    tokio::select! {
                        status = child.wait() => {
                            self.forget(&slot, pid);
                            if self.stopping.is_cancelled() {
                                info!(zergling = %slot.name, status = ?status.ok(), "exited");
                                return;
                            }
                            if started.elapsed() >= HEALTHY_AFTER {
                                backoff = BACKOFF_START;
                            }
                            if status.as_ref().is_ok_and(|s| s.success()) {
                                // A clean exit is a drain someone else asked for (a
                                // SIGTERM from an operator or a script), not a crash:
                                // replace it at once, with no back-off.
                                info!(zergling = %slot.name, "exited cleanly; respawning now");
                                backoff = BACKOFF_START;
                                continue 'respawn;
                            }
                            warn!(zergling = %slot.name, status = ?status.ok(), respawn_in_ms = backoff.as_millis() as u64, "exited; respawning");
                            break;
                        }
                        Some(SlotCommand::Replace(done)) = commands.recv() => {
                            match self.replace(&slot, &mut child, pid).await {
                                Ok((new, new_pid)) => {
                                    child = new;
                                    pid = new_pid;
                                    let _ = done.send(Ok(()));
                                }
                                Err(why) => {
                                    let _ = done.send(Err(why));
                                }
                            }
                        }
                    }
                },
                Err(e) => {
                    error!(zergling = %slot.name, command = %slot.argv.join(" "), error = %e, respawn_in_ms = backoff.as_millis() as u64, "cannot start; check the zergling command");
                }
            }
            // Chain steps asked for while no process runs cannot be done now.
            while let Ok(SlotCommand::Replace(done)) = commands.try_recv() {
                let _ = done.send(Err(ReloadError::NotRunning { name: slot.name.clone() }));
            }
            tokio::select! {
                _ = self.stopping.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Starts the slot's command; returns the child and its pid (0 never: a child
    /// without a pid is killed and reported as a failure).
    fn spawn(&self, slot: &Slot) -> std::io::Result<(Child, u32)> {
        let mut cmd = Command::new(&slot.argv[0]);
        cmd.args(&slot.argv[1..])
            .env("ZERGPOOL_SOCKET", &slot.socket)
            .env("ZERGPOOL_SPAWNED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        let mut child = cmd.spawn()?;
        let Some(pid) = child.id().filter(|&p| p != 0) else {
            let _ = child.start_kill();
            return Err(std::io::Error::other("the spawned process has no pid"));
        };
        self.lock().insert(pid);
        let respawns = slot.spawns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        slot.dispatcher.note_spawned(
            pid,
            crate::dispatch::Spawned { slot: slot.index, respawns, at: std::time::SystemTime::now() },
        );
        info!(zergling = %slot.name, pid, command = %slot.argv.join(" "), "spawned");
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump_lines(out, slot.name.clone(), pid));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump_lines(err, slot.name.clone(), pid));
        }
        Ok((child, pid))
    }

    fn forget(&self, slot: &Slot, pid: u32) {
        self.lock().remove(&pid);
        slot.dispatcher.forget_spawned(pid);
    }

    /// One step of a chain reload: start the replacement, wait until it is
    /// attached and ready, drain the old process and wait for it to exit.
    async fn replace(&self, slot: &Slot, old: &mut Child, old_pid: u32) -> Result<(Child, u32), ReloadError> {
        let (mut new, new_pid) = self.spawn(slot).map_err(ReloadError::Spawn)?;
        // Woken by the dispatcher whenever a zergling attaches or changes state;
        // bounded by zerg-attach-timeout, and ended early if the process exits.
        let ready = slot
            .dispatcher
            .wait_until(|d| d.zerglings().iter().any(|z| z.pid == new_pid && z.state == SlotState::Ready));
        tokio::select! {
            _ = ready => {}
            status = new.wait() => {
                self.forget(slot, new_pid);
                return Err(ReloadError::ExitedEarly { pid: new_pid, status: status.ok() });
            }
            _ = tokio::time::sleep(slot.settings.attach_timeout) => {
                signal_pid(new_pid, Signal::SIGKILL);
                let _ = new.wait().await;
                self.forget(slot, new_pid);
                return Err(ReloadError::NotAttached { pid: new_pid, timeout: slot.settings.attach_timeout });
            }
        }
        info!(zergling = %slot.name, old = old_pid, new = new_pid, "replacement attached; draining the old process");
        if slot.dispatcher.drain_pid(old_pid) == 0 {
            signal_pid(old_pid, Signal::SIGTERM);
        }
        match tokio::time::timeout(slot.settings.worker_mercy, old.wait()).await {
            Ok(status) => info!(zergling = %slot.name, pid = old_pid, status = ?status.ok(), "old process exited"),
            Err(_) => {
                warn!(zergling = %slot.name, pid = old_pid, "old process still running after worker-reload-mercy; SIGKILL");
                signal_pid(old_pid, Signal::SIGKILL);
                let _ = old.wait().await;
            }
        }
        self.forget(slot, old_pid);
        Ok((new, new_pid))
    }

    /// Stops every spawned zergling: SIGTERM, up to `mercy` to exit, then SIGKILL.
    pub async fn stop(&self, mercy: Duration) {
        self.stopping.cancel();
        self.signal_all(Signal::SIGTERM);
        if tokio::time::timeout(mercy, self.tracker.wait()).await.is_err() {
            warn!(mercy_s = mercy.as_secs_f64(), "zerglings still running after the mercy; sending SIGKILL");
            self.signal_all(Signal::SIGKILL);
            self.tracker.wait().await;
        }
    }

    /// Kills every spawned zergling at once.
    pub async fn kill_now(&self) {
        self.stopping.cancel();
        self.signal_all(Signal::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }

    fn signal_all(&self, sig: Signal) {
        for pid in self.pids() {
            signal_pid(pid, sig);
        }
    }
}

/// Signals one process the supervisor spawned and has not reaped. Never pid 0
/// (the pool's own process group) or a negative number (a group).
fn signal_pid(pid: u32, sig: Signal) {
    match i32::try_from(pid) {
        Ok(p) if p > 0 => {
            let _ = kill(Pid::from_raw(p), sig);
        }
        _ => warn!(pid, signal = %sig, "not signalling an invalid pid"),
    }
}

async fn pump_lines<R: AsyncRead + Unpin>(r: R, name: String, pid: u32) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        info!(target: "zergpool::zergling_output", "[{name} pid {pid}] {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reaped zergling's pid leaves the set at once, so no later stop can signal
    /// whatever process reuses the number (its pid used to be read back after
    /// `wait`, which yields nothing, and the dead pid stayed).
    #[tokio::test]
    async fn a_reaped_zergling_is_never_signalled_again() {
        let dispatcher = Arc::new(Dispatcher::new(16, Duration::from_secs(1)));
        let settings = Settings { worker_mercy: Duration::from_secs(1), attach_timeout: Duration::from_secs(1) };
        let commands = vec![vec!["sh".to_owned(), "-c".to_owned(), "exit 3".to_owned()]];
        let sup = Supervisor::start(&commands, PathBuf::from("/nonexistent.sock"), dispatcher, settings);
        // The child runs, exits 3, and waits out the back-off (250 ms and more).
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = None;
        while Instant::now() < deadline && seen.is_none() {
            seen = sup.pids().first().copied();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let pid = seen.expect("the zergling was spawned");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && sup.pids().contains(&pid) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!sup.pids().contains(&pid), "the reaped pid {pid} is still in the set");
        sup.kill_now().await;
    }
}
