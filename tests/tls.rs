//! TLS termination through the real binaries (issue 4): real clients (curl, `openssl
//! s_client`, a rustls client), client certificates, hostile handshakes and a client that
//! never closes, the privilege drop on ports 80/443, `http-to-https`, and certificate reload
//! on SIGHUP.
//!
//! Every pool listens on port 0 except the privilege-drop test, which needs the real ports
//! 80 and 443 (and root; it prints one SKIP line otherwise). Certificates are the
//! development ones in `certs/`, named by absolute path so the tests do not depend on the
//! working directory.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{listening_addr, wait_until, Client, Pool, Response};
use nix::sys::signal::Signal;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion};
use serde_json::Value;

const T: Duration = Duration::from_secs(15);

/// A rustls client session over a blocking TCP stream.
type Tls = StreamOwned<ClientConnection, TcpStream>;

// ---------------------------------------------------------------------------------------
// Real clients

#[test]
fn curl_speaks_http11_and_h2_as_alpn_allows() {
    if !common::require_program("curl") {
        return;
    }
    // Without `--http2` the pool offers only http/1.1, whatever the client asks.
    let pool = Pool::start(&["--https", &https_arg("localhost"), "--zergling", common::demo()]);
    pool.wait_attached(1);
    let addr = https_addr(&pool);
    for flag in ["--http1.1", "--http2"] {
        let w = curl_whoami(addr, flag);
        assert_eq!(w["protocol"], "http/1.1", "{flag} without --http2 on the pool: {w}");
        assert_eq!(w["alpn"], "http/1.1", "{w}");
        assert_eq!(w["scheme"], "https", "{w}");
        assert_eq!(w["sni"], "localhost", "{w}");
        assert_eq!(w["tls_version"], "TLSv1.3", "{w}");
        assert_eq!(w["listener"], "https0", "{w}");
        assert_eq!(w["kind"], "https", "{w}");
    }

    // With `--http2`, curl --http2 negotiates h2 and the zergling serves HTTP/2.
    let pool = Pool::start(&["--https", &https_arg("localhost"), "--http2", "--zergling", common::demo()]);
    pool.wait_attached(1);
    let addr = https_addr(&pool);
    let w = curl_whoami(addr, "--http2");
    assert_eq!(w["protocol"], "h2", "{w}");
    assert_eq!(w["alpn"], "h2", "{w}");
    assert_eq!(w["scheme"], "https", "{w}");
    assert_eq!(w["sni"], "localhost", "{w}");
    let w = curl_whoami(addr, "--http1.1");
    assert_eq!(w["protocol"], "http/1.1", "{w}");
    assert_eq!(w["alpn"], "http/1.1", "{w}");
}

#[test]
fn openssl_s_client_sni_picks_the_certificate_and_both_versions_work() {
    if !common::require_program("openssl") {
        return;
    }
    let sni = format!("other.test,{},{}", cert("other.pem"), cert("other-key.pem"));
    let pool = Pool::start(&["--https", &https_arg("localhost"), "--sni", &sni]);
    let addr = https_addr(&pool);

    let out = s_client(addr, &["-servername", "other.test"]);
    assert!(out.contains("CN = other.test"), "SNI other.test gets the other certificate:\n{out}");
    let out = s_client(addr, &["-servername", "OTHER.test"]);
    assert!(out.contains("CN = other.test"), "SNI names match case-insensitively:\n{out}");
    let out = s_client(addr, &["-servername", "unknown.test"]);
    assert!(out.contains("CN = localhost"), "an unknown name gets the default certificate:\n{out}");
    let out = s_client(addr, &["-noservername"]);
    assert!(out.contains("CN = localhost"), "no SNI gets the default certificate:\n{out}");

    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let out = s_client(addr, &[flag, "-servername", "localhost"]);
        assert!(out.contains(&format!("Protocol version: {version}")), "{flag}:\n{out}");
        assert!(out.contains("CN = localhost"), "{flag}:\n{out}");
        let out = s_client(addr, &[flag, "-servername", "other.test"]);
        assert!(out.contains(&format!("Protocol version: {version}")), "{flag} other.test:\n{out}");
        assert!(out.contains("CN = other.test"), "{flag} other.test (RSA certificate):\n{out}");
    }
}

#[test]
fn rustls_client_sees_tls_metadata_in_whoami() {
    let sni = format!("other.test,{},{}", cert("other.pem"), cert("other-key.pem"));
    let pool = Pool::start(&["--https", &https_arg("localhost"), "--sni", &sni, "--zergling", common::demo()]);
    pool.wait_attached(1);
    let addr = https_addr(&pool);

    // TLS 1.3, keep-alive: two requests on one session.
    let mut s = tls_connect(addr, "localhost", &[&rustls::version::TLS13]).expect("TLS 1.3 handshake");
    assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    for _ in 0..2 {
        let r = tls_request(&mut s, "GET", "/whoami?x=1", "localhost", "").expect("request over TLS");
        assert_eq!(r.status, 200, "{}", r.text());
        let w: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(w["scheme"], "https", "{w}");
        assert_eq!(w["sni"], "localhost", "{w}");
        assert_eq!(w["tls_version"], "TLSv1.3", "{w}");
        assert_eq!(w["alpn"], "http/1.1", "{w}");
        assert_eq!(w["protocol"], "http/1.1", "{w}");
        assert_eq!(w["listener"], "https0", "{w}");
        assert_eq!(w["kind"], "https", "{w}");
        assert_eq!(w["query"], "x=1", "{w}");
        assert_eq!(w["client"], s.sock.local_addr().unwrap().to_string(), "the client's TCP address, not the relay's");
    }
    // A body travels through the relay.
    let r = tls_request_with_body(&mut s, "POST", "/echo", "localhost", "", "body through TLS").unwrap();
    assert_eq!(r.text(), "body through TLS");

    // TLS 1.2, and the SNI certificate (the rustls client verifies it for other.test).
    let mut s = tls_connect(addr, "other.test", &[&rustls::version::TLS12]).expect("TLS 1.2 handshake for other.test");
    assert_eq!(s.conn.peer_certificates().unwrap()[0], pem_cert("other.pem"));
    let r = tls_request(&mut s, "GET", "/whoami", "other.test", "Connection: close\r\n").unwrap();
    let w: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(w["sni"], "other.test", "{w}");
    assert_eq!(w["tls_version"], "TLSv1.2", "{w}");
    assert_eq!(w["scheme"], "https", "{w}");
}

#[test]
fn mandatory_client_certificate_is_enforced() {
    let https = format!("127.0.0.1:0,{},{},,!{}", cert("localhost.pem"), cert("localhost-key.pem"), cert("ca.pem"));
    let pool = Pool::start(&["--https", &https, "--zergling", common::demo()]);
    pool.wait_attached(1);
    let addr = https_addr(&pool);

    let chain = vec![pem_cert("client.pem")];
    let key = PrivateKeyDer::from_pem_file(cert("client-key.pem")).unwrap();
    let config = client_config(&[&rustls::version::TLS13]).with_client_auth_cert(chain, key).unwrap();
    let mut s = tls_connect_with(addr, "localhost", config).expect("handshake with a client certificate");
    let r = tls_request(&mut s, "GET", "/", "localhost", "").expect("request with a client certificate");
    assert_eq!(r.status, 200);

    // Without one, the server refuses (in TLS 1.3 the client learns it at its first read).
    let refused = tls_connect(addr, "localhost", &[&rustls::version::TLS13])
        .and_then(|mut s| tls_request(&mut s, "GET", "/", "localhost", ""));
    assert!(refused.is_err(), "a client without a certificate must be refused: {refused:?}");
}

// ---------------------------------------------------------------------------------------
// Hostile handshakes

#[test]
fn garbage_stalled_and_abandoned_handshakes_disturb_nobody_and_leak_nothing() {
    let pool = Pool::start(&["--https", &https_arg("localhost"), "--http-timeout", "2", "--zergling", common::demo()]);
    pool.wait_attached(1);
    let addr = https_addr(&pool);

    // A keep-alive session opened before the trouble, and the descriptor baseline once a
    // complete request has come and gone.
    let mut before = tls_connect(addr, "localhost", &[&rustls::version::TLS13]).unwrap();
    assert_eq!(tls_request(&mut before, "GET", "/", "localhost", "").unwrap().status, 200);
    one_https_request(addr);
    let baseline = settled_fd_count(&pool);

    // Garbage: random bytes, and a TLS record header announcing an impossible length. A
    // handshake error closes the connection at once, not at the timeout.
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let random: Vec<u8> = (0..4096).map(|_| xorshift(&mut rng) as u8).collect();
    let mut huge_record = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    huge_record.extend_from_slice(&random[..512]);
    for (what, bytes) in [("random bytes", &random), ("oversized record", &huge_record)] {
        let mut g = TcpStream::connect(addr).unwrap();
        let _ = g.write_all(bytes); // the server may close before reading it all
        let t0 = Instant::now();
        assert!(server_closes(&mut g, Duration::from_secs(5)), "{what}: the pool must close the connection");
        assert!(t0.elapsed() < Duration::from_millis(1500), "{what}: closed by the timeout, not by the error");
    }

    // A client that stalls in the middle of its ClientHello, and two that give up there
    // (one with FIN, one with RST).
    let hello = client_hello("localhost");
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(&hello[..hello.len() / 2]).unwrap();
    let stalled_at = Instant::now();
    for rst in [false, true] {
        let mut quitter = TcpStream::connect(addr).unwrap();
        quitter.write_all(&hello[..hello.len() / 2]).unwrap();
        if rst {
            socket2::SockRef::from(&quitter).set_linger(Some(Duration::ZERO)).unwrap();
        }
        drop(quitter);
    }

    // Meanwhile everything else works: new sessions, and the one opened before.
    for _ in 0..3 {
        one_https_request(addr);
    }
    let r = tls_request(&mut before, "GET", "/whoami", "localhost", "").expect("the earlier session still works");
    assert_eq!(r.status, 200);
    let plain = common::get_once(pool.addr, "/").unwrap();
    assert_eq!(plain.status, 200, "plain http is not disturbed either");

    // The stalled handshake is cut at http-timeout (2 s).
    assert!(server_closes(&mut stalled, Duration::from_secs(6)), "the stalled handshake must be closed");
    let waited = stalled_at.elapsed();
    assert!(waited >= Duration::from_millis(1500), "closed after {waited:?}: before http-timeout?");
    assert!(pool.proc.wait_log("TLS handshake timed out", 1, T), "{}", pool.proc.log());
    assert!(pool.proc.count("TLS handshake failed") >= 2, "{}", pool.proc.log());

    // Nothing leaked: the pool is back to its baseline, and below it once the earlier
    // session closes too (its TCP socket and relay end go).
    let ok = wait_until(Duration::from_secs(5), || pool.proc.fd_count() <= baseline);
    assert!(ok, "pool descriptors: {} now, {baseline} before the hostile handshakes", pool.proc.fd_count());
    drop(before);
    let ok = wait_until(Duration::from_secs(5), || pool.proc.fd_count() < baseline);
    assert!(ok, "pool descriptors: {} after the last session closed, {baseline} with it", pool.proc.fd_count());
    one_https_request(addr);
}

#[test]
fn a_client_that_never_closes_does_not_hold_the_pool_after_the_response() {
    // Plain HTTP: once the zergling closes, the client's socket is gone from the server
    // side, whatever the client does. HTTPS must not be worse: after the zergling closes
    // its end, the pool sends close_notify and must let the TCP socket and the relay go
    // within a bound, not wait forever for a client that keeps its socket open.
    let pool = Pool::start(&["--https", &https_arg("localhost"), "--http-timeout", "2", "--zergling", common::demo()]);
    pool.wait_attached(1);
    let addr = https_addr(&pool);
    one_https_request(addr);
    let baseline = settled_fd_count(&pool);
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut s = tls_connect(addr, "localhost", &[&rustls::version::TLS13]).unwrap();
        let r = tls_request(&mut s, "GET", "/", "localhost", "Connection: close\r\n").unwrap();
        assert_eq!(r.status, 200);
        held.push(s); // read nothing more, never close
    }
    let released = wait_until(Duration::from_secs(4), || pool.proc.fd_count() <= baseline);
    assert!(
        released,
        "10 answered HTTPS connections whose clients stay open still hold {} pool descriptors ({baseline} before) \
         4 s after the zergling closed them (http-timeout 2 s)",
        pool.proc.fd_count()
    );
    drop(held);
}

// ---------------------------------------------------------------------------------------
// Privilege drop

#[test]
fn started_as_root_on_80_and_443_it_runs_as_nobody_and_serves_both() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: the privilege-drop test needs root (binds 80 and 443, then drops to nobody)");
        return;
    }
    for port in [80, 443] {
        if let Err(e) = TcpListener::bind(("127.0.0.1", port)) {
            panic!(
                "127.0.0.1:{port} cannot be bound ({e}): another server (nginx?) holds it; stop it \
                 (`service nginx stop`, as CI does) and run the test again"
            );
        }
    }
    let https = format!("127.0.0.1:443,{},{}", cert("localhost.pem"), cert("localhost-key.pem"));
    let pool = Pool::start(&[
        "--https",
        &https,
        "--http",
        "127.0.0.1:80",
        "--http-to-https",
        "127.0.0.1:0",
        "--uid",
        "nobody",
        "--gid",
        "nogroup",
    ]);
    assert!(pool.proc.wait_log("dropped privileges", 1, T), "{}", pool.proc.log());
    let status = std::fs::read_to_string(format!("/proc/{}/status", pool.proc.pid())).unwrap();
    for field in ["Uid:", "Gid:"] {
        let ids: Vec<&str> =
            status.lines().find_map(|l| l.strip_prefix(field)).unwrap_or_default().split_whitespace().collect();
        assert_eq!(ids, ["65534"; 4], "{field} real, effective, saved, filesystem:\n{status}");
    }
    let groups = status.lines().find_map(|l| l.strip_prefix("Groups:")).unwrap_or_default().trim().to_owned();
    assert!(groups.is_empty() || groups == "65534", "supplementary groups left: {groups:?}");
    let socket_owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&pool.sock).unwrap());
    assert_eq!(socket_owner, 65534, "the attach socket belongs to the unprivileged user");

    // A zergling started as root may attach (root always may); both ports serve through it.
    let _z = pool.zergling(&[]);
    pool.wait_attached(1);
    let r = common::get_once("127.0.0.1:80".parse().unwrap(), "/").expect("http on port 80");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, world!"));
    let r = tls_get_once("127.0.0.1:443".parse().unwrap(), "localhost", "/whoami").expect("https on port 443");
    let w: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(w["scheme"], "https", "{w}");
    assert_eq!(w["local"], "127.0.0.1:443", "{w}");
    if common::require_program("curl") {
        let w = curl_json(&["--resolve", "localhost:443:127.0.0.1", "https://localhost/whoami"]);
        assert_eq!(w["scheme"], "https", "{w}");
        assert_eq!(w["sni"], "localhost", "{w}");
    }
    // With the https listener on 443, redirects carry no port.
    let redirect = listening_addr(&pool.proc.log(), "redirect0").unwrap();
    let r = raw_request(redirect, "GET /x?y=1 HTTP/1.1\r\nHost: example.test:8080\r\n\r\n");
    assert_eq!(r.header("location"), Some("https://example.test/x?y=1"));
}

// ---------------------------------------------------------------------------------------
// http-to-https

#[test]
fn http_to_https_location_follows_host_and_target() {
    let pool = Pool::start(&["--https", &https_arg("localhost"), "--http-to-https", "127.0.0.1:0"]);
    let port = https_addr(&pool).port();
    let redirect = listening_addr(&pool.proc.log(), "redirect0").expect("redirect0 in the log");
    for (request, location) in [
        ("GET / HTTP/1.1\r\nHost: example.test\r\n\r\n", format!("https://example.test:{port}/")),
        ("GET / HTTP/1.1\r\nHost: example.test:8080\r\n\r\n", format!("https://example.test:{port}/")),
        (
            "GET /some/path?q=1&r=a%20b HTTP/1.1\r\nHost: example.test:8080\r\n\r\n",
            format!("https://example.test:{port}/some/path?q=1&r=a%20b"),
        ),
        ("HEAD /p?x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", format!("https://[::1]:{port}/p?x")),
        // No Host at all (HTTP/1.0): the address the client connected to.
        ("GET /old HTTP/1.0\r\n\r\n", format!("https://127.0.0.1:{port}/old")),
    ] {
        let r = raw_request(redirect, request);
        assert_eq!(r.status, 301, "{request:?}");
        assert_eq!(r.header("location"), Some(location.as_str()), "{request:?}");
        assert_eq!(r.header("connection"), Some("close"), "{request:?}");
    }
    // The redirect points at a listener that answers.
    if common::require_program("curl") {
        let _z = pool.zergling(&[]);
        pool.wait_attached(1);
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{url_effective}", "-L", "--cacert"])
            .arg(cert("ca.pem"))
            .arg("--resolve")
            .arg(format!("localhost:{port}:127.0.0.1"))
            .arg("--resolve")
            .arg(format!("localhost:{}:127.0.0.1", redirect.port()))
            .arg(format!("http://localhost:{}/", redirect.port()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(text, format!("200 https://localhost:{port}/"), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

// ---------------------------------------------------------------------------------------
// Certificate reload

#[test]
fn sighup_reloads_certificates_and_keeps_open_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(cert("localhost.pem"), &cert_path).unwrap();
    std::fs::copy(cert("localhost-key.pem"), &key_path).unwrap();
    let https = format!("127.0.0.1:0,{},{}", cert_path.display(), key_path.display());
    // A spawned zergling: SIGHUP also chain-reloads it, so the open session is handed back
    // and dispatched again while its TLS relay stays in the pool.
    let pool = Pool::start(&["--https", &https, "--zergling", common::demo()]);
    pool.wait_attached(1);
    let addr = https_addr(&pool);

    let mut old = tls_connect(addr, "localhost", &[&rustls::version::TLS13]).unwrap();
    assert_eq!(old.conn.peer_certificates().unwrap()[0], pem_cert("localhost.pem"));
    let r = tls_request(&mut old, "GET", "/whoami", "localhost", "").unwrap();
    let first: Value = serde_json::from_slice(&r.body).unwrap();

    // New files in place, then SIGHUP.
    std::fs::copy(cert("other.pem"), &cert_path).unwrap();
    std::fs::copy(cert("other-key.pem"), &key_path).unwrap();
    pool.proc.signal(Signal::SIGHUP);
    assert!(pool.proc.wait_log("certificates reloaded", 1, T), "{}", pool.proc.log());

    // A new handshake gets the new certificate: it verifies for other.test, no longer for
    // localhost.
    let mut new =
        tls_connect(addr, "other.test", &[&rustls::version::TLS13]).expect("handshake with the new certificate");
    assert_eq!(new.conn.peer_certificates().unwrap()[0], pem_cert("other.pem"));
    let r = tls_request(&mut new, "GET", "/whoami", "other.test", "Connection: close\r\n").unwrap();
    assert_eq!(r.status, 200);
    let err = tls_connect(addr, "localhost", &[&rustls::version::TLS13]).err();
    assert!(err.is_some(), "the old certificate must no longer be presented");
    // The session opened before the reload keeps working, with its TLS session and its
    // metadata: the old zergling handed it back, the replacement serves it.
    assert!(pool.wait_reloads(1, T), "{}", pool.proc.log());
    let r = tls_request(&mut old, "GET", "/whoami", "localhost", "").expect("old session after the reload");
    assert_eq!(r.status, 200);
    let w: Value = serde_json::from_slice(&r.body).unwrap();
    assert_ne!(w["pid"], first["pid"], "served by the replacement zergling: {w}");
    assert_eq!(w["sni"], "localhost", "{w}");
    assert_eq!(w["scheme"], "https", "{w}");
    assert_eq!(w["client"], first["client"], "{w}");

    // Unreadable content: the reload fails, says why, and the current certificate stays.
    std::fs::write(&cert_path, "not a certificate\n").unwrap();
    std::fs::write(&key_path, "not a key\n").unwrap();
    pool.proc.signal(Signal::SIGHUP);
    assert!(pool.proc.wait_log("certificate reload failed", 1, T), "{}", pool.proc.log());
    let line = pool.proc.log().lines().find(|l| l.contains("certificate reload failed")).unwrap_or_default().to_owned();
    assert!(line.contains("cert.pem"), "the failure names the file: {line}");
    let mut after =
        tls_connect(addr, "other.test", &[&rustls::version::TLS13]).expect("handshake after a failed reload");
    assert_eq!(after.conn.peer_certificates().unwrap()[0], pem_cert("other.pem"));
    assert_eq!(tls_request(&mut after, "GET", "/", "other.test", "").unwrap().status, 200);
    assert!(pool.wait_reloads(2, T), "{}", pool.proc.log());
    let r = tls_request(&mut old, "GET", "/", "localhost", "").expect("old session after the failed reload");
    assert_eq!(r.status, 200);
}

// ---------------------------------------------------------------------------------------
// Helpers

/// The absolute path of a file in `certs/`.
fn cert(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("certs").join(name).display().to_string()
}

/// `--https 127.0.0.1:0,certs/NAME.pem,certs/NAME-key.pem`.
fn https_arg(name: &str) -> String {
    format!("127.0.0.1:0,{},{}", cert(&format!("{name}.pem")), cert(&format!("{name}-key.pem")))
}

fn https_addr(pool: &Pool) -> SocketAddr {
    listening_addr(&pool.proc.log(), "https0").expect("https0 in the log")
}

fn pem_cert(name: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(PathBuf::from(cert(name))).unwrap()
}

fn client_config(
    versions: &[&'static SupportedProtocolVersion],
) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    let mut roots = RootCertStore::empty();
    roots.add(pem_cert("ca.pem")).unwrap();
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
}

/// A finished handshake with the development CA as the only trust anchor, ALPN http/1.1.
fn tls_connect(addr: SocketAddr, name: &str, versions: &[&'static SupportedProtocolVersion]) -> std::io::Result<Tls> {
    tls_connect_with(addr, name, client_config(versions).with_no_client_auth())
}

fn tls_connect_with(addr: SocketAddr, name: &str, mut config: ClientConfig) -> std::io::Result<Tls> {
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(T))?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// One HTTP/1.1 request on a TLS session (keep-alive unless `extra` says otherwise).
fn tls_request(s: &mut Tls, method: &str, path: &str, host: &str, extra: &str) -> std::io::Result<Response> {
    tls_request_with_body(s, method, path, host, extra, "")
}

fn tls_request_with_body(
    s: &mut Tls,
    method: &str,
    path: &str,
    host: &str,
    extra: &str,
    body: &str,
) -> std::io::Result<Response> {
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes())?;
    s.flush()?;
    read_response(s)
}

fn tls_get_once(addr: SocketAddr, name: &str, path: &str) -> std::io::Result<Response> {
    let mut s = tls_connect(addr, name, &[&rustls::version::TLS13])?;
    tls_request(&mut s, "GET", path, name, "Connection: close\r\n")
}

/// A complete request on a new TLS session, which then closes.
fn one_https_request(addr: SocketAddr) {
    let r = tls_get_once(addr, "localhost", "/").expect("a normal HTTPS request");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, world!"));
}

/// Reads one response with a Content-Length body, byte by byte up to the head (so that
/// nothing of a following response is consumed).
fn read_response(s: &mut impl Read) -> std::io::Result<Response> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a response"));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok());
    let status = status.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, head.clone()))?;
    let headers: std::collections::HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(Response { status, headers, body })
}

/// A request written as is (own Host header or none) on plain TCP.
fn raw_request(addr: SocketAddr, request: &str) -> Response {
    let mut c = Client::connect(addr);
    c.send_raw(request.as_bytes()).unwrap();
    c.read_response().unwrap()
}

/// `curl` against the https listener; the parsed /whoami JSON.
fn curl_whoami(addr: SocketAddr, flag: &str) -> Value {
    let port = addr.port();
    curl_json(&[flag, "--resolve", &format!("localhost:{port}:127.0.0.1"), &format!("https://localhost:{port}/whoami")])
}

fn curl_json(args: &[&str]) -> Value {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
        .arg(cert("ca.pem"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("curl {args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `openssl s_client -brief` (stdin closed, so it disconnects after the handshake); its
/// whole output.
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-brief", "-CAfile"])
        .arg(cert("ca.pem"))
        .arg("-connect")
        .arg(addr.to_string())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("CONNECTION ESTABLISHED"), "openssl s_client {args:?}:\n{text}");
    text
}

/// The first flight of a rustls client: a real ClientHello.
fn client_hello(name: &str) -> Vec<u8> {
    let config = client_config(&[&rustls::version::TLS13, &rustls::version::TLS12]).with_no_client_auth();
    let mut conn = ClientConnection::new(Arc::new(config), ServerName::try_from(name.to_owned()).unwrap()).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    assert!(hello.len() > 100 && hello[0] == 0x16, "a TLS handshake record");
    hello
}

/// Whether the server closes (EOF or reset, after any alert it sends) within `limit`.
fn server_closes(s: &mut TcpStream, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an alert
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true, // reset
        }
    }
}

/// The pool's descriptor count once it has stopped moving.
fn settled_fd_count(pool: &Pool) -> usize {
    let mut last = pool.proc.fd_count();
    let mut stable_since = Instant::now();
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end && stable_since.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(20));
        let now = pool.proc.fd_count();
        if now != last {
            (last, stable_since) = (now, Instant::now());
        }
    }
    last
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Graceful stop waits for the TLS relays: a client whose response is still in
/// the pool (in the relay and its socket pair) when SIGTERM arrives gets all of it
/// before the pool exits.
#[test]
fn a_graceful_stop_delivers_what_the_tls_relay_holds() {
    let mut pool = Pool::start(&["--https", &https_arg("localhost"), "--zergling", common::demo()]);
    pool.wait_attached(1);
    let addr = https_addr(&pool);
    let mut s = tls_connect(addr, "localhost", &[&rustls::version::TLS13]).unwrap();
    let body = "x".repeat(4 << 20);
    let req = format!(
        "POST /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    s.flush().unwrap();
    // Read a little, then let the rest pile up in the pool while it stops.
    let mut first = vec![0u8; 64 * 1024];
    s.read_exact(&mut first).unwrap();
    pool.proc.signal(nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(1500));
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let mut all = first;
    all.extend_from_slice(&rest);
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    assert_eq!(all.len() - head_end, body.len(), "the response was cut short by the stop\n{}", pool.proc.log());
    assert!(pool.proc.wait_exit(Duration::from_secs(20)).is_some_and(|st| st.success()), "{}", pool.proc.log());
}
