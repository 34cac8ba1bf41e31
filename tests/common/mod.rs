//! The one helper integration tests start real processes through.
//!
//! Every process is started on port 0 with its sockets in a fresh temporary
//! directory, its output collected line by line for assertions, and killed by
//! process group when the handle drops (so zerglings the pool spawned go too).
//! Readiness is awaited by polling a condition, never by sleeping a fixed time.
#![allow(dead_code, unreachable_pub)]

pub mod nginx;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const POOL: &str = env!("CARGO_BIN_EXE_zergpool");
/// The demo zergling: a binary of the `zergling-demo` package of this workspace,
/// next to the pool's (cargo builds every default member's binaries for tests).
pub fn demo() -> &'static str {
    static DEMO: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DEMO.get_or_init(|| {
        let path = std::path::Path::new(POOL).with_file_name("zergling-demo");
        assert!(
            path.exists(),
            "{} is missing: build it first (cargo build --workspace --bins; .ci/run does)",
            path.display()
        );
        path.display().to_string()
    })
}

/// The repository's root.
pub fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A file of `tests/data/python/` (the Python applications and clients).
pub fn python_data(name: &str) -> String {
    root().join("tests/data/python").join(name).display().to_string()
}

/// A file of `certs/` (the test CA and the `localhost` certificate).
pub fn cert(name: &str) -> String {
    root().join("certs").join(name).display().to_string()
}

/// An `https` option for 127.0.0.1:0 with the `localhost` certificate.
pub fn https_arg() -> String {
    format!("127.0.0.1:0,{},{}", cert("localhost.pem"), cert("localhost-key.pem"))
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A running process with its output lines.
pub struct Proc {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    group: bool,
}

impl Proc {
    pub fn spawn(mut cmd: Command, own_group: bool) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        if own_group {
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().expect("spawn test process");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for out in [
            child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>),
            child.stderr.take().map(|e| Box::new(e) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if std::env::var_os("TEST_ECHO").is_some() {
                        eprintln!("{line}");
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Proc { child, lines, group: own_group }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }

    pub fn wait_log(&self, needle: &str, n: usize, limit: Duration) -> bool {
        wait_until(limit, || self.count(needle) >= n)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig).expect("signal");
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Open descriptors of the process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.pid() as i32;
        let target = if self.group { -pid } else { pid };
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(target), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A pool started on 127.0.0.1:0 with its attach socket in a temporary directory.
pub struct Pool {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub sock: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Pool {
    pub fn start(extra: &[&str]) -> Pool {
        Self::start_with(extra, &[])
    }

    pub fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Pool {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("zerg.sock");
        Self::start_in(dir, sock, extra, env)
    }

    /// Starts a pool whose attach socket is `sock` (for pool restarts).
    pub fn start_in(dir: tempfile::TempDir, sock: PathBuf, extra: &[&str], env: &[(&str, &str)]) -> Pool {
        Self::start_program(POOL, dir, sock, extra, env)
    }

    /// Starts the pool binary at `program` (cargo's, or one installed by pip).
    pub fn start_program(
        program: &str,
        dir: tempfile::TempDir,
        sock: PathBuf,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Pool {
        let mut cmd = Command::new(program);
        cmd.args(["--http", "127.0.0.1:0", "--events", "-", "--disable-logging", "--zerg-server"])
            .arg(&sock)
            .args(extra);
        cmd.env("ZERGPOOL_LOG", "info,zergpool=debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn(cmd, true);
        let ready = wait_until(Duration::from_secs(10), || !events_in(&proc.log(), "ready").is_empty());
        assert!(ready, "pool did not start:\n{}", proc.log());
        let addr = listening_addr(&proc.log(), "http0").expect("a listening event for http0");
        Pool { proc, addr, sock, dir }
    }

    /// How many `name` events the pool wrote so far.
    pub fn events(&self, name: &str) -> usize {
        events_in(&self.proc.log(), name).len()
    }

    /// Waits until the pool wrote `n` events `name` (`attached`, `reload-complete`, …).
    pub fn wait_event(&self, name: &str, n: usize, limit: Duration) -> bool {
        wait_until(limit, || self.events(name) >= n)
    }

    pub fn attached(&self) -> usize {
        self.events("attached")
    }

    pub fn wait_attached(&self, n: usize) {
        assert!(
            self.wait_event("attached", n, Duration::from_secs(15)),
            "zerglings did not attach:\n{}",
            self.proc.log()
        );
    }

    /// Waits for the `n`-th completed chain reload.
    pub fn wait_reloads(&self, n: usize, limit: Duration) -> bool {
        self.wait_event("reload-complete", n, limit)
    }

    /// Starts a zergling-demo attached to this pool, outside the pool's supervision.
    pub fn zergling(&self, args: &[&str]) -> Proc {
        let mut cmd = Command::new(demo());
        cmd.arg("--attach").arg(&self.sock).args(args);
        Proc::spawn(cmd, false)
    }
}

/// The pool's events (`--events -`: JSON lines on stdout, src/events.rs) named
/// `name`, from a process's output.
pub fn events_in(output: &str, name: &str) -> Vec<serde_json::Value> {
    output
        .lines()
        .filter(|l| l.starts_with("{\"event\":"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == name)
        .collect()
}

/// The address of listener `name` (`http0`, …), from the pool's `listening` event.
pub fn listening_addr(output: &str, name: &str) -> Option<SocketAddr> {
    events_in(output, "listening")
        .into_iter()
        .find(|e| e["listener"] == name)
        .and_then(|e| e["addr"].as_str()?.parse().ok())
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// A minimal HTTP/1.1 client over one TCP connection (keep-alive capable).
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream, buf: Vec::new() }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn request(&mut self, method: &str, path: &str, extra_headers: &str, body: &[u8]) -> std::io::Result<Response> {
        let head =
            format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{extra_headers}Content-Length: {}\r\n\r\n", body.len());
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        self.stream.write_all(&req)?;
        if method == "HEAD" {
            return self.read_head_response();
        }
        self.read_response()
    }

    /// The response to a HEAD request: its head, and no body whatever the
    /// headers say.
    pub fn read_head_response(&mut self) -> std::io::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let mut raw: Vec<u8> = self.buf.drain(..head_end).collect();
        // Parse it as a response with an empty body.
        let text = String::from_utf8_lossy(&raw).into_owned();
        raw.clear();
        let mut lines = text.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&text))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(Response { status, headers, body: raw })
    }

    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        self.request("GET", path, "", b"")
    }

    pub fn read_response(&mut self) -> std::io::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 =
            status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad(&head))?;
        let mut headers = HashMap::new();
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        self.buf.drain(..head_end);
        if headers.get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            let body = self.read_chunked()?;
            return Ok(Response { status, headers, body });
        }
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while self.buf.len() < len {
            self.fill()?;
        }
        let body = self.buf.drain(..len).collect();
        Ok(Response { status, headers, body })
    }

    /// A chunked body, de-chunked; an error unless it ends with its last chunk.
    fn read_chunked(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill()?;
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad(&format!("chunk size {size_text:?}")))?;
            self.buf.drain(..line_end + 2);
            // The chunk and its CRLF (for the last one: the empty trailer's CRLF).
            while self.buf.len() < size + 2 {
                self.fill()?;
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
            if size == 0 {
                return Ok(body);
            }
        }
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// True if the server closed the connection (EOF) within `limit`.
    /// Whether the server ends the connection within `limit`, after whatever it
    /// still sends (an error response, say).
    pub fn ends_within(&mut self, limit: Duration) -> bool {
        self.stream.set_read_timeout(Some(limit)).unwrap();
        let mut sink = Vec::new();
        match self.stream.read_to_end(&mut sink) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.stream.set_read_timeout(Some(limit)).unwrap();
        let mut b = [0u8; 1];
        match self.stream.read(&mut b) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }
}

fn bad(head: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad response head: {head:?}"))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection, with `Connection: close`.
pub fn get_once(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    Client::connect(addr).request("GET", path, "Connection: close\r\n", b"")
}

/// Whether a program is on PATH; in CI a missing program is a failure.
pub fn require_program(name: &str) -> bool {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file())).unwrap_or(false);
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{name} is required in CI but is not installed (.ci/run installs it)");
        }
        eprintln!("SKIP: {name} is not installed");
    }
    found
}

/// The test virtualenv (`scripts/python-env.sh` builds it into `target/pyenv`;
/// `ZERGPOOL_TEST_VENV` names another), with the `zergling` wheel and the
/// Python packages the tests use. Missing: one line and `None` (skip), or a
/// failure in CI.
pub fn venv() -> Option<PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let v = std::env::var_os("ZERGPOOL_TEST_VENV").map_or_else(|| root.join("target/pyenv"), PathBuf::from);
    if v.join("bin/zergling").is_file() {
        return Some(v);
    }
    if std::env::var("CI").is_ok_and(|c| c == "true") {
        panic!("{}/bin/zergling is missing in CI (.ci/run runs scripts/python-env.sh)", v.display());
    }
    eprintln!("SKIP: no Python test virtualenv at {} (run scripts/python-env.sh)", v.display());
    None
}

/// A zergling the test plays itself over the documented protocol, to misbehave
/// in ways the library never would.
pub struct RawZergling {
    pub rt: tokio::runtime::Runtime,
    pub chan: zergpool::proto::Channel,
}

impl RawZergling {
    /// Connects to `sock` (no HELLO yet).
    pub fn connect(sock: &std::path::Path) -> RawZergling {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let chan = rt.block_on(zergpool::proto::Channel::connect(sock)).expect("connect to the attach socket");
        RawZergling { rt, chan }
    }

    /// Connects and attaches with HELLO(`pid`, `capacity`); returns after WELCOME.
    pub fn attach(sock: &std::path::Path, pid: u32, capacity: u32) -> RawZergling {
        let z = Self::connect(sock);
        let hello = zergpool::proto::Message::Hello {
            version: zergpool::proto::VERSION,
            pid,
            capacity,
            tags: Vec::new(),
            accept_direct: false,
        };
        z.send(&hello, None);
        match z.recv(Duration::from_secs(10)) {
            Some((zergpool::proto::Message::Welcome { .. }, _)) => z,
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    pub fn send(&self, msg: &zergpool::proto::Message, fd: Option<std::os::fd::BorrowedFd<'_>>) {
        self.rt.block_on(self.chan.send(msg, fd)).expect("send");
    }

    /// The next message, or `None` on timeout or a closed channel.
    pub fn recv(&self, limit: Duration) -> Option<(zergpool::proto::Message, Option<std::os::fd::OwnedFd>)> {
        self.rt.block_on(self.chan.recv_timeout(limit)).ok()
    }
}
