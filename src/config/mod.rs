//! Configuration: option sources → one ordered [`OptionList`] → one typed [`Config`].
//!
//! ```text
//! argv ─► cli ─┬─ --http …, --flag ───────────────────────┐
//!              ├─ --yaml F[:S], F.yml ─► files ─► yaml ───┤ raw options, in order,
//!              └─ --ini F[:S],  F.ini ─► files ─► ini ────┘ each with its origin
//!                                                          │
//!                        placeholders (%d, %(opt), $(ENV)) ▼
//!                                                     OptionList ─► --check-config prints it
//!                                                          │
//!                                   Config::from_options   ▼
//!                                                        Config (+ notices, signals)
//! ```
//!
//! Sources only produce `(key, value, origin)` entries; [`Config::from_options`] is
//! the single place where values get a meaning, so an option behaves the same
//! whichever source gave it. The dialect quirks of uWSGI that the sources keep (and
//! the few they knowingly change) are documented in [`yaml`], [`ini`] and
//! [`placeholders`].

pub mod cli;
pub mod files;
pub mod ini;
pub mod options;
pub mod placeholders;
pub mod python;
pub mod signals;
pub mod statics;
pub mod yaml;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

pub use options::{ConfigOption, OptionList, Origin};
pub use python::PythonApp;
pub use signals::{SignalAction, SignalTable};
pub use statics::StaticConfig;

use files::Format;
use options::Kind;
use placeholders::PlaceholderError;

/// A configuration error: every variant says what was wrong and where. `main` maps
/// all of them to exit status 64.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An option name nobody knows.
    #[error("{origin}: unknown option `{key}`{}", suggest(origin, *suggestion))]
    UnknownOption {
        /// The name given.
        key: String,
        /// Where.
        origin: Origin,
        /// The nearest known option.
        suggestion: Option<&'static str>,
    },
    /// An option that needs a value got none.
    #[error("{origin}: option `{key}` needs a value (see --help)")]
    MissingValue {
        /// The option.
        key: String,
        /// Where.
        origin: Origin,
    },
    /// A value that does not parse.
    #[error("{origin}: bad value `{value}` for `{key}`: {reason}")]
    BadValue {
        /// The option.
        key: String,
        /// The value given.
        value: String,
        /// Where.
        origin: Origin,
        /// What is expected instead.
        reason: String,
    },
    /// A value that parses but names something that cannot be used (a folder
    /// that exists but cannot be read, a file where a folder is wanted).
    #[error("{origin}: cannot use `{value}` for `{key}`: {reason}")]
    Unusable {
        /// The option.
        key: String,
        /// The value given.
        value: String,
        /// Where.
        origin: Origin,
        /// What is wrong with it.
        reason: String,
    },
    /// A command-line word that is neither an option nor a configuration file.
    #[error("{origin}: `{arg}` is not an option (options start with --; files end in .yml, .yaml or .ini)")]
    StrayArgument {
        /// The word.
        arg: String,
        /// Where.
        origin: Origin,
    },
    /// A configuration file cannot be read.
    #[error("{origin}: cannot read `{}`", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Where the command line named it.
        origin: Origin,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of a configuration file breaks its dialect.
    #[error("{origin}: {problem}")]
    Syntax {
        /// The file and line.
        origin: Origin,
        /// What is wrong.
        problem: SyntaxProblem,
    },
    /// A configuration file lacks the section to read.
    #[error(
        "{}: no {} section{}",
        path.display(),
        match format { Format::Yaml => format!("top-level `{section}:`"), Format::Ini => format!("`[{section}]`") },
        if found.is_empty() { String::new() } else { format!(" (it has: {}; name one with FILE:SECTION)", found.join(", ")) }
    )]
    MissingSection {
        /// The file.
        path: PathBuf,
        /// The section asked for.
        section: String,
        /// The file's dialect.
        format: Format,
        /// The sections the file has.
        found: Vec<String>,
    },
    /// A placeholder in a value cannot be expanded.
    #[error("{origin}: {problem}")]
    Placeholder {
        /// Where the value was given.
        origin: Origin,
        /// What is wrong.
        problem: PlaceholderError,
    },
    /// An option that only means something on the command line, found in a file.
    #[error("{origin}: `{key}` only works on the command line (files cannot include other files; name every file on the command line)")]
    CommandLineOnly {
        /// The option.
        key: String,
        /// Where.
        origin: Origin,
    },
    /// The configuration as a whole cannot run.
    #[error("{0}")]
    Invalid(String),
}

/// `; did you mean --http?` on the command line, `` did you mean `http`? `` in files.
fn suggest(origin: &Origin, suggestion: Option<&str>) -> String {
    match (suggestion, origin) {
        (None, _) => String::new(),
        (Some(s), Origin::CommandLine(_)) => format!("; did you mean --{s}?"),
        (Some(s), Origin::File { .. }) => format!("; did you mean `{s}`?"),
    }
}

/// What is wrong with a line of a YAML or INI file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyntaxProblem {
    /// A line not at the indentation of the lines around it.
    #[error(
        "bad indentation: {found} spaces where {expected} are expected \
         (nested mappings and values spanning several lines are not supported)"
    )]
    BadIndentation {
        /// The line's indentation.
        found: usize,
        /// The indentation the section (or list) uses.
        expected: usize,
    },
    /// A tab in the indentation.
    #[error("tabs cannot indent YAML; use spaces")]
    TabIndentation,
    /// A line inside a section that is not `key: value`.
    #[error("expected `key: value`")]
    NotAKey,
    /// `: value` or `= value`.
    #[error("a value without a key")]
    EmptyKey,
    /// A `- item` line not under a `key:` line.
    #[error("a list item `- …` must follow a `key:` line")]
    ListWithoutKey,
    /// A quoted value without its closing quote.
    #[error("unterminated quoted value (a value must end on its line)")]
    UnterminatedQuote,
    /// `"a" b`.
    #[error("unexpected text after the value")]
    AfterQuote,
    /// An escape YAML does not define.
    #[error("unknown escape `{0}` in a double-quoted value")]
    BadEscape(String),
    /// A YAML feature outside uWSGI's dialect.
    #[error("{0} is not supported in uWSGI's YAML dialect")]
    Unsupported(&'static str),
    /// `uwsgi: value` instead of `uwsgi:` and indented lines.
    #[error("`{section}:` must be followed by indented `key: value` lines")]
    SectionNotBlock {
        /// The section.
        section: String,
    },
    /// The section's top-level key given twice.
    #[error(
        "a second top-level `{section}:` (the first is at line {first}; uWSGI would silently read only the first)"
    )]
    SectionTwice {
        /// The section.
        section: String,
        /// The first one's line.
        first: usize,
    },
    /// `[uwsgi` without `]`.
    #[error("section header without its closing `]`")]
    UnclosedHeader,
}

impl ConfigError {
    pub(crate) fn unknown(key: &str, origin: Origin) -> Self {
        ConfigError::UnknownOption { key: key.to_owned(), origin, suggestion: options::nearest(key) }
    }

    pub(crate) fn bad(o: &ConfigOption, reason: impl Into<String>) -> Self {
        ConfigError::BadValue {
            key: o.key.clone(),
            value: o.value.clone(),
            origin: o.origin.clone(),
            reason: reason.into(),
        }
    }
}

/// The typed configuration of a pool.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listeners, in declaration order.
    pub http: Vec<SocketAddr>,
    /// The addresses of `shared-socket` options, in order (`=N` refers to them).
    pub shared_sockets: Vec<SocketAddr>,
    /// uwsgi-protocol listeners (`socket`, `uwsgi-socket`), in declaration order.
    pub uwsgi_sockets: Vec<UwsgiAddr>,
    /// Largest uwsgi packet head (`buffer-size`, default 4096, at most 65535).
    pub uwsgi_buffer_size: usize,
    /// Mode of the Unix sockets the pool creates for uwsgi (`chmod-socket`; no
    /// value means 666); `None` leaves the mode to the umask, as uWSGI does.
    pub chmod_socket: Option<u32>,
    /// The uWSGI stats server (`stats`): TCP, or a Unix socket path.
    pub stats: Option<UwsgiAddr>,
    /// Pid files: written before the privilege drop (`pidfile`, `safe-pidfile`,
    /// the latter atomically) and after it (`pidfile2`).
    pub pidfiles: PidFiles,
    /// The log file, opened before the privilege drop (`logto`).
    pub logto: Option<PathBuf>,
    /// The log file, opened after the privilege drop (`logto2`).
    pub logto2: Option<PathBuf>,
    /// Run in the background, logging to this file (`daemonize`; `daemonize2`:
    /// the file opened after the privilege drop, the `bool`).
    pub daemonize: Option<(PathBuf, bool)>,
    /// Which requests get a log line and how (`disable-logging`, `log-4xx`,
    /// `log-5xx`, `log-slow`, `log-format`, `log-json`); the pool's own answers
    /// and, through WELCOME, its zerglings'.
    pub request_log: zergpool_core::reqlog::LogPolicy,
    /// Reopen the log file at every reload (`log-reopen`).
    pub log_reopen: bool,
    /// Files whose touch reopens the log (`touch-logreopen`).
    pub touch_logreopen: Vec<PathBuf>,
    /// Prometheus metrics and health (`metrics`).
    pub metrics: Option<SocketAddr>,
    /// Answer on `stats` with an HTTP response (`stats-http`).
    pub stats_http: bool,
    /// The stats document on one line (`stats-minified`).
    pub stats_minified: bool,
    /// Owner of those Unix sockets (`chown-socket = USER[:GROUP]`).
    pub chown_socket: Option<(u32, Option<u32>)>,
    /// Listeners that redirect every request to https (`http-to-https`).
    pub http_to_https: Vec<SocketAddr>,
    /// The user to become after binding (`uid`).
    pub uid: Option<u32>,
    /// The group to become after binding (`gid`).
    pub gid: Option<u32>,
    /// Listen backlog requested for every listener.
    pub listen_backlog: u32,
    /// Largest HTTP request head, in bytes.
    pub buffer_size: usize,
    /// Time allowed for the request head.
    pub http_timeout: Duration,
    /// HTTPS listeners (`https`, with every `sni` and `http2`), in declaration order;
    /// certificates are read at bind and on SIGHUP.
    pub https: Vec<crate::listener::tls::HttpsListener>,
    /// Where events for machines go (`events`: a path, or `-` for stdout).
    pub events: Option<PathBuf>,
    /// The folder the pool changes to before binding anything (`chdir`).
    pub chdir: Option<PathBuf>,
    /// The Python application the pool runs as zerglings (`module`, `wsgi-file`,
    /// `mount`, with `processes`, `threads`, `virtualenv`, …), when no `zergling`
    /// command is given; its commands are in `zerglings`.
    pub python: Option<PythonApp>,
    /// Every `static-*` option, typed; folders are resolved at bind and on SIGHUP
    /// ([`StaticConfig::resolve`]).
    pub statics: StaticConfig,
    /// The attach socket's path; `None` means a per-pool default.
    pub zerg_server: Option<PathBuf>,
    /// The attach socket's file mode.
    pub zerg_server_mode: u32,
    /// Users allowed to attach besides root and the pool's own uid.
    pub zerg_allow_uid: Vec<u32>,
    /// Zerglings accept on the uwsgi listeners themselves (`zerg-direct-accept`).
    pub direct_accept: bool,
    /// Zerglings accept on the plain http listeners themselves
    /// (`zerg-direct-accept-http`).
    pub direct_accept_http: bool,
    /// Most connections waiting for a zergling.
    pub queue_limit: usize,
    /// Longest wait for a zergling.
    pub queue_timeout: Duration,
    /// How long a zergling has to acknowledge a connection before it counts as
    /// stuck (`zerg-ack-timeout`, default 5 s).
    pub ack_timeout: Duration,
    /// Most connections the pool holds at once (`zerg-max-connections`); `None`
    /// derives it from the descriptor limit (`listener::limit`).
    pub max_connections: Option<usize>,
    /// The descriptor limit to set at start (`max-fd`); `None` raises the soft
    /// limit to the hard one.
    pub max_fd: Option<u64>,
    /// How long an idle keep-alive connection waits for its next request, in the
    /// pool and in zerglings (`http-keepalive`, default 75 s as nginx).
    pub keepalive_timeout: Duration,
    /// Zergling commands to spawn, already split into words.
    pub zerglings: Vec<Vec<String>>,
    /// Grace period for spawned zerglings on stop.
    pub reload_mercy: Duration,
    /// How long an old zergling may drain during a chain reload (`worker-reload-mercy`).
    pub worker_reload_mercy: Duration,
    /// How long a replacement has to attach during a chain reload (`zerg-attach-timeout`).
    pub attach_timeout: Duration,
    /// Files whose change triggers a chain reload (`touch-reload`).
    pub touch_reload: Vec<PathBuf>,
    /// Files whose change triggers a chain reload (`touch-chain-reload`).
    pub touch_chain_reload: Vec<PathBuf>,
    /// The master FIFO's path (`master-fifo`).
    pub master_fifo: Option<PathBuf>,
    /// The effective option list this configuration was built from, for the modules
    /// that read their own options from it (TLS, static files).
    pub options: OptionList,
    /// What each signal does (defaults, changed by `hook-master-start`).
    pub signals: SignalTable,
    /// Options recognised from uWSGI but not implemented yet (the `Planned` rows of
    /// `options.rs`), raw and in order: they have no effect and are reported once.
    pub unimplemented: Vec<ConfigOption>,
    /// uWSGI application-side options (`module`, `processes`, …), which configure the
    /// zerglings: ignored and reported once, together.
    pub ignored_app_options: Vec<ConfigOption>,
    /// Options accepted without effect because the pool does the job another way
    /// (`offload-threads`): noted once.
    pub superseded: Vec<ConfigOption>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: Vec::new(),
            http_to_https: Vec::new(),
            uwsgi_sockets: Vec::new(),
            uwsgi_buffer_size: 4096,
            chmod_socket: None,
            stats: None,
            pidfiles: PidFiles::default(),
            logto: None,
            logto2: None,
            daemonize: None,
            request_log: zergpool_core::reqlog::LogPolicy { all: true, ..Default::default() },
            log_reopen: false,
            touch_logreopen: Vec::new(),
            metrics: None,
            stats_http: false,
            stats_minified: false,
            chown_socket: None,
            shared_sockets: Vec::new(),
            uid: None,
            gid: None,
            listen_backlog: 100,
            buffer_size: 8192,
            http_timeout: Duration::from_secs(60),
            https: Vec::new(),
            events: None,
            chdir: None,
            python: None,
            statics: StaticConfig::default(),
            zerg_server: None,
            zerg_server_mode: 0o600,
            zerg_allow_uid: Vec::new(),
            direct_accept: false,
            direct_accept_http: false,
            queue_limit: 1024,
            queue_timeout: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(5),
            max_connections: None,
            max_fd: None,
            keepalive_timeout: Duration::from_secs(75),
            zerglings: Vec::new(),
            reload_mercy: Duration::from_secs(30),
            worker_reload_mercy: Duration::from_secs(60),
            attach_timeout: Duration::from_secs(60),
            touch_reload: Vec::new(),
            touch_chain_reload: Vec::new(),
            master_fifo: None,
            options: OptionList::default(),
            signals: SignalTable::default(),
            unimplemented: Vec::new(),
            ignored_app_options: Vec::new(),
            superseded: Vec::new(),
        }
    }
}

/// The pool's pid files (uWSGI's `pidfile`, `safe-pidfile`, `pidfile2`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidFiles {
    /// `pidfile`: written as the user the pool starts as.
    pub before_drop: Option<PathBuf>,
    /// `safe-pidfile`: the same, written to a temporary file and renamed.
    pub safe: Option<PathBuf>,
    /// `pidfile2`: written as the user the pool becomes.
    pub after_drop: Option<PathBuf>,
}

impl PidFiles {
    /// Writes the files due before the privilege drop.
    pub fn write_before_drop(&self) -> Result<(), (PathBuf, std::io::Error)> {
        if let Some(p) = &self.before_drop {
            write_pid(p, false).map_err(|e| (p.clone(), e))?;
        }
        if let Some(p) = &self.safe {
            write_pid(p, true).map_err(|e| (p.clone(), e))?;
        }
        Ok(())
    }

    /// Writes `pidfile2`.
    pub fn write_after_drop(&self) -> Result<(), (PathBuf, std::io::Error)> {
        match &self.after_drop {
            Some(p) => write_pid(p, false).map_err(|e| (p.clone(), e)),
            None => Ok(()),
        }
    }

    /// Removes every pid file (at exit), ignoring those already gone.
    pub fn remove(&self) {
        for p in [&self.before_drop, &self.safe, &self.after_drop].into_iter().flatten() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes this process's pid and a newline to `path` (through a temporary file
/// in the same folder, renamed, when `atomic`).
fn write_pid(path: &std::path::Path, atomic: bool) -> std::io::Result<()> {
    let text = format!("{}\n", std::process::id());
    if !atomic {
        return std::fs::write(path, text);
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Where a uwsgi listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UwsgiAddr {
    /// TCP (`127.0.0.1:3031`, `:3031`, `[::1]:3031`).
    Tcp(SocketAddr),
    /// A Unix socket path (a value without `:`, as in uWSGI).
    Unix(PathBuf),
}

/// Something about the configuration worth one log line at start: options given
/// that have no effect. Each kind is reported once, listing all its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice<'a> {
    /// uWSGI application-side options, ignored.
    ApplicationOptions(&'a [ConfigOption]),
    /// uWSGI options recognised but not implemented yet.
    NotImplemented(&'a [ConfigOption]),
    /// Options the pool replaces with its own way of doing the job.
    Superseded(&'a [ConfigOption]),
}

impl fmt::Display for Notice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, list) = match self {
            Notice::ApplicationOptions(l) => {
                ("application-side options ignored (they configure the zerglings, not the pool)", l)
            }
            Notice::NotImplemented(l) => ("options recognised but not implemented yet in this version, ignored", l),
            Notice::Superseded(l) => ("options ignored (the pool serves static files from its own runtime)", l),
        };
        write!(f, "{what}:")?;
        for (i, o) in list.iter().enumerate() {
            write!(f, "{} `{}` ({})", if i == 0 { "" } else { "," }, o.key, o.origin)?;
        }
        Ok(())
    }
}

impl Config {
    /// Gives every option its meaning. Unknown keys are errors; the last value wins
    /// for single-valued options.
    pub fn from_options(list: &OptionList) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        // `http = =N` names the N-th shared socket, wherever it is declared.
        let shared: Vec<&ConfigOption> = list.all("shared-socket").collect();
        for o in &list.0 {
            let Some(spec) = options::spec(&o.key) else {
                return Err(ConfigError::unknown(&o.key, o.origin.clone()));
            };
            match spec.kind {
                Kind::Pool => {}
                Kind::Accepted => continue,
                Kind::Placeholder => {
                    if !o.value.split_once('=').is_some_and(|(name, _)| !name.trim().is_empty()) {
                        return Err(ConfigError::bad(o, "expected NAME=VALUE"));
                    }
                    continue;
                }
                Kind::Superseded => {
                    c.superseded.push(o.clone());
                    continue;
                }
                Kind::Application => {
                    if !python::HANDLED.contains(&o.key.as_str()) {
                        c.ignored_app_options.push(o.clone());
                    }
                    continue;
                }
                Kind::Planned => {
                    c.unimplemented.push(o.clone());
                    continue;
                }
                Kind::CommandLine => {
                    return Err(ConfigError::CommandLineOnly { key: o.key.clone(), origin: o.origin.clone() })
                }
            }
            match o.key.as_str() {
                "stats" | "stats-server" => {
                    c.stats = Some(if o.value.contains(':') {
                        UwsgiAddr::Tcp(parse_tcp_addr(o)?)
                    } else {
                        UwsgiAddr::Unix(PathBuf::from(non_empty(o)?))
                    })
                }
                "metrics" => c.metrics = Some(parse_tcp_addr(o)?),
                "logto" => c.logto = Some(PathBuf::from(non_empty(o)?)),
                "daemonize" => c.daemonize = Some((PathBuf::from(non_empty(o)?), false)),
                "daemonize2" => c.daemonize = Some((PathBuf::from(non_empty(o)?), true)),
                "logto2" => c.logto2 = Some(PathBuf::from(non_empty(o)?)),
                "log-reopen" => c.log_reopen = options::truthy(&o.value),
                "disable-logging" => c.request_log.all = !options::truthy(&o.value),
                "log-4xx" => c.request_log.client_errors = options::truthy(&o.value),
                "log-5xx" => c.request_log.server_errors = options::truthy(&o.value),
                "log-slow" => {
                    c.request_log.slow_ms =
                        o.value.trim().parse().map_err(|_| ConfigError::bad(o, "expected milliseconds"))?
                }
                "log-format" | "logformat" => {
                    c.request_log.format = zergpool_core::reqlog::LogFormat::Template(
                        zergpool_core::reqlog::Template::parse(&o.value).map_err(|e| ConfigError::bad(o, e))?,
                    )
                }
                "log-json" if options::truthy(&o.value) => {
                    c.request_log.format = zergpool_core::reqlog::LogFormat::Json
                }
                "log-json" => {}
                "touch-logreopen" => c.touch_logreopen.push(PathBuf::from(non_empty(o)?)),
                "pidfile" => c.pidfiles.before_drop = Some(PathBuf::from(non_empty(o)?)),
                "safe-pidfile" => c.pidfiles.safe = Some(PathBuf::from(non_empty(o)?)),
                "pidfile2" => c.pidfiles.after_drop = Some(PathBuf::from(non_empty(o)?)),
                "stats-http" => c.stats_http = options::truthy(&o.value),
                "stats-minified" => c.stats_minified = options::truthy(&o.value),
                "http" => c.http.push(match o.value.trim().strip_prefix('=') {
                    Some(n) => shared_socket(o, n, &shared)?,
                    None => parse_tcp_addr(o)?,
                }),
                "http-to-https" => c.http_to_https.push(match o.value.trim().strip_prefix('=') {
                    Some(n) => shared_socket(o, n, &shared)?,
                    None => parse_tcp_addr(o)?,
                }),
                "socket" | "uwsgi-socket" => c.uwsgi_sockets.push(match o.value.trim().strip_prefix('=') {
                    Some(n) => UwsgiAddr::Tcp(shared_socket(o, n, &shared)?),
                    None if o.value.contains(':') => UwsgiAddr::Tcp(parse_tcp_addr(o)?),
                    None => UwsgiAddr::Unix(PathBuf::from(non_empty(o)?)),
                }),
                "chmod-socket" => {
                    c.chmod_socket = Some(if o.value.is_empty() {
                        0o666
                    } else {
                        u32::from_str_radix(o.value.trim(), 8)
                            .ok()
                            .filter(|m| *m <= 0o777)
                            .ok_or_else(|| ConfigError::bad(o, "expected an octal file mode such as 660 or 666"))?
                    })
                }
                "chown-socket" => {
                    let (user, group) = match o.value.split_once(':') {
                        Some((u, g)) => (u, Some(g)),
                        None => (o.value.as_str(), None),
                    };
                    let uid = parse_uid(&ConfigOption { value: user.to_owned(), ..o.clone() })?;
                    let gid =
                        group.map(|g| parse_gid(&ConfigOption { value: g.to_owned(), ..o.clone() })).transpose()?;
                    c.chown_socket = Some((uid, gid));
                }
                "uid" => c.uid = Some(parse_uid(o)?),
                "gid" => c.gid = Some(parse_gid(o)?),
                "shared-socket" => c.shared_sockets.push(parse_shared(o)?),
                "listen" => c.listen_backlog = parse_num(o, 1, i32::MAX as u64)? as u32,
                "buffer-size" => {
                    // With what was read after it, a head must fit in one CONN frame.
                    c.buffer_size = parse_num(o, 512, crate::proto::MAX_HEAD as u64)? as usize;
                    // uWSGI clamps it to 65535 for the uwsgi protocol (u16 sizes).
                    c.uwsgi_buffer_size = c.buffer_size.min(65535);
                }
                "http-timeout" => c.http_timeout = parse_secs(o)?,
                "zerg-server" => c.zerg_server = Some(PathBuf::from(non_empty(o)?)),
                "chmod-zerg-server" => {
                    c.zerg_server_mode = u32::from_str_radix(&o.value, 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or_else(|| ConfigError::bad(o, "expected an octal file mode such as 600 or 660"))?
                }
                "zerg-allow-uid" => c.zerg_allow_uid.push(parse_uid(o)?),
                "zerg-direct-accept" => c.direct_accept = options::truthy(&o.value),
                "zerg-direct-accept-http" => c.direct_accept_http = options::truthy(&o.value),
                "events" => c.events = Some(PathBuf::from(non_empty(o)?)),
                "zerg-queue" => c.queue_limit = parse_num(o, 0, 1 << 24)? as usize,
                "zerg-max-connections" => c.max_connections = Some(parse_num(o, 1, 1 << 24)? as usize),
                "max-fd" => c.max_fd = Some(parse_num(o, 64, 1 << 24)?),
                "zerg-queue-timeout" => c.queue_timeout = parse_secs(o)?,
                // uWSGI: a bare flag enables keep-alive (always on here); N sets the
                // idle timeout.
                "http-keepalive" if o.value.trim().is_empty() => {}
                "http-keepalive" => {
                    c.keepalive_timeout = parse_secs(o)?;
                    if c.keepalive_timeout.is_zero() {
                        return Err(ConfigError::bad(o, "expected a number of seconds above 0"));
                    }
                }
                "zerg-ack-timeout" => {
                    c.ack_timeout = parse_secs(o)?;
                    if c.ack_timeout.is_zero() {
                        return Err(ConfigError::bad(o, "expected a number of seconds above 0"));
                    }
                }
                "zergling" => {
                    let words: Vec<String> = o.value.split_whitespace().map(str::to_owned).collect();
                    if words.is_empty() {
                        return Err(ConfigError::bad(o, "expected a command to run"));
                    }
                    c.zerglings.push(words);
                }
                "reload-mercy" => c.reload_mercy = parse_secs(o)?,
                "worker-reload-mercy" => c.worker_reload_mercy = parse_secs(o)?,
                "zerg-attach-timeout" => c.attach_timeout = parse_secs(o)?,
                "touch-reload" => c.touch_reload.push(PathBuf::from(non_empty(o)?)),
                "touch-chain-reload" => c.touch_chain_reload.push(PathBuf::from(non_empty(o)?)),
                "master-fifo" => c.master_fifo = Some(PathBuf::from(non_empty(o)?)),
                "hook-master-start" => {
                    let (signo, action) =
                        signals::parse_master_start_hook(&o.value).map_err(|e| ConfigError::bad(o, e.to_string()))?;
                    c.signals.set(signo, action);
                }
                // Every `Kind::Pool` option of the table has its arm above.
                _ => {}
            }
        }
        c.https = crate::listener::tls::https_listeners(list, &shared)?;
        if c.http.is_empty() && c.http_to_https.is_empty() && c.uwsgi_sockets.is_empty() && c.https.is_empty() {
            let waiting: Vec<String> = c
                .unimplemented
                .iter()
                .filter(|o| matches!(o.key.as_str(), "https" | "socket" | "uwsgi-socket" | "http-socket"))
                .map(|o| format!("`{}` ({})", o.key, o.origin))
                .collect();
            let hint = if waiting.is_empty() {
                String::new()
            } else {
                format!("; {} not implemented yet in this version", waiting.join(", "))
            };
            return Err(ConfigError::Invalid(format!(
                "no listener configured: give at least one --http ADDR (for example --http 127.0.0.1:8080){hint}"
            )));
        }
        c.statics = StaticConfig::parse(list)?;
        c.chdir = list.last("chdir").map(|o| non_empty(o).map(PathBuf::from)).transpose()?;
        c.python = PythonApp::from_options(list)?;
        match &c.python {
            // An explicit `zergling` command wins; the application options then
            // configure nothing the pool runs.
            Some(_) if !c.zerglings.is_empty() => {
                let named = list.0.iter().filter(|o| python::HANDLED.contains(&o.key.as_str()) && o.key != "chdir");
                c.ignored_app_options.extend(named.cloned());
                c.python = None;
            }
            Some(app) => {
                for _ in 0..app.processes {
                    c.zerglings.push(app.command());
                }
            }
            None => {
                // Options that only mean something with an application.
                let named = list.0.iter().filter(|o| python::HANDLED.contains(&o.key.as_str()) && o.key != "chdir");
                c.ignored_app_options.extend(named.cloned());
            }
        }
        c.options = list.clone();
        Ok(c)
    }

    /// The reports to log once at start (and print with `--check-config`): one per
    /// kind of option given without effect, each listing all of them.
    pub fn notices(&self) -> Vec<Notice<'_>> {
        let mut out = Vec::new();
        if !self.ignored_app_options.is_empty() {
            out.push(Notice::ApplicationOptions(&self.ignored_app_options));
        }
        if !self.unimplemented.is_empty() {
            out.push(Notice::NotImplemented(&self.unimplemented));
        }
        if !self.superseded.is_empty() {
            out.push(Notice::Superseded(&self.superseded));
        }
        out
    }
}

/// The address of a `shared-socket` value: `ADDR` or `ADDR,certificate,key`.
fn parse_shared(o: &ConfigOption) -> Result<SocketAddr, ConfigError> {
    let addr = o.value.split(',').next().unwrap_or_default();
    parse_addr_str(addr).ok_or_else(|| ConfigError::bad(o, "expected HOST:PORT such as :80 or 0.0.0.0:443"))
}

/// Resolves `http = =N` to the address of the N-th (from 0) `shared-socket`.
fn shared_socket(o: &ConfigOption, n: &str, shared: &[&ConfigOption]) -> Result<SocketAddr, ConfigError> {
    let index: usize = n.trim().parse().map_err(|_| ConfigError::bad(o, "expected =N, N a shared-socket number"))?;
    shared_address(o, index, shared)
}

/// The address of the `index`-th (from 0) `shared-socket`, which option `o` refers
/// to (`http`, `https`, `socket`, … `= =N`).
pub(crate) fn shared_address(
    o: &ConfigOption,
    index: usize,
    shared: &[&ConfigOption],
) -> Result<SocketAddr, ConfigError> {
    let target = shared.get(index).ok_or_else(|| {
        ConfigError::bad(o, format!("there is no shared-socket number {index} (shared sockets count from 0)"))
    })?;
    parse_shared(target)
}

fn non_empty(o: &ConfigOption) -> Result<&str, ConfigError> {
    if o.value.is_empty() {
        Err(ConfigError::MissingValue { key: o.key.clone(), origin: o.origin.clone() })
    } else {
        Ok(&o.value)
    }
}

fn parse_num(o: &ConfigOption, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n: u64 = o.value.trim().parse().map_err(|_| ConfigError::bad(o, "expected a whole number"))?;
    if n < min || n > max {
        return Err(ConfigError::bad(o, format!("expected a number from {min} to {max}")));
    }
    Ok(n)
}

fn parse_secs(o: &ConfigOption) -> Result<Duration, ConfigError> {
    let s: f64 = o.value.trim().parse().map_err(|_| ConfigError::bad(o, "expected a number of seconds"))?;
    if !(0.0..=86_400.0 * 365.0).contains(&s) {
        return Err(ConfigError::bad(o, "expected a number of seconds from 0 to one year"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn parse_gid(o: &ConfigOption) -> Result<u32, ConfigError> {
    if let Ok(n) = o.value.trim().parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(o.value.trim()) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(ConfigError::bad(o, "expected a group name or a numeric gid")),
    }
}

fn parse_uid(o: &ConfigOption) -> Result<u32, ConfigError> {
    if let Ok(n) = o.value.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::User::from_name(&o.value) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        _ => Err(ConfigError::bad(o, "expected a user name or a numeric uid")),
    }
}

/// Parses an address as uWSGI writes it: `127.0.0.1:8080`, `:8080` (all
/// interfaces), `[::1]:8080`, `localhost:8080`.
pub fn parse_tcp_addr(o: &ConfigOption) -> Result<SocketAddr, ConfigError> {
    parse_addr_str(&o.value)
        .ok_or_else(|| ConfigError::bad(o, "expected HOST:PORT such as 127.0.0.1:8080, :8080 or [::1]:8080"))
}

/// The pure half of [`parse_tcp_addr`].
pub fn parse_addr_str(v: &str) -> Option<SocketAddr> {
    let v = v.trim();
    if let Some(port) = v.strip_prefix(':') {
        let port: u16 = port.parse().ok()?;
        return Some(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Some(a);
    }
    let (_, port) = v.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    v.to_socket_addrs().ok()?.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Config, ConfigError> {
        match cli::parse_args(args.iter().map(|s| s.to_string()))? {
            cli::CliRequest::Run(list) => Config::from_options(&list),
            _ => panic!(),
        }
    }

    #[test]
    fn addresses_in_uwsgi_form() {
        assert_eq!(parse_addr_str(":8080"), Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(parse_addr_str("[::1]:81"), Some("[::1]:81".parse().unwrap()));
        assert_eq!(parse_addr_str("127.0.0.1:0"), Some("127.0.0.1:0".parse().unwrap()));
        assert!(parse_addr_str("localhost:80").is_some());
        assert_eq!(parse_addr_str("8080"), None);
        assert_eq!(parse_addr_str("1.2.3.4:99999"), None);
    }

    #[test]
    fn typed_values_and_last_wins() {
        let c = cli(&[
            "--http",
            ":1",
            "--http",
            "[::1]:2",
            "--listen",
            "7",
            "--listen",
            "9",
            "--zergling",
            "a  b c",
            "--chmod-zerg-server",
            "660",
        ])
        .unwrap();
        assert_eq!(c.http.len(), 2);
        assert_eq!(c.listen_backlog, 9);
        assert_eq!(c.zerglings, vec![vec!["a".to_string(), "b".into(), "c".into()]]);
        assert_eq!(c.zerg_server_mode, 0o660);
    }

    #[test]
    fn bad_values_say_where_and_what() {
        let e = cli(&["--http", ":1", "--listen", "lots"]).unwrap_err().to_string();
        assert!(e.contains("argument 3") && e.contains("lots") && e.contains("whole number"), "{e}");
        let e = cli(&["--listen", "5"]).unwrap_err().to_string();
        assert!(e.contains("--http"), "{e}");
        let e = cli(&["--http", "nowhere"]).unwrap_err().to_string();
        assert!(e.contains("HOST:PORT"), "{e}");
    }
    /// Writes `text` to a file named `name` in a fresh folder and loads it through
    /// the command line, after `extra` arguments.
    fn from_file(name: &str, text: &str, extra: &[&str]) -> Result<(OptionList, Config), ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.push(path.to_str().unwrap().to_owned());
        match cli::parse_args_with_env(args, &|_| None)? {
            cli::CliRequest::Run(list) => {
                let c = Config::from_options(&list)?;
                Ok((list, c))
            }
            _ => panic!(),
        }
    }

    const SEED: &str = "\
uwsgi:
    module: galaxy.webapps.galaxy.buildapp:uwsgi_app()
    virtualenv: .venv
    pythonpath: lib
    master: true
    enable-threads: true
    processes: 2
    threads: 4
    offload-threads: 1
    die-on-term: true
    hook-master-start: unix_signal:2 gracefully_kill_them_all
    hook-master-start: unix_signal:15 gracefully_kill_them_all
    socket: 127.0.0.1:4001
    http: :8080
    https: :8443,server.crt,server.key
    static-map: /static/style=static/style/blue
    static-map: /static=static
    mule: lib/galaxy/main.py
    mule: lib/galaxy/main.py
    farm: job-handlers:1,2
";

    #[test]
    fn the_seed_example_loads_with_one_report_per_kind() {
        let (list, c) = from_file("galaxy.yml", SEED, &[]).unwrap();
        assert_eq!(list.0.len(), 19);
        let maps: Vec<_> = c.statics.mounts().map(|m| (m.mount.as_str(), m.root.as_str())).collect();
        assert_eq!(maps, [("/static/style", "static/style/blue"), ("/static", "static")]);
        assert_eq!(c.http, ["0.0.0.0:8080".parse().unwrap()]);
        let keys = |l: &[ConfigOption]| l.iter().map(|o| o.key.clone()).collect::<Vec<_>>().join(" ");
        // The application options start the application (issue 13): only the
        // job-handling ones are left without effect.
        assert_eq!(keys(&c.ignored_app_options), "mule mule farm");
        assert_eq!(c.zerglings.len(), 2);
        assert_eq!(
            c.zerglings[0].join(" "),
            ".venv/bin/zergling --module galaxy.webapps.galaxy.buildapp:uwsgi_app() --pythonpath lib --threads 4 \
             --processes 2"
        );
        // `socket` and `https` are implemented now: nothing is left unimplemented.
        assert_eq!(keys(&c.unimplemented), "");
        assert_eq!(keys(&c.superseded), "offload-threads");
        let notices = c.notices();
        assert_eq!(notices.len(), 2);
        let app = notices[0].to_string();
        assert!(app.starts_with("application-side options ignored"), "{app}");
        assert!(app.contains("`mule` (") && app.contains("`farm` ("), "{app}");
        assert_eq!(c.signals, SignalTable::default());
    }

    #[test]
    fn hooks_change_what_signals_do() {
        let (_, c) = from_file(
            "a.ini",
            "[uwsgi]\nhttp = :1\nhook-master-start = unix_signal:1 reap_them_all\nhook-master-start = unix_signal:15 kill_them_all\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.signals.action(1), Some(SignalAction::Reload));
        assert_eq!(c.signals.action(15), Some(SignalAction::ImmediateStop));
        assert_eq!(c.signals.action(2), Some(SignalAction::GracefulStop));
        let e = from_file("a.ini", "[uwsgi]\nhttp = :1\nhook-master-start = unix_signal:15 stop_it\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.ini:3:") && e.contains("unknown function `stop_it`"), "{e}");
        let e = from_file("a.ini", "[uwsgi]\nhttp = :1\nhook-master-start = exec:touch /tmp/x\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.ini:3:") && e.contains("hook action `exec`"), "{e}");
    }

    #[test]
    fn shared_sockets_by_number() {
        let (_, c) = from_file(
            "p.ini",
            "[uwsgi]\nhttp = =1\nshared-socket = 127.0.0.1:81\nshared-socket = 127.0.0.1:82,a.crt,a.key\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.http, ["127.0.0.1:82".parse().unwrap()]);
        let e = cli(&["--shared-socket", ":80", "--http", "=1"]).unwrap_err().to_string();
        assert!(e.contains("no shared-socket number 1"), "{e}");
        let e = cli(&["--http", ":1", "--set-placeholder", "base"]).unwrap_err().to_string();
        assert!(e.contains("argument 3") && e.contains("NAME=VALUE"), "{e}");
        let e = cli(&["--shared-socket", "eighty", "--http", "=0"]).unwrap_err().to_string();
        assert!(e.contains("argument 1") && e.contains("eighty"), "{e}");
    }

    #[test]
    fn file_errors_say_file_and_line() {
        let e = from_file("x.yml", "uwsgi:\n  http: :1\n  statc-map: /s=s\n", &[]).unwrap_err().to_string();
        assert!(e.ends_with("x.yml:3: unknown option `statc-map`; did you mean `static-map`?"), "{e}");
        let e = from_file("x.yml", "uwsgi:\n  http: :1\n  yaml: other.yml\n", &[]).unwrap_err();
        assert!(matches!(&e, ConfigError::CommandLineOnly { key, .. } if key == "yaml"), "{e}");
        let e = from_file("x.ini", "[uwsgi]\nhttp = :1\nstatic-map = /static\n", &[]).unwrap_err().to_string();
        assert!(e.contains("x.ini:3:") && e.contains("/MOUNT=PATH"), "{e}");
        // Every option's value is checked when the options get their meaning
        // (what --check-config runs): https, static-*, with file and line.
        for (text, line, what) in [
            ("[uwsgi]\nhttp = :1\n\nhttps = :443,only-a-cert\n", 4, "ADDR,CERT,KEY"),
            ("[uwsgi]\nhttp = :1\nsni = x\n", 3, "sni"),
            ("[uwsgi]\nhttp = :1\nstatic-expires = ( 10\n", 3, "regular expression"),
            ("[uwsgi]\nhttp = :1\nstatic-index = a/b\n", 3, "file name"),
            ("[uwsgi]\nhttp = :1\nstatic-cache-paths = soon\n", 3, "seconds"),
        ] {
            let e = from_file("x.ini", text, &[]).unwrap_err().to_string();
            assert!(e.contains(&format!("x.ini:{line}: bad value")) && e.contains(what), "{text}: {e}");
        }
        let e = from_file("x.ini", "[uwsgi]\nhttp = :1\nzerg-server = %dsock\nlisten = 5%\nlisten = %q\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.ini:5:") && e.contains("`%q`"), "{e}");
    }

    #[test]
    fn without_a_listener_the_unimplemented_ones_are_named() {
        let e = cli(&["--master"]).unwrap_err().to_string();
        assert!(e.contains("no listener") && e.contains("--http"), "{e}");
        assert!(cli(&["--socket", "/run/app.sock"]).is_ok(), "a uwsgi socket is a listener");
    }

    #[test]
    fn files_and_flags_combine_in_order() {
        let (list, c) =
            from_file("z.yml", "uwsgi:\n  listen: 7\n  http: :2\n", &["--listen", "5", "--http", ":1"]).unwrap();
        let order: Vec<_> = list.0.iter().map(|o| format!("{}={}", o.key, o.value)).collect();
        assert_eq!(order, ["listen=5", "http=:1", "listen=7", "http=:2"]);
        assert_eq!(c.listen_backlog, 7);
        assert_eq!(c.http.len(), 2);
    }

    #[test]
    fn chain_reload_options() {
        let c = cli(&[
            "--http",
            ":1",
            "--touch-reload",
            "/a",
            "--touch-reload=/b",
            "--touch-chain-reload",
            "/c",
            "--master-fifo",
            "/run/fifo",
            "--worker-reload-mercy",
            "5",
            "--zerg-attach-timeout",
            "1.5",
        ])
        .unwrap();
        assert_eq!(c.touch_reload, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(c.touch_chain_reload, [PathBuf::from("/c")]);
        assert_eq!(c.master_fifo, Some(PathBuf::from("/run/fifo")));
        assert_eq!((c.worker_reload_mercy, c.attach_timeout), (Duration::from_secs(5), Duration::from_millis(1500)));
        assert_eq!(c.options.0.len(), 13 - 6);
        assert!(c.unimplemented.is_empty() && c.notices().is_empty());
    }
}
