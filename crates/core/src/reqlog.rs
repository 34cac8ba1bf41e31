//! Request log lines, written by whoever answered the request (the zergling
//! library for the application's requests, the pool for its own answers):
//! which requests are logged ([`LogPolicy`], uWSGI's `disable-logging`,
//! `log-4xx`, `log-5xx`, `log-slow`), and how ([`LogFormat`]: uWSGI's default
//! line, a `log-format` template with uWSGI's variables, or one JSON object).
//!
//! Pure: an [`Entry`] in, bytes appended to a buffer out.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::net::Endpoint;

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
    /// The client (a line shows its IP address without the port, or its name).
    pub addr: &'a Endpoint,
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
    /// When it ended, on the monotonic clock (the line shows the time of day
    /// it maps to: see [`Cache::wall_micros`]).
    pub at: Instant,
}

/// Appends `entry`'s line (with its newline) to `out`. Written piece by piece
/// (integers with `itoa`; the time, the address and uWSGI's head from this
/// thread's [`Cache`]), not through `core::fmt`: a line is written for every
/// request, and the formatting machinery cost more than all the rest of
/// logging it. Instructions a request costs on top of one not logged
/// (`benches/reqlog_instructions.sh`): uWSGI's line ~1130 and JSON ~2520
/// (~1550 and ~3070 before the cache).
pub fn write_line(format: &LogFormat, e: &Entry<'_>, out: &mut String) {
    thread_local! {
        static CACHE: std::cell::RefCell<Cache> = std::cell::RefCell::new(Cache::default());
    }
    let written = CACHE.try_with(|c| match c.try_borrow_mut() {
        Ok(mut c) => write_with(&mut c, format, e, out),
        Err(_) => write_with(&mut Cache::default(), format, e, out),
    });
    if written.is_err() {
        // The thread is ending (a request dropped by a thread-local's
        // destructor): without the cache.
        write_with(&mut Cache::default(), format, e, out);
    }
}

/// What a thread's lines reuse from one to the next: the wall clock's base,
/// the text of the last client address, and uWSGI's line up to the method
/// (the same for every request from one address within a second).
#[derive(Default)]
pub struct Cache {
    /// A monotonic time and the wall clock then, in microseconds since the
    /// Unix epoch (read at most once a second).
    wall: Option<(Instant, u64)>,
    /// The last IP address shown, and its text.
    ip: Option<IpAddr>,
    ip_text: String,
    /// uWSGI's `[pid: N|app: 0|req: -/-] ADDR () {0 vars in 0 bytes} [CTIME] `,
    /// and the pid, address and second it is for.
    head: String,
    head_for: Option<(u32, IpAddr, u64)>,
    /// `ctime` of this second (`%(ltime)`).
    ctime: (u64, String),
}

impl Cache {
    /// The wall clock at `at`, in microseconds since the Unix epoch:
    /// `SystemTime::now()` once a second, and in between the monotonic time
    /// already read for the request's duration, added to it (a line needs the
    /// time of day to the microsecond at most, and reading two clocks per
    /// request costs).
    pub fn wall_micros(&mut self, at: Instant) -> u64 {
        if let Some((base, wall)) = self.wall {
            if let Some(d) = at.checked_duration_since(base) {
                if d < Duration::from_secs(1) {
                    return wall + d.as_micros() as u64;
                }
            }
        }
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        self.wall = Some((at, wall));
        wall
    }

    /// The text of `ip` (made again when it differs from the last one's).
    fn ip_text(&mut self, ip: IpAddr) -> &str {
        self.refresh_ip(ip);
        &self.ip_text
    }

    fn refresh_ip(&mut self, ip: IpAddr) {
        if self.ip != Some(ip) {
            self.ip = Some(ip);
            self.ip_text.clear();
            push_ip(&mut self.ip_text, ip);
        }
    }

    /// `ctime` of `secs` (made again when the second changed).
    fn ctime(&mut self, secs: u64) -> &str {
        self.refresh_ctime(secs);
        &self.ctime.1
    }

    fn refresh_ctime(&mut self, secs: u64) {
        if self.ctime.0 != secs || self.ctime.1.is_empty() {
            self.ctime = (secs, ctime_of(secs));
        }
    }

    /// Appends uWSGI's line up to the method.
    fn push_uwsgi_head(&mut self, pid: u32, addr: &Endpoint, secs: u64, out: &mut String) {
        let Some(ip) = addr.ip() else {
            let name = match addr {
                Endpoint::Named(n) => n,
                _ => "",
            };
            return push_uwsgi_head(out, pid, name, self.ctime(secs));
        };
        if self.head_for != Some((pid, ip, secs)) {
            self.refresh_ip(ip);
            self.refresh_ctime(secs);
            self.head.clear();
            push_uwsgi_head(&mut self.head, pid, &self.ip_text, &self.ctime.1);
            self.head_for = Some((pid, ip, secs));
        }
        out.push_str(&self.head);
    }
}

fn push_uwsgi_head(out: &mut String, pid: u32, addr: &str, ctime: &str) {
    out.push_str("[pid: ");
    out.push_str(itoa::Buffer::new().format(pid));
    out.push_str("|app: 0|req: -/-] ");
    out.push_str(addr);
    out.push_str(" () {0 vars in 0 bytes} [");
    out.push_str(ctime);
    out.push_str("] ");
}

/// Appends the text of `ip` (IPv4 without `core::fmt`).
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(n.format(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

fn write_with(c: &mut Cache, format: &LogFormat, e: &Entry<'_>, out: &mut String) {
    let mut n = itoa::Buffer::new();
    let at = c.wall_micros(e.at);
    let secs = at / 1_000_000;
    match format {
        LogFormat::Uwsgi => {
            c.push_uwsgi_head(e.pid, e.addr, secs, out);
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
            out.push_str("{\"time\":");
            out.push_str(n.format(secs));
            out.push('.');
            let micros = n.format(at % 1_000_000);
            out.push_str(&"000000"[micros.len()..]);
            out.push_str(micros);
            out.push_str(",\"pid\":");
            out.push_str(n.format(e.pid));
            out.push_str(",\"wid\":");
            out.push_str(n.format(e.wid));
            out.push_str(",\"addr\":\"");
            match e.addr {
                // An address's text needs no escape.
                Endpoint::Tcp(_) | Endpoint::Ip(_) => {
                    out.push_str(e.addr.ip().map_or("", |ip| c.ip_text(ip)));
                    out.push('"');
                }
                Endpoint::Named(name) => push_json_rest(out, name),
            }
            for (key, text) in [(",\"method\":\"", e.method), (",\"uri\":\"", e.uri), (",\"proto\":\"", e.proto)] {
                out.push_str(key);
                push_json_rest(out, text);
            }
            for (key, v) in [(",\"status\":", u64::from(e.status)), (",\"size\":", e.size), (",\"micros\":", e.micros)]
            {
                out.push_str(key);
                out.push_str(n.format(v));
            }
            for (key, text) in [(",\"host\":\"", e.host), (",\"uagent\":\"", e.uagent), (",\"referer\":\"", e.referer)]
            {
                out.push_str(key);
                push_json_rest(out, text);
            }
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
                        Var::Addr => match e.addr {
                            Endpoint::Named(name) => out.push_str(name),
                            _ => out.push_str(e.addr.ip().map_or("", |ip| c.ip_text(ip))),
                        },
                        Var::Host => out.push_str(e.host),
                        Var::Proto => out.push_str(e.proto),
                        Var::Uagent => out.push_str(e.uagent),
                        Var::Referer => out.push_str(e.referer),
                        Var::Pid => out.push_str(n.format(e.pid)),
                        Var::Wid => out.push_str(n.format(e.wid)),
                        Var::Ltime => out.push_str(c.ctime(secs)),
                        Var::Epoch => out.push_str(n.format(secs)),
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

/// Appends the rest of a JSON string literal of `s`, after its opening quote
/// (which comes with the key before it).
fn push_json_rest(out: &mut String, s: &str) {
    // Bytes, not chars: every byte that needs an escape is ASCII. Most text
    // (a method, a path, a host) has none: one pass that looks at every byte
    // without stopping (the compiler does it 16 bytes at a time), then one copy.
    fn plain(b: u8) -> bool {
        b >= 0x20 && b != b'"' && b != b'\\'
    }
    if s.bytes().fold(true, |all, b| all & plain(b)) {
        out.push_str(s);
        out.push('"');
        return;
    }
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

/// `Tue Dec  1 03:32:41 2026` (UTC), as uWSGI's default line shows the time.
pub fn ctime(t: SystemTime) -> String {
    ctime_of(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
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

    static LOCALHOST: Endpoint = Endpoint::Ip(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    /// Tue Dec  1 03:32:41 2026 UTC, in microseconds.
    const WALL: u64 = 1_796_095_961_000_000;

    fn entry(at: Instant) -> Entry<'static> {
        Entry {
            pid: 42,
            wid: 3,
            addr: &LOCALHOST,
            method: "GET",
            uri: "/a?b=1",
            proto: "HTTP/1.1",
            status: 200,
            size: 13,
            micros: 2500,
            host: "example.org",
            uagent: "curl/8",
            referer: "",
            at,
        }
    }

    /// A line, with the wall clock at `at` set to [`WALL`] plus `plus` µs.
    fn line(format: &LogFormat, e: &Entry<'_>, plus: u64) -> String {
        let mut cache = Cache { wall: Some((e.at, WALL + plus)), ..Cache::default() };
        let mut out = String::new();
        write_with(&mut cache, format, e, &mut out);
        out
    }

    #[test]
    fn the_three_formats() {
        let now = Instant::now();
        let uwsgi = "[pid: 42|app: 0|req: -/-] 127.0.0.1 () {0 vars in 0 bytes} [Tue Dec  1 03:32:41 2026] GET /a?b=1 => generated 13 bytes in 2 msecs (HTTP/1.1 200) 0 headers in 0 bytes (1 switches on core 0)\n";
        assert_eq!(line(&LogFormat::Uwsgi, &entry(now), 0), uwsgi);
        let t = Template::parse(
            "%(addr) %(method) %(uri) %(status) %(size) %(msecs) %(micros) %(host) \"%(uagent)\" w%(wid) %(epoch) %(ltime)",
        )
        .unwrap();
        assert_eq!(
            line(&LogFormat::Template(t), &entry(now), 0),
            "127.0.0.1 GET /a?b=1 200 13 2 2500 example.org \"curl/8\" w3 1796095961 Tue Dec  1 03:32:41 2026\n"
        );
        let out = line(&LogFormat::Json, &Entry { uri: "/\"x\"", ..entry(now) }, 0);
        assert!(out.contains("\"uri\":\"/\\\"x\\\"\",\"proto\":\"HTTP/1.1\",\"status\":200"), "{out}");
        assert_eq!(
            line(&LogFormat::Json, &Entry { uagent: "a\\b\u{1}c\"", ..entry(now) }, 5),
            "{\"time\":1796095961.000005,\"pid\":42,\"wid\":3,\"addr\":\"127.0.0.1\",\"method\":\"GET\",\"uri\":\"/a?b=1\",\
             \"proto\":\"HTTP/1.1\",\"status\":200,\"size\":13,\"micros\":2500,\"host\":\"example.org\",\
             \"uagent\":\"a\\\\b\\u0001c\\\"\",\"referer\":\"\"}\n"
        );
        // A named client (a Unix socket's path, nginx's `unix:`) is escaped.
        let named = Endpoint::Named("unix:\"/run\"".into());
        let out = line(&LogFormat::Json, &Entry { addr: &named, ..entry(now) }, 0);
        assert!(out.contains(",\"addr\":\"unix:\\\"/run\\\"\","), "{out}");
        let out = line(&LogFormat::Uwsgi, &Entry { addr: &named, ..entry(now) }, 0);
        assert!(out.starts_with("[pid: 42|app: 0|req: -/-] unix:\"/run\" () {0 vars"), "{out}");
        assert!(Template::parse("%(nope)").unwrap_err().contains("unknown variable %(nope)"));
    }

    #[test]
    fn the_cached_head_follows_the_address_the_second_and_the_pid() {
        let now = Instant::now();
        let mut cache = Cache { wall: Some((now, WALL)), ..Cache::default() };
        let other = Endpoint::Tcp("[2001:db8::1]:443".parse().unwrap());
        let mut out = String::new();
        for e in [
            entry(now),
            Entry { addr: &other, ..entry(now) },
            Entry { pid: 7, ..entry(now) },
            entry(now + Duration::from_millis(999)),
            entry(now + Duration::from_millis(1000)),
        ] {
            write_with(&mut cache, &LogFormat::Uwsgi, &e, &mut out);
        }
        let heads: Vec<&str> = out.lines().map(|l| l.split(" GET ").next().unwrap()).collect();
        assert_eq!(
            heads,
            [
                "[pid: 42|app: 0|req: -/-] 127.0.0.1 () {0 vars in 0 bytes} [Tue Dec  1 03:32:41 2026]",
                "[pid: 42|app: 0|req: -/-] 2001:db8::1 () {0 vars in 0 bytes} [Tue Dec  1 03:32:41 2026]",
                "[pid: 7|app: 0|req: -/-] 127.0.0.1 () {0 vars in 0 bytes} [Tue Dec  1 03:32:41 2026]",
                "[pid: 42|app: 0|req: -/-] 127.0.0.1 () {0 vars in 0 bytes} [Tue Dec  1 03:32:41 2026]",
                // A second later the wall clock is read again: today's date.
                &format!("[pid: 42|app: 0|req: -/-] 127.0.0.1 () {{0 vars in 0 bytes}} [{}]", ctime(SystemTime::now())),
            ]
        );
    }

    #[test]
    fn addresses_as_lines_show_them() {
        let mut cache = Cache::default();
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.20.3.4",
            "::1",
            "2001:db8::ff00:42:8329",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(cache.ip_text(parsed), parsed.to_string());
            assert_eq!(cache.ip_text(parsed), parsed.to_string());
        }
        assert_eq!(pid(), std::process::id());
    }

    #[test]
    fn the_wall_clock_follows_the_monotonic_one() {
        let mut cache = Cache::default();
        let start = Instant::now();
        let a = cache.wall_micros(start);
        let b = cache.wall_micros(start + Duration::from_millis(300));
        assert_eq!(b - a, 300_000);
        let real = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
        assert!(real.abs_diff(a) < 100_000, "{a} vs {real}");
        // Past a second, or before the base, the wall clock is read again.
        let c = cache.wall_micros(start + Duration::from_secs(2));
        let real = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
        assert!(real.abs_diff(c) < 100_000, "{c} vs {real}");
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
