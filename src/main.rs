//! The `zergpool` binary: parse options, build the configuration, install
//! tracing, bind, run, and map errors to exit codes (64 for a bad configuration,
//! 1 for a failure to start or run). Nothing else lives here.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use zergpool::config::cli::{parse_args, CliRequest};
use zergpool::config::{options, Config};
use zergpool::error_chain;
use zergpool::pool::{Pool, PoolError};

/// sysexits' EX_USAGE: the configuration is wrong.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let (list, check_only) = match parse_args(std::env::args().skip(1)) {
        Ok(CliRequest::Run(list)) => (list, false),
        Ok(CliRequest::CheckConfig(list)) => (list, true),
        Ok(CliRequest::Help) => {
            print!("{}", options::help_text());
            return ExitCode::SUCCESS;
        }
        Ok(CliRequest::PrintOptions(list)) => {
            for o in &list.0 {
                let origin = o.origin.to_string();
                println!("{}", serde_json::json!({ "key": o.key, "value": o.value, "origin": origin }));
            }
            return ExitCode::SUCCESS;
        }
        Ok(CliRequest::Version) => {
            println!("zergpool {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("zergpool: {}", error_chain(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Before the options get their meaning: parsing may warn (ignored ciphers).
    init_tracing(["logto", "logto2", "daemonize", "daemonize2"].iter().any(|k| list.last(k).is_some()));
    let mut config = match Config::from_options(&list) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("zergpool: {}", error_chain(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Options given without effect: one line per kind, once.
    for notice in config.notices() {
        tracing::warn!("{notice}");
    }
    if check_only {
        print!("{}", list.render());
        println!("; signals: {}", config.signals);
        return ExitCode::SUCCESS;
    }
    // daemonize: this process starts the daemon (itself again, in a process
    // group of its own, detached from the terminal) and exits; the daemon logs
    // to the file (logto, or logto2 for daemonize2).
    if let Some((log, after_drop)) = config.daemonize.clone() {
        if std::env::var_os(DAEMONIZED).is_none() {
            return daemonize(&log, after_drop);
        }
        if after_drop {
            config.logto2 = Some(log);
        } else {
            config.logto = Some(log);
        }
    }
    // As uWSGI's master: relative paths (static-map, sockets, certificates, the
    // application) resolve from here, for the pool and the zerglings it spawns.
    if let Some(dir) = &config.chdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            eprintln!("zergpool: chdir {}: {e}; fix the `chdir` option", dir.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    // logto: opened as the user the pool starts as (before the privilege drop).
    if let Some(path) = &config.logto {
        if let Err(e) = zergpool::logfile::log_to(path) {
            eprintln!("zergpool: logto {}: {e}; fix the `logto` option", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    if let Some(path) = &config.events {
        if let Err(e) = zergpool::events::open(path) {
            eprintln!("zergpool: events {}: {e}; fix the `events` option", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    // systemd's socket activation: taken before any thread exists (the
    // variables are removed).
    let inherited = zergpool::proto::sys::take_inherited();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("zergpool: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let logto2 = config.logto2.clone();
        let pool = match Pool::bind_inherited(config, inherited) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("{}", error_chain(&e));
                // What the configuration names cannot be used (a certificate, a
                // static folder): the operator's to fix, like any bad option.
                return match e {
                    PoolError::Config(_) | PoolError::Tls(_) => ExitCode::from(EXIT_CONFIG),
                    _ => ExitCode::FAILURE,
                };
            }
        };
        // logto2: opened as the user the pool became.
        if let Some(path) = &logto2 {
            if let Err(e) = zergpool::logfile::log_to(path) {
                tracing::error!("logto2 {}: {e}; fix the `logto2` option (the folder must be writable by the user the pool runs as)", path.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        }
        match pool.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{}", error_chain(&e));
                ExitCode::FAILURE
            }
        }
    })
}

/// Set in the daemon `daemonize` starts (so that it does not start another).
const DAEMONIZED: &str = "ZERGPOOL_DAEMONIZED";

/// Starts this program again in the background with the same arguments, its
/// output going to `log` (for `daemonize2`, nowhere until the daemon opens
/// `log` after dropping privileges), and exits.
fn daemonize(log: &std::path::Path, after_drop: bool) -> ExitCode {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let started = (|| -> std::io::Result<u32> {
        let (out, err) = if after_drop {
            (Stdio::null(), Stdio::null())
        } else {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
            (Stdio::from(f.try_clone()?), Stdio::from(f))
        };
        let child = Command::new(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env(DAEMONIZED, "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()?;
        Ok(child.id())
    })();
    match started {
        Ok(pid) => {
            eprintln!("zergpool: daemonized (pid {pid}), logging to {}", log.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("zergpool: daemonize {}: {e}", log.display());
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(to_file: bool) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("ZERGPOOL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // The writer follows `logto`/`logto2` once they are opened (logfile).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(zergpool::logfile::LogWriter)
        .with_ansi(std::io::stderr().is_terminal() && !to_file)
        .init();
}
