//! The uWSGI stats server (`stats`, `stats-http`, `stats-minified`): on each
//! connection the pool writes uWSGI 2.0's stats JSON document and closes, so
//! that `uwsgitop` and uwsgi_exporter read it unmodified.
//!
//! The document has every field uWSGI 2.0 emits, with its types and units
//! (`running_time` and `avg_rt` in microseconds, `last_spawn` in epoch seconds,
//! `rss`/`vsz` in bytes). Where the pool has no such thing the value is uWSGI's
//! own for an idle feature (`signal_queue` 0, `locks` empty, `harakiri_count`
//! 0). The mapping:
//!
//! | field | from |
//! | --- | --- |
//! | `listen_queue` | the listeners' accept queues (`/proc/net/tcp`, as `ss -lnt` shows) |
//! | `load` | connections waiting in the pool's queue plus those zerglings hold |
//! | `sockets[].queue`/`max_queue` | that listener's accept queue, and its backlog (`listen`) |
//! | `workers[].id` | the zergling's id in the pool (≥ 1, new at each attach) |
//! | `workers[].requests`, `exceptions` (5xx), `tx`, `running_time`, `avg_rt` | the zergling's STATS |
//! | `workers[].status` | `busy` while it serves a request, else `idle`; `cheap` while it drains |
//! | `workers[].rss`, `vsz` | `/proc/PID/status` |
//! | `workers[].last_spawn` | when it attached |
//!
//! Pool figures uWSGI does not have go under `zergpool`.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::dispatch::{Dispatcher, SlotState};
use crate::listener::limit::ConnLimit;
use crate::listener::{AnyListener, Endpoint};
use crate::stream::ConnStream;

/// A listener as the document shows it.
#[derive(Debug, Clone)]
pub struct SocketInfo {
    /// The address (`127.0.0.1:8080`, a path).
    pub addr: Endpoint,
    /// `uwsgi`, `http` or `https`.
    pub proto: &'static str,
    /// Its listen backlog.
    pub backlog: u32,
}

/// What the document is made from.
pub struct Source {
    /// The zerglings and the queue.
    pub dispatcher: Arc<Dispatcher>,
    /// The connection limit (connections held).
    pub limit: Arc<ConnLimit>,
    /// The pool's listeners.
    pub sockets: Vec<SocketInfo>,
    /// `stats-http`.
    pub http: bool,
    /// `stats-minified`.
    pub minified: bool,
}

/// Serves the document on `listener` until `stop`.
pub async fn serve(listener: AnyListener, local: Endpoint, source: Arc<Source>, stop: CancellationToken) {
    info!(addr = %local, http = source.http, "stats server ready");
    crate::events::emit("listening", json!({ "listener": "stats", "kind": "stats", "addr": local.to_string() }));
    crate::listener::serve_each(listener, local, stop, "stats", |stream| answer(stream, source.clone())).await;
}

async fn answer(mut stream: ConnStream, source: Arc<Source>) -> io::Result<()> {
    if source.http {
        // The request is read (its head, briefly) so that closing does not reset
        // the connection under the client; what it asks does not matter.
        let mut buf = vec![0u8; 4096];
        let mut got = 0;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while got < buf.len() {
                match stream.read(&mut buf[got..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
                if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        })
        .await;
    }
    // /proc reads: off the runtime's threads.
    let (http, minified) = (source.http, source.minified);
    let doc = tokio::task::spawn_blocking(move || document(&source)).await.map_err(io::Error::other)?;
    let source = (http, minified);
    let (http, minified) = source;
    let mut body =
        if minified { serde_json::to_vec(&doc) } else { serde_json::to_vec_pretty(&doc) }.map_err(io::Error::other)?;
    body.push(b'\n');
    if http {
        // Exactly uWSGI's head (uwsgi_exporter checks the content type).
        let head = format!(
            "HTTP/1.0 200 OK\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
    }
    stream.write_all(&body).await?;
    stream.shutdown().await
}

/// The stats document now.
pub fn document(source: &Source) -> Value {
    let queues = accept_queues();
    let queue_of = |addr: &Endpoint| -> u64 {
        match addr {
            Endpoint::Tcp(a) => queues.iter().find(|q| q.port == a.port()).map_or(0, |q| q.queue),
            _ => 0,
        }
    };
    let sockets: Vec<Value> = source
        .sockets
        .iter()
        .map(|s| {
            json!({
                "name": s.addr.to_string(),
                "proto": s.proto,
                "queue": queue_of(&s.addr),
                "max_queue": s.backlog,
                "shared": 0,
                "can_offload": 0,
            })
        })
        .collect();
    let listen_queue: u64 = source.sockets.iter().map(|s| queue_of(&s.addr)).sum();
    let zerglings = source.dispatcher.zerglings();
    let held: u64 = zerglings.iter().map(|z| u64::from(z.outstanding)).sum();
    let queued = source.dispatcher.queue_len() as u64;
    let workers: Vec<Value> = zerglings
        .iter()
        .map(|z| {
            let st = z.stats;
            let (rss, vsz) = memory(z.pid);
            let busy = st.in_flight > 0;
            let status = match (z.state, busy) {
                (SlotState::Draining, _) => "cheap",
                (_, true) => "busy",
                _ => "idle",
            };
            json!({
                "id": z.id.0,
                "pid": z.pid,
                "accepting": u8::from(z.state == SlotState::Ready),
                "requests": st.requests,
                "delta_requests": st.requests,
                "exceptions": st.exceptions,
                "harakiri_count": 0,
                "signals": 0,
                "signal_queue": 0,
                "status": status,
                "rss": rss,
                "vsz": vsz,
                "running_time": st.running_us,
                "last_spawn": epoch_secs(z.attached),
                "respawn_count": 0,
                "tx": st.tx_bytes,
                "avg_rt": st.running_us.checked_div(st.requests).unwrap_or(0),
                "apps": [],
                "cores": [{
                    "id": 0,
                    "requests": st.requests,
                    "static_requests": 0,
                    "routed_requests": 0,
                    "offloaded_requests": 0,
                    "write_errors": 0,
                    "read_errors": 0,
                    "in_request": u8::from(busy),
                    "vars": [],
                    "req_info": {},
                }],
                "zergpool": { "connections": z.outstanding, "capacity": z.capacity, "in_flight": st.in_flight },
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "listen_queue": listen_queue,
        "listen_queue_errors": 0,
        "signal_queue": 0,
        "load": queued + held,
        "pid": std::process::id(),
        "uid": nix::unistd::getuid().as_raw(),
        "gid": nix::unistd::getgid().as_raw(),
        "cwd": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        "locks": [],
        "sockets": sockets,
        "workers": workers,
        "zergpool": {
            "queue": queued,
            "connections": source.limit.open(),
            "max_connections": source.limit.max(),
        },
    })
}

/// Connections waiting in the accept queues of `listeners` (TCP ones).
pub fn listen_queue(listeners: &[Endpoint]) -> u64 {
    let queues = accept_queues();
    listeners
        .iter()
        .filter_map(|l| match l {
            Endpoint::Tcp(a) => queues.iter().find(|q| q.port == a.port()).map(|q| q.queue),
            _ => None,
        })
        .sum()
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Resident and virtual memory of `pid`, in bytes (0 when it cannot be read).
fn memory(pid: u32) -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (0, 0);
    };
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |k| k * 1024)
    };
    (kb("VmRSS:"), kb("VmSize:"))
}

/// One listening TCP socket's accept queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AcceptQueue {
    port: u16,
    /// Connections waiting to be accepted.
    queue: u64,
}

/// The accept queues of this process's network namespace's listening TCP
/// sockets: for a socket in LISTEN state, `/proc/net/tcp` shows the queue as
/// `rx_queue`. The file lists every socket of the namespace (tens of thousands
/// of TIME_WAIT ones under per-connection load), so it is read at most once a
/// second whatever the polling rate, and callers run this off the runtime's
/// threads (`spawn_blocking`).
fn accept_queues() -> Vec<AcceptQueue> {
    static CACHE: std::sync::Mutex<Option<(std::time::Instant, Vec<AcceptQueue>)>> = std::sync::Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, queues)) = cache.as_ref() {
        if at.elapsed() < Duration::from_secs(1) {
            return queues.clone();
        }
    }
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            out.extend(parse_proc_net_tcp(&text));
        }
    }
    *cache = Some((std::time::Instant::now(), out.clone()));
    out
}

fn parse_proc_net_tcp(text: &str) -> Vec<AcceptQueue> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx_queue:rx_queue ...
            if f.get(3) != Some(&"0A") {
                return None;
            }
            let port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            let (_, rx) = f.get(4)?.split_once(':')?;
            Some(AcceptQueue { port, queue: u64::from_str_radix(rx, 16).ok()? })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_give_their_queue_and_backlog() {
        let text =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:1F90 00000000:0000 0A 00000400:00000003 00:00000000 00000000     0        0 1234 1\n   \
            1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1235 1\n";
        assert_eq!(parse_proc_net_tcp(text), vec![AcceptQueue { port: 8080, queue: 3 }]);
    }
}
