//! This process's request counters, reported to the pool with STATS (uWSGI's
//! per-worker `requests`, `exceptions`, `tx`, `running_time`, `avg_rt`, busy or
//! idle): atomics bumped once per request (a [`Clock`] per request, body bytes
//! counted as they go out), read by the session's reporting tick; and the
//! request log lines the pool's policy asks for (WELCOME), formatted when a
//! request ends and written in batches by `session::flush_logs`: straight to
//! the pool's log file when the pool gave its descriptor (LOGFILE), else to the
//! pool in LOG frames.
//!
//! A line goes first into a buffer of the thread's own ([`Local`], behind a lock
//! nobody else takes but the flusher, ten times a second), which is appended
//! to the shared one ([`LINES`]) in one copy when it holds [`HAND_OVER_AT`]
//! bytes, and at each of the flusher's turns ([`collect_own_lines`]).
//! Measured with `benches/reqlog.sh`: lines written one by one into the
//! shared buffer cost 2-3 % more of a keep-alive request's CPU than lines
//! gathered per thread and copied over 16-128 KiB at a time (the lines'
//! bytes land in memory no longer in the CPU's caches; one large copy fills
//! whole cache lines without reading them first).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Buf;
use hyper::body::{Body, Frame};
use std::sync::Arc;
use zergpool_core::proto::ZerglingStats;
use zergpool_core::reqlog::{Entry, LogPolicy};

/// How often the counters are sent to the pool (when they changed).
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(1);

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static EXCEPTIONS: AtomicU64 = AtomicU64::new(0);
static TX_BYTES: AtomicU64 = AtomicU64::new(0);
static RUNNING_US: AtomicU64 = AtomicU64::new(0);
static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);

/// How often buffered request log lines are sent to the pool.
pub(crate) const LOG_EVERY: Duration = Duration::from_millis(100);

/// The pool's request-log policy (from WELCOME; none until then), and its
/// generation: each thread keeps a copy ([`policy`]) and looks at the shared
/// one only when the generation moved, so that a request reads one atomic, not
/// a lock or an `ArcSwap` guard, twice.
static POLICY: std::sync::RwLock<Option<Arc<LogPolicy>>> = std::sync::RwLock::new(None);
static POLICY_GEN: AtomicU64 = AtomicU64::new(0);

/// Takes the pool's request-log policy.
pub(crate) fn set_policy(p: LogPolicy) {
    *POLICY.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(p));
    POLICY_GEN.fetch_add(1, Ordering::Release);
}

/// What a thread keeps for its requests' lines: its copy of the policy (and
/// the generation it is from), and its own lines (registered in [`OWNERS`] at
/// its first line). One thread-local, looked at once when a request starts and
/// once when it ends.
#[derive(Default)]
struct Local {
    gen: u64,
    policy: Option<Arc<LogPolicy>>,
    own: Option<Own>,
}

impl Local {
    /// The policy now (this thread's copy, refreshed when it changed), and
    /// this thread's own lines, if it wrote one yet.
    fn parts(&mut self) -> (&LogPolicy, &mut Option<Own>) {
        let Local { gen, policy, own } = self;
        let now = POLICY_GEN.load(Ordering::Acquire);
        if *gen != now {
            *gen = now;
            *policy = None;
        }
        (policy.get_or_insert_with(current_policy), own)
    }
}

/// A thread's own lines, new (registered in [`OWNERS`]).
fn new_own() -> Own {
    let own = Own::default();
    own.lock().unwrap_or_else(|p| p.into_inner()).reserve(HAND_OVER_AT + 8 * 1024);
    OWNERS.lock().unwrap_or_else(|p| p.into_inner()).push(own.clone());
    own
}

thread_local! {
    static LOCAL: std::cell::RefCell<Local> = std::cell::RefCell::new(Local::default());
}

/// The shared policy (the default before WELCOME).
fn current_policy() -> Arc<LogPolicy> {
    POLICY.read().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default()
}

/// Runs `f` with the policy now (this thread's copy; the shared one while the
/// thread is ending, or inside another use of its copy).
fn with_policy<R>(f: impl FnOnce(&LogPolicy) -> R) -> R {
    let mut f = Some(f);
    let mine = LOCAL.try_with(|l| {
        let mut l = l.try_borrow_mut().ok()?;
        let f = f.take()?;
        Some(f(l.parts().0))
    });
    if let Ok(Some(r)) = mine {
        return r;
    }
    match f.take() {
        Some(f) => f(&current_policy()),
        None => unreachable!("`f` runs once, and its result returned above"),
    }
}

/// Lines waiting to be written (to the pool's log file, or sent in LOG).
static LINES: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Past this many bytes of lines, the session is asked to write them at once
/// rather than at its next tick. Large on purpose: a write into a file costs a
/// fixed ~25-40 us when it comes between requests (the kernel's write path is
/// out of the caches by then; measured with `benches/logwrite.sh`) on top of
/// ~0.4 us per KiB, so 32 KiB writes cost ~110 ns per line and 256 KiB ones
/// ~40. At 70 000 requests a second that is a write every ~35 ms; below
/// ~20 000 the tick ([`LOG_EVERY`]) comes first.
const SEND_AT: usize = 256 * 1024;

/// Signalled when [`LINES`] passed [`SEND_AT`] (once until they are taken).
static LINES_FULL: tokio::sync::Notify = tokio::sync::Notify::const_new();
static FULL_SIGNALLED: AtomicBool = AtomicBool::new(false);

/// Past this many bytes, a thread's own lines are appended to [`LINES`]:
/// large enough that the copy is one long string move (whole cache lines
/// written, none read first), small enough to stay in the CPU's caches.
const HAND_OVER_AT: usize = 32 * 1024;

/// Appends a thread's own lines to `shared` in one copy (and asks for them
/// to be written when they fill a batch).
fn hand_over(own: &mut String, shared: &mut String) {
    shared.push_str(own);
    own.clear();
    if shared.len() >= SEND_AT && !FULL_SIGNALLED.swap(true, Ordering::Relaxed) {
        // A permit if the flusher is busy: it takes them at its next turn.
        LINES_FULL.notify_one();
    }
}

/// A thread's own lines (see the module's documentation).
type Own = Arc<std::sync::Mutex<String>>;

/// Every thread's own lines, for the flusher to collect at each turn; a
/// thread that ended leaves its buffer here until then.
static OWNERS: std::sync::Mutex<Vec<Own>> = std::sync::Mutex::new(Vec::new());

/// Appends every thread's own lines to [`LINES`], and forgets the buffers
/// of threads that ended (the flusher, before it takes the lines).
pub(crate) fn collect_own_lines() {
    let mut owners = OWNERS.lock().unwrap_or_else(|p| p.into_inner());
    for own in owners.iter() {
        let mut own = own.lock().unwrap_or_else(|p| p.into_inner());
        if !own.is_empty() {
            hand_over(&mut own, &mut LINES.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }
    owners.retain(|o| Arc::strong_count(o) > 1);
}

/// The lines written since the last call (empty when none); `spare` (emptied)
/// takes their place, so that two buffers go round and none is allocated
/// (and its pages faulted in) again for each batch.
pub(crate) fn take_lines(mut spare: String) -> String {
    collect_own_lines();
    spare.clear();
    let mut lines = LINES.lock().unwrap_or_else(|p| p.into_inner());
    FULL_SIGNALLED.store(false, Ordering::Relaxed);
    if lines.is_empty() {
        return spare;
    }
    if spare.capacity() < SEND_AT && lines.capacity() >= SEND_AT {
        // The first turn: room for a whole batch and the lines that come
        // while the signal is on its way.
        spare.reserve(SEND_AT + SEND_AT / 4);
    }
    std::mem::replace(&mut *lines, spare)
}

/// The pool's log file (LOGFILE), where lines go straight, if it gave one.
static LOG_FILE: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);

/// Takes the pool's log file (a new one after each rotation).
pub(crate) fn set_log_file(fd: std::os::fd::OwnedFd) {
    *LOG_FILE.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::fs::File::from(fd));
}

/// Appends `lines` to the pool's log file in one write (the file is opened for
/// appending: a write goes whole, never between another writer's bytes) and
/// gives the buffer back for reuse; gives the lines back unwritten (`Err`)
/// when there is no such file or it failed (they then go in LOG). A write to a
/// file lands in the page cache: it does not wait for the disk.
pub(crate) fn write_to_log_file(lines: String) -> Result<String, String> {
    if lines.is_empty() {
        return Ok(lines);
    }
    let mut file = LOG_FILE.lock().unwrap_or_else(|p| p.into_inner());
    let Some(f) = file.as_mut() else { return Err(lines) };
    match std::io::Write::write_all(f, lines.as_bytes()) {
        Ok(()) => Ok(lines),
        Err(e) => {
            tracing::warn!(error = %e, "cannot write request log lines to the pool's log file; sending them to the pool");
            *file = None;
            Err(lines)
        }
    }
}

/// Completes when the lines waiting passed [`SEND_AT`].
pub(crate) async fn lines_full() {
    LINES_FULL.notified().await
}

/// What a request's log line needs from its head, captured only when the
/// policy may log it.
#[derive(Debug)]
pub(crate) struct LogFields {
    method: http::Method,
    /// The request target's path and query (all a line shows of it).
    uri: Option<http::uri::PathAndQuery>,
    version: http::Version,
    addr: crate::Endpoint,
    wid: u64,
    host: Option<http::HeaderValue>,
    uagent: Option<http::HeaderValue>,
    referer: Option<http::HeaderValue>,
}

/// The counters now.
pub(crate) fn snapshot() -> ZerglingStats {
    ZerglingStats {
        requests: REQUESTS.load(Ordering::Relaxed),
        exceptions: EXCEPTIONS.load(Ordering::Relaxed),
        tx_bytes: TX_BYTES.load(Ordering::Relaxed),
        running_us: RUNNING_US.load(Ordering::Relaxed),
        in_flight: IN_FLIGHT.load(Ordering::Relaxed),
    }
}

/// Response body bytes sent.
pub(crate) fn sent(n: usize) {
    TX_BYTES.fetch_add(n as u64, Ordering::Relaxed);
}

/// One request being served: in flight until dropped, then counted as done
/// (with its time, and as an exception if its status was 5xx).
#[derive(Debug)]
pub(crate) struct Clock {
    started: Instant,
    status: u16,
    /// Response body bytes (for the log line).
    pub(crate) size: u64,
    log: Option<LogFields>,
}

impl Clock {
    /// A request counted, never logged (one a zergling answers from
    /// static-map on a uwsgi connection it accepted itself).
    pub(crate) fn counted() -> Clock {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        Clock { started: Instant::now(), status: 200, size: 0, log: None }
    }

    /// A request starts: `req`'s head and `info` are kept if it may be logged.
    pub(crate) fn start<B>(req: &http::Request<B>, info: Option<&crate::ConnInfo>) -> Clock {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        let log = with_policy(|p| {
            p.any().then(|| {
                // Only the headers the line shows (uWSGI's shows none).
                let headers = p.format.shows_headers();
                let h = |name| if headers { req.headers().get(name).cloned() } else { None };
                LogFields {
                    method: req.method().clone(),
                    uri: req.uri().path_and_query().cloned(),
                    version: req.version(),
                    addr: info.map_or_else(|| crate::Endpoint::unix(""), |i| i.peer.clone()),
                    wid: info.map_or(0, |i| i.zergling.0),
                    host: h(http::header::HOST),
                    uagent: h(http::header::USER_AGENT),
                    referer: h(http::header::REFERER),
                }
            })
        });
        Clock { started: Instant::now(), status: 200, size: 0, log }
    }

    /// The response's status is known.
    pub(crate) fn status(&mut self, status: http::StatusCode) {
        self.status = status.as_u16();
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        let now = Instant::now();
        let micros = now.saturating_duration_since(self.started).as_micros() as u64;
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        if self.status >= 500 {
            EXCEPTIONS.fetch_add(1, Ordering::Relaxed);
        }
        RUNNING_US.fetch_add(micros, Ordering::Relaxed);
        if let Some(f) = self.log.take() {
            self.log_line(&f, micros, now);
        }
    }
}

impl Clock {
    /// Appends the request's line, if the policy wants it, to this thread's
    /// own lines (to the shared ones while the thread is ending).
    fn log_line(&self, f: &LogFields, micros: u64, now: Instant) {
        fn text(v: &Option<http::HeaderValue>) -> &str {
            v.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("")
        }
        let entry = Entry {
            pid: zergpool_core::reqlog::pid(),
            wid: f.wid,
            addr: &f.addr,
            method: f.method.as_str(),
            uri: f.uri.as_ref().map_or("/", |p| p.as_str()),
            proto: match f.version {
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_2 => "HTTP/2.0",
                _ => "HTTP/1.1",
            },
            status: self.status,
            size: self.size,
            micros,
            host: text(&f.host),
            uagent: text(&f.uagent),
            referer: text(&f.referer),
            at: now,
        };
        let mine = LOCAL.try_with(|l| {
            let Ok(mut l) = l.try_borrow_mut() else { return false };
            let (p, own) = l.parts();
            if p.wants(self.status, micros) {
                let mut own = own.get_or_insert_with(new_own).lock().unwrap_or_else(|p| p.into_inner());
                zergpool_core::reqlog::write_line(&p.format, &entry, &mut own);
                if own.len() >= HAND_OVER_AT {
                    hand_over(&mut own, &mut LINES.lock().unwrap_or_else(|p| p.into_inner()));
                }
            }
            true
        });
        if mine != Ok(true) {
            // The thread is ending (a request dropped by a thread-local's
            // destructor): straight into the shared buffer.
            let p = current_policy();
            if p.wants(self.status, micros) {
                zergpool_core::reqlog::write_line(
                    &p.format,
                    &entry,
                    &mut LINES.lock().unwrap_or_else(|p| p.into_inner()),
                );
            }
        }
    }
}

/// A response body counted as it goes out, its request done when it ends (the
/// uwsgi path; HTTP/1 and HTTP/2 count in `http1::Tracked`).
pub(crate) struct Counted<B> {
    inner: Pin<Box<B>>,
    clock: Option<Clock>,
}

impl<B> Counted<B> {
    pub(crate) fn new(inner: B, clock: Clock) -> Self {
        Counted { inner: Box::pin(inner), clock: Some(clock) }
    }
}

impl<B: Body> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let r = self.inner.as_mut().poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    let n = d.remaining();
                    sent(n);
                    if let Some(c) = self.clock.as_mut() {
                        c.size += n as u64;
                    }
                }
            }
            Poll::Ready(None) => self.clock = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // nextest runs each test in a process of its own: the statics are this test's.
    #[test]
    fn line_buffers_take_turns_and_come_back_from_the_file() {
        LINES.lock().unwrap().push_str("first\n");
        let spare = String::with_capacity(4096);
        let spare_at = spare.as_ptr();
        let lines = take_lines(spare);
        assert_eq!(lines, "first\n");
        {
            let now = LINES.lock().unwrap();
            assert!(now.is_empty());
            assert_eq!(now.as_ptr(), spare_at, "the spare buffer takes the lines' place");
            assert!(now.capacity() >= 4096);
        }
        // Nothing written: an empty spare comes back as it is.
        let empty = take_lines(String::with_capacity(16));
        assert!(empty.is_empty() && empty.capacity() >= 16);

        // No log file: the lines come back to be sent in LOG.
        assert_eq!(write_to_log_file(lines.clone()), Err(lines.clone()));
        let path = std::env::temp_dir().join(format!("zergling-stats-test-{}", std::process::id()));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        set_log_file(file.into());
        let lines_at = lines.as_ptr();
        let back = write_to_log_file(lines).expect("written to the file");
        assert_eq!(back.as_ptr(), lines_at, "the written buffer comes back for reuse");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\n");
        std::fs::remove_file(&path).unwrap();
    }

    fn request(path: &str) -> http::Request<()> {
        http::Request::get(path).body(()).unwrap()
    }

    fn shared() -> String {
        LINES.lock().unwrap().clone()
    }

    #[test]
    fn a_thread_s_own_lines_reach_the_shared_buffer_when_full_or_collected() {
        set_policy(LogPolicy { all: true, ..Default::default() });
        drop(Clock::start(&request("/kept"), None));
        assert!(!shared().contains("/kept"), "kept by the thread until collected");
        collect_own_lines();
        assert!(shared().contains("GET /kept => generated 0 bytes"), "{}", shared());

        // Full: handed over without waiting for the flusher.
        let before = shared().len();
        while shared().len() == before {
            drop(Clock::start(&request("/fill"), None));
        }
        let grown = shared().len() - before;
        assert!((HAND_OVER_AT..HAND_OVER_AT + 300).contains(&grown), "handed over {grown} bytes");

        // Another thread's lines, collected after it ended; then its buffer
        // is forgotten.
        std::thread::spawn(|| drop(Clock::start(&request("/other"), None))).join().unwrap();
        assert_eq!(OWNERS.lock().unwrap().len(), 2);
        assert!(!shared().contains("/other"));
        let lines = take_lines(String::new());
        assert!(lines.contains("GET /other => generated"), "the flusher's take collects them");
        assert_eq!(OWNERS.lock().unwrap().len(), 1, "the ended thread's buffer is forgotten");
        assert!(lines.lines().all(|l| l.starts_with("[pid: ") && l.ends_with("(1 switches on core 0)")), "whole lines");
    }
}
