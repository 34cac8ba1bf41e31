//! Listening sockets and addresses shared by the pool and the zergling library: a
//! bound socket before the runtime sees it ([`Bound`]), one registered with the
//! runtime ([`AnyListener`]), TCP or Unix, with one `accept` for both that says
//! who connected and to which address ([`Accepted`]), and the [`Endpoint`] type
//! those addresses have everywhere after the accept.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

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

    /// Accepts one connection on a listener bound to `local`: the stream, the
    /// client's address and the address the client reached.
    pub async fn accept(&self, local: &ListenAddr) -> io::Result<Accepted> {
        match self {
            AnyListener::Tcp(l) => {
                // TCP_NODELAY comes from the listener (see bind_tcp).
                let (s, peer) = l.accept().await?;
                // A wildcard listener (`0.0.0.0`, `[::]`): the connection says which
                // address the client reached (getsockname); else it is the listener's.
                let reached = match local.wildcard {
                    true => s.local_addr().map_or_else(|_| local.addr.clone(), Endpoint::Tcp),
                    false => local.addr.clone(),
                };
                Ok(Accepted { stream: ConnStream::Tcp(s), peer: Endpoint::Tcp(peer), local: reached })
            }
            AnyListener::Unix(l) => {
                let (s, peer) = l.accept().await?;
                let peer = Endpoint::unix(&peer.as_pathname().map(|p| p.display().to_string()).unwrap_or_default());
                Ok(Accepted { stream: ConnStream::Unix(s), peer, local: local.addr.clone() })
            }
        }
    }
}

/// A connection just accepted.
#[derive(Debug)]
pub struct Accepted {
    /// The connection.
    pub stream: ConnStream,
    /// The client's address.
    pub peer: Endpoint,
    /// The address the client connected to.
    pub local: Endpoint,
}

/// The address a listener is bound to, and whether it is a wildcard whose
/// connections each have their own local address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    /// The bound address (`127.0.0.1:8080`, `0.0.0.0:8080`, or a Unix path).
    pub addr: Endpoint,
    /// `0.0.0.0` or `[::]`: the address each client reached is asked of its
    /// socket; for any other listener it is `addr`, with no system call.
    wildcard: bool,
}

impl ListenAddr {
    /// Describes a listener bound to `addr`.
    pub fn new(addr: Endpoint) -> Self {
        let wildcard = matches!(addr, Endpoint::Tcp(a) if a.ip().is_unspecified());
        ListenAddr { addr, wildcard }
    }
}

/// One end of a connection: a client's address or the address it reached.
///
/// On the wire (CONN, LISTEN, HANDBACK) it is text, parsed once when a frame is
/// decoded ([`Endpoint::parse`]) and written with `Display`: `127.0.0.1:5555`,
/// `[::1]:5555`, a bare IP when a front-end gave no port, or anything else (a Unix
/// socket path, nginx's `unix:`), kept as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// An IP address and port.
    Tcp(SocketAddr),
    /// An IP address whose port is unknown (a uwsgi front-end sent `REMOTE_ADDR`
    /// without `REMOTE_PORT`).
    Ip(IpAddr),
    /// A Unix socket's path, or a front-end's name for a client that has no IP
    /// address (nginx says `unix:`); empty for an unnamed Unix peer.
    Named(Arc<str>),
}

impl Endpoint {
    /// Parses the text form: `ip:port` or `[ipv6]:port`, a bare IP, else a name.
    pub fn parse(s: &str) -> Self {
        if let Ok(a) = s.parse::<SocketAddr>() {
            Endpoint::Tcp(a)
        } else if let Ok(ip) = s.parse::<IpAddr>() {
            Endpoint::Ip(ip)
        } else {
            Endpoint::unix(s)
        }
    }

    /// A Unix socket path (or other name), kept as text.
    pub fn unix(path: &str) -> Self {
        Endpoint::Named(Arc::from(path))
    }

    /// The IP address, when there is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Endpoint::Tcp(a) => Some(a.ip()),
            Endpoint::Ip(ip) => Some(*ip),
            Endpoint::Named(_) => None,
        }
    }

    /// The port, when there is one.
    pub fn port(&self) -> Option<u16> {
        match self {
            Endpoint::Tcp(a) => Some(a.port()),
            Endpoint::Ip(_) | Endpoint::Named(_) => None,
        }
    }

    /// The host part as a URL writes it (`127.0.0.1`, `[::1]`), or the name.
    pub fn host(&self) -> String {
        match self.ip() {
            Some(IpAddr::V6(v6)) => format!("[{v6}]"),
            Some(ip) => ip.to_string(),
            None => self.to_string(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => a.fmt(f),
            Endpoint::Ip(ip) => ip.fmt(f),
            Endpoint::Named(n) => f.write_str(n),
        }
    }
}

/// `accept` ran out of descriptors (`EMFILE`, `ENFILE`): the caller backs off
/// instead of spinning. Any other accept error concerns one connection only.
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_once_and_print_as_they_came() {
        for (text, ip, port) in [
            ("127.0.0.1:5555", Some("127.0.0.1"), Some(5555)),
            ("[::1]:80", Some("::1"), Some(80)),
            ("10.0.0.1", Some("10.0.0.1"), None),
            ("/run/app.sock", None, None),
            ("unix:", None, None),
            ("", None, None),
        ] {
            let e = Endpoint::parse(text);
            assert_eq!(e.to_string(), text);
            assert_eq!(e.ip(), ip.map(|i| i.parse().unwrap()), "{text}");
            assert_eq!(e.port(), port, "{text}");
        }
        assert_eq!(Endpoint::parse("[::1]:80").host(), "[::1]");
        assert_eq!(Endpoint::parse("127.0.0.1:80").host(), "127.0.0.1");
    }

    #[test]
    fn only_unspecified_addresses_are_wildcards() {
        assert!(ListenAddr::new(Endpoint::parse("0.0.0.0:80")).wildcard);
        assert!(ListenAddr::new(Endpoint::parse("[::]:80")).wildcard);
        assert!(!ListenAddr::new(Endpoint::parse("127.0.0.1:80")).wildcard);
        assert!(!ListenAddr::new(Endpoint::parse("/tmp/s")).wildcard);
    }
}
