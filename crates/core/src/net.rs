//! Listening sockets shared by the pool and the zergling library: a bound socket
//! before the runtime sees it ([`Bound`]), and one registered with the runtime
//! ([`AnyListener`]), TCP or Unix, with one `accept` for both.

use std::io;

use tokio::net::TcpListener;

use crate::stream::ConnStream;

/// A bound listening socket, before it is given to the runtime.
#[derive(Debug)]
pub enum Bound {
    /// TCP.
    Tcp(std::net::TcpListener),
    /// A Unix stream socket.
    Unix(std::os::unix::net::UnixListener),
}

impl Bound {
    /// A second descriptor of the same listening socket (for `zerg-direct-accept`).
    pub fn duplicate(&self) -> io::Result<std::os::fd::OwnedFd> {
        Ok(match self {
            Bound::Tcp(l) => l.try_clone()?.into(),
            Bound::Unix(l) => l.try_clone()?.into(),
        })
    }
}

/// A listening socket registered with the runtime.
#[derive(Debug)]
pub enum AnyListener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix stream socket.
    Unix(tokio::net::UnixListener),
}

impl AnyListener {
    /// Registers a bound socket with the runtime.
    pub fn from_bound(b: Bound) -> io::Result<Self> {
        Ok(match b {
            Bound::Tcp(l) => AnyListener::Tcp(TcpListener::from_std(l)?),
            Bound::Unix(l) => AnyListener::Unix(tokio::net::UnixListener::from_std(l)?),
        })
    }

    /// Takes the socket back from the runtime (no more readiness events reach the
    /// process until [`AnyListener::from_bound`] registers it again).
    pub fn into_bound(self) -> io::Result<Bound> {
        Ok(match self {
            AnyListener::Tcp(l) => Bound::Tcp(l.into_std()?),
            AnyListener::Unix(l) => Bound::Unix(l.into_std()?),
        })
    }

    /// Accepts one connection; the peer as text (empty for an unnamed Unix peer).
    pub async fn accept(&self) -> io::Result<(ConnStream, String)> {
        match self {
            AnyListener::Tcp(l) => {
                // TCP_NODELAY comes from the listener (see bind_tcp).
                let (s, peer) = l.accept().await?;
                Ok((ConnStream::Tcp(s), peer.to_string()))
            }
            AnyListener::Unix(l) => {
                let (s, peer) = l.accept().await?;
                let peer = peer.as_pathname().map(|p| p.display().to_string()).unwrap_or_default();
                Ok((ConnStream::Unix(s), peer))
            }
        }
    }
}
