//! A private nginx in front of a pool's uwsgi socket, for the tests: its own
//! prefix folder (pid, logs, temporary files), a loopback port, stopped by pid
//! when dropped (`config/nginx/test-nginx.conf.template`).

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use super::Proc;

const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/nginx/test-nginx.conf.template");
const T: Duration = Duration::from_secs(20);

/// A private nginx: its own prefix folder, one process (`master_process off`), a
/// loopback port; killed by pid on drop (the `proc` field drops before `prefix`).
pub struct Nginx {
    pub proc: Proc,
    pub port: u16,
    pub prefix: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx in front of `upstream` (`127.0.0.1:PORT` or `unix:/path`).
    /// A free port is picked by binding port 0 and closing; should another process
    /// take it before nginx binds, nginx exits and the next attempt picks another.
    pub fn start(upstream: &str) -> Nginx {
        Self::start_with(upstream, "")
    }

    /// [`Nginx::start`] with `extra` directives in the location (`uwsgi_param`s).
    pub fn start_with(upstream: &str, extra: &str) -> Nginx {
        Self::start_full(upstream, extra, "")
    }

    /// [`Nginx::start_with`] with more `locations` in the server.
    pub fn start_full(upstream: &str, extra: &str, locations: &str) -> Nginx {
        let template = fs::read_to_string(TEMPLATE).expect("read the nginx test template");
        let mut last_log = String::new();
        for _ in 0..3 {
            let prefix = tempfile::tempdir().expect("tempdir");
            let dir = prefix.path().to_str().expect("UTF-8 temp path").to_owned();
            let port = free_port();
            let conf = template
                .replace("@PREFIX@", &dir)
                .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
                .replace("@UPSTREAM@", upstream)
                .replace("@EXTRA@", extra)
                // One line: the placeholder's own mention in the template's
                // comment is replaced too.
                .replace("@LOCATIONS@", &locations.replace('\n', " "));
            let conf_path = prefix.path().join("nginx.conf");
            fs::write(&conf_path, conf).expect("write nginx.conf");
            let mut cmd = Command::new("nginx");
            cmd.arg("-p").arg(&dir).arg("-c").arg(&conf_path).arg("-e").arg(prefix.path().join("error.log"));
            let mut proc = Proc::spawn(cmd, false);
            let ready = super::wait_until(T, || {
                TcpStream::connect(("127.0.0.1", port)).is_ok() || proc.child.try_wait().ok().flatten().is_some()
            });
            if ready && proc.child.try_wait().ok().flatten().is_none() {
                return Nginx { proc, port, prefix };
            }
            last_log =
                format!("{}\n{}", proc.log(), fs::read_to_string(prefix.path().join("error.log")).unwrap_or_default());
        }
        panic!("nginx did not start:\n{last_log}");
    }

    /// nginx's error log, after anything it printed itself.
    pub fn error_log(&self) -> String {
        let own = fs::read_to_string(self.prefix.path().join("error.log")).unwrap_or_default();
        format!("{}{own}", self.proc.log())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self, target: &str) -> String {
        format!("http://127.0.0.1:{}{target}", self.port)
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind port 0").port()
}
