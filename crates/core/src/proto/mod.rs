//! THE protocol shared by the pool and the zergling library.
//!
//! Everything both sides must agree on lives here and nowhere else: the message
//! types and their encoding ([`frame`]), the version, the size limits, and the
//! passing of descriptors over the attach socket ([`sys`], the crate's only unsafe
//! code). `docs/PROTOCOL.md` describes the same thing for other languages.
//!
//! The attach socket is a Unix `SOCK_SEQPACKET` socket: message boundaries are kept
//! by the kernel, and a descriptor sent with `SCM_RIGHTS` arrives with the very
//! message it belongs to.

mod channel;
pub mod frame;
pub mod sys;

use std::fmt;

use bytes::Bytes;

pub use crate::net::Endpoint;

pub use channel::{someone_listens, Channel, ChannelError, RecvBuf, SeqpacketListener};
pub use frame::{
    decode, encode, DecodeError, ExpiresRule, Message, StaticMount, StaticSettings, Timeouts, ZerglingStats,
};

/// Protocol version spoken by this build (sent in HELLO and WELCOME). Version 2:
/// static-map settings as typed WELCOME fields (version 1 sent uWSGI option
/// text), and the direct-accept capability as a typed HELLO flag (version 1: the
/// tag `accept=uwsgi`). Version 3: LOAD (a zergling says whether all its
/// request slots are taken), LISTEN for plain http listeners too, and the HELLO
/// flag named ACCEPT_DIRECT. A peer speaking another version is refused with a
/// message naming both.
pub const VERSION: u16 = 4;
/// Largest frame either side sends or accepts, in bytes.
pub const MAX_FRAME: usize = 160 * 1024;
/// Largest "bytes already read" prefix carried with a connection.
pub const MAX_PREFIX: usize = 128 * 1024;
/// Largest request head the pool reads (`buffer-size`'s upper bound). With the
/// bytes read after it (at most 16 KiB more, see `classify`), it always fits in
/// [`MAX_PREFIX`], so every head the pool accepts can be handed over.
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest text field (names, addresses, reasons, tags).
pub const MAX_STRING: usize = 4096;
/// Most `TAG` fields in one HELLO.
pub const MAX_TAGS: usize = 32;
/// Most `STATIC` fields in one WELCOME.
pub const MAX_STATICS: usize = 256;
/// Descriptors a receiver makes room for; any message carrying more is an error.
pub const MAX_FDS_PER_FRAME: usize = 1;

/// The id the pool gives an attached zergling (unique for the pool's lifetime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZerglingId(pub u64);

impl fmt::Display for ZerglingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The id of one client connection (unique for the pool's lifetime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// Plain HTTP/1.1 (`http`).
    Http,
    /// HTTP over TLS terminated by the pool (`https`).
    Https,
    /// The binary uwsgi protocol (`socket`, `uwsgi-socket`).
    Uwsgi,
}

impl ListenerKind {
    /// The name on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Http => "http",
            ListenerKind::Https => "https",
            ListenerKind::Uwsgi => "uwsgi",
        }
    }

    /// The inverse of [`ListenerKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(ListenerKind::Http),
            "https" => Some(ListenerKind::Https),
            "uwsgi" => Some(ListenerKind::Uwsgi),
            _ => None,
        }
    }
}

/// The scheme a client used, as it sees it: `https` when TLS was terminated (by
/// the pool, or by nginx in front of a uwsgi listener), else `http`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scheme {
    /// `http`.
    #[default]
    Http,
    /// `https`.
    Https,
}

impl Scheme {
    /// The name on the wire, in URLs and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The inverse of [`Scheme::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The application protocol TLS negotiated (ALPN): the only two the pool offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlpnProtocol {
    /// `http/1.1`.
    Http11,
    /// `h2`: the connection speaks HTTP/2 from its first byte.
    H2,
}

impl AlpnProtocol {
    /// The protocol id on the wire (RFC 7301).
    pub fn as_str(self) -> &'static str {
        match self {
            AlpnProtocol::Http11 => "http/1.1",
            AlpnProtocol::H2 => "h2",
        }
    }

    /// The inverse of [`AlpnProtocol::as_str`], from the bytes TLS negotiated.
    pub fn parse(id: &[u8]) -> Option<Self> {
        match id {
            b"http/1.1" => Some(AlpnProtocol::Http11),
            b"h2" => Some(AlpnProtocol::H2),
            _ => None,
        }
    }
}

/// Everything the pool tells a zergling about a connection it hands over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnMeta {
    /// The connection's id, echoed in ACK and CLOSED.
    pub conn: ConnId,
    /// The name of the listener that accepted it (`http0`, …).
    pub listener: String,
    /// What the listener speaks.
    pub kind: ListenerKind,
    /// `http` or `https` as the client sees it.
    pub scheme: Scheme,
    /// The client's address (`127.0.0.1:5555`, `[::1]:5555`, or a Unix path).
    pub peer: Endpoint,
    /// The local address the client connected to.
    pub local: Endpoint,
    /// TLS server name indication, when TLS was terminated.
    pub sni: Option<String>,
    /// Negotiated ALPN protocol, when TLS was terminated.
    pub alpn: Option<AlpnProtocol>,
    /// Negotiated TLS version, when TLS was terminated.
    pub tls_version: Option<String>,
    /// Bytes the pool already read from the client; the zergling must process them
    /// before reading from the descriptor.
    pub prefix: Bytes,
}

impl ConnMeta {
    /// A connection just accepted in plain text (scheme `http`): no TLS facts and
    /// nothing read yet.
    pub fn accepted(conn: ConnId, listener: String, kind: ListenerKind, peer: Endpoint, local: Endpoint) -> Self {
        ConnMeta {
            conn,
            listener,
            kind,
            scheme: Scheme::Http,
            peer,
            local,
            sni: None,
            alpn: None,
            tls_version: None,
            prefix: Bytes::new(),
        }
    }
}
