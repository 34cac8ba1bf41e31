//! The WSGI bridge (PEP 3333): a hyper service that runs a Python application.
//!
//! ```text
//! hyper request ─► WsgiService::call (async, no GIL)
//!                    ├─ the request body is pumped into a bounded channel ─► wsgi.input
//!                    └─ spawn_blocking, at most `threads` at once (a semaphore):
//!                         take the GIL, build environ, call app(environ, start_response),
//!                         iterate the result; each non-empty chunk crosses a bounded
//!                         channel to hyper with the GIL released while it waits
//!                    ◄─ the head (status, headers) arrives with the first non-empty
//!                       chunk, or when the iterable ends empty
//! ```
//!
//! Rules kept here (PEP 3333 and what servers such as gunicorn and uWSGI do):
//! environ strings are native `str` decoded as latin-1; `close()` of the result is
//! called whatever happens (exception, client gone); an exception before the head
//! is sent gives `500` and a traceback on stderr (the pool's log), one after it
//! aborts the response (the client sees a truncated body, never a valid one);
//! hop-by-hop headers set by the application are dropped; `start_response` with
//! `exc_info` replaces a head not yet sent and re-raises once it has been.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};
use tokio::sync::{mpsc, oneshot, Semaphore};
use zergling::{ConnInfo, ListenerKind};

/// Chunks of a response body in flight between the application and hyper: a slow
/// client holds the application thread, never unbounded memory.
const BODY_CHANNEL: usize = 4;
/// Chunks of a request body read ahead of the application.
const INPUT_CHANNEL: usize = 4;

/// Headers that describe one connection, not the response: the server decides them.
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// The applications of one process and how they are run.
pub(crate) struct Apps {
    /// Served for every path no mount matches.
    default: Py<PyAny>,
    /// `(prefix, app)`, longest prefix first; a prefix has no trailing `/`.
    mounts: Vec<(String, Py<PyAny>)>,
    /// One permit per application thread.
    permits: Arc<Semaphore>,
    multithread: bool,
    multiprocess: bool,
    /// `sys.stderr`, as `wsgi.errors`.
    errors: Py<PyAny>,
}

impl Apps {
    pub(crate) fn new(
        py: Python<'_>,
        default: Py<PyAny>,
        mounts: Vec<(String, Py<PyAny>)>,
        threads: usize,
        processes: usize,
    ) -> PyResult<Arc<Apps>> {
        let mut mounts: Vec<(String, Py<PyAny>)> =
            mounts.into_iter().map(|(p, a)| (p.trim_end_matches('/').to_owned(), a)).collect();
        for (prefix, _) in &mounts {
            if !prefix.starts_with('/') {
                return Err(PyValueError::new_err(format!("mount prefix {prefix:?} must start with /")));
            }
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
        let errors = py.import("sys")?.getattr("stderr")?.unbind();
        Ok(Arc::new(Apps {
            default,
            mounts,
            permits: Arc::new(Semaphore::new(threads)),
            multithread: threads > 1,
            multiprocess: processes > 1,
            errors,
        }))
    }

    /// The application for `path`, its `SCRIPT_NAME` and the rest of the path.
    fn route<'a>(&'a self, path: &'a str) -> (&'a Py<PyAny>, &'a str, &'a str) {
        for (prefix, app) in &self.mounts {
            if let Some(rest) = path.strip_prefix(prefix.as_str()) {
                if rest.is_empty() || rest.starts_with('/') {
                    return (app, prefix, rest);
                }
            }
        }
        (&self.default, "", path)
    }
}

/// The hyper service: one WSGI call per request.
#[derive(Clone)]
pub(crate) struct WsgiService {
    apps: Arc<Apps>,
}

impl WsgiService {
    pub(crate) fn new(apps: Arc<Apps>) -> Self {
        WsgiService { apps }
    }
}

/// What the application answered, sent to hyper once.
struct Head {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<WsgiBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for WsgiService {
    type Response = Response<WsgiBody>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let apps = self.apps.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let (input_tx, input_rx) = mpsc::channel(INPUT_CHANNEL);
            if !body.is_end_stream() {
                tokio::spawn(pump_input(body, input_tx));
            }
            let Ok(permit) = apps.permits.clone().acquire_owned().await else {
                return Ok(plain(StatusCode::SERVICE_UNAVAILABLE));
            };
            let (head_tx, head_rx) = oneshot::channel();
            let (body_tx, body_rx) = mpsc::channel(BODY_CHANNEL);
            let exchange = Arc::new(Exchange::new(head_tx, body_tx));
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                run(&apps, &parts, input_rx, exchange);
            });
            Ok(match head_rx.await {
                Ok(head) => {
                    let mut resp = Response::new(WsgiBody(body_rx));
                    *resp.status_mut() = head.status;
                    for (name, value) in head.headers {
                        resp.headers_mut().append(name, value);
                    }
                    resp
                }
                // The application thread ended without a head (a panic).
                Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR),
            })
        })
    }
}

/// A response with no body but its status.
fn plain(status: StatusCode) -> Response<WsgiBody> {
    let (_tx, rx) = mpsc::channel(1);
    let mut resp = Response::new(WsgiBody(rx));
    *resp.status_mut() = status;
    resp
}

/// Moves the request body into the channel `wsgi.input` reads; stops when the
/// application no longer reads (the receiver is dropped).
async fn pump_input(mut body: Incoming, tx: mpsc::Sender<Bytes>) {
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "request body ended early");
                return;
            }
        }
    }
}

/// The response body: chunks from the application thread, or an error that makes
/// hyper abort the connection.
pub(crate) struct WsgiBody(mpsc::Receiver<Result<Bytes, io::Error>>);

impl Body for WsgiBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// The state shared by `start_response`, `write` and the thread iterating the
/// result.
struct Exchange {
    /// Set by `start_response`; sent (taken) with the first byte of body.
    pending: Mutex<Option<Head>>,
    head_tx: Mutex<Option<oneshot::Sender<Head>>>,
    body_tx: mpsc::Sender<Result<Bytes, io::Error>>,
}

impl Exchange {
    fn new(head_tx: oneshot::Sender<Head>, body_tx: mpsc::Sender<Result<Bytes, io::Error>>) -> Self {
        Exchange { pending: Mutex::new(None), head_tx: Mutex::new(Some(head_tx)), body_tx }
    }

    fn head_sent(&self) -> bool {
        self.head_tx.lock().map_or(true, |t| t.is_none())
    }

    /// Sends the head `start_response` set; an error if it was never called.
    fn send_head(&self) -> PyResult<()> {
        let Some(tx) = self.head_tx.lock().ok().and_then(|mut t| t.take()) else {
            return Ok(());
        };
        let head = self.pending.lock().ok().and_then(|mut p| p.take());
        match head {
            Some(head) => {
                let _ = tx.send(head);
                Ok(())
            }
            None => {
                // Put it back: the error path answers 500 with it.
                if let Ok(mut t) = self.head_tx.lock() {
                    *t = Some(tx);
                }
                Err(PyRuntimeError::new_err("the application sent a body before calling start_response"))
            }
        }
    }

    /// Sends the head if needed, then `data`, waiting with the GIL released while
    /// the client is slow. `false` when the client is gone.
    fn send_body(&self, py: Python<'_>, data: &[u8]) -> PyResult<bool> {
        self.send_head()?;
        let chunk = Bytes::copy_from_slice(data);
        let tx = &self.body_tx;
        Ok(py.detach(|| tx.blocking_send(Ok(chunk))).is_ok())
    }

    /// Answers 500 when nothing was sent yet, else aborts the response.
    fn fail(&self) {
        let tx = self.head_tx.lock().ok().and_then(|mut t| t.take());
        match tx {
            Some(tx) => {
                let body = Bytes::from_static(b"Internal Server Error\n");
                let headers = vec![
                    (http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
                    (http::header::CONTENT_LENGTH, HeaderValue::from(body.len())),
                ];
                let _ = tx.send(Head { status: StatusCode::INTERNAL_SERVER_ERROR, headers });
                let _ = self.body_tx.try_send(Ok(body));
            }
            None => {
                let _ = self.body_tx.try_send(Err(io::Error::other("the application failed mid-response")));
            }
        }
    }
}

/// Runs one request on an application thread.
fn run(apps: &Apps, parts: &http::request::Parts, input: mpsc::Receiver<Bytes>, exchange: Arc<Exchange>) {
    Python::attach(|py| {
        let outcome = call_app(py, apps, parts, input, &exchange);
        if let Err(e) = outcome {
            tracing::error!(method = %parts.method, uri = %parts.uri, "the application raised an exception");
            e.print(py);
            exchange.fail();
        }
    });
}

fn call_app(
    py: Python<'_>,
    apps: &Apps,
    parts: &http::request::Parts,
    input: mpsc::Receiver<Bytes>,
    exchange: &Arc<Exchange>,
) -> PyResult<()> {
    let path = parts.uri.path();
    let (app, script_name, path_info) = apps.route(path);
    let environ = environ(py, apps, parts, script_name, path_info, input)?;
    let start_response = Bound::new(py, StartResponse { exchange: exchange.clone() })?;
    let result = app.bind(py).call1((environ, start_response))?;
    let iterated = iterate(py, &result, exchange);
    // PEP 3333: close() is called whatever happened.
    let closed = match result.getattr("close") {
        Ok(close) => close.call0().map(drop),
        Err(_) => Ok(()),
    };
    iterated?;
    closed
}

/// Sends every chunk of the result; stops early, without error, when the client
/// is gone.
fn iterate(py: Python<'_>, result: &Bound<'_, PyAny>, exchange: &Exchange) -> PyResult<()> {
    for item in result.try_iter()? {
        let item = item?;
        let chunk = item.cast::<PyBytes>().map_err(|_| {
            PyValueError::new_err(format!(
                "the application yielded {} where bytes were expected",
                item.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string())
            ))
        })?;
        let data = chunk.as_bytes();
        if data.is_empty() {
            continue;
        }
        if !exchange.send_body(py, data)? {
            tracing::debug!("client gone; the response stops");
            return Ok(());
        }
    }
    exchange.send_head()
}

/// Text as WSGI's native strings: every byte one character (latin-1).
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// `%XX` decoded; anything malformed is kept as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn environ<'py>(
    py: Python<'py>,
    apps: &Apps,
    parts: &http::request::Parts,
    script_name: &str,
    path_info: &str,
    input: mpsc::Receiver<Bytes>,
) -> PyResult<Bound<'py, PyDict>> {
    let env = PyDict::new(py);
    let set = |k: &str, v: &str| env.set_item(k, v);
    let info = parts.extensions.get::<Arc<ConnInfo>>();
    let uwsgi = parts.extensions.get::<Arc<zergling::uwsgi::UwsgiInfo>>();
    if let Some(u) = uwsgi {
        // Behind nginx: every var it sent, as uWSGI's environ has them.
        for (k, v) in &u.request.vars {
            env.set_item(PyString::new(py, &latin1(k)), PyString::new(py, &latin1(v)))?;
        }
    } else {
        set("REQUEST_METHOD", parts.method.as_str())?;
        set("SCRIPT_NAME", script_name)?;
        set("PATH_INFO", &latin1(&percent_decode(path_info)))?;
        set("QUERY_STRING", parts.uri.query().unwrap_or(""))?;
        set("REQUEST_URI", parts.uri.path_and_query().map_or(parts.uri.path(), |p| p.as_str()))?;
        set(
            "SERVER_PROTOCOL",
            match parts.version {
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_2 => "HTTP/2",
                _ => "HTTP/1.1",
            },
        )?;
        let mut joined: Vec<(String, Vec<u8>)> = Vec::new();
        for (name, value) in &parts.headers {
            let key = match name.as_str() {
                "content-type" => "CONTENT_TYPE".to_owned(),
                "content-length" => "CONTENT_LENGTH".to_owned(),
                other => format!("HTTP_{}", other.to_ascii_uppercase().replace('-', "_")),
            };
            match joined.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => {
                    v.extend_from_slice(if key == "HTTP_COOKIE" { b"; " } else { b"," });
                    v.extend_from_slice(value.as_bytes());
                }
                None => joined.push((key, value.as_bytes().to_vec())),
            }
        }
        for (k, v) in &joined {
            set(k, &latin1(v))?;
        }
        if parts.version == http::Version::HTTP_2 && !env.contains("HTTP_HOST")? {
            if let Some(a) = parts.uri.authority() {
                set("HTTP_HOST", a.as_str())?;
            }
        }
        let host = parts
            .headers
            .get(http::header::HOST)
            .map(|h| latin1(h.as_bytes()))
            .or_else(|| parts.uri.authority().map(|a| a.to_string()));
        let local = info.map(|i| i.local.to_string()).unwrap_or_default();
        let https = info.is_some_and(|i| &*i.scheme == "https");
        let (name, port) = match host {
            Some(h) => split_host(&h, if https { "443" } else { "80" }),
            None => split_host(&local, ""),
        };
        set("SERVER_NAME", &name)?;
        set("SERVER_PORT", &port)?;
        if let Some(i) = info {
            let (addr, port) = match i.peer.parse::<std::net::SocketAddr>() {
                Ok(a) => (a.ip().to_string(), a.port().to_string()),
                Err(_) => (i.peer.clone(), String::new()),
            };
            set("REMOTE_ADDR", &addr)?;
            if !port.is_empty() {
                set("REMOTE_PORT", &port)?;
            }
            if https {
                set("HTTPS", "on")?;
            }
        }
    }
    // Keys WSGI requires that nginx may leave out.
    for (k, default) in [("SCRIPT_NAME", script_name), ("QUERY_STRING", ""), ("SERVER_NAME", "localhost")] {
        if !env.contains(k)? {
            set(k, default)?;
        }
    }
    if !env.contains("PATH_INFO")? {
        set("PATH_INFO", &latin1(&percent_decode(path_info)))?;
    }
    if !env.contains("SERVER_PORT")? {
        set("SERVER_PORT", "")?;
    }
    let scheme = match (uwsgi, info) {
        (Some(_), _) => env
            .get_item("UWSGI_SCHEME")?
            .or(env.get_item("REQUEST_SCHEME")?)
            .map(|s| s.extract::<String>())
            .transpose()?
            .unwrap_or_else(|| {
                let on = env.get_item("HTTPS").ok().flatten().and_then(|v| v.extract::<String>().ok());
                if on.is_some_and(|v| v.eq_ignore_ascii_case("on") || v == "1") { "https" } else { "http" }.to_owned()
            }),
        (None, Some(i)) => i.scheme.to_string(),
        (None, None) => "http".to_owned(),
    };
    env.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
    env.set_item("wsgi.url_scheme", scheme)?;
    env.set_item("wsgi.input", Bound::new(py, Input::new(input))?)?;
    env.set_item("wsgi.errors", apps.errors.bind(py))?;
    env.set_item("wsgi.multithread", apps.multithread)?;
    env.set_item("wsgi.multiprocess", apps.multiprocess)?;
    env.set_item("wsgi.run_once", false)?;
    // hyper de-chunks a chunked body and ends it at Content-Length.
    env.set_item("wsgi.input_terminated", true)?;
    if let Some(i) = info {
        env.set_item("zergling.listener", &*i.listener)?;
        env.set_item(
            "zergling.kind",
            match i.kind {
                ListenerKind::Http => "http",
                ListenerKind::Https => "https",
                _ => "uwsgi",
            },
        )?;
    }
    Ok(env)
}

/// `host[:port]` (or `[v6]:port`) split, with `default` as the port when none.
fn split_host(h: &str, default: &str) -> (String, String) {
    if let Some(rest) = h.strip_prefix('[') {
        if let Some((addr, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').unwrap_or(default);
            return (addr.to_owned(), port.to_owned());
        }
    }
    match h.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name.to_owned(), port.to_owned()),
        _ => (h.to_owned(), default.to_owned()),
    }
}

/// `start_response(status, headers, exc_info=None)`, and the `write` callable it
/// returns.
#[pyclass(frozen, module = "zergling._native")]
pub(crate) struct StartResponse {
    exchange: Arc<Exchange>,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &str,
        headers: Vec<(String, String)>,
        exc_info: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let me = slf.get();
        let exc_info = exc_info.filter(|e| !e.is_none());
        match &exc_info {
            Some(exc) if me.exchange.head_sent() => {
                // PEP 3333: too late to change the head; re-raise.
                let value = exc.get_item(1)?;
                return Err(PyErr::from_value(value));
            }
            None if me.exchange.pending.lock().is_ok_and(|p| p.is_some()) => {
                return Err(PyRuntimeError::new_err("start_response called twice without exc_info"));
            }
            _ => {}
        }
        let code = status
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|_| status.len() == 3 || status.as_bytes().get(3) == Some(&b' '))
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| PyValueError::new_err(format!("bad status {status:?}: expected \"200 OK\"")))?;
        let mut list = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            if HOP_BY_HOP.contains(&lower.as_str()) {
                tracing::debug!(header = %name, "hop-by-hop header from the application dropped");
                continue;
            }
            let name = HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| PyValueError::new_err(format!("bad header name {name:?}")))?;
            let bytes: Vec<u8> = value
                .chars()
                .map(|c| u8::try_from(u32::from(c)).ok())
                .collect::<Option<_>>()
                .ok_or_else(|| PyValueError::new_err(format!("header {name}: value is not latin-1")))?;
            let value = HeaderValue::from_bytes(&bytes)
                .map_err(|_| PyValueError::new_err(format!("header {name}: bad value {value:?}")))?;
            list.push((name, value));
        }
        if let Ok(mut p) = me.exchange.pending.lock() {
            *p = Some(Head { status: code, headers: list });
        }
        slf.getattr("write")
    }

    /// The legacy `write(data)` callable.
    fn write(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        if !data.is_empty() && !self.exchange.send_body(py, data)? {
            return Err(PyErr::new::<pyo3::exceptions::PyConnectionError, _>("the client has gone"));
        }
        Ok(())
    }
}

/// `wsgi.input`: the request body, read as the application asks for it.
#[pyclass(frozen, module = "zergling._native")]
pub(crate) struct Input {
    state: Mutex<InputState>,
}

struct InputState {
    rx: mpsc::Receiver<Bytes>,
    buf: BytesMut,
    eof: bool,
}

impl Input {
    fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        Input { state: Mutex::new(InputState { rx, buf: BytesMut::new(), eof: false }) }
    }

    /// Reads until `stop(buffer)` says where to cut, or the body ends.
    fn take(&self, py: Python<'_>, stop: impl Fn(&[u8]) -> Option<usize>) -> PyResult<Py<PyBytes>> {
        let mut st = self.state.lock().map_err(|_| PyRuntimeError::new_err("wsgi.input is poisoned"))?;
        loop {
            if let Some(n) = stop(&st.buf) {
                let n = n.min(st.buf.len());
                let out = st.buf.split_to(n);
                return Ok(PyBytes::new(py, &out).unbind());
            }
            if st.eof {
                let out = st.buf.split();
                return Ok(PyBytes::new(py, &out).unbind());
            }
            let rx = &mut st.rx;
            match py.detach(|| rx.blocking_recv()) {
                Some(chunk) => st.buf.extend_from_slice(&chunk),
                None => st.eof = true,
            }
        }
    }
}

#[pymethods]
impl Input {
    /// `read(size=-1)`: `size` bytes, fewer only at the end of the body.
    #[pyo3(signature = (size=None))]
    fn read(&self, py: Python<'_>, size: Option<isize>) -> PyResult<Py<PyBytes>> {
        match size {
            Some(n) if n >= 0 => {
                let n = n as usize;
                self.take(py, |b| (b.len() >= n).then_some(n))
            }
            _ => self.take(py, |_| None),
        }
    }

    /// `readline(size=-1)`: up to and including the next `\n`.
    #[pyo3(signature = (size=None))]
    fn readline(&self, py: Python<'_>, size: Option<isize>) -> PyResult<Py<PyBytes>> {
        let limit = size.filter(|n| *n >= 0).map(|n| n as usize);
        self.take(py, |b| {
            let nl = b.iter().position(|&c| c == b'\n').map(|i| i + 1);
            match (nl, limit) {
                (Some(i), Some(l)) => Some(i.min(l)),
                (Some(i), None) => Some(i),
                (None, Some(l)) if b.len() >= l => Some(l),
                _ => None,
            }
        })
    }

    /// `readlines(hint=-1)`: lines until their total size reaches `hint`.
    #[pyo3(signature = (hint=None))]
    fn readlines(&self, py: Python<'_>, hint: Option<isize>) -> PyResult<Vec<Py<PyBytes>>> {
        let hint = hint.filter(|h| *h > 0).map(|h| h as usize);
        let mut lines = Vec::new();
        let mut total = 0;
        loop {
            let line = self.readline(py, None)?;
            let len = line.bind(py).as_bytes().len();
            if len == 0 {
                break;
            }
            total += len;
            lines.push(line);
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok((!line.bind(py).as_bytes().is_empty()).then_some(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_and_latin1() {
        assert_eq!(percent_decode("/a%20b/%C3%A9%zz%4"), b"/a b/\xc3\xa9%zz%4");
        assert_eq!(latin1(b"\xc3\xa9"), "\u{c3}\u{a9}");
    }

    #[test]
    fn hosts_split() {
        assert_eq!(split_host("example.com:8080", "80"), ("example.com".into(), "8080".into()));
        assert_eq!(split_host("example.com", "443"), ("example.com".into(), "443".into()));
        assert_eq!(split_host("[::1]:9", "80"), ("::1".into(), "9".into()));
        assert_eq!(split_host("[::1]", "80"), ("::1".into(), "80".into()));
    }
}
