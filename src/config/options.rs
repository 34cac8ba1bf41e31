//! The table of every option the pool knows, in uWSGI's vocabulary, and the ordered
//! option list that all sources (command line, YAML and INI files) produce.
//!
//! The list is deliberately independent of where an option came from: each entry
//! carries its [`Origin`] only so that errors and `--check-config` can point at it.
//!
//! Every option has a [`Kind`] saying what the pool does with it. Besides the options
//! the pool implements, the table holds the uWSGI options an operator's existing
//! configuration is likely to contain, so that such a file loads and each of its
//! options gets a precise answer (application side, not implemented yet, …) instead
//! of "unknown option".

use std::fmt;
use std::fmt::Write as _;
use std::path::PathBuf;

/// How an option takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// A boolean flag: `--die-on-term`; in files `die-on-term = false` turns it off.
    Flag,
    /// Needs a value: `--http 127.0.0.1:8080` or `--http=127.0.0.1:8080`.
    Value,
    /// The value is optional and only given with `=` on the command line.
    OptionalValue,
}

/// What the pool does with an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Implemented by the pool.
    Pool,
    /// Accepted without effect because the pool always behaves the way the option asks
    /// (`master`, `die-on-term`, `strict`, `vacuum`).
    Accepted,
    /// Accepted and ignored because the pool does the job another way
    /// (`offload-threads`); noted once at start.
    Superseded,
    /// Configures uWSGI's application side (`module`, `processes`, …), which here
    /// belongs to the zerglings; reported once, together, and ignored.
    Application,
    /// A uWSGI option the pool will implement but does not yet; the configuration
    /// loads, the option is reported once and has no effect.
    Planned,
    /// Defines a name for `%(name)` placeholders (`set-placeholder = name=value`).
    Placeholder,
    /// Only meaningful on the command line (`--help`, `--yaml`, `--check-config`, …).
    CommandLine,
}

/// One known option.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// The name, without dashes.
    pub name: &'static str,
    /// How it takes its value.
    pub arity: Arity,
    /// Whether repeating it accumulates values (otherwise the last one wins).
    pub repeatable: bool,
    /// What the pool does with it.
    pub kind: Kind,
    /// The value's shape, for `--help`.
    pub metavar: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
}

const fn opt(
    name: &'static str,
    arity: Arity,
    repeatable: bool,
    kind: Kind,
    metavar: &'static str,
    help: &'static str,
) -> OptionSpec {
    OptionSpec { name, arity, repeatable, kind, metavar, help }
}

/// An option the pool implements.
const fn pool(name: &'static str, arity: Arity, rep: bool, metavar: &'static str, help: &'static str) -> OptionSpec {
    opt(name, arity, rep, Kind::Pool, metavar, help)
}

/// A flag accepted without effect.
const fn accepted(name: &'static str, help: &'static str) -> OptionSpec {
    opt(name, Arity::Flag, false, Kind::Accepted, "", help)
}

/// An option that only works on the command line; files and flags may repeat.
const fn command_line(name: &'static str, arity: Arity, metavar: &'static str, help: &'static str) -> OptionSpec {
    opt(name, arity, matches!(arity, Arity::Value), Kind::CommandLine, metavar, help)
}

/// A uWSGI option for the application side.
const fn app(name: &'static str, arity: Arity, rep: bool) -> OptionSpec {
    opt(name, arity, rep, Kind::Application, "", "")
}

/// A uWSGI option the pool does not implement yet.
const fn planned(name: &'static str, arity: Arity, rep: bool) -> OptionSpec {
    opt(name, arity, rep, Kind::Planned, "", "")
}

use Arity::{Flag, OptionalValue, Value};

/// Every option the pool accepts, in the order `--help` shows them.
// A table: one option per line reads best, so rustfmt leaves it alone.
#[rustfmt::skip]
pub const OPTIONS: &[OptionSpec] = &[
    // Implemented by the pool.
    pool("http", Value, true, "ADDR", "HTTP/1.1 listener: 127.0.0.1:8080, :8080 (all interfaces), [::1]:8080 or =N (shared-socket N)"),
    pool("shared-socket", Value, true, "ADDR", "declare an address that `http = =N` refers to (N counts shared-socket lines from 0)"),
    pool("http-to-https", Value, true, "ADDR", "listener answering every request with 301 to the https URL (=N for shared-socket N)"),
    pool("uid", Value, false, "USER", "after binding, run as this user (name or number)"),
    pool("gid", Value, false, "GROUP", "after binding, run as this group (default: the uid's primary group)"),
    pool("https", Value, true, "ADDR,CERT,KEY[,CIPHERS[,CA]]", "HTTPS listener, TLS terminated by the pool (CA: verify client certificates; !CA: require them)"),
    pool("sni", Value, true, "NAME,CERT,KEY", "another certificate for the https listeners, chosen by SNI name"),
    pool("http2", Flag, false, "", "offer HTTP/2 (ALPN h2) on the https listeners"),
    pool("static-map2", Value, true, "/MOUNT=DIR", "like static-map, with the whole request path appended to DIR"),
    pool("static-index", Value, true, "NAME", "file served for a directory (index.html); repeatable, first found wins"),
    pool("static-safe", Value, true, "DIR", "a folder symlinks in mapped folders may point into"),
    pool("static-expires", Value, true, "REGEX SECS", "Expires/Cache-Control max-age for files whose path matches REGEX"),
    pool("static-expires-uri", Value, true, "REGEX SECS", "Expires/Cache-Control max-age for request paths matching REGEX"),
    pool("static-gzip-all", Flag, false, "", "serve FILE.br / FILE.gz beside FILE when the client accepts it"),
    pool("static-gzip-dir", Value, true, "DIR", "like static-gzip-all for files under DIR"),
    pool("static-gzip-ext", Value, true, "EXT", "like static-gzip-all for files ending in EXT"),
    pool("honour-range", Flag, false, "", "accepted: Range requests are always honoured"),
    pool("static-cache-paths", Value, false, "SECS", "how long a resolved static path stays cached, files kept open (default 1; 0: off)"),
    pool("socket", Value, true, "ADDR", "uwsgi-protocol listener (for nginx's uwsgi_pass): 127.0.0.1:3031, :3031, [::1]:3031, a Unix path, or =N"),
    pool("uwsgi-socket", Value, true, "ADDR", "the same as socket"),
    pool("chmod-socket", OptionalValue, false, "[MODE]", "file mode of the uwsgi Unix sockets (octal; no value means 666)"),
    pool("chown-socket", Value, false, "USER[:GROUP]", "owner of the uwsgi Unix sockets (applied before the privilege drop)"),
    pool("listen", Value, false, "N", "listen backlog of every listener (default 100, clamped to net.core.somaxconn)"),
    pool("buffer-size", Value, false, "BYTES", "largest request head, at most 65536: HTTP (default 8192) and uwsgi packet (default 4096, at most 65535)"),
    pool("http-timeout", Value, false, "SECS", "most time a connection may make no progress: a request head, a stalled body, a client not reading (default 60)"),
    pool("http-keepalive", OptionalValue, false, "[SECS]", "idle keep-alive connections close after SECS (default 75); keep-alive is always on"),
    pool("static-map", Value, true, "/MOUNT=DIR", "serve the files under DIR at the URL path MOUNT"),
    pool("zerg-server", Value, false, "PATH", "Unix socket zerglings attach to (default: a per-pool path under /tmp)"),
    pool("chmod-zerg-server", Value, false, "MODE", "file mode of the zerg-server socket, octal (default 600)"),
    pool("zerg-allow-uid", Value, true, "UID", "a further user (name or number) allowed to attach; root and the pool's own uid always are"),
    pool("zerg-direct-accept", Flag, false, "", "zerglings accept on the uwsgi sockets themselves while any is ready (the pool accepts when none is): behind nginx the pool is out of the data path"),
    pool("stats", Value, false, "ADDR", "serve uWSGI's stats JSON document on ADDR (host:port, :port, or a Unix socket path) to each connection, as uwsgitop reads it"),
    pool("stats-server", Value, false, "ADDR", "the same as stats"),
    pool("logto", Value, false, "PATH", "append the log (the pool's and its zerglings' output) to PATH, opened before dropping privileges; reopened on SIGUSR1"),
    pool("logto2", Value, false, "PATH", "the same, opened after dropping privileges"),
    pool("daemonize", Value, false, "PATH", "run in the background, logging to PATH (opened before dropping privileges); not under systemd or supervisord, which want the foreground"),
    pool("daemonize2", Value, false, "PATH", "the same, PATH opened after dropping privileges"),
    pool("disable-logging", Flag, false, "", "no request log lines (uWSGI logs every request by default)"),
    pool("log-4xx", Flag, false, "", "with disable-logging, still log requests answered 4xx"),
    pool("log-5xx", Flag, false, "", "with disable-logging, still log requests answered 5xx"),
    pool("log-slow", Value, false, "MSECS", "with disable-logging, still log requests slower than MSECS"),
    pool("log-format", Value, false, "FORMAT", "request log lines with uWSGI's variables: %(uri) %(method) %(status) %(size) %(msecs) %(micros) %(addr) %(host) %(proto) %(uagent) %(referer) %(pid) %(wid) %(ltime) %(epoch)"),
    pool("logformat", Value, false, "FORMAT", "the same as log-format"),
    pool("log-json", Flag, false, "", "request log lines as one JSON object each"),
    pool("log-reopen", Flag, false, "", "reopen the log file at every reload"),
    pool("touch-logreopen", Value, true, "FILE", "reopen the log file when FILE is touched"),
    pool("pidfile", Value, false, "PATH", "write the pool's pid to PATH before dropping privileges (removed at exit)"),
    pool("pidfile2", Value, false, "PATH", "write the pool's pid to PATH after dropping privileges (removed at exit)"),
    pool("safe-pidfile", Value, false, "PATH", "write the pool's pid to PATH atomically (a temporary file renamed) before dropping privileges"),
    pool("metrics", Value, false, "ADDR", "serve Prometheus metrics (GET /metrics) and health (GET /health: 200 while a zergling is ready, else 503) over HTTP on ADDR (host:port)"),
    pool("stats-http", Flag, false, "", "answer on the stats address with an HTTP response (as uWSGI: HTTP/1.0, Content-Type: application/json)"),
    pool("stats-minified", Flag, false, "", "write the stats document on one line"),
    pool("events", Value, false, "PATH", "write one JSON line per event for machines (listening, ready, attached, detached, reload-complete, stopped) to PATH, or to stdout with -"),
    pool("zerg-direct-accept-http", Flag, false, "", "zerglings accept on the plain http listeners themselves too while any is ready (not https, not http-to-https): no hand-off per connection; the pool's first-request checks and connection limit then do not apply to those connections"),
    pool("zerg-queue", Value, false, "N", "connections waiting for a zergling at most (default 1024); past it: 503"),
    pool("zerg-queue-timeout", Value, false, "SECS", "longest wait for a zergling (default 30); past it: 503"),
    pool("zerg-max-connections", Value, false, "N", "most connections the pool holds at once (default: from the descriptor limit, keeping a reserve); at it the pool stops accepting and closes the longest-waiting idle or slow heads first"),
    pool("max-fd", Value, false, "N", "set the descriptor limit (RLIMIT_NOFILE) to N at start; above the hard limit needs root (default: raise the soft limit to the hard one)"),
    pool("zerg-ack-timeout", Value, false, "SECS", "time a zergling has to take a connection (default 5); past it, it is stuck: detached, its connections sent elsewhere, killed and respawned if spawned"),
    pool("zergling", Value, true, "COMMAND", "spawn and supervise a zergling (split into words, no shell)"),
    pool("reload-mercy", Value, false, "SECS", "how long spawned zerglings get to exit on stop before SIGKILL (default 30)"),
    pool("worker-reload-mercy", Value, false, "SECS", "how long an old zergling may drain during a chain reload before SIGKILL (default 60)"),
    pool("zerg-attach-timeout", Value, false, "SECS", "how long a replacement zergling has to attach during a chain reload (default 60)"),
    pool("touch-reload", Value, true, "FILE", "reload the zerglings one by one when FILE is touched"),
    pool("touch-chain-reload", Value, true, "FILE", "the same as touch-reload (chain reloading is the only kind)"),
    pool("master-fifo", Value, false, "PATH", "a FIFO taking uWSGI's one-letter commands (r, c, w: chain reload; q: graceful stop; Q: immediate stop)"),
    pool("hook-master-start", Value, true, "unix_signal:N FUNCTION", "make signal N run FUNCTION: gracefully_kill_them_all, kill_them_all, grace_them_all or reap_them_all"),
    accepted("die-on-term", "accepted for uWSGI compatibility (SIGTERM stops gracefully unless a hook says otherwise)"),
    accepted("master", "accepted for uWSGI compatibility (the pool is always a master)"),
    accepted("strict", "accepted for uWSGI compatibility (unknown options are always errors)"),
    accepted("vacuum", "accepted for uWSGI compatibility (the pool always removes the sockets it created)"),
    opt("offload-threads", Value, false, Kind::Superseded, "N", "ignored: the pool serves static files from its own runtime"),
    opt("set-placeholder", Value, true, Kind::Placeholder, "NAME=VALUE", "define NAME for %(NAME) placeholders"),
    opt("set-ph", Value, true, Kind::Placeholder, "NAME=VALUE", "short for set-placeholder"),
    command_line("yaml", Value, "FILE[:SECTION]", "read options from the SECTION (default uwsgi) of a YAML file, in uWSGI's dialect"),
    command_line("ini", Value, "FILE[:SECTION]", "read options from the [SECTION] (default uwsgi) of an INI file"),
    command_line("check-config", Flag, "", "print the effective options and where each came from, then exit (0, or 64 on error)"),
    command_line("print-options", Flag, "", "print the options as read (files, placeholders expanded), one JSON object per line, without giving them a meaning; for programs such as the zergling command that read the same files"),
    command_line("help", Flag, "", "print this list and exit"),
    command_line("version", Flag, "", "print the version and exit"),
    // uWSGI options the pool will implement: listeners, static files, privileges, control.
    planned("http-socket", Value, true),
    planned("check-static", Value, true),
    planned("mime-file", Value, true),
    planned("umask", Value, false),
    // uWSGI's application side: the zerglings' business.
    app("module", Value, false),
    app("wsgi-file", Value, false),
    app("wsgi", Value, false),
    opt("interface", Value, false, Kind::Application, "wsgi|asgi|auto", "the Python application's interface (default auto: an async callable is ASGI)"),
    opt("lifespan", Value, false, Kind::Application, "auto|on|off", "the ASGI lifespan protocol (default auto: used when the application speaks it)"),
    opt("asgi-loop", Value, false, Kind::Application, "auto|asyncio|uvloop", "the ASGI event loop (default auto: uvloop when installed)"),
    app("callable", Value, false),
    app("mount", Value, true),
    app("manage-script-name", Flag, false),
    app("virtualenv", Value, false),
    app("venv", Value, false),
    app("home", Value, false),
    app("pyhome", Value, false),
    app("pythonpath", Value, true),
    app("python-path", Value, true),
    app("pp", Value, true),
    app("chdir", Value, false),
    app("env", Value, true),
    app("plugins", Value, true),
    app("plugin", Value, true),
    app("need-app", Flag, false),
    app("single-interpreter", Flag, false),
    app("py-autoreload", Value, false),
    app("py-call-osafterfork", Flag, false),
    app("processes", Value, false),
    app("workers", Value, false),
    app("threads", Value, false),
    app("enable-threads", Flag, false),
    app("thunder-lock", Flag, false),
    app("lazy-apps", Flag, false),
    app("lazy", Flag, false),
    app("cheaper", Value, false),
    app("harakiri", Value, false),
    app("max-requests", Value, false),
    app("reload-on-rss", Value, false),
    app("mule", OptionalValue, true),
    app("mules", Value, false),
    app("farm", Value, true),
];

/// Looks an option up by name.
pub fn spec(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|o| o.name == name)
}

/// The known option whose name is nearest to `name`, if any is reasonably near.
pub fn nearest(name: &str) -> Option<&'static str> {
    OPTIONS
        .iter()
        .map(|o| (strsim::damerau_levenshtein(name, o.name), o.name))
        .filter(|(d, candidate)| {
            *d <= 3.max(candidate.len() / 3)
                || (candidate.len() > 3 && (candidate.starts_with(name) || name.starts_with(candidate)))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Where an option was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// On the command line, as the n-th argument (1-based).
    CommandLine(usize),
    /// In a file, at a line (1-based).
    File {
        /// The file, as it was named on the command line.
        path: PathBuf,
        /// The line.
        line: usize,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::CommandLine(n) => write!(f, "command line (argument {n})"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
        }
    }
}

/// An option list from `(key, value)` pairs, as if given on the command line
/// (argument 1, 2, …): for unit tests of what reads options.
#[cfg(test)]
pub(crate) fn command_line_list(pairs: &[(&str, &str)]) -> OptionList {
    OptionList(
        pairs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| ConfigOption {
                key: (*k).into(),
                value: (*v).into(),
                origin: Origin::CommandLine(i + 1),
            })
            .collect(),
    )
}

/// One option as given by some source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigOption {
    /// The option's name, without dashes.
    pub key: String,
    /// Its value, placeholders expanded; `""` for a flag given without one.
    pub value: String,
    /// Where it was given.
    pub origin: Origin,
}

/// The ordered list of options all sources produce; later entries win for
/// single-valued options, repeated entries accumulate for repeatable ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionList(pub Vec<ConfigOption>);

impl OptionList {
    /// The last value given for `key`.
    pub fn last(&self, key: &str) -> Option<&ConfigOption> {
        self.0.iter().rev().find(|o| o.key == key)
    }

    /// Every value given for `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a ConfigOption> + 'a {
        self.0.iter().filter(move |o| o.key == key)
    }

    /// The list as `--check-config` prints it: INI, one `key = value` line per entry,
    /// each preceded by a comment saying where it came from and, for options the pool
    /// does not act on, why.
    pub fn render(&self) -> String {
        let mut out = String::from("; effective options, in order (zergpool --check-config)\n[uwsgi]\n");
        for o in &self.0 {
            let note = match spec(&o.key).map(|s| s.kind) {
                Some(Kind::Application) => " (application side: ignored)",
                Some(Kind::Planned) => " (not implemented yet: ignored)",
                Some(Kind::Superseded) => " (ignored)",
                _ => "",
            };
            // Writing to a String cannot fail.
            let _ = writeln!(out, "; {}{note}\n{} = {}", o.origin, o.key, o.value);
        }
        out
    }
}

/// uWSGI's boolean rule: true unless `false`, `off`, `no` (any case) or `0`.
pub fn truthy(value: &str) -> bool {
    !(value.eq_ignore_ascii_case("false")
        || value.eq_ignore_ascii_case("off")
        || value.eq_ignore_ascii_case("no")
        || value == "0")
}

/// The `--help` text: every option the pool acts on with one line each, then the
/// recognised uWSGI options it does not act on, as lists of names.
pub fn help_text() -> String {
    let mut out = String::from(
        "zergpool: a zero-downtime front-end for application servers (uWSGI Zerg mode, done properly)\n\n\
         usage: zergpool [--option VALUE | --option=VALUE | --flag | FILE.yml | FILE.ini]...\n\n\
         Options, files (--yaml, --ini, or a bare FILE.yml/.yaml/.ini) and flags combine in the order given.\n\n\
         options:\n",
    );
    for o in OPTIONS.iter().filter(|o| !matches!(o.kind, Kind::Application | Kind::Planned)) {
        let left = if o.metavar.is_empty() { format!("--{}", o.name) } else { format!("--{} {}", o.name, o.metavar) };
        let rep = if o.repeatable { " (repeatable)" } else { "" };
        let _ = writeln!(out, "  {left:<32} {}{rep}", o.help);
    }
    out.push_str("\nuWSGI options recognised but not implemented yet (reported at start, no effect):\n");
    out.push_str(&name_list(Kind::Planned));
    out.push_str("\nuWSGI application options (reported at start and ignored: they configure the zerglings):\n");
    out.push_str(&name_list(Kind::Application));
    out.push_str(
        "\nSignals: SIGTERM/SIGINT stop gracefully, SIGQUIT or a second signal stops at once, SIGHUP reloads\n\
         gracefully; hook-master-start = unix_signal:N FUNCTION changes what signal N does.\n",
    );
    out
}

/// The names of every option of one kind, wrapped.
fn name_list(kind: Kind) -> String {
    let mut out = String::new();
    let mut line = String::from(" ");
    for o in OPTIONS.iter().filter(|o| o.kind == kind) {
        if line.len() + o.name.len() > 96 {
            out.push_str(&line);
            out.push('\n');
            line = String::from(" ");
        }
        line.push(' ');
        line.push_str(o.name);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_names_a_typo() {
        assert_eq!(nearest("htpp"), Some("http"));
        assert_eq!(nearest("zerg-servr"), Some("zerg-server"));
        assert_eq!(nearest("zerg-queue-timout"), Some("zerg-queue-timeout"));
        assert_eq!(nearest("static-mpa"), Some("static-map"));
        assert_eq!(nearest("completely-unrelated-thing"), None);
    }

    #[test]
    fn booleans_follow_uwsgi() {
        for f in ["false", "OFF", "No", "0"] {
            assert!(!truthy(f), "{f}");
        }
        for t in ["", "true", "1", "yes", "anything"] {
            assert!(truthy(t), "{t}");
        }
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in OPTIONS.iter().enumerate() {
            assert!(OPTIONS[i + 1..].iter().all(|b| b.name != a.name), "{} twice", a.name);
        }
    }

    #[test]
    fn render_says_where_and_why() {
        let list = OptionList(vec![
            ConfigOption { key: "http".into(), value: ":80".into(), origin: Origin::CommandLine(2) },
            ConfigOption {
                key: "module".into(),
                value: "app:app".into(),
                origin: Origin::File { path: "a.yml".into(), line: 3 },
            },
        ]);
        let text = list.render();
        assert!(text.contains("; command line (argument 2)\nhttp = :80\n"), "{text}");
        assert!(text.contains("; a.yml:3 (application side: ignored)\nmodule = app:app\n"), "{text}");
    }
}
