//! Zero-downtime restarts through the real binaries: chain reloads under load,
//! hand-back of idle keep-alive connections, crashes, replacements that never
//! attach, pool restarts with zerglings started outside the pool, and the reload
//! triggers (SIGHUP, touch files, the master FIFO).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{get_once, Client, Pool};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(20);

/// Seconds the load test runs (the issue asks for about 20).
fn load_seconds() -> u64 {
    std::env::var("ZERGPOOL_LOAD_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    bad_status: AtomicU64,
    errors: AtomicU64,
    pids: Mutex<HashSet<String>>,
    /// The first few errors, each with the time it was seen (to match pool logs).
    first_errors: Mutex<Vec<String>>,
}

impl Tally {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut seen = self.first_errors.lock().unwrap();
        if seen.len() < 10 {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            seen.push(format!("{what} at {:.3}", t.as_secs_f64()));
        }
    }
}

/// The proof of zero-downtime restarts: keep-alive and new-connection clients
/// under a chain reload every 2 s; every request must get a 200.
///
/// It once lost about one request in 200,000: a `Connection: close` response still
/// in hyper's write buffer when the drain came (see
/// `zergling::tests::a_drain_never_drops_a_buffered_response`).
#[test]
fn chain_reloads_every_two_seconds_under_load_lose_nothing() {
    chain_reloads_under_load(&[], load_seconds());
}

/// The same with `zerg-direct-accept-http`: the zerglings accept on the http
/// listener themselves, and hand their idle keep-alive connections back on drain
/// (the pool describes those from the socket).
#[test]
fn chain_reloads_under_load_lose_nothing_with_direct_http_accept() {
    chain_reloads_under_load(&["--zerg-direct-accept-http"], load_seconds() / 2);
}

fn chain_reloads_under_load(extra: &[&str], seconds: u64) {
    let mut args = vec!["--zergling", common::demo(), "--zergling", common::demo()];
    args.extend_from_slice(extra);
    let pool = Pool::start_with(&args, &[("ZERGPOOL_LOG", "info,zergpool::dispatch=debug")]);
    pool.wait_attached(2);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let max_requests_per_client = 200_000;
    let mut clients = Vec::new();
    // Keep-alive clients: one connection each for the whole run.
    for _ in 0..3 {
        let (addr, stop, tally) = (pool.addr, stop.clone(), tally.clone());
        clients.push(std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            for _ in 0..max_requests_per_client {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match c.get("/pid") {
                    Ok(r) if r.status == 200 => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                        tally.pids.lock().unwrap().insert(r.text());
                    }
                    Ok(r) => {
                        tally.bad_status.fetch_add(1, Ordering::Relaxed);
                        tally.error(format!("keep-alive: status {}", r.status));
                    }
                    Err(e) => {
                        let port = c.stream.local_addr().map(|a| a.port()).unwrap_or(0);
                        tally.error(format!("keep-alive from port {port}: {e}"));
                        c = Client::connect(addr);
                    }
                }
            }
        }));
    }
    // New-connection clients: one connection per request.
    for _ in 0..3 {
        let (addr, stop, tally) = (pool.addr, stop.clone(), tally.clone());
        clients.push(std::thread::spawn(move || {
            for _ in 0..max_requests_per_client {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let connected = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                let mut c = Client::connect(addr);
                let port = c.stream.local_addr().map(|a| a.port()).unwrap_or(0);
                match c.request("GET", "/pid", "Connection: close\r\n", b"") {
                    Ok(r) if r.status == 200 => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                        tally.pids.lock().unwrap().insert(r.text());
                    }
                    Ok(r) => {
                        tally.bad_status.fetch_add(1, Ordering::Relaxed);
                        tally.error(format!("new connection from port {port}: status {}", r.status));
                    }
                    Err(e) => tally.error(format!(
                        "new connection from port {port} (connected at {:.3}): {e}",
                        connected.as_secs_f64()
                    )),
                }
            }
        }));
    }
    let mut reloads = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        pool.proc.signal(Signal::SIGHUP);
        reloads += 1;
    }
    // Let the last chain finish under load too.
    assert!(pool.wait_reloads(reloads.min(3), T), "{}", pool.proc.log());
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, bad, errors) = (
        tally.ok.load(Ordering::Relaxed),
        tally.bad_status.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
    );
    let pids = tally.pids.lock().unwrap().len();
    eprintln!("load: {ok} ok, {bad} non-200, {errors} errors, {pids} distinct zergling pids, {reloads} reloads");
    assert!(ok > 1000, "too little load to prove anything: {ok}");
    if (bad, errors) != (0, 0) {
        // The clients' first errors, then the pool's whole log: enough to tell a
        // lost request from a slow one after the run.
        let path = std::env::temp_dir().join("zergpool-chain-reload-load.log");
        let first = format!("{:#?}\n", tally.first_errors.lock().unwrap());
        let _ = std::fs::write(&path, first + &pool.proc.log());
        eprintln!("the pool's whole log is in {}", path.display());
    }
    let warnings: Vec<String> =
        pool.proc.lines.lock().unwrap().iter().filter(|l| l.contains("WARN") || l.contains("ERROR")).cloned().collect();
    assert_eq!(
        (bad, errors),
        (0, 0),
        "first errors: {:#?}\n{}",
        tally.first_errors.lock().unwrap(),
        warnings.join("\n")
    );
    assert!(pids > 4, "the reloads really replaced the zerglings: {pids} pids");
    if !extra.is_empty() {
        assert!(pool.proc.count("accepting on the pool's listener directly") >= 2, "{}", pool.proc.log());
    }
}

#[test]
fn an_idle_keep_alive_connection_is_handed_back_on_reload() {
    let pool = Pool::start(&["--zergling", common::demo()]);
    pool.wait_attached(1);
    let mut c = Client::connect(pool.addr);
    let first = c.get("/pid").unwrap().text();
    pool.proc.signal(Signal::SIGHUP);
    assert!(pool.wait_reloads(1, T), "{}", pool.proc.log());
    assert!(pool.proc.wait_log("connection handed back", 1, T), "{}", pool.proc.log());
    // Same client socket, next request: answered by the replacement.
    let second = c.get("/pid").expect("the client's connection stayed open");
    assert_eq!(second.status, 200);
    assert_ne!(second.text(), first);
}

/// With `zerg-direct-accept-http` the zergling accepted the connection itself;
/// on reload it hands it back all the same, and the pool, which never saw it,
/// describes it from the socket.
#[test]
fn a_directly_accepted_idle_connection_is_handed_back_on_reload() {
    let pool = Pool::start(&["--zerg-direct-accept-http", "--zergling", common::demo()]);
    pool.wait_attached(1);
    assert!(pool.proc.wait_log("accepting on the pool's listener directly", 1, T), "{}", pool.proc.log());
    let mut c = Client::connect(pool.addr);
    let who: serde_json::Value = serde_json::from_slice(&c.get("/whoami").unwrap().body).unwrap();
    // Counted down from the top: an id the zergling gave, not the pool.
    assert!(who["conn"].as_u64().is_some_and(|id| id > u64::MAX / 2), "{who}");
    let client_port = c.stream.local_addr().unwrap().port();
    pool.proc.signal(Signal::SIGHUP);
    assert!(pool.wait_reloads(1, T), "{}", pool.proc.log());
    assert!(pool.proc.wait_log("connection handed back", 1, T), "{}", pool.proc.log());
    let who2: serde_json::Value =
        serde_json::from_slice(&c.get("/whoami").expect("the connection stayed open").body).unwrap();
    assert_ne!(who2["pid"], who["pid"], "answered by the replacement");
    assert_eq!(who2["client"], format!("127.0.0.1:{client_port}"), "the pool's record comes from the socket");
    assert_eq!(who2["listener"], "http0");
}

#[test]
fn a_zergling_drained_by_sigterm_hands_its_idle_connections_to_another() {
    let pool = Pool::start(&[]);
    let a = pool.zergling(&[]);
    pool.wait_attached(1);
    let mut c = Client::connect(pool.addr);
    assert_eq!(c.get("/pid").unwrap().text(), a.pid().to_string());
    let b = pool.zergling(&[]);
    pool.wait_attached(2);
    let mut a = a;
    a.signal(Signal::SIGTERM);
    assert!(a.wait_exit(T).expect("drained zergling exits").success());
    let r = c.get("/pid").expect("the client's connection stayed open");
    assert_eq!(r.text(), b.pid().to_string());
}

#[test]
fn sigkill_with_only_idle_and_queued_connections_fails_nothing() {
    let demo_cap1 = format!("{} --capacity 1", common::demo());
    let pool = Pool::start(&["--zergling", &demo_cap1]);
    pool.wait_attached(1);
    // An idle keep-alive connection takes the zergling's only slot.
    let mut idle = Client::connect(pool.addr);
    let pid = idle.get("/pid").unwrap().text();
    // Two more requests: the zergling, at capacity, gives the idle connection back
    // to the pool (which holds it) so that they are served.
    let addr = pool.addr;
    let queued: Vec<_> = (0..2).map(|_| std::thread::spawn(move || get_once(addr, "/pid"))).collect();
    for q in queued {
        let r = q.join().unwrap().expect("queued requests are served");
        assert_eq!(r.status, 200);
    }
    assert!(pool.proc.wait_log("connection handed back", 1, T), "{}", pool.proc.log());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid.parse().unwrap()), Signal::SIGKILL).unwrap();
    // The idle connection lived in the pool: it survives the SIGKILL and its next
    // request is served by the respawned zergling.
    let r = idle.get("/pid").expect("the idle connection survives");
    assert_eq!(r.status, 200);
    assert_ne!(r.text(), pid);
    assert_eq!(get_once(pool.addr, "/").unwrap().status, 200);
}

#[test]
fn a_replacement_that_never_attaches_stops_the_chain_and_service_continues() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("broken");
    let script = dir.path().join("zergling.sh");
    std::fs::write(
        &script,
        format!("if [ -e {} ]; then exec sleep 60; fi\nexec {}\n", marker.display(), common::demo()),
    )
    .unwrap();
    let cmd = format!("/bin/sh {}", script.display());
    let pool = Pool::start(&["--zergling", &cmd, "--zerg-attach-timeout", "1"]);
    pool.wait_attached(1);
    let before = get_once(pool.addr, "/pid").unwrap().text();
    std::fs::write(&marker, b"").unwrap();
    pool.proc.signal(Signal::SIGHUP);
    assert!(pool.proc.wait_log("chain reload stopped", 1, T), "{}", pool.proc.log());
    assert!(pool.proc.wait_log("did not attach within", 1, T), "{}", pool.proc.log());
    for _ in 0..5 {
        let r = get_once(pool.addr, "/pid").unwrap();
        assert_eq!((r.status, r.text()), (200, before.clone()), "the old zergling keeps serving");
    }
}

#[test]
fn zerglings_started_outside_survive_a_pool_restart_and_reattach() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("zerg.sock");
    let keep = tempfile::tempdir().unwrap();
    let mut first = Pool::start_in(keep, sock.clone(), &[], &[]);
    let z = first.zergling(&[]);
    first.wait_attached(1);
    let mut c = Client::connect(first.addr);
    assert_eq!(c.get("/pid").unwrap().text(), z.pid().to_string());
    first.proc.signal(Signal::SIGKILL);
    first.proc.wait_exit(T).unwrap();
    // The zergling still serves the connection it owns.
    assert_eq!(c.get("/pid").expect("owned connection survives the pool").text(), z.pid().to_string());
    // A new pool on the same path: the zergling attaches to it by itself.
    let second = Pool::start_in(dir, sock, &[], &[]);
    second.wait_attached(1);
    assert_eq!(get_once(second.addr, "/pid").unwrap().text(), z.pid().to_string());
    assert!(z.wait_log("re-attaching", 1, T), "{}", z.log());
}

#[test]
fn touch_chain_reload_and_master_fifo_commands() {
    let dir = tempfile::tempdir().unwrap();
    let touch = dir.path().join("reload.touch");
    std::fs::write(&touch, b"").unwrap();
    let fifo = dir.path().join("master.fifo");
    let mut pool = Pool::start(&[
        "--zergling",
        common::demo(),
        "--touch-chain-reload",
        touch.to_str().unwrap(),
        "--master-fifo",
        fifo.to_str().unwrap(),
    ]);
    pool.wait_attached(1);
    assert!(common::wait_until(T, || fifo.exists()));
    let p0 = get_once(pool.addr, "/pid").unwrap().text();
    // Touch: a new modification time.
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options().write(true).open(&touch).unwrap().set_modified(later).unwrap();
    assert!(pool.wait_reloads(1, T), "{}", pool.proc.log());
    let p1 = get_once(pool.addr, "/pid").unwrap().text();
    assert_ne!(p0, p1);
    // FIFO: `c` reloads, `q` stops gracefully.
    std::fs::write(&fifo, b"c").unwrap();
    assert!(pool.wait_reloads(2, T), "{}", pool.proc.log());
    assert_ne!(get_once(pool.addr, "/pid").unwrap().text(), p1);
    std::fs::write(&fifo, b"q").unwrap();
    let status = pool.proc.wait_exit(T).expect("q stops the pool");
    assert_eq!(status.code(), Some(0));
    assert!(!fifo.exists(), "the FIFO is removed on exit");
}
