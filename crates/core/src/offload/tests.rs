//! Behaviour tests of static-map as a whole, over a temporary directory: a
//! table-driven conformance test (request → status and headers), the attack list
//! (the secret beside the mapped folder is never served), and I/O through
//! `tokio::io::duplex` and a loopback TCP connection (sendfile, keep-alive).
#![allow(clippy::type_complexity, reason = "inline test tables read best as tuples")]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::classify::http::{parse_head, HeadParse};

const SECRET: &str = "TOPSECRET";

struct Fixture {
    _dir: tempfile::TempDir,
    base: PathBuf,
    opts: StaticOptions,
}

/// Static-map from uWSGI-style pairs, as the pool's configuration would send it
/// (folders made canonical here, as the pool does before WELCOME).
fn options(pairs: &[(&str, String)]) -> StaticOptions {
    let canonical = |p: &str| fs::canonicalize(p).expect("fixture folder").display().to_string();
    let mut s = crate::proto::StaticSettings::default();
    for (key, value) in pairs {
        match *key {
            "static-map" | "static-map2" => {
                let (mount, root) = value.split_once('=').expect("/MOUNT=PATH");
                s.maps.push(crate::proto::StaticMount {
                    mount: mount.to_owned(),
                    root: canonical(root),
                    whole_path: *key == "static-map2",
                });
            }
            "static-index" => s.index.push(value.clone()),
            "static-safe" => s.safe.push(canonical(value)),
            "static-gzip-ext" => s.gzip_exts.push(value.clone()),
            "static-expires-uri" => {
                let (regex, seconds) = value.rsplit_once(' ').expect("REGEX SECONDS");
                s.expires.push(crate::proto::ExpiresRule {
                    by_uri: true,
                    regex: regex.to_owned(),
                    seconds: seconds.parse().expect("seconds"),
                });
            }
            other => panic!("the test helper does not know {other}"),
        }
    }
    StaticOptions::from_settings(&s)
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(path, bytes).expect("write fixture");
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = fs::canonicalize(dir.path()).expect("canonical tempdir");
    let www = base.join("www");
    write(&www.join("hello.txt"), b"0123456789");
    write(&www.join("page.html"), b"<p>hi</p>\n");
    write(&www.join("app.js"), b"let a = 1;\n");
    write(&www.join("style.css"), b"body{}\n");
    write(&www.join("style.css.gz"), b"GZ");
    write(&www.join("style.css.br"), b"BR");
    write(&www.join("only-gz.css"), b"plain");
    write(&www.join("only-gz.css.gz"), b"GZONLY");
    write(&www.join("gz-out.css"), b"plain");
    write(&www.join("sub/index.html"), b"<h1>sub</h1>\n");
    write(&www.join("big.bin"), &noise(3 * 1024 * 1024 + 123));
    write(&www.join("..;"), b"tomcat");
    fs::create_dir_all(www.join("empty")).expect("mkdir");
    write(&base.join("www2/secret.txt"), SECRET.as_bytes());
    write(&base.join("safe/shared.txt"), b"shared");
    write(&base.join("second/extra.txt"), b"second");
    write(&base.join("fav.ico"), b"ICO");
    symlink(base.join("www2/secret.txt"), www.join("link-out")).expect("symlink");
    symlink(base.join("www2"), www.join("dir-out")).expect("symlink");
    symlink(base.join("safe/shared.txt"), www.join("link-safe")).expect("symlink");
    symlink(base.join("www2/secret.txt"), www.join("gz-out.css.gz")).expect("symlink");
    symlink(base.join("www2/secret.txt"), www.join("sub2-index")).expect("symlink");
    fs::create_dir_all(www.join("sub2")).expect("mkdir");
    symlink(base.join("www2/secret.txt"), www.join("sub2/index.html")).expect("symlink");
    let b = base.display();
    let opts = options(&[
        ("static-map", format!("/s={b}/www")),
        ("static-map", format!("/s={b}/second")),
        ("static-map", format!("/favicon.ico={b}/fav.ico")),
        ("static-map2", format!("/www={b}")),
        ("static-index", "index.html".into()),
        ("static-safe", format!("{b}/safe")),
        ("static-gzip-ext", "css".into()),
        ("static-expires-uri", "^/s/app\\.js$ 3600".into()),
    ]);
    Fixture { _dir: dir, base, opts }
}

/// A parsed response.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = r.parse(raw).ok()? else { return None };
    Some(Response {
        status: r.code?,
        headers: r.headers.iter().map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned())).collect(),
        body: raw[len..].to_vec(),
    })
}

/// Sends one raw request through `try_serve` over a duplex stream. `None` when the
/// request head does not even parse (it would never reach static-map).
async fn http(opts: &StaticOptions, request: &str) -> Option<(Outcome, Vec<u8>)> {
    let bytes = request.as_bytes();
    let HeadParse::Complete(head) = parse_head(bytes) else { return None };
    let (mut client, mut server) = tokio::io::duplex(1 << 20);
    let reader = tokio::spawn(async move {
        let mut v = Vec::new();
        client.read_to_end(&mut v).await.map(|_| v)
    });
    let outcome = try_serve(opts, &mut server, &bytes[..head.len], &head).await.expect("serve");
    drop(server);
    let raw = reader.await.expect("reader task").expect("read");
    Some((outcome, raw))
}

fn request(method: &str, target: &str, version: &str, headers: &[(&str, &str)]) -> String {
    let mut r = format!("{method} {target} HTTP/{version}\r\nHost: test\r\n");
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r
}

async fn get(opts: &StaticOptions, target: &str, headers: &[(&str, &str)]) -> Response {
    let (outcome, raw) = http(opts, &request("GET", target, "1.1", headers)).await.expect("parsable");
    assert!(matches!(outcome, Outcome::Served { .. }), "{target}: {outcome:?}");
    parse_response(&raw).expect("a response")
}

/// What a conformance row expects.
enum Expect {
    /// Falls through to the application, nothing written.
    NotStatic,
    /// Status, headers (`None`: absent, `Some("?")`: present), body (`None`: unchecked).
    Status(u16, &'static [(&'static str, Option<&'static str>)], Option<&'static [u8]>),
}

#[tokio::test]
async fn conformance_table() {
    use Expect::*;
    let f = fixture();
    #[rustfmt::skip]
    let rows: &[(&str, &str, &str, &[(&str, &str)], Expect)] = &[
        // Basics: every header of a hit.
        ("GET", "/s/hello.txt", "1.1", &[], Status(200, &[
            ("content-type", Some("text/plain; charset=utf-8")), ("content-length", Some("10")),
            ("accept-ranges", Some("bytes")), ("etag", Some("?")), ("last-modified", Some("?")), ("date", Some("?")),
            ("vary", None), ("content-encoding", None), ("connection", None), ("cache-control", None),
        ], Some(b"0123456789"))),
        ("HEAD", "/s/hello.txt", "1.1", &[], Status(200, &[("content-length", Some("10")), ("etag", Some("?"))], Some(b""))),
        ("GET", "/s/hello.txt?v=3", "1.1", &[], Status(200, &[], Some(b"0123456789"))),
        ("GET", "/s//hello.txt", "1.1", &[], Status(200, &[], Some(b"0123456789"))),
        ("GET", "/s/page.html", "1.1", &[], Status(200, &[("content-type", Some("text/html; charset=utf-8"))], None)),
        // Only GET and HEAD; bodies fall through.
        ("POST", "/s/hello.txt", "1.1", &[], NotStatic),
        ("PUT", "/s/hello.txt", "1.1", &[], NotStatic),
        ("DELETE", "/s/hello.txt", "1.1", &[], NotStatic),
        ("OPTIONS", "/s/hello.txt", "1.1", &[], NotStatic),
        ("get", "/s/hello.txt", "1.1", &[], NotStatic),
        ("GET", "/s/hello.txt", "1.1", &[("Content-Length", "5")], NotStatic),
        ("GET", "/s/hello.txt", "1.1", &[("Transfer-Encoding", "chunked")], NotStatic),
        ("GET", "/s/hello.txt", "1.1", &[("Content-Length", "0")], Status(200, &[], None)),
        // Misses, boundaries, search path, non-origin form.
        ("GET", "/s/missing.txt", "1.1", &[], NotStatic),
        ("GET", "/sfoo/hello.txt", "1.1", &[], NotStatic),
        ("GET", "/shello.txt", "1.1", &[], NotStatic),
        ("GET", "/api/x", "1.1", &[], NotStatic),
        ("GET", "http://test/s/hello.txt", "1.1", &[], NotStatic),
        ("GET", "/s/extra.txt", "1.1", &[], Status(200, &[], Some(b"second"))),
        ("GET", "/s/hello.txt/", "1.1", &[], NotStatic),
        // Directories: index with nginx's redirect, none without.
        ("GET", "/s/sub", "1.1", &[], Status(301, &[("location", Some("/s/sub/")), ("content-length", Some("0"))], Some(b""))),
        ("GET", "/s/sub?x=1", "1.1", &[], Status(301, &[("location", Some("/s/sub/?x=1"))], Some(b""))),
        ("GET", "/s/sub/", "1.1", &[], Status(200, &[("content-type", Some("text/html; charset=utf-8"))], Some(b"<h1>sub</h1>\n"))),
        ("HEAD", "/s/sub/", "1.1", &[], Status(200, &[("content-length", Some("13"))], Some(b""))),
        ("GET", "/s/empty/", "1.1", &[], NotStatic),
        ("GET", "/s/empty", "1.1", &[], NotStatic),
        ("GET", "/s", "1.1", &[], NotStatic),
        // A file target serves its mount point only.
        ("GET", "/favicon.ico", "1.1", &[], Status(200, &[("content-type", Some("image/x-icon"))], Some(b"ICO"))),
        ("GET", "/favicon.icoXYZ", "1.1", &[], NotStatic),
        ("GET", "/favicon.ico/x", "1.1", &[], NotStatic),
        // static-map2 appends the whole path.
        ("GET", "/www/hello.txt", "1.1", &[], Status(200, &[], Some(b"0123456789"))),
        ("GET", "/www2/secret.txt", "1.1", &[], NotStatic),
        // Precompressed variants and q-values.
        ("GET", "/s/style.css", "1.1", &[("Accept-Encoding", "gzip, deflate, br")], Status(200, &[
            ("content-encoding", Some("br")), ("vary", Some("Accept-Encoding")),
            ("content-type", Some("text/css; charset=utf-8")), ("content-length", Some("2")),
        ], Some(b"BR"))),
        ("GET", "/s/style.css", "1.1", &[("Accept-Encoding", "gzip")], Status(200, &[("content-encoding", Some("gzip"))], Some(b"GZ"))),
        ("GET", "/s/style.css", "1.1", &[("Accept-Encoding", "br;q=0.5, gzip")], Status(200, &[("content-encoding", Some("gzip"))], Some(b"GZ"))),
        ("GET", "/s/style.css", "1.1", &[("Accept-Encoding", "gzip;q=0")], Status(200, &[
            ("content-encoding", None), ("vary", Some("Accept-Encoding")),
        ], Some(b"body{}\n"))),
        ("GET", "/s/style.css", "1.1", &[], Status(200, &[("content-encoding", None), ("vary", Some("Accept-Encoding"))], Some(b"body{}\n"))),
        ("HEAD", "/s/style.css", "1.1", &[("Accept-Encoding", "gzip")], Status(200, &[("content-encoding", Some("gzip")), ("content-length", Some("2"))], Some(b""))),
        ("GET", "/s/only-gz.css", "1.1", &[("Accept-Encoding", "br")], Status(200, &[("content-encoding", None)], Some(b"plain"))),
        ("GET", "/s/only-gz.css", "1.1", &[("Accept-Encoding", "br, gzip")], Status(200, &[("content-encoding", Some("gzip"))], Some(b"GZONLY"))),
        ("GET", "/s/gz-out.css", "1.1", &[("Accept-Encoding", "gzip")], Status(200, &[("content-encoding", None)], Some(b"plain"))),
        ("GET", "/s/hello.txt", "1.1", &[("Accept-Encoding", "gzip")], Status(200, &[("vary", None), ("content-encoding", None)], None)),
        ("GET", "/s/style.css", "1.1", &[("Accept-Encoding", "gzip"), ("Range", "bytes=1-1")], Status(206, &[
            ("content-encoding", Some("gzip")), ("content-range", Some("bytes 1-1/2")),
        ], Some(b"Z"))),
        // Expires.
        ("GET", "/s/app.js", "1.1", &[], Status(200, &[("cache-control", Some("max-age=3600")), ("expires", Some("?"))], None)),
        // Ranges.
        ("GET", "/s/hello.txt", "1.1", &[("Range", "bytes=0-1")], Status(206, &[
            ("content-range", Some("bytes 0-1/10")), ("content-length", Some("2")), ("content-type", Some("text/plain; charset=utf-8")),
        ], Some(b"01"))),
        ("GET", "/s/hello.txt", "1.1", &[("Range", "bytes=-3")], Status(206, &[("content-range", Some("bytes 7-9/10"))], Some(b"789"))),
        ("GET", "/s/hello.txt", "1.1", &[("Range", "bytes=-20")], Status(206, &[("content-range", Some("bytes 0-9/10"))], Some(b"0123456789"))),
        ("GET", "/s/hello.txt", "1.1", &[("Range", "bytes=10-")], Status(416, &[("content-range", Some("bytes */10")), ("content-length", Some("0"))], Some(b""))),
        ("GET", "/s/hello.txt", "1.1", &[("Range", "bytes=5-3")], Status(200, &[("content-range", None)], Some(b"0123456789"))),
        ("GET", "/s/hello.txt", "1.1", &[("Range", "lines=1-2")], Status(200, &[], Some(b"0123456789"))),
        ("GET", "/s/hello.txt", "1.1", &[("Range", "bytes=0-1"), ("Range", "bytes=2-3")], Status(200, &[], None)),
        ("HEAD", "/s/hello.txt", "1.1", &[("Range", "bytes=0-1")], Status(206, &[("content-length", Some("2"))], Some(b""))),
        ("GET", "/s/hello.txt", "1.1", &[("Range", "bytes=0-1"), ("If-Range", "\"stale\"")], Status(200, &[], Some(b"0123456789"))),
        // Conditionals.
        ("GET", "/s/hello.txt", "1.1", &[("If-None-Match", "*")], Status(304, &[("etag", Some("?")), ("last-modified", Some("?")), ("content-length", None)], Some(b""))),
        ("GET", "/s/hello.txt", "1.1", &[("If-None-Match", "\"nope\"")], Status(200, &[], Some(b"0123456789"))),
        ("GET", "/s/hello.txt", "1.1", &[("If-Modified-Since", "Fri, 31 Dec 9999 23:59:59 GMT")], Status(304, &[("etag", Some("?"))], Some(b""))),
        ("GET", "/s/hello.txt", "1.1", &[("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")], Status(200, &[], None)),
        ("GET", "/s/hello.txt", "1.1", &[("If-Modified-Since", "garbage")], Status(200, &[], None)),
        ("GET", "/s/hello.txt", "1.1", &[("If-None-Match", "\"nope\""), ("If-Modified-Since", "Fri, 31 Dec 9999 23:59:59 GMT")], Status(200, &[], None)),
        // Connection handling.
        ("GET", "/s/hello.txt", "1.0", &[], Status(200, &[("connection", Some("close"))], None)),
        ("GET", "/s/hello.txt", "1.0", &[("Connection", "keep-alive")], Status(200, &[("connection", Some("keep-alive"))], None)),
        ("GET", "/s/hello.txt", "1.1", &[("Connection", "close")], Status(200, &[("connection", Some("close"))], None)),
        // Symlinks: into static-safe served, out refused.
        ("GET", "/s/link-safe", "1.1", &[], Status(200, &[], Some(b"shared"))),
        ("GET", "/s/link-out", "1.1", &[], Status(403, &[], None)),
        ("GET", "/s/dir-out/secret.txt", "1.1", &[], Status(403, &[], None)),
        ("GET", "/s/sub2/", "1.1", &[], Status(403, &[], None)),
        // Path tricks under a mount point: 403; a literal odd name is just a name.
        ("GET", "/s/%2e%2e/www2/secret.txt", "1.1", &[], Status(403, &[("content-type", Some("text/plain; charset=utf-8"))], Some(b"Forbidden\n"))),
        ("HEAD", "/s/%2e%2e/www2/secret.txt", "1.1", &[], Status(403, &[("content-length", Some("10"))], Some(b""))),
        ("GET", "/s/..;", "1.1", &[], Status(200, &[], Some(b"tomcat"))),
        ("GET", "/api/%2e%2e/x", "1.1", &[], NotStatic),
    ];
    for (method, target, version, headers, expect) in rows {
        let req = request(method, target, version, headers);
        let what = format!("{method} {target} HTTP/{version} {headers:?}");
        let (outcome, raw) = http(&f.opts, &req).await.unwrap_or_else(|| panic!("{what}: head does not parse"));
        match expect {
            NotStatic => {
                assert_eq!(outcome, Outcome::NotStatic, "{what}");
                assert!(raw.is_empty(), "{what}: wrote {} bytes while falling through", raw.len());
            }
            Status(status, want_headers, want_body) => {
                let resp = parse_response(&raw).unwrap_or_else(|| panic!("{what}: no response in {raw:?}"));
                assert_eq!(resp.status, *status, "{what}: {resp:?}");
                for (name, want) in *want_headers {
                    match (resp.header(name), want) {
                        (got, None) => assert_eq!(got, None, "{what}: header {name}"),
                        (got, Some("?")) => assert!(got.is_some(), "{what}: header {name} missing"),
                        (got, Some(v)) => assert_eq!(got, Some(*v), "{what}: header {name}"),
                    }
                }
                if let Some(body) = want_body {
                    assert_eq!(String::from_utf8_lossy(&resp.body), String::from_utf8_lossy(body), "{what}");
                }
                // The Content-Length of a GET always frames the body exactly.
                if *method == "GET" && resp.status != 304 {
                    assert_eq!(resp.header("content-length"), Some(resp.body.len().to_string().as_str()), "{what}");
                }
                let keep_alive = resp.header("connection") != Some("close");
                assert!(matches!(outcome, Outcome::Served { keep_alive: k, .. } if k == keep_alive), "{what}");
            }
        }
    }
}

#[tokio::test]
async fn validators_round_trip() {
    let f = fixture();
    let first = get(&f.opts, "/s/hello.txt", &[]).await;
    let etag = first.header("etag").expect("etag").to_owned();
    let last_modified = first.header("last-modified").expect("last-modified").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let r = get(&f.opts, "/s/hello.txt", &[("If-None-Match", &etag)]).await;
    assert_eq!((r.status, r.body.len()), (304, 0));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("last-modified"), Some(last_modified.as_str()));
    let weak = format!("\"x\", W/{etag}");
    assert_eq!(get(&f.opts, "/s/hello.txt", &[("If-None-Match", &weak)]).await.status, 304);
    assert_eq!(get(&f.opts, "/s/hello.txt", &[("If-Modified-Since", &last_modified)]).await.status, 304);

    let r = get(&f.opts, "/s/hello.txt", &[("Range", "bytes=2-3"), ("If-Range", &etag)]).await;
    assert_eq!((r.status, r.body.as_slice()), (206, b"23".as_slice()));
    let r = get(&f.opts, "/s/hello.txt", &[("Range", "bytes=2-3"), ("If-Range", &last_modified)]).await;
    assert_eq!(r.status, 206);
    let r = get(&f.opts, "/s/hello.txt", &[("Range", "bytes=2-3"), ("If-Range", &format!("W/{etag}"))]).await;
    assert_eq!(r.status, 200);

    // A rewritten file gets a new ETag.
    fs::write(f.base.join("www/hello.txt"), b"9876543210").expect("rewrite");
    let r = get(&f.opts, "/s/hello.txt", &[("If-None-Match", &etag)]).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.header("etag"), Some(etag.as_str()));
    // The variant has its own ETag.
    let plain = get(&f.opts, "/s/style.css", &[]).await;
    let gz = get(&f.opts, "/s/style.css", &[("Accept-Encoding", "gzip")]).await;
    assert_ne!(plain.header("etag"), gz.header("etag"));
}

/// Splits a multipart/byteranges body into (Content-Range, bytes) parts.
fn multipart_parts(resp: &Response) -> Vec<(String, Vec<u8>)> {
    let ct = resp.header("content-type").expect("content-type");
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").expect("multipart");
    let delimiter = format!("\r\n--{boundary}");
    let body = &resp.body;
    let mut parts = Vec::new();
    let mut pos = 0;
    loop {
        assert_eq!(&body[pos..pos + delimiter.len()], delimiter.as_bytes(), "delimiter at {pos}");
        pos += delimiter.len();
        if body[pos..].starts_with(b"--\r\n") {
            assert_eq!(pos + 4, body.len(), "trailer ends the body");
            return parts;
        }
        let head_end = pos + body[pos..].windows(4).position(|w| w == b"\r\n\r\n").expect("part head") + 4;
        let head = String::from_utf8_lossy(&body[pos..head_end]).into_owned();
        let range =
            head.split("\r\n").find_map(|l| l.strip_prefix("Content-Range: bytes ")).expect("content-range").to_owned();
        let (span, _) = range.split_once('/').expect("total");
        let (s, e) = span.split_once('-').expect("span");
        let (s, e): (usize, usize) = (s.parse().expect("start"), e.parse().expect("end"));
        parts.push((range, body[head_end..head_end + e - s + 1].to_vec()));
        pos = head_end + e - s + 1;
    }
}

#[tokio::test]
async fn big_file_and_ranges_over_the_generic_path() {
    let f = fixture();
    let data = fs::read(f.base.join("www/big.bin")).expect("read fixture");
    let len = data.len();
    let r = get(&f.opts, "/s/big.bin", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r.body == data, "full body differs");

    for (range, start, end) in [
        ("bytes=0-99".to_owned(), 0, 99),
        (format!("bytes={}-{}", len / 2, len / 2 + 300_000), len / 2, len / 2 + 300_000),
        ("bytes=-1000".to_owned(), len - 1000, len - 1),
        (format!("bytes={}-", len - 1), len - 1, len - 1),
    ] {
        let r = get(&f.opts, "/s/big.bin", &[("Range", &range)]).await;
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.header("content-range"), Some(format!("bytes {start}-{end}/{len}").as_str()));
        assert!(r.body == data[start..=end], "{range}: body differs");
    }

    let r = get(&f.opts, "/s/big.bin", &[("Range", "bytes=0-9, 1000000-1299999, -5")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()));
    let parts = multipart_parts(&r);
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], (format!("0-9/{len}"), data[0..10].to_vec()));
    assert!(parts[1].1 == data[1_000_000..1_300_000]);
    assert_eq!(parts[2], (format!("{}-{}/{len}", len - 5, len - 1), data[len - 5..].to_vec()));
}

/// The attack list: every request for the secret, in every spelling, through every
/// entry point. The secret is never in a response, and no attack is answered 2xx.
#[tokio::test]
async fn attacks_never_reach_the_secret() {
    let f = fixture();
    let attacks = [
        "/s/../www2/secret.txt",
        "/s/%2e%2e/www2/secret.txt",
        "/s/%2E%2E/www2/secret.txt",
        "/s/.%2e/www2/secret.txt",
        "/s/%2e./www2/secret.txt",
        "/s/%252e%252e/www2/secret.txt",
        "/s/%c0%ae%c0%ae/www2/secret.txt",
        "/s/%e0%80%ae%e0%80%ae/www2/secret.txt",
        "/s/%2e%2e%2fwww2%2fsecret.txt",
        "/s/..%2fwww2/secret.txt",
        "/s/..%2Fwww2%2Fsecret.txt",
        "/s/..%5cwww2%5csecret.txt",
        "/s/..\\www2\\secret.txt",
        "/s/%5c..%5cwww2%5csecret.txt",
        "/s/secret.txt%00.txt",
        "/s/..%00/www2/secret.txt",
        "/s/%%32%65%%32%65/www2/secret.txt",
        "/s/%u002e%u002e/www2/secret.txt",
        "/s//../www2/secret.txt",
        "/s/./../www2/secret.txt",
        "/s/sub/../../www2/secret.txt",
        "/s/link-out",
        "/s/dir-out/secret.txt",
        "/s/sub2/",
        "/s/sub2",
        "/s/sub2/index.html",
        "/www/../www2/secret.txt",
        "/www/%2e%2e/www2/secret.txt",
        "/www2/secret.txt",
        "/www/www2/secret.txt",
        "/s/..;/www2/secret.txt",
        "/s%2f..%2fwww2/secret.txt",
        "/favicon.ico/../www2/secret.txt",
    ];
    for target in attacks {
        for method in ["GET", "HEAD"] {
            for extra in [&[][..], &[("Accept-Encoding", "gzip, br"), ("Range", "bytes=0-")][..]] {
                let Some((outcome, raw)) = http(&f.opts, &request(method, target, "1.1", extra)).await else {
                    continue; // the classifier rejects it before static-map sees it
                };
                let text = String::from_utf8_lossy(&raw);
                assert!(!text.contains(SECRET), "{method} {target}: secret served:\n{text}");
                if outcome != Outcome::NotStatic {
                    let resp = parse_response(&raw).expect("response");
                    assert!(matches!(resp.status, 403 | 404), "{method} {target}: {}", resp.status);
                }
            }
        }
        // The same paths as nginx would pass them over uwsgi (already decoded).
        let vars = |k: &str| match k {
            "REQUEST_METHOD" => Some("GET"),
            "PATH_INFO" => Some(target),
            _ => None,
        };
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let outcome = try_serve_vars(&f.opts, &mut server, vars).await.expect("serve");
        drop(server);
        let mut raw = Vec::new();
        client.read_to_end(&mut raw).await.expect("read");
        assert!(!String::from_utf8_lossy(&raw).contains(SECRET), "uwsgi {target}: secret served");
        if outcome != Outcome::NotStatic {
            let resp = parse_response(&raw).expect("response");
            assert!(matches!(resp.status, 403 | 404), "uwsgi {target}: {}", resp.status);
        }
    }
    // The resolver says why, without the HTTP layer.
    let path = RequestPath::from_target("/s/link-out").expect("origin form");
    assert!(matches!(resolve(&f.opts, "GET", &path, &[]), Resolution::Refused(Refusal::Outside(_))));
    let path = RequestPath::from_target("/s/%2e%2e/www2/secret.txt").expect("origin form");
    assert!(matches!(resolve(&f.opts, "GET", &path, &[]), Resolution::Refused(Refusal::Path(PathRefusal::DotSegment))));
}

#[tokio::test]
async fn without_static_safe_a_symlink_out_is_refused() {
    let f = fixture();
    let opts = options(&[("static-map", format!("/s={}/www", f.base.display()))]);
    let r = get(&opts, "/s/link-safe", &[]).await;
    assert_eq!(r.status, 403);
    // A symlinked root is fine: the root itself is canonicalised.
    symlink(f.base.join("www"), f.base.join("www-link")).expect("symlink");
    let opts = options(&[("static-map", format!("/s={}/www-link", f.base.display()))]);
    assert_eq!(get(&opts, "/s/hello.txt", &[]).await.status, 200);
}

#[tokio::test]
async fn uwsgi_entry_writes_a_status_line_and_closes() {
    let f = fixture();
    let vars = |k: &str| match k {
        "REQUEST_METHOD" => Some("GET"),
        "PATH_INFO" => Some("/s/hello.txt"),
        "HTTP_RANGE" => Some("bytes=1-2"),
        "CONTENT_LENGTH" => Some(""),
        _ => None,
    };
    let (mut client, mut server) = tokio::io::duplex(1 << 16);
    let outcome = try_serve_vars(&f.opts, &mut server, vars).await.expect("serve");
    drop(server);
    let mut raw = Vec::new();
    client.read_to_end(&mut raw).await.expect("read");
    assert!(matches!(outcome, Outcome::Served { keep_alive: false, .. }));
    assert!(raw.starts_with(b"HTTP/1.1 206 Partial Content\r\n"));
    let resp = parse_response(&raw).expect("response");
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(resp.body, b"12");

    let post = |k: &str| match k {
        "REQUEST_METHOD" => Some("POST"),
        "PATH_INFO" => Some("/s/hello.txt"),
        _ => None,
    };
    let (_client, mut server) = tokio::io::duplex(1 << 16);
    assert_eq!(try_serve_vars(&f.opts, &mut server, post).await.expect("serve"), Outcome::NotStatic);
    let redirect = |k: &str| match k {
        "REQUEST_METHOD" => Some("GET"),
        "PATH_INFO" => Some("/s/sub"),
        "QUERY_STRING" => Some("a=b"),
        _ => None,
    };
    let (mut client, mut server) = tokio::io::duplex(1 << 16);
    try_serve_vars(&f.opts, &mut server, redirect).await.expect("serve");
    drop(server);
    let mut raw = Vec::new();
    client.read_to_end(&mut raw).await.expect("read");
    assert_eq!(parse_response(&raw).expect("response").header("location"), Some("/s/sub/?a=b"));
}

#[tokio::test]
async fn empty_options_never_touch_the_request() {
    let opts = StaticOptions::default();
    assert!(opts.is_empty());
    let (outcome, raw) = http(&opts, &request("GET", "/s/hello.txt", "1.1", &[])).await.expect("parsable");
    assert_eq!(outcome, Outcome::NotStatic);
    assert!(raw.is_empty());
}

/// Reads one response (head and Content-Length body) from a stream.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> Response {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head_len = end + 4;
            let resp = parse_response(&buf[..head_len]).expect("response head");
            let body_len: usize =
                if head_only { 0 } else { resp.header("content-length").map_or(0, |v| v.parse().expect("length")) };
            while buf.len() < head_len + body_len {
                let mut chunk = vec![0; 1 << 20];
                let n = stream.read(&mut chunk).await.expect("read");
                assert!(n > 0, "connection closed early");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[head_len..head_len + body_len].to_vec();
            buf.drain(..head_len + body_len);
            return Response { body, ..resp };
        }
        let mut chunk = vec![0; 65536];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A loopback server that serves static requests with `try_serve_tcp` on keep-alive
/// connections and answers anything else with a canned "dynamic" response, the way
/// the pool would hand it on.
async fn serve_loop(opts: StaticOptions, listener: TcpListener) {
    let Ok((mut stream, _)) = listener.accept().await else { return };
    let mut buf = Vec::new();
    loop {
        let head = loop {
            if let HeadParse::Complete(h) = parse_head(&buf) {
                break h;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head_bytes: Vec<u8> = buf.drain(..head.len).collect();
        match try_serve_tcp(&opts, &mut stream, &head_bytes, &head).await {
            Ok(Outcome::Served { keep_alive: true, .. }) => {}
            Ok(Outcome::Served { keep_alive: false, .. }) | Err(_) => return,
            Ok(Outcome::NotStatic) => {
                let body = format!("dynamic {}", head.target);
                let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                if stream.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[tokio::test]
async fn sendfile_over_tcp_with_keep_alive() {
    let f = fixture();
    let big = noise(32 * 1024 * 1024 + 7);
    write(&f.base.join("www/huge.bin"), &big);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(serve_loop(f.opts.clone(), listener));
    let mut client = TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();

    let steps: &[(&str, &str, &[(&str, &str)])] = &[
        ("GET", "/s/huge.bin", &[]),
        ("GET", "/api/one", &[]),
        ("GET", "/s/huge.bin", &[("Range", "bytes=0-65535")]),
        ("HEAD", "/s/huge.bin", &[]),
        ("GET", "/s/huge.bin", &[("Range", "bytes=16000000-16999999")]),
        ("GET", "/s/hello.txt", &[]),
        ("GET", "/api/two", &[]),
        ("GET", "/s/huge.bin", &[("Range", "bytes=-1")]),
        ("GET", "/s/huge.bin", &[("Range", "bytes=0-1,-1")]),
        ("GET", "/s/hello.txt", &[("Connection", "close")]),
    ];
    for (method, target, headers) in steps {
        client.write_all(request(method, target, "1.1", headers).as_bytes()).await.expect("send");
        let r = read_response(&mut client, &mut buf, *method == "HEAD").await;
        let range = headers.iter().find(|(n, _)| *n == "Range").map(|(_, v)| *v);
        match (*target, range) {
            ("/s/huge.bin", None) if *method == "GET" => {
                assert_eq!(r.status, 200);
                assert!(r.body == big, "full body differs");
            }
            ("/s/huge.bin", None) => {
                assert_eq!((r.status, r.header("content-length")), (200, Some(big.len().to_string().as_str())));
            }
            ("/s/huge.bin", Some("bytes=0-65535")) => assert!(r.body == big[..65536]),
            ("/s/huge.bin", Some("bytes=16000000-16999999")) => assert!(r.body == big[16_000_000..17_000_000]),
            ("/s/huge.bin", Some("bytes=-1")) => assert_eq!(r.body, big[big.len() - 1..]),
            ("/s/huge.bin", Some(_)) => {
                assert!(r.header("content-type").is_some_and(|c| c.starts_with("multipart/byteranges")));
                let parts = multipart_parts(&r);
                assert_eq!(parts.len(), 2);
                assert_eq!(parts[0].1, big[..2]);
            }
            ("/s/hello.txt", _) => assert_eq!(r.body, b"0123456789"),
            (api, _) => assert_eq!(r.body, format!("dynamic {api}").into_bytes()),
        }
    }
    // The last request said close: the server ends the connection.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.expect("read to end");
    assert!(rest.is_empty() && buf.is_empty());
    server.await.expect("server task");
}

#[tokio::test]
async fn sendfile_reports_a_file_that_shrank() {
    let f = fixture();
    let path = f.base.join("www/shrinks.bin");
    write(&path, &noise(1 << 20));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut v = Vec::new();
        let _ = s.read_to_end(&mut v).await;
        v
    });
    let (mut stream, _) = listener.accept().await.expect("accept");
    let req = request("GET", "/s/shrinks.bin", "1.1", &[]);
    let HeadParse::Complete(head) = parse_head(req.as_bytes()) else { panic!("head") };
    let answer = answer_http(&f.opts, req.as_bytes(), &head).await.expect("answer").expect("static");
    fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(1000).expect("truncate");
    let err =
        send::write_response_tcp(&mut stream, &answer.plan, answer.file.as_ref(), std::time::Duration::from_secs(5))
            .await
            .expect_err("short file");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    let (mut client_side, mut server_side) = tokio::io::duplex(1 << 16);
    let err =
        send::write_response(&mut server_side, &answer.plan, answer.file.as_ref(), std::time::Duration::from_secs(5))
            .await
            .expect_err("short file");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    drop(server_side);
    let mut v = Vec::new();
    client_side.read_to_end(&mut v).await.expect("read");
    drop(stream);
    let got = client.await.expect("client");
    assert!(got.len() < 1 << 20);
}
