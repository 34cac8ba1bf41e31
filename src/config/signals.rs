//! What each signal makes the pool do: the [`SignalTable`], and the uWSGI options
//! that change it.
//!
//! Defaults: SIGTERM and SIGINT stop gracefully, SIGQUIT stops at once, SIGHUP
//! reloads gracefully, SIGUSR1 reopens the log file (uWSGI prints its stats on
//! SIGUSR1; the pool has the `stats` server, and logrotate wants a reopen). uWSGI's `hook-master-start = unix_signal:N FUNCTION` maps
//! signal N to one of uWSGI's master functions:
//!
//! | uWSGI function             | [`SignalAction`]   |
//! |----------------------------|--------------------|
//! | `gracefully_kill_them_all` | `GracefulStop`     |
//! | `kill_them_all`            | `ImmediateStop`    |
//! | `grace_them_all`           | `GracefulReload`   |
//! | `reap_them_all`            | `Reload`           |
//!
//! Any other function name is an error. So is any other hook action (`exec:`,
//! `call:`, …): the pool runs no commands at start; a service manager does that
//! better, and silently skipping a command an operator relies on would be worse than
//! refusing to start.
//!
//! `die-on-term` asks uWSGI to stop on SIGTERM instead of reloading; stopping
//! gracefully on SIGTERM is the pool's default anyway, so the option is accepted and
//! changes nothing (and `die-on-term = false` does not bring back uWSGI's reload on
//! SIGTERM: map it explicitly with `unix_signal:15 grace_them_all`). Hooks apply in
//! the order given; the last mapping of a signal wins.
//!
//! Signals that cannot be caught or that the runtime refuses to handle (SIGKILL,
//! SIGSTOP, SIGILL, SIGFPE, SIGSEGV) cannot be mapped.

use std::fmt;

use nix::sys::signal::Signal;

/// What a signal makes the pool do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalAction {
    /// Stop accepting, let work in flight finish within the mercy, then exit.
    GracefulStop,
    /// Exit now, killing spawned zerglings.
    ImmediateStop,
    /// Replace the zerglings one by one, each old one draining after its successor is
    /// ready; keep the listeners.
    GracefulReload,
    /// Replace the zerglings at once (uWSGI's brutal reload); keep the listeners.
    Reload,
    /// Open the log file again (after logrotate renamed it).
    ReopenLog,
}

impl SignalAction {
    /// The action of a uWSGI master function name.
    pub fn from_uwsgi(function: &str) -> Option<SignalAction> {
        match function {
            "gracefully_kill_them_all" => Some(SignalAction::GracefulStop),
            "kill_them_all" => Some(SignalAction::ImmediateStop),
            "grace_them_all" => Some(SignalAction::GracefulReload),
            "reap_them_all" => Some(SignalAction::Reload),
            _ => None,
        }
    }
}

impl fmt::Display for SignalAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignalAction::GracefulStop => "graceful stop",
            SignalAction::ImmediateStop => "immediate stop",
            SignalAction::GracefulReload => "graceful reload",
            SignalAction::Reload => "reload",
            SignalAction::ReopenLog => "reopen the log",
        })
    }
}

/// Which signals the pool handles and what each does; one entry per signal, ordered
/// by signal number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalTable {
    entries: Vec<(i32, SignalAction)>,
}

impl Default for SignalTable {
    fn default() -> Self {
        let mut t = SignalTable { entries: Vec::new() };
        t.set(Signal::SIGTERM as i32, SignalAction::GracefulStop);
        t.set(Signal::SIGINT as i32, SignalAction::GracefulStop);
        t.set(Signal::SIGQUIT as i32, SignalAction::ImmediateStop);
        t.set(Signal::SIGHUP as i32, SignalAction::GracefulReload);
        t.set(Signal::SIGUSR1 as i32, SignalAction::ReopenLog);
        t
    }
}

impl SignalTable {
    /// What signal `signo` does, if the pool handles it.
    pub fn action(&self, signo: i32) -> Option<SignalAction> {
        self.entries.iter().find(|(s, _)| *s == signo).map(|(_, a)| *a)
    }

    /// Makes signal `signo` do `action`, replacing what it did before.
    pub fn set(&mut self, signo: i32, action: SignalAction) {
        match self.entries.binary_search_by_key(&signo, |(s, _)| *s) {
            Ok(at) => self.entries[at].1 = action,
            Err(at) => self.entries.insert(at, (signo, action)),
        }
    }

    /// Every handled signal with its action, by signal number: what to install
    /// handlers for.
    pub fn iter(&self) -> impl Iterator<Item = (i32, SignalAction)> + '_ {
        self.entries.iter().copied()
    }
}

impl fmt::Display for SignalTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (signo, action)) in self.entries.iter().enumerate() {
            let name = Signal::try_from(*signo).map(Signal::as_str).unwrap_or("?");
            write!(f, "{}{name} ({signo}): {action}", if i == 0 { "" } else { ", " })?;
        }
        Ok(())
    }
}

/// What is wrong with a `hook-master-start` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// `exec:…`, `call:…` and the other uWSGI hook actions.
    #[error(
        "hook action `{0}` is not supported: zergpool's hook-master-start only maps signals \
         (unix_signal:N FUNCTION); run commands from your service manager instead"
    )]
    UnsupportedAction(String),
    /// Not `ACTION:ARGUMENTS`, or not `N FUNCTION` after `unix_signal:`.
    #[error("expected `unix_signal:N FUNCTION`, for example `unix_signal:15 gracefully_kill_them_all`")]
    Malformed,
    /// N is not a signal number.
    #[error("`{0}` is not a signal number")]
    NotASignal(String),
    /// N cannot be handled.
    #[error("signal {0} cannot be caught, so it cannot be mapped")]
    Uncatchable(String),
    /// A function other than the four master functions.
    #[error(
        "unknown function `{0}`; expected gracefully_kill_them_all, kill_them_all, grace_them_all or reap_them_all"
    )]
    UnknownFunction(String),
}

/// Parses `unix_signal:N FUNCTION`, the value of `hook-master-start`.
pub fn parse_master_start_hook(value: &str) -> Result<(i32, SignalAction), HookError> {
    let (action, args) = value.trim().split_once(':').ok_or(HookError::Malformed)?;
    if action != "unix_signal" {
        return Err(HookError::UnsupportedAction(action.to_owned()));
    }
    let mut words = args.split_whitespace();
    let (Some(number), Some(function), None) = (words.next(), words.next(), words.next()) else {
        return Err(HookError::Malformed);
    };
    let signal = number
        .parse::<i32>()
        .ok()
        .and_then(|n| Signal::try_from(n).ok())
        .ok_or_else(|| HookError::NotASignal(number.to_owned()))?;
    if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGILL | Signal::SIGFPE | Signal::SIGSEGV) {
        return Err(HookError::Uncatchable(format!("{number} ({})", signal.as_str())));
    }
    let action = SignalAction::from_uwsgi(function).ok_or_else(|| HookError::UnknownFunction(function.to_owned()))?;
    Ok((signal as i32, action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let t = SignalTable::default();
        assert_eq!(t.action(15), Some(SignalAction::GracefulStop));
        assert_eq!(t.action(2), Some(SignalAction::GracefulStop));
        assert_eq!(t.action(3), Some(SignalAction::ImmediateStop));
        assert_eq!(t.action(1), Some(SignalAction::GracefulReload));
        assert_eq!(t.action(10), Some(SignalAction::ReopenLog), "SIGUSR1");
        assert_eq!(t.action(12), None);
        assert_eq!(t.iter().map(|(s, _)| s).collect::<Vec<_>>(), [1, 2, 3, 10, 15]);
        assert_eq!(
            t.to_string(),
            "SIGHUP (1): graceful reload, SIGINT (2): graceful stop, SIGQUIT (3): immediate stop, SIGUSR1 (10): reopen the log, SIGTERM (15): graceful stop"
        );
    }

    #[test]
    fn hooks_as_galaxy_writes_them() {
        assert_eq!(
            parse_master_start_hook("unix_signal:2 gracefully_kill_them_all"),
            Ok((2, SignalAction::GracefulStop))
        );
        assert_eq!(parse_master_start_hook("unix_signal:15   kill_them_all "), Ok((15, SignalAction::ImmediateStop)));
        assert_eq!(parse_master_start_hook("unix_signal:1 grace_them_all"), Ok((1, SignalAction::GracefulReload)));
        assert_eq!(parse_master_start_hook("unix_signal:10 reap_them_all"), Ok((10, SignalAction::Reload)));
    }

    #[test]
    fn bad_hooks() {
        use HookError::*;
        let cases: &[(&str, HookError)] = &[
            ("unix_signal:15 stop_everything", UnknownFunction("stop_everything".into())),
            ("exec:touch /tmp/x", UnsupportedAction("exec".into())),
            ("unix_signal:15", Malformed),
            ("unix_signal:15 grace_them_all extra", Malformed),
            ("no colon", Malformed),
            ("unix_signal:TERM grace_them_all", NotASignal("TERM".into())),
            ("unix_signal:99 grace_them_all", NotASignal("99".into())),
            ("unix_signal:9 grace_them_all", Uncatchable("9 (SIGKILL)".into())),
        ];
        for (value, expected) in cases {
            assert_eq!(&parse_master_start_hook(value).unwrap_err(), expected, "{value}");
        }
    }

    #[test]
    fn last_mapping_wins() {
        let mut t = SignalTable::default();
        t.set(15, SignalAction::Reload);
        t.set(10, SignalAction::GracefulReload);
        t.set(15, SignalAction::ImmediateStop);
        assert_eq!(t.action(15), Some(SignalAction::ImmediateStop));
        assert_eq!(t.iter().map(|(s, _)| s).collect::<Vec<_>>(), [1, 2, 3, 10, 15]);
    }
}
