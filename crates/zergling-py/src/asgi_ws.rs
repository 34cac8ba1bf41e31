//! ASGI's `websocket` scope on the bridge of [`crate::asgi`]: the handshake
//! answered when the application accepts (`101`, its subprotocol and headers)
//! or refuses (`403`), then one task per socket (tokio-tungstenite on the
//! stream hyper's upgrade gives) moving messages between the client and the
//! exchange, bounded both ways like HTTP bodies.
//!
//! Close codes go both ways: the client's close reaches the application as
//! `websocket.disconnect` with its code (1005 when it gave none, 1006 when the
//! connection broke); `websocket.close` from the application sends its code.
//! When the zergling goes away (its mercy is over) the client gets 1001 and
//! the application `websocket.disconnect` with 1001. `send()` after the socket
//! closed raises `ConnectionError` (an `OSError`, as ASGI 2.4 asks).

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use pyo3::exceptions::{PyConnectionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyBytes, PyDict, PyList};
use tokio::sync::{oneshot, Notify};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::asgi::{plain, AsgiApps, AsgiBody, Bridge};

/// Bytes of received messages waiting for the application.
const INBOX_BYTES: usize = 1 << 20;
/// Bytes of messages waiting for the client before `send()` waits too.
const OUTBOX_BYTES: usize = 1 << 20;
/// The largest message taken from a client.
const MAX_MESSAGE: usize = 16 << 20;
/// How long a closing handshake may take before the socket is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Whether a request asks for a WebSocket (RFC 6455 §4.2.1).
pub(crate) fn is_websocket<B>(req: &http::Request<B>) -> bool {
    let has = |name, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))))
    };
    req.method() == http::Method::GET
        && req.version() == http::Version::HTTP_11
        && has(http::header::UPGRADE, "websocket")
        && has(http::header::CONNECTION, "upgrade")
        && req.headers().contains_key(http::header::SEC_WEBSOCKET_KEY)
}

/// One WebSocket's state, shared by its socket task and the loop's side.
pub(crate) struct WsExchange {
    state: Mutex<WsState>,
    /// The socket task waits here: messages to send, room in the inbox.
    changed: Notify,
    pub(crate) wake_queued: AtomicBool,
}

#[derive(Default)]
struct WsState {
    /// The handshake's answer, until the application accepts or refuses.
    reply: Option<oneshot::Sender<Response<AsgiBody>>>,
    accept_key: String,
    connect_told: bool,
    accepted: bool,
    inbox: VecDeque<Message>,
    inbox_bytes: usize,
    /// The socket is over, with this code for `websocket.disconnect`.
    closed: Option<u16>,
    receiver: Option<Py<PyAny>>,
    outbox: VecDeque<Message>,
    outbox_bytes: usize,
    sender: Option<Py<PyAny>>,
    /// The application sent `websocket.close` (or ended).
    app_closed: bool,
}

impl WsExchange {
    pub(crate) fn new(reply: oneshot::Sender<Response<AsgiBody>>, accept_key: String) -> Self {
        WsExchange {
            state: Mutex::new(WsState { reply: Some(reply), accept_key, ..WsState::default() }),
            changed: Notify::new(),
            wake_queued: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WsState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// On the loop's thread: resolves what `receive()` and `send()` returned.
    pub(crate) fn resolve_pending(&self, py: Python<'_>) -> PyResult<()> {
        let mut st = self.lock();
        if st.receiver.is_some() {
            if let Some(msg) = next_message(py, &mut st)? {
                let fut = st.receiver.take();
                drop(st);
                self.changed.notify_one();
                if let Some(fut) = fut {
                    crate::asgi::set_result(py, fut.bind(py), msg.as_any())?;
                }
                st = self.lock();
            }
        }
        if st.sender.is_some() && (st.outbox_bytes < OUTBOX_BYTES || st.closed.is_some()) {
            if let Some(fut) = st.sender.take() {
                drop(st);
                crate::asgi::set_result(py, fut.bind(py), &py.None().into_bound(py))?;
            }
        }
        Ok(())
    }
}

/// The message `receive()` returns now, if there is one.
fn next_message<'py>(py: Python<'py>, st: &mut WsState) -> PyResult<Option<Bound<'py, PyDict>>> {
    let msg = PyDict::new(py);
    if !st.connect_told {
        st.connect_told = true;
        msg.set_item(pyo3::intern!(py, "type"), pyo3::intern!(py, "websocket.connect"))?;
        return Ok(Some(msg));
    }
    if let Some(m) = st.inbox.pop_front() {
        st.inbox_bytes -= m.len();
        msg.set_item(pyo3::intern!(py, "type"), pyo3::intern!(py, "websocket.receive"))?;
        match m {
            Message::Text(t) => msg.set_item(pyo3::intern!(py, "text"), t.as_str())?,
            Message::Binary(b) => msg.set_item(pyo3::intern!(py, "bytes"), PyBytes::new(py, &b))?,
            _ => {}
        }
        return Ok(Some(msg));
    }
    if let Some(code) = st.closed {
        msg.set_item(pyo3::intern!(py, "type"), pyo3::intern!(py, "websocket.disconnect"))?;
        msg.set_item(pyo3::intern!(py, "code"), code)?;
        return Ok(Some(msg));
    }
    Ok(None)
}

/// The `websocket` scope: the `http` one's fields, `ws`/`wss`, and the
/// subprotocols the client offered.
pub(crate) fn scope<'py>(
    py: Python<'py>,
    apps: &AsgiApps,
    parts: &http::request::Parts,
    root_path: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = crate::asgi::http_scope(py, apps, parts, root_path)?;
    scope.set_item(pyo3::intern!(py, "type"), pyo3::intern!(py, "websocket"))?;
    scope.del_item(pyo3::intern!(py, "method"))?;
    let https = scope.get_item(pyo3::intern!(py, "scheme"))?.is_some_and(|s| s.eq("https").unwrap_or(false));
    scope.set_item(pyo3::intern!(py, "scheme"), if https { "wss" } else { "ws" })?;
    let offered = PyList::empty(py);
    for v in parts.headers.get_all(http::header::SEC_WEBSOCKET_PROTOCOL) {
        for p in v.to_str().unwrap_or("").split(',').map(str::trim).filter(|p| !p.is_empty()) {
            offered.append(p)?;
        }
    }
    scope.set_item(pyo3::intern!(py, "subprotocols"), offered)?;
    Ok(scope)
}

/// The handshake's `Sec-WebSocket-Accept`.
pub(crate) fn accept_key<B>(req: &http::Request<B>) -> String {
    req.headers().get(http::header::SEC_WEBSOCKET_KEY).map(|k| derive_accept_key(k.as_bytes())).unwrap_or_default()
}

/// `receive` and `send` of one `websocket` scope, and the runner's report.
#[pyclass(frozen, module = "zergling._native")]
pub(crate) struct WsProto {
    pub(crate) exchange: Arc<WsExchange>,
    pub(crate) bridge: Py<Bridge>,
}

#[pymethods]
impl WsProto {
    fn receive<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let fut = self.bridge.bind(py).get().create_future(py)?;
        let st = self.exchange.lock();
        crate::asgi::receive_into(py, fut, st, next_message, |st| &mut st.receiver, &self.exchange.changed)
    }

    fn send<'py>(&self, py: Python<'py>, message: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
        let fut = self.bridge.bind(py).get().create_future(py)?;
        let ty = message
            .get_item(pyo3::intern!(py, "type"))?
            .ok_or_else(|| PyValueError::new_err("an ASGI message needs a \"type\""))?;
        let ty: PyBackedStr = ty.extract()?;
        let mut st = self.exchange.lock();
        let mut pending = false;
        match &*ty {
            "websocket.accept" => {
                let reply = st
                    .reply
                    .take()
                    .ok_or_else(|| PyRuntimeError::new_err("websocket.accept after the handshake was answered"))?;
                let mut resp = Response::new(AsgiBody::Whole(None));
                *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let h = resp.headers_mut();
                h.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
                h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
                if let Ok(v) = HeaderValue::from_str(&st.accept_key) {
                    h.insert(http::header::SEC_WEBSOCKET_ACCEPT, v);
                }
                if let Some(p) = message.get_item(pyo3::intern!(py, "subprotocol"))?.filter(|p| !p.is_none()) {
                    let p: PyBackedStr = p.extract()?;
                    let v = HeaderValue::from_str(&p).map_err(|_| PyValueError::new_err("bad subprotocol"))?;
                    h.insert(http::header::SEC_WEBSOCKET_PROTOCOL, v);
                }
                if let Some(list) = message.get_item(pyo3::intern!(py, "headers"))? {
                    for pair in list.try_iter()? {
                        let (name, value) = crate::asgi::header_pair(&pair?)?;
                        let name = HeaderName::from_bytes(&name).map_err(|_| PyValueError::new_err("bad header name"))?;
                        let value = HeaderValue::from_bytes(&value).map_err(|_| PyValueError::new_err("bad header value"))?;
                        h.append(name, value);
                    }
                }
                st.accepted = true;
                let _ = reply.send(resp);
            }
            "websocket.send" => {
                if !st.accepted {
                    return Err(PyRuntimeError::new_err("websocket.send before websocket.accept"));
                }
                if st.closed.is_some() || st.app_closed {
                    return Err(PyConnectionError::new_err("the WebSocket is closed"));
                }
                let msg = match message.get_item(pyo3::intern!(py, "bytes"))?.filter(|b| !b.is_none()) {
                    Some(b) => Message::Binary(Bytes::from_owner(b.extract::<PyBackedBytes>()?)),
                    None => match message.get_item(pyo3::intern!(py, "text"))?.filter(|t| !t.is_none()) {
                        Some(t) => Message::text(t.extract::<String>()?),
                        None => return Err(PyValueError::new_err("websocket.send needs bytes or text")),
                    },
                };
                st.outbox_bytes += msg.len();
                st.outbox.push_back(msg);
                if st.outbox_bytes >= OUTBOX_BYTES {
                    st.sender = Some(fut.clone().unbind());
                    pending = true;
                }
                drop(st);
                self.exchange.changed.notify_one();
                st = self.exchange.lock();
            }
            "websocket.close" => {
                let code: u16 = match message.get_item(pyo3::intern!(py, "code"))? {
                    Some(c) if !c.is_none() => c.extract()?,
                    _ => 1000,
                };
                let reason: String = match message.get_item(pyo3::intern!(py, "reason"))? {
                    Some(r) if !r.is_none() => r.extract()?,
                    _ => String::new(),
                };
                if let Some(reply) = st.reply.take() {
                    // Refused before the handshake was answered: 403, as ASGI says.
                    st.closed = Some(code);
                    let _ = reply.send(plain(StatusCode::FORBIDDEN));
                } else if !st.app_closed {
                    st.app_closed = true;
                    st.outbox.push_back(Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() })));
                    drop(st);
                    self.exchange.changed.notify_one();
                    st = self.exchange.lock();
                }
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "unexpected ASGI message {other:?} in a websocket scope (expected websocket.accept, websocket.send or websocket.close)"
                )))
            }
        }
        drop(st);
        if !pending {
            fut.call_method1(pyo3::intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(fut)
    }

    /// Whether the client went away (an exception then is the application
    /// noticing: not worth a traceback).
    fn client_gone(&self) -> bool {
        self.exchange.lock().closed.is_some()
    }

    /// Called by the runner when the application's coroutine ended.
    fn finished(&self, failed: bool) {
        let mut st = self.exchange.lock();
        if let Some(reply) = st.reply.take() {
            // Never accepted: 403 (500 if it failed).
            let _ = reply.send(plain(if failed { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::FORBIDDEN }));
        } else if !st.app_closed && st.closed.is_none() {
            st.app_closed = true;
            let code = if failed { CloseCode::Error } else { CloseCode::Normal };
            st.outbox.push_back(Message::Close(Some(CloseFrame { code, reason: "".into() })));
        }
        st.receiver = None;
        st.sender = None;
        drop(st);
        self.exchange.changed.notify_one();
    }
}

/// Tells the application the client went away when dropped armed (hyper
/// dropped the handshake before the application answered).
pub(crate) struct HandshakeGone(pub(crate) Option<(Arc<WsExchange>, Arc<Py<Bridge>>)>);

impl HandshakeGone {
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for HandshakeGone {
    fn drop(&mut self) {
        if let Some((exchange, bridge)) = self.0.take() {
            tell_closed(&exchange, &bridge, 1006);
        }
    }
}

/// The socket once upgraded: messages both ways until either side closes, the
/// client goes, or the zergling goes away.
pub(crate) async fn run_socket(
    upgrade: hyper::upgrade::OnUpgrade,
    exchange: Arc<WsExchange>,
    bridge: Arc<Py<Bridge>>,
    going_away: Option<zergling::GoingAway>,
) {
    let upgraded = match upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            return close_exchange(&exchange, &bridge, 1006);
        }
    };
    let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE));
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (mut tx, mut rx) = ws.split();
    let away = async {
        match &going_away {
            Some(g) => g.wait().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(away);
    let mut code = None;
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let room = exchange.lock().inbox_bytes < INBOX_BYTES;
        let deadline = closing.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            _ = &mut away, if closing.is_none() => {
                tracing::debug!("going away: closing a WebSocket with 1001");
                let bye = CloseFrame { code: CloseCode::Away, reason: "server going away".into() };
                let _ = tx.send(Message::Close(Some(bye))).await;
                code = Some(1001);
                tell_closed(&exchange, &bridge, 1001);
                closing = Some(tokio::time::Instant::now() + zergling::GOING_AWAY_GRACE);
            }
            m = rx.next(), if room => match m {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    let mut st = exchange.lock();
                    st.inbox_bytes += m.len();
                    st.inbox.push_back(m);
                    let wanted = st.receiver.is_some();
                    drop(st);
                    if wanted {
                        bridge.get().wake_ws(&exchange);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    // tungstenite answers the close frame itself.
                    let c = frame.map_or(1005, |f| u16::from(f.code));
                    code.get_or_insert(c);
                    tell_closed(&exchange, &bridge, c);
                    closing.get_or_insert(tokio::time::Instant::now() + CLOSE_WAIT);
                    let _ = tx.flush().await;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            _ = exchange.changed.notified() => {
                loop {
                    let next = {
                        let mut st = exchange.lock();
                        st.outbox.pop_front().map(|m| {
                            st.outbox_bytes -= m.len();
                            (m, st.sender.is_some() && st.outbox_bytes < OUTBOX_BYTES)
                        })
                    };
                    let Some((m, wake)) = next else { break };
                    if wake {
                        bridge.get().wake_ws(&exchange);
                    }
                    let is_close = matches!(m, Message::Close(_));
                    if tx.send(m).await.is_err() {
                        code.get_or_insert(1006);
                        break;
                    }
                    if is_close {
                        closing.get_or_insert(tokio::time::Instant::now() + CLOSE_WAIT);
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline), if closing.is_some() => break,
        }
    }
    close_exchange(&exchange, &bridge, code.unwrap_or(1006));
}

/// Tells the application (once) that the socket is over.
fn tell_closed(exchange: &Arc<WsExchange>, bridge: &Arc<Py<Bridge>>, code: u16) {
    let mut st = exchange.lock();
    if st.closed.is_some() {
        return;
    }
    st.closed = Some(code);
    let waiting = st.receiver.is_some() || st.sender.is_some();
    drop(st);
    if waiting {
        bridge.get().wake_ws(exchange);
    }
}

fn close_exchange(exchange: &Arc<WsExchange>, bridge: &Arc<Py<Bridge>>, code: u16) {
    tell_closed(exchange, bridge, code);
    let mut st = exchange.lock();
    st.outbox.clear();
    st.outbox_bytes = 0;
}
