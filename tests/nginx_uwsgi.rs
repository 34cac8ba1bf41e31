//! The uwsgi protocol (issue 6) through the real binaries and a real nginx:
//! nginx (`uwsgi_pass`, Debian's `/etc/nginx/uwsgi_params`) in front of the pool's
//! uwsgi listener, TCP and Unix-socket variants, zerglings behind it.
//!
//! * the request matrix through nginx: `GET /`, a query string, many headers with a
//!   repeated one, `POST /echo` with 1 MiB in one piece and chunked (nginx de-chunks),
//!   `/whoami` (protocol `uwsgi`, the client address nginx saw), a static-map file
//!   served by the pool itself, `HEAD`, and a packet over `buffer-size` (nginx answers
//!   502, the pool says why) next to a pool whose `buffer-size` lets it through;
//! * a chain reload of spawned zerglings under a bounded load through nginx: no 502,
//!   no 504, no error, and the zerglings really are new processes afterwards;
//! * malformed packets straight to the pool's uwsgi socket (no nginx): HTTP sent to
//!   it, a block over `buffer-size`, an empty key, a length running past the block;
//!   each closes its connection with a log line saying what was wrong, while a real
//!   packet captured from nginx (`crates/core/tests/data/uwsgi/get-root.bin`) is still served.
//!
//! Each test starts its own nginx from `config/nginx/test-nginx.conf.template` in a
//! temporary prefix (pid, logs and temp folders inside it) on a free loopback port,
//! waits for it by polling a connect, and kills it by pid when dropped. Without nginx
//! the tests print SKIP (in CI, `require_program` fails them instead).

mod common;

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nginx::{free_port, Nginx};
use common::Pool;
use nix::sys::signal::Signal;
use serde_json::Value;

const T: Duration = Duration::from_secs(15);
/// `GET /` exactly as nginx 1.22.1 wrote it on its `uwsgi_pass` connection.
const CAPTURED_GET_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/core/tests/data/uwsgi/get-root.bin");

// ---------------------------------------------------------------------------
// nginx (common::nginx)
// ---------------------------------------------------------------------------

/// Skips (prints SKIP) when nginx is missing outside CI.
fn have_nginx() -> bool {
    common::require_program("nginx")
}

// ---------------------------------------------------------------------------
// A small HTTP client: one request per connection, read to EOF
// ---------------------------------------------------------------------------

/// One response, framed exactly: the bytes after the head must be the whole body
/// (`Content-Length` or chunked), or nothing at all for `HEAD`.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The client's own address (what nginx sees as the peer).
    local: SocketAddr,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
}

/// Sends one request with `Connection: close` (plus `Host: localhost` unless
/// `headers` has a Host) and reads the response to EOF.
fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<Reply> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_nodelay(true)?;
    let local = s.local_addr()?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str("Host: localhost\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    s.write_all(&out)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_reply(&raw, method == "HEAD", local)
}

fn get(addr: SocketAddr, target: &str) -> io::Result<Reply> {
    request(addr, "GET", target, &[], b"")
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn parse_reply(raw: &[u8], head_only: bool, local: SocketAddr) -> io::Result<Reply> {
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| invalid(format!("no complete head in {} bytes", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let value = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let body = if head_only {
        if !rest.is_empty() {
            return Err(invalid(format!("{} bytes after the head of a HEAD response", rest.len())));
        }
        Vec::new()
    } else if value("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(cl) = value("content-length") {
        let cl: usize = cl.parse().map_err(|_| invalid(format!("bad Content-Length {cl:?}")))?;
        if rest.len() != cl {
            return Err(invalid(format!("Content-Length {cl} but {} body bytes before EOF", rest.len())));
        }
        rest.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Reply { status, headers, body, local })
}

fn dechunk(mut b: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = find(b, b"\r\n").ok_or_else(|| invalid("truncated chunk size".into()))?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 || &b[size..size + 2] != b"\r\n" {
            return Err(invalid("truncated chunk".into()));
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `curl` uploading `file` to `url` (with `extra` arguments); returns the status and
/// the body it saved. curl sends `Expect: 100-continue` for such bodies, as browsers'
/// and scripts' uploads through nginx do.
fn curl_upload(url: &str, file: &Path, extra: &[&str], out: &Path) -> (u16, Vec<u8>) {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-o"])
        .arg(out)
        .args(["-w", "%{http_code}", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let code = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0);
    assert!(o.status.success(), "curl failed: {}", String::from_utf8_lossy(&o.stderr));
    (code, fs::read(out).unwrap_or_default())
}

// ---------------------------------------------------------------------------
// The request matrix, run for each variant
// ---------------------------------------------------------------------------

/// Bytes of the static-map fixture.
const STATIC_BODY: &[u8] = b"static from the pool\n";

/// A folder for `--static-map /static=DIR` with `hello.txt`.
fn static_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("www");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("hello.txt"), STATIC_BODY).unwrap();
    dir
}

/// `--static-map /static=DIR` for a fresh [`static_dir`] under `parent`, and the path
/// of a uwsgi Unix socket beside it.
fn static_map_and_socket(parent: &Path) -> (String, String) {
    let www = static_dir(parent);
    let sock = parent.join("uwsgi.sock");
    (format!("/static={}", www.display()), sock.to_str().expect("a UTF-8 temporary path").to_owned())
}

/// 1 MiB of varied bytes (every byte value, no period matching a buffer size).
fn mib() -> Vec<u8> {
    (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

/// Everything a client of nginx should see, whichever uwsgi socket nginx uses.
/// `listener` is the pool listener nginx reaches.
/// Who accepts the uwsgi connections in a test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Accepting {
    /// The pool, which hands each connection over.
    Pool,
    /// The zerglings themselves (`--zerg-direct-accept`).
    Zerglings,
}

fn check_through_nginx(nginx: &Nginx, pool: &Pool, listener: &str, accepting: Accepting) {
    let addr = nginx.addr();

    // GET /
    let r = get(addr, "/").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, world!"), "{r:?}");

    // HEAD /: the head of GET /, no body.
    let r = request(addr, "HEAD", "/", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-type"), Some("text/plain"), "{r:?}");

    // /whoami with a query string: the protocol, the client address nginx saw.
    let r = get(addr, "/whoami?a=1&b=2").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let w = r.json();
    assert_eq!(w["protocol"], "uwsgi", "{w}");
    assert_eq!(w["kind"], "uwsgi", "{w}");
    assert_eq!(w["listener"], listener, "{w}");
    assert_eq!(w["method"], "GET", "{w}");
    assert_eq!(w["path"], "/whoami", "{w}");
    assert_eq!(w["query"], "a=1&b=2", "{w}");
    assert_eq!(w["scheme"], "http", "{w}");
    assert_eq!(w["client"], r.local.to_string(), "REMOTE_ADDR:REMOTE_PORT is this client's address: {w}");
    // Who accepted the connection shows in its id (see zergling-demo's /whoami).
    let conn = w["conn"].as_u64().expect("a connection id");
    match accepting {
        Accepting::Pool => assert!(conn < 1 << 63, "handed over by the pool: {w}"),
        Accepting::Zerglings => assert!(conn >= 1 << 63, "accepted by the zergling itself: {w}"),
    }

    // A query string with escapes arrives as sent.
    let r = get(addr, "/whoami?q=zerg+pool&x=%2F&empty=").unwrap();
    let w = r.json();
    assert_eq!((w["path"].as_str(), w["query"].as_str()), (Some("/whoami"), Some("q=zerg+pool&x=%2F&empty=")), "{w}");

    // Many headers, one repeated, one empty; the Host arrives as HTTP_HOST.
    let extra: Vec<(String, String)> =
        (0..40).map(|i| (format!("X-Header-{i}"), format!("value {i} {}", "v".repeat(i)))).collect();
    let mut headers: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    headers.extend([
        ("Host", "zerg.example"),
        ("X-Foo", "first"),
        ("X-Foo", "second"),
        ("X-Empty", ""),
        ("Cookie", "a=1; b=2"),
        ("Accept", "application/json"),
    ]);
    let r = request(addr, "GET", "/whoami?many=headers", &headers, b"").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let w = r.json();
    assert_eq!((w["host"].as_str(), w["query"].as_str()), (Some("zerg.example"), Some("many=headers")), "{w}");
    // Every header reaches the application, the repeated one twice and in order.
    let r = request(addr, "GET", "/headers", &headers, b"").unwrap();
    let got: Vec<(String, String)> = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()));
    let values = |name: &str| -> Vec<&str> { got.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect() };
    assert_eq!(values("x-foo"), ["first", "second"], "{got:?}");
    assert_eq!(values("x-empty"), [""], "{got:?}");
    assert_eq!(values("cookie"), ["a=1; b=2"], "{got:?}");
    for (k, v) in &extra {
        // Trailing spaces are optional whitespace in HTTP: not part of the value.
        assert_eq!(values(&k.to_ascii_lowercase()), [v.trim_end()], "{got:?}");
    }

    // POST /echo, small and then 1 MiB in one piece.
    let r = request(addr, "POST", "/echo", &[("Content-Type", "application/x-www-form-urlencoded")], b"hello=world")
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello=world"), "{r:?}");
    let big = mib();
    let r = request(addr, "POST", "/echo", &[], &big).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == big, "1 MiB echoed: {} bytes back", r.body.len());
    // An empty POST.
    let r = request(addr, "POST", "/echo", &[], b"").unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0), "{r:?}");

    // The same 1 MiB with curl, plain and chunked (nginx de-chunks it and sends
    // CONTENT_LENGTH, still forwarding HTTP_TRANSFER_ENCODING, which must be ignored).
    let file = nginx.prefix.path().join("upload.bin");
    fs::write(&file, &big).unwrap();
    let out = nginx.prefix.path().join("echoed.bin");
    let (code, body) = curl_upload(&nginx.url("/echo"), &file, &[], &out);
    assert_eq!(code, 200);
    assert!(body == big, "curl 1 MiB: {} bytes back", body.len());
    let (code, body) = curl_upload(&nginx.url("/echo"), &file, &["-H", "Transfer-Encoding: chunked"], &out);
    assert_eq!(code, 200);
    assert!(body == big, "chunked 1 MiB: {} bytes back", body.len());

    // A static-map file, served by the pool itself (by PATH_INFO).
    let r = get(addr, "/static/hello.txt").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, STATIC_BODY);
    assert!(r.header("content-type").is_some_and(|v| v.starts_with("text/plain")), "{r:?}");
    let r = request(addr, "HEAD", "/static/hello.txt", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.is_empty());
    if accepting == Accepting::Pool {
        // The pool served it: no zergling saw a /static request.
        assert!(
            pool.proc.count("dynamic uwsgi request") > 0 && !pool.proc.log().contains("path=\"/static/hello.txt\""),
            "the static file went to a zergling:\n{}",
            pool.proc.log()
        );
    } else {
        // The pool saw no request at all: the zergling served the file.
        assert_eq!(pool.proc.count("dynamic uwsgi request"), 0, "{}", pool.proc.log());
    }
    // Not in the map: the application answers.
    let r = get(addr, "/nope").unwrap();
    assert_eq!(r.status, 404, "{r:?}");

    let errors = nginx.error_log();
    assert!(!errors.contains("[error]"), "nginx logged errors:\n{errors}");
}

#[test]
fn through_nginx_over_tcp() {
    if !have_nginx() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let www = static_dir(dir.path());
    let map = format!("/static={}", www.display());
    let pool = Pool::start(&["--socket", "127.0.0.1:0", "--static-map", &map]);
    let uwsgi = common::listening_addr(&pool.proc.log(), "uwsgi0").expect("uwsgi0 address in the log");
    let _z = pool.zergling(&[]);
    pool.wait_attached(1);
    let nginx = Nginx::start(&uwsgi.to_string());
    check_through_nginx(&nginx, &pool, "uwsgi0", Accepting::Pool);

    // The pool refuses a packet over buffer-size.
    check_oversize_packet_refused(&nginx, &pool);
}

/// Headers making a packet over buffer-size (4096 by default): whoever reads the
/// packet refuses it and says why; nginx answers 502; the next request is served.
fn check_oversize_packet_refused(nginx: &Nginx, pool: &Pool) {
    let cookie = "c".repeat(6000);
    let r = request(nginx.addr(), "GET", "/", &[("Cookie", &cookie)], b"").unwrap();
    assert_eq!(r.status, 502, "{r:?}");
    assert!(pool.proc.wait_log("invalid request block size", 1, T), "{}", pool.proc.log());
    let r = get(nginx.addr(), "/").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, world!"));
}

#[test]
fn through_nginx_over_a_unix_socket() {
    if !have_nginx() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (map, sock_arg) = static_map_and_socket(dir.path());
    // A larger buffer-size than the default: the packet refused over TCP passes here.
    let pool = Pool::start(&[
        "--uwsgi-socket",
        &sock_arg,
        "--chmod-socket=660",
        "--static-map",
        &map,
        "--buffer-size",
        "16384",
    ]);
    let mode = fs::metadata(&sock_arg).expect("the pool created the socket").permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "chmod-socket=660: mode {mode:o}");
    let _z = pool.zergling(&[]);
    pool.wait_attached(1);
    let nginx = Nginx::start(&format!("unix:{sock_arg}"));
    check_through_nginx(&nginx, &pool, "uwsgi0", Accepting::Pool);

    let cookie = "c".repeat(6000);
    let r = request(nginx.addr(), "GET", "/whoami", &[("Cookie", &cookie)], b"").unwrap();
    assert_eq!(r.status, 200, "buffer-size 16384 takes a 6 KB packet: {r:?}\n{}", pool.proc.log());
    let w = r.json();
    // Over a Unix socket nginx still reports the TCP client it saw.
    assert_eq!(w["client"], r.local.to_string(), "{w}");
}

#[test]
fn through_nginx_with_direct_accept_over_tcp() {
    if !have_nginx() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let www = static_dir(dir.path());
    let map = format!("/static={}", www.display());
    let pool = Pool::start(&[
        "--socket",
        "127.0.0.1:0",
        "--static-map",
        &map,
        "--zerg-direct-accept",
        "--zergling",
        common::demo(),
    ]);
    let uwsgi = common::listening_addr(&pool.proc.log(), "uwsgi0").expect("uwsgi0 address in the log");
    pool.wait_attached(1);
    assert!(pool.proc.wait_log("the pool pauses accepting", 1, T), "{}", pool.proc.log());
    let nginx = Nginx::start(&uwsgi.to_string());
    check_through_nginx(&nginx, &pool, "uwsgi0", Accepting::Zerglings);

    // The zergling applies buffer-size (sent with LISTEN) and says why it refused.
    check_oversize_packet_refused(&nginx, &pool);
}

#[test]
fn through_nginx_with_direct_accept_over_a_unix_socket() {
    if !have_nginx() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (map, sock_arg) = static_map_and_socket(dir.path());
    let pool = Pool::start(&[
        "--uwsgi-socket",
        &sock_arg,
        "--chmod-socket",
        "--static-map",
        &map,
        "--zerg-direct-accept",
        "--zergling",
        common::demo(),
    ]);
    pool.wait_attached(1);
    assert!(pool.proc.wait_log("the pool pauses accepting", 1, T), "{}", pool.proc.log());
    let nginx = Nginx::start(&format!("unix:{sock_arg}"));
    check_through_nginx(&nginx, &pool, "uwsgi0", Accepting::Zerglings);
}

/// Sends the captured `GET /` packet on a new connection, without reading.
fn send_captured(uwsgi: SocketAddr) -> TcpStream {
    let packet = fs::read(CAPTURED_GET_ROOT).expect("captured packet");
    let mut s = TcpStream::connect(uwsgi).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(&packet).unwrap();
    s
}

fn read_answer(mut s: TcpStream) -> String {
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

/// With zerg-direct-accept, the pool still accepts (and queues) while no ready
/// zergling accepts, before the first one attaches and after the last one drains;
/// in between it stays out of the way.
#[test]
fn with_direct_accept_the_pool_takes_over_while_no_zergling_accepts() {
    let pool = Pool::start(&["--socket", "127.0.0.1:0", "--zerg-direct-accept"]);
    let uwsgi = common::listening_addr(&pool.proc.log(), "uwsgi0").expect("uwsgi0 address in the log");

    // No zergling: the pool accepts and queues.
    let waiting = send_captured(uwsgi);
    assert!(pool.proc.wait_log("queued: no zergling can take it now", 1, T), "{}", pool.proc.log());
    let mut z = pool.zergling(&[]);
    pool.wait_attached(1);
    let answer = read_answer(waiting);
    assert!(answer.ends_with("Hello, world!"), "the queued request: {answer}");

    // A zergling accepts: the pool pauses, and requests never pass through it.
    assert!(pool.proc.wait_log("the pool pauses accepting", 1, T), "{}", pool.proc.log());
    let queued_before = pool.proc.count("queued: no zergling can take it now");
    for _ in 0..5 {
        assert!(serve_captured(uwsgi).ends_with("Hello, world!"));
    }
    assert_eq!(
        pool.proc.count("dynamic uwsgi request"),
        1,
        "only the queued one went through the pool:\n{}",
        pool.proc.log()
    );

    // The zergling drains and leaves: the pool accepts and queues again.
    z.signal(Signal::SIGTERM);
    assert!(pool.proc.wait_log("the pool accepts (and queues) again", 1, T), "{}", pool.proc.log());
    assert!(z.wait_exit(T).is_some(), "the zergling did not exit");
    let waiting = send_captured(uwsgi);
    assert!(
        common::wait_until(T, || pool.proc.count("queued: no zergling can take it now") > queued_before),
        "{}",
        pool.proc.log()
    );
    let _z2 = pool.zergling(&[]);
    let answer = read_answer(waiting);
    assert!(answer.ends_with("Hello, world!"), "the request queued after the drain: {answer}");
}

#[test]
fn direct_accept_without_a_uwsgi_listener_says_it_has_no_effect() {
    let pool = Pool::start(&["--zerg-direct-accept"]);
    assert!(pool.proc.wait_log("zerg-direct-accept applies to uwsgi listeners only", 1, T), "{}", pool.proc.log());
}

/// A zergling that accepts by itself never holds more connections than its
/// capacity: past it, connections wait in the listen queue.
#[test]
fn with_direct_accept_a_zergling_takes_no_more_than_its_capacity() {
    let pool = Pool::start(&["--socket", "127.0.0.1:0", "--zerg-direct-accept"]);
    let uwsgi = common::listening_addr(&pool.proc.log(), "uwsgi0").expect("uwsgi0 address in the log");
    let z = pool.zergling(&["--capacity", "1"]);
    pool.wait_attached(1);
    assert!(z.wait_log("accepting on the pool's listener directly", 1, T), "{}", z.log());

    // The one connection it may hold: accepted, its packet never completes.
    let mut stalled = TcpStream::connect(uwsgi).unwrap();
    stalled.write_all(&[0, 0x10]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // The next one waits: no answer while the first is open.
    let mut waiting = send_captured(uwsgi);
    waiting.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let mut byte = [0u8; 1];
    let early = waiting.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut),
        "served beyond capacity: {early:?}"
    );
    // The first one goes away: the waiting one is accepted and served.
    drop(stalled);
    waiting.set_read_timeout(Some(T)).unwrap();
    let mut rest = Vec::new();
    waiting.read_to_end(&mut rest).unwrap();
    let answer = String::from_utf8_lossy(&rest);
    assert!(answer.ends_with("Hello, world!"), "{answer}");
}

/// A zergling accepting on the pool's uwsgi socket lets go of it when the pool goes
/// away, so that a new pool can bind the same address; it then attaches to that
/// pool and accepts there again.
#[test]
fn with_direct_accept_a_crashed_pool_can_bind_its_address_again() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("zerg.sock");
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let args = ["--socket", addr.as_str(), "--zerg-direct-accept"];
    let keep = tempfile::tempdir().unwrap();
    let mut first = Pool::start_in(keep, sock.clone(), &args, &[]);
    let z = first.zergling(&[]);
    first.wait_attached(1);
    let uwsgi: SocketAddr = addr.parse().unwrap();
    assert!(serve_captured(uwsgi).ends_with("Hello, world!"));
    assert!(z.wait_log("accepting on the pool's listener directly", 1, T), "{}", z.log());

    first.proc.signal(Signal::SIGKILL);
    first.proc.wait_exit(T).unwrap();
    assert!(z.wait_log("stopped accepting on the pool's listener", 1, T), "{}", z.log());
    // Without the zergling's copy closed, this bind fails (address in use).
    let second = Pool::start_in(dir, sock, &args, &[]);
    second.wait_attached(1);
    assert!(z.wait_log("accepting on the pool's listener directly", 2, T), "{}", z.log());
    assert!(serve_captured(uwsgi).ends_with("Hello, world!"));
}

// ---------------------------------------------------------------------------
// Chain reload under load through nginx
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    gateway: AtomicU64,
    other_status: AtomicU64,
    errors: AtomicU64,
    pids: Mutex<HashSet<u32>>,
    first_problem: Mutex<Option<String>>,
}

impl Tally {
    fn problem(&self, counter: &AtomicU64, what: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.first_problem.lock().unwrap().get_or_insert(what);
    }

    fn record(&self, r: io::Result<Reply>) {
        match r {
            Ok(r) if r.status == 200 => match r.text().parse() {
                Ok(pid) => {
                    self.ok.fetch_add(1, Ordering::Relaxed);
                    self.pids.lock().unwrap().insert(pid);
                }
                Err(_) => self.problem(&self.other_status, format!("200 with a body that is no pid: {:?}", r.text())),
            },
            Ok(r) if r.status == 502 || r.status == 504 => self.problem(&self.gateway, format!("status {}", r.status)),
            Ok(r) => self.problem(&self.other_status, format!("status {}: {}", r.status, r.text())),
            Err(e) => self.problem(&self.errors, e.to_string()),
        }
    }
}

fn pid_of(addr: SocketAddr) -> u32 {
    let r = get(addr, "/pid").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    r.text().parse().expect("a pid")
}

#[test]
fn chain_reloads_under_load_through_nginx_lose_nothing() {
    chain_reloads_under_load_through_nginx(&[]);
}

#[test]
fn chain_reloads_under_load_through_nginx_lose_nothing_with_direct_accept() {
    chain_reloads_under_load_through_nginx(&["--zerg-direct-accept"]);
}

fn chain_reloads_under_load_through_nginx(extra: &[&str]) {
    if !have_nginx() {
        return;
    }
    let mut args = vec!["--socket", "127.0.0.1:0", "--zergling", common::demo(), "--zergling", common::demo()];
    args.extend_from_slice(extra);
    let pool = Pool::start_with(&args, &[("ZERGPOOL_LOG", "info")]);
    pool.wait_attached(2);
    let uwsgi = common::listening_addr(&pool.proc.log(), "uwsgi0").expect("uwsgi0 address in the log");
    let nginx = Nginx::start(&uwsgi.to_string());
    let addr = nginx.addr();
    let before: HashSet<u32> = (0..8).map(|_| pid_of(addr)).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    // Bounded load: 4 clients, one request per connection to nginx (nginx opens a
    // new uwsgi connection per request anyway); one of them POSTs.
    for i in 0..4 {
        let (stop, tally) = (stop.clone(), tally.clone());
        clients.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if i == 3 {
                    match request(addr, "POST", "/echo", &[], b"12345") {
                        Ok(r) if r.status == 200 && r.body == b"12345" => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) if r.status == 200 => {
                            tally.problem(&tally.other_status, format!("echo answered {:?}", r.text()))
                        }
                        other => tally.record(other),
                    }
                } else {
                    tally.record(get(addr, "/pid"));
                }
            }
        }));
    }
    let reloads = 4;
    let start = Instant::now();
    for n in 1..=reloads {
        let due = start + Duration::from_millis(1750 * n as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        pool.proc.signal(Signal::SIGHUP);
        assert!(pool.wait_reloads(n, T), "reload {n} did not complete:\n{}", pool.proc.log());
    }
    // Keep the load on a moment after the last reload.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }

    let (ok, gateway, other, errors) = (
        tally.ok.load(Ordering::Relaxed),
        tally.gateway.load(Ordering::Relaxed),
        tally.other_status.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
    );
    let seen = tally.pids.lock().unwrap().clone();
    eprintln!(
        "load through nginx: {ok} ok, {gateway} 502/504, {other} other, {errors} errors, {} pids, {reloads} reloads in {:?}",
        seen.len(),
        start.elapsed()
    );
    assert!(ok > 200, "too little load to prove anything: {ok}");
    assert_eq!(
        (gateway, other, errors),
        (0, 0, 0),
        "first problem: {:?}\nnginx:\n{}\npool:\n{}",
        tally.first_problem.lock().unwrap(),
        nginx.error_log(),
        pool.proc.log()
    );
    // The zerglings were replaced: the old pids are gone, the new ones answer.
    let after: HashSet<u32> = (0..8).map(|_| pid_of(addr)).collect();
    assert!(before.is_disjoint(&after), "pids before {before:?}, after {after:?}");
    assert!(seen.len() > before.len(), "the load saw new zerglings: {seen:?}");
    for pid in &before {
        assert!(
            common::wait_until(T, || !Path::new(&format!("/proc/{pid}")).exists()),
            "the old zergling {pid} still exists"
        );
    }
    let errors = nginx.error_log();
    assert!(!errors.contains("[error]"), "nginx logged errors:\n{errors}");
    if extra.contains(&"--zerg-direct-accept") {
        // Every zergling, the replacements included, accepted by itself, and the
        // pool never had to: each old zergling's session handed over nothing.
        let log = pool.proc.log();
        assert!(pool.proc.count("zergling accepts on the shared listeners itself") >= 2 + reloads, "{log}");
        let totals: Vec<&str> = log.lines().filter(|l| l.contains("session totals")).collect();
        assert!(!totals.is_empty() && totals.iter().all(|l| l.contains(" sent=0 ")), "{totals:#?}");
    }
}

// ---------------------------------------------------------------------------
// Malformed packets straight to the pool
// ---------------------------------------------------------------------------

/// A uwsgi packet with the given header size field and vars block.
fn packet(datasize: u16, block: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8];
    p.extend_from_slice(&datasize.to_le_bytes());
    p.push(0);
    p.extend_from_slice(block);
    p
}

/// A vars block from raw (key, value) pairs, lengths as given by the bytes.
fn vars(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in pairs {
        b.extend_from_slice(&(k.len() as u16).to_le_bytes());
        b.extend_from_slice(k);
        b.extend_from_slice(&(v.len() as u16).to_le_bytes());
        b.extend_from_slice(v);
    }
    b
}

/// Writes `bytes` on a new connection and expects the pool to close it (EOF, or a
/// reset when it closed with bytes unread) without answering anything.
fn expect_closed(uwsgi: SocketAddr, bytes: &[u8], what: &str) {
    let mut s = TcpStream::connect(uwsgi).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    // The pool may close before it reads everything: a write error is fine.
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => assert!(got.is_empty(), "{what}: the pool answered {:?}", String::from_utf8_lossy(&got)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: the connection was not closed: {e}"),
    }
}

/// Sends the `GET /` packet nginx sent (captured) and reads the answer to EOF.
fn serve_captured(uwsgi: SocketAddr) -> String {
    let packet = fs::read(CAPTURED_GET_ROOT).expect("captured packet");
    let mut s = TcpStream::connect(uwsgi).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(&packet).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn malformed_packets_close_their_connection_and_nothing_else() {
    malformed_packets(Accepting::Pool);
}

#[test]
fn malformed_packets_close_their_connection_and_nothing_else_with_direct_accept() {
    malformed_packets(Accepting::Zerglings);
}

fn malformed_packets(accepting: Accepting) {
    // A spawned zergling: its log lines (it checks the packets itself when it
    // accepts) are in the pool's log.
    let mut args = vec!["--socket", "127.0.0.1:0", "--zergling", common::demo()];
    if accepting == Accepting::Zerglings {
        args.push("--zerg-direct-accept");
    }
    let pool = Pool::start(&args);
    let uwsgi = common::listening_addr(&pool.proc.log(), "uwsgi0").expect("uwsgi0 address in the log");
    pool.wait_attached(1);
    if accepting == Accepting::Zerglings {
        assert!(pool.proc.wait_log("the pool pauses accepting", 1, T), "{}", pool.proc.log());
    }

    // A connection that sent half a header and stalls: it must not hold up anyone.
    let mut stalled = TcpStream::connect(uwsgi).unwrap();
    stalled.write_all(&[0, 0x10]).unwrap();

    let served = serve_captured(uwsgi);
    assert!(served.starts_with("HTTP/1.") && served.contains(" 200 "), "{served}");
    assert!(served.ends_with("Hello, world!"), "{served}");

    // HTTP sent to the uwsgi socket.
    expect_closed(uwsgi, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "HTTP");
    assert!(pool.proc.wait_log("looks like HTTP", 1, T), "{}", pool.proc.log());

    // A block over buffer-size (4096): refused from the header alone.
    let mut over = packet(5000, &[]);
    over.extend(std::iter::repeat(b'x').take(1000));
    expect_closed(uwsgi, &over, "oversize");
    assert!(pool.proc.wait_log("invalid request block size: 5000 (max 4096)", 1, T), "{}", pool.proc.log());

    // An empty key.
    let block = vars(&[(b"REQUEST_METHOD", b"GET"), (b"", b"x")]);
    expect_closed(uwsgi, &packet(block.len() as u16, &block), "empty key");
    assert!(pool.proc.wait_log("key cannot be empty", 1, T), "{}", pool.proc.log());

    // A value length running past the block.
    let mut block = vars(&[(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", b"/")]);
    let n = block.len();
    block[n - 3..n - 1].copy_from_slice(&200u16.to_le_bytes());
    expect_closed(uwsgi, &packet(block.len() as u16, &block), "past the block");
    assert!(pool.proc.wait_log("runs past the end", 1, T), "{}", pool.proc.log());

    // Still serving, the stalled connection still open; and after it gives up.
    let served = serve_captured(uwsgi);
    assert!(served.ends_with("Hello, world!"), "{served}");
    drop(stalled);
    let served = serve_captured(uwsgi);
    assert!(served.ends_with("Hello, world!"), "{served}");
    assert_eq!(pool.proc.count("panicked"), 0, "{}", pool.proc.log());
    if accepting == Accepting::Zerglings {
        assert_eq!(pool.proc.count("dynamic uwsgi request"), 0, "the pool saw requests:\n{}", pool.proc.log());
    }
}
