//! Configuration: option sources → one ordered [`OptionList`] → one typed [`Config`].
//!
//! Sources only produce `(key, value, origin)` entries ([`cli`] for the command
//! line); [`Config::from_options`] is the single place where values get a meaning,
//! so an option behaves the same whichever source gave it.

pub mod cli;
pub mod options;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

pub use options::{ConfigOption, OptionList, Origin};

/// A configuration error: every variant says what was wrong and where. `main` maps
/// all of them to exit status 64.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An option name nobody knows.
    #[error("{origin}: unknown option `{key}`{}", suggestion.map(|s| format!("; did you mean --{s}?")).unwrap_or_default())]
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
    /// A command-line word that is not an option.
    #[error("{origin}: `{arg}` is not an option (options start with --)")]
    StrayArgument {
        /// The word.
        arg: String,
        /// Where.
        origin: Origin,
    },
    /// The configuration as a whole cannot run.
    #[error("{0}")]
    Invalid(String),
}

impl ConfigError {
    pub(crate) fn unknown(key: &str, origin: Origin) -> Self {
        ConfigError::UnknownOption { key: key.to_owned(), origin, suggestion: options::nearest(key) }
    }

    fn bad(o: &ConfigOption, reason: impl Into<String>) -> Self {
        ConfigError::BadValue { key: o.key.clone(), value: o.value.clone(), origin: o.origin.clone(), reason: reason.into() }
    }
}

/// The typed configuration of a pool.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listeners, in declaration order.
    pub http: Vec<SocketAddr>,
    /// Listen backlog requested for every listener.
    pub listen_backlog: u32,
    /// Largest HTTP request head, in bytes.
    pub buffer_size: usize,
    /// Time allowed for the request head.
    pub http_timeout: Duration,
    /// The attach socket's path; `None` means a per-pool default.
    pub zerg_server: Option<PathBuf>,
    /// The attach socket's file mode.
    pub zerg_server_mode: u32,
    /// Users allowed to attach besides root and the pool's own uid.
    pub zerg_allow_uid: Vec<u32>,
    /// Most connections waiting for a zergling.
    pub queue_limit: usize,
    /// Longest wait for a zergling.
    pub queue_timeout: Duration,
    /// Zergling commands to spawn, already split into words.
    pub zerglings: Vec<Vec<String>>,
    /// Grace period for spawned zerglings on stop.
    pub reload_mercy: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: Vec::new(),
            listen_backlog: 100,
            buffer_size: 8192,
            http_timeout: Duration::from_secs(60),
            zerg_server: None,
            zerg_server_mode: 0o600,
            zerg_allow_uid: Vec::new(),
            queue_limit: 1024,
            queue_timeout: Duration::from_secs(30),
            zerglings: Vec::new(),
            reload_mercy: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Gives every option its meaning. Unknown keys are errors; the last value wins
    /// for single-valued options.
    pub fn from_options(list: &OptionList) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        for o in &list.0 {
            if options::spec(&o.key).is_none() {
                return Err(ConfigError::unknown(&o.key, o.origin.clone()));
            }
            match o.key.as_str() {
                "http" => c.http.push(parse_tcp_addr(o)?),
                "listen" => c.listen_backlog = parse_num(o, 1, i32::MAX as u64)? as u32,
                "buffer-size" => c.buffer_size = parse_num(o, 512, 1 << 20)? as usize,
                "http-timeout" => c.http_timeout = parse_secs(o)?,
                "zerg-server" => c.zerg_server = Some(PathBuf::from(non_empty(o)?)),
                "chmod-zerg-server" => {
                    c.zerg_server_mode = u32::from_str_radix(&o.value, 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or_else(|| ConfigError::bad(o, "expected an octal file mode such as 600 or 660"))?
                }
                "zerg-allow-uid" => c.zerg_allow_uid.push(parse_uid(o)?),
                "zerg-queue" => c.queue_limit = parse_num(o, 0, 1 << 24)? as usize,
                "zerg-queue-timeout" => c.queue_timeout = parse_secs(o)?,
                "zergling" => {
                    let words: Vec<String> = o.value.split_whitespace().map(str::to_owned).collect();
                    if words.is_empty() {
                        return Err(ConfigError::bad(o, "expected a command to run"));
                    }
                    c.zerglings.push(words);
                }
                "reload-mercy" => c.reload_mercy = parse_secs(o)?,
                "master" | "die-on-term" => {}
                _ => {}
            }
        }
        if c.http.is_empty() {
            return Err(ConfigError::Invalid(
                "no listener configured: give at least one --http ADDR (for example --http 127.0.0.1:8080)".into(),
            ));
        }
        Ok(c)
    }
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
    parse_addr_str(&o.value).ok_or_else(|| {
        ConfigError::bad(o, "expected HOST:PORT such as 127.0.0.1:8080, :8080 or [::1]:8080")
    })
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
        let c = cli(&["--http", ":1", "--http", "[::1]:2", "--listen", "7", "--listen", "9", "--zergling", "a  b c", "--chmod-zerg-server", "660"]).unwrap();
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
}
