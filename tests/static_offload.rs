//! Static-map offload (issue 5) through the real binaries, over loopback TCP: the
//! conformance table, the attack list (against the pool and against a zergling
//! holding the connection), a 200 MiB file with ranges, keep-alive connections
//! mixing static and dynamic requests, the same answers whoever holds the
//! connection, and static files served while no zergling is attached and a dynamic
//! request waits in the queue.
//!
//! The unit-level tests of the module live in `crates/core/src/offload/tests.rs`; these check
//! what a client of the running pool sees. Every request here reads its response
//! with the small HTTP reader below, which frames bodies exactly (Content-Length,
//! chunked, HEAD, 304) and, for `Connection: close` requests, checks that nothing
//! follows the framed body: a HEAD or a 304 that leaked a body would show there.

mod common;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Pool;

const T: Duration = Duration::from_secs(15);

/// The mtime given to every fixture file, so that `Last-Modified` is known.
const MTIME_SECS: u64 = 1_700_000_000;
/// `MTIME_SECS` as an HTTP date.
const LM: &str = "Tue, 14 Nov 2023 22:13:20 GMT";
/// A day before `LM`.
const OLD: &str = "Mon, 13 Nov 2023 22:13:20 GMT";

// ---------------------------------------------------------------------------
// The conformance table
// ---------------------------------------------------------------------------

/// An expected response header. Values may hold `{etag}` (the ETag of the row's
/// target) and `{lm}`.
#[derive(Debug, Clone, Copy)]
enum H {
    /// Equal to this value.
    Is(&'static str),
    /// Absent.
    Absent,
    /// `Expires` is `Date` plus this many seconds.
    ExpiresIn(u64),
}

/// The expected body.
#[derive(Debug, Clone, Copy)]
enum B {
    /// The whole file (path relative to the fixture root).
    File(&'static str),
    /// Bytes `first..=last` of the file.
    Range(&'static str, u64, u64),
    /// `multipart/byteranges` with these parts of the file, in this order.
    Multipart(&'static str, &'static [(u64, u64)]),
    /// No body at all (HEAD, 304, 416, 301).
    Empty,
    /// Not static: the demo application answered (`404 not found`, none of the
    /// static headers).
    App,
}

struct Case {
    method: &'static str,
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// A request body (sent with its Content-Length).
    body: &'static [u8],
    status: u16,
    expect: &'static [(&'static str, H)],
    want: B,
}

const fn case(
    method: &'static str,
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    expect: &'static [(&'static str, H)],
    want: B,
) -> Case {
    Case { method, target, headers, body: b"", status, expect, want }
}

const TXT: (&str, H) = ("content-type", H::Is("text/plain; charset=utf-8"));
const NO_GZIP: [(&str, H); 2] = [("content-encoding", H::Absent), ("vary", H::Absent)];
const VALIDATORS: [(&str, H); 2] = [("etag", H::Is("{etag}")), ("last-modified", H::Is("{lm}"))];

#[rustfmt::skip]
const CASES: &[Case] = &[
    // GET and HEAD are served, HEAD with the GET's headers and no body.
    case("GET", "/static/hello.txt", &[], 200, &[TXT, NO_GZIP[0], NO_GZIP[1], ("cache-control", H::Absent), ("expires", H::Absent)], B::File("www/hello.txt")),
    case("HEAD", "/static/hello.txt", &[], 200, &[TXT, ("content-length", H::Is("26"))], B::Empty),
    case("GET", "/static/hello.txt?v=3#frag", &[], 200, &[TXT], B::File("www/hello.txt")),
    case("GET", "/static//hello.txt", &[], 200, &[TXT], B::File("www/hello.txt")),
    case("GET", "/static/with%20space.txt", &[], 200, &[TXT], B::File("www/with space.txt")),
    case("GET", "/static/data.bin", &[], 200, &[("content-type", H::Is("application/octet-stream")), ("content-length", H::Is("1000"))], B::File("www/data.bin")),
    case("GET", "/static/empty.txt", &[], 200, &[TXT, ("content-length", H::Is("0"))], B::File("www/empty.txt")),
    case("GET", "/static/logo.png", &[], 200, &[("content-type", H::Is("image/png")), ("cache-control", H::Is("max-age=3600")), ("expires", H::ExpiresIn(3600))], B::File("www/logo.png")),
    // Other methods, misses, directories without an index: the application answers.
    Case { method: "POST", target: "/static/hello.txt", headers: &[], body: b"a=1&b=2", status: 404, expect: &[], want: B::App },
    case("PUT", "/static/hello.txt", &[], 404, &[], B::App),
    case("DELETE", "/static/hello.txt", &[], 404, &[], B::App),
    case("OPTIONS", "/static/hello.txt", &[], 404, &[], B::App),
    Case { method: "GET", target: "/static/hello.txt", headers: &[], body: b"xyz", status: 404, expect: &[], want: B::App },
    case("GET", "/static/missing.txt", &[], 404, &[], B::App),
    case("GET", "/static/hello.txt/", &[], 404, &[], B::App),
    case("GET", "/static/noindex/", &[], 404, &[], B::App),
    case("GET", "/static/noindex", &[], 404, &[], B::App),
    case("GET", "/static/", &[], 404, &[], B::App),
    // A directory with an index; without its slash, a redirect to it.
    case("GET", "/static/withidx/", &[], 200, &[("content-type", H::Is("text/html; charset=utf-8"))], B::File("www/withidx/index.html")),
    case("HEAD", "/static/withidx/", &[], 200, &[("content-type", H::Is("text/html; charset=utf-8"))], B::Empty),
    case("GET", "/static/withidx", &[], 301, &[("location", H::Is("/static/withidx/")), ("content-length", H::Is("0"))], B::Empty),
    case("GET", "/static/withidx?a=1", &[], 301, &[("location", H::Is("/static/withidx/?a=1"))], B::Empty),
    // Conditional requests.
    case("GET", "/static/hello.txt", &[("If-None-Match", "{etag}")], 304, &VALIDATORS, B::Empty),
    case("GET", "/static/hello.txt", &[("If-None-Match", "\"other\", {etag}")], 304, &VALIDATORS, B::Empty),
    case("GET", "/static/hello.txt", &[("If-None-Match", "W/{etag}")], 304, &VALIDATORS, B::Empty),
    case("GET", "/static/hello.txt", &[("If-None-Match", "*")], 304, &VALIDATORS, B::Empty),
    case("HEAD", "/static/hello.txt", &[("If-None-Match", "{etag}")], 304, &VALIDATORS, B::Empty),
    case("GET", "/static/hello.txt", &[("If-None-Match", "\"other\"")], 200, &VALIDATORS, B::File("www/hello.txt")),
    case("GET", "/static/hello.txt", &[("If-Modified-Since", "{lm}")], 304, &VALIDATORS, B::Empty),
    case("GET", "/static/hello.txt", &[("If-Modified-Since", OLD)], 200, &VALIDATORS, B::File("www/hello.txt")),
    case("GET", "/static/hello.txt", &[("If-None-Match", "\"other\""), ("If-Modified-Since", "{lm}")], 200, &VALIDATORS, B::File("www/hello.txt")),
    case("GET", "/static/logo.png", &[("If-None-Match", "{etag}")], 304, &[VALIDATORS[0], VALIDATORS[1], ("cache-control", H::Is("max-age=3600"))], B::Empty),
    // Ranges.
    case("GET", "/static/data.bin", &[("Range", "bytes=0-99")], 206, &[("content-range", H::Is("bytes 0-99/1000")), ("content-length", H::Is("100")), ("content-type", H::Is("application/octet-stream"))], B::Range("www/data.bin", 0, 99)),
    case("GET", "/static/data.bin", &[("Range", "bytes=-10")], 206, &[("content-range", H::Is("bytes 990-999/1000"))], B::Range("www/data.bin", 990, 999)),
    case("GET", "/static/data.bin", &[("Range", "bytes=990-")], 206, &[("content-range", H::Is("bytes 990-999/1000"))], B::Range("www/data.bin", 990, 999)),
    case("GET", "/static/data.bin", &[("Range", "bytes=500-5000")], 206, &[("content-range", H::Is("bytes 500-999/1000"))], B::Range("www/data.bin", 500, 999)),
    case("HEAD", "/static/data.bin", &[("Range", "bytes=0-99")], 206, &[("content-range", H::Is("bytes 0-99/1000")), ("content-length", H::Is("100"))], B::Empty),
    case("GET", "/static/data.bin", &[("Range", "bytes=0-9,500-509,-5")], 206, &[], B::Multipart("www/data.bin", &[(0, 9), (500, 509), (995, 999)])),
    case("GET", "/static/data.bin", &[("Range", "bytes=900-949, 0-0")], 206, &[], B::Multipart("www/data.bin", &[(900, 949), (0, 0)])),
    case("GET", "/static/data.bin", &[("Range", "bytes=1000-")], 416, &[("content-range", H::Is("bytes */1000"))], B::Empty),
    case("GET", "/static/data.bin", &[("Range", "bytes=5000-6000, 2000-")], 416, &[("content-range", H::Is("bytes */1000"))], B::Empty),
    case("GET", "/static/data.bin", &[("Range", "lines=1-2")], 200, &[("content-range", H::Absent)], B::File("www/data.bin")),
    case("GET", "/static/data.bin", &[("Range", "bytes=0-99"), ("If-Range", "{etag}")], 206, &[("content-range", H::Is("bytes 0-99/1000"))], B::Range("www/data.bin", 0, 99)),
    case("GET", "/static/data.bin", &[("Range", "bytes=0-99"), ("If-Range", "\"other\"")], 200, &[("content-range", H::Absent)], B::File("www/data.bin")),
    case("GET", "/static/data.bin", &[("Range", "bytes=0-99"), ("If-Range", "{lm}")], 206, &[("content-range", H::Is("bytes 0-99/1000"))], B::Range("www/data.bin", 0, 99)),
    case("GET", "/static/data.bin", &[("Range", "bytes=0-99"), ("If-Range", OLD)], 200, &[("content-range", H::Absent)], B::File("www/data.bin")),
    // Precompressed variants where the gzip options apply.
    case("GET", "/static/style.css", &[("Accept-Encoding", "gzip, deflate")], 200, &[("content-encoding", H::Is("gzip")), ("vary", H::Is("Accept-Encoding")), ("content-type", H::Is("text/css; charset=utf-8"))], B::File("www/style.css.gz")),
    case("GET", "/static/style.css", &[], 200, &[("content-encoding", H::Absent), ("vary", H::Is("Accept-Encoding")), ("content-type", H::Is("text/css; charset=utf-8"))], B::File("www/style.css")),
    case("GET", "/static/style.css", &[("Accept-Encoding", "gzip;q=0")], 200, &[("content-encoding", H::Absent), ("vary", H::Is("Accept-Encoding"))], B::File("www/style.css")),
    case("GET", "/static/style.css", &[("Accept-Encoding", "br")], 200, &[("content-encoding", H::Absent), ("vary", H::Is("Accept-Encoding"))], B::File("www/style.css")),
    case("HEAD", "/static/style.css", &[("Accept-Encoding", "gzip")], 200, &[("content-encoding", H::Is("gzip")), ("vary", H::Is("Accept-Encoding")), ("content-length", H::Is("18"))], B::Empty),
    case("GET", "/static/hello.txt", &[("Accept-Encoding", "gzip")], 200, &NO_GZIP, B::File("www/hello.txt")),
    // static-expires-uri.
    case("GET", "/static/cached/note.txt", &[], 200, &[TXT, ("cache-control", H::Is("max-age=60")), ("expires", H::ExpiresIn(60))], B::File("www/cached/note.txt")),
    // Mount points match on a `/` boundary only.
    case("GET", "/staticfoo/hello.txt", &[], 404, &[], B::App),
    case("GET", "/stati/hello.txt", &[], 404, &[], B::App),
    // Two mappings on one mount point: a search path, in declaration order.
    case("GET", "/static/only-extra.txt", &[], 200, &[TXT], B::File("extra/only-extra.txt")),
    // static-map2 appends the whole request path to its directory.
    case("GET", "/m2/page.txt", &[], 200, &[TXT], B::File("m2root/m2/page.txt")),
    case("GET", "/m2/only-at-root.txt", &[], 404, &[], B::App),
];

/// The fixture of the conformance test, under `root`:
///
/// ```text
/// www/      hello.txt (+ hello.txt.gz, not used: .txt is not a gzip extension),
///           data.bin (1000 bytes), empty.txt, "with space.txt", logo.png,
///           style.css + style.css.gz, noindex/file.txt, withidx/index.html,
///           cached/note.txt, foo/hello.txt (what a string-prefix mount would serve
///           for /staticfoo/hello.txt)
/// extra/    only-extra.txt, hello.txt (shadowed by www's)
/// m2root/   m2/page.txt, page.txt and only-at-root.txt (what a static-map would serve)
/// ```
fn conformance_fixture(root: &Path) {
    let files: &[(&str, &[u8])] = &[
        ("www/hello.txt", b"Hello from a static file.\n"),
        ("www/hello.txt.gz", b"WRONG: .txt is not covered by the gzip options"),
        ("www/empty.txt", b""),
        ("www/with space.txt", b"a name with a space\n"),
        ("www/logo.png", b"\x89PNG\r\n\x1a\nnot really a picture"),
        ("www/style.css", b"body { color: #333; margin: 0 auto; }\n"),
        ("www/style.css.gz", b"\x1f\x8bpretend-gzip-css"),
        ("www/noindex/file.txt", b"in a folder without an index\n"),
        ("www/withidx/index.html", b"<!doctype html><title>index</title>\n"),
        ("www/cached/note.txt", b"cached for a minute\n"),
        ("www/foo/hello.txt", b"WRONG: /staticfoo matched the mount point /static"),
        ("extra/only-extra.txt", b"from the second mapping of /static\n"),
        ("extra/hello.txt", b"WRONG: the second mapping shadowed the first\n"),
        ("m2root/m2/page.txt", b"static-map2 appends the whole path\n"),
        ("m2root/page.txt", b"WRONG: static-map2 served like static-map\n"),
        ("m2root/only-at-root.txt", b"WRONG: static-map2 served like static-map\n"),
    ];
    for (name, bytes) in files {
        write_file(&root.join(name), bytes);
    }
    write_file(&root.join("www/data.bin"), &noise(1000, 7));
}

fn conformance_pool(root: &Path) -> Pool {
    let d = |p: &str| root.join(p).display().to_string();
    Pool::start(&[
        "--static-map",
        &format!("/static={}", d("www")),
        "--static-map",
        &format!("/static={}", d("extra")),
        "--static-map2",
        &format!("/m2={}", d("m2root")),
        "--static-index",
        "index.html",
        "--static-gzip-ext",
        "css",
        "--static-expires",
        r"\.png$ 3600",
        "--static-expires-uri",
        "^/static/cached/ 60",
    ])
}

#[test]
fn conformance_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    conformance_fixture(root);
    let pool = conformance_pool(root);
    let _z = pool.zergling(&[]);
    pool.wait_attached(1);

    let mut failures = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        if let Err(why) = run_case(pool.addr, root, c) {
            failures.push(format!("#{i} {} {} {:?}: {why}", c.method, c.target, c.headers));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), CASES.len(), failures.join("\n"));

    // HEAD sends exactly the headers of the GET (the date-dependent ones aside).
    for (target, headers) in [
        ("/static/hello.txt", ""),
        ("/static/data.bin", "Range: bytes=10-19\r\n"),
        ("/static/style.css", "Accept-Encoding: gzip\r\n"),
        ("/static/logo.png", ""),
        ("/static/withidx/", ""),
        ("/static/withidx", ""),
        ("/static/data.bin", "Range: bytes=2000-\r\n"),
    ] {
        let get = once(pool.addr, "GET", target, headers).expect("GET");
        let head = once(pool.addr, "HEAD", target, headers).expect("HEAD");
        assert_eq!(get.status, head.status, "{target} {headers}");
        let strip =
            |r: &Resp| r.headers.iter().filter(|(n, _)| n != "date" && n != "expires").cloned().collect::<Vec<_>>();
        assert_eq!(strip(&get), strip(&head), "HEAD {target} {headers}");
        assert!(head.body.is_empty());
    }
}

fn run_case(addr: SocketAddr, root: &Path, c: &Case) -> Result<(), String> {
    let needs_etag = c.headers.iter().any(|(_, v)| v.contains("{etag}"))
        || c.expect.iter().any(|(_, h)| matches!(h, H::Is(v) if v.contains("{etag}")));
    let etag = if needs_etag {
        once(addr, "GET", c.target.split('?').next().unwrap_or(c.target), "")
            .ok()
            .and_then(|r| r.header("etag").map(str::to_owned))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let fill = |s: &str| s.replace("{etag}", &etag).replace("{lm}", LM);
    let mut extra = String::new();
    for (k, v) in c.headers {
        extra.push_str(&format!("{k}: {}\r\n", fill(v)));
    }
    if !c.body.is_empty() {
        extra.push_str(&format!("Content-Length: {}\r\n", c.body.len()));
    }
    let r = once_with_body(addr, c.method, c.target, &extra, c.body).map_err(|e| format!("no response: {e}"))?;
    let mut why = Vec::new();
    if r.status != c.status {
        why.push(format!("status {} (want {})", r.status, c.status));
    }
    for (name, want) in c.expect {
        let got = r.header(name);
        match want {
            H::Is(v) if got != Some(fill(v).as_str()) => why.push(format!("{name}: {got:?} (want {:?})", fill(v))),
            H::Absent if got.is_some() => why.push(format!("{name}: {got:?} (want none)")),
            H::ExpiresIn(secs) => {
                let (date, exp) = (r.date("date"), r.date("expires"));
                match (date, exp) {
                    (Some(d), Some(e)) if e.duration_since(d).ok() == Some(Duration::from_secs(*secs)) => {}
                    _ => why.push(format!(
                        "expires {:?} is not date {:?} + {secs}s",
                        r.header("expires"),
                        r.header("date")
                    )),
                }
            }
            _ => {}
        }
    }
    let file = |name: &str| fs::read(root.join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    let static_headers = |why: &mut Vec<String>| {
        if r.date("date").is_none() {
            why.push(format!("date: {:?}", r.header("date")));
        }
        if r.header("accept-ranges") != Some("bytes") {
            why.push(format!("accept-ranges: {:?}", r.header("accept-ranges")));
        }
        if r.header("last-modified") != Some(LM) {
            why.push(format!("last-modified: {:?}", r.header("last-modified")));
        }
        match r.header("etag") {
            Some(e) if e.starts_with('"') && e.ends_with('"') && e.len() > 2 => {}
            other => why.push(format!("etag {other:?} is not a strong entity tag")),
        }
        if r.header("content-length") != Some(r.body.len().to_string().as_str()) {
            why.push(format!("content-length {:?} for {} body bytes", r.header("content-length"), r.body.len()));
        }
    };
    match c.want {
        B::File(name) => {
            static_headers(&mut why);
            if r.body != file(name) {
                why.push(format!("body {:?} (want {name})", String::from_utf8_lossy(&r.body)));
            }
        }
        B::Range(name, first, last) => {
            static_headers(&mut why);
            if r.body != file(name)[first as usize..=last as usize] {
                why.push(format!("body is not bytes {first}-{last} of {name}"));
            }
        }
        B::Multipart(name, parts) => {
            static_headers(&mut why);
            let content = file(name);
            match multipart(&r) {
                Ok(got) => {
                    let want: Vec<_> = parts
                        .iter()
                        .map(|&(a, b)| {
                            (format!("bytes {a}-{b}/{}", content.len()), content[a as usize..=b as usize].to_vec())
                        })
                        .collect();
                    let got: Vec<_> = got.into_iter().map(|p| (p.range, p.body)).collect();
                    if got != want {
                        why.push(format!("multipart parts {:?}", got.iter().map(|p| &p.0).collect::<Vec<_>>()));
                    }
                }
                Err(e) => why.push(e),
            }
        }
        B::Empty => {
            if !r.body.is_empty() {
                why.push(format!("a body of {} bytes", r.body.len()));
            }
            let validated = c.status == 304 || (c.method == "HEAD" && c.status < 300);
            if validated && (r.header("etag").is_none() || r.header("last-modified") != Some(LM)) {
                why.push("validators missing".to_owned());
            }
        }
        B::App => {
            if r.text() != "not found" {
                why.push(format!("body {:?} (want the app's \"not found\")", r.text()));
            }
            for h in ["etag", "accept-ranges", "last-modified"] {
                if r.header(h).is_some() {
                    why.push(format!("{h} sent: not the application's answer"));
                }
            }
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

#[test]
fn the_bundled_demo_folder_is_served_under_static() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
    let pool = Pool::start(&["--static-map", &format!("/static={}", folder.display()), "--static-index", "index.html"]);
    for (target, file, mime) in [
        ("/static/", "index.html", "text/html; charset=utf-8"),
        ("/static/style.css", "style.css", "text/css; charset=utf-8"),
        ("/static/zergpool.txt", "zergpool.txt", "text/plain; charset=utf-8"),
    ] {
        let r = once(pool.addr, "GET", target, "").expect(target);
        assert_eq!(r.status, 200, "{target}");
        assert_eq!(r.header("content-type"), Some(mime), "{target}");
        assert_eq!(r.body, fs::read(folder.join(file)).expect("demo file"), "{target}");
    }
}

// ---------------------------------------------------------------------------
// Attacks
// ---------------------------------------------------------------------------

const SECRET: &str = "TOP-SECRET-b61f0c2e";

#[test]
fn attacks_never_reach_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = fs::canonicalize(dir.path()).expect("canonical tempdir");
    write_file(&root.join("www/public.txt"), b"public\n");
    write_file(&root.join("www/sub/inner.txt"), b"inner\n");
    write_file(&root.join("www2/secret.txt"), format!("{SECRET} (sibling with a common prefix)\n").as_bytes());
    write_file(&root.join("outside/secret.txt"), format!("{SECRET} (outside)\n").as_bytes());
    write_file(&root.join("safe/ok.txt"), b"reached through a symlink into static-safe\n");
    let link = |target: PathBuf, name: &str| std::os::unix::fs::symlink(target, root.join("www").join(name)).unwrap();
    link(root.join("www2/secret.txt"), "link-out");
    link(PathBuf::from("../www2/secret.txt"), "link-out-relative");
    link(root.join("outside"), "link-dir");
    link(root.join("www2"), "link-sibling-dir");
    link(root.join("safe/ok.txt"), "link-safe");
    link(root.join("safe"), "link-safe-dir");
    link(root.join("www/public.txt"), "link-inside");

    let pool = Pool::start(&[
        "--static-map",
        &format!("/s={}", root.join("www").display()),
        "--static-safe",
        &root.join("safe").display().to_string(),
        "--static-index",
        "secret.txt",
    ]);
    let _z = pool.zergling(&[]);
    pool.wait_attached(1);

    // (raw request target, statuses allowed): 403 where a mount point covers a path
    // trick or a symlink out; 404 from the application where the decoded path names
    // nothing (double encoding is decoded once: `%2e%2e` is then a plain name) or no
    // mount point covers it.
    let attacks: &[(&str, &[u16])] = &[
        ("/s/../www2/secret.txt", &[403]),
        ("/s/./../www2/secret.txt", &[403]),
        ("/s/sub/../../www2/secret.txt", &[403]),
        ("/s/../../../../../../etc/passwd", &[403]),
        ("/s/%2e%2e/www2/secret.txt", &[403]),
        ("/s/%2E%2E/www2/secret.txt", &[403]),
        ("/s/.%2e/www2/secret.txt", &[403]),
        ("/s/%2e./www2/secret.txt", &[403]),
        ("/s/%2e%2e%2fwww2%2fsecret.txt", &[403]),
        ("/s/..%2fwww2%2fsecret.txt", &[403]),
        ("/s/..%2Fwww2%2Fsecret.txt", &[403]),
        ("/s/%252e%252e/www2/secret.txt", &[403, 404]),
        ("/s/%252e%252e%252fwww2%252fsecret.txt", &[403, 404]),
        ("/s/%c0%ae%c0%ae/www2/secret.txt", &[403]),
        ("/s/%C0%AE%C0%AE/www2/secret.txt", &[403]),
        ("/s/..%c0%afwww2%c0%afsecret.txt", &[403]),
        ("/s/%c0%ae%c0%ae%c0%afwww2%c0%afsecret.txt", &[403]),
        ("/s/%e0%80%ae%e0%80%ae/www2/secret.txt", &[403]),
        ("/s/..%5cwww2%5csecret.txt", &[403]),
        ("/s/..%5Cwww2%5Csecret.txt", &[403]),
        ("/s/..\\www2\\secret.txt", &[403]),
        ("/s/public.txt%00", &[403]),
        ("/s/public.txt%00/../../www2/secret.txt", &[403]),
        ("/s/%00/../www2/secret.txt", &[403]),
        ("/s/%2e%2e%00/www2/secret.txt", &[403]),
        ("/s/....//www2/secret.txt", &[404]),
        ("/s/..;/www2/secret.txt", &[404]),
        ("/s/%2e%2e;/www2/secret.txt", &[404]),
        ("/s2/secret.txt", &[404]),
        ("/s/../s/../www2/secret.txt", &[403]),
        ("/www2/secret.txt", &[404]),
        ("/s/link-out", &[403]),
        ("/s/link-out-relative", &[403]),
        ("/s/link-dir/secret.txt", &[403]),
        ("/s/link-sibling-dir/secret.txt", &[403]),
        ("/s/link-sibling-dir/", &[403]),
        ("/s/link-dir/", &[403]),
        ("http://test/s/../www2/secret.txt", &[403, 404]),
    ];
    // Each attack twice: on a fresh connection (the pool answers), and after a
    // dynamic request on the same connection (a zergling holds it and answers).
    let mut failures = Vec::new();
    for (target, allowed) in attacks {
        for (method, holder) in [("GET", "pool"), ("HEAD", "pool"), ("GET", "zergling"), ("HEAD", "zergling")] {
            let mut raw = Vec::new();
            if holder == "zergling" {
                raw.extend_from_slice(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n");
            }
            raw.extend_from_slice(
                format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
            );
            let (responses, all) = raw_exchange(pool.addr, &raw);
            let text = String::from_utf8_lossy(&all);
            let what = format!("{method} {target} ({holder})");
            if text.contains(SECRET) || text.contains("root:x:0:0") {
                failures.push(format!("{what}: THE SECRET LEAKED:\n{text}"));
                continue;
            }
            let resp = if holder == "zergling" {
                match responses.first() {
                    Some(first) if first.text() == "Hello, world!" => responses.get(1),
                    _ => {
                        failures.push(format!("{what}: the dynamic request before it failed: {text:?}"));
                        continue;
                    }
                }
            } else {
                responses.first()
            };
            match resp {
                Some(r) if allowed.contains(&r.status) => {}
                Some(r) => failures.push(format!("{what}: status {} (allowed {allowed:?})", r.status)),
                None => failures.push(format!("{what}: no response: {text:?}")),
            }
        }
    }
    // The same, kept alive on one connection (the pool keeps serving after a 403).
    let mut c = Http::connect(pool.addr);
    for target in ["/s/%2e%2e/www2/secret.txt", "/s/link-out", "/s/public.txt", "/s/..%2fwww2%2fsecret.txt"] {
        let r = c.request("GET", target, "").expect(target);
        assert!(!r.text().contains(SECRET), "{target}");
        let want = if target == "/s/public.txt" { 200 } else { 403 };
        assert_eq!(r.status, want, "{target} on a kept-alive connection");
    }
    assert!(failures.is_empty(), "{} attacks misbehaved:\n{}", failures.len(), failures.join("\n"));

    // What may be served is served: inside the folder, and through links into
    // static-safe or inside the folder.
    for (target, body) in [
        ("/s/public.txt", "public\n"),
        ("/s/link-inside", "public\n"),
        ("/s/link-safe", "reached through a symlink into static-safe\n"),
        ("/s/link-safe-dir/ok.txt", "reached through a symlink into static-safe\n"),
    ] {
        let r = once(pool.addr, "GET", target, "").expect(target);
        assert_eq!((r.status, r.text().as_str()), (200, body), "{target}");
    }
    // Nothing was read outside: the pool says so in its log for the symlinks.
    assert!(pool.proc.wait_log("refused a path that leaves its directory", 1, T), "{}", pool.proc.log());
}

// ---------------------------------------------------------------------------
// A 200 MiB file
// ---------------------------------------------------------------------------

const MIB: u64 = 1 << 20;
const BIG_LEN: u64 = 200 * MIB;

/// The big file's content: 1 MiB of noise repeated, with the absolute offset of
/// every 4 KiB block stamped over its first 8 bytes, so that any byte served from
/// the wrong place shows.
struct Pattern {
    base: Vec<u8>,
}

impl Pattern {
    fn new() -> Pattern {
        Pattern { base: noise(MIB as usize, 42) }
    }

    /// Fills `out` with the bytes at `offset..offset + out.len()`.
    fn fill(&self, offset: u64, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let at = offset + done as u64;
            let in_base = (at % MIB) as usize;
            let n = (out.len() - done).min(self.base.len() - in_base);
            out[done..done + n].copy_from_slice(&self.base[in_base..in_base + n]);
            done += n;
        }
        let end = offset + out.len() as u64;
        let mut block = offset / 4096 * 4096;
        while block < end {
            for (i, b) in block.to_le_bytes().into_iter().enumerate() {
                let pos = block + i as u64;
                if (offset..end).contains(&pos) {
                    out[(pos - offset) as usize] = b;
                }
            }
            block += 4096;
        }
    }

    fn bytes(&self, offset: u64, len: u64) -> Vec<u8> {
        let mut v = vec![0; len as usize];
        self.fill(offset, &mut v);
        v
    }
}

/// A 64-bit checksum of a byte stream (FNV-1a over little-endian 8-byte words):
/// computed while the file is written and while it is downloaded.
struct Checksum {
    h: u64,
    tail: Vec<u8>,
    len: u64,
}

impl Checksum {
    fn new() -> Checksum {
        Checksum { h: 0xcbf2_9ce4_8422_2325, tail: Vec::new(), len: 0 }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if !self.tail.is_empty() {
            let need = 8 - self.tail.len();
            let take = need.min(bytes.len());
            self.tail.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.tail.len() < 8 {
                return;
            }
            let w = u64::from_le_bytes(self.tail[..8].try_into().unwrap());
            self.word(w);
            self.tail.clear();
        }
        let words = bytes.chunks_exact(8);
        let rest = words.remainder();
        for w in words {
            self.word(u64::from_le_bytes(w.try_into().unwrap()));
        }
        self.tail.extend_from_slice(rest);
    }

    fn word(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
    }

    fn finish(mut self) -> (u64, u64) {
        let tail = std::mem::take(&mut self.tail);
        for b in tail {
            self.word(u64::from(b));
        }
        (self.h, self.len)
    }
}

#[test]
fn a_200_mib_file_whole_and_in_ranges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let www = dir.path().join("www");
    fs::create_dir(&www).unwrap();
    let pattern = Pattern::new();
    let mut written = Checksum::new();
    {
        let mut f = io::BufWriter::with_capacity(MIB as usize, fs::File::create(www.join("big.bin")).unwrap());
        let mut chunk = vec![0; MIB as usize];
        for k in 0..BIG_LEN / MIB {
            pattern.fill(k * MIB, &mut chunk);
            written.update(&chunk);
            f.write_all(&chunk).unwrap();
        }
        f.flush().unwrap();
    }
    let written = written.finish();
    let pool = Pool::start(&["--static-map", &format!("/s={}", www.display())]);

    // The whole file on a kept-alive connection, checked as it arrives.
    let mut c = Http::connect(pool.addr);
    let started = Instant::now();
    c.send("GET", "/s/big.bin", "").unwrap();
    let (status, headers) = c.read_head().unwrap();
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-length"), Some(BIG_LEN.to_string().as_str()));
    assert_eq!(header(&headers, "content-type"), Some("application/octet-stream"));
    let mut got = Checksum::new();
    let mut want = vec![0; MIB as usize];
    let mut offset = 0u64;
    c.stream_body(BIG_LEN, |bytes| {
        got.update(bytes);
        pattern.fill(offset, &mut want[..bytes.len()]);
        assert!(
            bytes == &want[..bytes.len()],
            "the download differs from the file in {offset}..{}",
            offset + bytes.len() as u64
        );
        offset += bytes.len() as u64;
    })
    .unwrap();
    assert_eq!(got.finish(), written, "checksum and length of the download");
    eprintln!("200 MiB downloaded and checked in {:?}", started.elapsed());

    // Ranges at the start, in the middle (across a 1 MiB boundary), at the end, on
    // the same connection.
    let mid = 100 * MIB - 3000;
    for (range, first, last) in [
        ("bytes=0-65535".to_owned(), 0, 65535),
        ("bytes=0-0".to_owned(), 0, 0),
        (format!("bytes={mid}-{}", mid + 6999), mid, mid + 6999),
        ("bytes=-70000".to_owned(), BIG_LEN - 70000, BIG_LEN - 1),
        (format!("bytes={}-", BIG_LEN - 5), BIG_LEN - 5, BIG_LEN - 1),
        (format!("bytes={}-{}", BIG_LEN - 4096, BIG_LEN + 100), BIG_LEN - 4096, BIG_LEN - 1),
    ] {
        let r = c.request("GET", "/s/big.bin", &format!("Range: {range}\r\n")).unwrap();
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.header("content-range"), Some(format!("bytes {first}-{last}/{BIG_LEN}").as_str()), "{range}");
        assert!(r.body == pattern.bytes(first, last - first + 1), "{range}: wrong bytes");
    }
    let r = c.request("GET", "/s/big.bin", &format!("Range: bytes={BIG_LEN}-\r\n")).unwrap();
    assert_eq!((r.status, r.header("content-range")), (416, Some(format!("bytes */{BIG_LEN}").as_str())));

    // Several ranges in one request, checked part by part.
    let parts = [(0, 99), (mid, mid + 65535), (150 * MIB + 1, 150 * MIB + 1), (BIG_LEN - 1000, BIG_LEN - 1)];
    let spec: Vec<String> = parts.iter().map(|(a, b)| format!("{a}-{b}")).collect();
    let r = c.request("GET", "/s/big.bin", &format!("Range: bytes={}\r\n", spec.join(","))).unwrap();
    assert_eq!(r.status, 206);
    let got = multipart(&r).unwrap();
    assert_eq!(got.len(), parts.len());
    for (p, (a, b)) in got.iter().zip(parts) {
        assert_eq!(p.range, format!("bytes {a}-{b}/{BIG_LEN}"));
        assert_eq!(p.content_type, "application/octet-stream");
        assert!(p.body == pattern.bytes(a, b - a + 1), "part {a}-{b}: wrong bytes");
    }
    let r = c.request("HEAD", "/s/big.bin", "").unwrap();
    assert_eq!((r.status, r.header("content-length")), (200, Some(BIG_LEN.to_string().as_str())));
}

// ---------------------------------------------------------------------------
// Keep-alive: static and dynamic requests on one connection
// ---------------------------------------------------------------------------

fn small_site() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let www = dir.path().join("www");
    write_file(&www.join("a.txt"), b"static file a\n");
    write_file(&www.join("b.css"), b"b { color: red }\n");
    write_file(&www.join("b.css.gz"), b"\x1f\x8bgzipped b.css");
    write_file(&www.join("data.bin"), &noise(5000, 3));
    write_file(&www.join("dir/index.html"), b"<p>index of dir</p>\n");
    write_file(&dir.path().join("www2/secret.txt"), SECRET.as_bytes());
    std::os::unix::fs::symlink(dir.path().join("www2/secret.txt"), www.join("link-out")).expect("symlink");
    (dir, www)
}

/// The pool serves any number of static requests on one connection, then hands it
/// over at the first dynamic request, with that request's bytes: pipelined ones
/// included.
#[test]
fn many_static_requests_then_the_connection_goes_to_a_zergling() {
    let (_dir, www) = small_site();
    let pool = Pool::start(&["--static-map", &format!("/s={}", www.display())]);
    let z = pool.zergling(&[]);
    pool.wait_attached(1);
    let data = fs::read(www.join("data.bin")).unwrap();

    let mut c = Http::connect(pool.addr);
    let etag = c.request("GET", "/s/a.txt", "").unwrap().header("etag").unwrap().to_owned();
    for i in 0..25 {
        let r = c.request("GET", "/s/a.txt", "").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "static file a\n"), "round {i}");
        let r = c.request("HEAD", "/s/b.css", "").unwrap();
        assert_eq!((r.status, r.header("content-length")), (200, Some("17")), "round {i}");
        let r = c.request("GET", "/s/a.txt", &format!("If-None-Match: {etag}\r\n")).unwrap();
        assert_eq!(r.status, 304, "round {i}");
        let r = c.request("GET", "/s/data.bin", "Range: bytes=100-199,4000-\r\n").unwrap();
        assert_eq!(r.status, 206, "round {i}");
        let parts = multipart(&r).unwrap();
        assert_eq!(parts[0].body, data[100..200]);
        assert_eq!(parts[1].body, data[4000..]);
        let r = c.request("GET", "/s/data.bin", "Range: bytes=99999-\r\n").unwrap();
        assert_eq!(r.status, 416, "round {i}");
    }
    assert_eq!(pool.proc.count("dispatched"), 0, "no static request went to the zergling");
    for _ in 0..3 {
        let r = c.request("GET", "/pid", "").unwrap();
        assert_eq!((r.status, r.text()), (200, z.pid().to_string()));
    }
    assert!(pool.proc.wait_log("dispatched", 1, T), "{}", pool.proc.log());
    assert_eq!(pool.proc.count("dispatched"), 1, "one hand-over for the whole connection");

    // Pipelined: two static requests and a dynamic one in one write.
    let mut c = Http::connect(pool.addr);
    c.send_raw(
        b"GET /s/a.txt HTTP/1.1\r\nHost: t\r\n\r\nHEAD /s/a.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /pid HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let r = c.response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "static file a\n"));
    let r = c.response(true).unwrap();
    assert_eq!((r.status, r.header("content-length"), r.body.len()), (200, Some("14"), 0));
    let r = c.response(false).unwrap();
    assert_eq!((r.status, r.text()), (200, z.pid().to_string()));
    let r = c.response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, world!"));
}

/// Issue 5: static, dynamic, static, dynamic… on one connection, every answer right
/// and in order, whoever holds the connection (the pool, then a zergling, which
/// serves the same static-map from the configuration the pool sent at attach time).
#[test]
fn alternating_static_and_dynamic_on_one_connection() {
    let (_dir, www) = small_site();
    let pool = Pool::start(&["--static-map", &format!("/s={}", www.display())]);
    let z = pool.zergling(&[]);
    pool.wait_attached(1);
    let data = fs::read(www.join("data.bin")).unwrap();
    let mut c = Http::connect(pool.addr);
    for round in 0..4 {
        let r = c.request("GET", "/s/a.txt", "").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "static file a\n"), "static GET, round {round}");
        assert_eq!(r.header("accept-ranges"), Some("bytes"), "round {round}");
        let r = c.request("GET", "/pid", "").unwrap();
        assert_eq!((r.status, r.text()), (200, z.pid().to_string()), "dynamic, round {round}");
        let r = c.request("HEAD", "/s/b.css", "").unwrap();
        assert_eq!((r.status, r.header("content-length")), (200, Some("17")), "static HEAD, round {round}");
        let r = c.request("GET", "/s/data.bin", "Range: bytes=10-19\r\n").unwrap();
        assert_eq!((r.status, &r.body[..]), (206, &data[10..20]), "static range, round {round}");
        let r = c.request("GET", "/", "").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "Hello, world!"), "dynamic, round {round}");
    }
}

/// Issue 5: "behaviour is identical whoever answers". The same requests on a
/// connection the pool holds and on one a zergling holds (after a dynamic request)
/// get the same status, headers (those that depend on the clock or on a random
/// multipart boundary aside) and bodies.
#[test]
fn the_same_answers_whoever_holds_the_connection() {
    let (_dir, www) = small_site();
    let pool = Pool::start(&[
        "--static-map",
        &format!("/s={}", www.display()),
        "--static-index",
        "index.html",
        "--static-gzip-ext",
        "css",
        "--static-expires",
        r"\.css$ 100",
    ]);
    let _z = pool.zergling(&[]);
    pool.wait_attached(1);
    let etag = once(pool.addr, "GET", "/s/a.txt", "").unwrap().header("etag").unwrap().to_owned();
    let requests: Vec<(&str, &str, String)> = vec![
        ("GET", "/s/a.txt", String::new()),
        ("HEAD", "/s/a.txt", String::new()),
        ("GET", "/s/a.txt?x=1", String::new()),
        ("GET", "/s/a.txt", format!("If-None-Match: {etag}\r\n")),
        ("HEAD", "/s/a.txt", format!("If-None-Match: {etag}\r\n")),
        ("GET", "/s/a.txt", format!("If-Modified-Since: {LM}\r\n")),
        ("GET", "/s/a.txt", format!("If-Modified-Since: {OLD}\r\n")),
        ("GET", "/s/data.bin", "Range: bytes=10-19\r\n".into()),
        ("GET", "/s/data.bin", "Range: bytes=-7\r\n".into()),
        ("HEAD", "/s/data.bin", "Range: bytes=10-19\r\n".into()),
        ("GET", "/s/data.bin", "Range: bytes=0-9,4000-4009\r\n".into()),
        ("GET", "/s/data.bin", "Range: bytes=99999-\r\n".into()),
        ("GET", "/s/data.bin", format!("Range: bytes=0-9\r\nIf-Range: {etag}\r\n")),
        ("GET", "/s/data.bin", "Range: bytes=0-9\r\nIf-Range: \"other\"\r\n".into()),
        ("GET", "/s/b.css", "Accept-Encoding: gzip\r\n".into()),
        ("GET", "/s/b.css", String::new()),
        ("GET", "/s/dir", String::new()),
        ("GET", "/s/dir?q=1", String::new()),
        ("GET", "/s/dir/", String::new()),
        ("GET", "/s/%2e%2e/www2/secret.txt", String::new()),
        ("HEAD", "/s/%2e%2e/www2/secret.txt", String::new()),
        ("GET", "/s/link-out", String::new()),
        ("GET", "/s/missing.txt", String::new()),
        ("GET", "/s/", String::new()),
    ];
    let mut by_pool = Http::connect(pool.addr);
    let mut by_zergling = Http::connect(pool.addr);
    assert_eq!(by_zergling.request("GET", "/", "").unwrap().text(), "Hello, world!");
    let mut differences = Vec::new();
    for (method, target, headers) in &requests {
        let p = by_pool.request(method, target, headers).unwrap();
        let z = by_zergling.request(method, target, headers).unwrap();
        assert!(!p.text().contains(SECRET) && !z.text().contains(SECRET), "{method} {target}");
        let multipart_response = p.header("content-type").is_some_and(|t| t.starts_with("multipart/"));
        let comparable = |r: &Resp| {
            let mut h: Vec<(String, String)> = r
                .headers
                .iter()
                .filter(|(n, _)| !matches!(n.as_str(), "date" | "expires"))
                .filter(|(n, _)| !(multipart_response && n == "content-type"))
                .cloned()
                .collect();
            h.sort();
            h
        };
        let (ph, zh) = (comparable(&p), comparable(&z));
        if p.status != z.status || ph != zh {
            differences.push(format!(
                "{method} {target} {headers:?}:\n  pool     {} {ph:?}\n  zergling {} {zh:?}",
                p.status, z.status
            ));
            continue;
        }
        let same_body = if multipart_response {
            let parts = |r: &Resp| multipart(r).map(|v| v.into_iter().map(|p| (p.range, p.body)).collect::<Vec<_>>());
            parts(&p) == parts(&z)
        } else {
            p.body == z.body
        };
        if !same_body {
            differences.push(format!("{method} {target} {headers:?}: the bodies differ"));
        }
    }
    assert!(differences.is_empty(), "{} differences:\n{}", differences.len(), differences.join("\n"));
}

// ---------------------------------------------------------------------------
// No zergling attached
// ---------------------------------------------------------------------------

#[test]
fn static_is_served_at_once_while_a_dynamic_request_waits_for_a_zergling() {
    let (_dir, www) = small_site();
    let pool = Pool::start(&["--static-map", &format!("/s={}", www.display())]);
    let addr = pool.addr;
    let waiting = std::thread::spawn(move || once(addr, "GET", "/pid", ""));
    assert!(pool.proc.wait_log("queued", 1, T), "{}", pool.proc.log());

    for _ in 0..3 {
        let started = Instant::now();
        let r = once(pool.addr, "GET", "/s/a.txt", "").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "static file a\n"));
        assert!(started.elapsed() < Duration::from_secs(2), "static waited {:?}", started.elapsed());
    }
    let mut c = Http::connect(pool.addr);
    for _ in 0..10 {
        let started = Instant::now();
        let r = c.request("GET", "/s/b.css", "").unwrap();
        assert_eq!(r.status, 200);
        assert!(started.elapsed() < Duration::from_secs(2), "static waited {:?}", started.elapsed());
    }
    assert!(!waiting.is_finished(), "the dynamic request should still be waiting");
    assert_eq!(pool.attached(), 0);

    let z = pool.zergling(&[]);
    let r = waiting.join().unwrap().expect("the queued request completes once a zergling attaches");
    assert_eq!((r.status, r.text()), (200, z.pid().to_string()));
}

// ---------------------------------------------------------------------------
// Helpers: fixture files and a small HTTP/1.1 reader
// ---------------------------------------------------------------------------

/// Writes a file (creating its folders) with the fixture's fixed mtime.
fn write_file(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    let f = fs::File::create(path).expect("create");
    (&f).write_all(bytes).expect("write");
    f.set_modified(UNIX_EPOCH + Duration::from_secs(MTIME_SECS)).expect("set mtime");
}

/// Deterministic noise (xorshift64*).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[derive(Debug)]
struct Resp {
    status: u16,
    /// Names lower-cased, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn date(&self, name: &str) -> Option<SystemTime> {
        self.header(name).and_then(|v| httpdate::parse_http_date(v).ok())
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// One connection, responses framed exactly.
struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.set_nodelay(true).unwrap();
        Http { stream, buf: Vec::new() }
    }

    fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a request without a body; `headers` are complete lines.
    fn send(&mut self, method: &str, target: &str, headers: &str) -> io::Result<()> {
        self.send_raw(format!("{method} {target} HTTP/1.1\r\nHost: test\r\n{headers}\r\n").as_bytes())
    }

    fn request(&mut self, method: &str, target: &str, headers: &str) -> io::Result<Resp> {
        self.send(method, target, headers)?;
        self.response(method == "HEAD")
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn read_head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a response head"));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad head {head:?}")))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok((status, headers))
    }

    /// Reads exactly `len` body bytes, giving them to `sink` as they arrive.
    fn stream_body(&mut self, len: u64, mut sink: impl FnMut(&[u8])) -> io::Result<()> {
        let mut left = len;
        let mut chunk = vec![0u8; MIB as usize];
        if !self.buf.is_empty() {
            let n = (self.buf.len() as u64).min(left) as usize;
            sink(&self.buf[..n]);
            self.buf.drain(..n);
            left -= n as u64;
        }
        while left > 0 {
            let want = (chunk.len() as u64).min(left) as usize;
            let n = self.stream.read(&mut chunk[..want])?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("body short by {left} bytes")));
            }
            sink(&chunk[..n]);
            left -= n as u64;
        }
        Ok(())
    }

    fn take(&mut self, len: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < len {
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body cut short"));
            }
        }
        Ok(self.buf.drain(..len).collect())
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunked body cut short"));
            }
        }
    }

    /// Reads one response; `head_only` for the answer to a HEAD.
    fn response(&mut self, head_only: bool) -> io::Result<Resp> {
        let (status, headers) = self.read_head()?;
        let body = if head_only || status == 304 || status == 204 || status < 200 {
            Vec::new()
        } else if header(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            let mut body = Vec::new();
            loop {
                let size = self.line()?;
                let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
                if size == 0 {
                    while !self.line()?.is_empty() {}
                    break;
                }
                body.extend(self.take(size)?);
                self.line()?;
            }
            body
        } else if let Some(len) = header(&headers, "content-length") {
            let len = len.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
            self.take(len)?
        } else {
            while self.fill()? > 0 {}
            std::mem::take(&mut self.buf)
        };
        Ok(Resp { status, headers, body })
    }

    /// Everything left until the server closes.
    fn rest(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }
}

/// One request with `Connection: close` on a fresh connection; fails if anything
/// follows the framed response.
fn once(addr: SocketAddr, method: &str, target: &str, headers: &str) -> io::Result<Resp> {
    once_with_body(addr, method, target, headers, b"")
}

fn once_with_body(addr: SocketAddr, method: &str, target: &str, headers: &str, body: &[u8]) -> io::Result<Resp> {
    let mut c = Http::connect(addr);
    let mut req =
        format!("{method} {target} HTTP/1.1\r\nHost: test\r\n{headers}Connection: close\r\n\r\n").into_bytes();
    req.extend_from_slice(body);
    c.send_raw(&req)?;
    let r = c.response(method == "HEAD")?;
    let rest = c.rest()?;
    if !rest.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes after the response: {:?}", rest.len(), String::from_utf8_lossy(&rest)),
        ));
    }
    Ok(r)
}

/// Sends raw bytes on a fresh connection and reads until the server closes:
/// the parsed first response (if any) and every byte received.
fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> (Vec<Resp>, Vec<u8>) {
    let mut c = Http::connect(addr);
    c.send_raw(raw).expect("send");
    let mut all = Vec::new();
    let _ = c.stream.read_to_end(&mut all);
    // The responses, in order, each framed as the answer to its request's method.
    let methods: Vec<bool> = String::from_utf8_lossy(raw)
        .split("\r\n\r\n")
        .filter(|r| !r.is_empty())
        .map(|r| r.starts_with("HEAD "))
        .collect();
    let mut parser = Http { stream: c.stream.try_clone().expect("clone"), buf: all.clone() };
    let mut responses = Vec::new();
    for head_only in methods {
        match parser.response(head_only) {
            Ok(r) => responses.push(r),
            Err(_) => break,
        }
    }
    (responses, all)
}

struct PartOut {
    content_type: String,
    range: String,
    body: Vec<u8>,
}

/// Splits a `multipart/byteranges` body into its parts.
fn multipart(r: &Resp) -> Result<Vec<PartOut>, String> {
    let ct = r.header("content-type").unwrap_or_default();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .ok_or_else(|| format!("content-type {ct:?} is not multipart/byteranges"))?;
    let delim = format!("--{boundary}").into_bytes();
    let body = &r.body;
    let find =
        |from: usize, needle: &[u8]| body[from..].windows(needle.len()).position(|w| w == needle).map(|i| i + from);
    let mut at = find(0, &delim).ok_or("no first delimiter")?;
    if body[..at].iter().any(|b| !b.is_ascii_whitespace()) {
        return Err("bytes before the first delimiter".into());
    }
    let mut parts = Vec::new();
    loop {
        at += delim.len();
        if body[at..].starts_with(b"--") {
            if body[at + 2..].iter().any(|b| !b.is_ascii_whitespace()) {
                return Err("bytes after the closing delimiter".into());
            }
            return Ok(parts);
        }
        let head_end = find(at, b"\r\n\r\n").ok_or("a part without a blank line")?;
        let head = String::from_utf8_lossy(&body[at..head_end]).into_owned();
        let mut content_type = String::new();
        let mut range = String::new();
        for line in head.split("\r\n").filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once(':').ok_or_else(|| format!("bad part header {line:?}"))?;
            match k.trim().to_ascii_lowercase().as_str() {
                "content-type" => content_type = v.trim().to_owned(),
                "content-range" => range = v.trim().to_owned(),
                _ => {}
            }
        }
        let data_start = head_end + 4;
        let mut next_delim = b"\r\n".to_vec();
        next_delim.extend_from_slice(&delim);
        let data_end = find(data_start, &next_delim).ok_or("a part without a closing delimiter")?;
        parts.push(PartOut { content_type, range, body: body[data_start..data_end].to_vec() });
        at = data_end + 2;
    }
}

/// The resolution cache (`static-cache-paths`, default 1 s) never serves a changed
/// file with stale headers: a file rewritten in place (new length) or replaced by
/// rename is seen by the very next request; a file created where there was none
/// shows within the cache's lifetime; `static-cache-paths = 0` turns it off.
#[test]
fn the_resolution_cache_sees_every_change() {
    let (_dir, www) = small_site();
    let pool = Pool::start(&["--static-map", &format!("/s={}", www.display())]);
    let z = pool.zergling(&[]);
    pool.wait_attached(1);
    let get = |target: &str| once(pool.addr, "GET", target, "").expect("answer");

    assert_eq!(get("/s/a.txt").text(), "static file a\n");
    // Rewritten in place, longer: the cached descriptor's fstat shows it.
    write_file(&www.join("a.txt"), b"static file a, rewritten\n");
    let r = get("/s/a.txt");
    assert_eq!((r.text().as_str(), r.header("content-length")), ("static file a, rewritten\n", Some("25")));
    // Replaced by rename (how deploys swap files): the old inode is unlinked.
    write_file(&www.join("a.txt.new"), b"new a\n");
    fs::rename(www.join("a.txt.new"), www.join("a.txt")).unwrap();
    assert_eq!(get("/s/a.txt").text(), "new a\n");
    // Deleted: a miss, the application answers.
    fs::remove_file(www.join("a.txt")).unwrap();
    assert_eq!(get("/s/a.txt").status, 404, "the demo answers 404 for unknown paths");
    // That a miss is cached for at most the cache's lifetime is the cache's own
    // test (offload::cache::tests::entries_expire, on a clock it is given).
    drop(z);

    // Off: a file created after a miss is served by the very next request.
    let pool = Pool::start(&["--static-map", &format!("/s={}", www.display()), "--static-cache-paths", "0"]);
    let _z = pool.zergling(&[]);
    pool.wait_attached(1);
    assert_eq!(once(pool.addr, "GET", "/s/later.txt", "").unwrap().status, 404);
    write_file(&www.join("later.txt"), b"later\n");
    assert_eq!(once(pool.addr, "GET", "/s/later.txt", "").unwrap().text(), "later\n");
}

/// Under `static-map /=DIR` every path is under the mount: a path static-map
/// refuses (an encoded slash, a dot segment) goes to the application, as in
/// uWSGI, instead of a 403 the application could never override; static-map
/// still reads nothing for it, and the secret beside the folder never shows.
#[test]
fn under_the_root_mount_a_refused_path_goes_to_the_application() {
    let (_dir, www) = small_site();
    let pool = Pool::start(&["--static-map", &format!("/={}", www.display())]);
    let _z = pool.zergling(&[]);
    pool.wait_attached(1);
    assert_eq!(once(pool.addr, "GET", "/a.txt", "").unwrap().text(), "static file a\n");
    for target in ["/api/a%2Fb", "/..%2fwww2%2fsecret.txt", "/%2e%2e/www2/secret.txt", "/a%5cb"] {
        let r = once(pool.addr, "GET", target, "").unwrap();
        assert_eq!((r.status, r.text().as_str()), (404, "not found"), "{target}: the application's answer");
    }
    // A mount below the root still refuses with 403.
    let pool = Pool::start(&["--static-map", &format!("/s={}", www.display())]);
    assert_eq!(once(pool.addr, "GET", "/s/..%2fwww2%2fsecret.txt", "").unwrap().status, 403);
}

/// SIGHUP builds static-map again: a deploy that switches a `current` symlink to a
/// new release is served after the reload (folders are resolved at start-up and at
/// each reload, not per request), by the pool and by the zerglings the chain reload
/// starts (they get the new options at attach time).
#[test]
fn sighup_resolves_the_static_folders_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(&dir.path().join("v1/app.js"), b"release 1\n");
    write_file(&dir.path().join("v2/app.js"), b"release 2, longer\n");
    let current = dir.path().join("current");
    std::os::unix::fs::symlink(dir.path().join("v1"), &current).unwrap();
    // Without the resolution cache, so that what is served after the switch is
    // the mapping's doing alone.
    let map = format!("/s={}", current.display());
    let pool = Pool::start(&["--static-map", &map, "--static-cache-paths", "0", "--zergling", common::demo()]);
    pool.wait_attached(1);
    assert_eq!(once(pool.addr, "GET", "/s/app.js", "").unwrap().text(), "release 1\n");

    // The deploy: `current` now points at v2 (replaced atomically by rename).
    let next = dir.path().join("current.next");
    std::os::unix::fs::symlink(dir.path().join("v2"), &next).unwrap();
    fs::rename(&next, &current).unwrap();
    assert_eq!(once(pool.addr, "GET", "/s/app.js", "").unwrap().text(), "release 1\n", "until the reload");

    pool.proc.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(pool.proc.wait_log("static-map reloaded", 1, T), "{}", pool.proc.log());
    assert_eq!(once(pool.addr, "GET", "/s/app.js", "").unwrap().text(), "release 2, longer\n");
    // The replacement zergling serves the new release too, on a connection it holds.
    assert!(pool.wait_reloads(1, T), "{}", pool.proc.log());
    let mut c = Http::connect(pool.addr);
    assert_eq!(c.request("GET", "/pid", "").unwrap().status, 200);
    assert_eq!(c.request("GET", "/s/app.js", "").unwrap().text(), "release 2, longer\n");
}
