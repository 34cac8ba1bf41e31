//! Request log lines, written by whoever answered the request (the zergling
//! library for the application's requests, the pool for its own answers):
//! which requests are logged ([`LogPolicy`], uWSGI's `disable-logging`,
//! `log-4xx`, `log-5xx`, `log-slow`), and how ([`LogFormat`]: uWSGI's default
//! line, a `log-format` template with uWSGI's variables, or one JSON object).
//!
//! Pure: an [`Entry`] in, bytes appended to a buffer out.

use std::fmt::Write as _;
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

/// Appends `entry`'s line (with its newline) to `out`.
pub fn write_line(format: &LogFormat, e: &Entry<'_>, out: &mut String) {
    match format {
        LogFormat::Uwsgi => {
            let _ = writeln!(
                out,
                "[pid: {}|app: 0|req: -/-] {} () {{0 vars in 0 bytes}} [{}] {} {} => generated {} bytes in {} msecs ({} {}) 0 headers in 0 bytes (1 switches on core 0)",
                e.pid,
                e.addr,
                Ctime(e.at),
                e.method,
                e.uri,
                e.size,
                e.micros / 1000,
                e.proto,
                e.status
            );
        }
        LogFormat::Json => {
            let epoch = e.at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            let _ = write!(
                out,
                "{{\"time\":{epoch:.6},\"pid\":{},\"wid\":{},\"addr\":{},\"method\":{},\"uri\":{},\"proto\":{},\"status\":{},\"size\":{},\"micros\":{},\"host\":{},\"uagent\":{},\"referer\":{}}}",
                e.pid,
                e.wid,
                json_str(e.addr),
                json_str(e.method),
                json_str(e.uri),
                json_str(e.proto),
                e.status,
                e.size,
                e.micros,
                json_str(e.host),
                json_str(e.uagent),
                json_str(e.referer),
            );
            out.push('\n');
        }
        LogFormat::Template(t) => {
            for part in &t.parts {
                match part {
                    Part::Text(s) => out.push_str(s),
                    Part::Var(v) => {
                        let _ = match v {
                            Var::Uri => write!(out, "{}", e.uri),
                            Var::Method => write!(out, "{}", e.method),
                            Var::Status => write!(out, "{}", e.status),
                            Var::Size => write!(out, "{}", e.size),
                            Var::Msecs => write!(out, "{}", e.micros / 1000),
                            Var::Micros => write!(out, "{}", e.micros),
                            Var::Addr => write!(out, "{}", e.addr),
                            Var::Host => write!(out, "{}", e.host),
                            Var::Proto => write!(out, "{}", e.proto),
                            Var::Uagent => write!(out, "{}", e.uagent),
                            Var::Referer => write!(out, "{}", e.referer),
                            Var::Pid => write!(out, "{}", e.pid),
                            Var::Wid => write!(out, "{}", e.wid),
                            Var::Ltime => write!(out, "{}", Ctime(e.at)),
                            Var::Epoch => write!(out, "{}", e.at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())),
                        };
                    }
                }
            }
            out.push('\n');
        }
    }
}

/// Writes [`ctime`] without a copy of the cached text.
struct Ctime(SystemTime);

impl std::fmt::Display for Ctime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        thread_local! {
            static LAST: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
        }
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            if last.0 != secs {
                *last = (secs, ctime_of(secs));
            }
            f.write_str(&last.1)
        })
    }
}

/// A JSON string literal of `s`.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `Tue Dec  1 03:32:41 2026` (UTC), as uWSGI's default line shows the time;
/// made once a second per thread.
pub fn ctime(t: SystemTime) -> String {
    Ctime(t).to_string()
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
        assert!(Template::parse("%(nope)").unwrap_err().contains("unknown variable %(nope)"));
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
