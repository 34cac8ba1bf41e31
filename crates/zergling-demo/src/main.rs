//! `zergling-demo`: the demo application used by the README, the tests and the
//! benchmarks. Its endpoints are stable (tests and acceptance checks rely on them):
//!
//! * `GET /` → `200 text/plain`, exactly `Hello, world!`
//! * `GET /pid` → the process id
//! * `GET /sleep?ms=N` → waits N ms, then `200`
//! * `POST /echo` → the request body back
//! * `GET /whoami` → JSON: method, path, scheme, client, listener, kind, protocol,
//!   host, zergling id, pid
//! * `GET /headers` → JSON: the request's headers in order, `[[name, value], …]`
//! * `GET /stream?ms=N` → an endless chunked stream, one line every N ms (default
//!   100), as server-sent events would be; ended by the library at the mercy
//! * `GET /ws` → a WebSocket echo (text and binary; the first subprotocol offered
//!   is accepted; close code 1001 when the zergling goes away): `ws.rs`
//!
//! Options: `--attach PATH` (default `$ZERGPOOL_SOCKET`), `--capacity N`,
//! `--listen ADDR` (serve directly, without a pool: the benchmarks' baseline).
//!
//! It depends on the `zergling` library only, as any application would. Tests
//! that need a misbehaving zergling play it themselves over the documented
//! protocol (`tests/common`'s `RawZergling`, `tests/data/*.py`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;
use zergling::{ConnId, ConnInfo, Endpoint, ListenerKind, ZerglingConfig, ZerglingId};

mod ws;

const USAGE: &str = "usage: zergling-demo [--attach PATH] [--capacity N] [--listen ADDR]";

type Resp = Response<Full<Bytes>>;

/// A fixed body, or the endless one of `/stream`.
type AnyBody = Either<Full<Bytes>, Ticks>;

async fn app(req: Request<Incoming>) -> Result<Response<AnyBody>, Infallible> {
    if req.method() == Method::GET && req.uri().path() == "/stream" {
        let ms = query_param(&req, "ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(100).clamp(1, 60_000);
        let ticks = Ticks { interval: tokio::time::interval(Duration::from_millis(ms)), n: 0 };
        let mut resp = Response::new(Either::Right(ticks));
        resp.headers_mut()
            .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/event-stream"));
        return Ok(resp);
    }
    Ok(fixed(req).await.map(Either::Left))
}

/// An endless stream of server-sent events, one every tick.
struct Ticks {
    interval: tokio::time::Interval,
    n: u64,
}

impl hyper::body::Body for Ticks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::task::ready!(self.interval.poll_tick(cx));
        self.n += 1;
        let line = format!("data: tick {}\n\n", self.n);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(line)))))
    }
}

async fn fixed(req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET | Method::HEAD, "/") => text(StatusCode::OK, "Hello, world!"),
        (Method::GET, "/pid") => text(StatusCode::OK, &std::process::id().to_string()),
        (Method::GET, "/sleep") => {
            let ms = query_param(&req, "ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0).min(600_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, &format!("slept {ms} ms"))
        }
        (Method::POST, "/echo") => match req.into_body().collect().await {
            Ok(body) => Response::builder()
                .header("content-type", "application/octet-stream")
                .body(Full::new(body.to_bytes()))
                .unwrap_or_default(),
            Err(_) => text(StatusCode::BAD_REQUEST, "could not read the body"),
        },
        (Method::GET, "/whoami") => whoami(&req),
        (Method::GET, "/headers") => headers(&req),
        (Method::GET, "/ws") => ws::upgrade(req),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

fn text(status: StatusCode, body: &str) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap_or_default()
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_owned())
    })
}

fn whoami(req: &Request<Incoming>) -> Resp {
    let info = req.extensions().get::<Arc<ConnInfo>>();
    let protocol = match (info.map(|i| i.kind), req.version()) {
        (Some(ListenerKind::Uwsgi), _) => "uwsgi",
        (_, hyper::Version::HTTP_2) => "h2",
        (_, hyper::Version::HTTP_10) => "http/1.0",
        _ => "http/1.1",
    };
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().host().map(str::to_owned));
    let body = serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "scheme": info.map_or("http", |i| i.scheme.as_str()),
        "client": info.map(|i| i.peer.to_string()),
        "local": info.map(|i| i.local.to_string()),
        "listener": info.map(|i| &*i.listener),
        "kind": info.map(|i| i.kind.as_str()),
        "protocol": protocol,
        "host": host,
        "sni": info.and_then(|i| i.sni.as_deref()),
        "alpn": info.and_then(|i| i.alpn.map(|a| a.as_str())),
        "tls_version": info.and_then(|i| i.tls_version.as_deref()),
        "zergling": info.map(|i| i.zergling.0),
        // Ids of connections the pool handed over count up from 1; those a zergling
        // accepted itself (zerg-direct-accept) count down from 2^64 - 1.
        "conn": info.map(|i| i.conn.0),
        "pid": std::process::id(),
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

/// Serves the app directly on `addr`, without a pool.
/// The request's headers in order, as `[[name, value], …]` (repeated ones apart).
fn headers(req: &Request<Incoming>) -> Resp {
    let list: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::json!(list).to_string())))
        .unwrap_or_default()
}

async fn listen_directly(addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("zergling-demo: listening directly on {}", listener.local_addr()?);
    let never = CancellationToken::new();
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let info = Arc::new(ConnInfo {
            zergling: ZerglingId(0),
            conn: ConnId(0),
            listener: "direct".into(),
            kind: ListenerKind::Http,
            scheme: zergling::Scheme::Http,
            peer: Endpoint::Tcp(peer),
            local: Endpoint::Tcp(addr),
            sni: None,
            alpn: None,
            tls_version: None,
        });
        tokio::spawn(zergling::serve_http1(stream, info, hyper::service::service_fn(app), never.clone()));
    }
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZERGLING_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    let mut attach = std::env::var_os("ZERGPOOL_SOCKET").map(std::path::PathBuf::from);
    let mut capacity = 1024u32;
    let mut listen: Option<SocketAddr> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let r: Result<(), String> = match a.as_str() {
            "--attach" => value("--attach").map(|v| attach = Some(v.into())),
            "--capacity" => value("--capacity").and_then(|v| {
                v.parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(|n| capacity = n)
                    .ok_or_else(|| format!("--capacity {v}: expected a number ≥ 1"))
            }),
            "--listen" => value("--listen").and_then(|v| {
                v.parse::<SocketAddr>()
                    .map(|a| listen = Some(a))
                    .map_err(|_| format!("--listen {v}: expected IP:PORT such as 127.0.0.1:8080"))
            }),
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other}")),
        };
        if let Err(e) = r {
            eprintln!("zergling-demo: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    }
    if let Some(addr) = listen {
        let rt = match tokio::runtime::Runtime::new() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("zergling-demo: {e}");
                return ExitCode::FAILURE;
            }
        };
        // On a worker thread, like the connections it spawns (see serve_blocking).
        return match rt.block_on(async { tokio::spawn(listen_directly(addr)).await }) {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("zergling-demo: {e}");
                ExitCode::FAILURE
            }
            Ok(Err(e)) => {
                eprintln!("zergling-demo: cannot listen on {addr}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(socket) = attach else {
        eprintln!("zergling-demo: no pool socket: pass --attach PATH or set ZERGPOOL_SOCKET (or --listen ADDR to serve directly)\n{USAGE}");
        return ExitCode::from(64);
    };
    let mut config = ZerglingConfig::new(socket);
    config.capacity = capacity;
    config.tags.push("app=zergling-demo".into());
    match zergling::serve_blocking(config, hyper::service::service_fn(app)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zergling-demo: {e}");
            ExitCode::FAILURE
        }
    }
}
