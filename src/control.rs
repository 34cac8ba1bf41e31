//! What tells the pool to reload or stop: signals, touch files, the master FIFO.
//!
//! Every trigger becomes one [`Control`] value on one channel, so the pool reacts
//! to all of them in one place. Signals follow the table in README ("Signals");
//! the master FIFO takes uWSGI's single-letter commands; touch files are polled
//! about once a second and fire when their modification time changes, or when
//! they appear or disappear (as uWSGI's `touch-reload`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::signals::{SignalAction, SignalTable};

/// A request to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Replace the spawned zerglings one by one (and reload what can change
    /// without rebinding); `why` names the trigger for the log.
    ChainReload {
        /// The trigger.
        why: &'static str,
    },
    /// Open the log file again; `why` names the trigger.
    ReopenLog {
        /// The trigger.
        why: &'static str,
    },
    /// Stop gracefully.
    GracefulStop,
    /// Stop at once.
    ImmediateStop,
}

/// What a signal's configured action means to the pool.
pub fn control_for(action: SignalAction, name: &'static str) -> Control {
    match action {
        SignalAction::GracefulStop => Control::GracefulStop,
        SignalAction::ImmediateStop => Control::ImmediateStop,
        // There is one kind of reload: zerglings replaced one by one.
        SignalAction::GracefulReload | SignalAction::Reload => Control::ChainReload { why: name },
        SignalAction::ReopenLog => Control::ReopenLog { why: name },
    }
}

/// Installs a handler for every signal of `table` (SIGTERM, SIGINT, SIGQUIT and
/// SIGHUP by default, more with `hook-master-start`), plus SIGUSR1 and SIGUSR2,
/// so that no signal kills the pool by accident; signals without an action are
/// logged and ignored.
pub fn spawn_signals(tx: mpsc::UnboundedSender<Control>, table: &SignalTable) -> std::io::Result<()> {
    let mut signos: Vec<i32> = table.iter().map(|(n, _)| n).collect();
    for extra in [nix::libc::SIGUSR1, nix::libc::SIGUSR2] {
        if !signos.contains(&extra) {
            signos.push(extra);
        }
    }
    for signo in signos {
        let name = nix::sys::signal::Signal::try_from(signo).map(|s| s.as_str()).unwrap_or("signal");
        let mut stream = signal(SignalKind::from_raw(signo))?;
        let action = table.action(signo);
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                match action {
                    Some(a) => {
                        let c = control_for(a, name);
                        info!(signal = name, action = ?c, "signal received");
                        if tx.send(c).is_err() {
                            return;
                        }
                    }
                    None => info!(signal = name, "signal ignored"),
                }
            }
        });
    }
    Ok(())
}

/// Polls `files` about once a second; sends `control` when one changes.
pub async fn watch_touch_files(
    files: Vec<PathBuf>,
    control: Control,
    tx: mpsc::UnboundedSender<Control>,
    stop: CancellationToken,
) {
    if files.is_empty() {
        return;
    }
    let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last: Vec<Option<SystemTime>> = files.iter().map(|p| stamp(p)).collect();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (i, p) in files.iter().enumerate() {
            let now = stamp(p);
            if now != last[i] {
                last[i] = now;
                info!(file = %p.display(), "touched");
                if tx.send(control).is_err() {
                    return;
                }
            }
        }
    }
}

/// Why the master FIFO could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot create the master FIFO; remove the file or choose another master-fifo path")]
pub struct FifoError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The master FIFO: creates it (replacing a stale FIFO, never another file).
pub fn open_fifo(path: &Path) -> Result<tokio::net::unix::pipe::Receiver, FifoError> {
    use std::os::unix::fs::FileTypeExt;
    let err = |source| FifoError { path: path.to_owned(), source };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_fifo() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => return Err(err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a FIFO"))),
        Err(_) => {}
    }
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(|e| err(e.into()))?;
    // Read-write, so that the last writer closing is not an end of file.
    tokio::net::unix::pipe::OpenOptions::new().read_write(true).open_receiver(path).map_err(err)
}

/// Reads uWSGI's single-letter commands from the master FIFO: `r`, `c`, `w`
/// (reload zerglings one by one), `q` (graceful stop), `Q` (immediate stop).
/// Other letters are logged and ignored.
pub async fn read_fifo(
    mut rx: tokio::net::unix::pipe::Receiver,
    tx: mpsc::UnboundedSender<Control>,
    stop: CancellationToken,
) {
    let mut buf = [0u8; 64];
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.read(&mut buf) => match r {
                Ok(0) => continue,
                Ok(n) => n,
                Err(e) => {
                    warn!(error = %e, "master FIFO read failed; no more FIFO commands");
                    return;
                }
            },
        };
        for &b in &buf[..n] {
            let c = match b {
                b'r' | b'c' | b'w' => Control::ChainReload { why: "master FIFO" },
                b'q' => Control::GracefulStop,
                b'l' => Control::ReopenLog { why: "master FIFO" },
                b'Q' => Control::ImmediateStop,
                b'\n' | b'\r' | b' ' => continue,
                other => {
                    warn!(command = %char::from(other), "unknown master FIFO command (known: r c w q Q l)");
                    continue;
                }
            };
            info!(command = %char::from(b), action = ?c, "master FIFO command");
            if tx.send(c).is_err() {
                return;
            }
        }
    }
}
