//! Python ASGI applications as zerglings (issue 14), through the real binaries
//! and real libraries from PyPI (the test virtualenv, `common::venv`): a raw
//! ASGI application that checks the bridge message by message
//! (`tests/data/python/asgi_app.py`), and a Galaxy-shaped FastAPI factory
//! (`tests/data/python/galaxyish`) started by the pool from a `galaxy.yml`-like
//! file, served through HTTP, HTTPS and nginx's `uwsgi_pass`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{cert, get_once, https_arg, listening_addr, python_data, root, venv, Client, Pool};
use nix::sys::signal::Signal;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn json(r: &common::Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(["-sS", "--max-time", "20"]).args(args).output().expect("run curl");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn https_url(pool: &Pool, path: &str) -> (String, String) {
    let port = listening_addr(&pool.proc.log(), "https0").expect("https0").port();
    (format!("localhost:{port}:127.0.0.1"), format!("https://localhost:{port}{path}"))
}

/// Lines of the application's record file (`GALAXYISH_RECORD`), as JSON.
fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn count_events(path: &Path, event: &str) -> usize {
    records(path).iter().filter(|r| r["event"] == event).count()
}

#[test]
fn the_asgi_bridge_speaks_http_scope_receive_and_send() {
    let Some(venv) = venv() else { return };
    let cmd = format!("{} --module asgi_app:app --pythonpath {}", venv.join("bin/zergling").display(), python_data(""));
    let pool = Pool::start(&["--https", &https_arg(), "--zergling", &cmd]);
    pool.wait_attached(1);
    let addr = pool.addr;
    let mut c = Client::connect(addr);

    let r = c.get("/scope?a=1&b=%20").unwrap();
    assert_eq!(r.status, 200, "{}", pool.proc.log());
    let s = json(&r);
    assert_eq!(s["type"], "http");
    assert_eq!(s["asgi"]["version"], "3.0");
    assert_eq!(s["http_version"], "1.1");
    assert_eq!((s["method"].as_str(), s["scheme"].as_str()), (Some("GET"), Some("http")));
    assert_eq!((s["path"].as_str(), s["raw_path"].as_str()), (Some("/scope"), Some("/scope")));
    assert_eq!(s["query_string"], "a=1&b=%20");
    assert_eq!(s["root_path"], "");
    assert!(s["headers"].as_array().unwrap().iter().any(|h| h[0] == "host" && h[1] == "test"), "{s}");
    assert_eq!(s["client"][0], "127.0.0.1", "{s}");
    assert_eq!(s["server"][0], "127.0.0.1", "{s}");
    assert_eq!(s["state"]["greeting"], "hello from lifespan", "the lifespan's state reaches every scope: {s}");
    // Percent-decoded UTF-8 in `path`, the bytes as sent in `raw_path`.
    let s = json(&c.get("/scope%20x/%C3%A9").unwrap());
    assert_eq!((s["path"].as_str(), s["raw_path"].as_str()), (Some("/scope x/é"), Some("/scope%20x/%C3%A9")));

    // The request body through receive(): small, 1 MiB, chunked.
    let r = c.request("POST", "/echo", "", b"hello").unwrap();
    assert_eq!((r.status, r.text().as_str(), r.header("x-messages")), (200, "hello", Some("1")));
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let r = c.request("POST", "/echo", "", &big).unwrap();
    assert!(r.status == 200 && r.body == big, "1 MiB echoed");
    c.send_raw(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(c.read_response().unwrap().text(), "hello world");
    // A body read slowly: the pool and the zergling hold at most a bounded part.
    let r = c.request("POST", "/slow-reader", "", &vec![b'x'; 4 << 20]).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "4194304"));

    // Streamed responses: chunked, every chunk there.
    let r = c.get("/stream?n=50").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text().lines().count(), 50);
    // HEAD: the head, no body.
    let r = c.request("HEAD", "/scope", "", b"").unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));

    // Failures: 500, the connection stays usable, the exception is logged.
    for path in ["/raise", "/no-response", "/trailers"] {
        let r = get_once(addr, path).unwrap();
        assert_eq!(r.status, 500, "{path}: {}", pool.proc.log());
    }
    assert!(pool.proc.wait_log("the application failed on purpose", 1, T), "{}", pool.proc.log());
    assert!(pool.proc.wait_log("does not send HTTP trailers", 1, T), "{}", pool.proc.log());
    assert!(pool.proc.wait_log("returned without a complete response", 1, T), "{}", pool.proc.log());
    assert_eq!(c.get("/scope").unwrap().status, 200);

    // HTTPS: the scheme from the pool's TLS termination.
    let (resolve, url) = https_url(&pool, "/scope");
    let s: Value = serde_json::from_str(&curl(&["--cacert", &cert("ca.pem"), "--resolve", &resolve, &url])).unwrap();
    assert_eq!(s["scheme"], "https", "{s}");
}

/// A `galaxy.yml`-like file: the pool starts the FastAPI factory itself.
fn galaxyish_pool(venv: &Path, dir: &Path, record: &Path, extra_uwsgi: &str, args: &[&str]) -> Pool {
    let static_dir = dir.join("static");
    std::fs::create_dir_all(&static_dir).unwrap();
    std::fs::write(static_dir.join("welcome.html"), "<h1>static welcome</h1>\n").unwrap();
    let yml = dir.join("galaxy.yml");
    std::fs::write(
        &yml,
        format!(
            "galaxy:\n  admin_users: admin@example.org\n\nuwsgi:\n  chdir: {dir}\n  module: galaxyish:factory()\n  \
             virtualenv: {venv}\n  pythonpath: {py}\n  master: true\n  processes: 1\n  \
             static-map: /static=static\n  env: GALAXYISH_RECORD={record}\n{extra_uwsgi}",
            dir = dir.display(),
            venv = venv.display(),
            py = python_data(""),
            record = record.display(),
        ),
    )
    .unwrap();
    let yml = yml.display().to_string();
    let mut all = vec!["--yaml", &yml];
    all.extend_from_slice(args);
    let pool = Pool::start(&all);
    pool.wait_attached(1);
    pool
}

#[test]
fn a_galaxy_shaped_fastapi_factory_serves_through_http_https_and_nginx() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.jsonl");
    let mut pool =
        galaxyish_pool(&venv, dir.path(), &record, "", &["--https", &https_arg(), "--socket", "127.0.0.1:0"]);
    let addr = pool.addr;
    assert_eq!(count_events(&record, "startup"), 1, "the startup ran before the zergling attached");

    // JSON API, the lifespan's state, the legacy WSGI controllers, static files.
    let v = json(&get_once(addr, "/api/version").unwrap());
    assert_eq!((v["version_major"].as_str(), v["started"].as_bool()), (Some("24.1"), Some(true)), "{v}");
    let r = get_once(addr, "/legacy/hello").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello from the legacy WSGI controllers"));
    let r = get_once(addr, "/static/welcome.html").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>static welcome</h1>\n"));
    let r = get_once(addr, "/api/stream?n=7").unwrap();
    assert_eq!(r.text().lines().count(), 7);

    // 10 MiB uploaded, streamed to disk by the application.
    let upload: Vec<u8> = (0..(10u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut c = Client::connect(addr);
    let v = json(&c.request("POST", "/api/upload", "Content-Type: application/octet-stream\r\n", &upload).unwrap());
    assert_eq!((v["size"].as_u64(), v["on_disk"].as_u64()), (Some(10 << 20), Some(10 << 20)), "{v}");

    // A background task runs after the response.
    let v = json(&c.request("POST", "/api/jobs", "", b"").unwrap());
    assert_eq!(v["queued"], true);
    assert!(common::wait_until(T, || count_events(&record, "background") == 1), "{:?}", records(&record));

    // Server-sent events: the client leaves, the application hears it within 1 s.
    let mut sse = Client::connect(addr);
    sse.send_raw(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("tick 3") {
        let n = std::io::Read::read(&mut sse.stream, &mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    let left = Instant::now();
    drop(sse);
    assert!(common::wait_until(T, || count_events(&record, "disconnected") == 1), "{:?}", records(&record));
    let heard = records(&record).iter().find(|r| r["event"] == "disconnected").unwrap()["time"].as_f64().unwrap();
    let left_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
        - left.elapsed().as_secs_f64();
    assert!(
        heard - left_at < 1.0,
        "http.disconnect reached the application {:.2} s after the client left",
        heard - left_at
    );

    // HTTPS.
    let (resolve, url) = https_url(&pool, "/api/version");
    let v: Value = serde_json::from_str(&curl(&["--cacert", &cert("ca.pem"), "--resolve", &resolve, &url])).unwrap();
    assert_eq!(v["version_major"], "24.1");

    // nginx's uwsgi_pass.
    if common::require_program("nginx") {
        let uwsgi = listening_addr(&pool.proc.log(), "uwsgi0").expect("uwsgi0");
        let nginx = common::nginx::Nginx::start_with(&uwsgi.to_string(), "");
        let v = json(&get_once(nginx.addr(), "/api/version").unwrap());
        assert_eq!(v["version_major"], "24.1");
        let r = get_once(nginx.addr(), "/legacy/hello").unwrap();
        assert_eq!(r.text(), "hello from the legacy WSGI controllers");
        let mut c = Client::connect(nginx.addr());
        let v = json(&c.request("POST", "/api/upload", "", &upload[..1 << 20]).unwrap());
        assert_eq!(v["size"].as_u64(), Some(1 << 20));
    }

    // A graceful stop: the lifespan's shutdown runs once, after the drain.
    pool.proc.signal(Signal::SIGTERM);
    assert!(pool.proc.wait_exit(T).is_some(), "{}", pool.proc.log());
    let pids: Vec<Value> =
        records(&record).iter().filter(|r| r["event"] == "startup").map(|r| r["pid"].clone()).collect();
    assert_eq!(count_events(&record, "shutdown"), 1, "{:?}", records(&record));
    assert_eq!(records(&record).iter().find(|r| r["event"] == "shutdown").unwrap()["pid"], pids[0]);
}

/// A long poll that works without writing (`/api/wait`, Starlette's
/// `request.is_disconnected()` in a loop) hears that its client left within a
/// second, over HTTP, HTTPS (the pool's TLS relay) and nginx's `uwsgi_pass`.
#[test]
fn an_application_working_without_writing_hears_its_client_leave() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.jsonl");
    let pool = galaxyish_pool(&venv, dir.path(), &record, "", &["--https", &https_arg(), "--socket", "127.0.0.1:0"]);
    let heard = |n: usize, leave_after: f64, how: &str| {
        assert!(
            common::wait_until(T, || count_events(&record, "wait_disconnected") == n),
            "{how}: the application never heard its client leave: {:?}\n{}",
            records(&record),
            pool.proc.log()
        );
        let after = records(&record).iter().filter(|r| r["event"] == "wait_disconnected").nth(n - 1).unwrap()["after"]
            .as_f64()
            .unwrap();
        assert!(
            after >= leave_after - 0.05 && after < leave_after + 1.0,
            "{how}: heard {after:.2} s into the request, the client left after {leave_after} s"
        );
    };

    // Plain HTTP: the client closes its socket.
    let mut c = Client::connect(pool.addr);
    c.send_raw(b"GET /api/wait?limit=20 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(c);
    heard(1, 0.5, "HTTP");

    // HTTPS: curl gives up after 1 s.
    let (resolve, url) = https_url(&pool, "/api/wait?limit=20");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "1", "--cacert", &cert("ca.pem"), "--resolve", &resolve, &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(28), "curl timed out: {}", String::from_utf8_lossy(&out.stderr));
    heard(2, 1.0, "HTTPS");

    // Behind nginx: the client leaves nginx, nginx leaves the zergling.
    if common::require_program("nginx") {
        let uwsgi = listening_addr(&pool.proc.log(), "uwsgi0").expect("uwsgi0");
        let nginx = common::nginx::Nginx::start_with(&uwsgi.to_string(), "");
        let mut c = Client::connect(nginx.addr());
        c.send_raw(b"GET /api/wait?limit=20 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        drop(c);
        heard(3, 0.5, "nginx uwsgi_pass");
    }

    // A client that stays gets its answer: nothing is mistaken for a departure.
    let v = json(&get_once(pool.addr, "/api/wait?limit=0.3").unwrap());
    assert_eq!(v["gone"], false);
    assert_eq!(count_events(&record, "wait_timeout"), 1);
    assert!(!pool.proc.log().contains("without a complete response"), "{}", pool.proc.log());
}

#[test]
fn a_failed_startup_exits_with_its_message_and_never_attaches() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(venv.join("bin/zergling"))
        .args(["--module", "galaxyish:factory()", "--pythonpath", &python_data(""), "--attach"])
        .arg(dir.path().join("no-pool.sock"))
        .env("GALAXYISH_FAIL_STARTUP", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("startup failed") && stderr.contains("cannot reach the database"), "{stderr}");
    assert!(!stderr.contains("cannot attach"), "the startup runs before any attach: {stderr}");
}

#[test]
fn interface_lifespan_and_loop_options_reach_the_zergling() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.jsonl");
    let pool =
        galaxyish_pool(&venv, dir.path(), &record, "  interface: asgi\n  lifespan: off\n  asgi-loop: asyncio\n", &[]);
    let v = json(&get_once(pool.addr, "/api/version").unwrap());
    assert_eq!(v["started"], false, "lifespan off: no state");
    assert_eq!(count_events(&record, "startup"), 0, "lifespan off: {:?}", records(&record));
    // A bad value is a configuration error, with its file and line.
    let out = Command::new(common::POOL)
        .args(["--check-config", "--http", "127.0.0.1:0", "--module", "x", "--interface", "gRPC"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected one of auto, wsgi, asgi"));
}

/// `ws_client.py` (the `websockets` library) with the virtualenv's Python; its
/// last line of output as JSON.
fn ws_run(venv: &Path, args: &[&str]) -> Value {
    let out = Command::new(venv.join("bin/python"))
        .arg(root().join("tests/data/python/ws_client.py"))
        .args(args)
        .output()
        .expect("run ws_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ws_client.py {args:?}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn asgi_websockets_echo_over_ws_and_wss_and_go_away_with_1001_on_reload() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.jsonl");
    let pool = galaxyish_pool(&venv, dir.path(), &record, "", &["--https", &https_arg(), "--worker-reload-mercy", "4"]);
    let port = listening_addr(&pool.proc.log(), "https0").expect("https0").port();
    let ca = cert("ca.pem");
    for url in [format!("ws://{}/api/ws", pool.addr), format!("wss://localhost:{port}/api/ws")] {
        let seen = ws_run(&venv, &["check", &url, &ca]);
        assert_eq!(seen["subprotocol"], "chat", "{url}: {seen}\n{}", pool.proc.log());
        assert_eq!((seen["text"].as_str(), seen["binary"].as_str()), (Some("hello"), Some("0001ff")), "{seen}");
        assert_eq!((seen["big_binary"].as_bool(), seen["big_text"].as_bool()), (Some(true), Some(true)), "{seen}");
        assert_eq!(seen["pong"], true, "{seen}");
        assert_eq!(seen["close_code"], 4000, "the client's close code reached the application and back: {seen}");
    }
    // A reload: the socket stays open through the drain, then 1001.
    let mut hold = Command::new(venv.join("bin/python"))
        .arg(root().join("tests/data/python/ws_client.py"))
        .args(["hold", &format!("ws://{}/api/ws", pool.addr)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(hold.stdout.take().unwrap()));
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("open"));
    let reloaded = Instant::now();
    pool.proc.signal(Signal::SIGHUP);
    let closed: Value = serde_json::from_str(&lines.next().and_then(Result::ok).unwrap_or_default()).unwrap();
    let held = reloaded.elapsed().as_secs_f64();
    let _ = hold.wait();
    assert_eq!(closed["code"], 1001, "{closed}\n{}", pool.proc.log());
    assert!(held > 1.5 && held < 5.0, "held {held:.2} s through a 4 s mercy");
    assert!(pool.wait_reloads(1, T), "{}", pool.proc.log());
    assert_eq!(pool.proc.count("SIGKILL"), 0, "{}", pool.proc.log());
    // The old process ran its lifespan shutdown, once.
    assert!(common::wait_until(T, || count_events(&record, "shutdown") == 1), "{:?}", records(&record));
}

/// Many requests at once, each on its own connection: every one is answered.
/// (The bridge's wake-up once lost a batch under this load: the flag that says
/// a wake byte is on its way stayed set after the byte was read, and the loop
/// slept with requests queued.)
#[test]
fn concurrent_requests_are_all_answered() {
    let Some(venv) = venv() else { return };
    let cmd = format!("{} --module asgi_app:app --pythonpath {}", venv.join("bin/zergling").display(), python_data(""));
    let pool = Pool::start(&["--zergling", &cmd]);
    pool.wait_attached(1);
    let addr = pool.addr;
    let threads: Vec<_> = (0..32)
        .map(|_| {
            std::thread::spawn(move || {
                let mut answered = 0;
                for _ in 0..100 {
                    // A stalled bridge fails here once (after the client's read
                    // timeout), not a hundred times.
                    if !get_once(addr, "/stream?n=1").is_ok_and(|r| r.status == 200) {
                        break;
                    }
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let answered: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(answered, 3200, "{}", pool.proc.log());
}

/// A client that stops reading a streamed response: the application's
/// `send()` stops completing once the bridge's outbox (256 KiB) and the
/// sockets' buffers are full, so the process never buffers without bound.
#[test]
fn a_client_that_stops_reading_holds_the_application_not_memory() {
    let Some(venv) = venv() else { return };
    let cmd = format!("{} --module asgi_app:app --pythonpath {}", venv.join("bin/zergling").display(), python_data(""));
    let pool = Pool::start(&["--zergling", &cmd]);
    pool.wait_attached(1);
    let mut slow = Client::connect(pool.addr);
    slow.send_raw(b"GET /firehose HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let sent = |p: &Pool| get_once(p.addr, "/firehose-sent").unwrap().text().parse::<u64>().unwrap();
    let first = sent(&pool);
    std::thread::sleep(Duration::from_millis(500));
    let second = sent(&pool);
    // Loopback socket buffers take a few MiB; without backpressure this would
    // be gigabytes by now.
    assert!(first > 0 && first < 32 << 20, "send() took {first} bytes from a client that reads nothing");
    assert_eq!(first, second, "send() waits while the client does not read");
    // The client reads again: the stream moves on.
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0;
    while read < 8 << 20 {
        read += std::io::Read::read(&mut slow.stream, &mut buf).unwrap();
    }
    assert!(sent(&pool) > second, "send() completes again once the client reads");
}
