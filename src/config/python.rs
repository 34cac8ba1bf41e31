//! uWSGI's application options, for Python WSGI and ASGI applications: when a
//! configuration names an application (`module`, `wsgi-file`/`wsgi`, `mount`) and
//! no `zergling` command, the pool runs `processes` Python zerglings (the
//! `zergling` command of the `zergling` Python package) with these options.
//!
//! | uWSGI option | what the pool does |
//! | --- | --- |
//! | `module`, `wsgi` | `zergling --module VALUE` |
//! | `wsgi-file` | `zergling --wsgi-file VALUE` |
//! | `callable` | `--callable VALUE` |
//! | `mount` (repeatable) | `--mount /PREFIX=APP` |
//! | `manage-script-name` | accepted: `SCRIPT_NAME`/`PATH_INFO` are always split at the mount |
//! | `virtualenv`, `venv`, `home`, `pyhome` | the command is `VENV/bin/zergling` (else `zergling` on `PATH`) |
//! | `pythonpath`, `python-path`, `pp` (repeatable) | `--pythonpath DIR` |
//! | `env` (repeatable) | `--env KEY=VALUE` |
//! | `processes`, `workers` | how many zerglings (default 1) |
//! | `threads` | `--threads N` (default 1) |
//! | `interface` (zergpool's own: `wsgi`, `asgi`, `auto`) | `--interface VALUE` (default `auto`: an `async def` callable, or an object whose `__call__` is one, is ASGI) |
//! | `lifespan` (zergpool's own: `auto`, `on`, `off`) | `--lifespan VALUE`: the ASGI lifespan protocol |
//! | `asgi-loop` (zergpool's own: `auto`, `asyncio`, `uvloop`) | `--loop VALUE`: the ASGI event loop (auto: uvloop when installed) |
//! | `enable-threads`, `need-app`, `single-interpreter` | accepted: threads always work, a zergling whose application does not load always exits |
//! | `chdir` | the pool itself changes to it before binding anything (uWSGI's master does), so relative paths resolve as they did under uWSGI; zerglings inherit it |
//!
//! Every other application-side option is reported once, by name, as without
//! effect.

use std::path::PathBuf;

use super::{ConfigError, ConfigOption, OptionList};

/// Options this module gives a meaning; the rest of `Kind::Application` is
/// reported as ignored.
pub(crate) const HANDLED: &[&str] = &[
    "module",
    "wsgi",
    "wsgi-file",
    "callable",
    "mount",
    "manage-script-name",
    "virtualenv",
    "venv",
    "home",
    "pyhome",
    "pythonpath",
    "python-path",
    "pp",
    "env",
    "processes",
    "workers",
    "threads",
    "interface",
    "lifespan",
    "asgi-loop",
    "enable-threads",
    "need-app",
    "single-interpreter",
    "chdir",
];

/// A Python application the pool runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonApp {
    /// The virtualenv whose `bin/zergling` runs it (`virtualenv`/`venv`/`home`).
    pub virtualenv: Option<PathBuf>,
    /// How many zergling processes (`processes`/`workers`, default 1).
    pub processes: usize,
    /// Python threads per process (`threads`, default 1).
    pub threads: usize,
    /// The arguments of every zergling after the command itself.
    pub args: Vec<String>,
}

impl PythonApp {
    /// The application the options name, if any.
    pub fn from_options(list: &OptionList) -> Result<Option<PythonApp>, ConfigError> {
        let mut args = Vec::new();
        let mut named = false;
        if let Some(o) = last_of(list, &["module", "wsgi"]) {
            args.extend(["--module".to_owned(), non_empty(o)?.to_owned()]);
            named = true;
        }
        if let Some(o) = list.last("wsgi-file") {
            args.extend(["--wsgi-file".to_owned(), non_empty(o)?.to_owned()]);
            named = true;
        }
        for o in list.all("mount") {
            let value = non_empty(o)?;
            if !value.split_once('=').is_some_and(|(p, app)| p.starts_with('/') && !app.trim().is_empty()) {
                return Err(ConfigError::bad(o, "expected /PREFIX=pkg.mod:app"));
            }
            args.extend(["--mount".to_owned(), value.to_owned()]);
            named = true;
        }
        if !named {
            return Ok(None);
        }
        if let Some(o) = list.last("callable") {
            args.extend(["--callable".to_owned(), non_empty(o)?.to_owned()]);
        }
        for key in ["pythonpath", "python-path", "pp"] {
            for o in list.all(key) {
                args.extend(["--pythonpath".to_owned(), non_empty(o)?.to_owned()]);
            }
        }
        for o in list.all("env") {
            if !o.value.split_once('=').is_some_and(|(k, _)| !k.is_empty()) {
                return Err(ConfigError::bad(o, "expected KEY=VALUE"));
            }
            args.extend(["--env".to_owned(), o.value.clone()]);
        }
        let count = |keys: &[&str], what: &str| -> Result<usize, ConfigError> {
            let Some(o) = last_of(list, keys) else {
                return Ok(1);
            };
            o.value
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| ConfigError::bad(o, format!("expected a number of {what} from 1 to 1024")))
        };
        for (key, flag, allowed) in [
            ("interface", "--interface", &["auto", "wsgi", "asgi"][..]),
            ("lifespan", "--lifespan", &["auto", "on", "off"][..]),
            ("asgi-loop", "--loop", &["auto", "asyncio", "uvloop"][..]),
        ] {
            if let Some(o) = list.last(key) {
                let v = o.value.trim();
                if !allowed.contains(&v) {
                    return Err(ConfigError::bad(o, format!("expected one of {}", allowed.join(", "))));
                }
                args.extend([flag.to_owned(), v.to_owned()]);
            }
        }
        let processes = count(&["processes", "workers"], "processes")?;
        let threads = count(&["threads"], "threads")?;
        args.extend(["--threads".to_owned(), threads.to_string(), "--processes".to_owned(), processes.to_string()]);
        let virtualenv = last_of(list, &["virtualenv", "venv", "home", "pyhome"])
            .map(|o| non_empty(o).map(PathBuf::from))
            .transpose()?;
        Ok(Some(PythonApp { virtualenv, processes, threads, args }))
    }

    /// The command of one zergling, as words.
    pub fn command(&self) -> Vec<String> {
        let program = match &self.virtualenv {
            Some(v) => v.join("bin").join("zergling").display().to_string(),
            None => "zergling".to_owned(),
        };
        std::iter::once(program).chain(self.args.iter().cloned()).collect()
    }
}

/// The last option given under any of `keys` (aliases: the last one wins).
fn last_of<'a>(list: &'a OptionList, keys: &[&str]) -> Option<&'a ConfigOption> {
    list.0.iter().rev().find(|o| keys.contains(&o.key.as_str()))
}

fn non_empty(o: &ConfigOption) -> Result<&str, ConfigError> {
    let v = o.value.trim();
    if v.is_empty() {
        return Err(ConfigError::MissingValue { key: o.key.clone(), origin: o.origin.clone() });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pairs: &[(&str, &str)]) -> OptionList {
        crate::config::options::command_line_list(pairs)
    }

    #[test]
    fn the_seed_options_become_a_zergling_command() {
        let app = PythonApp::from_options(&list(&[
            ("module", "galaxy.webapps.galaxy.buildapp:uwsgi_app()"),
            ("virtualenv", ".venv"),
            ("pythonpath", "lib"),
            ("processes", "2"),
            ("threads", "4"),
            ("env", "A=b=c"),
        ]))
        .expect("valid")
        .expect("an application");
        assert_eq!((app.processes, app.threads), (2, 4));
        assert_eq!(
            app.command().join(" "),
            ".venv/bin/zergling --module galaxy.webapps.galaxy.buildapp:uwsgi_app() --pythonpath lib --env A=b=c \
             --threads 4 --processes 2"
        );
        assert_eq!(PythonApp::from_options(&list(&[("threads", "4")])).expect("valid"), None);
    }

    #[test]
    fn bad_values_name_the_option() {
        for (k, v) in [("mount", "app=x"), ("env", "=x"), ("processes", "0"), ("threads", "many")] {
            let err = PythonApp::from_options(&list(&[("module", "m"), (k, v)])).expect_err(v);
            assert!(err.to_string().starts_with("command line (argument 2): bad value"), "{err}");
        }
    }
}
