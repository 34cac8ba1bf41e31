//! HTTP/2 on a connection whose ALPN was `h2` (never handed back: GOAWAY instead).

use super::*;

/// Serves HTTP/2 on a connection whose ALPN was `h2`. On drain: GOAWAY, the
/// streams in flight finish, then the connection closes (HTTP/2 connections are
/// not handed back: the client opens a new one, as GOAWAY tells it to).
pub(super) async fn serve_h2<IO, S, B>(
    io: IO,
    info: Arc<ConnInfo>,
    service: S,
    statics: Arc<StaticOptions>,
    drain: CancellationToken,
    going_away: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: ZerglingService<B>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let service = Arc::new(service);
    let going_away = GoingAway::new(going_away);
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        req.extensions_mut().insert(going_away.clone());
        let (service, statics, going_away) = (service.clone(), statics.clone(), going_away.clone());
        async move {
            let mut clock = stats::Clock::start(&req, req.extensions().get::<Arc<ConnInfo>>().map(|i| &**i));
            if let Some(resp) = statics::answer(&statics, &req).await {
                clock.status(resp.status());
                return Ok::<_, S::Err>(resp.map(|b| Tracked::fixed(b, None, clock)));
            }
            let mut resp = service.call(req).await?;
            clock.status(resp.status());
            if let Some(sf) = crate::SendFile::take(&mut resp) {
                return Ok(resp.map(|_| Tracked::file(sf, None, None, clock)));
            }
            Ok(resp.map(|b| Tracked::app(b, None, &going_away, clock)))
        }
    });
    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let res = tokio::select! {
        r = conn.as_mut() => r,
        _ = drain.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        debug!(error = %e, "HTTP/2 connection ended with an error");
    }
}
