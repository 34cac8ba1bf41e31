//! The WSGI bridge (PEP 3333): a hyper service that runs a Python application.
//!
//! ```text
//! hyper request ─► WsgiService::call (async, no GIL)
//!                    ├─ the request body is pumped into a bounded channel ─► wsgi.input
//!                    └─ a job on the queue of the `threads` application threads
//!                       (long-lived, each with its own Python thread state, the GIL
//!                       released while they wait for a job):
//!                         build environ, call app(environ, start_response), then
//!                         * a list or tuple: the whole body at once, with the head;
//!                         * any other iterable: the head with the first non-empty
//!                           chunk, each chunk across a bounded channel to hyper, the
//!                           GIL released while it waits
//!                    ◄─ the response (head and body) arrives on a oneshot
//! ```
//!
//! Rules kept here (PEP 3333 and what servers such as gunicorn and uWSGI do):
//! environ strings are native `str` decoded as latin-1; `close()` of the result is
//! called whatever happens (exception, client gone); an exception before the head
//! is sent gives `500` and a traceback on stderr (the pool's log), one after it
//! aborts the response (the client sees a truncated body, never a valid one);
//! hop-by-hop headers set by the application are dropped; `start_response` with
//! `exc_info` replaces a head not yet sent and re-raises once it has been.
//!
//! `wsgi.file_wrapper` is [`FileWrapper`]: returned by the application for a
//! regular file (one with `fileno()`), the file goes from its current position
//! (`tell()`) as a [`zergling::SendFile`], with `sendfile(2)` on HTTP/1 (no
//! byte through Python or the process; the application's file object is not
//! read, its position stays where it was), for `Content-Length` bytes if the
//! application set it, else to the end. Anything else it wraps is iterated in
//! `blksize` blocks, as PEP 3333 describes.

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
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use tokio::sync::{mpsc, oneshot};
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
    /// How many application threads to start.
    threads: usize,
    multithread: bool,
    multiprocess: bool,
    /// `sys.stderr`, as `wsgi.errors`.
    errors: Py<PyAny>,
    /// Requests queued or running; at `threads` the zergling is saturated.
    in_progress: Mutex<usize>,
    /// Reported to the pool (LOAD), which then prefers other processes.
    pub(crate) saturation: Arc<zergling::Saturation>,
}

impl Apps {
    /// One more request queued or running (`+1`) or one finished (`-1`); the
    /// saturation follows, under the same lock so that it never lags behind.
    fn count(&self, delta: isize) {
        if let Ok(mut n) = self.in_progress.lock() {
            *n = n.saturating_add_signed(delta);
            self.saturation.set(*n >= self.threads);
        }
    }
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
            threads,
            multithread: threads > 1,
            multiprocess: processes > 1,
            errors,
            in_progress: Mutex::new(0),
            saturation: zergling::Saturation::new(),
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

/// The hyper service: one WSGI call per request, queued for the application
/// threads.
#[derive(Clone)]
pub(crate) struct WsgiService {
    jobs: std::sync::mpsc::Sender<Job>,
    apps: Arc<Apps>,
}

/// One request for an application thread.
struct Job {
    parts: http::request::Parts,
    input: mpsc::Receiver<Bytes>,
    reply: oneshot::Sender<Response<WsgiBody>>,
}

/// The application threads: they end when every [`WsgiService`] is dropped.
pub(crate) struct Workers(Vec<std::thread::JoinHandle<()>>);

impl Workers {
    /// Waits for every application thread to end (call without the GIL).
    pub(crate) fn join(self) {
        for t in self.0 {
            let _ = t.join();
        }
    }
}

impl WsgiService {
    /// Starts the application threads of `apps`.
    pub(crate) fn start(apps: Arc<Apps>) -> std::io::Result<(WsgiService, Workers)> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut threads = Vec::with_capacity(apps.threads);
        for i in 0..apps.threads {
            let (apps, queue) = (apps.clone(), queue.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("wsgi-{i}"))
                    .spawn(move || application_thread(&apps, &queue))?,
            );
        }
        Ok((WsgiService { jobs, apps }, Workers(threads)))
    }
}

/// One application thread: attached to the interpreter for its whole life (one
/// thread state, made once), the GIL released while it waits for a job.
fn application_thread(apps: &Apps, queue: &Mutex<std::sync::mpsc::Receiver<Job>>) {
    Python::attach(|py| loop {
        let job = py.detach(|| queue.lock().ok().and_then(|q| q.recv().ok()));
        let Some(job) = job else { return };
        run(py, apps, job);
    });
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<WsgiBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for WsgiService {
    type Response = Response<WsgiBody>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let (input_tx, input) = mpsc::channel(INPUT_CHANNEL);
        if !body.is_end_stream() {
            tokio::spawn(pump_input(body, input_tx));
        }
        let (reply, response) = oneshot::channel();
        self.apps.count(1);
        let queued = self.jobs.send(Job { parts, input, reply }).is_ok();
        if !queued {
            self.apps.count(-1);
        }
        Box::pin(async move {
            if !queued {
                return Ok(plain(StatusCode::SERVICE_UNAVAILABLE));
            }
            // No response: the application thread went away (a panic).
            Ok(response.await.unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR)))
        })
    }
}

/// What the application answered, sent to hyper once.
/// A response head from the application (WSGI's `start_response`, ASGI's
/// `http.response.start`).
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

impl Head {
    /// The application's `Content-Length`, if it gave a valid one and the status
    /// has a body at all (a 304 may carry the length of the body it omits).
    fn content_length(&self) -> Option<u64> {
        let bodiless = self.status.is_informational()
            || self.status == StatusCode::NO_CONTENT
            || self.status == StatusCode::NOT_MODIFIED;
        if bodiless {
            return None;
        }
        self.headers
            .iter()
            .find(|(n, _)| n == http::header::CONTENT_LENGTH)
            .and_then(|(_, v)| v.to_str().ok()?.trim().parse().ok())
    }
}

impl Head {
    pub(crate) fn into_response<B>(self, body: B) -> Response<B> {
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        headers.reserve(self.headers.len());
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        resp
    }
}

/// A response with no body but its status.
fn plain(status: StatusCode) -> Response<WsgiBody> {
    let mut resp = Response::new(WsgiBody::Whole(None));
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

/// The response body: whole (a list or tuple from the application), or chunks
/// from the application thread, where an error makes hyper abort the connection.
pub(crate) enum WsgiBody {
    Whole(Option<Bytes>),
    Stream(mpsc::Receiver<Result<Bytes, io::Error>>),
}

impl Body for WsgiBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut *self {
            WsgiBody::Whole(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            WsgiBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, WsgiBody::Whole(None))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            WsgiBody::Whole(b) => hyper::body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            WsgiBody::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// The state shared by `start_response`, `write` and the thread iterating the
/// result.
struct Exchange {
    /// Set by `start_response`; taken when the response goes out.
    pending: Mutex<Option<Head>>,
    /// Where the response goes; taken when it does.
    reply: Mutex<Option<oneshot::Sender<Response<WsgiBody>>>>,
    /// The chunks of a streamed response, once its head went out.
    stream: Mutex<Option<mpsc::Sender<Result<Bytes, io::Error>>>>,
    /// What the application's `Content-Length` still allows of a streamed body.
    remaining: Mutex<Option<u64>>,
    /// A HEAD request: hyper sends no body whatever the application gives.
    head_request: bool,
}

impl Exchange {
    fn new(reply: oneshot::Sender<Response<WsgiBody>>, head_request: bool) -> Self {
        Exchange {
            pending: Mutex::new(None),
            reply: Mutex::new(Some(reply)),
            stream: Mutex::new(None),
            remaining: Mutex::new(None),
            head_request,
        }
    }

    /// The `Content-Length` of the head `start_response` set, if any.
    fn declared_length(&self) -> Option<u64> {
        self.pending.lock().ok()?.as_ref()?.content_length()
    }

    fn head_sent(&self) -> bool {
        self.reply.lock().map_or(true, |t| t.is_none())
    }

    /// Sends the head `start_response` set with `body`; an error if it was never
    /// called. `Ok(false)` when the response went out already.
    fn respond(&self, body: impl FnOnce() -> WsgiBody) -> PyResult<bool> {
        let mut reply = self.reply.lock().map_err(|_| PyRuntimeError::new_err("poisoned"))?;
        if reply.is_none() {
            return Ok(false);
        }
        let head = self.pending.lock().ok().and_then(|mut p| p.take());
        let Some(head) = head else {
            return Err(PyRuntimeError::new_err("the application sent a body before calling start_response"));
        };
        if let Ok(mut r) = self.remaining.lock() {
            *r = head.content_length();
        }
        if let Some(tx) = reply.take() {
            let _ = tx.send(head.into_response(body()));
        }
        Ok(true)
    }

    /// Sends the head with a file for body (see [`FileWrapper`]).
    fn respond_file(&self, sf: zergling::SendFile) -> PyResult<()> {
        let mut reply = self.reply.lock().map_err(|_| PyRuntimeError::new_err("poisoned"))?;
        let head = self.pending.lock().ok().and_then(|mut p| p.take());
        let Some(head) = head else {
            return Err(PyRuntimeError::new_err("the application sent a body before calling start_response"));
        };
        if let Some(tx) = reply.take() {
            let mut resp = head.into_response(WsgiBody::Whole(None));
            resp.extensions_mut().insert(sf);
            let _ = tx.send(resp);
        }
        Ok(())
    }

    /// Sends the head with an empty body, if it has not gone out.
    fn finish(&self) -> PyResult<()> {
        self.respond(|| WsgiBody::Whole(None)).map(drop)
    }

    /// Streams `data`: the head goes out first if needed; waits with the GIL
    /// released while the client is slow. `false` when the client is gone.
    fn send_chunk(&self, py: Python<'_>, chunk: Bytes) -> PyResult<bool> {
        self.respond(|| {
            let (tx, rx) = mpsc::channel(BODY_CHANNEL);
            if let Ok(mut s) = self.stream.lock() {
                *s = Some(tx);
            }
            WsgiBody::Stream(rx)
        })?;
        let tx = self.stream.lock().ok().and_then(|s| s.clone());
        let Some(tx) = tx else {
            // The response went out whole already (cannot happen: a body is
            // either whole or streamed).
            return Ok(false);
        };
        // More than the application's Content-Length: never let it look like a
        // whole response (hyper would cut it at the length): abort it.
        let over = self.remaining.lock().ok().and_then(|mut r| {
            let left = (*r)?;
            let n = chunk.len() as u64;
            if n > left && !self.head_request {
                return Some(left);
            }
            *r = Some(left.saturating_sub(n));
            None
        });
        if let Some(left) = over {
            tracing::error!(
                allowed = left,
                chunk = chunk.len(),
                "the application sent more than its Content-Length; the response is aborted"
            );
            let _ = tx.try_send(Err(io::Error::other("body longer than Content-Length")));
            return Ok(false);
        }
        Ok(py.detach(|| tx.blocking_send(Ok(chunk))).is_ok())
    }

    /// Answers 500 when nothing was sent yet, else aborts the response.
    fn fail(&self) {
        let reply = self.reply.lock().ok().and_then(|mut t| t.take());
        match reply {
            Some(tx) => {
                let body = Bytes::from_static(b"Internal Server Error\n");
                let headers = vec![
                    (http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
                    (http::header::CONTENT_LENGTH, HeaderValue::from(body.len())),
                ];
                let head = Head { status: StatusCode::INTERNAL_SERVER_ERROR, headers };
                let _ = tx.send(head.into_response(WsgiBody::Whole(Some(body))));
            }
            None => {
                if let Some(tx) = self.stream.lock().ok().and_then(|s| s.clone()) {
                    let _ = tx.try_send(Err(io::Error::other("the application failed mid-response")));
                }
            }
        }
    }
}

/// Runs one request on an application thread.
fn run(py: Python<'_>, apps: &Apps, job: Job) {
    let Job { parts, input, reply } = job;
    let exchange = Arc::new(Exchange::new(reply, parts.method == http::Method::HEAD));
    if let Err(e) = call_app(py, apps, &parts, input, &exchange) {
        tracing::error!(method = %parts.method, uri = %parts.uri, "the application raised an exception");
        e.print(py);
        exchange.fail();
    }
    apps.count(-1);
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
    let closed = match result.getattr(pyo3::intern!(py, "close")) {
        Ok(close) => close.call0().map(drop),
        Err(_) => Ok(()),
    };
    iterated?;
    closed
}

/// A body chunk from the application: the Python `bytes` object itself, kept
/// alive and read without the GIL (no copy).
fn as_bytes(item: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    match item.cast::<PyBytes>() {
        Ok(b) => Ok(Bytes::from_owner(PyBackedBytes::from(b.clone()))),
        Err(_) => Err(PyValueError::new_err(format!(
            "the application yielded {} where bytes were expected",
            item.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string())
        ))),
    }
}

/// Sends the result: a list or tuple whole, with its head (unless `write()`
/// already started a stream); any other iterable chunk by chunk, stopping early,
/// without error, when the client is gone.
fn iterate(py: Python<'_>, result: &Bound<'_, PyAny>, exchange: &Exchange) -> PyResult<()> {
    if !exchange.head_sent() {
        if let Ok(wrapper) = result.cast::<FileWrapper>() {
            if let Some(sf) = wrapper.get().send_file(py, exchange.declared_length())? {
                exchange.respond_file(sf)?;
                return Ok(());
            }
        }
        let whole = if let Ok(list) = result.cast::<PyList>() {
            Some(list.iter().map(|i| as_bytes(&i)).collect::<PyResult<Vec<_>>>()?)
        } else if let Ok(tuple) = result.cast::<PyTuple>() {
            Some(tuple.iter().map(|i| as_bytes(&i)).collect::<PyResult<Vec<_>>>()?)
        } else {
            None
        };
        if let Some(chunks) = whole {
            let body = match chunks.len() {
                0 => None,
                1 => chunks.into_iter().next(),
                _ => Some(Bytes::from(chunks.iter().flat_map(|c| c.iter().copied()).collect::<Vec<u8>>())),
            }
            .filter(|b| !b.is_empty());
            let len = body.as_ref().map_or(0, |b| b.len() as u64);
            match exchange.declared_length() {
                Some(declared) if declared != len && !exchange.head_request => {
                    return Err(PyValueError::new_err(format!(
                        "the application's body is {len} bytes but its Content-Length says {declared}"
                    )));
                }
                _ => {}
            }
            exchange.respond(|| WsgiBody::Whole(body))?;
            return Ok(());
        }
    }
    for item in result.try_iter()? {
        let item = item?;
        let data = as_bytes(&item)?;
        if data.is_empty() {
            continue;
        }
        if !exchange.send_chunk(py, data)? {
            tracing::debug!("client gone; the response stops");
            return Ok(());
        }
    }
    exchange.finish()
}

/// `wsgi.file_wrapper(filelike, blksize=8192)`: an iterable of the file's
/// blocks, with the file's `close()`; the server sends a regular file itself
/// (see the module's docs).
#[pyclass(module = "zergling._native", frozen)]
pub(crate) struct FileWrapper {
    filelike: Py<PyAny>,
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper { filelike, blksize: blksize.max(1) }
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let block = self.filelike.bind(py).call_method1(pyo3::intern!(py, "read"), (self.blksize,))?;
        Ok(if block.is_truthy()? { Some(block.unbind()) } else { None })
    }

    /// Closes the file, if it can be closed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr(pyo3::intern!(py, "close"))? {
            f.call_method0(pyo3::intern!(py, "close"))?;
        }
        Ok(())
    }
}

impl FileWrapper {
    /// The wrapped file as a [`zergling::SendFile`] from its position: `None`
    /// when it is not a regular file with a descriptor (then it is iterated).
    /// The descriptor is opened again (`/proc/self/fd/N`): the application's
    /// file object and its position stay untouched.
    fn send_file(&self, py: Python<'_>, declared: Option<u64>) -> PyResult<Option<zergling::SendFile>> {
        let f = self.filelike.bind(py);
        let Ok(fd) = f.call_method0(pyo3::intern!(py, "fileno")).and_then(|n| n.extract::<i32>()) else {
            return Ok(None);
        };
        let start: u64 = f.call_method0(pyo3::intern!(py, "tell")).and_then(|t| t.extract()).unwrap_or(0);
        let Ok(file) = std::fs::File::open(format!("/proc/self/fd/{fd}")) else { return Ok(None) };
        let Ok(meta) = file.metadata() else { return Ok(None) };
        if !meta.is_file() {
            return Ok(None);
        }
        let len = declared.unwrap_or_else(|| meta.len().saturating_sub(start));
        Ok(Some(zergling::SendFile { file: Arc::new(file), start, len }))
    }
}

/// Text as WSGI's native strings: every byte one character (latin-1).
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// `%XX` decoded; anything malformed is kept as it is.
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
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
        // Behind nginx: every var it sent, as uWSGI's environ has them, except
        // HTTP_CONTENT_TYPE and HTTP_CONTENT_LENGTH, which nginx sends beside the
        // CONTENT_TYPE and CONTENT_LENGTH that PEP 3333 wants instead.
        for (k, v) in &u.request.vars {
            if &k[..] == b"HTTP_CONTENT_TYPE" || &k[..] == b"HTTP_CONTENT_LENGTH" {
                continue;
            }
            env.set_item(PyString::new(py, &latin1(k)), PyString::new(py, &latin1(v)))?;
        }
    } else {
        env.set_item(pyo3::intern!(py, "REQUEST_METHOD"), parts.method.as_str())?;
        env.set_item(pyo3::intern!(py, "SCRIPT_NAME"), script_name)?;
        env.set_item(pyo3::intern!(py, "PATH_INFO"), latin1(&percent_decode(path_info)))?;
        env.set_item(pyo3::intern!(py, "QUERY_STRING"), parts.uri.query().unwrap_or(""))?;
        env.set_item(
            pyo3::intern!(py, "REQUEST_URI"),
            parts.uri.path_and_query().map_or(parts.uri.path(), |p| p.as_str()),
        )?;
        env.set_item(
            pyo3::intern!(py, "SERVER_PROTOCOL"),
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
                env.set_item(pyo3::intern!(py, "HTTP_HOST"), a.as_str())?;
            }
        }
        let host = parts
            .headers
            .get(http::header::HOST)
            .map(|h| latin1(h.as_bytes()))
            .or_else(|| parts.uri.authority().map(|a| a.to_string()));
        let https = info.is_some_and(|i| i.scheme == zergling::Scheme::Https);
        let (name, port) = match (host, info) {
            (Some(h), _) => split_host(&h, if https { "443" } else { "80" }),
            // No Host: the address the client reached, as uWSGI does.
            (None, Some(i)) => (
                i.local.ip().map_or_else(|| i.local.to_string(), |ip| ip.to_string()),
                i.local.port().map(|p| p.to_string()).unwrap_or_default(),
            ),
            (None, None) => (String::new(), String::new()),
        };
        env.set_item(pyo3::intern!(py, "SERVER_NAME"), &name)?;
        env.set_item(pyo3::intern!(py, "SERVER_PORT"), &port)?;
        if let Some(i) = info {
            let addr = i.peer.ip().map_or_else(|| i.peer.to_string(), |ip| ip.to_string());
            env.set_item(pyo3::intern!(py, "REMOTE_ADDR"), &addr)?;
            if let Some(port) = i.peer.port() {
                env.set_item(pyo3::intern!(py, "REMOTE_PORT"), port.to_string())?;
            }
            if https {
                env.set_item(pyo3::intern!(py, "HTTPS"), "on")?;
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
        env.set_item(pyo3::intern!(py, "PATH_INFO"), latin1(&percent_decode(path_info)))?;
    }
    if !env.contains("SERVER_PORT")? {
        env.set_item(pyo3::intern!(py, "SERVER_PORT"), "")?;
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
        (None, Some(i)) => i.scheme.as_str().to_owned(),
        (None, None) => "http".to_owned(),
    };
    env.set_item(pyo3::intern!(py, "wsgi.version"), PyTuple::new(py, [1, 0])?)?;
    env.set_item(pyo3::intern!(py, "wsgi.url_scheme"), scheme)?;
    env.set_item(pyo3::intern!(py, "wsgi.input"), Bound::new(py, Input::new(input))?)?;
    env.set_item(pyo3::intern!(py, "wsgi.errors"), apps.errors.bind(py))?;
    env.set_item(pyo3::intern!(py, "wsgi.multithread"), apps.multithread)?;
    env.set_item(pyo3::intern!(py, "wsgi.multiprocess"), apps.multiprocess)?;
    env.set_item(pyo3::intern!(py, "wsgi.run_once"), false)?;
    env.set_item(pyo3::intern!(py, "wsgi.file_wrapper"), py.get_type::<FileWrapper>())?;
    // hyper de-chunks a chunked body and ends it at Content-Length.
    env.set_item(pyo3::intern!(py, "wsgi.input_terminated"), true)?;
    if let Some(i) = info {
        env.set_item(pyo3::intern!(py, "zergling.listener"), &*i.listener)?;
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
        if !data.is_empty() && !self.exchange.send_chunk(py, Bytes::copy_from_slice(data))? {
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
