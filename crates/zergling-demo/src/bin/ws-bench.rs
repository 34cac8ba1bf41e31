//! `ws-bench URL CONNECTIONS SECONDS SIZE`: a WebSocket echo load generator for
//! `benches/asgi.sh`: CONNECTIONS clients on one thread, each sending a binary
//! message of SIZE bytes and waiting for its echo, again and again, for
//! SECONDS; prints `messages_per_second errors`. Loopback URLs only
//! (`ws://127.0.0.1:PORT/path`).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, conns, secs, size] = &args[..] else {
        eprintln!("usage: ws-bench URL CONNECTIONS SECONDS SIZE");
        return ExitCode::from(64);
    };
    let (Ok(conns), Ok(secs), Ok(size)) = (conns.parse::<usize>(), secs.parse::<f64>(), size.parse::<usize>()) else {
        eprintln!("ws-bench: CONNECTIONS, SECONDS and SIZE are numbers");
        return ExitCode::from(64);
    };
    let Some(addr) = url.strip_prefix("ws://").and_then(|r| r.split('/').next()).map(str::to_owned) else {
        eprintln!("ws-bench: expected ws://127.0.0.1:PORT/path");
        return ExitCode::from(64);
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ws-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (messages, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (url, addr, messages, errors) = (url.clone(), addr.clone(), messages.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let Ok(tcp) = tokio::net::TcpStream::connect(&addr).await else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let _ = tcp.set_nodelay(true);
                let Ok((mut ws, _)) = tokio_tungstenite::client_async(url.as_str(), tcp).await else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let payload = bytes::Bytes::from(vec![b'x'; size]);
                while Instant::now() < deadline {
                    if ws.send(Message::Binary(payload.clone())).await.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    match ws.next().await {
                        Some(Ok(Message::Binary(b))) if b.len() == size => {
                            messages.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
                let _ = ws.close(None).await;
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let n = messages.load(Ordering::Relaxed) as f64;
    println!("{:.0} {}", n / secs, errors.load(Ordering::Relaxed));
    ExitCode::SUCCESS
}
