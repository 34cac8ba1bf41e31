//! The ASGI bridge (ASGI 3.0, spec 2.4): a hyper service whose requests run as
//! tasks of one asyncio event loop, the process's main thread.
//!
//! ```text
//! io threads (tokio, never the GIL)          the event loop's thread (the GIL)
//! ─────────────────────────────────          ─────────────────────────────────
//! AsgiService::call ── Event::Start ──► Bridge queue ──(a byte on a socket
//!   pump_body: chunks into the Exchange       pair, only when the queue was
//!   ── Event::Wake ───────────────────►       empty)──► Bridge.run_pending:
//!                                               Start: scope, proto, a task
//!                                               Wake: resolve the futures that
//!                                                     receive()/send() returned
//!   the response: oneshot (head + whole  ◄── proto.send(message)
//!   body) or AsgiBody::Stream reading
//!   the Exchange's outbox (bounded)
//! ```
//!
//! The io threads never take the GIL: everything Python is built on the loop's
//! thread, in batches, woken by at most one byte per batch. Backpressure holds
//! both ways: the request body waits in a bounded inbox until the application
//! calls `receive()`, and `send()` of a streamed body does not complete while
//! the outbox holds more than [`OUTBOX_BYTES`] (a slow client never makes the
//! process buffer without bound).
//!
//! `http.disconnect` is what `receive()` returns once the request body was
//! read and either the response is complete or the client went away (the
//! response body was dropped by hyper, a request body that broke off, or the
//! library's [`zergling::ClientWatch`] saw the connection end: an application
//! that waits in `receive()` while it works without writing, as Starlette's
//! `request.is_disconnected()` and streamed responses do, hears it at once,
//! not at its next write). A `receive()` the application cancelled takes no
//! message and does not block the next one. `send()`
//! after the client went away raises `ConnectionError`, an `OSError` (ASGI 2.4:
//! Starlette stops a streamed response on it). Trailers (`trailers: True`) are
//! refused with an exception in `send()`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use tokio::sync::{oneshot, Notify};
use zergling::ConnInfo;

use crate::asgi_ws::{self, WsExchange, WsProto};
use crate::wsgi::Head;

/// Request body bytes read ahead of the application.
const INBOX_BYTES: usize = 256 * 1024;
/// Response body bytes waiting for the client before `send()` waits too.
const OUTBOX_BYTES: usize = 256 * 1024;

/// Headers that describe one connection, not the response: the server decides them.
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// What the io threads ask of the event loop's thread.
enum Event {
    /// A request to start: its scope is built and its task created there.
    Start(Box<Start>),
    /// Something changed in an exchange: its pending futures are looked at again.
    Wake(Arc<Exchange>),
    /// A WebSocket handshake to start (`websocket` scope).
    StartWs(Box<StartWs>),
    /// Something changed in a WebSocket's exchange.
    WakeWs(Arc<WsExchange>),
}

struct Start {
    parts: http::request::Parts,
    exchange: Arc<Exchange>,
}

struct StartWs {
    parts: http::request::Parts,
    exchange: Arc<WsExchange>,
}

/// The queue between the io threads and the event loop, and the socket pair
/// that wakes the loop (`loop.add_reader` on one end).
#[pyclass(frozen, module = "zergling._native")]
pub(crate) struct Bridge {
    queue: Mutex<Vec<Event>>,
    /// A byte is on its way (the loop will run `run_pending`).
    notified: AtomicBool,
    wake_tx: UnixStream,
    wake_rx: UnixStream,
    apps: Py<AsgiApps>,
}

impl Bridge {
    fn push(&self, event: Event) {
        if let Ok(mut q) = self.queue.lock() {
            q.push(event);
        }
        if !self.notified.swap(true, Ordering::SeqCst) {
            // Non-blocking: a full socket already holds a wake-up.
            let _ = (&self.wake_tx).write(&[1]);
        }
    }

    fn wake(&self, exchange: &Arc<Exchange>) {
        if !exchange.wake_queued.swap(true, Ordering::SeqCst) {
            self.push(Event::Wake(exchange.clone()));
        }
    }

    pub(crate) fn wake_ws(&self, exchange: &Arc<WsExchange>) {
        if !exchange.wake_queued.swap(true, Ordering::SeqCst) {
            self.push(Event::WakeWs(exchange.clone()));
        }
    }

    /// A new future of the event loop (on its thread).
    pub(crate) fn create_future<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.apps.bind(py).get().create_future.bind(py).call0()
    }
}

#[pymethods]
impl Bridge {
    /// The descriptor the loop watches (`loop.add_reader(fd, bridge.run_pending)`).
    fn fileno(&self) -> i32 {
        self.wake_rx.as_raw_fd()
    }

    /// Runs on the loop's thread when the descriptor is readable: starts the
    /// requests queued and resolves the futures whose exchanges changed.
    fn run_pending(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        // In this order: bytes drained, then the flag cleared, then the queue
        // taken. A push that sets the flag after it was cleared writes a byte
        // that is still unread (so this runs again); clearing it before the
        // drain could eat that byte and leave the flag set with nothing to
        // wake the loop for the next push.
        let mut sink = [0u8; 256];
        while matches!((&this.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
        this.notified.store(false, Ordering::SeqCst);
        let events = std::mem::take(&mut *this.queue.lock().map_err(|_| PyRuntimeError::new_err("poisoned"))?);
        let apps = this.apps.bind(py).get();
        for event in events {
            let r = match event {
                Event::Start(start) => start_request(py, slf, apps, *start),
                Event::Wake(exchange) => {
                    exchange.wake_queued.store(false, Ordering::SeqCst);
                    exchange.resolve_pending(py, apps)
                }
                Event::StartWs(start) => start_websocket(py, slf, apps, *start),
                Event::WakeWs(exchange) => {
                    exchange.wake_queued.store(false, Ordering::SeqCst);
                    exchange.resolve_pending(py)
                }
            };
            if let Err(e) = r {
                // One request's failure: logged with its traceback, the others go on.
                e.print(py);
            }
        }
        Ok(())
    }
}

/// The application and the event loop's functions the bridge calls.
#[pyclass(frozen, module = "zergling._native")]
pub(crate) struct AsgiApps {
    default: Py<PyAny>,
    /// `(prefix, app)`, longest prefix first; the prefix becomes `root_path`.
    mounts: Vec<(String, Py<PyAny>)>,
    /// `zergling.asgi.run(app, scope, proto)`: the coroutine of one request.
    runner: Py<PyAny>,
    create_task: Py<PyAny>,
    create_future: Py<PyAny>,
    /// The lifespan's state, copied (shallowly) into every scope.
    state: Option<Py<PyDict>>,
    /// `scope["asgi"]`, shared.
    asgi: Py<PyDict>,
}

impl AsgiApps {
    fn route<'a>(&'a self, path: &str) -> (&'a Py<PyAny>, &'a str) {
        for (prefix, app) in &self.mounts {
            if let Some(rest) = path.strip_prefix(prefix.as_str()) {
                if rest.is_empty() || rest.starts_with('/') {
                    return (app, prefix);
                }
            }
        }
        (&self.default, "")
    }
}

/// Builds the bridge: `app` serves every path no mount matches; `event_loop` is
/// the loop the requests run on (the caller's thread runs it).
pub(crate) fn bridge(
    py: Python<'_>,
    app: Py<PyAny>,
    mounts: Vec<(String, Py<PyAny>)>,
    event_loop: &Bound<'_, PyAny>,
    runner: Py<PyAny>,
    state: Option<Py<PyDict>>,
) -> PyResult<Py<Bridge>> {
    let mut mounts: Vec<(String, Py<PyAny>)> =
        mounts.into_iter().map(|(p, a)| (p.trim_end_matches('/').to_owned(), a)).collect();
    if let Some((p, _)) = mounts.iter().find(|(p, _)| !p.starts_with('/')) {
        return Err(PyValueError::new_err(format!("mount prefix {p:?} must start with /")));
    }
    mounts.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
    let asgi = PyDict::new(py);
    asgi.set_item("version", "3.0")?;
    asgi.set_item("spec_version", "2.4")?;
    let apps = AsgiApps {
        default: app,
        mounts,
        runner,
        create_task: event_loop.getattr("create_task")?.unbind(),
        create_future: event_loop.getattr("create_future")?.unbind(),
        state,
        asgi: asgi.unbind(),
    };
    let (wake_tx, wake_rx) = UnixStream::pair()?;
    wake_tx.set_nonblocking(true)?;
    wake_rx.set_nonblocking(true)?;
    Py::new(
        py,
        Bridge {
            queue: Mutex::new(Vec::new()),
            notified: AtomicBool::new(false),
            wake_tx,
            wake_rx,
            apps: Py::new(py, apps)?,
        },
    )
}

/// The hyper service: every request becomes an [`Event::Start`].
#[derive(Clone)]
pub(crate) struct AsgiService {
    pub(crate) bridge: Arc<Py<Bridge>>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<AsgiBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for AsgiService {
    type Response = Response<AsgiBody>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        if asgi_ws::is_websocket(&req) {
            let upgrade = hyper::upgrade::on(&mut req);
            let going_away = req.extensions().get::<zergling::GoingAway>().cloned();
            let (reply, response) = oneshot::channel();
            let exchange = Arc::new(WsExchange::new(reply, asgi_ws::accept_key(&req)));
            let (parts, _) = req.into_parts();
            let bridge = self.bridge.clone();
            bridge.get().push(Event::StartWs(Box::new(StartWs { parts, exchange: exchange.clone() })));
            return Box::pin(async move {
                let gone = asgi_ws::HandshakeGone(Some((exchange.clone(), bridge.clone())));
                let resp = response.await.unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR));
                gone.disarm();
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    tokio::spawn(asgi_ws::run_socket(upgrade, exchange, bridge, going_away));
                }
                Ok(resp)
            });
        }
        let (parts, body) = req.into_parts();
        let (reply, response) = oneshot::channel();
        let client = parts.extensions.get::<zergling::ClientWatch>().cloned();
        let exchange = Arc::new(Exchange::new(reply, parts.method == http::Method::HEAD, client));
        let bridge = self.bridge.clone();
        if body.is_end_stream() {
            exchange.lock().body_ended = true;
        } else {
            tokio::spawn(pump_body(body, exchange.clone(), bridge.clone()));
        }
        bridge.get().push(Event::Start(Box::new(Start { parts, exchange: exchange.clone() })));
        Box::pin(async move {
            // Dropped by hyper before the answer (the client went away): the
            // application hears http.disconnect.
            let gone = Gone(Some((exchange.clone(), bridge.clone())));
            let mut response = response;
            let watch = watch_client(exchange.clone());
            tokio::pin!(watch);
            let resp = tokio::select! {
                r = &mut response => r,
                () = &mut watch => {
                    // Gone while the application works without writing.
                    exchange.client_gone(&bridge);
                    response.await
                }
            };
            gone.disarm();
            Ok(resp.unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR)))
        })
    }
}

/// Completes when the client of `exchange` has gone, watched only from the
/// moment the application waits for `http.disconnect` (a `receive()` after the
/// whole body: see [`Exchange::want_watch`]); never without a
/// [`zergling::ClientWatch`].
async fn watch_client(exchange: Arc<Exchange>) {
    let Some(client) = exchange.client.clone() else {
        return std::future::pending().await;
    };
    loop {
        let wanted = exchange.watch.notified();
        tokio::pin!(wanted);
        wanted.as_mut().enable();
        if exchange.watch_wanted.load(Ordering::SeqCst) {
            break;
        }
        wanted.await;
    }
    client.gone().await;
}

/// Tells the exchange the client went away when dropped armed.
struct Gone(Option<(Arc<Exchange>, Arc<Py<Bridge>>)>);

impl Gone {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Gone {
    fn drop(&mut self) {
        if let Some((exchange, bridge)) = self.0.take() {
            exchange.client_gone(&bridge);
        }
    }
}

/// Moves the request body into the exchange's inbox, as far as it has room.
async fn pump_body(mut body: Incoming, exchange: Arc<Exchange>, bridge: Arc<Py<Bridge>>) {
    loop {
        // Room in the inbox (re-checked on every notification: none is missed).
        loop {
            let room = exchange.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let (gone, has_room) = {
                let st = exchange.lock();
                (st.disconnected, st.inbox_bytes < INBOX_BYTES)
            };
            if gone {
                return;
            }
            if has_room {
                break;
            }
            room.await;
        }
        let frame = body.frame().await;
        let (done, wanted) = {
            let mut st = exchange.lock();
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            st.inbox_bytes += data.len();
                            st.inbox.push_back(data);
                        }
                    }
                    if body.is_end_stream() {
                        st.body_ended = true;
                    }
                }
                None => st.body_ended = true,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "request body broke off");
                    st.disconnected = true;
                }
            }
            (st.body_ended || st.disconnected, st.receiver.is_some())
        };
        if wanted {
            bridge.get().wake(&exchange);
        }
        if done {
            return;
        }
    }
}

/// One request's state, shared by the io side and the loop's side.
pub(crate) struct Exchange {
    state: Mutex<State>,
    /// The pump waits here for room in the inbox.
    room: Notify,
    /// An [`Event::Wake`] for it is queued.
    wake_queued: AtomicBool,
    head_request: bool,
    /// Tells when the client has gone (the library's, when it watches clients).
    client: Option<zergling::ClientWatch>,
    /// The application waits for `http.disconnect`: the client is watched.
    watch_wanted: AtomicBool,
    /// Signalled when `watch_wanted` is set.
    watch: Notify,
}

#[derive(Default)]
struct State {
    // The request body.
    inbox: VecDeque<Bytes>,
    inbox_bytes: usize,
    body_ended: bool,
    /// `receive()` said `more_body: False` already.
    body_told: bool,
    /// The future of a `receive()` waiting.
    receiver: Option<Py<PyAny>>,
    /// The client went away, or the response is complete: `receive()` says
    /// `http.disconnect` once the body was read.
    disconnected: bool,
    // The response.
    head: Option<Head>,
    reply: Option<oneshot::Sender<Response<AsgiBody>>>,
    streaming: bool,
    outbox: VecDeque<Bytes>,
    outbox_bytes: usize,
    response_ended: bool,
    /// The application failed or returned in the middle of a streamed body: the
    /// connection is aborted, so the client never takes it for complete.
    response_failed: bool,
    body_waker: Option<Waker>,
    /// The future of a `send()` waiting for room.
    sender: Option<Py<PyAny>>,
}

impl Exchange {
    fn new(
        reply: oneshot::Sender<Response<AsgiBody>>,
        head_request: bool,
        client: Option<zergling::ClientWatch>,
    ) -> Self {
        Exchange {
            state: Mutex::new(State { reply: Some(reply), ..State::default() }),
            room: Notify::new(),
            wake_queued: AtomicBool::new(false),
            head_request,
            client,
            watch_wanted: AtomicBool::new(false),
            watch: Notify::new(),
        }
    }

    /// The application waits for `http.disconnect` (a `receive()` pending after
    /// the whole body): from now on the client is watched, so that it hears of a
    /// departure at once, not at its next write. Watched only then: an
    /// application that never asks pays nothing for it.
    fn want_watch(&self) {
        if self.client.is_some() && !self.watch_wanted.swap(true, Ordering::SeqCst) {
            self.watch.notify_waiters();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client went away (from an io thread).
    fn client_gone(self: &Arc<Self>, bridge: &Arc<Py<Bridge>>) {
        let mut st = self.lock();
        if st.disconnected {
            return;
        }
        st.disconnected = true;
        let waiting = st.receiver.is_some() || st.sender.is_some();
        drop(st);
        self.room.notify_one();
        if waiting {
            bridge.get().wake(self);
        }
    }

    /// On the loop's thread: resolves what `receive()` and `send()` returned,
    /// where the state now allows.
    fn resolve_pending(&self, py: Python<'_>, _apps: &AsgiApps) -> PyResult<()> {
        let mut st = self.lock();
        forget_cancelled(py, &mut st.receiver)?;
        if st.receiver.is_some() {
            if let Some(msg) = next_message(py, &mut st)? {
                let fut = st.receiver.take();
                drop(st);
                self.room.notify_one();
                if let Some(fut) = fut {
                    set_result(py, fut.bind(py), msg.as_any())?;
                }
                st = self.lock();
            }
        }
        if st.sender.is_some() && (st.outbox_bytes < OUTBOX_BYTES || st.disconnected) {
            if let Some(fut) = st.sender.take() {
                drop(st);
                set_result(py, fut.bind(py), &py.None().into_bound(py))?;
            }
        }
        Ok(())
    }
}

/// `receive()` of either scope: `fut` gets the next message now if `next` has
/// one (and the reader's side hears there is room), else it waits in
/// `receiver` until the io side changes the state.
pub(crate) fn receive_into<'py, S>(
    py: Python<'py>,
    fut: Bound<'py, PyAny>,
    mut st: std::sync::MutexGuard<'_, S>,
    next: impl FnOnce(Python<'py>, &mut S) -> PyResult<Option<Bound<'py, PyDict>>>,
    receiver: impl Fn(&mut S) -> &mut Option<Py<PyAny>>,
    room: &Notify,
) -> PyResult<Bound<'py, PyAny>> {
    // One the application cancelled (Starlette's `is_disconnected()` does it
    // on purpose) is forgotten: it took no message.
    forget_cancelled(py, receiver(&mut st))?;
    if receiver(&mut st).is_some() {
        return Err(PyRuntimeError::new_err("receive() called again before the last one completed"));
    }
    match next(py, &mut st)? {
        Some(msg) => {
            drop(st);
            room.notify_one();
            fut.call_method1(pyo3::intern!(py, "set_result"), (msg,))?;
        }
        None => *receiver(&mut st) = Some(fut.clone().unbind()),
    }
    Ok(fut)
}

/// Forgets a waiting `receive()` whose future is done already (the application
/// cancelled it), so that no message is taken for it and a new `receive()` may
/// wait.
fn forget_cancelled(py: Python<'_>, receiver: &mut Option<Py<PyAny>>) -> PyResult<()> {
    if let Some(fut) = receiver {
        if fut.bind(py).call_method0(pyo3::intern!(py, "done"))?.is_truthy()? {
            *receiver = None;
        }
    }
    Ok(())
}

/// Sets a future's result unless it is done (cancelled by the application).
pub(crate) fn set_result(py: Python<'_>, fut: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if !fut.call_method0(pyo3::intern!(py, "done"))?.is_truthy()? {
        fut.call_method1(pyo3::intern!(py, "set_result"), (value,))?;
    }
    Ok(())
}

/// The message `receive()` returns now, if there is one.
fn next_message<'py>(py: Python<'py>, st: &mut State) -> PyResult<Option<Bound<'py, PyDict>>> {
    if !st.inbox.is_empty() || (st.body_ended && !st.body_told) {
        // Every chunk that arrived, in one message.
        let body = if st.inbox.len() == 1 {
            st.inbox.pop_front().unwrap_or_default()
        } else {
            let mut all = bytes::BytesMut::with_capacity(st.inbox_bytes);
            for c in st.inbox.drain(..) {
                all.extend_from_slice(&c);
            }
            all.freeze()
        };
        st.inbox_bytes = 0;
        let more = !st.body_ended;
        st.body_told |= !more;
        let msg = PyDict::new(py);
        msg.set_item(pyo3::intern!(py, "type"), pyo3::intern!(py, "http.request"))?;
        msg.set_item(pyo3::intern!(py, "body"), PyBytes::new(py, &body))?;
        msg.set_item(pyo3::intern!(py, "more_body"), more)?;
        return Ok(Some(msg));
    }
    if st.disconnected {
        let msg = PyDict::new(py);
        msg.set_item(pyo3::intern!(py, "type"), pyo3::intern!(py, "http.disconnect"))?;
        return Ok(Some(msg));
    }
    Ok(None)
}

/// Builds the scope and starts the application's task (on the loop's thread).
fn start_request(py: Python<'_>, bridge: &Bound<'_, Bridge>, apps: &AsgiApps, start: Start) -> PyResult<()> {
    let Start { parts, exchange } = start;
    let (app, root_path) = apps.route(parts.uri.path());
    let scope = http_scope(py, apps, &parts, root_path)?;
    let proto = Bound::new(py, HttpProto { exchange, bridge: bridge.clone().unbind() })?;
    let coro = apps.runner.bind(py).call1((app.bind(py), scope, proto))?;
    apps.create_task.bind(py).call1((coro,))?;
    Ok(())
}

/// Starts a `websocket` scope's task (on the loop's thread).
fn start_websocket(py: Python<'_>, bridge: &Bound<'_, Bridge>, apps: &AsgiApps, start: StartWs) -> PyResult<()> {
    let StartWs { parts, exchange } = start;
    let (app, root_path) = apps.route(parts.uri.path());
    let scope = asgi_ws::scope(py, apps, &parts, root_path)?;
    let proto = Bound::new(py, WsProto { exchange, bridge: bridge.clone().unbind() })?;
    let coro = apps.runner.bind(py).call1((app.bind(py), scope, proto))?;
    apps.create_task.bind(py).call1((coro,))?;
    Ok(())
}

/// The `http` scope of a request.
pub(crate) fn http_scope<'py>(
    py: Python<'py>,
    apps: &AsgiApps,
    parts: &http::request::Parts,
    root_path: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let info = parts.extensions.get::<Arc<ConnInfo>>();
    let scope = PyDict::new(py);
    scope.set_item(pyo3::intern!(py, "type"), pyo3::intern!(py, "http"))?;
    scope.set_item(pyo3::intern!(py, "asgi"), apps.asgi.bind(py))?;
    scope.set_item(
        pyo3::intern!(py, "http_version"),
        match parts.version {
            http::Version::HTTP_10 => pyo3::intern!(py, "1.0"),
            http::Version::HTTP_2 => pyo3::intern!(py, "2"),
            _ => pyo3::intern!(py, "1.1"),
        },
    )?;
    scope.set_item(pyo3::intern!(py, "method"), parts.method.as_str())?;
    let https = info.is_some_and(|i| i.scheme == zergling::Scheme::Https);
    scope.set_item(pyo3::intern!(py, "scheme"), if https { "https" } else { "http" })?;
    let raw_path = parts.uri.path();
    scope.set_item(pyo3::intern!(py, "path"), String::from_utf8_lossy(&crate::wsgi::percent_decode(raw_path)))?;
    scope.set_item(pyo3::intern!(py, "raw_path"), PyBytes::new(py, raw_path.as_bytes()))?;
    scope.set_item(pyo3::intern!(py, "query_string"), PyBytes::new(py, parts.uri.query().unwrap_or("").as_bytes()))?;
    scope.set_item(pyo3::intern!(py, "root_path"), root_path)?;
    scope.set_item(pyo3::intern!(py, "headers"), headers(py, parts)?)?;
    let endpoint = |e: &zergling::Endpoint| -> PyResult<Py<PyAny>> {
        Ok(match (e.ip(), e.port()) {
            (Some(ip), Some(port)) => {
                PyTuple::new(py, [ip.to_string().into_pyobject(py)?.into_any(), port.into_pyobject(py)?.into_any()])?
                    .into_any()
                    .unbind()
            }
            _ => py.None(),
        })
    };
    match info {
        Some(i) => {
            scope.set_item(pyo3::intern!(py, "client"), endpoint(&i.peer)?)?;
            scope.set_item(pyo3::intern!(py, "server"), endpoint(&i.local)?)?;
        }
        None => {
            scope.set_item(pyo3::intern!(py, "client"), py.None())?;
            scope.set_item(pyo3::intern!(py, "server"), py.None())?;
        }
    }
    if let Some(state) = &apps.state {
        scope.set_item(pyo3::intern!(py, "state"), state.bind(py).copy()?)?;
    }
    Ok(scope)
}

/// The request's headers as ASGI wants them: `[(name, value), …]`, names in
/// lower case (hyper's already are), and `host` from HTTP/2's `:authority`.
fn headers<'py>(py: Python<'py>, parts: &http::request::Parts) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for (name, value) in &parts.headers {
        list.append((PyBytes::new(py, name.as_str().as_bytes()), PyBytes::new(py, value.as_bytes())))?;
    }
    if parts.version == http::Version::HTTP_2 && !parts.headers.contains_key(http::header::HOST) {
        if let Some(a) = parts.uri.authority() {
            list.append((PyBytes::new(py, b"host"), PyBytes::new(py, a.as_str().as_bytes())))?;
        }
    }
    Ok(list)
}

/// `receive` and `send` of one `http` request, and the runner's report.
#[pyclass(frozen, module = "zergling._native")]
pub(crate) struct HttpProto {
    exchange: Arc<Exchange>,
    bridge: Py<Bridge>,
}

#[pymethods]
impl HttpProto {
    /// ASGI's `receive()`: an awaitable of the next message.
    fn receive<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let fut = self.bridge.bind(py).get().create_future(py)?;
        let st = self.exchange.lock();
        let fut = receive_into(py, fut, st, next_message, |st| &mut st.receiver, &self.exchange.room)?;
        if self.exchange.client.is_some() {
            let st = self.exchange.lock();
            let waits_for_disconnect = st.receiver.is_some() && st.body_told && !st.disconnected;
            drop(st);
            if waits_for_disconnect {
                self.exchange.want_watch();
            }
        }
        Ok(fut)
    }

    /// ASGI's `send(message)`: an awaitable that completes once the message is
    /// taken (at once, unless a streamed body is waiting for the client).
    fn send<'py>(&self, py: Python<'py>, message: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
        let fut = self.bridge.bind(py).get().create_future(py)?;
        let ty = message
            .get_item(pyo3::intern!(py, "type"))?
            .ok_or_else(|| PyValueError::new_err("an ASGI message needs a \"type\""))?;
        let ty: pyo3::pybacked::PyBackedStr = ty.extract()?;
        let pending = match &*ty {
            "http.response.start" => {
                self.start(py, message)?;
                false
            }
            "http.response.body" => self.body(py, message, &fut)?,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unexpected ASGI message {other:?} in an http scope (expected http.response.start or http.response.body)"
                )))
            }
        };
        if !pending {
            fut.call_method1(pyo3::intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(fut)
    }

    /// Whether the client went away before the response was complete (an
    /// exception then is the application noticing: not worth a traceback).
    fn client_gone(&self) -> bool {
        let st = self.exchange.lock();
        st.disconnected && !st.response_ended
    }

    /// Called by the runner when the application's coroutine ended (`failed`:
    /// with an exception, already logged).
    fn finished(&self, failed: bool) {
        let mut st = self.exchange.lock();
        if let Some(reply) = st.reply.take() {
            if !failed && !st.disconnected {
                tracing::error!("the ASGI application returned without a complete response: 500");
            }
            let _ = reply.send(plain(StatusCode::INTERNAL_SERVER_ERROR));
        } else if st.streaming && !st.response_ended {
            if !failed {
                tracing::error!(
                    "the ASGI application returned in the middle of a streamed response: the connection is aborted"
                );
            }
            st.response_failed = true;
            if let Some(w) = st.body_waker.take() {
                w.wake();
            }
        }
        st.receiver = None;
        st.sender = None;
    }
}

impl HttpProto {
    fn start(&self, py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<()> {
        let mut st = self.exchange.lock();
        if st.head.is_some() || st.reply.is_none() {
            return Err(PyRuntimeError::new_err("http.response.start sent twice"));
        }
        if let Some(t) = message.get_item(pyo3::intern!(py, "trailers"))? {
            if t.is_truthy()? {
                return Err(PyRuntimeError::new_err(
                    "zergling does not send HTTP trailers: send http.response.start without trailers: True",
                ));
            }
        }
        let status: u16 = message
            .get_item(pyo3::intern!(py, "status"))?
            .ok_or_else(|| PyValueError::new_err("http.response.start needs a status"))?
            .extract()?;
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|s| s.as_u16() >= 200)
            .ok_or_else(|| PyValueError::new_err(format!("bad status {status}: expected 200 to 999")))?;
        let mut headers = Vec::new();
        if let Some(list) = message.get_item(pyo3::intern!(py, "headers"))? {
            for pair in list.try_iter()? {
                let (name, value) = header_pair(&pair?)?;
                let name = HeaderName::from_bytes(&name).map_err(|_| {
                    PyValueError::new_err(format!("bad header name {:?}", String::from_utf8_lossy(&name)))
                })?;
                if HOP_BY_HOP.contains(&name.as_str()) {
                    continue;
                }
                let value = HeaderValue::from_bytes(&value)
                    .map_err(|_| PyValueError::new_err(format!("header {name}: bad value")))?;
                headers.push((name, value));
            }
        }
        st.head = Some(Head { status, headers });
        Ok(())
    }

    /// Takes a body message; true when `fut` waits for room.
    fn body(&self, py: Python<'_>, message: &Bound<'_, PyDict>, fut: &Bound<'_, PyAny>) -> PyResult<bool> {
        let body: Bytes = match message.get_item(pyo3::intern!(py, "body"))? {
            Some(b) if !b.is_none() => Bytes::from_owner(b.extract::<PyBackedBytes>()?),
            _ => Bytes::new(),
        };
        let more = match message.get_item(pyo3::intern!(py, "more_body"))? {
            Some(m) => m.is_truthy()?,
            None => false,
        };
        let mut st = self.exchange.lock();
        if let Some(reply) = st.reply.take() {
            let head = st
                .head
                .take()
                .ok_or_else(|| PyRuntimeError::new_err("http.response.body sent before http.response.start"))?;
            let body = if self.exchange.head_request { Bytes::new() } else { body };
            if !more {
                st.response_ended = true;
                st.disconnected = true;
                let waiting = st.receiver.is_some();
                drop(st);
                let _ = reply.send(head.into_response(AsgiBody::Whole(Some(body))));
                if waiting {
                    self.bridge.get().wake(&self.exchange);
                }
                return Ok(false);
            }
            st.streaming = true;
            if !body.is_empty() {
                st.outbox_bytes += body.len();
                st.outbox.push_back(body);
            }
            drop(st);
            let watch: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = match self.exchange.client {
                Some(_) => Some(Box::pin(watch_client(self.exchange.clone()))),
                None => None,
            };
            let stream = AsgiBody::Stream(StreamBody {
                exchange: self.exchange.clone(),
                bridge: self.bridge.clone_ref(py),
                watch,
            });
            let _ = reply.send(head.into_response(stream));
            return Ok(false);
        }
        if !st.streaming || st.response_ended {
            return Err(PyRuntimeError::new_err("http.response.body after the response was complete"));
        }
        if st.disconnected {
            // ASGI 2.4: an OSError (Starlette then stops the stream).
            return Err(pyo3::exceptions::PyConnectionError::new_err("the client has gone"));
        }
        if !body.is_empty() && !self.exchange.head_request {
            st.outbox_bytes += body.len();
            st.outbox.push_back(body);
        }
        if !more {
            st.response_ended = true;
        }
        if let Some(w) = st.body_waker.take() {
            w.wake();
        }
        if more && st.outbox_bytes >= OUTBOX_BYTES {
            st.sender = Some(fut.clone().unbind());
            return Ok(true);
        }
        Ok(false)
    }
}

/// One `[name, value]` of ASGI headers: any two-item sequence of bytes.
pub(crate) fn header_pair(pair: &Bound<'_, PyAny>) -> PyResult<(PyBackedBytes, PyBackedBytes)> {
    if pair.len()? != 2 {
        return Err(PyValueError::new_err("a header is a [name, value] pair of bytes"));
    }
    Ok((pair.get_item(0)?.extract()?, pair.get_item(1)?.extract()?))
}

pub(crate) fn plain(status: StatusCode) -> Response<AsgiBody> {
    let mut resp = Response::new(AsgiBody::Whole(None));
    *resp.status_mut() = status;
    resp
}

/// The response body: whole (the first body message had `more_body: False`), or
/// streamed from the exchange's outbox.
pub(crate) enum AsgiBody {
    Whole(Option<Bytes>),
    Stream(StreamBody),
}

pub(crate) struct StreamBody {
    exchange: Arc<Exchange>,
    bridge: Py<Bridge>,
    /// [`watch_client`], polled while the body waits for the application.
    watch: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Drop for StreamBody {
    /// The response is over: complete, or the client went away.
    fn drop(&mut self) {
        let mut st = self.exchange.lock();
        st.disconnected = true;
        let waiting = st.receiver.is_some() || st.sender.is_some();
        drop(st);
        self.exchange.room.notify_one();
        if waiting {
            self.bridge.get().wake(&self.exchange);
        }
    }
}

impl Body for AsgiBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut *self {
            AsgiBody::Whole(b) => Poll::Ready(b.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
            AsgiBody::Stream(s) => {
                let mut st = s.exchange.lock();
                if let Some(chunk) = st.outbox.pop_front() {
                    st.outbox_bytes -= chunk.len();
                    let wake = st.sender.is_some() && st.outbox_bytes < OUTBOX_BYTES;
                    drop(st);
                    if wake {
                        s.bridge.get().wake(&s.exchange);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if st.response_ended {
                    return Poll::Ready(None);
                }
                if st.response_failed {
                    return Poll::Ready(Some(Err(io::Error::other("the application did not finish its response"))));
                }
                st.body_waker = Some(cx.waker().clone());
                drop(st);
                if s.watch.as_mut().is_some_and(|w| w.as_mut().poll(cx).is_ready()) {
                    // Gone while the application has nothing to write: the
                    // connection is aborted (dropping the body tells the
                    // application, see Drop).
                    s.watch = None;
                    return Poll::Ready(Some(Err(io::Error::other("the client has gone"))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, AsgiBody::Whole(None))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            AsgiBody::Whole(b) => hyper::body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            AsgiBody::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}
