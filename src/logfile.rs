//! The pool's log destination: stderr, or a file (`logto`, opened before the
//! privilege drop; `logto2`, after it) appended to, and reopened on demand so
//! that logrotate can rename it and signal: SIGUSR1 (uWSGI's SIGUSR1 prints
//! its stats; the pool has the `stats` server for that, so SIGUSR1 reopens the
//! log, as nginx's does), `touch-logreopen FILE`, the master FIFO's `l`, and
//! every reload with `log-reopen`.
//!
//! The zerglings the pool spawns write to it too: their output is relayed line
//! by line through the pool's log. Request log lines of every zergling go
//! straight into the file (each attach session gives its zergling the file's
//! descriptor, LOGFILE, and a new one after each reopen): no copy through the
//! pool on every request. A zergling's lines written between a rename and the
//! new LOGFILE go to the renamed file, whole. Every line is one `write` to a file opened
//! with `O_APPEND`, under a lock that a reopen takes to swap the file: a line
//! goes whole to the old file or whole to the new one, never torn or lost.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;

/// Where the log goes now.
static TARGET: OnceLock<Mutex<Option<(PathBuf, File)>>> = OnceLock::new();

fn target() -> &'static Mutex<Option<(PathBuf, File)>> {
    TARGET.get_or_init(|| Mutex::new(None))
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Counts the log files opened: each attach session watches it and gives every
/// new file to its zergling (LOGFILE), so that request log lines go to the
/// file the pool writes, rotation included.
fn opened_count() -> &'static tokio::sync::watch::Sender<u64> {
    static OPENED: OnceLock<tokio::sync::watch::Sender<u64>> = OnceLock::new();
    OPENED.get_or_init(|| tokio::sync::watch::channel(0).0)
}

/// Changes each time a log file is opened (see [`file_for_zergling`]).
pub fn opened() -> tokio::sync::watch::Receiver<u64> {
    opened_count().subscribe()
}

/// A copy of the log file's descriptor for a zergling (LOGFILE), or `None`
/// while the log goes to stderr (the zerglings then send their lines in LOG).
pub fn file_for_zergling() -> Option<std::os::fd::OwnedFd> {
    let t = target().lock().unwrap_or_else(|p| p.into_inner());
    let (path, file) = t.as_ref()?;
    match file.try_clone() {
        Ok(f) => Some(f.into()),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot share the log file with a zergling; it sends its lines instead");
            None
        }
    }
}

/// Sends the log to `path` from now on (appended to).
pub fn log_to(path: &Path) -> io::Result<()> {
    let file = open(path)?;
    *target().lock().unwrap_or_else(|p| p.into_inner()) = Some((path.to_owned(), file));
    opened_count().send_modify(|n| *n += 1);
    Ok(())
}

/// Opens the log file again (after logrotate renamed it). Without a log file,
/// does nothing. On failure the old file stays in use.
pub fn reopen() -> io::Result<()> {
    let mut t = target().lock().unwrap_or_else(|p| p.into_inner());
    if let Some((path, file)) = t.as_mut() {
        *file = open(path)?;
        drop(t);
        opened_count().send_modify(|n| *n += 1);
    }
    Ok(())
}

/// Writes `bytes` (whole lines: request log lines) to the log as they are.
pub fn write_raw(bytes: &[u8]) {
    let _ = LogWriter.write_all(bytes);
}

/// The writer tracing formats into: each event is written with one call.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut t = target().lock().unwrap_or_else(|p| p.into_inner());
        match t.as_mut() {
            Some((_, file)) => file.write_all(buf),
            None => io::stderr().write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}
