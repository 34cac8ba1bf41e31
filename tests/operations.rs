//! Operating the pool (issue 15): the uWSGI stats server read by the real
//! `uwsgitop` (from PyPI, in the test virtualenv) in a real terminal (tmux),
//! and by `curl` with `stats-http`.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::{get_once, https_arg, listening_addr, venv, wait_until, Pool};
use serde_json::Value;

const T: Duration = Duration::from_secs(20);

fn stats_tcp(addr: SocketAddr) -> Value {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut doc = String::new();
    s.read_to_string(&mut doc).unwrap();
    serde_json::from_str(&doc).unwrap_or_else(|e| panic!("{e}: {doc}"))
}

fn total_requests(doc: &Value) -> u64 {
    doc["workers"].as_array().unwrap().iter().map(|w| w["requests"].as_u64().unwrap()).sum()
}

/// Every field uWSGI 2.0 emits, with its JSON type.
fn assert_uwsgi_shape(doc: &Value) {
    for key in ["listen_queue", "listen_queue_errors", "signal_queue", "load", "pid", "uid", "gid"] {
        assert!(doc[key].is_u64(), "{key} is an integer: {doc}");
    }
    assert!(doc["version"].is_string() && doc["cwd"].is_string() && doc["locks"].is_array(), "{doc}");
    for s in doc["sockets"].as_array().unwrap() {
        assert!(s["name"].is_string() && s["proto"].is_string(), "{s}");
        for key in ["queue", "max_queue", "shared", "can_offload"] {
            assert!(s[key].is_u64(), "sockets[].{key}: {s}");
        }
    }
    for w in doc["workers"].as_array().unwrap() {
        for key in [
            "id",
            "pid",
            "accepting",
            "requests",
            "delta_requests",
            "exceptions",
            "harakiri_count",
            "signals",
            "signal_queue",
            "rss",
            "vsz",
            "running_time",
            "last_spawn",
            "respawn_count",
            "tx",
            "avg_rt",
        ] {
            assert!(w[key].is_u64(), "workers[].{key} is an integer: {w}");
        }
        assert!(w["id"].as_u64().unwrap() >= 1);
        assert!(["busy", "idle", "cheap"].contains(&w["status"].as_str().unwrap()), "{w}");
        assert!(w["apps"].is_array() && w["cores"].is_array(), "{w}");
        assert!(w["rss"].as_u64().unwrap() > 1 << 20, "rss in bytes: {w}");
    }
}

/// `listen_queue` and `sockets[].queue` are the connections waiting in the
/// kernel's accept queue: past the connection limit the pool stops accepting,
/// and the clients that come then wait there.
#[test]
fn the_stats_document_shows_the_clients_waiting_in_the_accept_queue() {
    use std::io::Write;
    let pool = Pool::start(&["--stats", "127.0.0.1:0", "--zerg-max-connections", "2", "--listen", "64"]);
    let stats = listening_addr(&pool.proc.log(), "stats").expect("stats listening");
    let send = || {
        let mut s = std::net::TcpStream::connect(pool.addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        s
    };
    // Two held by the pool (no zergling yet), then five it does not accept.
    let held: Vec<_> = (0..2).map(|_| send()).collect();
    assert!(wait_until(T, || pool.proc.count("queued: no zergling") == 2), "{}", pool.proc.log());
    let waiting: Vec<_> = (0..5).map(|_| send()).collect();
    // The queues are read at most once a second.
    assert!(wait_until(T, || stats_tcp(stats)["listen_queue"] == 5), "{}", stats_tcp(stats));
    let doc = stats_tcp(stats);
    assert_eq!(doc["sockets"][0]["queue"], 5, "{doc}");
    assert_eq!(doc["sockets"][0]["max_queue"], 64, "{doc}");
    // From the kernel's socket diagnostics, not the /proc/net/tcp fallback.
    assert!(!pool.proc.log().contains("socket diagnostics"), "{}", pool.proc.log());
    drop((held, waiting));
}

#[test]
fn the_stats_document_counts_every_zergling_s_requests_over_tcp_and_unix() {
    let dir = tempfile::tempdir().unwrap();
    let unix = dir.path().join("stats.sock");
    for stats in ["127.0.0.1:0".to_owned(), unix.display().to_string()] {
        let pool = Pool::start(&["--stats", &stats, "--zergling", common::demo(), "--zergling", common::demo()]);
        pool.wait_attached(2);
        for _ in 0..100 {
            assert_eq!(get_once(pool.addr, "/").unwrap().status, 200);
        }
        for _ in 0..10 {
            get_once(pool.addr, "/nope").unwrap();
        }
        let read = || {
            if stats.contains(':') {
                stats_tcp(listening_addr(&pool.proc.log(), "stats").expect("stats listening"))
            } else {
                let mut s = std::os::unix::net::UnixStream::connect(&unix).unwrap();
                let mut doc = String::new();
                s.read_to_string(&mut doc).unwrap();
                serde_json::from_str(&doc).unwrap()
            }
        };
        // The zerglings report once a second.
        assert!(wait_until(T, || total_requests(&read()) == 110), "{}", read());
        let doc = read();
        assert_uwsgi_shape(&doc);
        let workers = doc["workers"].as_array().unwrap();
        assert_eq!(workers.len(), 2);
        assert!(workers.iter().all(|w| w["requests"].as_u64().unwrap() > 0), "both served: {doc}");
        let tx: u64 = workers.iter().map(|w| w["tx"].as_u64().unwrap()).sum();
        assert_eq!(tx, 100 * 13 + 10 * 9, "body bytes: 100 × Hello, world! and 10 × not found");
        assert_eq!(doc["sockets"][0]["proto"], "http");
        assert_eq!(doc["pid"].as_u64(), Some(u64::from(pool.proc.pid())));
    }
}

/// Worker ids are uWSGI's: a spawned zergling's slot (1, 2, …), kept when its
/// process is replaced, with `respawn_count` saying how often; a zergling
/// started by something else comes after them.
#[test]
fn worker_ids_are_slots_that_outlive_their_processes() {
    let pool = Pool::start(&["--stats", "127.0.0.1:0", "--zergling", common::demo(), "--zergling", common::demo()]);
    pool.wait_attached(2);
    let addr = listening_addr(&pool.proc.log(), "stats").expect("stats");
    let workers = || -> Vec<(u64, u64, u64)> {
        let doc = stats_tcp(addr);
        let mut w: Vec<(u64, u64, u64)> = doc["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| (w["id"].as_u64().unwrap(), w["pid"].as_u64().unwrap(), w["respawn_count"].as_u64().unwrap()))
            .collect();
        w.sort();
        w
    };
    let before = workers();
    assert_eq!(before.iter().map(|w| (w.0, w.2)).collect::<Vec<_>>(), [(1, 0), (2, 0)]);
    pool.proc.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(pool.wait_reloads(1, T), "{}", pool.proc.log());
    assert!(wait_until(T, || workers().len() == 2), "{:?}", workers());
    let after = workers();
    assert_eq!(after.iter().map(|w| (w.0, w.2)).collect::<Vec<_>>(), [(1, 1), (2, 1)], "same slots, replaced once");
    assert!(after.iter().zip(&before).all(|(a, b)| a.1 != b.1), "new processes: {before:?} → {after:?}");
    let _outsider = pool.zergling(&[]);
    assert!(wait_until(T, || workers().len() == 3), "{:?}", workers());
    let all = workers();
    assert!(
        all.iter().any(|w| w.0 > 2 && w.2 == 0),
        "a zergling the pool did not start comes after the slots: {all:?}"
    );
}

#[test]
fn stats_http_answers_exactly_as_uwsgi() {
    if !common::require_program("curl") {
        return;
    }
    let pool =
        Pool::start(&["--stats", "127.0.0.1:0", "--stats-http", "--stats-minified", "--zergling", common::demo()]);
    pool.wait_attached(1);
    let addr = listening_addr(&pool.proc.log(), "stats").unwrap();
    let out =
        Command::new("curl").args(["-sS", "-i", "--max-time", "10"]).arg(format!("http://{addr}/")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("HTTP/1.0 200 OK"));
    let headers: Vec<&str> = lines.collect();
    for h in ["Connection: close", "Access-Control-Allow-Origin: *", "Content-Type: application/json"] {
        assert!(headers.contains(&h), "{h} in {headers:?}");
    }
    assert_eq!(body.trim_end().lines().count(), 1, "stats-minified: one line");
    let doc: Value = serde_json::from_str(body).unwrap();
    assert_uwsgi_shape(&doc);
}

/// `uwsgitop` 0.12, unmodified, in a real terminal: one row per zergling, and
/// request counts that grow under load.
#[test]
fn uwsgitop_shows_one_row_per_zergling_with_growing_counts() {
    let Some(venv) = venv() else { return };
    if !common::require_program("tmux") {
        return;
    }
    let uwsgitop = venv.join("bin/uwsgitop");
    assert!(uwsgitop.is_file(), "uwsgitop is installed in the test virtualenv (scripts/python-env.sh)");
    let pool = Pool::start(&["--stats", "127.0.0.1:0", "--zergling", common::demo(), "--zergling", common::demo()]);
    pool.wait_attached(2);
    let addr = listening_addr(&pool.proc.log(), "stats").unwrap();
    let session = format!("zergpool-uwsgitop-{}", std::process::id());
    let status = Command::new("tmux")
        .args(["new-session", "-d", "-x", "200", "-y", "40", "-s", &session])
        .arg(format!("{} --frequency 1 {addr}", uwsgitop.display()))
        .status()
        .unwrap();
    assert!(status.success());
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).status();
        }
    }
    let _kill = Kill(session.clone());
    let screen = || {
        let out = Command::new("tmux").args(["capture-pane", "-p", "-t", &session]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pids: Vec<String> = (0..20).map(|_| get_once(pool.addr, "/pid").unwrap().text()).collect();
    // A worker row: WID % PID REQ ...; the header line names the totals.
    let requests_of = |screen: &str, pid: &str| -> Option<u64> {
        screen.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&pid)).then(|| f.get(3)?.parse().ok()).flatten()
        })
    };
    let distinct: std::collections::HashSet<&String> = pids.iter().collect();
    assert!(wait_until(T, || distinct.iter().all(|p| requests_of(&screen(), p).is_some())), "{}", screen());
    let before: u64 = distinct.iter().filter_map(|p| requests_of(&screen(), p)).sum();
    for _ in 0..200 {
        get_once(pool.addr, "/").unwrap();
    }
    assert!(
        wait_until(T, || distinct.iter().filter_map(|p| requests_of(&screen(), p)).sum::<u64>() >= before + 200),
        "counts grow: {}",
        screen()
    );
    assert!(screen().contains("req:"), "uwsgitop's header line: {}", screen());
}

/// `GET /metrics` parses with the real Prometheus client library's OpenMetrics
/// parser and counts what happened; `GET /health` says whether a zergling is
/// ready, and flips to 503 when the last one drains.
#[test]
fn metrics_parse_and_count_and_health_follows_the_zerglings() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "static hello\n").unwrap();
    let map = format!("/static={}", dir.path().display());
    let pool = Pool::start(&["--metrics", "127.0.0.1:0", "--https", &https_arg(), "--static-map", &map]);
    let metrics = listening_addr(&pool.proc.log(), "metrics").expect("metrics listening");
    let health = || get_once(metrics, "/health").unwrap().status;
    assert_eq!(health(), 503, "no zergling yet");
    let mut zergling = pool.zergling(&[]);
    pool.wait_attached(1);
    assert_eq!(health(), 200);
    for _ in 0..20 {
        assert_eq!(get_once(pool.addr, "/").unwrap().status, 200);
    }
    assert_eq!(get_once(pool.addr, "/static/hello.txt").unwrap().status, 200);
    let not_modified = common::Client::connect(pool.addr)
        .request("GET", "/static/hello.txt", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n", b"")
        .unwrap();
    assert_eq!(not_modified.status, 304);
    let https = listening_addr(&pool.proc.log(), "https0").unwrap();
    let _ = std::net::TcpStream::connect(https).map(|mut s| std::io::Write::write_all(&mut s, b"not TLS\r\n\r\n"));
    // A TLS handshake with the real client.
    let out =
        Command::new("curl").args(["-sS", "-k", "--max-time", "10"]).arg(format!("https://{https}/")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, world!");
    // The zergling's STATS arrive once a second.
    let scrape = || get_once(metrics, "/metrics").unwrap().text();
    let zergling_requests = |text: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("zergpool_zergling_requests{"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum()
    };
    assert!(wait_until(T, || zergling_requests(&scrape()) >= 21), "{}", scrape());
    let parsed = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sys, json\n\
             from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
             out = {}\n\
             for f in text_string_to_metric_families(sys.stdin.read()):\n\
             \x20   for s in f.samples:\n\
             \x20       key = s.name + ''.join(sorted('{%s=%s}' % kv for kv in s.labels.items()))\n\
             \x20       out[key] = s.value\n\
             print(json.dumps(out))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            std::io::Write::write_all(c.stdin.as_mut().unwrap(), scrape().as_bytes())?;
            drop(c.stdin.take());
            c.wait_with_output()
        })
        .unwrap();
    assert!(parsed.status.success(), "the parser rejected it: {}", String::from_utf8_lossy(&parsed.stderr));
    let m: Value = serde_json::from_slice(&parsed.stdout).unwrap();
    let get = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("{k} in {m}"));
    assert!(get("zergpool_connections_accepted_total") >= 24.0, "{m}");
    assert!(get("zergpool_connections_handed_off_total") >= 21.0, "{m}");
    assert_eq!(get("zergpool_static_responses_total{class=2xx}"), 1.0);
    assert_eq!(get("zergpool_static_responses_total{class=3xx}"), 1.0);
    assert_eq!(get("zergpool_tls_handshakes_total"), 1.0);
    assert!(get("zergpool_tls_handshake_failures_total") >= 1.0, "{m}");
    assert_eq!(get("zergpool_zerglings{state=ready}"), 1.0);
    assert!(get("zergpool_queue_wait_seconds_count") >= 21.0, "{m}");
    assert!(get("zergpool_handoff_seconds_count") >= 21.0, "{m}");
    let requests: f64 = m
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("zergpool_zergling_requests{"))
        .map(|(_, v)| v.as_f64().unwrap())
        .sum();
    assert!(requests >= 21.0, "the zergling's own count: {m}");
    // The last zergling drains: the load balancer hears it.
    zergling.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(zergling.wait_exit(T).is_some());
    assert!(wait_until(T, || health() == 503));
}

/// `NOTIFY_SOCKET`, as systemd sets it: READY once listening, RELOADING (with
/// MONOTONIC_USEC) then READY around a SIGHUP reload, STOPPING at the end; and
/// WATCHDOG=1 pings, every half of `WATCHDOG_USEC`.
#[test]
fn systemd_hears_ready_reloading_ready_and_stopping_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let notify = path.display().to_string();
    let mut pool = Pool::start_with(
        &["--zergling", common::demo()],
        &[("NOTIFY_SOCKET", notify.as_str()), ("WATCHDOG_USEC", "400000")],
    );
    let mut seen: Vec<String> = Vec::new();
    let next_state = |seen: &mut Vec<String>| -> String {
        // The next message that is not only a STATUS line or a watchdog ping.
        loop {
            let mut buf = [0u8; 4096];
            let n = sock.recv(&mut buf).expect("a notification");
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if !msg.lines().all(|l| l.starts_with("STATUS=") || l == "WATCHDOG=1") {
                return msg;
            }
        }
    };
    assert_eq!(next_state(&mut seen).trim(), "READY=1");
    pool.wait_attached(1);
    // STATUS follows the zerglings (at most once a second).
    loop {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a STATUS with the zergling");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(msg.clone());
        if msg.starts_with("STATUS=1 zergling(s) ready") {
            break;
        }
    }
    pool.proc.signal(nix::sys::signal::Signal::SIGHUP);
    let reloading = next_state(&mut seen);
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading:?}");
    assert!(pool.wait_reloads(1, T));
    assert_eq!(next_state(&mut seen).trim(), "READY=1", "after the reload: {seen:?}");
    pool.proc.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(next_state(&mut seen).trim(), "STOPPING=1");
    assert!(pool.proc.wait_exit(T).is_some());
    assert!(seen.iter().filter(|m| m.trim() == "WATCHDOG=1").count() >= 2, "watchdog pings: {seen:?}");
}

/// `pidfile` (before the privilege drop, as root) and `pidfile2` (after it, as
/// the user the pool becomes), both removed at a graceful stop; a pid file that
/// cannot be written stops the start with its path.
#[test]
fn pid_files_are_written_before_and_after_the_privilege_drop_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (before, after) = (dir.path().join("root.pid"), dir.path().join("nobody/pool.pid"));
    std::fs::create_dir(dir.path().join("nobody")).unwrap();
    let root = nix::unistd::geteuid().is_root();
    let mut args = vec![
        "--pidfile".to_owned(),
        before.display().to_string(),
        "--pidfile2".to_owned(),
        after.display().to_string(),
    ];
    if root {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path().join("nobody"), std::fs::Permissions::from_mode(0o777)).unwrap();
        args.extend(["--uid", "nobody", "--gid", "nogroup"].map(String::from));
    } else {
        eprintln!("not root: pid files without the privilege drop");
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut pool = Pool::start(&args);
    let pid = pool.proc.pid().to_string();
    assert!(wait_until(T, || std::fs::read_to_string(&after).is_ok_and(|p| p.trim() == pid)), "{}", pool.proc.log());
    assert_eq!(std::fs::read_to_string(&before).unwrap().trim(), pid);
    if root {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&before).unwrap().uid(), 0, "pidfile: written as root");
        assert_eq!(std::fs::metadata(&after).unwrap().uid(), 65534, "pidfile2: written as nobody");
    }
    pool.proc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(pool.proc.wait_exit(T).is_some());
    assert!(!after.exists() && (!before.exists() || root), "pid files removed at exit");
    // A folder that does not exist: the start fails, naming the file.
    let bad = dir.path().join("missing/pool.pid").display().to_string();
    let out = Command::new(common::POOL).args(["--http", "127.0.0.1:0", "--pidfile", &bad]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&bad), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `logto` and Debian's logrotate: the log file is renamed while requests
/// arrive, the postrotate script sends SIGUSR1, and the pool writes on in a new
/// file; no line is lost or torn (one `dispatched` line per connection, across
/// both files). The zerglings' output goes into the same file.
#[test]
fn logrotate_rotates_the_log_under_load_and_no_line_is_lost() {
    if !common::require_program("logrotate") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pool.log");
    let log_s = log.display().to_string();
    let pool = Pool::start_with(
        &["--logto", &log_s, "--disable-logging=false", "--zergling", common::demo()],
        &[("ZERGPOOL_LOG", "info,zergpool::pool::conn=debug")],
    );
    pool.wait_attached(1);
    let conf = dir.path().join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{log_s} {{\n  rotate 3\n  missingok\n  create 0644\n  postrotate\n    kill -USR1 {}\n  endscript\n}}\n",
            pool.proc.pid()
        ),
    )
    .unwrap();
    let addr = pool.addr;
    let load =
        std::thread::spawn(move || (0..600).filter(|_| get_once(addr, "/").is_ok_and(|r| r.status == 200)).count());
    std::thread::sleep(Duration::from_millis(200));
    let state = dir.path().join("logrotate.state");
    let out = Command::new("logrotate").arg("-f").arg("-s").arg(&state).arg(&conf).output().unwrap();
    assert!(out.status.success(), "logrotate: {}", String::from_utf8_lossy(&out.stderr));
    let ok = load.join().unwrap();
    assert_eq!(ok, 600);
    let rotated = dir.path().join("pool.log.1");
    assert!(wait_until(T, || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("log reopened"))));
    let count = |p: &std::path::Path| {
        std::fs::read_to_string(p).unwrap_or_default().lines().filter(|l| l.contains("dispatched conn=")).count()
    };
    let (old, new) = (count(&rotated), count(&log));
    assert!(old > 0 && new > 0, "the rotation fell in the load: {old} before, {new} after");
    assert_eq!(old + new, 600, "one line per connection across both files");
    // The zergling's request log lines, written straight into the file it was
    // given (LOGFILE), a new one after the reopen: 600 across both files.
    let requests = |p: &std::path::Path| {
        std::fs::read_to_string(p).unwrap_or_default().lines().filter(|l| l.starts_with("[pid: ")).count()
    };
    assert!(
        wait_until(T, || requests(&rotated) + requests(&log) == 600),
        "request lines: {} before, {} after",
        requests(&rotated),
        requests(&log)
    );
    assert!(requests(&log) > 0, "the zergling writes to the new file after the reopen");
    let all = std::fs::read_to_string(&rotated).unwrap() + &std::fs::read_to_string(&log).unwrap();
    assert!(all.contains("[zergling0 pid"), "the zerglings' output is in the same file");
    for line in all.lines() {
        let whole = if line.starts_with("[pid: ") {
            line.contains("GET / => generated 13 bytes") && line.ends_with("(1 switches on core 0)")
        } else {
            line.len() > 20 && line.as_bytes()[4] == b'-'
        };
        assert!(whole, "every line whole: {line:?}");
    }
}

/// Debian's supervisor runs the shipped program (`config/supervisord/galaxy.conf`,
/// its command pointed at this build): start, status, a stop with a request in
/// flight (it completes: SIGINT is the pool's graceful stop), start and restart.
#[test]
fn supervisord_runs_the_shipped_program_and_its_stop_lets_requests_finish() {
    if !common::require_program("supervisord") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let port = common::nginx::free_port();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/supervisord/galaxy.conf")).unwrap();
    let mut program = String::new();
    for line in shipped.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        match key {
            "command" => program.push_str(&format!(
                "command = {} --http 127.0.0.1:{port} --zerg-server {d}/zerg.sock --zergling {}\n",
                common::POOL,
                common::demo()
            )),
            "directory" => program.push_str(&format!("directory = {d}\n")),
            "user" => {}
            "startsecs" => program.push_str("startsecs = 1\n"),
            _ => program.push_str(&format!("{line}\n")),
        }
    }
    assert!(program.contains("stopsignal      = INT") && program.contains("stopwaitsecs    = 65"), "{program}");
    let conf = dir.path().join("supervisord.conf");
    std::fs::write(
        &conf,
        format!(
            "[unix_http_server]\nfile = {d}/supervisor.sock\n\n[supervisord]\nlogfile = {d}/supervisord.log\n\
             pidfile = {d}/supervisord.pid\nchildlogdir = {d}\n\n\
             [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
             [supervisorctl]\nserverurl = unix://{d}/supervisor.sock\n\n{program}"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("supervisord");
    cmd.arg("-n").arg("-c").arg(&conf);
    let _supervisord = common::Proc::spawn(cmd, true);
    let ctl = |args: &[&str]| {
        let out = Command::new("supervisorctl").arg("-c").arg(&conf).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let serving = || get_once(addr, "/").is_ok_and(|r| r.status == 200);
    assert!(wait_until(T, || ctl(&["status", "web"]).contains("RUNNING") && serving()), "{}", ctl(&["status"]));
    // A request in flight when supervisorctl stops the program completes.
    let slow = std::thread::spawn(move || get_once(addr, "/sleep?ms=1500").map(|r| r.status));
    std::thread::sleep(Duration::from_millis(300));
    let stopped = ctl(&["stop", "web"]);
    assert!(stopped.contains("stopped"), "{stopped}");
    assert_eq!(slow.join().unwrap().unwrap(), 200, "the request in flight finished");
    assert!(ctl(&["status", "web"]).contains("STOPPED"));
    assert!(ctl(&["start", "web"]).contains("started"));
    assert!(wait_until(T, serving));
    assert!(ctl(&["restart", "web"]).contains("started"));
    assert!(wait_until(T, serving));
    ctl(&["shutdown"]);
}

/// systemd's socket activation, with systemd's own `systemd-socket-activate`:
/// it binds an HTTP and a uwsgi socket and starts the pool with them
/// (`LISTEN_FDS`); the pool takes the first by its name (`--fdname`) and the
/// second by its address, binds neither again, and serves both.
#[test]
fn socket_activation_hands_the_pool_its_listeners() {
    if !common::require_program("systemd-socket-activate") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (http, uwsgi) = (common::nginx::free_port(), common::nginx::free_port());
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.args(["-l", &format!("127.0.0.1:{http}"), "-l", &format!("127.0.0.1:{uwsgi}"), "--fdname=http0:other"])
        .arg(common::POOL)
        .args(["--http", &format!("127.0.0.1:{http}"), "--socket", &format!("127.0.0.1:{uwsgi}"), "--zerg-server"])
        .arg(dir.path().join("zerg.sock"))
        .args(["--zergling", common::demo()]);
    let pool = common::Proc::spawn(cmd, true);
    assert!(pool.wait_log("Listening on", 2, T), "{}", pool.log());
    // The first connection starts the pool (systemd-socket-activate waits for it).
    let addr: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let r = get_once(addr, "/").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, world!"), "{}", pool.log());
    assert_eq!(pool.count("listening socket inherited from the service manager"), 2, "{}", pool.log());
    if common::require_program("nginx") {
        let nginx = common::nginx::Nginx::start(&format!("127.0.0.1:{uwsgi}"));
        assert_eq!(get_once(nginx.addr(), "/").unwrap().text(), "Hello, world!");
    }
}

/// `daemonize`: the command returns at once, a daemon serves in the background
/// with its log in the file and its pid in `pidfile`, and stops gracefully on
/// SIGTERM (its pid file removed).
#[test]
fn daemonize_serves_in_the_background_and_logs_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let out = Command::new(common::POOL)
        .args(["--daemonize", &p("pool.log"), "--pidfile", &p("pool.pid"), "--events", &p("events.jsonl")])
        .args(["--http", "127.0.0.1:0", "--zerg-server", &p("zerg.sock"), "--zergling", common::demo()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("daemonized"));
    let pid_of = || std::fs::read_to_string(p("pool.pid")).ok().and_then(|s| s.trim().parse::<i32>().ok());
    assert!(wait_until(T, || pid_of().is_some()), "no pid file");
    let pid = pid_of().unwrap();
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _kill = Kill(pid);
    let events = || std::fs::read_to_string(p("events.jsonl")).unwrap_or_default();
    assert!(wait_until(T, || listening_addr(&events(), "http0").is_some() && events().contains("\"attached\"")));
    let addr = listening_addr(&events(), "http0").unwrap();
    assert_eq!(get_once(addr, "/").unwrap().text(), "Hello, world!");
    // The zergling's own lines reach the log through the pool's relay, a moment after the event.
    let log = || std::fs::read_to_string(p("pool.log")).unwrap_or_default();
    assert!(
        wait_until(T, || log().contains("zergling attached") && log().contains("[zergling0 pid")),
        "the daemon's log: {}",
        log()
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(wait_until(T, || pid_of().is_none()), "a graceful stop removes the pid file");
}

/// Request log lines: one per request, written by whoever answered it (the
/// zergling library for the application's, the pool for static-map's), in
/// uWSGI's format by default, as JSON, or with a `log-format` template; with
/// `disable-logging`, `log-4xx` keeps only the 4xx lines.
#[test]
fn request_log_lines_come_from_whoever_answered_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "static hello\n").unwrap();
    let map = format!("/static={}", dir.path().display());
    let run = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["--static-map", &map, "--zergling", common::demo()];
        args.extend_from_slice(extra);
        let pool = Pool::start(&args);
        pool.wait_attached(1);
        for (path, status) in [("/", 200), ("/nope", 404), ("/static/hello.txt", 200)] {
            let r = common::Client::connect(pool.addr)
                .request("GET", path, "User-Agent: zergtest/1\r\nConnection: close\r\n", b"")
                .unwrap();
            assert_eq!(r.status, status, "{path}");
        }
        // The zergling sends its lines every 100 ms.
        let ours = |p: &Pool| -> Vec<String> {
            p.proc
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| {
                    !l.contains(" INFO ")
                        && !l.contains(" DEBUG ")
                        && !l.contains(" WARN ")
                        && !l.starts_with("{\"event\"")
                })
                .cloned()
                .collect()
        };
        wait_until(T, || !ours(&pool).is_empty());
        std::thread::sleep(Duration::from_millis(300));
        ours(&pool)
    };
    let lines = run(&["--disable-logging=false"]);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let find =
        |needle: &str| lines.iter().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} in {lines:?}"));
    assert!(find("GET / =>").contains("=> generated 13 bytes in") && find("GET / =>").contains("(HTTP/1.1 200)"));
    assert!(find("GET /nope =>").contains("generated 9 bytes") && find("GET /nope =>").contains("(HTTP/1.1 404)"));
    assert!(find("GET /static/hello.txt =>").contains("generated 13 bytes"), "the pool's own static answer");
    assert!(lines.iter().all(|l| l.starts_with("[pid: ") && l.contains("127.0.0.1 ()")), "{lines:?}");

    let lines = run(&["--disable-logging=false", "--log-json"]);
    let parsed: Vec<Value> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let app = parsed.iter().find(|v| v["uri"] == "/").unwrap();
    assert_eq!(
        (app["method"].as_str(), app["status"].as_u64(), app["size"].as_u64()),
        (Some("GET"), Some(200), Some(13))
    );
    assert_eq!(
        (app["wid"].as_u64(), app["uagent"].as_str(), app["addr"].as_str()),
        (Some(1), Some("zergtest/1"), Some("127.0.0.1"))
    );
    let stat = parsed.iter().find(|v| v["uri"] == "/static/hello.txt").unwrap();
    assert_eq!(stat["wid"], 0, "answered by the pool");

    let lines =
        run(&["--disable-logging=false", "--log-format", "%(method) %(uri) %(status) %(size) w%(wid) %(uagent)"]);
    assert!(lines.contains(&"GET / 200 13 w1 zergtest/1".to_owned()), "{lines:?}");
    assert!(lines.contains(&"GET /nope 404 9 w1 zergtest/1".to_owned()), "{lines:?}");

    let lines = run(&["--disable-logging", "--log-4xx"]);
    assert_eq!(lines.len(), 1, "only the 404: {lines:?}");
    assert!(lines[0].contains("GET /nope"));
}

/// LOGFILE: with request logging on and a log file, an attaching zergling gets
/// the file's descriptor after WELCOME (its lines then go straight into it),
/// and a new one after each reopen; lines written there land in the pool's
/// log, before and after the rotation. Without request logging, none is sent.
#[test]
fn zerglings_get_the_log_file_and_a_new_one_after_each_reopen() {
    use std::io::Write as _;
    use zergpool::proto::Message;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pool.log");
    let log_s = log.display().to_string();
    let pool = Pool::start(&["--logto", &log_s, "--disable-logging=false"]);
    let z = common::RawZergling::attach(&pool.sock, std::process::id(), 1);
    let Some((Message::LogFile, Some(fd))) = z.recv(T) else { panic!("no LOGFILE after WELCOME") };
    std::fs::File::from(fd).write_all(b"line written by the zergling before\n").unwrap();
    assert!(wait_until(T, || std::fs::read_to_string(&log).unwrap().contains("line written by the zergling before")));
    // logrotate's way: rename, then SIGUSR1.
    let rotated = dir.path().join("pool.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    pool.proc.signal(nix::sys::signal::Signal::SIGUSR1);
    let Some((Message::LogFile, Some(fd))) = z.recv(T) else { panic!("no new LOGFILE after the reopen") };
    std::fs::File::from(fd).write_all(b"line written by the zergling after\n").unwrap();
    assert!(wait_until(T, || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("by the zergling after"))));
    assert!(!std::fs::read_to_string(&rotated).unwrap().contains("by the zergling after"));

    // Request logging off: the file stays the pool's.
    let quiet = Pool::start(&["--logto", &dir.path().join("quiet.log").display().to_string()]);
    let z = common::RawZergling::attach(&quiet.sock, std::process::id(), 1);
    assert!(z.recv(Duration::from_millis(500)).is_none(), "no LOGFILE without request logging");
}

/// A request that finishes after its zergling's session ended (a chain reload
/// drains it: DRAIN ends the session, the request goes on) still gets its
/// line, in the log file (LOGFILE) and on stderr (LOG on the kept channel).
#[test]
fn the_last_requests_of_a_draining_zergling_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pool.log");
    let log_s = log.display().to_string();
    for to_file in [true, false] {
        let mut args = vec!["--disable-logging=false", "--zergling", common::demo()];
        if to_file {
            args.extend_from_slice(&["--logto", &log_s]);
        }
        let pool = Pool::start(&args);
        pool.wait_attached(1);
        let addr = pool.addr;
        let slow = std::thread::spawn(move || get_once(addr, "/sleep?ms=1500").map(|r| r.status));
        std::thread::sleep(Duration::from_millis(300));
        pool.proc.signal(nix::sys::signal::Signal::SIGHUP);
        assert_eq!(slow.join().unwrap().unwrap(), 200);
        let logged = || {
            let text = if to_file { std::fs::read_to_string(&log).unwrap_or_default() } else { pool.proc.log() };
            text.lines().any(|l| l.contains("GET /sleep?ms=1500 => generated"))
        };
        assert!(wait_until(T, logged), "to_file={to_file}: no line for the request that outlived its session");
    }
}

/// Every answer the pool gives itself has its line (`wid` 0): 503 when no
/// zergling takes a request, 400, 431, 408, the `http-to-https` redirect, and
/// static-map over uwsgi (behind the real nginx), with what the request showed.
#[test]
fn the_pool_logs_the_answers_it_gives_itself() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "static hello\n").unwrap();
    let map = format!("/static={}", dir.path().display());
    let pool = Pool::start(&[
        "--disable-logging=false",
        "--log-json",
        "--static-map",
        &map,
        "--http-timeout",
        "1",
        "--zerg-queue-timeout",
        "1",
        "--http-to-https",
        "127.0.0.1:0",
        "--socket",
        "127.0.0.1:0",
    ]);
    let send = |addr: SocketAddr, bytes: &[u8]| -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(send(pool.addr, b"GET /dyn HTTP/1.1\r\nHost: h\r\nUser-Agent: ua/1\r\n\r\n").starts_with("HTTP/1.1 503"));
    assert!(send(pool.addr, b"G\x01T / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400"));
    let big = format!("GET /big HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
    assert!(send(pool.addr, big.as_bytes()).starts_with("HTTP/1.1 431"));
    assert!(send(pool.addr, b"GET /slow HTTP/1.1\r\nHost: h\r\n").starts_with("HTTP/1.1 408"));
    let redirect = listening_addr(&pool.proc.log(), "redirect0").expect("redirect0");
    assert!(send(redirect, b"GET /go HTTP/1.1\r\nHost: example.org\r\n\r\n").starts_with("HTTP/1.1 301"));
    let mut expected = vec![("/dyn", 503), ("/", 400), ("/big", 431), ("/slow", 408), ("/go", 301)];
    let nginx = common::require_program("nginx").then(|| {
        let uwsgi = listening_addr(&pool.proc.log(), "uwsgi0").expect("uwsgi0");
        common::nginx::Nginx::start_with(&uwsgi.to_string(), "")
    });
    if let Some(nginx) = &nginx {
        let r = get_once(nginx.addr(), "/static/hello.txt").unwrap();
        assert_eq!(r.status, 200);
        expected.push(("/static/hello.txt", 200));
    }
    let lines = || -> Vec<Value> {
        pool.proc.lines.lock().unwrap().iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
    };
    let logged = |uri: &str, status: u64| lines().into_iter().find(|v| v["uri"] == uri && v["status"] == status);
    assert!(
        wait_until(T, || expected.iter().all(|(u, s)| logged(u, *s).is_some())),
        "expected {expected:?} in {:#?}",
        lines()
    );
    for (uri, status) in &expected {
        let v = logged(uri, *status).unwrap();
        assert_eq!((v["wid"].as_u64(), v["addr"].as_str()), (Some(0), Some("127.0.0.1")), "{v}");
    }
    let dynamic = logged("/dyn", 503).unwrap();
    assert_eq!(
        (dynamic["method"].as_str(), dynamic["uagent"].as_str(), dynamic["size"].as_u64()),
        (Some("GET"), Some("ua/1"), Some(20))
    );
    assert_eq!(logged("/go", 301).unwrap()["host"], "example.org");
}
