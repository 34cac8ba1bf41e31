//! This process's request counters, reported to the pool with STATS (uWSGI's
//! per-worker `requests`, `exceptions`, `tx`, `running_time`, `avg_rt`, busy or
//! idle): atomics bumped once per request (a [`Clock`] per request, body bytes
//! counted as they go out), read by the session's reporting tick.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Buf;
use hyper::body::{Body, Frame};
use zergpool_core::proto::ZerglingStats;

/// How often the counters are sent to the pool (when they changed).
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(1);

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static EXCEPTIONS: AtomicU64 = AtomicU64::new(0);
static TX_BYTES: AtomicU64 = AtomicU64::new(0);
static RUNNING_US: AtomicU64 = AtomicU64::new(0);
static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);

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
    failed: bool,
}

impl Clock {
    pub(crate) fn start() -> Clock {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        Clock { started: Instant::now(), failed: false }
    }

    /// The response's status is known.
    pub(crate) fn status(&mut self, status: http::StatusCode) {
        self.failed = status.is_server_error();
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        if self.failed {
            EXCEPTIONS.fetch_add(1, Ordering::Relaxed);
        }
        RUNNING_US.fetch_add(self.started.elapsed().as_micros() as u64, Ordering::Relaxed);
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
                    sent(d.remaining());
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
