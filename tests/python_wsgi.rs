//! Python WSGI applications as zerglings (issue 13), through the real binaries:
//! the pool spawns the `zergling` command of the `zergling` wheel installed in a
//! virtualenv (`scripts/python-env.sh` builds it into `target/pyenv`;
//! `ZERGPOOL_TEST_VENV` names another), serving applications from
//! `tests/data/python/`: a PEP 3333 conformance application under
//! `wsgiref.validate.validator`, and a Flask application from PyPI.
//!
//! Without the virtualenv these tests print one line and skip; with `CI=true` they
//! fail (`.ci/run` builds it).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{cert, get_once, listening_addr, python_data, venv, wait_until, Client, Pool};
use nix::sys::signal::Signal;
use serde_json::Value;

const T: Duration = Duration::from_secs(20);

/// A pool serving `app_args` with the Python zergling of `venv`.
fn python_pool(venv: &Path, app_args: &str, extra: &[&str], env: &[(&str, &str)]) -> Pool {
    let cmd = format!("{} {app_args}", venv.join("bin/zergling").display());
    let mut args = vec!["--zergling", &cmd];
    args.extend_from_slice(extra);
    let pool = Pool::start_with(&args, env);
    pool.wait_attached(1);
    pool
}

fn json(r: &common::Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// `curl` to `https://localhost:PORT` of the pool's `https0` listener (the test
/// CA trusted), with `extra` arguments before the URL of `path`.
fn curl_https(pool: &Pool, extra: &[&str], path: &str) -> String {
    let port = listening_addr(&pool.proc.log(), "https0").expect("https0").port();
    let (ca, resolve, url) =
        (cert("ca.pem"), format!("localhost:{port}:127.0.0.1"), format!("https://localhost:{port}{path}"));
    let mut args = vec!["--cacert", &ca, "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args).0
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "20"]).args(args).output().expect("run curl");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn pep_3333_holds_under_wsgiref_validator() {
    let Some(venv) = venv() else { return };
    let https = format!("127.0.0.1:0,{},{}", cert("localhost.pem"), cert("localhost-key.pem"));
    let pool = python_pool(
        &venv,
        &format!("--wsgi-file {} --threads 4", python_data("wsgi_app.py")),
        &["--https", &https],
        &[],
    );
    let addr = pool.addr;

    let r = get_once(addr, "/hello").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, world!"), "{}", pool.proc.log());

    // environ: CGI keys as native strings, from the pool's metadata.
    let mut c = Client::connect(addr);
    let r = c.get("/env?a=1&b=%20").unwrap();
    let env = json(&r);
    assert_eq!(env["REQUEST_METHOD"], "GET");
    assert_eq!(env["SCRIPT_NAME"], "");
    assert_eq!(env["PATH_INFO"], "/env");
    assert_eq!(env["QUERY_STRING"], "a=1&b=%20");
    // From the Host header (the test client sends `Host: test`), as gunicorn does.
    assert_eq!(env["SERVER_NAME"], "test");
    assert_eq!(env["SERVER_PORT"], "80");
    assert_eq!(env["HTTP_HOST"], "test");
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1");
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert!(env["REMOTE_PORT"].as_str().is_some_and(|p| p.parse::<u16>().is_ok()), "{env}");
    assert_eq!(env["wsgi.url_scheme"], "http");
    assert_eq!(env["wsgi.multithread"], true, "4 threads");
    assert_eq!(env["wsgi.multiprocess"], false, "one process");
    assert_eq!(env["wsgi.input_terminated"], true);
    assert_eq!(env["wsgi.version"], serde_json::json!([1, 0]));
    // Percent-decoded, latin-1: `é` in UTF-8 is two characters.
    let env = json(&c.get("/env%20x/%C3%A9").unwrap());
    assert_eq!(env["PATH_INFO"], "/env x/\u{c3}\u{a9}");

    // wsgi.input: read(n) to the end of a Content-Length body and of a chunked one.
    let body: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let r = c.request("POST", "/echo", "Content-Type: application/octet-stream\r\n", &body).unwrap();
    assert_eq!((r.status, r.body.len()), (200, body.len()));
    assert!(r.body == body);
    c.send_raw(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .unwrap();
    let r = c.read_response().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
    let r = c.request("POST", "/lines", "", b"one\ntwo\nthree").unwrap();
    assert_eq!(json(&r), serde_json::json!(["one\n", "two\n", "three"]));
    let r = c.request("POST", "/readlines", "", b"a\nb\nc\n").unwrap();
    assert_eq!(r.text(), "3");

    // start_response: write(), a head sent with the first non-empty chunk.
    let r = c.get("/write").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "written too!"));
    let r = c.get("/head-later").unwrap();
    assert_eq!((r.status, r.header("x-later"), r.text().as_str()), (201, Some("yes"), "body"));
    let r = c.get("/stream?n=10").unwrap();
    assert_eq!(r.text().lines().count(), 10);
    let r = c.request("HEAD", "/hello", "", b"").unwrap();
    assert_eq!((r.status, r.header("content-length"), r.body.len()), (200, Some("13"), 0));

    // An exception: 500, a traceback in the log, and the process serves on.
    let r = get_once(addr, "/boom").unwrap();
    assert_eq!(r.status, 500);
    assert!(pool.proc.wait_log("RuntimeError: boom for the test", 1, T), "{}", pool.proc.log());
    assert!(pool.proc.log().contains("Traceback (most recent call last)"));
    // After the first chunk: never a valid response (the body is cut short).
    let mut late = Client::connect(addr);
    late.send_raw(b"GET /late-error HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(late.read_response().is_err(), "a failed response must not look complete");
    assert!(pool.proc.wait_log("late failure for the test", 1, T), "{}", pool.proc.log());
    assert_eq!(get_once(addr, "/hello").unwrap().status, 200);

    // HTTPS terminated by the pool: the application sees https.
    if common::require_program("curl") {
        let port = listening_addr(&pool.proc.log(), "https0").expect("https0").port();
        let env: Value = serde_json::from_str(&curl_https(&pool, &[], "/env")).unwrap();
        assert_eq!(env["wsgi.url_scheme"], "https", "{env}");
        assert_eq!(env["HTTPS"], "on", "{env}");
        assert_eq!(env["SERVER_NAME"], "localhost", "{env}");
        assert_eq!(env["SERVER_PORT"], port.to_string(), "{env}");
    }
    // The validator never complained.
    assert!(!pool.proc.log().contains("AssertionError"), "{}", pool.proc.log());
}

#[test]
fn a_client_leaving_mid_stream_closes_the_iterable() {
    let Some(venv) = venv() else { return };
    let marks = tempfile::tempdir().unwrap();
    let mark_dir = marks.path().display().to_string();
    let pool =
        python_pool(&venv, &format!("--wsgi-file {}", python_data("wsgi_app.py")), &[], &[("CLOSE_MARK", &mark_dir)]);
    let mut c = Client::connect(pool.addr);
    // 1,000 chunks, 10 ms apart: 10 s if nobody leaves.
    c.send_raw(b"GET /stream?n=1000&name=left HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read(&mut c.stream, &mut first).expect("the response starts");
    let left = Instant::now();
    drop(c);
    let mark = marks.path().join("left");
    assert!(wait_until(Duration::from_secs(5), || mark.exists()), "close() never ran:\n{}", pool.proc.log());
    assert!(left.elapsed() < Duration::from_secs(1), "close() ran {:?} after the client left", left.elapsed());
}

#[test]
fn flask_forms_uploads_json_streams_files_redirects_and_sessions() {
    let Some(venv) = venv() else { return };
    if !common::require_program("curl") {
        return;
    }
    let https = format!("127.0.0.1:0,{},{}", cert("localhost.pem"), cert("localhost-key.pem"));
    let app = format!("--pythonpath {} --module flask_app:app --threads 2", python_data(""));
    let pool = python_pool(&venv, &app, &["--https", &https], &[]);
    let base = format!("http://{}", pool.addr);
    assert_eq!(curl(&[&base]).0, "Hello from Flask");
    assert_eq!(curl(&["-d", "name=zerg ling", &format!("{base}/form")]).0, "name=zerg ling");
    let (out, _) = curl(&["-H", "Content-Type: application/json", "-d", r#"{"a": [1, 2]}"#, &format!("{base}/json")]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["got"]["a"][1].as_i64(), v["scheme"].as_str(), v["remote"].as_str()),
        (Some(2), Some("http"), Some("127.0.0.1"))
    );
    // A 10 MiB multipart upload.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    let mut bytes = vec![7u8; 10 << 20];
    *bytes.last_mut().unwrap() = 42;
    std::fs::write(&big, &bytes).unwrap();
    let (out, _) = curl(&["-F", &format!("file=@{}", big.display()), &format!("{base}/upload")]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["filename"].as_str(), v["size"].as_u64(), v["last"].as_u64()),
        (Some("big.bin"), Some(10 << 20), Some(42))
    );
    assert_eq!(curl(&[&format!("{base}/stream")]).0, "line 0\nline 1\nline 2\nline 3\nline 4\n");
    let file = std::fs::read_to_string(python_data("flask_app.py")).unwrap();
    assert_eq!(curl(&[&format!("{base}/file")]).0, file);
    let (out, _) = curl(&["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", &format!("{base}/go")]);
    assert_eq!(out, format!("302 {base}/"));
    let jar = dir.path().join("jar");
    let jar = jar.display().to_string();
    assert_eq!(curl(&["-c", &jar, "-d", "user=ada", &format!("{base}/login")]).0, "logged in");
    assert_eq!(curl(&["-b", &jar, &format!("{base}/me")]).0, "ada");
    assert_eq!(curl(&[&format!("{base}/me")]).0, "nobody");
    // The same over HTTPS terminated by the pool: Flask sees https.
    assert_eq!(curl_https(&pool, &["-d", "name=over tls"], "/form"), "name=over tls");
    let out = curl_https(&pool, &["-H", "Content-Type: application/json", "-d", "{\"a\": [3]}"], "/json");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["got"]["a"][0].as_i64(), v["scheme"].as_str()), (Some(3), Some("https")));
}

#[test]
fn an_application_that_cannot_load_exits_and_the_pool_backs_off() {
    let Some(venv) = venv() else { return };
    let cmd = format!("{} --module no_such_module_for_the_test", venv.join("bin/zergling").display());
    let pool = Pool::start(&["--zergling", &cmd]);
    // One line naming the module and the exception, then the pool says why it died
    // and waits longer each time.
    assert!(pool.proc.wait_log("exited; respawning", 3, T), "{}", pool.proc.log());
    let log = pool.proc.log();
    assert!(
        log.contains("cannot load no_such_module_for_the_test: ModuleNotFoundError: No module named 'no_such_module_for_the_test'"),
        "{log}"
    );
    let delays: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("exited; respawning"))
        .filter_map(|l| l.split("respawn_in_ms=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(delays.len() >= 3 && delays.windows(2).all(|w| w[1] > w[0]), "back-off grows: {delays:?}\n{log}");
    assert!(log.contains("status=Some(ExitStatus(unix_wait_status(256)))"), "exit status 1 in the log: {log}");
}

/// The seed's shape: a `galaxy:` section beside a `uwsgi:` section whose
/// `module`, `virtualenv`, `pythonpath`, `processes` and `threads` start the
/// application, with static-map and a chain reload on SIGHUP.
#[test]
fn a_galaxy_yml_like_file_serves_and_chain_reloads() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let static_dir = dir.path().join("static");
    std::fs::create_dir(&static_dir).unwrap();
    std::fs::write(static_dir.join("welcome.txt"), "static hello\n").unwrap();
    let yml = dir.path().join("galaxy.yml");
    std::fs::write(
        &yml,
        format!(
            "galaxy:\n  admin_users: admin@example.org\n\nuwsgi:\n  chdir: {dir}\n  module: wsgi_app\n  virtualenv: {venv}\n  \
             pythonpath: {py}\n  master: true\n  enable-threads: true\n  processes: 2\n  threads: 2\n  \
             static-map: /static=static\n  die-on-term: true\n",
            dir = dir.path().display(),
            venv = venv.display(),
            py = python_data(""),
        ),
    )
    .unwrap();
    // The pool installed by pip in the virtualenv (the `zergpool` wheel), as a
    // deployment that lives in a virtualenv runs it.
    let zergpool = venv.join("bin/zergpool");
    assert!(zergpool.is_file(), "the zergpool wheel is installed in {}", venv.display());
    let sockdir = tempfile::tempdir().unwrap();
    let sock = sockdir.path().join("zerg.sock");
    let yml_s = yml.display().to_string();
    let pool = Pool::start_program(&zergpool.display().to_string(), sockdir, sock, &["--yaml", &yml_s], &[]);
    pool.wait_attached(2);
    let addr: SocketAddr = pool.addr;
    let r = get_once(addr, "/static/welcome.txt").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "static hello\n"));
    let env = json(&get_once(addr, "/env").unwrap());
    assert_eq!(env["wsgi.multiprocess"], true, "two processes");
    let before: std::collections::HashSet<String> = (0..20).map(|_| get_once(addr, "/pid").unwrap().text()).collect();
    assert_eq!(before.len(), 2, "both processes serve: {before:?}");
    pool.proc.signal(Signal::SIGHUP);
    assert!(pool.wait_reloads(1, Duration::from_secs(60)), "{}", pool.proc.log());
    let after: std::collections::HashSet<String> = (0..20).map(|_| get_once(addr, "/pid").unwrap().text()).collect();
    assert!(after.is_disjoint(&before), "new processes after the reload: {before:?} {after:?}");
    assert_eq!(get_once(addr, "/hello").unwrap().text(), "Hello, world!");
}

/// 2 processes × 1 thread: while one process sleeps in a request, new
/// connections go to the other, even when the busy one holds fewer connections
/// (the zergling reports its load in requests: LOAD).
#[test]
fn a_process_whose_threads_are_all_busy_gets_no_new_connection() {
    let Some(venv) = venv() else { return };
    let venv_s = venv.display().to_string();
    let py = python_data("");
    let pool = Pool::start(&[
        "--module",
        "wsgi_app",
        "--pythonpath",
        &py,
        "--virtualenv",
        &venv_s,
        "--processes",
        "2",
        "--threads",
        "1",
    ]);
    pool.wait_attached(2);
    // Four idle keep-alive connections, two on each process.
    let mut conns: Vec<(Client, String)> = (0..4)
        .map(|_| {
            let mut c = Client::connect(pool.addr);
            let pid = c.get("/pid").unwrap().text();
            (c, pid)
        })
        .collect();
    let busy_pid = conns[0].1.clone();
    assert_eq!(conns.iter().filter(|(_, p)| *p == busy_pid).count(), 2, "two connections per process");
    // One of them asks for a slow request: that process's only thread is taken.
    let (mut slow, _) = conns.remove(0);
    let sleeper = std::thread::spawn(move || slow.get("/sleep?ms=2000").map(|r| r.status));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let addr = pool.addr;
            std::thread::spawn(move || (get_once(addr, "/pid").map(|r| r.text()), Instant::now()))
        })
        .collect();
    for c in clients {
        let (pid, done) = c.join().unwrap();
        let pid = pid.expect("answered");
        assert_ne!(pid, busy_pid, "a new connection went to the process whose thread is busy");
        assert!(done - started < Duration::from_millis(500), "took {:?}", done - started);
    }
    assert_eq!(sleeper.join().unwrap().unwrap(), 200);
    drop(conns);
}

/// Behind nginx (`uwsgi_pass`): every var nginx sends reaches environ, custom
/// `uwsgi_param`s included, under the validator.
#[test]
fn behind_nginx_every_uwsgi_var_reaches_environ() {
    let Some(venv) = venv() else { return };
    if !common::require_program("nginx") {
        return;
    }
    let cmd = format!("{} --wsgi-file {}", venv.join("bin/zergling").display(), python_data("wsgi_app.py"));
    let pool = Pool::start(&["--socket", "127.0.0.1:0", "--zergling", &cmd]);
    pool.wait_attached(1);
    let uwsgi = listening_addr(&pool.proc.log(), "uwsgi0").expect("uwsgi0 in the log");
    let nginx = common::nginx::Nginx::start_with(
        &uwsgi.to_string(),
        "uwsgi_param CUSTOM_PARAM from-nginx; uwsgi_param REMOTE_USER ada; uwsgi_param SCRIPT_NAME /app;",
    );
    let mut c = Client::connect(nginx.addr());
    let r = c.get("/env/x?q=1").unwrap();
    assert_eq!(r.status, 200, "{}", pool.proc.log());
    let env = json(&r);
    assert_eq!(env["CUSTOM_PARAM"], "from-nginx", "{env}");
    assert_eq!(env["REMOTE_USER"], "ada", "{env}");
    assert_eq!(env["SCRIPT_NAME"], "/app", "{env}");
    assert_eq!(env["PATH_INFO"], "/env/x", "{env}");
    assert_eq!(env["QUERY_STRING"], "q=1", "{env}");
    assert_eq!(env["REQUEST_METHOD"], "GET", "{env}");
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1", "{env}");
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1", "{env}");
    assert!(env["DOCUMENT_ROOT"].as_str().is_some(), "{env}");
    assert_eq!(env["wsgi.url_scheme"], "http", "{env}");
    let body: Vec<u8> = (0..30_000u32).map(|i| (i % 253) as u8).collect();
    let r = c.request("POST", "/echo", "", &body).unwrap();
    assert!(r.status == 200 && r.body == body, "{}", r.status);
    assert!(!pool.proc.log().contains("AssertionError"), "{}", pool.proc.log());
}

/// What a load run saw.
#[derive(Default)]
struct Load {
    ok: u64,
    errors: Vec<String>,
    slowest: Duration,
    pids: std::collections::HashSet<String>,
}

/// Three keep-alive and three connection-per-request clients asking for `/pid`
/// until `stop` is set.
fn load(addr: SocketAddr, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Vec<std::thread::JoinHandle<Load>> {
    use std::sync::atomic::Ordering;
    (0..6)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut l = Load::default();
                let keep_alive = i % 2 == 0;
                let mut c = Client::connect(addr);
                for _ in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let started = Instant::now();
                    let r = if keep_alive {
                        c.get("/pid")
                    } else {
                        Client::connect(addr).request("GET", "/pid", "Connection: close\r\n", b"")
                    };
                    l.slowest = l.slowest.max(started.elapsed());
                    match r {
                        Ok(r) if r.status == 200 => {
                            l.ok += 1;
                            l.pids.insert(r.text());
                        }
                        Ok(r) => l.errors.push(format!("status {}", r.status)),
                        Err(e) => {
                            l.errors.push(format!("{e}"));
                            c = Client::connect(addr);
                        }
                    }
                }
                l
            })
        })
        .collect()
}

fn finish(clients: Vec<std::thread::JoinHandle<Load>>) -> Load {
    let mut all = Load::default();
    for c in clients {
        let l = c.join().unwrap();
        all.ok += l.ok;
        all.errors.extend(l.errors);
        all.slowest = all.slowest.max(l.slowest);
        all.pids.extend(l.pids);
    }
    all
}

/// Flask, 2 processes × 4 threads, a chain reload every 2 s under keep-alive and
/// connection-per-request load: nothing is lost.
#[test]
fn chain_reloads_of_flask_under_load_lose_nothing() {
    let Some(venv) = venv() else { return };
    let (venv_s, py) = (venv.display().to_string(), python_data(""));
    let pool = Pool::start(&[
        "--module",
        "flask_app:app",
        "--pythonpath",
        &py,
        "--virtualenv",
        &venv_s,
        "--processes",
        "2",
        "--threads",
        "4",
    ]);
    pool.wait_attached(2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = load(pool.addr, stop.clone());
    for n in 1..=3 {
        std::thread::sleep(Duration::from_secs(2));
        pool.proc.signal(Signal::SIGHUP);
        assert!(pool.wait_reloads(n, T), "{}", pool.proc.log());
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let l = finish(clients);
    assert!(l.errors.is_empty(), "{} errors, first: {:?}", l.errors.len(), l.errors.first());
    assert!(l.ok > 100, "only {} requests", l.ok);
    assert!(l.pids.len() >= 4, "old and new processes answered: {:?}", l.pids);
}

/// An application that takes 5 s to import, chain-reloaded twice under load: the
/// replacements import before they attach, so no request waits for them.
#[test]
fn a_slow_importing_application_reloads_without_stalling_requests() {
    let Some(venv) = venv() else { return };
    let (venv_s, py) = (venv.display().to_string(), python_data(""));
    let pool = Pool::start_with(
        &[
            "--module",
            "slow_import",
            "--pythonpath",
            &py,
            "--virtualenv",
            &venv_s,
            "--processes",
            "2",
            "--threads",
            "2",
        ],
        &[("IMPORT_SECONDS", "5")],
    );
    pool.wait_attached(2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = load(pool.addr, stop.clone());
    for n in 1..=2 {
        pool.proc.signal(Signal::SIGHUP);
        assert!(pool.wait_reloads(n, Duration::from_secs(60)), "{}", pool.proc.log());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let l = finish(clients);
    assert!(l.errors.is_empty(), "{} errors, first: {:?}", l.errors.len(), l.errors.first());
    assert!(l.slowest < Duration::from_secs(1), "a request took {:?}", l.slowest);
    assert!(l.pids.len() >= 4, "old and new processes answered: {:?}", l.pids);
}

/// A Django project: the admin login page, a CSRF-protected POST, and the admin's
/// static files (collected with `collectstatic`) through the pool's static-map,
/// over HTTP and HTTPS.
#[test]
fn django_admin_csrf_and_static_files() {
    let Some(venv) = venv() else { return };
    let project = python_data("djangoproj");
    let statics = tempfile::tempdir().unwrap();
    let static_root = statics.path().join("static").display().to_string();
    let out = Command::new(venv.join("bin/python"))
        .args([&format!("{project}/manage.py"), "collectstatic", "--noinput"])
        .env("DJANGO_STATIC_ROOT", &static_root)
        .output()
        .unwrap();
    assert!(out.status.success(), "collectstatic: {}", String::from_utf8_lossy(&out.stderr));
    let (venv_s, env) = (venv.display().to_string(), format!("DJANGO_STATIC_ROOT={static_root}"));
    let https = format!("127.0.0.1:0,{},{}", cert("localhost.pem"), cert("localhost-key.pem"));
    let map = format!("/static={static_root}");
    let pool = Pool::start(&[
        "--module",
        "djangoproj.wsgi",
        "--pythonpath",
        &project,
        "--virtualenv",
        &venv_s,
        "--env",
        &env,
        "--static-map",
        &map,
        "--https",
        &https,
        "--socket",
        "127.0.0.1:0",
        "--threads",
        "2",
    ]);
    pool.wait_attached(1);
    let mut c = Client::connect(pool.addr);
    let r = c.get("/admin/login/").unwrap();
    assert_eq!(r.status, 200, "{}", pool.proc.log());
    assert!(r.text().contains("Django"), "{}", r.text());
    // CSRF: the token from a GET makes the POST pass; without it, 403.
    let r = c.get("/form/").unwrap();
    let token = r.text().strip_prefix("token=").expect("a token").to_owned();
    let cookie = r.header("set-cookie").and_then(|v| v.split(';').next()).expect("csrftoken cookie").to_owned();
    let form = format!("name=ada&csrfmiddlewaretoken={token}");
    let headers = format!("Cookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\n");
    let r = c.request("POST", "/form/", &headers, form.as_bytes()).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "posted ada"));
    let r = c.request("POST", "/form/", "Content-Type: application/x-www-form-urlencoded\r\n", b"name=eve").unwrap();
    assert_eq!(r.status, 403);
    // The admin's CSS, served by the pool from the collected folder.
    let css = std::fs::read(format!("{static_root}/admin/css/base.css")).unwrap();
    let r = c.get("/static/admin/css/base.css").unwrap();
    assert_eq!((r.status, r.header("content-type")), (200, Some("text/css; charset=utf-8")));
    assert!(r.body == css);
    if common::require_program("curl") {
        let out = curl_https(&pool, &[], "/admin/login/");
        assert!(out.contains("Django"), "{out}");
        // CSRF over HTTPS: Django sees a secure request (wsgi.url_scheme https,
        // from the pool's TLS termination), so it also wants the Origin to be
        // this very https host.
        let jar = tempfile::NamedTempFile::new().unwrap();
        let jar_s = jar.path().display().to_string();
        let token = curl_https(&pool, &["-c", &jar_s], "/form/").strip_prefix("token=").expect("a token").to_owned();
        let port = listening_addr(&pool.proc.log(), "https0").unwrap().port();
        let origin = format!("Origin: https://localhost:{port}");
        let form = format!("name=ada&csrfmiddlewaretoken={token}");
        let out = curl_https(&pool, &["-b", &jar_s, "-H", &origin, "--data", &form], "/form/");
        assert_eq!(out, "posted ada");
        // The same POST claiming to come from plain http is refused: the
        // request really is secure to Django.
        let out = curl_https(
            &pool,
            &[
                "-b",
                &jar_s,
                "-H",
                &format!("Origin: http://localhost:{port}"),
                "--data",
                &form,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ],
            "/form/",
        );
        assert_eq!(out, "403");
    }
    // Through nginx's uwsgi_pass: the login page, and a CSRF-protected POST.
    if common::require_program("nginx") {
        let uwsgi = listening_addr(&pool.proc.log(), "uwsgi0").expect("uwsgi0");
        let nginx = common::nginx::Nginx::start(&uwsgi.to_string());
        let mut c = Client::connect(nginx.addr());
        let r = c.get("/admin/login/").unwrap();
        assert!(r.status == 200 && r.text().contains("Django"), "{}", r.status);
        let r = c.get("/form/").unwrap();
        let token = r.text().strip_prefix("token=").expect("a token").to_owned();
        let cookie = r.header("set-cookie").and_then(|v| v.split(';').next()).expect("csrftoken cookie").to_owned();
        let headers = format!("Cookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\n");
        let r =
            c.request("POST", "/form/", &headers, format!("name=bob&csrfmiddlewaretoken={token}").as_bytes()).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "posted bob"));
    }
}

/// What fast servers commonly skip: a body that does not match the application's
/// Content-Length is never sent as a valid response, bodiless statuses carry no
/// body, and `start_response` with `exc_info` replaces a head not yet sent.
#[test]
fn lengths_bodiless_statuses_and_exc_info() {
    let Some(venv) = venv() else { return };
    let pool = python_pool(&venv, &format!("--wsgi-file {}", python_data("wsgi_app.py")), &[], &[]);
    // Shorter than said: the connection ends before the promised bytes.
    let mut c = Client::connect(pool.addr);
    assert!(c.get("/short").is_err(), "a short body must not complete a response");
    // Longer than said (the validator makes every result an iterator, so it is
    // streamed): aborted rather than cut at the length, and a log line says why.
    let mut c = Client::connect(pool.addr);
    assert!(c.get("/long").is_err(), "a long body must not complete a response");
    assert!(pool.proc.wait_log("sent more than its Content-Length", 1, T), "{}", pool.proc.log());
    let mut c = Client::connect(pool.addr);
    let r = c.get("/no-content").unwrap();
    assert_eq!((r.status, r.body.len(), r.header("content-length")), (204, 0, None));
    let r = c.get("/not-modified").unwrap();
    assert_eq!((r.status, r.body.len()), (304, 0));
    let r = c.get("/exc-info").unwrap();
    assert_eq!((r.status, r.text().as_str()), (503, "replaced"));
    // The connection is still good after all that.
    assert_eq!(c.get("/hello").unwrap().text(), "Hello, world!");
    assert!(!pool.proc.log().contains("AssertionError"), "{}", pool.proc.log());
}

/// `zergling --yaml FILE`: the application options of a uWSGI file, read by the
/// pool's own parser (`zergpool --print-options`), not a second one; placeholders
/// included.
#[test]
fn the_zergling_command_reads_a_uwsgi_yaml_file() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let yml = dir.path().join("app.yml");
    std::fs::write(
        &yml,
        format!(
            "galaxy:\n  x: 1\nuwsgi:\n  http: 127.0.0.1:0\n  pythonpath: {}\n  module: wsgi_app\n  threads: 3\n  \
             env: FROM_FILE=%(threads)\n",
            python_data("")
        ),
    )
    .unwrap();
    let pool = Pool::start(&[]);
    let mut cmd = Command::new(venv.join("bin/zergling"));
    cmd.arg("--yaml").arg(&yml).env("ZERGPOOL_SOCKET", &pool.sock);
    let z = common::Proc::spawn(cmd, false);
    assert!(pool.wait_event("attached", 1, T), "{}\n{}", pool.proc.log(), z.log());
    let env = json(&get_once(pool.addr, "/env").unwrap());
    assert_eq!(env["wsgi.multithread"], true, "threads: 3 from the file: {env}");
    // `env: FROM_FILE=%(threads)`: the placeholder expanded by the pool's parser.
    let r = get_once(pool.addr, "/osenv?name=FROM_FILE").unwrap();
    assert_eq!(r.text(), "3");
    drop(z);
}

/// The application's stdout, `wsgi.errors` and `logging` reach the pool's log,
/// each line with the zergling's prefix.
#[test]
fn application_output_reaches_the_pools_log() {
    let Some(venv) = venv() else { return };
    let pool = python_pool(&venv, &format!("--wsgi-file {}", python_data("wsgi_app.py")), &[], &[]);
    assert_eq!(get_once(pool.addr, "/output").unwrap().text(), "ok");
    for line in ["printed by the application", "written to wsgi.errors", "WARNING the.app: logged by the application"] {
        assert!(pool.proc.wait_log(line, 1, T), "{line}:\n{}", pool.proc.log());
        let found = pool.proc.log().lines().find(|l| l.contains(line)).unwrap_or_default().to_owned();
        assert!(found.contains("[zergling0 pid "), "prefixed: {found}");
    }
}

/// `wsgi.file_wrapper`: a regular file goes from its position with
/// `sendfile(2)` (the application's file object is never read: its position at
/// `close()` is where the application left it), whole and in step over
/// keep-alive, over HTTPS, and behind nginx (read in chunks there); HEAD gets
/// the length and no body; a file-like object without a descriptor is
/// iterated.
#[test]
fn the_file_wrapper_sends_files_with_sendfile() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.txt");
    let content: String = (0..100_000).map(|i| format!("line {i:07}\n")).collect();
    std::fs::write(&path, &content).unwrap();
    let https = format!("127.0.0.1:0,{},{}", cert("localhost.pem"), cert("localhost-key.pem"));
    let app = format!("--pythonpath {} --module file_app", python_data(""));
    let pool = python_pool(
        &venv,
        &app,
        &["--https", &https, "--socket", "127.0.0.1:0"],
        &[("FILE_APP_PATH", &path.display().to_string())],
    );
    let mut c = Client::connect(pool.addr);
    for _ in 0..2 {
        let r = c.get("/file").unwrap();
        assert_eq!(r.header("content-length"), Some(content.len().to_string().as_str()));
        assert!(r.text() == content, "the whole file, twice on one connection");
    }
    assert!(c.get("/file?seek=1200").unwrap().text() == content[1200..], "from the file's position");
    c.send_raw(b"HEAD /file HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let head = c.read_head_response().unwrap();
    assert_eq!((head.status, head.header("content-length")), (200, Some(content.len().to_string().as_str())));
    assert!(c.get("/file?seek=5").unwrap().text() == content[5..], "a file after a HEAD, in step");
    assert_eq!(c.get("/bytesio").unwrap().text(), "x".repeat(100_000), "no descriptor: iterated");
    let positions: Value = serde_json::from_str(&c.get("/positions").unwrap().text()).unwrap();
    assert_eq!(positions, serde_json::json!([0, 0, 1200, 0, 5]), "never read by the server: sent with sendfile");

    if common::require_program("curl") {
        assert!(curl_https(&pool, &[], "/file?seek=7") == content[7..], "over the pool's TLS relay");
    }
    if common::require_program("nginx") {
        let uwsgi = listening_addr(&pool.proc.log(), "uwsgi0").expect("uwsgi0");
        let nginx = common::nginx::Nginx::start_with(&uwsgi.to_string(), "");
        assert!(get_once(nginx.addr(), "/file?seek=3").unwrap().text() == content[3..], "behind nginx");
    }
}

/// The zergling's threads run under `SCHED_BATCH` (fewer context switches per
/// request: the connection thread and the application thread hand every
/// request to each other), WSGI and ASGI alike, and `--no-batch-scheduling`
/// keeps Linux's default policy. Read from `/proc/PID/task/*/sched`.
#[test]
fn zergling_threads_run_under_sched_batch_unless_told_not_to() {
    let Some(venv) = venv() else { return };
    // The scheduling policy of every thread of the zergling serving `pool`.
    let policies = |pool: &Pool| -> Vec<String> {
        let log = pool.proc.log();
        let pid = log
            .lines()
            .find_map(|l| l.split("zergling attached").nth(1)?.split(" pid=").nth(1)?.split(' ').next())
            .unwrap_or_else(|| panic!("no attached zergling in:\n{log}"))
            .to_owned();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the zergling's threads");
        tasks
            .map(|t| {
                let sched = std::fs::read_to_string(t.unwrap().path().join("sched")).unwrap_or_default();
                let policy = sched.lines().find(|l| l.starts_with("policy")).unwrap_or("policy : ?");
                policy.rsplit(' ').next().unwrap_or("?").to_owned()
            })
            .collect()
    };
    let wsgi = format!("--wsgi-file {} --threads 2", python_data("wsgi_app.py"));
    let asgi = format!("--module asgi_app:app --pythonpath {}", python_data(""));
    for (app, flag, want) in [(&wsgi, "", "3"), (&asgi, "", "3"), (&wsgi, " --no-batch-scheduling", "0")] {
        let pool = python_pool(&venv, &format!("{app}{flag}"), &[], &[]);
        // Served (whatever the answer): every thread has started.
        assert!(get_once(pool.addr, "/").is_ok(), "{app}{flag}: no answer");
        let seen = policies(&pool);
        // The main thread, the connection thread and the application threads.
        assert!(seen.len() >= 3, "{app}{flag}: {seen:?}");
        assert!(seen.iter().all(|p| p == want), "{app}{flag}: policies {seen:?}, want all {want} (3 = SCHED_BATCH)");
    }
}
