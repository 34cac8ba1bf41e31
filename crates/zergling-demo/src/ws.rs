//! `GET /ws`: a WebSocket echo endpoint, built on hyper's upgrade API as any
//! application on the zergling library would: answer `101 Switching Protocols`,
//! take the stream with `hyper::upgrade::on`, speak WebSocket on it
//! (tokio-tungstenite), and close with 1001 (going away) when the zergling's
//! mercy is over ([`zergling::GoingAway`]).
//!
//! Echoes text and binary messages as they came; the first subprotocol the
//! client offers is accepted; pings are answered by the WebSocket layer.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The largest message echoed (the tests send 1 MiB).
const MAX_MESSAGE: usize = 16 << 20;

/// Answers the handshake and serves the socket in a task of its own.
pub(crate) fn upgrade(mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let wants_ws =
        req.headers().get(UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = req.headers().get(SEC_WEBSOCKET_KEY).map(|k| derive_accept_key(k.as_bytes()));
    let (true, Some(accept)) = (wants_ws, key) else {
        return Response::builder()
            .status(StatusCode::UPGRADE_REQUIRED)
            .header(UPGRADE, "websocket")
            .body(Full::new(Bytes::from_static(b"a WebSocket handshake is expected here\n")))
            .unwrap_or_default();
    };
    let protocol = req
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').map(str::trim).find(|p| !p.is_empty()))
        .and_then(|p| HeaderValue::from_str(p).ok());
    let going_away = req.extensions().get::<zergling::GoingAway>().cloned();
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => return eprintln!("zergling-demo: upgrade failed: {e}"),
        };
        let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE));
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
        echo(ws, going_away).await;
    });
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(p) = protocol {
        resp = resp.header(SEC_WEBSOCKET_PROTOCOL, p);
    }
    resp.body(Full::new(Bytes::new())).unwrap_or_default()
}

/// Echoes until the client closes, or says goodbye with 1001 when the zergling
/// goes away.
async fn echo<S>(mut ws: WebSocketStream<S>, going_away: Option<zergling::GoingAway>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let away = async {
        match &going_away {
            Some(g) => g.wait().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(away);
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    if ws.send(m).await.is_err() {
                        return;
                    }
                }
                // Pings are answered, and a close is echoed, by tungstenite.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            _ = &mut away => {
                let bye = CloseFrame { code: CloseCode::Away, reason: "server going away".into() };
                let _ = ws.close(Some(bye)).await;
                // Wait (bounded by GOING_AWAY_GRACE, in the library) for the
                // client's close frame.
                while let Some(Ok(_)) = ws.next().await {}
                return;
            }
        }
    }
}
