//! The pool's own request log lines: one for every request the pool answers
//! itself (static-map files over HTTP and uwsgi, the `http-to-https`
//! redirects, 400/408/414/431 for heads it refuses, 503 when no zergling
//! takes a connection), in the format and by the rules of the zerglings' lines
//! (`zergpool_core::reqlog`, the `disable-logging`/`log-*` options). What a line
//! shows of the request is read from the bytes the pool holds: an HTTP head
//! (whole, partial or malformed: best effort, never trusted) or a uwsgi packet.

use std::sync::OnceLock;
use std::time::Instant;

use zergpool_core::classify::uwsgi::{UwsgiParse, UwsgiRequest};
use zergpool_core::net::Endpoint;
use zergpool_core::proto::{ConnMeta, ListenerKind};
use zergpool_core::reqlog::{Entry, LogPolicy};

/// The policy, set once when the pool starts (none before: nothing logged).
static POLICY: OnceLock<LogPolicy> = OnceLock::new();

/// Takes the configuration's policy.
pub fn set_policy(policy: LogPolicy) {
    let _ = POLICY.set(policy);
}

/// What a line shows of the request.
#[derive(Debug, Default)]
pub struct Request<'a> {
    /// The method (`-` when unreadable).
    pub method: &'a str,
    /// The request target as sent (`-` when unreadable).
    pub uri: &'a str,
    /// `HTTP/1.1`, … (`-` when unreadable).
    pub proto: &'a str,
    /// The `Host` header (empty when absent).
    pub host: &'a str,
    /// The `User-Agent` header (empty when absent).
    pub uagent: &'a str,
    /// The `Referer` header (empty when absent).
    pub referer: &'a str,
}

/// The request an HTTP head describes, as far as `raw` (the bytes read, a head
/// or its beginning) tells: `-` for what cannot be read.
pub fn http_request(raw: &[u8]) -> Request<'_> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw.len(), |i| i + 2);
    let head = &raw[..end];
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    let mut parts = first.splitn(3, |&b| b == b' ').map(|p| text(p).unwrap_or("-"));
    let mut r = Request {
        method: parts.next().filter(|m| !m.is_empty()).unwrap_or("-"),
        uri: parts.next().unwrap_or("-"),
        proto: parts.next().unwrap_or("-"),
        ..Request::default()
    };
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = text(value).map_or("", str::trim);
        if name.eq_ignore_ascii_case(b"host") {
            r.host = value;
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            r.uagent = value;
        } else if name.eq_ignore_ascii_case(b"referer") {
            r.referer = value;
        }
    }
    r
}

/// The request a uwsgi packet describes (nginx's vars: `REQUEST_METHOD`,
/// `REQUEST_URI`, `SERVER_PROTOCOL`, `HTTP_*`).
pub fn uwsgi_request(req: &UwsgiRequest) -> Request<'_> {
    let var = |k: &str| req.var_bytes(k).and_then(text);
    Request {
        method: var("REQUEST_METHOD").unwrap_or("-"),
        uri: var("REQUEST_URI").or_else(|| var("PATH_INFO")).unwrap_or("-"),
        proto: var("SERVER_PROTOCOL").unwrap_or("-"),
        host: var("HTTP_HOST").unwrap_or(""),
        uagent: var("HTTP_USER_AGENT").unwrap_or(""),
        referer: var("HTTP_REFERER").unwrap_or(""),
    }
}

/// The client of a uwsgi request: nginx's `REMOTE_ADDR`, else the peer (nginx).
pub fn uwsgi_client(req: &UwsgiRequest, peer: &Endpoint) -> Endpoint {
    match req.var("REMOTE_ADDR").and_then(|a| a.parse::<std::net::IpAddr>().ok()) {
        Some(ip) => Endpoint::Ip(ip),
        None => peer.clone(),
    }
}

/// Logs a connection the pool answers without serving it (503 when no
/// zergling takes it, 431 when its head cannot travel), from the bytes it
/// read (`meta.prefix`: an HTTP head, or a uwsgi packet).
pub fn log_unserved(meta: &ConnMeta, status: u16, size: u64, started: Instant) {
    if !POLICY.get().is_some_and(|p| p.wants(status, u64::MAX)) {
        return;
    }
    match meta.kind {
        ListenerKind::Uwsgi => {
            match zergpool_core::classify::uwsgi::parse_packet(
                &meta.prefix,
                zergpool_core::classify::uwsgi::MAX_BUFFER_SIZE,
            ) {
                UwsgiParse::Complete(req) => {
                    log(&uwsgi_client(&req, &meta.peer), &uwsgi_request(&req), status, size, started)
                }
                _ => log(
                    &meta.peer,
                    &Request { method: "-", uri: "-", proto: "-", ..Request::default() },
                    status,
                    size,
                    started,
                ),
            }
        }
        _ => log(&meta.peer, &http_request(&meta.prefix), status, size, started),
    }
}

/// Printable ASCII text, or `None` (a line never carries a client's control
/// characters or invalid UTF-8; JSON escapes the rest).
fn text(b: &[u8]) -> Option<&str> {
    if b.iter().all(|&c| (0x20..0x7f).contains(&c)) {
        std::str::from_utf8(b).ok()
    } else {
        None
    }
}

/// Logs a request the pool answered `status` with `size` body bytes, if the
/// policy wants its line. `peer` is the client (an IP address without its
/// port, or a name).
pub fn log(peer: &Endpoint, req: &Request<'_>, status: u16, size: u64, started: Instant) {
    let Some(policy) = POLICY.get() else { return };
    let now = Instant::now();
    let micros = now.saturating_duration_since(started).as_micros() as u64;
    if !policy.wants(status, micros) {
        return;
    }
    let entry = Entry {
        pid: zergpool_core::reqlog::pid(),
        wid: 0,
        addr: peer,
        method: req.method,
        uri: req.uri,
        proto: req.proto,
        status,
        size,
        micros,
        host: req.host,
        uagent: req.uagent,
        referer: req.referer,
        at: now,
    };
    let mut line = String::new();
    zergpool_core::reqlog::write_line(&policy.format, &entry, &mut line);
    crate::logfile::write_raw(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_whole_partial_and_malformed_give_what_they_can() {
        let r = http_request(b"GET /a?b HTTP/1.1\r\nHost: x.org\r\nUser-Agent: curl/8\r\nReferer: /r\r\n\r\nbody");
        assert_eq!(
            (r.method, r.uri, r.proto, r.host, r.uagent, r.referer),
            ("GET", "/a?b", "HTTP/1.1", "x.org", "curl/8", "/r")
        );
        let r = http_request(b"POST /up");
        assert_eq!((r.method, r.uri, r.proto, r.host), ("POST", "/up", "-", ""));
        let r = http_request(b"");
        assert_eq!((r.method, r.uri, r.proto), ("-", "-", "-"));
        let r = http_request(b"G\x01T /\xff HTTP/1.1\r\nHost: \x1b[31m\r\n\r\n");
        assert_eq!((r.method, r.uri, r.host), ("-", "-", ""), "control bytes never reach a line");
    }
}
