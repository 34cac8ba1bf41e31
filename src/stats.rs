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
//! | `listen_queue` | the listeners' accept queues (the kernel's socket diagnostics, as `ss -lnt` shows them: [`crate::sockdiag`]) |
//! | `load` | connections waiting in the pool's queue plus those zerglings hold |
//! | `sockets[].queue`/`max_queue` | that listener's accept queue, and its backlog (`listen`) |
//! | `workers[].id` | a spawned zergling's slot (1 for the first `zergling` command, …: it stays when the process is replaced); others: the number of slots plus their id in the pool |
//! | `workers[].respawn_count` | processes its slot started before it (crashes and reloads); 0 for others |
//! | `workers[].requests`, `exceptions` (5xx), `tx`, `running_time`, `avg_rt` | the zergling's STATS |
//! | `workers[].status` | `busy` while it serves a request, else `idle`; `cheap` while it drains |
//! | `workers[].rss`, `vsz` | `/proc/PID/status` |
//! | `workers[].last_spawn` | when the pool started it (others: when it attached) |
//! | `listen_queue_errors` | how often a listener's accept queue was seen full (at most once a second, while the document is read) |
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
use crate::sockdiag::AcceptQueue;
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
    /// How many zerglings the pool spawns (`zergling` commands): their worker
    /// ids are 1 to this; others' come after.
    pub spawn_slots: usize,
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
    let (queues, fresh) = accept_queues();
    let find = |addr: &Endpoint| match addr {
        Endpoint::Tcp(a) => queues.iter().find(|q| q.port == a.port()),
        _ => None,
    };
    let queue_of = |addr: &Endpoint| -> u64 { find(addr).map_or(0, |q| q.queue) };
    if fresh {
        // uWSGI's master counts a full queue each time it looks (once a second).
        let full = full_queues(source.sockets.iter().filter_map(|s| find(&s.addr)));
        LISTEN_QUEUE_ERRORS.fetch_add(full, std::sync::atomic::Ordering::Relaxed);
    }
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
            // uWSGI's worker id is the slot: it stays when the process is
            // replaced, and respawn_count says how often that happened.
            let id = match z.spawned {
                Some(s) => s.slot as u64 + 1,
                None => source.spawn_slots as u64 + z.id.0,
            };
            json!({
                "id": id,
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
                "last_spawn": epoch_secs(z.spawned.map_or(z.attached, |s| s.at)),
                "respawn_count": z.spawned.map_or(0, |s| s.respawns),
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
        "listen_queue_errors": LISTEN_QUEUE_ERRORS.load(std::sync::atomic::Ordering::Relaxed),
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
    let (queues, _) = accept_queues();
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

/// The accept queues of this process's network namespace's listening TCP
/// sockets, from the kernel's socket diagnostics ([`crate::sockdiag`]); where
/// those cannot be asked (a kernel without `inet_diag`), from `/proc/net/tcp`,
/// which shows a listener's queue as `rx_queue` but lists every socket of the
/// namespace. Read at most once a second whatever the polling rate (uWSGI's
/// master looks once a second too); callers run this off the runtime's
/// threads (`spawn_blocking`).
///
/// Also returns whether the queues were read now (not from the cache): the
/// caller counts full queues once per reading (`listen_queue_errors`).
fn accept_queues() -> (Vec<AcceptQueue>, bool) {
    static CACHE: std::sync::Mutex<Option<(std::time::Instant, Vec<AcceptQueue>)>> = std::sync::Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, queues)) = cache.as_ref() {
        if at.elapsed() < Duration::from_secs(1) {
            return (queues.clone(), false);
        }
    }
    let out = match crate::sockdiag::listening() {
        Ok(queues) => queues,
        Err(e) => {
            crate::warn_limited!(error = %e, "cannot ask the kernel's socket diagnostics for the accept queues; reading /proc/net/tcp instead");
            let mut out = Vec::new();
            for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
                if let Ok(text) = std::fs::read_to_string(file) {
                    out.extend(parse_proc_net_tcp(&text));
                }
            }
            out
        }
    };
    *cache = Some((std::time::Instant::now(), out.clone()));
    (out, true)
}

/// How many of `queues` are full.
fn full_queues<'a>(queues: impl Iterator<Item = &'a AcceptQueue>) -> u64 {
    queues.filter(|q| q.backlog > 0 && q.queue >= q.backlog).count() as u64
}

/// How often one of the pool's listeners was seen with a full accept queue.
static LISTEN_QUEUE_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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
            // For a listening socket: tx_queue is its backlog, rx_queue its queue.
            let (tx, rx) = f.get(4)?.split_once(':')?;
            Some(AcceptQueue {
                port,
                queue: u64::from_str_radix(rx, 16).ok()?,
                backlog: u64::from_str_radix(tx, 16).ok()?,
            })
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
        assert_eq!(parse_proc_net_tcp(text), vec![AcceptQueue { port: 8080, queue: 3, backlog: 1024 }]);
        let q = |queue, backlog| AcceptQueue { port: 1, queue, backlog };
        assert_eq!(full_queues([q(3, 1024), q(16, 16), q(17, 16), q(0, 0)].iter()), 2, "full: at or past the backlog");
    }
}
