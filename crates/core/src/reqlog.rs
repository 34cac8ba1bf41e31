//! Request log lines, written by whoever answered the request (the zergling
//! library for the application's requests, the pool for its own answers):
//! which requests are logged ([`LogPolicy`], uWSGI's `disable-logging`,
//! `log-4xx`, `log-5xx`, `log-slow`), and how ([`LogFormat`]: uWSGI's default
//! line, a `log-format` template with uWSGI's variables, or one JSON object).
//!
//! Pure: an [`Entry`] in, bytes appended to a buffer out.

use std::time::{SystemTime, UNIX_EPOCH};

/// Which requests get a line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPolicy {
    /// Every request (uWSGI's default; `disable-logging` turns it off).
    pub all: bool,
    /// Also, with `all` off, those answered 4xx (`log-4xx`).
    pub client_errors: bool,
    /// Also, with `all` off, those answered 5xx (`log-5xx`).
    pub server_errors: bool,
    /// Also, with `all` off, those slower than this many milliseconds
    /// (`log-slow`; 0: none).
    pub slow_ms: u32,
    /// How the line looks.
    pub format: LogFormat,
}

impl LogPolicy {
    /// Whether any request can be logged (else nothing need be captured).
    pub fn any(&self) -> bool {
        self.all || self.client_errors || self.server_errors || self.slow_ms > 0
    }

    /// Whether a request answered `status` after `micros` is logged.
    pub fn wants(&self, status: u16, micros: u64) -> bool {
        self.all
            || (self.client_errors && (400..500).contains(&status))
            || (self.server_errors && status >= 500)
            || (self.slow_ms > 0 && micros / 1000 > u64::from(self.slow_ms))
    }
}

/// The shape of a line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// uWSGI's default request line.
    #[default]
    Uwsgi,
    /// One JSON object a line.
    Json,
    /// A `log-format` template.
    Template(Template),
}

impl LogFormat {
    /// Whether a line shows a request header (`Host`, `User-Agent`,
    /// `Referer`): uWSGI's line does not, so they need not be kept for it.
    pub fn shows_headers(&self) -> bool {
        match self {
            LogFormat::Uwsgi => false,
            LogFormat::Json => true,
            LogFormat::Template(t) => {
                t.parts.iter().any(|p| matches!(p, Part::Var(Var::Host | Var::Uagent | Var::Referer)))
            }
        }
    }
}

/// The wall clock read from the monotonic one: `SystemTime::now()` once a
/// second per thread, and in between the monotonic time already read for the
/// request's duration, added to it (a request log line needs the time of
/// day to the microsecond at most, and reading two clocks per request costs).
pub fn wall_clock(now: std::time::Instant) -> SystemTime {
    thread_local! {
        static BASE: std::cell::Cell<Option<(std::time::Instant, SystemTime)>> = const { std::cell::Cell::new(None) };
    }
    BASE.with(|base| match base.get() {
        Some((at, wall)) if now >= at && now - at < std::time::Duration::from_secs(1) => wall + (now - at),
        _ => {
            let wall = SystemTime::now();
            base.set(Some((now, wall)));
            wall
        }
    })
}

/// A `log-format` template: text with uWSGI's `%(name)` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// The variables a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Uri,
    Method,
    Status,
    Size,
    Msecs,
    Micros,
    Addr,
    Host,
    Proto,
    Uagent,
    Referer,
    Pid,
    Wid,
    Ltime,
    Epoch,
}

impl Var {
    const ALL: &'static [(&'static str, Var)] = &[
        ("uri", Var::Uri),
        ("method", Var::Method),
        ("status", Var::Status),
        ("size", Var::Size),
        ("rsize", Var::Size),
        ("msecs", Var::Msecs),
        ("micros", Var::Micros),
        ("addr", Var::Addr),
        ("host", Var::Host),
        ("proto", Var::Proto),
        ("uagent", Var::Uagent),
        ("referer", Var::Referer),
        ("pid", Var::Pid),
        ("wid", Var::Wid),
        ("ltime", Var::Ltime),
        ("epoch", Var::Epoch),
    ];
}

impl Template {
    /// Parses a `log-format` value; an unknown variable is an error naming it.
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(at) = rest.find("%(") {
            if at > 0 {
                parts.push(Part::Text(rest[..at].to_owned()));
            }
            let after = &rest[at + 2..];
            let end = after.find(')').ok_or_else(|| format!("`%(` without `)` in {source:?}"))?;
            let name = &after[..end];
            let var = Var::ALL.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).ok_or_else(|| {
                let known: Vec<&str> = Var::ALL.iter().map(|(n, _)| *n).collect();
                format!("unknown variable %({name}) (known: {})", known.join(", "))
            })?;
            parts.push(Part::Var(var));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { source: source.to_owned(), parts })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// One request, as its line needs it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The answering process.
    pub pid: u32,
    /// The zergling's id (0: the pool).
    pub wid: u64,
    /// The client's address (IP, or a name).
    pub addr: &'a str,
    /// The request method.
    pub method: &'a str,
    /// The request target as sent.
    pub uri: &'a str,
    /// `HTTP/1.1`, …
    pub proto: &'a str,
    /// The response status.
    pub status: u16,
    /// Response body bytes.
    pub size: u64,
    /// From the head received to the response's end.
    pub micros: u64,
    /// The `Host` header (empty when absent).
    pub host: &'a str,
    /// The `User-Agent` header (empty when absent).
    pub uagent: &'a str,
    /// The `Referer` header (empty when absent).
    pub referer: &'a str,
    /// When it ended.
    pub at: SystemTime,
}

/// Appends `entry`'s line (with its newline) to `out`. Written piece by piece
/// (integers with `itoa`, the time from a per-thread cache), not through
/// `core::fmt`: a line is written for every request, and the formatting
/// machinery cost more than all the rest of logging it.
pub fn write_line(format: &LogFormat, e: &Entry<'_>, out: &mut String) {
    let mut n = itoa::Buffer::new();
    match format {
        LogFormat::Uwsgi => {
            // The pieces that change once a second (or never) come whole
            // from a per-thread cache.
            with_pieces(e, |p| {
                out.push_str(&p.pid_prefix);
                out.push_str(e.addr);
                out.push_str(&p.ctime_piece);
            });
            out.push_str(e.method);
            out.push(' ');
            out.push_str(e.uri);
            out.push_str(" => generated ");
            out.push_str(n.format(e.size));
            out.push_str(" bytes in ");
            out.push_str(n.format(e.micros / 1000));
            out.push_str(" msecs (");
            out.push_str(e.proto);
            out.push(' ');
            out.push_str(n.format(e.status));
            out.push_str(") 0 headers in 0 bytes (1 switches on core 0)\n");
        }
        LogFormat::Json => {
            let since = e.at.duration_since(UNIX_EPOCH).unwrap_or_default();
            out.push_str("{\"time\":");
            out.push_str(n.format(since.as_secs()));
            out.push('.');
            let micros = n.format(since.subsec_micros());
            out.push_str(&"000000"[micros.len()..]);
            out.push_str(micros);
            out.push_str(",\"pid\":");
            out.push_str(n.format(e.pid));
            out.push_str(",\"wid\":");
            out.push_str(n.format(e.wid));
            out.push_str(",\"addr\":");
            push_json_str(out, e.addr);
            out.push_str(",\"method\":");
            push_json_str(out, e.method);
            out.push_str(",\"uri\":");
            push_json_str(out, e.uri);
            out.push_str(",\"proto\":");
            push_json_str(out, e.proto);
            out.push_str(",\"status\":");
            out.push_str(n.format(e.status));
            out.push_str(",\"size\":");
            out.push_str(n.format(e.size));
            out.push_str(",\"micros\":");
            out.push_str(n.format(e.micros));
            out.push_str(",\"host\":");
            push_json_str(out, e.host);
            out.push_str(",\"uagent\":");
            push_json_str(out, e.uagent);
            out.push_str(",\"referer\":");
            push_json_str(out, e.referer);
            out.push_str("}\n");
        }
        LogFormat::Template(t) => {
            for part in &t.parts {
                match part {
                    Part::Text(s) => out.push_str(s),
                    Part::Var(v) => match v {
                        Var::Uri => out.push_str(e.uri),
                        Var::Method => out.push_str(e.method),
                        Var::Status => out.push_str(n.format(e.status)),
                        Var::Size => out.push_str(n.format(e.size)),
                        Var::Msecs => out.push_str(n.format(e.micros / 1000)),
                        Var::Micros => out.push_str(n.format(e.micros)),
                        Var::Addr => out.push_str(e.addr),
                        Var::Host => out.push_str(e.host),
                        Var::Proto => out.push_str(e.proto),
                        Var::Uagent => out.push_str(e.uagent),
                        Var::Referer => out.push_str(e.referer),
                        Var::Pid => out.push_str(n.format(e.pid)),
                        Var::Wid => out.push_str(n.format(e.wid)),
                        Var::Ltime => push_ctime(out, e.at),
                        Var::Epoch => {
                            out.push_str(n.format(e.at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())))
                        }
                    },
                }
            }
            out.push('\n');
        }
    }
}

/// This process's id, asked of the kernel once (`getpid` is a system call in
/// glibc, and a line is written for every request).
pub fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// The text of an endpoint as a request line shows it (an IP address without
/// its port, or the name), on the stack: IPv4 without `core::fmt`.
#[derive(Clone, Copy)]
pub struct AddrText {
    buf: [u8; 46],
    len: usize,
}

impl AddrText {
    /// The text of `ip`, from a one-entry per-thread cache: the requests a
    /// thread serves in a row mostly come from one address (a front-end, a
    /// load balancer, a busy client).
    pub fn cached(ip: std::net::IpAddr) -> AddrText {
        thread_local! {
            static LAST: std::cell::Cell<Option<(std::net::IpAddr, AddrText)>> = const { std::cell::Cell::new(None) };
        }
        LAST.with(|last| match last.get() {
            Some((at, text)) if at == ip => text,
            _ => {
                let text = AddrText::new(ip);
                last.set(Some((ip, text)));
                text
            }
        })
    }

    /// The text of `ip`.
    pub fn new(ip: std::net::IpAddr) -> AddrText {
        let mut t = AddrText { buf: [0; 46], len: 0 };
        match ip {
            std::net::IpAddr::V4(v4) => {
                let mut n = itoa::Buffer::new();
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b".");
                    }
                    t.push(n.format(octet).as_bytes());
                }
            }
            std::net::IpAddr::V6(v6) => {
                use std::io::Write as _;
                let mut w = &mut t.buf[..];
                let _ = write!(w, "{v6}");
                t.len = 46 - w.len();
            }
        }
        t
    }

    fn push(&mut self, b: &[u8]) {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

/// The pieces of uWSGI's line that do not change from one request to the
/// next within a second: `[pid: N|app: 0|req: -/-] ` and
/// ` () {0 vars in 0 bytes} [ctime] `.
struct Pieces {
    pid: u32,
    pid_prefix: String,
    secs: u64,
    ctime_piece: String,
}

/// Runs `f` with this thread's [`Pieces`], made again when `e`'s pid or
/// second differs from theirs.
fn with_pieces(e: &Entry<'_>, f: impl FnOnce(&Pieces)) {
    thread_local! {
        static PIECES: std::cell::RefCell<Pieces> = const {
            std::cell::RefCell::new(Pieces { pid: 0, pid_prefix: String::new(), secs: u64::MAX, ctime_piece: String::new() })
        };
    }
    let secs = e.at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    PIECES.with(|p| {
        let mut p = p.borrow_mut();
        if p.pid != e.pid || p.pid_prefix.is_empty() {
            p.pid = e.pid;
            p.pid_prefix = format!("[pid: {}|app: 0|req: -/-] ", e.pid);
        }
        if p.secs != secs {
            p.secs = secs;
            p.ctime_piece = format!(" () {{0 vars in 0 bytes}} [{}] ", ctime_of(secs));
        }
        f(&p);
    })
}

/// Appends [`ctime`] of `t`, from a per-thread cache of the current second.
fn push_ctime(out: &mut String, t: SystemTime) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    thread_local! {
        static LAST: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != secs {
            *last = (secs, ctime_of(secs));
        }
        out.push_str(&last.1);
    })
}

/// Appends a JSON string literal of `s`.
fn push_json_str(out: &mut String, s: &str) {
    // Bytes, not chars: every byte that needs an escape is ASCII, and the
    // text is mostly an address, a method or a path with none.
    fn plain(b: u8) -> bool {
        b >= 0x20 && b != b'"' && b != b'\\'
    }
    out.push('"');
    let mut rest = s;
    while let Some(at) = rest.bytes().position(|b| !plain(b)) {
        out.push_str(&rest[..at]);
        match rest.as_bytes()[at] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            c => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[usize::from(c >> 4)] as char);
                out.push(HEX[usize::from(c & 15)] as char);
            }
        }
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// `Tue Dec  1 03:32:41 2026` (UTC), as uWSGI's default line shows the time;
/// made once a second per thread.
pub fn ctime(t: SystemTime) -> String {
    let mut out = String::new();
    push_ctime(&mut out, t);
    out
}

fn ctime_of(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (h, m, s) = ((secs % 86_400) / 3600, (secs % 3600) / 60, secs % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let weekday = DAYS[days.rem_euclid(7) as usize];
    format!("{weekday} {} {day:>2} {h:02}:{m:02}:{s:02} {year}", MONTHS[(month - 1) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            pid: 42,
            wid: 3,
            addr: "127.0.0.1",
            method: "GET",
            uri: "/a?b=1",
            proto: "HTTP/1.1",
            status: 200,
            size: 13,
            micros: 2500,
            host: "example.org",
            uagent: "curl/8",
            referer: "",
            at: UNIX_EPOCH + std::time::Duration::from_secs(1_796_095_961),
        }
    }

    #[test]
    fn the_three_formats() {
        let mut out = String::new();
        write_line(&LogFormat::Uwsgi, &entry(), &mut out);
        assert_eq!(
            out,
            "[pid: 42|app: 0|req: -/-] 127.0.0.1 () {0 vars in 0 bytes} [Tue Dec  1 03:32:41 2026] GET /a?b=1 => generated 13 bytes in 2 msecs (HTTP/1.1 200) 0 headers in 0 bytes (1 switches on core 0)\n"
        );
        let mut out = String::new();
        let t = Template::parse(
            "%(addr) %(method) %(uri) %(status) %(size) %(msecs) %(micros) %(host) \"%(uagent)\" w%(wid)",
        )
        .unwrap();
        write_line(&LogFormat::Template(t), &entry(), &mut out);
        assert_eq!(out, "127.0.0.1 GET /a?b=1 200 13 2 2500 example.org \"curl/8\" w3\n");
        let mut out = String::new();
        write_line(&LogFormat::Json, &Entry { uri: "/\"x\"", ..entry() }, &mut out);
        assert!(out.contains("\"uri\":\"/\\\"x\\\"\",\"proto\":\"HTTP/1.1\",\"status\":200"), "{out}");
        let mut out = String::new();
        let at = UNIX_EPOCH + std::time::Duration::from_micros(1_796_095_961_000_005);
        write_line(&LogFormat::Json, &Entry { uagent: "a\\b\u{1}c\"", at, ..entry() }, &mut out);
        assert_eq!(
            out,
            "{\"time\":1796095961.000005,\"pid\":42,\"wid\":3,\"addr\":\"127.0.0.1\",\"method\":\"GET\",\"uri\":\"/a?b=1\",\
             \"proto\":\"HTTP/1.1\",\"status\":200,\"size\":13,\"micros\":2500,\"host\":\"example.org\",\
             \"uagent\":\"a\\\\b\\u0001c\\\"\",\"referer\":\"\"}\n"
        );
        assert!(Template::parse("%(nope)").unwrap_err().contains("unknown variable %(nope)"));
    }

    #[test]
    fn addresses_as_lines_show_them() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.20.3.4",
            "::1",
            "2001:db8::ff00:42:8329",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ] {
            let parsed: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(AddrText::new(parsed).as_str(), parsed.to_string());
            assert_eq!(AddrText::cached(parsed).as_str(), parsed.to_string());
            assert_eq!(AddrText::cached(parsed).as_str(), parsed.to_string());
        }
        assert_eq!(pid(), std::process::id());
    }

    #[test]
    fn the_wall_clock_follows_the_monotonic_one() {
        let start = std::time::Instant::now();
        let a = wall_clock(start);
        let b = wall_clock(start + std::time::Duration::from_millis(300));
        assert_eq!(b.duration_since(a).unwrap(), std::time::Duration::from_millis(300));
        let real = SystemTime::now();
        let diff = real.duration_since(a).unwrap_or_else(|e| e.duration());
        assert!(diff < std::time::Duration::from_millis(100), "{diff:?}");
        // Past a second, the wall clock is read again.
        let later = start + std::time::Duration::from_secs(2);
        let c = wall_clock(later);
        assert!(c.duration_since(real).unwrap_or_else(|e| e.duration()) < std::time::Duration::from_millis(100));
        assert!(!LogFormat::Uwsgi.shows_headers() && LogFormat::Json.shows_headers());
        assert!(LogFormat::Template(Template::parse("%(uagent)").unwrap()).shows_headers());
        assert!(!LogFormat::Template(Template::parse("%(uri) %(status)").unwrap()).shows_headers());
    }

    #[test]
    fn the_policy_picks_lines() {
        let p = LogPolicy { client_errors: true, slow_ms: 100, ..LogPolicy::default() };
        assert!(p.any());
        assert!(!p.wants(200, 5_000) && p.wants(404, 10) && !p.wants(503, 10) && p.wants(200, 150_000));
        assert!(LogPolicy { all: true, ..LogPolicy::default() }.wants(200, 0));
        assert!(!LogPolicy::default().any());
    }
}
