//! The table of every option the pool knows, in uWSGI's vocabulary, and the ordered
//! option list that all sources (command line, and later files) produce.
//!
//! The list is deliberately independent of where an option came from: each entry
//! carries its [`Origin`] only so that errors can point at it.

use std::fmt;
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

/// One known option.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// The name, without dashes.
    pub name: &'static str,
    /// How it takes its value.
    pub arity: Arity,
    /// Whether repeating it accumulates values (otherwise the last one wins).
    pub repeatable: bool,
    /// The value's shape, for `--help`.
    pub metavar: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
}

const fn opt(name: &'static str, arity: Arity, repeatable: bool, metavar: &'static str, help: &'static str) -> OptionSpec {
    OptionSpec { name, arity, repeatable, metavar, help }
}

use Arity::{Flag, Value};

/// Every option the pool accepts, in the order `--help` shows them.
pub const OPTIONS: &[OptionSpec] = &[
    opt("http", Value, true, "ADDR", "HTTP/1.1 listener: 127.0.0.1:8080, :8080 (all interfaces) or [::1]:8080"),
    opt("listen", Value, false, "N", "listen backlog of every listener (default 100, clamped to net.core.somaxconn)"),
    opt("buffer-size", Value, false, "BYTES", "largest HTTP request head the pool reads (default 8192)"),
    opt("http-timeout", Value, false, "SECS", "time a client has to send its request head (default 60)"),
    opt("zerg-server", Value, false, "PATH", "Unix socket zerglings attach to (default: a per-pool path under /tmp)"),
    opt("chmod-zerg-server", Value, false, "MODE", "file mode of the zerg-server socket, octal (default 600)"),
    opt("zerg-allow-uid", Value, true, "UID", "a further user (name or number) allowed to attach; root and the pool's own uid always are"),
    opt("zerg-queue", Value, false, "N", "connections waiting for a zergling at most (default 1024); past it: 503"),
    opt("zerg-queue-timeout", Value, false, "SECS", "longest wait for a zergling (default 30); past it: 503"),
    opt("zergling", Value, true, "COMMAND", "spawn and supervise a zergling (split into words, no shell)"),
    opt("reload-mercy", Value, false, "SECS", "how long spawned zerglings get to exit on stop before SIGKILL (default 30)"),
    opt("master", Flag, false, "", "accepted for uWSGI compatibility (the pool is always a master)"),
    opt("die-on-term", Flag, false, "", "accepted for uWSGI compatibility (SIGTERM always stops gracefully)"),
    opt("help", Flag, false, "", "print this list and exit"),
    opt("version", Flag, false, "", "print the version and exit"),
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
        .filter(|(d, candidate)| *d <= 3.max(candidate.len() / 3) || candidate.starts_with(name) || name.starts_with(candidate))
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
        /// The file.
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

/// One option as given by some source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigOption {
    /// The option's name, without dashes.
    pub key: String,
    /// Its value; `""` for a flag given without one.
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
}

/// uWSGI's boolean rule: true unless `false`, `off`, `no` (any case) or `0`.
pub fn truthy(value: &str) -> bool {
    !(value.eq_ignore_ascii_case("false") || value.eq_ignore_ascii_case("off") || value.eq_ignore_ascii_case("no") || value == "0")
}

/// The `--help` text: every option on one line.
pub fn help_text() -> String {
    let mut out = String::from(
        "zergpool: a zero-downtime front-end for application servers (uWSGI Zerg mode, done properly)\n\n\
         usage: zergpool [--option VALUE | --option=VALUE | --flag]...\n\noptions:\n",
    );
    for o in OPTIONS {
        let left = if o.metavar.is_empty() { format!("--{}", o.name) } else { format!("--{} {}", o.name, o.metavar) };
        let rep = if o.repeatable { " (repeatable)" } else { "" };
        out.push_str(&format!("  {left:<32} {}{rep}\n", o.help));
    }
    out.push_str("\nSignals: SIGTERM/SIGINT stop gracefully, SIGQUIT or a second signal stops at once.\n");
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
}
