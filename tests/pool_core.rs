//! The core issue's behaviour through the real binaries: hand-off, balancing,
//! re-dispatch of unacknowledged connections, the queue and its 503s, bad heads,
//! the attach door, descriptor hygiene, and the graceful stop.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use common::{get_once, wait_until, Client, Pool, RawZergling};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(15);

#[test]
fn keep_alive_and_new_connections_reach_both_zerglings() {
    let pool = Pool::start(&["--zergling", common::demo(), "--zergling", common::demo()]);
    pool.wait_attached(2);
    let mut c = Client::connect(pool.addr);
    for _ in 0..20 {
        let r = c.get("/").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "Hello, world!");
        assert_eq!(r.header("content-type"), Some("text/plain"));
    }
    // Least outstanding wins: while `c` holds one zergling, every new connection
    // would go to the other. Once it is closed, ties rotate.
    drop(c);
    let mut pids = HashSet::new();
    for _ in 0..50 {
        let r = get_once(pool.addr, "/pid").unwrap();
        assert_eq!(r.status, 200);
        pids.insert(r.text());
    }
    assert_eq!(pids.len(), 2, "both zerglings should answer over 50 connections: {pids:?}");
    let r = Client::connect(pool.addr).request("POST", "/echo", "", b"some body bytes").unwrap();
    assert_eq!(r.text(), "some body bytes");
}

#[test]
fn a_zergling_dying_before_ack_loses_nothing() {
    let pool = Pool::start(&[]);
    // A zergling that speaks the documented protocol, takes one connection and
    // goes away without acknowledging it (its socket and the descriptor closed).
    let faulty = RawZergling::attach(&pool.sock, std::process::id(), 1);
    pool.wait_attached(1);
    let addr = pool.addr;
    let req = std::thread::spawn(move || get_once(addr, "/pid"));
    match faulty.recv(T) {
        Some((zergpool::proto::Message::Conn(_), Some(_fd))) => {}
        other => panic!("expected a CONN with its descriptor, got {other:?}"),
    }
    drop(faulty);
    assert!(pool.proc.wait_log("recovering connections", 1, T), "{}", pool.proc.log());
    let good = pool.zergling(&[]);
    let r = req.join().unwrap().expect("the request must be answered");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), good.pid().to_string(), "answered by the second zergling");
}

#[test]
fn without_zerglings_a_request_waits_then_completes() {
    let pool = Pool::start(&[]);
    let addr = pool.addr;
    let req = std::thread::spawn(move || get_once(addr, "/"));
    assert!(pool.proc.wait_log("queued", 1, T), "{}", pool.proc.log());
    let _z = pool.zergling(&[]);
    let r = req.join().unwrap().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, world!"));
}

#[test]
fn queue_timeout_and_full_queue_give_503() {
    let pool = Pool::start(&["--zerg-queue-timeout", "1", "--zerg-queue", "1"]);
    let addr = pool.addr;
    let waiting = std::thread::spawn(move || get_once(addr, "/"));
    assert!(pool.proc.wait_log("queued", 1, T), "{}", pool.proc.log());
    // The queue holds one: the next connection is refused at once.
    let full = get_once(pool.addr, "/").unwrap();
    assert_eq!(full.status, 503);
    assert!(full.header("retry-after").is_some());
    // The log arrives through a pipe: wait for it rather than race it.
    assert!(pool.proc.wait_log("queue full", 1, T), "{}", pool.proc.log());
    // The waiting one times out after a second.
    let timed_out = waiting.join().unwrap().unwrap();
    assert_eq!(timed_out.status, 503);
    assert_eq!(timed_out.header("retry-after"), Some("5"));
    assert_eq!(timed_out.header("connection"), Some("close"));
    assert!(pool.proc.wait_log("no zergling took the connection in time", 1, T), "{}", pool.proc.log());
}

#[test]
fn bad_heads_get_400_431_408_and_others_are_served_meanwhile() {
    let pool = Pool::start(&["--http-timeout", "2", "--zergling", common::demo()]);
    pool.wait_attached(1);
    // A slow client holds a connection open with half a head.
    let mut slow = Client::connect(pool.addr);
    slow.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();

    let mut bad = Client::connect(pool.addr);
    bad.send_raw(b"GET / HTTP/1.1\r\nHost x\r\n\r\n").unwrap();
    let r = bad.read_response().unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection"), Some("close"));

    let mut big = Client::connect(pool.addr);
    let head = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
    let _ = big.send_raw(head.as_bytes());
    assert_eq!(big.read_response().unwrap().status, 431);

    // Served while the slow one is still waiting.
    assert_eq!(get_once(pool.addr, "/").unwrap().status, 200);
    let r = slow.read_response().unwrap();
    assert_eq!(r.status, 408);
    assert!(slow.closed_within(Duration::from_secs(5)));
}

#[test]
fn an_attach_from_a_uid_not_allowed_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root to run a zergling as another user");
        return;
    }
    let pool = Pool::start(&["--chmod-zerg-server", "666"]);
    std::fs::set_permissions(pool.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = std::process::Command::new(common::demo());
    std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
    cmd.arg("--attach").arg(&pool.sock);
    let mut z = common::Proc::spawn(cmd, false);
    let status = z.wait_exit(T).expect("refused zergling exits");
    assert!(!status.success());
    assert!(z.log().contains("not allowed"), "{}", z.log());
    assert!(pool.proc.wait_log("attach refused", 1, T), "{}", pool.proc.log());
    assert_eq!(pool.attached(), 0);
}

#[test]
fn descriptors_return_to_baseline_after_1000_connections() {
    let pool = Pool::start_with(&["--zergling", common::demo()], &[("ZERGPOOL_LOG", "info")]);
    pool.wait_attached(1);
    assert_eq!(get_once(pool.addr, "/").unwrap().status, 200);
    let baseline = pool.proc.fd_count();
    for i in 0..1000 {
        let r = get_once(pool.addr, "/").unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status, 200);
    }
    // A few keep-alive connections closed by the client too.
    for _ in 0..10 {
        let mut c = Client::connect(pool.addr);
        c.get("/").unwrap();
    }
    assert!(
        wait_until(T, || pool.proc.fd_count() <= baseline),
        "descriptors: baseline {baseline}, now {}",
        pool.proc.fd_count()
    );
}

#[test]
fn sigterm_lets_requests_in_flight_complete_then_exits_0() {
    let mut pool = Pool::start(&["--zergling", common::demo(), "--zergling", common::demo()]);
    pool.wait_attached(2);
    let addr = pool.addr;
    let reqs: Vec<_> = (0..4).map(|_| std::thread::spawn(move || get_once(addr, "/sleep?ms=500"))).collect();
    assert!(pool.proc.wait_log("dispatched", 4, T), "{}", pool.proc.log());
    pool.proc.signal(Signal::SIGTERM);
    for r in reqs {
        let r = r.join().unwrap().expect("in-flight request completes");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "slept 500 ms");
    }
    let status = pool.proc.wait_exit(T).expect("pool exits");
    assert_eq!(status.code(), Some(0), "{}", pool.proc.log());
    assert!(!pool.sock.exists(), "the attach socket file is removed on exit");
    let _ = std::io::stderr().flush();
}

#[test]
fn a_spawned_zergling_that_dies_is_respawned_and_its_output_is_logged() {
    let pool = Pool::start(&["--zergling", common::demo()]);
    pool.wait_attached(1);
    let first = get_once(pool.addr, "/pid").unwrap().text();
    assert!(pool.proc.wait_log(&format!("[zergling0 pid {first}]"), 1, T), "output is prefixed: {}", pool.proc.log());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first.parse().unwrap()), Signal::SIGKILL).unwrap();
    assert!(pool.proc.wait_log("exited; respawning", 1, T), "{}", pool.proc.log());
    pool.wait_attached(2);
    let second = get_once(pool.addr, "/pid").unwrap();
    assert_eq!(second.status, 200);
    assert_ne!(second.text(), first);
}

#[test]
fn hook_master_start_remaps_a_signal_and_sigusr2_is_harmless() {
    let mut pool = Pool::start(&["--hook-master-start", "unix_signal:10 gracefully_kill_them_all"]);
    pool.proc.signal(Signal::SIGUSR2);
    assert!(pool.proc.wait_log("signal ignored", 1, T), "{}", pool.proc.log());
    assert!(pool.proc.child.try_wait().unwrap().is_none(), "SIGUSR2 must not kill the pool");
    pool.proc.signal(Signal::SIGUSR1);
    let status = pool.proc.wait_exit(T).expect("SIGUSR1 now stops gracefully");
    assert_eq!(status.code(), Some(0), "{}", pool.proc.log());
}

#[test]
fn the_attach_socket_is_0600_a_stale_file_is_replaced_and_a_live_one_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("zerg.sock");
    // A stale socket file: bound, then its listener gone.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let keep = tempfile::tempdir().unwrap();
    let pool = Pool::start_in(keep, sock.clone(), &["--listen", "1000000000"], &[]);
    assert!(pool.proc.wait_log("replacing a stale zerg-server socket file", 1, T), "{}", pool.proc.log());
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The backlog asked for is larger than net.core.somaxconn: clamped, with a warning.
    assert!(pool.proc.wait_log("somaxconn", 1, T), "{}", pool.proc.log());
    // A second pool on the live socket refuses to start, with a clear message.
    let out = std::process::Command::new(common::POOL)
        .args(["--http", "127.0.0.1:0", "--zerg-server"])
        .arg(&sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another process is listening"), "{err}");
}

#[test]
fn sigquit_stops_at_once_and_a_second_sigterm_too() {
    let mut pool = Pool::start(&["--zergling", common::demo()]);
    pool.wait_attached(1);
    let addr = pool.addr;
    let slow = std::thread::spawn(move || get_once(addr, "/sleep?ms=20000"));
    assert!(pool.proc.wait_log("dispatched", 1, T), "{}", pool.proc.log());
    pool.proc.signal(Signal::SIGTERM);
    assert!(pool.proc.wait_log("stopping", 1, T));
    pool.proc.signal(Signal::SIGTERM);
    let status = pool.proc.wait_exit(Duration::from_secs(10)).expect("a second SIGTERM stops at once");
    assert_eq!(status.code(), Some(0));
    assert!(pool.proc.wait_log("second stop request", 1, T), "{}", pool.proc.log());
    assert!(slow.join().unwrap().is_err(), "the 20 s request was cut, as an immediate stop does");

    let mut pool = Pool::start(&[]);
    pool.proc.signal(Signal::SIGQUIT);
    let status = pool.proc.wait_exit(Duration::from_secs(10)).expect("SIGQUIT stops at once");
    assert_eq!(status.code(), Some(0));
    assert!(pool.proc.wait_log("Immediate", 1, T), "{}", pool.proc.log());
}
