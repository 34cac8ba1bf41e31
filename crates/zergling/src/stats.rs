//! This process's request counters, reported to the pool with STATS (uWSGI's
//! per-worker `requests`, `exceptions`, `tx`, `running_time`, `avg_rt`, busy or
//! idle): atomics bumped once per request (a [`Clock`] per request, body bytes
//! counted as they go out), read by the session's reporting tick; and the
//! request log lines the pool's policy asks for (WELCOME), formatted when a
//! request ends and sent to the pool in batches (LOG) by the session.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Buf;
use hyper::body::{Body, Frame};
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

/// The pool's request-log policy (from WELCOME; none until then).
fn policy() -> &'static ArcSwap<LogPolicy> {
    static P: std::sync::OnceLock<ArcSwap<LogPolicy>> = std::sync::OnceLock::new();
    P.get_or_init(|| ArcSwap::from_pointee(LogPolicy::default()))
}

/// Takes the pool's request-log policy.
pub(crate) fn set_policy(p: LogPolicy) {
    policy().store(std::sync::Arc::new(p));
}

/// Lines waiting to be sent (LOG).
static LINES: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// The lines written since the last call (empty when none).
pub(crate) fn take_lines() -> String {
    std::mem::take(&mut *LINES.lock().unwrap_or_else(|p| p.into_inner()))
}

/// What a request's log line needs from its head, captured only when the
/// policy may log it.
#[derive(Debug)]
pub(crate) struct LogFields {
    method: http::Method,
    uri: http::Uri,
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
    log: Option<Box<LogFields>>,
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
        let log = policy().load().any().then(|| {
            let h = |name| req.headers().get(name).cloned();
            Box::new(LogFields {
                method: req.method().clone(),
                uri: req.uri().clone(),
                version: req.version(),
                addr: info.map_or_else(|| crate::Endpoint::unix(""), |i| i.peer.clone()),
                wid: info.map_or(0, |i| i.zergling.0),
                host: h(http::header::HOST),
                uagent: h(http::header::USER_AGENT),
                referer: h(http::header::REFERER),
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
        let micros = self.started.elapsed().as_micros() as u64;
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        if self.status >= 500 {
            EXCEPTIONS.fetch_add(1, Ordering::Relaxed);
        }
        RUNNING_US.fetch_add(micros, Ordering::Relaxed);
        if let Some(f) = self.log.take() {
            let p = policy().load();
            if p.wants(self.status, micros) {
                fn text(v: &Option<http::HeaderValue>) -> &str {
                    v.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("")
                }
                let (host, uagent, referer) = (text(&f.host), text(&f.uagent), text(&f.referer));
                let uri = f.uri.path_and_query().map_or("/", |p| p.as_str());
                // The client's IP without its port, formatted on the stack.
                let mut addr_buf = [0u8; 64];
                let addr = match f.addr.ip() {
                    Some(ip) => {
                        let mut w = &mut addr_buf[..];
                        let _ = std::io::Write::write_fmt(&mut w, format_args!("{ip}"));
                        let n = 64 - w.len();
                        std::str::from_utf8(&addr_buf[..n]).unwrap_or("")
                    }
                    None => match &f.addr {
                        crate::Endpoint::Named(n) => n,
                        _ => "",
                    },
                };
                let entry = Entry {
                    pid: std::process::id(),
                    wid: f.wid,
                    addr,
                    method: f.method.as_str(),
                    uri,
                    proto: match f.version {
                        http::Version::HTTP_10 => "HTTP/1.0",
                        http::Version::HTTP_2 => "HTTP/2.0",
                        _ => "HTTP/1.1",
                    },
                    status: self.status,
                    size: self.size,
                    micros,
                    host,
                    uagent,
                    referer,
                    at: std::time::SystemTime::now(),
                };
                let mut lines = LINES.lock().unwrap_or_else(|p| p.into_inner());
                zergpool_core::reqlog::write_line(&p.format, &entry, &mut lines);
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
