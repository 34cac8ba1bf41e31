//! Whether the client is still there while its request is in flight: an opt-in
//! of the library ([`ZerglingConfig::watch_clients`]) for applications that stop
//! work nobody waits for any more (ASGI's `http.disconnect`, a long poll, a
//! slow report).
//!
//! hyper serves HTTP/1 here with half-close allowed and reads nothing while a
//! request is in flight (see `http1`), so a client that leaves before its
//! response is noticed only when the response is written. A [`ClientWatch`]
//! notices it at once: it holds a duplicate of the connection's descriptor,
//! and [`ClientWatch::gone`] waits until that descriptor is readable, then
//! peeks (nothing is consumed, hyper reads as before):
//!
//! * end of file, or an error (a reset): the client has gone. A client that
//!   only shut down its sending side (a half-close) counts as gone too, as
//!   uvicorn counts it: an HTTP client waiting for an answer does not do that;
//! * bytes: the client's next request (pipelined) or the rest of this one's
//!   body. Nothing more can be told without reading them, and `gone()` waits
//!   for ever.
//!
//! The duplicate is released when the connection ends (closed, or handed back
//! to the pool): a watch never keeps a socket open, however long the
//! application keeps a request's extensions. HTTP/2 needs no watch (hyper sees
//! a stream's reset and the connection's end) and gets none.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use zergpool_core::stream::{ConnStream, Readable};

/// Tells when the client of a request has gone. In the extensions of every
/// HTTP/1 and uwsgi request when [`ZerglingConfig::watch_clients`] is set.
///
/// [`ZerglingConfig::watch_clients`]: crate::ZerglingConfig::watch_clients
#[derive(Debug, Clone)]
pub struct ClientWatch(Arc<Mutex<Option<OwnedFd>>>);

/// Releases a connection's [`ClientWatch`] descriptor when dropped (when the
/// connection ends).
pub(crate) struct Release(ClientWatch);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.slot().take();
    }
}

impl ClientWatch {
    /// A watch on `stream`'s connection, and what releases it; `None` when the
    /// descriptor cannot be duplicated (out of descriptors: the connection is
    /// served without a watch).
    pub(crate) fn of(stream: &impl Readable) -> Option<(ClientWatch, Release)> {
        match stream.duplicate()? {
            Ok(fd) => {
                let watch = ClientWatch(Arc::new(Mutex::new(Some(fd))));
                Some((watch.clone(), Release(watch)))
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot duplicate the connection's descriptor: served without a client watch");
                None
            }
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<OwnedFd>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Completes when the client has gone (end of file or an error on the
    /// connection), or at once when the connection is already over. Never
    /// completes while the client is there, nor once it has sent bytes that
    /// are still unread (see the module's docs). Cancel-safe: drop it to stop
    /// watching.
    pub async fn gone(&self) {
        // A duplicate of its own, registered with the runtime for this wait
        // only (the connection's own registration is hyper's).
        let Some(fd) = self.slot().as_ref().map(OwnedFd::try_clone) else { return };
        let stream = match fd.and_then(ConnStream::from_fd) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch the connection");
                return std::future::pending().await;
            }
        };
        if !stream.peer_gone().await {
            // Bytes the application's side has not read yet.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        (client, l.accept().await.unwrap().0)
    }

    fn quickly() -> Duration {
        Duration::from_secs(5)
    }

    #[tokio::test]
    async fn a_client_that_closes_or_resets_is_gone_and_one_that_stays_is_not() {
        let (client, server) = pair().await;
        let (watch, _release) = ClientWatch::of(&server).unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(100), watch.gone()).await.is_err(), "still there");
        drop(client);
        tokio::time::timeout(quickly(), watch.gone()).await.expect("the close is seen");
        // A reset too.
        let (client, server) = pair().await;
        let (watch, _release) = ClientWatch::of(&server).unwrap();
        socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).unwrap();
        drop(client);
        tokio::time::timeout(quickly(), watch.gone()).await.expect("the reset is seen");
    }

    #[tokio::test]
    async fn unread_bytes_are_not_a_departure_and_stay_for_the_reader() {
        let (mut client, server) = pair().await;
        let (watch, _release) = ClientWatch::of(&server).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(200), watch.gone()).await.is_err());
        let mut buf = [0u8; 64];
        server.readable().await.unwrap();
        assert_eq!(server.try_read(&mut buf).unwrap(), 16, "peeked, not read");
    }

    #[tokio::test]
    async fn a_released_watch_says_gone_and_holds_no_descriptor() {
        let (mut client, server) = pair().await;
        let (watch, release) = ClientWatch::of(&server).unwrap();
        drop(release);
        drop(server);
        tokio::time::timeout(quickly(), watch.gone()).await.expect("over at once");
        // The socket is closed although the watch lives on: the client reads the end.
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(quickly(), tokio::io::AsyncReadExt::read(&mut client, &mut buf)).await.unwrap();
        assert_eq!(n.unwrap(), 0);
        drop(watch);
    }
}
