//! The hardening issue's defects, each reproduced against the real binaries: a
//! head no zergling can take, malformed framing on the first request, Host rules
//! on every request, descriptors leaked through the attach socket, zerglings that
//! never acknowledge, hand-backs that lie, clean exits and log floods.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::{get_once, wait_until, Client, Pool, RawZergling};
use nix::sys::signal::Signal;
use zergpool::proto::{ConnMeta, Message};

const T: Duration = Duration::from_secs(15);

/// Sends `raw` on a new connection and returns the status line of the answer
/// (empty if the connection closed without one).
fn status_line(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).lines().next().unwrap_or_default().to_owned()
}

/// Defect 3: heads whose framing hyper refuses were handed over and closed
/// silently; the pool now answers 400 itself (RFC 9112 §6.3).
#[test]
fn malformed_framing_on_the_first_request_gets_400() {
    let pool = Pool::start(&["--zergling", common::demo()]);
    pool.wait_attached(1);
    for framing in [
        "Content-Length: 3\r\nContent-Length: 5",
        "Content-Length: 3, 5",
        "Content-Length: +3",
        "Content-Length: -1",
        "Content-Length: 99999999999999999999",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: xchunked",
    ] {
        let raw = format!("POST /echo HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\nabc");
        assert_eq!(status_line(pool.addr, raw.as_bytes()), "HTTP/1.1 400 Bad Request", "{framing:?}");
    }
    let te10 = b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    assert_eq!(status_line(pool.addr, te10), "HTTP/1.1 400 Bad Request");
    // And a good one still goes through.
    let ok = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    assert_eq!(status_line(pool.addr, ok), "HTTP/1.1 200 OK");
}

/// Defect 5: Host rules (RFC 9112 §3.2, RFC 9110's host syntax) hold on the
/// first request (the pool) and on every later one (the zergling).
#[test]
fn host_rules_hold_on_every_request() {
    let pool = Pool::start(&["--zergling", common::demo()]);
    pool.wait_attached(1);
    assert_eq!(status_line(pool.addr, b"GET / HTTP/1.1\r\nHost: a b@c\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    for second in [
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a b@c\r\n\r\n",
    ] {
        let mut c = Client::connect(pool.addr);
        assert_eq!(c.get("/").unwrap().status, 200);
        c.send_raw(second.as_bytes()).unwrap();
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 400, "second request {second:?}");
    }
    // HTTP/1.0 needs no Host, on any request.
    let mut c = Client::connect(pool.addr);
    assert_eq!(c.get("/").unwrap().status, 200);
    c.send_raw(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert_eq!(c.read_response().unwrap().status, 200);
}

/// Defect 1, first half: a buffer-size whose heads could not be handed over is a
/// configuration error, not an endless loop.
#[test]
fn a_buffer_size_over_what_a_frame_carries_is_refused() {
    let out = std::process::Command::new(common::POOL)
        .args(["--check-config", "--http", "127.0.0.1:0", "--buffer-size", "1048576"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("buffer-size") && err.contains("65536"), "{err}");
    let out = std::process::Command::new(common::POOL)
        .args(["--check-config", "--http", "127.0.0.1:0", "--buffer-size", "65536"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Defect 1, second half: a connection that every zergling fails to take (here
/// each one detaches on receiving it) is answered 503 after a few attempts,
/// instead of circling between them for ever.
#[test]
fn a_connection_no_zergling_takes_is_answered_after_a_few_attempts() {
    let pool = Pool::start(&[]);
    let addr = pool.addr;
    let client = std::thread::spawn(move || status_line(addr, b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"));
    let mut conns_seen = 0;
    let started = Instant::now();
    while !client.is_finished() && started.elapsed() < T {
        let z = RawZergling::attach(&pool.sock, std::process::id(), 4);
        if let Some((Message::Conn(_), Some(_fd))) = z.recv(Duration::from_millis(500)) {
            conns_seen += 1;
        }
        drop(z); // detach without ACK: the pool must recover the connection
    }
    let status = client.join().unwrap();
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{}", pool.proc.log());
    assert_eq!(conns_seen, zergpool::dispatch::MAX_ATTEMPTS as usize, "{}", pool.proc.log());
    assert!(pool.proc.wait_log("after this many attempts", 1, T));
}

/// Defect 4: a message carrying three or more descriptors leaked two of them.
#[test]
fn messages_with_many_descriptors_leak_nothing() {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    use std::os::fd::AsRawFd;
    let pool = Pool::start(&[]);
    let files: Vec<std::fs::File> = (0..3).map(|_| std::fs::File::open("/dev/null").unwrap()).collect();
    let raws: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
    let before = pool.proc.fd_count();
    for _ in 0..100 {
        let z = RawZergling::connect(&pool.sock);
        let frame = zergpool::proto::encode(&Message::Hello {
            version: zergpool::proto::VERSION,
            pid: 1,
            capacity: 1,
            tags: Vec::new(),
            accept_direct: false,
        });
        let iov = [std::io::IoSlice::new(&frame)];
        sendmsg::<UnixAddr>(
            z.chan.as_fd().as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&raws)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        // The pool refuses it and closes the channel.
        assert!(z.recv(T).is_none());
    }
    assert!(
        wait_until(T, || pool.proc.fd_count() <= before),
        "the pool went from {before} to {} descriptors",
        pool.proc.fd_count()
    );
}

/// Defect 8: a zergling that announces a capacity and never reads is detached
/// once the ack timeout passes; its connections go to a working zergling.
#[test]
fn a_zergling_that_never_acknowledges_is_detached() {
    let pool = Pool::start(&["--zerg-ack-timeout", "1"]);
    let stuck = RawZergling::attach(&pool.sock, 1, 100_000);
    pool.wait_attached(1);
    let addr = pool.addr;
    let clients: Vec<_> = (0..20).map(|_| std::thread::spawn(move || get_once(addr, "/pid"))).collect();
    assert!(pool.proc.wait_log("zergling is stuck", 1, T), "{}", pool.proc.log());
    let good = pool.zergling(&[]);
    for c in clients {
        let r = c.join().unwrap().expect("answered");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), good.pid().to_string());
    }
    drop(stuck);
}

/// Defect 8, spawned: a stuck zergling the pool spawned is killed and replaced.
#[test]
fn a_stuck_spawned_zergling_is_replaced() {
    // It never reads its socket after WELCOME.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/stuck_zergling.py");
    let pool = Pool::start(&["--zerg-ack-timeout", "1", "--zergling", &format!("python3 {script}")]);
    pool.wait_attached(1);
    let addr = pool.addr;
    let c = std::thread::spawn(move || get_once(addr, "/pid"));
    assert!(pool.proc.wait_log("killing the stuck zergling", 1, T), "{}", pool.proc.log());
    assert!(pool.wait_event("attached", 2, T), "respawned:\n{}", pool.proc.log());
    drop(c);
}

/// Defect 9: the pool describes a handed-back connection with its own record,
/// and refuses a hand-back or a CLOSED for a connection the zergling never held.
#[test]
fn hand_backs_use_the_pools_record() {
    let pool = Pool::start(&[]);
    let liar = RawZergling::attach(&pool.sock, 1, 4);
    assert!(pool.proc.wait_log("is not the peer's (SO_PEERCRED)", 1, T), "{}", pool.proc.log());
    let addr = pool.addr;
    let client = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.get("/whoami")
    });
    let Some((Message::Conn(meta), Some(fd))) = liar.recv(T) else { panic!("no CONN") };
    liar.send(&Message::Ack { conn: meta.conn }, None);
    // Unknown ids: refused, logged.
    liar.send(&Message::Closed { conn: zergpool::proto::ConnId(999_999) }, None);
    let bogus = ConnMeta { conn: zergpool::proto::ConnId(999_998), ..meta.clone() };
    liar.send(&Message::HandBack(bogus), Some(fd.as_fd()));
    assert!(pool.proc.wait_log("CLOSED for a connection the zergling does not hold", 1, T), "{}", pool.proc.log());
    assert!(pool.proc.wait_log("HANDBACK of a connection the zergling does not hold", 1, T));
    // The real hand-back, with lies about the client.
    let lie = ConnMeta {
        peer: zergpool::proto::Endpoint::parse("6.6.6.6:666"),
        scheme: zergpool::proto::Scheme::Https,
        listener: "evil".into(),
        ..meta
    };
    liar.send(&Message::HandBack(lie), Some(fd.as_fd()));
    drop(fd);
    let _good = pool.zergling(&[]);
    let r = client.join().unwrap().expect("answered after the hand-back");
    let body = r.text();
    assert!(body.contains("\"client\":\"127.0.0.1:"), "{body}");
    assert!(body.contains("\"scheme\":\"http\""), "{body}");
    assert!(body.contains("\"listener\":\"http0\""), "{body}");
}

/// Defect 10: a spawned zergling that exits 0 (someone else asked it to drain) is
/// replaced at once, not after the crash back-off (which doubles to 16 s).
#[test]
fn a_clean_exit_is_replaced_at_once() {
    let pool = Pool::start(&["--zergling", common::demo()]);
    pool.wait_attached(1);
    let started = Instant::now();
    for round in 1..=6 {
        let pid = wait_for_child(&pool);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
        assert!(pool.proc.wait_log("exited cleanly; respawning now", round, T), "{}", pool.proc.log());
        pool.wait_attached(round + 1);
    }
    // With the back-off the six respawns alone would wait 0.25+0.5+1+2+4+8 s.
    assert!(started.elapsed() < Duration::from_secs(12), "took {:?}", started.elapsed());
}

fn wait_for_child(pool: &Pool) -> u32 {
    let mut pid = None;
    assert!(wait_until(T, || {
        // Children may belong to any of the pool's threads.
        let tasks = std::fs::read_dir(format!("/proc/{}/task", pool.proc.pid())).into_iter().flatten().flatten();
        pid = tasks
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .find_map(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()));
        pid.is_some()
    }));
    pid.unwrap()
}

/// Defect 10: per-connection warnings are rate-limited, with a count of what was
/// suppressed.
#[test]
fn bad_uwsgi_packets_do_not_flood_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::start(&["--socket", "127.0.0.1:0"]);
    drop(dir);
    let uwsgi = common::listening_addr(&pool.proc.log(), "uwsgi0").expect("uwsgi listener");
    for _ in 0..200 {
        let mut s = TcpStream::connect(uwsgi).unwrap();
        // modifier1 = 1 is not a request packet.
        let _ = s.write_all(&[1, 4, 0, 0, 1, 2, 3, 4]);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let n = pool.proc.count("bad uwsgi request");
    assert!(n >= 1 && n <= zergpool::warn_limit::PER_WINDOW as usize * 2, "{n} lines:\n{}", pool.proc.log());
}

/// Defect 2b: idle keep-alive connections never starve new ones. Four clients
/// hold the four slots of a zergling, idle; a fifth is served (the longest-idle
/// connection goes back to the pool) instead of waiting for the queue's 503.
#[test]
fn idle_connections_never_starve_new_ones() {
    let pool = Pool::start(&["--zerg-queue-timeout", "3", "--zergling", &format!("{} --capacity 4", common::demo())]);
    pool.wait_attached(1);
    let mut held: Vec<Client> = (0..4).map(|_| Client::connect(pool.addr)).collect();
    for c in &mut held {
        assert_eq!(c.get("/").unwrap().status, 200);
    }
    for _ in 0..3 {
        let r = get_once(pool.addr, "/pid").unwrap();
        assert_eq!(r.status, 200, "{}", pool.proc.log());
    }
    // The held connections still work, wherever they are now.
    for c in &mut held {
        assert_eq!(c.get("/").unwrap().status, 200);
    }
}

/// Defect 2a: the zergling closes an idle keep-alive connection after
/// `http-keepalive`.
#[test]
fn idle_keep_alive_connections_close_after_http_keepalive() {
    let pool = Pool::start(&["--http-keepalive=1", "--zergling", common::demo()]);
    pool.wait_attached(1);
    let mut c = Client::connect(pool.addr);
    assert_eq!(c.get("/").unwrap().status, 200);
    assert!(c.closed_within(Duration::from_secs(10)), "the idle connection stayed open");
}

/// Defect 2a: on a connection the zergling owns, a later request's head, a
/// stalled request body, and a client that does not read the response each time
/// out (`http-timeout`).
#[test]
fn zergling_connections_time_out_when_stalled() {
    let pool = Pool::start(&["--http-timeout", "1", "--zergling", common::demo()]);
    pool.wait_attached(1);
    // A second head that never completes.
    let mut c = Client::connect(pool.addr);
    assert_eq!(c.get("/").unwrap().status, 200);
    c.send_raw(b"GET / HTTP/1.1\r\nHo").unwrap();
    assert!(c.closed_within(Duration::from_secs(10)), "a partial head held the connection");
    // A body that stops arriving (the head was the pool's, the body the zergling's).
    let mut c = Client::connect(pool.addr);
    c.send_raw(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789").unwrap();
    assert!(c.ends_within(Duration::from_secs(10)), "a stalled body held the connection");
    // A client that sends a large body to echo and never reads the answer (far
    // larger than what the socket buffers hold).
    let mut s = TcpStream::connect(pool.addr).unwrap();
    let body = vec![b'x'; 32 << 20];
    let head = format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    assert!(pool.proc.wait_log("the response made no progress within http-timeout", 1, T), "{}", pool.proc.log());
    drop(s);
}

/// Defect 2a, in the pool: a client that stops reading a static download is
/// dropped after `http-timeout`.
#[test]
fn static_downloads_to_a_client_that_does_not_read_time_out() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.bin"), vec![7u8; 64 << 20]).unwrap();
    let map = format!("/files={}", dir.path().display());
    let pool = Pool::start(&["--http-timeout", "1", "--static-map", &map]);
    let mut s = TcpStream::connect(pool.addr).unwrap();
    s.write_all(b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(pool.proc.wait_log("static response failed", 1, T), "{}", pool.proc.log());
    assert!(pool.proc.log().contains("http-timeout"), "{}", pool.proc.log());
}

/// Requirement 6: at `zerg-max-connections` the pool stops accepting, and the
/// connection that has waited longest for its head is closed to make room.
/// Three clients hold the three slots with heads they never finish, started a
/// moment apart; a fourth is served, the oldest of the three is closed, and the
/// others stay open.
#[test]
fn at_the_connection_limit_the_longest_waiting_head_makes_room() {
    let pool = Pool::start(&["--zerg-max-connections", "3", "--zergling", common::demo()]);
    pool.wait_attached(1);
    assert!(pool.proc.log().contains("max_connections=3"), "{}", pool.proc.log());
    let mut slow: Vec<Client> = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(pool.addr);
        c.send_raw(b"GET / HTTP/1.1\r\nHo").unwrap();
        slow.push(c);
        std::thread::sleep(Duration::from_millis(300));
    }
    let started = Instant::now();
    let r = get_once(pool.addr, "/pid").unwrap();
    assert_eq!(r.status, 200, "{}", pool.proc.log());
    assert!(started.elapsed() < Duration::from_secs(5), "the new client waited {:?}", started.elapsed());
    assert!(slow[0].closed_within(Duration::from_secs(1)), "the longest-waiting head was not closed");
    for c in &mut slow[1..] {
        assert!(!c.closed_within(Duration::from_millis(200)), "a younger head was closed");
    }
}

/// Requirement 6: connections that are not waiting for a head (here queued, no
/// zergling attached) are never closed to make room; past the limit, new clients
/// are not accepted (the pool's descriptors do not grow) and are served, in the
/// end, when a zergling attaches.
#[test]
fn past_the_connection_limit_new_clients_wait_in_the_backlog() {
    let pool = Pool::start(&["--zerg-max-connections", "2"]);
    let send = |addr| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    let queued: Vec<TcpStream> = (0..2).map(|_| send(pool.addr)).collect();
    assert!(wait_until(T, || pool.proc.count("queued: no zergling") == 2), "{}", pool.proc.log());
    let before = pool.proc.fd_count();
    let waiting: Vec<TcpStream> = (0..10).map(|_| send(pool.addr)).collect();
    assert!(pool.proc.wait_log("connection limit reached", 1, T), "{}", pool.proc.log());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pool.proc.fd_count(), before, "the pool accepted past its limit");
    assert_eq!(pool.proc.count("queued: no zergling"), 2);
    let _z = pool.zergling(&[]);
    for mut s in queued.into_iter().chain(waiting) {
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 200"), "{out:?}\n{}", pool.proc.log());
    }
}

/// Requirement 6: `max-fd` sets the descriptor limit; a connection limit that
/// does not fit in it with the reserve kept is lowered, and the log says so.
#[test]
fn max_fd_and_max_connections_are_checked() {
    let pool = Pool::start(&["--max-fd", "1000", "--zerg-max-connections", "5000"]);
    let log = pool.proc.log();
    assert!(log.contains("zerg-max-connections is more than the descriptor limit leaves room for"), "{log}");
    assert!(log.contains("connection limit max_connections=811 descriptors=1000"), "{log}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", pool.proc.pid())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    assert_eq!(line.split_whitespace().nth(3), Some("1000"), "{line}");
}

/// A graceful stop closes the idle keep-alive connections the pool holds (after
/// a static response) at once, instead of waiting for them up to reload-mercy.
#[test]
fn a_graceful_stop_does_not_wait_for_idle_keep_alive_connections() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), b"a").unwrap();
    let map = format!("/files={}", dir.path().display());
    let mut pool = Pool::start(&["--static-map", &map, "--reload-mercy", "20"]);
    let mut c = Client::connect(pool.addr);
    assert_eq!(c.get("/files/a.txt").unwrap().status, 200);
    let started = Instant::now();
    pool.proc.signal(Signal::SIGTERM);
    assert!(pool.proc.wait_exit(T).is_some_and(|s| s.success()), "{}", pool.proc.log());
    assert!(started.elapsed() < Duration::from_secs(5), "the stop waited {:?}", started.elapsed());
    assert!(c.closed_within(Duration::from_secs(1)));
}

/// Protocol version 4 (version 2: typed static-map in WELCOME, typed
/// direct-accept flag in HELLO; 3: LOAD; 4: STATS, LOG, LOGFILE): a zergling that speaks an older version
/// is refused with a message naming both versions, and never welcomed.
#[test]
fn a_zergling_speaking_another_protocol_version_is_told_which_one_the_pool_speaks() {
    let pool = Pool::start(&[]);
    let z = RawZergling::connect(&pool.sock);
    z.send(&Message::Hello { version: 2, pid: 1, capacity: 1, tags: Vec::new(), accept_direct: false }, None);
    match z.recv(T) {
        Some((Message::Refuse { reason }, _)) => {
            assert!(reason.contains("version 2") && reason.contains("version 4"), "{reason}");
        }
        other => panic!("expected REFUSE, got {other:?}"),
    }
    assert_eq!(pool.attached(), 0);
}

/// WELCOME carries static-map as typed fields: a raw zergling reads the pool's
/// mounts, index names and expiry rules without parsing uWSGI option text.
#[test]
fn welcome_carries_static_map_as_typed_fields() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let map = format!("/files={}", root.display());
    let pool = Pool::start(&["--static-map", &map, "--static-index", "index.html", "--static-expires", r"\.css$ 3600"]);
    let z = RawZergling::connect(&pool.sock);
    z.send(
        &Message::Hello {
            version: zergpool::proto::VERSION,
            pid: 1,
            capacity: 1,
            tags: Vec::new(),
            accept_direct: false,
        },
        None,
    );
    let Some((Message::Welcome { statics, .. }, _)) = z.recv(T) else { panic!("no WELCOME") };
    assert_eq!(statics.maps.len(), 1);
    assert_eq!((statics.maps[0].mount.as_str(), statics.maps[0].root.as_str()), ("/files", &*root.to_string_lossy()));
    assert_eq!(statics.index, vec!["index.html".to_owned()]);
    assert_eq!(statics.expires.len(), 1);
    assert_eq!(
        (statics.expires[0].regex.as_str(), statics.expires[0].seconds, statics.expires[0].by_uri),
        (r"\.css$", 3600, false)
    );
}

/// `buffer-size` holds on every request, not only the first the pool reads: the
/// zergling's HTTP server gets the pool's limit in WELCOME, so a later head that
/// is too large gets the same 431 (and what a hand-back carries stays bounded).
#[test]
fn buffer_size_holds_for_later_requests_too() {
    let pool = Pool::start(&["--buffer-size", "16384", "--zergling", common::demo()]);
    pool.wait_attached(1);
    let mut c = Client::connect(pool.addr);
    assert_eq!(c.get("/").unwrap().status, 200);
    let big = format!("X-Big: {}\r\n", "a".repeat(40 * 1024));
    let r = c.request("GET", "/", &big, b"");
    let status = r.map(|r| r.status).unwrap_or(0);
    assert_eq!(status, 431, "{}", pool.proc.log());
    // Below the limit is fine.
    let mut c = Client::connect(pool.addr);
    assert_eq!(c.get("/").unwrap().status, 200);
    let ok = format!("X-Ok: {}\r\n", "a".repeat(8 * 1024));
    assert_eq!(c.request("GET", "/", &ok, b"").unwrap().status, 200);
}
