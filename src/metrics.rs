//! Prometheus metrics and health (`metrics ADDR`, zergpool's own option): an
//! HTTP listener of its own answering `GET /metrics` in the OpenMetrics text
//! format (prometheus-client, the official crate) and `GET /health` (200 while
//! a zergling is ready, else 503, for load balancers); one request per
//! connection.
//!
//! Counters live in one process-wide [`Metrics`] (atomics: counting costs the
//! data path an atomic add); gauges and the zerglings' own counters (their
//! STATS) are read from the dispatcher at each scrape.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::dispatch::{Dispatcher, SlotState};
use crate::listener::limit::ConnLimit;
use crate::listener::{AnyListener, Endpoint};
use crate::stream::ConnStream;

type Labels = Vec<(String, String)>;

/// The pool's metrics.
pub struct Metrics {
    registry: Registry,
    /// Connections accepted on the pool's listeners.
    pub accepted: Counter,
    /// Connections sent to a zergling (CONN).
    pub handed_off: Counter,
    /// Connections sent again after their zergling went away unacknowledged.
    pub redispatched: Counter,
    /// Connections zerglings gave back (drains, room at capacity).
    pub handed_back: Counter,
    /// Connections that waited in the queue for a zergling.
    pub queued: Counter,
    /// Connections answered 503 (queue full or timed out, no zergling took it).
    pub unavailable: Counter,
    static_responses: Family<Labels, Counter>,
    /// TLS handshakes completed.
    pub tls_handshakes: Counter,
    /// TLS handshakes that failed or timed out.
    pub tls_failures: Counter,
    /// From accept to dispatch, seconds.
    pub queue_wait: Histogram,
    /// From accept to the zergling's ACK, seconds.
    pub handoff: Histogram,
    zerglings: Family<Labels, Gauge>,
    queue_len: Gauge,
    connections: Gauge,
    listen_queue: Gauge,
    z_requests: Family<Labels, Gauge>,
    z_exceptions: Family<Labels, Gauge>,
    z_tx: Family<Labels, Gauge>,
    z_in_flight: Family<Labels, Gauge>,
    z_running: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// A static-map response with `status` (counted by class).
pub fn static_response(status: u16) {
    let class = format!("{}xx", status / 100);
    metrics().static_responses.get_or_create(&vec![("class".to_owned(), class)]).inc();
}

impl Metrics {
    fn new() -> Metrics {
        let seconds = || Histogram::new(exponential_buckets(0.000_05, 4.0, 12));
        let mut m = Metrics {
            registry: Registry::with_prefix("zergpool"),
            accepted: Counter::default(),
            handed_off: Counter::default(),
            redispatched: Counter::default(),
            handed_back: Counter::default(),
            queued: Counter::default(),
            unavailable: Counter::default(),
            static_responses: Family::default(),
            tls_handshakes: Counter::default(),
            tls_failures: Counter::default(),
            queue_wait: seconds(),
            handoff: seconds(),
            zerglings: Family::default(),
            queue_len: Gauge::default(),
            connections: Gauge::default(),
            listen_queue: Gauge::default(),
            z_requests: Family::default(),
            z_exceptions: Family::default(),
            z_tx: Family::default(),
            z_in_flight: Family::default(),
            z_running: Family::default(),
        };
        let r = &mut m.registry;
        r.register("connections_accepted", "Connections accepted on the pool's listeners", m.accepted.clone());
        r.register("connections_handed_off", "Connections sent to a zergling", m.handed_off.clone());
        r.register(
            "connections_redispatched",
            "Connections sent again after their zergling went away",
            m.redispatched.clone(),
        );
        r.register("connections_handed_back", "Connections zerglings gave back to the pool", m.handed_back.clone());
        r.register("connections_queued", "Connections that waited for a zergling", m.queued.clone());
        r.register("connections_unavailable", "Connections answered 503", m.unavailable.clone());
        r.register("static_responses", "Static-map responses by status class", m.static_responses.clone());
        r.register("tls_handshakes", "TLS handshakes completed", m.tls_handshakes.clone());
        r.register("tls_handshake_failures", "TLS handshakes failed or timed out", m.tls_failures.clone());
        r.register("queue_wait_seconds", "From accept to dispatch", m.queue_wait.clone());
        r.register("handoff_seconds", "From accept to the zergling's acknowledgement", m.handoff.clone());
        r.register("zerglings", "Attached zerglings by state", m.zerglings.clone());
        r.register("queue_length", "Connections waiting for a zergling", m.queue_len.clone());
        r.register("connections", "Connections the pool holds", m.connections.clone());
        r.register("listen_queue", "Connections in the listeners' accept queues", m.listen_queue.clone());
        r.register("zergling_requests", "Requests a zergling answered (its STATS)", m.z_requests.clone());
        r.register("zergling_exceptions", "5xx answers of a zergling (its STATS)", m.z_exceptions.clone());
        r.register("zergling_tx_bytes", "Response body bytes a zergling sent (its STATS)", m.z_tx.clone());
        r.register("zergling_in_flight", "Requests a zergling serves now (its STATS)", m.z_in_flight.clone());
        r.register("zergling_running_seconds", "Time a zergling spent on requests (its STATS)", m.z_running.clone());
        m
    }

    /// The gauges from the dispatcher's state now.
    fn refresh(&self, source: &Source) {
        let zerglings = source.dispatcher.zerglings();
        for state in ["ready", "draining"] {
            let n = zerglings.iter().filter(|z| (z.state == SlotState::Ready) == (state == "ready")).count();
            self.zerglings.get_or_create(&vec![("state".to_owned(), state.to_owned())]).set(n as i64);
        }
        self.queue_len.set(source.dispatcher.queue_len() as i64);
        self.connections.set(source.limit.open() as i64);
        self.listen_queue.set(crate::stats::listen_queue(&source.listeners) as i64);
        for family in [&self.z_requests, &self.z_exceptions, &self.z_tx, &self.z_in_flight] {
            family.clear();
        }
        self.z_running.clear();
        for z in &zerglings {
            let labels = vec![("zergling".to_owned(), z.id.0.to_string()), ("pid".to_owned(), z.pid.to_string())];
            let st = z.stats;
            self.z_requests.get_or_create(&labels).set(st.requests as i64);
            self.z_exceptions.get_or_create(&labels).set(st.exceptions as i64);
            self.z_tx.get_or_create(&labels).set(st.tx_bytes as i64);
            self.z_in_flight.get_or_create(&labels).set(i64::from(st.in_flight));
            self.z_running.get_or_create(&labels).set(st.running_us as f64 / 1e6);
        }
    }
}

/// What the answers are made from.
pub struct Source {
    /// The zerglings and the queue.
    pub dispatcher: Arc<Dispatcher>,
    /// The connection limit (connections held).
    pub limit: Arc<ConnLimit>,
    /// The pool's listeners' addresses (for their accept queues).
    pub listeners: Vec<Endpoint>,
}

/// Serves `/metrics` and `/health` on `listener` until `stop`.
pub async fn serve(listener: AnyListener, local: Endpoint, source: Arc<Source>, stop: CancellationToken) {
    info!(addr = %local, "metrics and health ready");
    crate::events::emit(
        "listening",
        serde_json::json!({ "listener": "metrics", "kind": "metrics", "addr": local.to_string() }),
    );
    crate::listener::serve_each(listener, local, stop, "metrics", |stream| answer(stream, source.clone())).await;
}

async fn answer(mut stream: ConnStream, source: Arc<Source>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while got < buf.len() {
            match stream.read(&mut buf[got..]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => got += n,
            }
            if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                return true;
            }
        }
        false
    })
    .await;
    if read != Ok(true) {
        return Ok(());
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            // /proc reads: off the runtime's threads.
            let text = tokio::task::spawn_blocking(move || {
                let m = metrics();
                m.refresh(&source);
                let mut text = String::new();
                encode(&mut text, &m.registry).map(|()| text)
            })
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)?;
            ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", text)
        }
        ("GET" | "HEAD", "/health") => {
            let ready = source.dispatcher.zerglings().iter().filter(|z| z.state == SlotState::Ready).count();
            if ready > 0 {
                ("200 OK", "text/plain", format!("ok: {ready} zergling(s) ready\n"))
            } else {
                ("503 Service Unavailable", "text/plain", "no zergling ready\n".to_owned())
            }
        }
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", "try /metrics or /health\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

/// Seconds since `t`, for the histograms.
pub fn since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
