//! The pure codec of the zergling protocol: [`Message`] values to bytes and back.
//!
//! No I/O happens here, so every function can be unit-tested and fuzzed on plain
//! slices. The layout is described field by field in `docs/PROTOCOL.md`:
//!
//! ```text
//! frame  = type:u8 field*
//! field  = tag:u8 len:u32le value[len]
//! ```
//!
//! Every length is checked against the bytes that are really there and against the
//! limits in [`super`] before anything is allocated. Unknown tags are skipped, so a
//! newer peer can add fields without breaking an older one.

use std::time::Duration;

use bytes::Bytes;

use crate::net::Endpoint;

use super::{
    AlpnProtocol, ConnId, ConnMeta, ListenerKind, Scheme, ZerglingId, MAX_FRAME, MAX_PREFIX, MAX_STATICS, MAX_STRING,
    MAX_TAGS,
};

/// Message types (the first byte of every frame).
mod kind {
    pub(super) const HELLO: u8 = 1;
    pub(super) const WELCOME: u8 = 2;
    pub(super) const REFUSE: u8 = 3;
    pub(super) const CONN: u8 = 4;
    pub(super) const ACK: u8 = 5;
    pub(super) const CLOSED: u8 = 6;
    pub(super) const DRAINING: u8 = 7;
    pub(super) const DRAIN: u8 = 8;
    pub(super) const HANDBACK: u8 = 9;
    pub(super) const LISTEN: u8 = 10;
    pub(super) const LOAD: u8 = 11;
    pub(super) const STATS: u8 = 12;
    pub(super) const LOG: u8 = 13;
    pub(super) const LOG_FILE: u8 = 14;
}

/// Field tags.
mod tag {
    pub(super) const VERSION: u8 = 1;
    pub(super) const PID: u8 = 2;
    pub(super) const CAPACITY: u8 = 3;
    pub(super) const TAG: u8 = 4;
    pub(super) const ZERGLING_ID: u8 = 5;
    pub(super) const REASON: u8 = 6;
    pub(super) const CONN_ID: u8 = 7;
    pub(super) const LISTENER: u8 = 8;
    pub(super) const KIND: u8 = 9;
    pub(super) const SCHEME: u8 = 10;
    pub(super) const PEER: u8 = 11;
    pub(super) const LOCAL: u8 = 12;
    pub(super) const SNI: u8 = 13;
    pub(super) const ALPN: u8 = 14;
    pub(super) const TLS_VERSION: u8 = 15;
    pub(super) const PREFIX: u8 = 16;
    pub(super) const HANDBACK: u8 = 17;
    // 18 was STATIC (static-map as uWSGI option text) in version 1.
    pub(super) const BUFFER_SIZE: u8 = 19;
    pub(super) const HEAD_TIMEOUT: u8 = 20;
    pub(super) const KEEPALIVE_TIMEOUT: u8 = 21;
    pub(super) const STATIC_MAP: u8 = 22;
    pub(super) const STATIC_INDEX: u8 = 23;
    pub(super) const STATIC_EXPIRES: u8 = 24;
    pub(super) const STATIC_GZIP_ALL: u8 = 25;
    pub(super) const STATIC_GZIP_DIR: u8 = 26;
    pub(super) const STATIC_GZIP_EXT: u8 = 27;
    pub(super) const STATIC_SAFE: u8 = 28;
    pub(super) const STATIC_CACHE_SECONDS: u8 = 29;
    pub(super) const ACCEPT_DIRECT: u8 = 30;
    pub(super) const SATURATED: u8 = 31;
    pub(super) const MERCY: u8 = 32;
    pub(super) const REQUESTS: u8 = 33;
    pub(super) const EXCEPTIONS: u8 = 34;
    pub(super) const TX_BYTES: u8 = 35;
    pub(super) const RUNNING_US: u8 = 36;
    pub(super) const IN_FLIGHT: u8 = 37;
    pub(super) const LOG_FLAGS: u8 = 38;
    pub(super) const LOG_SLOW_MS: u8 = 39;
    pub(super) const LOG_FORMAT: u8 = 40;
    pub(super) const LINES: u8 = 41;
}

/// Tags inside the nested value of a STATIC_MAP or STATIC_EXPIRES field.
mod sub {
    pub(super) const MOUNT: u8 = 1;
    pub(super) const ROOT: u8 = 2;
    pub(super) const WHOLE_PATH: u8 = 3;
    pub(super) const BY: u8 = 1;
    pub(super) const REGEX: u8 = 2;
    pub(super) const SECONDS: u8 = 3;
}

/// One message of the protocol. Which ones carry a descriptor is said by
/// [`Message::carries_fd`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// Zergling → pool, first message: who I am and how much I take.
    Hello {
        /// Protocol version the zergling speaks.
        version: u16,
        /// The zergling's process id (the pool cross-checks it with `SO_PEERCRED`).
        pid: u32,
        /// The most connections it serves at once.
        capacity: u32,
        /// Free-form `key=value` labels (shown in logs and stats).
        tags: Vec<String>,
        /// It can accept on the pool's uwsgi listeners itself (LISTEN).
        accept_direct: bool,
    },
    /// Pool → zergling: attached, here is your id.
    Welcome {
        /// Protocol version the pool speaks.
        version: u16,
        /// The id the pool gave this zergling.
        id: ZerglingId,
        /// The pool's static-map settings (folders already resolved), so that the
        /// zergling serves static files as the pool does.
        statics: StaticSettings,
        /// The per-connection deadlines zerglings apply (`http-timeout`,
        /// `http-keepalive`); absent fields keep [`Timeouts::default`].
        timeouts: Timeouts,
        /// The largest HTTP request head (the pool's `buffer-size`), so that a
        /// zergling refuses (431) on later requests what the pool refuses on the
        /// first; 0: not said (the library's default).
        buffer_size: u32,
        /// Which requests the zergling logs, and how (absent: none).
        log: crate::reqlog::LogPolicy,
    },
    /// Pool → zergling: not attached, and why. The pool closes the channel after it.
    Refuse {
        /// A sentence for the zergling's log.
        reason: String,
    },
    /// Pool → zergling, with one descriptor: a connection to serve.
    Conn(ConnMeta),
    /// Zergling → pool: I own this connection now; close your copy.
    Ack {
        /// The connection acknowledged.
        conn: ConnId,
    },
    /// Zergling → pool: this connection is finished (frees one unit of capacity).
    Closed {
        /// The connection closed.
        conn: ConnId,
    },
    /// Zergling → pool: please stop sending me connections.
    Draining,
    /// Pool → zergling: nothing more will be dispatched to you after this message.
    Drain {
        /// Whether idle keep-alive connections should be given back with HANDBACK
        /// (a restart: the pool serves them on) or closed (the pool is stopping).
        handback: bool,
    },
    /// Zergling → pool, with one descriptor: an idle connection given back, with
    /// the metadata it came with and, as `prefix`, the bytes already read from it
    /// and not yet answered. The pool dispatches it again like a new connection.
    HandBack(ConnMeta),
    /// Pool → zergling, with one descriptor: a listening socket to accept on
    /// (`zerg-direct-accept`, `zerg-direct-accept-http`; sent only to zerglings
    /// whose HELLO has ACCEPT_DIRECT). The zergling accepts and serves that
    /// listener's connections itself until it drains or the channel closes, then
    /// closes its copy.
    Listen {
        /// The pool listener's name (`uwsgi0`, `http0`, …).
        listener: String,
        /// What its connections speak: `uwsgi`, or `http`.
        kind: ListenerKind,
        /// The address it is bound to.
        local: Endpoint,
        /// Largest uwsgi packet head or HTTP request head (`buffer-size`).
        buffer_size: u32,
        /// Time a client has to send its packet or head, in milliseconds.
        head_timeout_ms: u32,
    },
    /// Zergling → pool: whether every request slot of the application is taken
    /// (its threads all busy or spoken for). Sent when that changes. The pool
    /// prefers zerglings that are not saturated, whatever their connection count.
    Load {
        /// All busy.
        saturated: bool,
    },
    /// Zergling → pool: its counters since it started (for `stats` and
    /// metrics), sent periodically when they changed.
    Stats(ZerglingStats),
    /// Zergling → pool: request log lines (each ending with a newline), written
    /// by the pool to its log as they are.
    Log {
        /// The lines.
        lines: Bytes,
    },
    /// Pool → zergling: the pool's log file (its descriptor, opened for
    /// appending): request log lines go straight into it from now on, instead
    /// of in LOG. Sent after WELCOME when the pool logs to a file, and again
    /// each time it reopens it (rotation).
    LogFile,
}

/// What a zergling reports with STATS: counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZerglingStats {
    /// Responses completed (the application's and static ones).
    pub requests: u64,
    /// Of those, responses with a 5xx status.
    pub exceptions: u64,
    /// Response body bytes sent.
    pub tx_bytes: u64,
    /// Microseconds spent on requests, from the head received to the response's
    /// last byte handed to the socket (summed).
    pub running_us: u64,
    /// Requests being served now.
    pub in_flight: u32,
}

impl Message {
    /// Whether this message travels with exactly one descriptor (`SCM_RIGHTS`).
    pub fn carries_fd(&self) -> bool {
        matches!(self, Message::Conn(_) | Message::HandBack(_) | Message::Listen { .. } | Message::LogFile)
    }

    /// The name used in logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "HELLO",
            Message::Welcome { .. } => "WELCOME",
            Message::Refuse { .. } => "REFUSE",
            Message::Conn(_) => "CONN",
            Message::Ack { .. } => "ACK",
            Message::Closed { .. } => "CLOSED",
            Message::Draining => "DRAINING",
            Message::Drain { .. } => "DRAIN",
            Message::HandBack(_) => "HANDBACK",
            Message::Listen { .. } => "LISTEN",
            Message::Load { .. } => "LOAD",
            Message::Stats(_) => "STATS",
            Message::Log { .. } => "LOG",
            Message::LogFile => "LOGFILE",
        }
    }
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame has no type byte.
    #[error("empty frame")]
    Empty,
    /// The frame is larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// The first byte names no known message.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A field header or value runs past the end of the frame.
    #[error("field {tag} runs past the end of the frame")]
    Truncated {
        /// The field's tag.
        tag: u8,
    },
    /// A fixed-size field has the wrong length.
    #[error("field {tag} has length {len}, expected {expected}")]
    BadLength {
        /// The field's tag.
        tag: u8,
        /// The length found.
        len: usize,
        /// The length required.
        expected: usize,
    },
    /// A field over its own size limit.
    #[error("field {tag} of {len} bytes is over its limit")]
    FieldTooLarge {
        /// The field's tag.
        tag: u8,
        /// Its length.
        len: usize,
    },
    /// A text field that is not UTF-8.
    #[error("field {tag} is not UTF-8")]
    NotUtf8 {
        /// The field's tag.
        tag: u8,
    },
    /// A required field is absent.
    #[error("{message} lacks its required field {tag}")]
    Missing {
        /// The message being decoded.
        message: &'static str,
        /// The missing field's tag.
        tag: u8,
    },
    /// Too many repeated fields.
    #[error("too many tags (limit {MAX_TAGS})")]
    TooManyTags,
    /// A listener kind that is not `http`, `https` or `uwsgi`.
    #[error("unknown listener kind {0:?}")]
    UnknownKind(String),
    /// An ALPN protocol that is not `h2` or `http/1.1`.
    #[error("unknown ALPN protocol {0:?}")]
    UnknownAlpn(String),
    /// LOG_FORMAT does not parse.
    #[error("LOG_FORMAT is not a valid log-format template")]
    BadTemplate,
    /// A scheme that is not `http` or `https`.
    #[error("unknown scheme {0:?}")]
    UnknownScheme(String),
}

/// The deadlines a zergling applies to every connection it owns (DESIGN.md
/// invariant 7), as the pool's WELCOME says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// A request head, a stalled request body, a client that stops reading the
    /// response: each may make no progress for this long (`http-timeout`).
    pub io: Duration,
    /// An idle keep-alive connection waits this long for its next request
    /// (`http-keepalive`).
    pub keepalive: Duration,
    /// How long the pool lets a draining zergling finish before it kills it
    /// (`worker-reload-mercy`); `None` from a pool that does not say.
    pub mercy: Option<Duration>,
}

impl Default for Timeouts {
    /// nginx's and uWSGI's defaults: 60 s of no progress, 75 s idle.
    fn default() -> Self {
        Timeouts { io: Duration::from_secs(60), keepalive: Duration::from_secs(75), mercy: None }
    }
}

impl Timeouts {
    /// Timeouts with these values.
    pub fn new(io: Duration, keepalive: Duration, mercy: Option<Duration>) -> Self {
        Timeouts { io, keepalive, mercy }
    }
}

/// The pool's static-map settings as WELCOME carries them: typed fields, so that
/// a zergling in any language reads them without uWSGI's option grammar. Folders
/// are absolute and canonical (the pool resolved them); the rules mean what the
/// uWSGI options of the same names mean (`docs/PROTOCOL.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StaticSettings {
    /// `static-map` / `static-map2`, in lookup order.
    pub maps: Vec<StaticMount>,
    /// `static-index` file names, in order.
    pub index: Vec<String>,
    /// `static-expires` / `static-expires-uri` rules, in order.
    pub expires: Vec<ExpiresRule>,
    /// `static-gzip-all`.
    pub gzip_all: bool,
    /// `static-gzip-dir` folders.
    pub gzip_dirs: Vec<String>,
    /// `static-gzip-ext` extensions, without the dot.
    pub gzip_exts: Vec<String>,
    /// `static-safe` folders.
    pub safe: Vec<String>,
    /// `static-cache-paths` in seconds, when set.
    pub cache_seconds: Option<u32>,
}

/// One mount point of static-map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticMount {
    /// The URL path (`/static`).
    pub mount: String,
    /// The folder (or single file) it serves, absolute.
    pub root: String,
    /// `static-map2`: the whole request path is appended to `root`.
    pub whole_path: bool,
}

/// One `static-expires` (by file name) or `static-expires-uri` (by request path)
/// rule: a regular expression (Rust `regex` syntax, as PCRE for these simple
/// patterns) and the `max-age` it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiresRule {
    /// `true` for `static-expires-uri`.
    pub by_uri: bool,
    /// The pattern.
    pub regex: String,
    /// Seconds.
    pub seconds: u32,
}

impl StaticSettings {
    fn encode(&self, out: &mut Vec<u8>) {
        for m in &self.maps {
            let mut v = Vec::new();
            put(&mut v, sub::MOUNT, m.mount.as_bytes());
            put(&mut v, sub::ROOT, m.root.as_bytes());
            put(&mut v, sub::WHOLE_PATH, &[u8::from(m.whole_path)]);
            put(out, tag::STATIC_MAP, &v);
        }
        for n in &self.index {
            put(out, tag::STATIC_INDEX, n.as_bytes());
        }
        for r in &self.expires {
            let mut v = Vec::new();
            put(&mut v, sub::BY, if r.by_uri { b"uri" } else { b"file" });
            put(&mut v, sub::REGEX, r.regex.as_bytes());
            put(&mut v, sub::SECONDS, &r.seconds.to_le_bytes());
            put(out, tag::STATIC_EXPIRES, &v);
        }
        if self.gzip_all {
            put(out, tag::STATIC_GZIP_ALL, &[1]);
        }
        for (t, list) in [
            (tag::STATIC_GZIP_DIR, &self.gzip_dirs),
            (tag::STATIC_GZIP_EXT, &self.gzip_exts),
            (tag::STATIC_SAFE, &self.safe),
        ] {
            for item in list {
                put(out, t, item.as_bytes());
            }
        }
        if let Some(secs) = self.cache_seconds {
            put(out, tag::STATIC_CACHE_SECONDS, &secs.to_le_bytes());
        }
    }

    /// How many list items it holds (bounded by [`MAX_STATICS`]).
    fn items(&self) -> usize {
        self.maps.len()
            + self.index.len()
            + self.expires.len()
            + self.gzip_dirs.len()
            + self.gzip_exts.len()
            + self.safe.len()
    }

    fn take(&mut self, t: u8, v: &[u8]) -> Result<bool, DecodeError> {
        let list_item = matches!(
            t,
            tag::STATIC_MAP
                | tag::STATIC_INDEX
                | tag::STATIC_EXPIRES
                | tag::STATIC_GZIP_DIR
                | tag::STATIC_GZIP_EXT
                | tag::STATIC_SAFE
        );
        if list_item && self.items() >= MAX_STATICS {
            return Err(DecodeError::TooManyTags);
        }
        match t {
            tag::STATIC_MAP => {
                let (mut mount, mut root, mut whole) = (None, None, None);
                nested(t, v, |st, sv| {
                    match st {
                        sub::MOUNT => mount = Some(text(t, sv)?),
                        sub::ROOT => root = Some(text(t, sv)?),
                        sub::WHOLE_PATH => whole = Some(uint(t, sv, 1)? != 0),
                        _ => {}
                    }
                    Ok(())
                })?;
                let missing = |sub_tag| DecodeError::Missing { message: "WELCOME", tag: sub_tag };
                self.maps.push(StaticMount {
                    mount: mount.ok_or(missing(t))?,
                    root: root.ok_or(missing(t))?,
                    whole_path: whole.unwrap_or(false),
                });
            }
            tag::STATIC_INDEX => self.index.push(text(t, v)?),
            tag::STATIC_EXPIRES => {
                let (mut by_uri, mut regex, mut seconds) = (None, None, None);
                nested(t, v, |st, sv| {
                    match st {
                        sub::BY => by_uri = Some(text(t, sv)? == "uri"),
                        sub::REGEX => regex = Some(text(t, sv)?),
                        sub::SECONDS => seconds = Some(uint(t, sv, 4)? as u32),
                        _ => {}
                    }
                    Ok(())
                })?;
                let missing = DecodeError::Missing { message: "WELCOME", tag: t };
                self.expires.push(ExpiresRule {
                    by_uri: by_uri.unwrap_or(false),
                    regex: regex.ok_or(missing.clone())?,
                    seconds: seconds.ok_or(missing)?,
                });
            }
            tag::STATIC_GZIP_ALL => self.gzip_all = uint(t, v, 1)? != 0,
            tag::STATIC_GZIP_DIR => self.gzip_dirs.push(text(t, v)?),
            tag::STATIC_GZIP_EXT => self.gzip_exts.push(text(t, v)?),
            tag::STATIC_SAFE => self.safe.push(text(t, v)?),
            tag::STATIC_CACHE_SECONDS => self.cache_seconds = Some(uint(t, v, 4)? as u32),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Walks `tag len value` fields: a frame's body, or the value of a nested field.
/// A field running past the end is `Truncated` with its tag.
fn fields(mut rest: &[u8], mut each: impl FnMut(u8, &[u8]) -> Result<(), DecodeError>) -> Result<(), DecodeError> {
    while let Some(&t) = rest.first() {
        if rest.len() < 5 {
            return Err(DecodeError::Truncated { tag: t });
        }
        let len = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let value = rest.get(5..5usize.saturating_add(len)).ok_or(DecodeError::Truncated { tag: t })?;
        rest = &rest[5 + len..];
        each(t, value)?;
    }
    Ok(())
}

/// The fields nested in the value of field `outer`; a broken one is reported as
/// `outer` truncated.
fn nested(outer: u8, rest: &[u8], each: impl FnMut(u8, &[u8]) -> Result<(), DecodeError>) -> Result<(), DecodeError> {
    fields(rest, each).map_err(|e| match e {
        DecodeError::Truncated { .. } => DecodeError::Truncated { tag: outer },
        other => other,
    })
}

/// A duration in whole milliseconds on the wire (saturating at `u32::MAX`).
fn millis(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX)) as u32
}

/// Encodes a message into one frame.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match msg {
        Message::Hello { version, pid, capacity, tags, accept_direct } => {
            out.push(kind::HELLO);
            put(&mut out, tag::VERSION, &version.to_le_bytes());
            put(&mut out, tag::PID, &pid.to_le_bytes());
            put(&mut out, tag::CAPACITY, &capacity.to_le_bytes());
            for t in tags {
                put(&mut out, tag::TAG, t.as_bytes());
            }
            if *accept_direct {
                put(&mut out, tag::ACCEPT_DIRECT, &[1]);
            }
        }
        Message::Welcome { version, id, statics, timeouts, buffer_size, log } => {
            out.push(kind::WELCOME);
            put(&mut out, tag::VERSION, &version.to_le_bytes());
            put(&mut out, tag::ZERGLING_ID, &id.0.to_le_bytes());
            put(&mut out, tag::HEAD_TIMEOUT, &millis(timeouts.io).to_le_bytes());
            put(&mut out, tag::KEEPALIVE_TIMEOUT, &millis(timeouts.keepalive).to_le_bytes());
            if let Some(mercy) = timeouts.mercy {
                put(&mut out, tag::MERCY, &millis(mercy).to_le_bytes());
            }
            statics.encode(&mut out);
            if *buffer_size != 0 {
                put(&mut out, tag::BUFFER_SIZE, &buffer_size.to_le_bytes());
            }
            if log.any() {
                let flags = u8::from(log.all)
                    | u8::from(log.client_errors) << 1
                    | u8::from(log.server_errors) << 2
                    | u8::from(log.format == crate::reqlog::LogFormat::Json) << 3;
                put(&mut out, tag::LOG_FLAGS, &[flags]);
                put(&mut out, tag::LOG_SLOW_MS, &log.slow_ms.to_le_bytes());
                if let crate::reqlog::LogFormat::Template(t) = &log.format {
                    put(&mut out, tag::LOG_FORMAT, t.source().as_bytes());
                }
            }
        }
        Message::Refuse { reason } => {
            out.push(kind::REFUSE);
            put(&mut out, tag::REASON, reason.as_bytes());
        }
        Message::Conn(meta) | Message::HandBack(meta) => {
            out.reserve(96 + meta.prefix.len());
            out.push(if matches!(msg, Message::Conn(_)) { kind::CONN } else { kind::HANDBACK });
            put(&mut out, tag::CONN_ID, &meta.conn.0.to_le_bytes());
            put(&mut out, tag::LISTENER, meta.listener.as_bytes());
            put(&mut out, tag::KIND, meta.kind.as_str().as_bytes());
            put(&mut out, tag::SCHEME, meta.scheme.as_str().as_bytes());
            put_text(&mut out, tag::PEER, &meta.peer);
            put_text(&mut out, tag::LOCAL, &meta.local);
            if let Some(p) = meta.alpn {
                put(&mut out, tag::ALPN, p.as_str().as_bytes());
            }
            for (t, v) in [(tag::SNI, &meta.sni), (tag::TLS_VERSION, &meta.tls_version)] {
                if let Some(v) = v {
                    put(&mut out, t, v.as_bytes());
                }
            }
            put(&mut out, tag::PREFIX, &meta.prefix);
        }
        Message::Ack { conn } => {
            out.push(kind::ACK);
            put(&mut out, tag::CONN_ID, &conn.0.to_le_bytes());
        }
        Message::Closed { conn } => {
            out.push(kind::CLOSED);
            put(&mut out, tag::CONN_ID, &conn.0.to_le_bytes());
        }
        Message::Draining => out.push(kind::DRAINING),
        Message::Drain { handback } => {
            out.push(kind::DRAIN);
            put(&mut out, tag::HANDBACK, &[u8::from(*handback)]);
        }
        Message::Listen { listener, kind: k, local, buffer_size, head_timeout_ms } => {
            out.push(kind::LISTEN);
            put(&mut out, tag::LISTENER, listener.as_bytes());
            put(&mut out, tag::KIND, k.as_str().as_bytes());
            put_text(&mut out, tag::LOCAL, local);
            put(&mut out, tag::BUFFER_SIZE, &buffer_size.to_le_bytes());
            put(&mut out, tag::HEAD_TIMEOUT, &head_timeout_ms.to_le_bytes());
        }
        Message::Load { saturated } => {
            out.push(kind::LOAD);
            put(&mut out, tag::SATURATED, &[u8::from(*saturated)]);
        }
        Message::Log { lines } => {
            out.push(kind::LOG);
            put(&mut out, tag::LINES, lines);
        }
        Message::LogFile => out.push(kind::LOG_FILE),
        Message::Stats(st) => {
            out.push(kind::STATS);
            put(&mut out, tag::REQUESTS, &st.requests.to_le_bytes());
            put(&mut out, tag::EXCEPTIONS, &st.exceptions.to_le_bytes());
            put(&mut out, tag::TX_BYTES, &st.tx_bytes.to_le_bytes());
            put(&mut out, tag::RUNNING_US, &st.running_us.to_le_bytes());
            put(&mut out, tag::IN_FLIGHT, &st.in_flight.to_le_bytes());
        }
    }
    out
}

fn put(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    // Values are bounded by MAX_FRAME, far below u32::MAX.
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// A field written as text (an address), formatted straight into the frame.
fn put_text(out: &mut Vec<u8>, tag: u8, value: &impl std::fmt::Display) {
    use std::io::Write as _;
    out.push(tag);
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{value}");
    let len = (out.len() - len_at - 4) as u32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
}

/// Decodes one frame. `frame` must be exactly one message as received.
pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
    if frame.len() > MAX_FRAME {
        return Err(DecodeError::TooLarge(frame.len()));
    }
    let (&ty, body) = frame.split_first().ok_or(DecodeError::Empty)?;
    let mut f = Fields::default();
    fields(body, |t, value| f.take(t, value))?;
    let name = match ty {
        kind::HELLO => "HELLO",
        kind::WELCOME => "WELCOME",
        kind::REFUSE => "REFUSE",
        kind::CONN => "CONN",
        kind::ACK => "ACK",
        kind::CLOSED => "CLOSED",
        kind::HANDBACK => "HANDBACK",
        kind::LISTEN => "LISTEN",
        _ => "",
    };
    let need = |v: Option<u64>, t: u8| v.ok_or(DecodeError::Missing { message: name, tag: t });
    let need_s = |v: Option<String>, t: u8| v.ok_or(DecodeError::Missing { message: name, tag: t });
    Ok(match ty {
        kind::HELLO => Message::Hello {
            version: need(f.version, tag::VERSION)? as u16,
            pid: need(f.pid, tag::PID)? as u32,
            capacity: need(f.capacity, tag::CAPACITY)? as u32,
            tags: f.tags,
            accept_direct: f.accept_direct,
        },
        kind::WELCOME => Message::Welcome {
            version: need(f.version, tag::VERSION)? as u16,
            id: ZerglingId(need(f.zergling_id, tag::ZERGLING_ID)?),
            statics: f.statics,
            timeouts: Timeouts {
                io: f.head_timeout.map_or(Timeouts::default().io, Duration::from_millis),
                keepalive: f.keepalive_timeout.map_or(Timeouts::default().keepalive, Duration::from_millis),
                mercy: f.mercy.map(Duration::from_millis),
            },
            buffer_size: f.buffer_size.unwrap_or(0) as u32,
            log: {
                let flags = f.log_flags.unwrap_or(0);
                let format = match (f.log_format, flags & 8 != 0) {
                    (Some(t), _) => crate::reqlog::LogFormat::Template(
                        crate::reqlog::Template::parse(&t).map_err(|_| DecodeError::BadTemplate)?,
                    ),
                    (None, true) => crate::reqlog::LogFormat::Json,
                    (None, false) => crate::reqlog::LogFormat::Uwsgi,
                };
                let mut policy = crate::reqlog::LogPolicy {
                    all: flags & 1 != 0,
                    client_errors: flags & 2 != 0,
                    server_errors: flags & 4 != 0,
                    slow_ms: f.log_slow_ms.unwrap_or(0) as u32,
                    format,
                };
                // A policy that logs nothing has no format to speak of (the
                // encoder sends none): the default, so that one policy has
                // one encoding (found by fuzz/proto_frame).
                if !policy.any() {
                    policy.format = crate::reqlog::LogFormat::default();
                }
                policy
            },
        },
        kind::REFUSE => Message::Refuse { reason: need_s(f.reason, tag::REASON)? },
        kind::CONN | kind::HANDBACK => {
            let kind_s = need_s(f.kind, tag::KIND)?;
            let kind = ListenerKind::parse(&kind_s).ok_or(DecodeError::UnknownKind(kind_s))?;
            let meta = ConnMeta {
                conn: ConnId(need(f.conn_id, tag::CONN_ID)?),
                listener: need_s(f.listener, tag::LISTENER)?,
                kind,
                scheme: {
                    let s = need_s(f.scheme, tag::SCHEME)?;
                    Scheme::parse(&s).ok_or(DecodeError::UnknownScheme(s))?
                },
                peer: Endpoint::parse(&need_s(f.peer, tag::PEER)?),
                local: Endpoint::parse(&need_s(f.local, tag::LOCAL)?),
                sni: f.sni,
                alpn: match f.alpn {
                    Some(a) => Some(AlpnProtocol::parse(a.as_bytes()).ok_or(DecodeError::UnknownAlpn(a))?),
                    None => None,
                },
                tls_version: f.tls_version,
                prefix: f.prefix.unwrap_or_default(),
            };
            if ty == kind::CONN {
                Message::Conn(meta)
            } else {
                Message::HandBack(meta)
            }
        }
        kind::ACK => Message::Ack { conn: ConnId(need(f.conn_id, tag::CONN_ID)?) },
        kind::CLOSED => Message::Closed { conn: ConnId(need(f.conn_id, tag::CONN_ID)?) },
        kind::DRAINING => Message::Draining,
        kind::DRAIN => Message::Drain { handback: f.handback.unwrap_or(0) != 0 },
        kind::LOAD => Message::Load { saturated: need(f.saturated, tag::SATURATED)? != 0 },
        kind::LOG => Message::Log { lines: f.prefix.unwrap_or_default() },
        kind::LOG_FILE => Message::LogFile,
        kind::STATS => Message::Stats(ZerglingStats {
            requests: need(f.requests, tag::REQUESTS)?,
            exceptions: need(f.exceptions, tag::EXCEPTIONS)?,
            tx_bytes: need(f.tx_bytes, tag::TX_BYTES)?,
            running_us: need(f.running_us, tag::RUNNING_US)?,
            in_flight: need(f.in_flight, tag::IN_FLIGHT)? as u32,
        }),
        kind::LISTEN => {
            let kind_s = need_s(f.kind, tag::KIND)?;
            Message::Listen {
                listener: need_s(f.listener, tag::LISTENER)?,
                kind: ListenerKind::parse(&kind_s).ok_or(DecodeError::UnknownKind(kind_s))?,
                local: Endpoint::parse(&need_s(f.local, tag::LOCAL)?),
                buffer_size: need(f.buffer_size, tag::BUFFER_SIZE)? as u32,
                head_timeout_ms: need(f.head_timeout, tag::HEAD_TIMEOUT)? as u32,
            }
        }
        other => return Err(DecodeError::UnknownType(other)),
    })
}

/// The fields of one frame, each checked as it is read.
#[derive(Default)]
struct Fields {
    version: Option<u64>,
    pid: Option<u64>,
    capacity: Option<u64>,
    tags: Vec<String>,
    zergling_id: Option<u64>,
    reason: Option<String>,
    conn_id: Option<u64>,
    listener: Option<String>,
    kind: Option<String>,
    scheme: Option<String>,
    peer: Option<String>,
    local: Option<String>,
    sni: Option<String>,
    alpn: Option<String>,
    tls_version: Option<String>,
    prefix: Option<Bytes>,
    handback: Option<u64>,
    saturated: Option<u64>,
    requests: Option<u64>,
    exceptions: Option<u64>,
    tx_bytes: Option<u64>,
    running_us: Option<u64>,
    in_flight: Option<u64>,
    log_flags: Option<u64>,
    log_slow_ms: Option<u64>,
    log_format: Option<String>,
    statics: StaticSettings,
    accept_direct: bool,
    buffer_size: Option<u64>,
    head_timeout: Option<u64>,
    keepalive_timeout: Option<u64>,
    mercy: Option<u64>,
}

impl Fields {
    fn take(&mut self, t: u8, v: &[u8]) -> Result<(), DecodeError> {
        match t {
            tag::VERSION => self.version = Some(uint(t, v, 2)?),
            tag::PID => self.pid = Some(uint(t, v, 4)?),
            tag::CAPACITY => self.capacity = Some(uint(t, v, 4)?),
            tag::ZERGLING_ID => self.zergling_id = Some(uint(t, v, 8)?),
            tag::CONN_ID => self.conn_id = Some(uint(t, v, 8)?),
            tag::TAG => {
                if self.tags.len() >= MAX_TAGS {
                    return Err(DecodeError::TooManyTags);
                }
                self.tags.push(text(t, v)?);
            }
            tag::HANDBACK => self.handback = Some(uint(t, v, 1)?),
            tag::SATURATED => self.saturated = Some(uint(t, v, 1)?),
            tag::REQUESTS => self.requests = Some(uint(t, v, 8)?),
            tag::EXCEPTIONS => self.exceptions = Some(uint(t, v, 8)?),
            tag::TX_BYTES => self.tx_bytes = Some(uint(t, v, 8)?),
            tag::RUNNING_US => self.running_us = Some(uint(t, v, 8)?),
            tag::IN_FLIGHT => self.in_flight = Some(uint(t, v, 4)?),
            tag::LOG_FLAGS => self.log_flags = Some(uint(t, v, 1)?),
            tag::LOG_SLOW_MS => self.log_slow_ms = Some(uint(t, v, 4)?),
            tag::LOG_FORMAT => self.log_format = Some(text(t, v)?),
            // Carried like PREFIX (bytes, bounded by the frame).
            tag::LINES => self.prefix = Some(Bytes::copy_from_slice(v)),
            tag::BUFFER_SIZE => self.buffer_size = Some(uint(t, v, 4)?),
            tag::HEAD_TIMEOUT => self.head_timeout = Some(uint(t, v, 4)?),
            tag::KEEPALIVE_TIMEOUT => self.keepalive_timeout = Some(uint(t, v, 4)?),
            tag::MERCY => self.mercy = Some(uint(t, v, 4)?),
            tag::ACCEPT_DIRECT => self.accept_direct = uint(t, v, 1)? != 0,
            tag::REASON => self.reason = Some(text(t, v)?),
            tag::LISTENER => self.listener = Some(text(t, v)?),
            tag::KIND => self.kind = Some(text(t, v)?),
            tag::SCHEME => self.scheme = Some(text(t, v)?),
            tag::PEER => self.peer = Some(text(t, v)?),
            tag::LOCAL => self.local = Some(text(t, v)?),
            tag::SNI => self.sni = Some(text(t, v)?),
            tag::ALPN => self.alpn = Some(text(t, v)?),
            tag::TLS_VERSION => self.tls_version = Some(text(t, v)?),
            tag::PREFIX => {
                if v.len() > MAX_PREFIX {
                    return Err(DecodeError::FieldTooLarge { tag: t, len: v.len() });
                }
                self.prefix = Some(Bytes::copy_from_slice(v));
            }
            _ => {
                // Static-map fields, else unknown (skipped: forward compatibility).
                self.statics.take(t, v)?;
            }
        }
        Ok(())
    }
}

fn uint(tag: u8, v: &[u8], expected: usize) -> Result<u64, DecodeError> {
    if v.len() != expected {
        return Err(DecodeError::BadLength { tag, len: v.len(), expected });
    }
    let mut b = [0u8; 8];
    b[..expected].copy_from_slice(v);
    Ok(u64::from_le_bytes(b))
}

fn text(tag: u8, v: &[u8]) -> Result<String, DecodeError> {
    if v.len() > MAX_STRING {
        return Err(DecodeError::FieldTooLarge { tag, len: v.len() });
    }
    std::str::from_utf8(v).map(str::to_owned).map_err(|_| DecodeError::NotUtf8 { tag })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_conn() -> Message {
        Message::Conn(ConnMeta {
            conn: ConnId(42),
            listener: "http0".into(),
            kind: ListenerKind::Http,
            scheme: Scheme::Http,
            peer: Endpoint::parse("127.0.0.1:5555"),
            local: Endpoint::parse("127.0.0.1:8080"),
            sni: None,
            alpn: Some(AlpnProtocol::Http11),
            tls_version: None,
            prefix: Bytes::from_static(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        })
    }

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello { version: 2, pid: 77, capacity: 9, tags: vec!["app=demo".into()], accept_direct: true },
            Message::Hello { version: 2, pid: 77, capacity: 9, tags: vec![], accept_direct: false },
            Message::Welcome {
                version: 2,
                id: ZerglingId(3),
                statics: StaticSettings {
                    maps: vec![
                        StaticMount { mount: "/s".into(), root: "/srv/www".into(), whole_path: false },
                        StaticMount { mount: "/".into(), root: "/srv/root".into(), whole_path: true },
                    ],
                    index: vec!["index.html".into()],
                    expires: vec![
                        ExpiresRule { by_uri: false, regex: r"\.css$".into(), seconds: 86400 },
                        ExpiresRule { by_uri: true, regex: "^/s/".into(), seconds: 60 },
                    ],
                    gzip_all: true,
                    gzip_dirs: vec!["/srv/www/gz".into()],
                    gzip_exts: vec!["css".into()],
                    safe: vec!["/srv/shared".into()],
                    cache_seconds: Some(3),
                },
                timeouts: Timeouts {
                    io: Duration::from_secs(7),
                    keepalive: Duration::from_millis(1500),
                    mercy: Some(Duration::from_secs(3)),
                },
                buffer_size: 8192,
                log: crate::reqlog::LogPolicy {
                    all: false,
                    client_errors: true,
                    server_errors: true,
                    slow_ms: 250,
                    format: crate::reqlog::LogFormat::Template(
                        crate::reqlog::Template::parse("%(method) %(uri) %(status)").unwrap(),
                    ),
                },
            },
            Message::Welcome {
                version: 2,
                id: ZerglingId(4),
                statics: StaticSettings::default(),
                timeouts: Timeouts::default(),
                buffer_size: 0,
                log: crate::reqlog::LogPolicy::default(),
            },
            Message::Welcome {
                version: 2,
                id: ZerglingId(5),
                statics: StaticSettings::default(),
                timeouts: Timeouts::default(),
                buffer_size: 0,
                log: crate::reqlog::LogPolicy {
                    all: true,
                    format: crate::reqlog::LogFormat::Json,
                    ..Default::default()
                },
            },
            Message::Log { lines: Bytes::from_static(b"GET / 200\nGET /x 404\n") },
            Message::LogFile,
            Message::Refuse { reason: "no".into() },
            sample_conn(),
            Message::Ack { conn: ConnId(1) },
            Message::Closed { conn: ConnId(u64::MAX) },
            Message::Draining,
            Message::Drain { handback: true },
            Message::Drain { handback: false },
            Message::Load { saturated: true },
            Message::Load { saturated: false },
            Message::Stats(ZerglingStats {
                requests: 7,
                exceptions: 1,
                tx_bytes: 1 << 40,
                running_us: 12_345,
                in_flight: 3,
            }),
            Message::Listen {
                listener: "uwsgi0".into(),
                kind: ListenerKind::Uwsgi,
                local: Endpoint::parse("127.0.0.1:3031"),
                buffer_size: 4096,
                head_timeout_ms: 60_000,
            },
            match sample_conn() {
                Message::Conn(meta) => Message::HandBack(meta),
                _ => unreachable!(),
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            assert_eq!(decode(&encode(&m)).unwrap(), m);
        }
    }

    #[test]
    fn every_truncation_inside_a_field_is_an_error() {
        for m in samples() {
            let bytes = encode(&m);
            // Field boundaries: a cut there is a shorter, well-formed frame.
            let mut boundaries = vec![1];
            let mut pos = 1;
            while pos < bytes.len() {
                let len = u32::from_le_bytes([bytes[pos + 1], bytes[pos + 2], bytes[pos + 3], bytes[pos + 4]]) as usize;
                pos += 5 + len;
                boundaries.push(pos);
            }
            for cut in 0..bytes.len() {
                let r = decode(&bytes[..cut]);
                if !boundaries.contains(&cut) {
                    assert!(r.is_err(), "{}: cut at {cut} decoded", m.name());
                }
            }
        }
    }

    #[test]
    fn limits_are_enforced() {
        let mut big = vec![kind::REFUSE, tag::REASON];
        big.extend_from_slice(&((MAX_STRING + 1) as u32).to_le_bytes());
        big.extend(std::iter::repeat_n(b'a', MAX_STRING + 1));
        assert!(matches!(decode(&big), Err(DecodeError::FieldTooLarge { .. })));
        let lying = [kind::ACK, tag::CONN_ID, 0xff, 0xff, 0xff, 0xff, 1];
        assert!(matches!(decode(&lying), Err(DecodeError::Truncated { .. })));
        let short_int = [kind::ACK, tag::CONN_ID, 2, 0, 0, 0, 1, 2];
        assert!(matches!(decode(&short_int), Err(DecodeError::BadLength { .. })));
        assert_eq!(decode(&[99]), Err(DecodeError::UnknownType(99)));
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert!(matches!(decode(&[kind::ACK]), Err(DecodeError::Missing { .. })));
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut f = encode(&Message::Ack { conn: ConnId(9) });
        f.extend_from_slice(&[200, 3, 0, 0, 0, 1, 2, 3]);
        assert_eq!(decode(&f).unwrap(), Message::Ack { conn: ConnId(9) });
    }
    /// A WELCOME whose policy logs nothing but names a format decodes to the
    /// default format, as its re-encoding does (fuzz/proto_frame's finding).
    #[test]
    fn a_policy_that_logs_nothing_has_one_encoding() {
        let frame =
            b"\x02\x01\x02\x00\x00\x00\x01\x00\x05\x08\x00\x00\x00\x07\x00\xea\x00\x2f\x20\x28\x00\x28\x00\x00\x00\x00";
        let msg = decode(frame).expect("a WELCOME");
        let Message::Welcome { log, .. } = &msg else { panic!("{msg:?}") };
        assert!(!log.any());
        assert_eq!(log.format, crate::reqlog::LogFormat::Uwsgi);
        assert_eq!(decode(&encode(&msg)), Ok(msg.clone()));
    }
}
