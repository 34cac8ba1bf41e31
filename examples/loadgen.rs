//! `loadgen`: the load client of the benchmark scripts (benches/tls.sh, benches/static.sh)
//! for the two rows where wrk and h2load, on their one core, were the limit instead of the
//! servers they measure.
//!
//! ```text
//! loadgen handshakes ADDR --ca certs/ca.pem [--name localhost] [--suite TLS13_AES_256_GCM_SHA384]
//!                         [--conns 50] [--duration 5] [--path /]
//! loadgen download   ADDR --path /s/10MiB.bin [--conns 50] [--duration 5]
//! ```
//!
//! * `handshakes`: `--conns` loops, each one connecting, doing a full TLS 1.3 handshake
//!   (no session resumption: rustls' session cache is turned off), sending one
//!   `GET --path`, reading the whole response (by `Content-Length`) and closing. A closed
//!   loop, so the rate is steady, not bursts. The server certificate is verified against
//!   `--ca` as a real client would.
//! * `download`: `--conns` keep-alive connections, each one repeating `GET --path`. The
//!   response head is read normally; the body is moved with `splice(2)` from the socket
//!   into a pipe and from the pipe into `/dev/null`, so the client never copies the bytes
//!   (wrk copies every byte into user space, which costs its one core more than a
//!   `sendfile(2)` costs the server).
//!
//! Both print one line: `requests=N seconds=S rate=R bytes=B errors=E client_cpu=C`,
//! where `rate` is requests per second and `client_cpu` is the share of one core this
//! process used (near 1.00 means the client, not the server, was the limit).
//! Single-threaded on purpose: the scripts pin it to one core with `taskset`.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

const USAGE: &str = "usage: loadgen handshakes|download ADDR [--ca FILE] [--name NAME] \
[--suite SUITE] [--conns N] [--duration SECONDS] [--path PATH]";

/// What the command line asked for.
struct Args {
    mode: String,
    addr: SocketAddr,
    ca: Option<String>,
    name: String,
    suite: Option<String>,
    conns: usize,
    duration: Duration,
    path: String,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or(USAGE)?;
    if mode != "handshakes" && mode != "download" {
        return Err(format!("unknown mode {mode:?}\n{USAGE}"));
    }
    let addr = it.next().ok_or(USAGE)?;
    let addr = addr.parse().map_err(|e| format!("ADDR {addr:?} is not IP:PORT ({e})"))?;
    let mut args = Args {
        mode,
        addr,
        ca: None,
        name: "localhost".into(),
        suite: None,
        conns: 50,
        duration: Duration::from_secs(5),
        path: "/".into(),
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value\n{USAGE}"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v:?} is not a number ({e})"));
        match flag.as_str() {
            "--ca" => args.ca = Some(value),
            "--name" => args.name = value,
            "--suite" => args.suite = Some(value),
            "--conns" => args.conns = number(&value)?.max(1) as usize,
            "--duration" => args.duration = Duration::from_secs(number(&value)?.max(1)),
            "--path" => args.path = value,
            _ => return Err(format!("unknown flag {flag:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// What one connection loop counted.
#[derive(Default)]
struct Tally {
    requests: u64,
    bytes: u64,
    errors: u64,
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let result = rt.block_on(run(&args));
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    match result {
        Ok(t) => println!(
            "requests={} seconds={secs:.3} rate={:.0} bytes={} errors={} client_cpu={:.2}",
            t.requests,
            t.requests as f64 / secs,
            t.bytes,
            t.errors,
            cpu / secs
        ),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(args: &Args) -> Result<Tally, String> {
    let deadline = Instant::now() + args.duration;
    let request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", args.path, args.name);
    let request: Arc<[u8]> = request.into_bytes().into();
    let mut tasks = tokio::task::JoinSet::new();
    if args.mode == "handshakes" {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(args)?));
        let name = ServerName::try_from(args.name.clone()).map_err(|e| format!("--name {:?}: {e}", args.name))?;
        for _ in 0..args.conns {
            let (c, n, r, a) = (connector.clone(), name.clone(), request.clone(), args.addr);
            tasks.spawn(handshake_loop(c, n, a, r, deadline));
        }
    } else {
        for _ in 0..args.conns {
            tasks.spawn(download_loop(args.addr, request.clone(), deadline));
        }
    }
    let mut total = Tally::default();
    while let Some(t) = tasks.join_next().await {
        let t = t.map_err(|e| format!("a connection loop failed: {e}"))?;
        total.requests += t.requests;
        total.bytes += t.bytes;
        total.errors += t.errors;
    }
    Ok(total)
}

/// TLS 1.3 only, no resumption, roots from `--ca`, the suite pinned by `--suite`.
fn client_config(args: &Args) -> Result<rustls::ClientConfig, String> {
    let ca = args.ca.as_deref().ok_or("handshakes needs --ca FILE")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("--ca {ca}: {e}"))? {
        let cert = cert.map_err(|e| format!("--ca {ca}: {e}"))?;
        roots.add(cert).map_err(|e| format!("--ca {ca}: unusable certificate: {e}"))?;
    }
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suite) = &args.suite {
        // rustls names TLS 1.3 suites TLS13_*, OpenSSL (and nginx) TLS_*: both are taken.
        let openssl_name = suite.replacen("TLS_", "TLS13_", 1);
        provider.cipher_suites.retain(|s| {
            let name = format!("{:?}", s.suite());
            name == *suite || name == openssl_name
        });
        if provider.cipher_suites.is_empty() {
            return Err(format!("--suite {suite}: not a rustls cipher suite name"));
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// One connection after another: connect, handshake, one request, close.
async fn handshake_loop(
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    addr: SocketAddr,
    request: Arc<[u8]>,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut buf = vec![0u8; 16 * 1024];
    while Instant::now() < deadline {
        let once = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let mut tls = connector.connect(name.clone(), tcp).await?;
            tls.write_all(&request).await?;
            read_response(&mut tls, &mut buf).await
        };
        match once.await {
            Ok(n) => {
                tally.requests += 1;
                tally.bytes += n;
            }
            Err(e) => report(&mut tally, e),
        }
    }
    tally
}

/// Keep-alive requests on one connection (a new one after an error); bodies spliced
/// into /dev/null.
async fn download_loop(addr: SocketAddr, request: Arc<[u8]>, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let devnull = match std::fs::OpenOptions::new().write(true).open("/dev/null") {
        Ok(f) => f,
        Err(e) => {
            report(&mut tally, e);
            return tally;
        }
    };
    let (pipe_r, pipe_w) = match nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            report(&mut tally, e.into());
            return tally;
        }
    };
    use std::os::fd::AsRawFd;
    // A larger pipe means fewer splice calls per response (the default is 64 KiB).
    let _ = fcntl(pipe_w.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(1 << 20));
    let mut head_buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        let mut tcp = match TcpStream::connect(addr).await {
            Ok(t) => t,
            Err(e) => {
                report(&mut tally, e);
                continue;
            }
        };
        while Instant::now() < deadline {
            let once = async {
                tcp.write_all(&request).await?;
                let (head, already) = read_head(&mut tcp, &mut head_buf).await?;
                let body_len = head.content_length;
                let mut left = body_len.saturating_sub(already);
                while left > 0 {
                    tcp.readable().await?;
                    let moved = tcp.try_io(Interest::READABLE, || {
                        let n = splice(
                            tcp.as_fd(),
                            None,
                            &pipe_w,
                            None,
                            left as usize,
                            SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK,
                        )?;
                        Ok(n)
                    });
                    match moved {
                        Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                        Ok(n) => {
                            drain(&pipe_r, &devnull, n)?;
                            left -= n as u64;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok::<(u64, bool), std::io::Error>((body_len, head.close))
            };
            match once.await {
                Ok((n, close)) => {
                    tally.requests += 1;
                    tally.bytes += n;
                    if close {
                        break; // the server closes: a new connection for the next request
                    }
                }
                Err(e) => {
                    report(&mut tally, e);
                    // The pipe may hold part of a body: empty it before the next connection.
                    let _ = drain(&pipe_r, &devnull, usize::MAX);
                    break;
                }
            }
        }
    }
    tally
}

/// Moves `n` bytes (or, with `usize::MAX`, whatever is there) from the pipe to /dev/null.
fn drain(pipe_r: &OwnedFd, devnull: &std::fs::File, mut n: usize) -> std::io::Result<()> {
    while n > 0 {
        match splice(pipe_r, None, devnull, None, n, SpliceFFlags::SPLICE_F_NONBLOCK) {
            Ok(0) => return Ok(()),
            Ok(k) => n -= k,
            Err(nix::errno::Errno::EAGAIN) if n == usize::MAX => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads one response head into `buf`; returns it with the count of body bytes read
/// with it (they follow the head in `buf`).
async fn read_head<S: AsyncReadExt + Unpin>(s: &mut S, buf: &mut [u8]) -> std::io::Result<(Head, u64)> {
    let mut filled = 0;
    loop {
        let n = s.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        if let Some(head) = parse_head(&buf[..filled])? {
            let already = (filled - head.len) as u64;
            return Ok((head, already));
        }
        if filled == buf.len() {
            return Err(invalid("response head larger than the buffer"));
        }
    }
}

/// Reads one whole response (head and `Content-Length` body); returns the body length.
async fn read_response<S: AsyncReadExt + Unpin>(s: &mut S, buf: &mut [u8]) -> std::io::Result<u64> {
    let (head, already) = read_head(s, buf).await?;
    let mut left = head.content_length.saturating_sub(already);
    while left > 0 {
        let chunk = (left as usize).min(buf.len());
        let n = s.read(&mut buf[..chunk]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        left -= n as u64;
    }
    Ok(head.content_length)
}

/// What a complete response head says.
struct Head {
    len: usize,
    content_length: u64,
    /// `Connection: close`: the server closes after this response.
    close: bool,
}

/// `Some(Head)` once the head is complete; a status other than 200 is an error.
fn parse_head(bytes: &[u8]) -> std::io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(&format!("bad response head: {e}"))),
    };
    if response.code != Some(200) {
        return Err(invalid(&format!("status {:?}, not 200", response.code)));
    }
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .ok_or_else(|| invalid("response without a Content-Length"))?;
    let close = response
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close"));
    Ok(Some(Head { len: head_len, content_length: length, close }))
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// Counts an error; the first three are printed, so a broken setup is visible.
fn report(tally: &mut Tally, e: std::io::Error) {
    tally.errors += 1;
    if tally.errors <= 3 {
        eprintln!("loadgen: {e}");
    }
}

/// User + system CPU time of this process, in seconds.
fn cpu_seconds() -> f64 {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => 0.0,
    }
}
