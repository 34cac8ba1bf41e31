//! Spawned zerglings (`zergling = COMMAND`): start, log, respawn, stop.
//!
//! Each command is one process, started after the listeners and the attach socket
//! exist, with `ZERGPOOL_SOCKET` set so that the zergling library finds the pool.
//! Its stdout and stderr become log lines prefixed with its name. A process that
//! exits is respawned after an exponential back-off (reset once a process has lived
//! long enough). Stopping sends SIGTERM (the library drains on it), waits up to the
//! mercy, then sends SIGKILL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// First respawn delay.
const BACKOFF_START: Duration = Duration::from_millis(250);
/// Longest respawn delay.
const BACKOFF_MAX: Duration = Duration::from_secs(16);
/// A process that lived this long resets the back-off.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// The set of spawned zerglings.
#[derive(Debug)]
pub struct Supervisor {
    pids: Mutex<HashMap<usize, u32>>,
    stopping: CancellationToken,
    tracker: TaskTracker,
}

impl Supervisor {
    /// Starts one supervised process per command.
    pub fn start(commands: &[Vec<String>], socket: PathBuf) -> Arc<Supervisor> {
        let sup = Arc::new(Supervisor {
            pids: Mutex::new(HashMap::new()),
            stopping: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        for (index, argv) in commands.iter().enumerate() {
            let s = sup.clone();
            let (argv, socket) = (argv.clone(), socket.clone());
            sup.tracker.spawn(async move { s.keep_running(index, argv, socket).await });
        }
        sup.tracker.close();
        sup
    }

    /// Process ids of the spawned zerglings now running.
    pub fn pids(&self) -> Vec<u32> {
        self.lock().values().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, u32>> {
        self.pids.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn keep_running(&self, index: usize, argv: Vec<String>, socket: PathBuf) {
        let name = format!("zergling{index}");
        let mut backoff = BACKOFF_START;
        while !self.stopping.is_cancelled() {
            let started = Instant::now();
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .env("ZERGPOOL_SOCKET", &socket)
                .env("ZERGPOOL_SPAWNED", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(false);
            match cmd.spawn() {
                Ok(mut child) => {
                    let pid = child.id().unwrap_or(0);
                    self.lock().insert(index, pid);
                    info!(zergling = %name, pid, command = %argv.join(" "), "spawned");
                    if let Some(out) = child.stdout.take() {
                        tokio::spawn(pump_lines(out, name.clone(), pid));
                    }
                    if let Some(err) = child.stderr.take() {
                        tokio::spawn(pump_lines(err, name.clone(), pid));
                    }
                    let status = child.wait().await;
                    self.lock().remove(&index);
                    if self.stopping.is_cancelled() {
                        info!(zergling = %name, pid, status = ?status.ok(), "exited");
                        return;
                    }
                    if started.elapsed() >= HEALTHY_AFTER {
                        backoff = BACKOFF_START;
                    }
                    warn!(zergling = %name, pid, status = ?status.ok(), respawn_in_ms = backoff.as_millis() as u64, "exited; respawning");
                }
                Err(e) => {
                    error!(zergling = %name, command = %argv.join(" "), error = %e, respawn_in_ms = backoff.as_millis() as u64, "cannot start; check the zergling command");
                }
            }
            tokio::select! {
                _ = self.stopping.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
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
            if let Ok(pid) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
    }
}

async fn pump_lines<R: AsyncRead + Unpin>(r: R, name: String, pid: u32) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        info!(target: "zergpool::zergling_output", "[{name} pid {pid}] {line}");
    }
}
