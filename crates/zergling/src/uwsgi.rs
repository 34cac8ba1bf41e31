//! The uwsgi server half of the zergling library: serves one connection that speaks
//! the uwsgi protocol (nginx's `uwsgi_pass`) with the very hyper service that serves
//! HTTP, unchanged: it still receives a `Request<Incoming>`.
//!
//! ```text
//! socket (the pool's bytes replayed first, by Prefixed)
//!   ─► read the packet (classify::uwsgi::parse_packet, bounded by buffer-size and a timeout)
//!   ─► vars → an HTTP/1.0 request head (http_head)
//!   ─► hyper's HTTP/1 server, keep-alive off, reads: that head ++ the bytes read after the
//!      packet ++ the socket; its writes go straight to the socket:
//!      "HTTP/1.0 200 OK", headers, the body, then the connection is closed
//! ```
//!
//! Why this shape:
//!
//! * **One request per connection, ended by the close.** That is what nginx expects of a
//!   uwsgi backend (it never reuses uwsgi upstream connections and reads the response
//!   until EOF, parsing an HTTP status line first).
//! * **HTTP/1.0 on the inside.** nginx's uwsgi module does not de-chunk a response.
//!   hyper never uses chunked transfer-encoding when answering an HTTP/1.0 request: a
//!   body of known length gets `Content-Length`, one of unknown length is delimited by
//!   the close, exactly uWSGI's framing. (Given an HTTP/1.1 head, hyper would chunk.)
//!   The service sees the version the *client* spoke to nginx (`SERVER_PROTOCOL`), as a
//!   WSGI app does; only the wire between hyper and nginx is HTTP/1.0.
//! * **The body is exactly `CONTENT_LENGTH` bytes** (leading digits; absent or empty is
//!   0), sent to hyper as `Content-Length`: hyper's length decoder streams exactly that
//!   many bytes to the service. `HTTP_TRANSFER_ENCODING` is dropped (nginx forwards it
//!   after de-chunking the body, and uWSGI ignores it too).
//! * **Only `HTTP_*`, `CONTENT_TYPE` and `CONTENT_LENGTH` become headers**
//!   (`HTTP_X_FOO` → `x-foo`, repeated keys → repeated headers, in packet order).
//!   Hop-by-hop headers, which describe the client's connection to nginx and not this
//!   one, are dropped: `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Upgrade`,
//!   `Transfer-Encoding` and `Expect` (nginx already answered any `100-continue`), as
//!   are `HTTP_CONTENT_LENGTH`/`HTTP_CONTENT_TYPE`, which nginx sends beside the
//!   unprefixed ones. Every name, value, method and target is validated before it is
//!   written into the head, so a var can never inject a header line; a request that
//!   cannot be written as HTTP gets `400` and the connection is closed.
//! * **The uwsgi facts travel with the request.** Its extensions hold an updated
//!   [`ConnInfo`] (client address from `REMOTE_ADDR`/`REMOTE_PORT`, scheme from
//!   `UWSGI_SCHEME`, `REQUEST_SCHEME` or `HTTPS=on`) in place of the socket's, and a
//!   [`UwsgiInfo`] with every var and the gateway's own address. The uwsgi socket is
//!   trusted for these, as in uWSGI: it must only be reachable by the front-end.
//!
//! Invariants: never a panic or an unbounded buffer on network input; a bad packet
//! closes the connection with a log line and no answer (uWSGI's behaviour); the
//! connection is always closed after one response.

use std::error::Error as StdError;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hyper::body::{Body, Incoming};
use hyper::{Request, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::debug;
use zergpool_core::proto::Scheme;

use super::{ConnInfo, Endpoint, Prefixed, ZerglingService};
use zergpool_core::classify::uwsgi::{UwsgiError, UwsgiRequest};
use zergpool_core::classify::{read_uwsgi_packet, UwsgiReadError};
use zergpool_core::offload::StaticOptions;

/// How long the rest of a packet may take to arrive when the pool handed the
/// connection over: it did so only once it had read the whole packet, so this is a
/// backstop. Connections the zergling accepts itself use the pool's `http-timeout`.
const PACKET_TIMEOUT: Duration = Duration::from_secs(30);

/// How one uwsgi connection is served.
#[derive(Debug, Clone)]
pub struct UwsgiSettings {
    /// Largest packet head accepted (`buffer-size`).
    pub buffer_size: usize,
    /// Time the client has to send the whole packet.
    pub packet_timeout: Duration,
    /// Static-map, when this zergling must apply it (connections it accepted
    /// itself); `None` when the pool already did.
    pub statics: Option<Arc<StaticOptions>>,
    /// Put in the request's extensions (see [`crate::ZerglingConfig::watch_clients`]).
    pub watch: Option<crate::ClientWatch>,
}

impl UwsgiSettings {
    /// For a connection the pool handed over (packet read, static-map applied).
    pub fn handed_over() -> Self {
        UwsgiSettings {
            buffer_size: zergpool_core::classify::uwsgi::MAX_BUFFER_SIZE,
            packet_timeout: PACKET_TIMEOUT,
            statics: None,
            watch: None,
        }
    }
}

/// `HTTP_*` vars that never become headers (see the module docs).
const DROPPED: [&[u8]; 9] = [
    b"HTTP_CONTENT_LENGTH",
    b"HTTP_CONTENT_TYPE",
    b"HTTP_TRANSFER_ENCODING",
    b"HTTP_CONNECTION",
    b"HTTP_KEEP_ALIVE",
    b"HTTP_PROXY_CONNECTION",
    b"HTTP_TE",
    b"HTTP_UPGRADE",
    b"HTTP_EXPECT",
];

/// hyper's default limit on header lines; raised per request when the packet has more.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// The answer to a uwsgi request that cannot be written as HTTP.
const BAD_REQUEST: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nBad Request\n";

/// The uwsgi facts of a request, in its extensions (as `Arc<UwsgiInfo>`) next to its
/// `Arc<ConnInfo>`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UwsgiInfo {
    /// The parsed packet: modifiers and every var in order (`SCRIPT_NAME`,
    /// `DOCUMENT_ROOT`, `SERVER_NAME`, … anything nginx was told to send).
    pub request: UwsgiRequest,
    /// The address the uwsgi connection itself came from (nginx), as the pool saw it;
    /// `ConnInfo::peer` holds the client's address instead.
    pub gateway: Endpoint,
}

/// The HTTP/1.0 request head a uwsgi request is served as, made by [`http_head`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpHead {
    /// `METHOD TARGET HTTP/1.0\r\n`, the header lines, and the blank line.
    pub bytes: Vec<u8>,
    /// How many header lines it has.
    pub headers: usize,
}

/// Why a well-formed uwsgi request cannot be written as an HTTP request (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TranslateError {
    /// `REQUEST_METHOD` is not an HTTP token.
    #[error("REQUEST_METHOD {0:?} is not an HTTP method")]
    Method(String),
    /// The target (`REQUEST_URI`, or `SCRIPT_NAME` + `PATH_INFO` + `QUERY_STRING`) is
    /// not a valid request target.
    #[error("request target {0:?} is not a valid URI")]
    Target(String),
    /// An `HTTP_*` key that does not map to a valid header name.
    #[error("var {0:?} does not name a valid HTTP header")]
    HeaderName(String),
    /// A value holding bytes no header may hold (CR, LF, NUL, other controls).
    #[error("the value of {0:?} is not a valid HTTP header value")]
    HeaderValue(String),
    /// `CONTENT_LENGTH` does not fit in 64 bits.
    #[error("bad CONTENT_LENGTH")]
    ContentLength(#[source] UwsgiError),
}

/// Serves one uwsgi connection: reads the packet (at most `buffer_size` bytes of vars,
/// clamped to 65535), calls `service` once with the request translated to HTTP, writes
/// the response as raw HTTP and closes. `io` must yield the pool's bytes already read
/// first (wrap it in [`Prefixed`]); `info` is the connection's [`ConnInfo`] from the
/// pool, that the request receives updated with the uwsgi client's address and scheme.
/// Errors are logged here, never returned: a connection's failure is its own.
pub async fn serve_uwsgi<IO, S, B>(mut io: IO, info: Arc<ConnInfo>, service: S, settings: UwsgiSettings)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ZerglingService<B>,
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut buf = BytesMut::new();
    // The pool's own bounded read (the packet, and little after it).
    let request = match read_uwsgi_packet(&mut io, &mut buf, settings.buffer_size, settings.packet_timeout).await {
        Ok(Some(request)) => request,
        Ok(None) => return debug!(conn = %info.conn, peer = %info.peer, "closed before a uwsgi packet"),
        Err(UwsgiReadError::Invalid(e)) => {
            zergpool_core::warn_limited!(conn = %info.conn, peer = %info.peer, error = %e, "bad uwsgi packet; closing");
            return;
        }
        Err(e) => return debug!(conn = %info.conn, peer = %info.peer, error = %e, "no uwsgi packet"),
    };
    if let Some(statics) = settings.statics.as_deref().filter(|s| !s.is_empty()) {
        match zergpool_core::offload::try_serve_vars(statics, &mut io, |k| request.var(k)).await {
            Ok(zergpool_core::offload::Outcome::NotStatic) => {}
            Ok(zergpool_core::offload::Outcome::Served { .. }) => {
                drop(crate::stats::Clock::counted());
                let _ = io.shutdown().await;
                return;
            }
            Err(e) => {
                debug!(conn = %info.conn, error = %e, "static response failed");
                return;
            }
        }
    }
    let head = match http_head(&request) {
        Ok(head) => head,
        Err(e) => {
            zergpool_core::warn_limited!(conn = %info.conn, peer = %info.peer, error = %e, "uwsgi request cannot be served as HTTP: 400");
            // Best effort: the peer may already be gone.
            let _ = io.write_all(BAD_REQUEST).await;
            let _ = io.shutdown().await;
            return;
        }
    };
    // The bytes read after the packet are the first bytes of the body.
    let early_body = buf.get(request.head_len..).unwrap_or_default();
    let mut replay = BytesMut::with_capacity(head.bytes.len() + early_body.len());
    replay.extend_from_slice(&head.bytes);
    replay.extend_from_slice(early_body);

    let conn_info = Arc::new(uwsgi_conn_info(&info, &request));
    let version = client_version(&request);
    let uwsgi = Arc::new(UwsgiInfo { request, gateway: info.peer.clone() });
    let watch = settings.watch;
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        *req.version_mut() = version;
        req.extensions_mut().insert(conn_info.clone());
        req.extensions_mut().insert(uwsgi.clone());
        if let Some(w) = &watch {
            req.extensions_mut().insert(w.clone());
        }
        let mut clock = crate::stats::Clock::start(&req, Some(&conn_info));
        let call = service.call(req);
        async move {
            let mut resp = call.await?;
            clock.status(resp.status());
            if let Some(sf) = crate::SendFile::take(&mut resp) {
                let file = crate::statics::StaticBody::file_range(sf.file, sf.start, sf.len);
                return Ok::<_, S::Err>(
                    resp.map(|_| crate::stats::Counted::new(http_body_util::Either::Right(file), clock)),
                );
            }
            Ok::<_, S::Err>(resp.map(|b| crate::stats::Counted::new(http_body_util::Either::Left(b), clock)))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .max_headers(head.headers.max(HYPER_DEFAULT_MAX_HEADERS))
        .serve_connection(TokioIo::new(Prefixed::new(replay.freeze(), io)), svc);
    if let Err(e) = conn.await {
        debug!(conn = %info.conn, error = %e, "uwsgi connection ended with an error");
    }
}

/// Writes the HTTP/1.0 request head that `req` is served as (see the module docs for
/// the mapping). Public so that the fuzz target can check that no var ever injects a
/// header line.
pub fn http_head(req: &UwsgiRequest) -> Result<HttpHead, TranslateError> {
    let method = match req.var_bytes("REQUEST_METHOD") {
        Some(m) if !m.is_empty() => m,
        // A packet without a method (no nginx sends one) is read as CGI does: a GET.
        _ => b"GET",
    };
    if http::Method::from_bytes(method).is_err() {
        return Err(TranslateError::Method(shown(method)));
    }
    let target = target(req)?;

    let mut out = Vec::with_capacity(req.head_len + 64);
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(&target);
    out.extend_from_slice(b" HTTP/1.0\r\n");
    let mut headers = 0;
    let mut has_host = false;
    for (key, value) in &req.vars {
        let Some(suffix) = key.strip_prefix(b"HTTP_") else {
            continue;
        };
        if DROPPED.contains(&&key[..]) {
            continue;
        }
        let name = header_name(suffix).ok_or_else(|| TranslateError::HeaderName(shown(key)))?;
        if http::HeaderValue::from_bytes(value).is_err() {
            return Err(TranslateError::HeaderValue(shown(key)));
        }
        has_host |= name == http::header::HOST;
        push_header(&mut out, name.as_str().as_bytes(), value);
        headers += 1;
    }
    if !has_host {
        // Without HTTP_HOST, the server name nginx matched (only if it is a valid value).
        if let Some(host) = fallback_host(req) {
            push_header(&mut out, b"host", host.as_bytes());
            headers += 1;
        }
    }
    if let Some(ct) = req.var_bytes("CONTENT_TYPE").filter(|v| !v.is_empty()) {
        if http::HeaderValue::from_bytes(ct).is_err() {
            return Err(TranslateError::HeaderValue("CONTENT_TYPE".into()));
        }
        push_header(&mut out, b"content-type", ct);
        headers += 1;
    }
    if req.var_bytes("CONTENT_LENGTH").is_some_and(|v| !v.is_empty()) {
        let len = req.content_length().map_err(TranslateError::ContentLength)?;
        push_header(&mut out, b"content-length", len.to_string().as_bytes());
        headers += 1;
    }
    out.extend_from_slice(b"\r\n");
    Ok(HttpHead { bytes: out, headers })
}

/// `REQUEST_URI` as sent, or else `SCRIPT_NAME` + `PATH_INFO` (re-encoded, as nginx
/// decoded it) + `?QUERY_STRING`; validated as a request target.
///
/// Raw non-ASCII bytes (nginx passes a client's raw UTF-8 target through) are
/// percent-encoded, which keeps their decoded meaning and lets hyper's parser take
/// them; spaces and control bytes are refused. `http::Uri` stops checking at a `#`,
/// so every byte is checked here first.
fn target(req: &UwsgiRequest) -> Result<Vec<u8>, TranslateError> {
    let mut target = Vec::new();
    let visible = match req.var_bytes("REQUEST_URI") {
        Some(uri) if !uri.is_empty() => encode_non_ascii(uri, &mut target),
        _ => {
            percent_encode_path(req.var_bytes("SCRIPT_NAME").unwrap_or_default(), &mut target);
            percent_encode_path(req.var_bytes("PATH_INFO").unwrap_or_default(), &mut target);
            if target.first() != Some(&b'/') {
                target.insert(0, b'/');
            }
            match req.var_bytes("QUERY_STRING").filter(|q| !q.is_empty()) {
                Some(q) => {
                    target.push(b'?');
                    encode_non_ascii(q, &mut target)
                }
                None => true,
            }
        }
    };
    let acceptable = visible
        && match http::Uri::try_from(target.as_slice()) {
            // Origin form, asterisk form (OPTIONS *), or absolute form.
            Ok(uri) => {
                target.first() == Some(&b'/') || target == b"*" || (uri.scheme().is_some() && uri.authority().is_some())
            }
            Err(_) => false,
        };
    if acceptable {
        Ok(target)
    } else {
        let raw = req.var_bytes("REQUEST_URI").filter(|u| !u.is_empty()).unwrap_or(&target);
        Err(TranslateError::Target(shown(raw)))
    }
}

/// Appends `src` with bytes >= 0x80 percent-encoded; false if it holds a space or a
/// control byte (which no request target may hold).
fn encode_non_ascii(src: &[u8], out: &mut Vec<u8>) -> bool {
    for &b in src {
        match b {
            0x21..=0x7e => out.push(b),
            0x80..=0xff => push_percent(b, out),
            _ => return false,
        }
    }
    true
}

/// Percent-encodes a decoded path: every byte but unreserved, sub-delims, `:`, `@`
/// and `/` (so `%`, `?`, `#`, spaces, controls and non-ASCII bytes are encoded).
fn percent_encode_path(path: &[u8], out: &mut Vec<u8>) {
    for &b in path {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(b);
        } else {
            push_percent(b, out);
        }
    }
}

fn push_percent(b: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// `X_FOO` → `x-foo`, if that is a valid header name.
fn header_name(suffix: &[u8]) -> Option<http::HeaderName> {
    let dashed: Vec<u8> = suffix.iter().map(|&b| if b == b'_' { b'-' } else { b }).collect();
    http::HeaderName::from_bytes(&dashed).ok()
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `SERVER_NAME[:SERVER_PORT]` when `SERVER_NAME` is set and makes a valid value.
fn fallback_host(req: &UwsgiRequest) -> Option<String> {
    let name = req.var("SERVER_NAME").filter(|n| !n.is_empty())?;
    let host = match req.var("SERVER_PORT").filter(|p| !p.is_empty()) {
        Some(port) => format!("{name}:{port}"),
        None => name.to_owned(),
    };
    http::HeaderValue::from_str(&host).is_ok().then_some(host)
}

/// The pool's view of the connection, with the client's address and scheme from the
/// vars where they are given.
fn uwsgi_conn_info(base: &ConnInfo, req: &UwsgiRequest) -> ConnInfo {
    let mut info = base.clone();
    if let Some(scheme) = scheme(req) {
        info.scheme = scheme;
    }
    if let Some(peer) = client_address(req) {
        info.peer = peer;
    }
    info
}

/// `UWSGI_SCHEME`, else `REQUEST_SCHEME`, else `HTTPS=on` (or `1`) means `https`.
fn scheme(req: &UwsgiRequest) -> Option<Scheme> {
    let named = |key| Scheme::parse(&req.var(key)?.to_ascii_lowercase());
    named("UWSGI_SCHEME")
        .or_else(|| named("REQUEST_SCHEME"))
        .or_else(|| req.var("HTTPS").filter(|v| v.eq_ignore_ascii_case("on") || *v == "1").map(|_| Scheme::Https))
}

/// `REMOTE_ADDR:REMOTE_PORT` (`[v6]:port` for IPv6), or the address alone when the
/// port is missing or not a port; `None` without a usable `REMOTE_ADDR`.
fn client_address(req: &UwsgiRequest) -> Option<Endpoint> {
    let addr = req.var("REMOTE_ADDR").filter(|a| !a.is_empty() && a.len() <= 256)?;
    let port = req.var("REMOTE_PORT").and_then(|p| p.parse::<u16>().ok());
    Some(match (addr.parse::<IpAddr>(), port) {
        (Ok(ip), Some(port)) => Endpoint::Tcp(std::net::SocketAddr::new(ip, port)),
        (Ok(ip), None) => Endpoint::Ip(ip),
        (Err(_), _) => Endpoint::unix(addr),
    })
}

/// The version the client spoke to the front-end (`SERVER_PROTOCOL`); HTTP/1.0 when
/// absent or unknown, as uWSGI's default status line.
fn client_version(req: &UwsgiRequest) -> Version {
    match req.var("SERVER_PROTOCOL") {
        Some("HTTP/1.1") => Version::HTTP_11,
        Some("HTTP/2.0" | "HTTP/2") => Version::HTTP_2,
        Some("HTTP/3.0" | "HTTP/3") => Version::HTTP_3,
        Some("HTTP/0.9") => Version::HTTP_09,
        _ => Version::HTTP_10,
    }
}

/// Bytes from the network shown in a log line: lossy UTF-8, at most 200 characters.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zergpool_core::classify::uwsgi::{parse_packet, UwsgiParse};

    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::AsyncReadExt;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Frame;
    use hyper::Response;

    use zergpool_core::classify::uwsgi::{encode_packet, DEFAULT_BUFFER_SIZE};
    use zergpool_core::proto::{ConnId, ListenerKind, ZerglingId};

    const GET_ROOT: &[u8] = include_bytes!("../../core/tests/data/uwsgi/get-root.bin");
    const HEAD_ROOT: &[u8] = include_bytes!("../../core/tests/data/uwsgi/head-root.bin");
    const GET_QUERY_HEADERS: &[u8] = include_bytes!("../../core/tests/data/uwsgi/get-query-headers.bin");
    const POST_SMALL: &[u8] = include_bytes!("../../core/tests/data/uwsgi/post-small.bin");
    const POST_CHUNKED: &[u8] = include_bytes!("../../core/tests/data/uwsgi/post-chunked.bin");

    /// A body of unknown length (no size hint): the case where hyper would chunk an
    /// HTTP/1.1 response.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    /// Describes the request it got, then echoes its body, as a streamed body.
    async fn describe(req: Request<Incoming>) -> Result<Response<Chunks>, Infallible> {
        let mut text = format!("method={}\nuri={}\nversion={:?}\n", req.method(), req.uri(), req.version());
        if let Some(info) = req.extensions().get::<Arc<ConnInfo>>() {
            text += &format!("scheme={}\npeer={}\nkind={}\n", info.scheme, info.peer, info.kind.as_str());
        }
        if let Some(uwsgi) = req.extensions().get::<Arc<UwsgiInfo>>() {
            text += &format!("gateway={}\nvars={}\n", uwsgi.gateway, uwsgi.request.vars.len());
        }
        for (name, value) in req.headers() {
            text += &format!("header {}: {}\n", name, String::from_utf8_lossy(value.as_bytes()));
        }
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_else(|_| Bytes::from_static(b"<body error>"));
        text += "body=";
        Ok(Response::new(Chunks(VecDeque::from([Bytes::from(text), body]))))
    }

    fn settings(buffer_size: usize) -> UwsgiSettings {
        UwsgiSettings { buffer_size, ..UwsgiSettings::handed_over() }
    }

    fn pool_info() -> Arc<ConnInfo> {
        Arc::new(ConnInfo {
            zergling: ZerglingId(1),
            conn: ConnId(7),
            listener: "uwsgi0".into(),
            kind: ListenerKind::Uwsgi,
            scheme: Scheme::Http,
            peer: Endpoint::parse("127.0.0.1:40000"),
            local: Endpoint::parse("127.0.0.1:3031"),
            sni: None,
            alpn: None,
            tls_version: None,
        })
    }

    /// Sends `input` in pieces of `piece` bytes (the first `prefix` bytes as the pool's
    /// replayed bytes), and returns everything written back until the close.
    async fn exchange_with<S, B>(input: &[u8], prefix: usize, piece: usize, service: S) -> Vec<u8>
    where
        S: ZerglingService<B>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let io = Prefixed::new(Bytes::copy_from_slice(&input[..prefix]), server);
        let task = tokio::spawn(serve_uwsgi(io, pool_info(), service, settings(DEFAULT_BUFFER_SIZE)));
        for chunk in input[prefix..].chunks(piece.max(1)) {
            client.write_all(chunk).await.expect("write");
            tokio::task::yield_now().await;
        }
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.expect("read");
        task.await.expect("serve_uwsgi panicked");
        out
    }

    async fn exchange(input: &[u8]) -> String {
        let out = exchange_with(input, 0, usize::MAX, hyper::service::service_fn(describe)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    fn packet(vars: &[(&str, &str)]) -> Vec<u8> {
        encode_packet(vars.iter().copied()).expect("fits")
    }

    fn head_of(vars: &[(&[u8], &[u8])]) -> Result<String, TranslateError> {
        let pkt = encode_packet(vars.iter().copied()).expect("fits");
        let UwsgiParse::Complete(req) = parse_packet(&pkt, DEFAULT_BUFFER_SIZE) else { panic!("bad test packet") };
        http_head(&req).map(|h| String::from_utf8_lossy(&h.bytes).into_owned())
    }

    /// The response's head (lowercased) and body.
    fn split(resp: &str) -> (String, &str) {
        let (head, body) = resp.split_once("\r\n\r\n").expect("a response head");
        (head.to_ascii_lowercase(), body)
    }

    fn remote(pkt: &[u8]) -> String {
        let UwsgiParse::Complete(req) = parse_packet(pkt, DEFAULT_BUFFER_SIZE) else { panic!("bad capture") };
        format!("127.0.0.1:{}", req.var("REMOTE_PORT").expect("REMOTE_PORT"))
    }

    fn assert_not_chunked(head: &str) {
        assert!(!head.contains("transfer-encoding"), "{head}");
    }

    #[tokio::test]
    async fn get_from_nginx() {
        let resp = exchange(GET_ROOT).await;
        assert!(resp.starts_with("HTTP/1.0 200 OK\r\n"), "{resp}");
        let (head, body) = split(&resp);
        assert_not_chunked(&head);
        assert!(body.starts_with("method=GET\nuri=/\nversion=HTTP/1.1\nscheme=http\n"), "{body}");
        assert!(
            body.contains(&format!("peer={}\nkind=uwsgi\ngateway=127.0.0.1:40000\nvars=16\n", remote(GET_ROOT))),
            "{body}"
        );
        assert!(
            body.contains("header host: 127.0.0.1\nheader user-agent: curl/7.88.1\nheader accept: */*\n"),
            "{body}"
        );
        assert!(!body.contains("content-length") && !body.contains("content-type"), "{body}");
        assert!(body.ends_with("body="), "{body}");
        // Vars that are not HTTP_* never become headers.
        for var in ["document-root", "remote-addr", "server-name", "request-uri", "query-string"] {
            assert!(!body.contains(var), "{var} in {body}");
        }
    }

    #[tokio::test]
    async fn query_and_repeated_headers_keep_their_order() {
        let resp = exchange(GET_QUERY_HEADERS).await;
        let (head, body) = split(&resp);
        assert!(head.starts_with("http/1.0 200 ok"), "{head}");
        assert!(body.contains("uri=/search/caf%C3%A9/a%20b?q=zerg+pool&lang=en&empty=&x=%2F\n"), "{body}");
        assert!(body.contains("header x-foo: first\nheader x-foo: second\n"), "{body}");
        assert!(body.contains("header x-empty: \n"), "{body}");
        assert!(body.contains("header cookie: session=abc123; theme=dark\n"), "{body}");
        assert_eq!(body.matches("header ").count(), 14, "{body}");
    }

    #[tokio::test]
    async fn post_body_is_content_length_bytes() {
        let resp = exchange(POST_SMALL).await;
        let (head, body) = split(&resp);
        assert_not_chunked(&head);
        assert!(body.starts_with("method=POST\nuri=/echo\n"), "{body}");
        assert_eq!(body.matches("header content-type: application/x-www-form-urlencoded\n").count(), 1, "{body}");
        assert_eq!(body.matches("header content-length: 21\n").count(), 1, "{body}");
        assert!(body.ends_with("body=hello=world&zerg=pool"), "{body}");
    }

    #[tokio::test]
    async fn chunked_upload_as_nginx_sends_it() {
        // nginx de-chunked the body, set CONTENT_LENGTH, and still forwarded
        // HTTP_TRANSFER_ENCODING: chunked. The body is the raw 142 bytes.
        let out = exchange_with(POST_CHUNKED, 0, usize::MAX, hyper::service::service_fn(describe)).await;
        let resp = String::from_utf8_lossy(&out);
        let (head, body) = split(&resp);
        assert!(head.starts_with("http/1.0 200 ok"), "{head}");
        assert_not_chunked(&head);
        assert!(!body.contains("transfer-encoding"), "{body}");
        assert!(body.contains("header content-length: 142\n"), "{body}");
        let sent = &POST_CHUNKED[POST_CHUNKED.len() - 142..];
        assert!(out.ends_with(sent), "the raw body comes back");
        assert!(out.ends_with(b"\x8d\x8e\x8f"));
    }

    #[tokio::test]
    async fn packet_split_across_reads_and_the_pool_prefix() {
        for (prefix, piece) in [(0, 1), (3, 7), (100, 50), (POST_SMALL.len(), 1)] {
            let out = exchange_with(POST_SMALL, prefix, piece, hyper::service::service_fn(describe)).await;
            assert!(
                out.ends_with(b"body=hello=world&zerg=pool"),
                "prefix {prefix} piece {piece}: {}",
                String::from_utf8_lossy(&out)
            );
        }
    }

    #[tokio::test]
    async fn bytes_past_content_length_are_not_body() {
        let mut input = packet(&[("REQUEST_METHOD", "POST"), ("REQUEST_URI", "/echo"), ("CONTENT_LENGTH", "3")]);
        input.extend_from_slice(b"abcdef");
        let resp = exchange(&input).await;
        assert!(resp.ends_with("body=abc"), "{resp}");
    }

    #[tokio::test]
    async fn head_request_has_no_body() {
        let resp = exchange(HEAD_ROOT).await;
        assert!(resp.starts_with("HTTP/1.0 200 OK\r\n"), "{resp}");
        assert!(resp.ends_with("\r\n\r\n"), "{resp}");
    }

    #[tokio::test]
    async fn known_length_responses_carry_content_length() {
        let hello = hyper::service::service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"Hello, world!"))))
        });
        let out = exchange_with(GET_ROOT, 0, usize::MAX, hello).await;
        let resp = String::from_utf8_lossy(&out);
        let (head, body) = split(&resp);
        assert!(head.starts_with("http/1.0 200 ok"), "{head}");
        assert!(head.contains("content-length: 13"), "{head}");
        assert_not_chunked(&head);
        assert_eq!(body, "Hello, world!");
    }

    #[tokio::test]
    async fn scheme_and_client_address_come_from_the_vars() {
        let base = [("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/whoami")];
        for (extra, scheme, peer) in [
            (vec![("HTTPS", "on"), ("REMOTE_ADDR", "::1"), ("REMOTE_PORT", "5000")], "https", "[::1]:5000"),
            (vec![("REQUEST_SCHEME", "https"), ("REMOTE_ADDR", "203.0.113.9")], "https", "203.0.113.9"),
            (
                vec![("UWSGI_SCHEME", "http"), ("HTTPS", "on"), ("REMOTE_ADDR", "unix:"), ("REMOTE_PORT", "")],
                "http",
                "unix:",
            ),
            (vec![("HTTPS", "off")], "http", "127.0.0.1:40000"),
        ] {
            let vars: Vec<_> = base.iter().copied().chain(extra).collect();
            let resp = exchange(&packet(&vars)).await;
            assert!(resp.contains(&format!("scheme={scheme}\npeer={peer}\n")), "{resp}");
            assert!(resp.contains("version=HTTP/1.0\n"), "no SERVER_PROTOCOL: {resp}");
        }
    }

    #[tokio::test]
    async fn bad_packets_are_closed_without_an_answer() {
        for input in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            &[0, 0x88, 0x13, 0],
            &[0, 2, 0, 0, 0, 0],
            &[0, 3, 0, 0, 1, 0, b'A'],
        ] {
            let out = exchange_with(input, 0, usize::MAX, hyper::service::service_fn(describe)).await;
            assert!(out.is_empty(), "{input:?} got {}", String::from_utf8_lossy(&out));
        }
    }

    #[tokio::test]
    async fn incomplete_packets_end_quietly() {
        let mut out = Vec::new();
        // The peer closes mid-packet.
        let (mut client, server) = tokio::io::duplex(1024);
        let task = tokio::spawn(serve_uwsgi(
            server,
            pool_info(),
            hyper::service::service_fn(describe),
            settings(DEFAULT_BUFFER_SIZE),
        ));
        client.write_all(&GET_ROOT[..100]).await.expect("write");
        client.shutdown().await.expect("shutdown");
        client.read_to_end(&mut out).await.expect("read");
        assert!(out.is_empty());
        task.await.expect("serve_uwsgi panicked");
    }

    #[tokio::test]
    async fn untranslatable_requests_get_400() {
        let resp = exchange(&packet(&[("REQUEST_URI", "/"), ("HTTP_X_EVIL", "a\r\nX-Injected: 1")])).await;
        assert!(resp.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{resp}");
        assert!(!resp.contains("method="), "the service was not called: {resp}");
    }

    #[test]
    fn head_mapping() {
        let head = head_of(&[
            (b"REQUEST_METHOD", b"PUT"),
            (b"REQUEST_URI", b"/a?b=1"),
            (b"HTTP_HOST", b"example.test"),
            (b"HTTP_CONNECTION", b"keep-alive"),
            (b"HTTP_TRANSFER_ENCODING", b"chunked"),
            (b"HTTP_EXPECT", b"100-continue"),
            (b"HTTP_UPGRADE", b"websocket"),
            (b"HTTP_CONTENT_LENGTH", b"99"),
            (b"HTTP_X_A", b"1"),
            (b"UWSGI_FILE", b"/etc/passwd"),
            (b"HTTP_X_A", b"2"),
            (b"CONTENT_TYPE", b"text/plain"),
            (b"CONTENT_LENGTH", b"5"),
        ]);
        assert_eq!(
            head.as_deref(),
            Ok("PUT /a?b=1 HTTP/1.0\r\nhost: example.test\r\nx-a: 1\r\nx-a: 2\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n")
        );
    }

    #[test]
    fn head_defaults_and_fallbacks() {
        // No method, no REQUEST_URI: GET, SCRIPT_NAME + PATH_INFO re-encoded + QUERY_STRING;
        // no HTTP_HOST: SERVER_NAME:SERVER_PORT; empty CONTENT_* give no header.
        let head = head_of(&[
            (b"SCRIPT_NAME", b"/app"),
            (b"PATH_INFO", b"/caf\xc3\xa9/a b%?#"),
            (b"QUERY_STRING", b"x=1&y=%2F"),
            (b"SERVER_NAME", b"localhost"),
            (b"SERVER_PORT", b"8081"),
            (b"CONTENT_TYPE", b""),
            (b"CONTENT_LENGTH", b""),
        ]);
        assert_eq!(
            head.as_deref(),
            Ok("GET /app/caf%C3%A9/a%20b%25%3F%23?x=1&y=%2F HTTP/1.0\r\nhost: localhost:8081\r\n\r\n")
        );
        assert_eq!(head_of(&[]).as_deref(), Ok("GET / HTTP/1.0\r\n\r\n"));
        assert_eq!(
            head_of(&[(b"REQUEST_METHOD", b"OPTIONS"), (b"REQUEST_URI", b"*")]).as_deref(),
            Ok("OPTIONS * HTTP/1.0\r\n\r\n")
        );
        assert_eq!(
            head_of(&[(b"REQUEST_URI", b"http://a.test/x")]).as_deref(),
            Ok("GET http://a.test/x HTTP/1.0\r\n\r\n")
        );
        assert_eq!(
            head_of(&[(b"CONTENT_LENGTH", b"12abc")]).as_deref(),
            Ok("GET / HTTP/1.0\r\ncontent-length: 12\r\n\r\n")
        );
        // Raw UTF-8 in the target (nginx passes it through) is percent-encoded.
        assert_eq!(
            head_of(&[(b"REQUEST_URI", b"/caf\xc3\xa9?q=\xff#x")]).as_deref(),
            Ok("GET /caf%C3%A9?q=%FF#x HTTP/1.0\r\n\r\n")
        );
        assert_eq!(
            head_of(&[(b"PATH_INFO", b"/p"), (b"QUERY_STRING", b"q=\xe9")]).as_deref(),
            Ok("GET /p?q=%E9 HTTP/1.0\r\n\r\n")
        );
    }

    #[test]
    fn fuzz_findings_give_heads_hyper_reads() {
        // Found by fuzz/fuzz_targets/uwsgi_http_head.rs: raw bytes >= 0x80 after a `#`
        // in REQUEST_URI/QUERY_STRING passed http::Uri (which stops at `#`) and made a
        // head httparse refused. They are percent-encoded now; a target with control
        // bytes is refused.
        let mut readable = 0;
        for input in [
            &include_bytes!("../../core/tests/data/uwsgi/fuzz-http-head-1.bin")[..],
            include_bytes!("../../core/tests/data/uwsgi/fuzz-http-head-2.bin"),
        ] {
            let UwsgiParse::Complete(req) = parse_packet(input, zergpool_core::classify::uwsgi::MAX_BUFFER_SIZE) else {
                panic!("the finding parses")
            };
            let head = match http_head(&req) {
                Ok(head) => head,
                // Control bytes in the target: refused, which is right too.
                Err(TranslateError::Target(_)) => continue,
                Err(e) => panic!("{e}"),
            };
            let mut headers = vec![httparse::EMPTY_HEADER; head.headers + 1];
            let mut parsed = httparse::Request::new(&mut headers);
            assert_eq!(parsed.parse(&head.bytes), Ok(httparse::Status::Complete(head.bytes.len())));
            assert_eq!(parsed.headers.len(), head.headers);
            assert!(http::Uri::try_from(parsed.path.unwrap_or_default()).is_ok());
            readable += 1;
        }
        assert_eq!(readable, 1, "the first finding is served, the second refused");
    }

    #[test]
    fn head_refuses_what_would_break_the_request_line_or_headers() {
        let cases: [&[(&[u8], &[u8])]; 11] = [
            &[(b"REQUEST_URI", b"/a#b c")],
            &[(b"PATH_INFO", b"/a"), (b"QUERY_STRING", b"a b")],
            &[(b"REQUEST_METHOD", b"GET / HTTP/1.1\r\nX:")],
            &[(b"REQUEST_METHOD", b"G\x00T")],
            &[(b"REQUEST_URI", b"/a b")],
            &[(b"REQUEST_URI", b"/a\r\nX-Injected: 1")],
            &[(b"REQUEST_URI", b"example.test:443")],
            &[(b"HTTP_X_BAD", b"a\nb")],
            &[(b"HTTP_", b"v")],
            &[(b"HTTP_X:Y", b"v")],
            &[(b"CONTENT_LENGTH", b"99999999999999999999999")],
        ];
        for vars in cases {
            assert!(head_of(vars).is_err(), "{vars:?} gave {:?}", head_of(vars));
        }
        assert!(matches!(head_of(&[(b"CONTENT_TYPE", b"a\rb")]), Err(TranslateError::HeaderValue(_))));
    }
}
