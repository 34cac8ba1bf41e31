//! Configuration files through the real binary: `zergpool --check-config` with YAML and
//! INI files in uWSGI's dialect, the seed's Galaxy example, the shipped `config/` files,
//! broken files (exit 64 with file and line) and placeholders.
//!
//! `--check-config` binds nothing and spawns nothing, so these tests run no pool; the
//! fixtures are under `tests/data/config/`, files that need a known folder are written
//! to a temporary one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use zergpool::config::cli::{parse_args_with_env, CliRequest};
use zergpool::config::{Config, SignalAction};

/// Runs `zergpool ARGS` from the crate root.
fn zergpool(args: &[&str]) -> Output {
    zergpool_env(args, &[])
}

fn zergpool_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zergpool"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("ZERGPOOL_LOG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run zergpool")
}

fn fixture(name: &str) -> String {
    format!("tests/data/config/{name}")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `key = value` lines of `--check-config`'s output, in order.
fn effective(o: &Output) -> Vec<(String, String)> {
    assert_eq!(o.status.code(), Some(0), "stdout:\n{}\nstderr:\n{}", stdout(o), stderr(o));
    stdout(o)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with([';', '[']))
        .map(|l| {
            let (k, v) = l.split_once(" = ").unwrap_or_else(|| panic!("not `key = value`: {l:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Asserts a failed check: exit 64 and a message containing every needle.
fn fails_with(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(64), "stdout:\n{}\nstderr:\n{err}", stdout(o));
    for n in needles {
        assert!(err.contains(n), "`{n}` missing from:\n{err}");
    }
}

/// The seed's example as command-line flags, in the order of the files.
const SEED_FLAGS: &[&str] = &[
    "--module=galaxy.webapps.galaxy.buildapp:uwsgi_app()",
    "--virtualenv",
    ".venv",
    "--pythonpath",
    "lib",
    "--master=true",
    "--enable-threads=true",
    "--processes",
    "2",
    "--threads",
    "4",
    "--offload-threads",
    "1",
    "--die-on-term=true",
    "--hook-master-start",
    "unix_signal:2 gracefully_kill_them_all",
    "--hook-master-start",
    "unix_signal:15 gracefully_kill_them_all",
    "--socket",
    "127.0.0.1:4001",
    "--http",
    ":8080",
    "--https",
    ":8443,server.crt,server.key",
    "--static-map",
    "/static/style=static/style/blue",
    "--static-map",
    "/static=static",
    // `mule` takes an optional value, so only with `=` (as in uWSGI).
    "--mule=lib/galaxy/main.py",
    "--mule=lib/galaxy/main.py",
    "--farm",
    "job-handlers:1,2",
];

#[test]
fn the_seed_example_loads_with_one_report_of_the_application_options() {
    let out = zergpool(&["--check-config", "--yaml", &fixture("seed.yml")]);
    let options = effective(&out);
    assert_eq!(options.len(), 19, "{options:?}");
    let maps: Vec<_> = options.iter().filter(|(k, _)| k == "static-map").map(|(_, v)| v.as_str()).collect();
    assert_eq!(maps, ["/static/style=static/style/blue", "/static=static"]);

    let err = stderr(&out);
    assert_eq!(err.matches("application-side options ignored").count(), 1, "{err}");
    let report = err.lines().find(|l| l.contains("application-side options ignored")).unwrap_or_default();
    for key in ["mule", "farm"] {
        assert!(report.contains(&format!("`{key}` (tests/data/config/seed.yml:")), "{key} missing: {report}");
    }
    assert!(report.contains("`farm` (tests/data/config/seed.yml:36)"), "{report}");
    // The application options run the application (module, virtualenv, …).
    for kept in [
        "`master`",
        "`die-on-term`",
        "`http`",
        "`static-map`",
        "`hook-master-start`",
        "`module`",
        "`virtualenv`",
        "`pythonpath`",
        "`processes`",
        "`threads`",
        "`enable-threads`",
    ] {
        assert!(!report.contains(kept), "{kept} is not application side: {report}");
    }
    // `socket` and `https` are implemented: nothing is reported as not implemented.
    assert_eq!(err.matches("not implemented yet").count(), 0, "{err}");
    // The origins are in the listing too.
    let text = stdout(&out);
    assert!(text.contains("; tests/data/config/seed.yml:28\nhttp = :8080\n"), "{text}");
    assert!(text.contains("; signals: SIGHUP (1): graceful reload, SIGINT (2): graceful stop"), "{text}");
}

#[test]
fn the_seed_example_yields_both_static_maps() {
    let CliRequest::Run(list) =
        parse_args_with_env(["--yaml".to_string(), fixture("seed.yml")], &|_| None).expect("loads")
    else {
        panic!("not a run request")
    };
    let config = Config::from_options(&list).expect("a valid configuration");
    let maps: Vec<_> = config.statics.mounts().map(|m| (m.mount.as_str(), m.root.as_str())).collect();
    assert_eq!(maps, [("/static/style", "static/style/blue"), ("/static", "static")]);
    assert_eq!(config.signals.action(2), Some(SignalAction::GracefulStop));
    assert_eq!(config.signals.action(15), Some(SignalAction::GracefulStop));
    assert!(config.unimplemented.is_empty(), "{:?}", config.unimplemented);
    assert_eq!(config.notices().len(), 2);
}

#[test]
fn yaml_ini_lists_and_flags_give_the_same_options() {
    let from_yaml = effective(&zergpool(&["--check-config", &fixture("seed.yml")]));
    let from_lists = effective(&zergpool(&["--check-config", "--yaml", &fixture("seed-lists.yml")]));
    let from_ini = effective(&zergpool(&["--check-config", "--ini", &fixture("seed.ini")]));
    let mut args = vec!["--check-config"];
    args.extend_from_slice(SEED_FLAGS);
    let from_flags = effective(&zergpool(&args));
    assert_eq!(from_yaml.len(), 19);
    assert_eq!(from_lists, from_yaml, "YAML lists");
    assert_eq!(from_ini, from_yaml, "INI");
    assert_eq!(from_flags, from_yaml, "flags");
}

#[test]
fn files_and_flags_combine_in_the_order_given() {
    let out =
        zergpool(&["--listen", "5", "--check-config", "--yaml", &fixture("sections.yml:staging"), "--listen", "7"]);
    let options = effective(&out);
    let pairs: Vec<String> = options.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(pairs, ["listen=5", "http=127.0.0.1:9090", "listen=64", "listen=7"]);
    let text = stdout(&out);
    assert!(text.contains("; command line (argument 1)\nlisten = 5\n"), "{text}");
    assert!(text.contains("; tests/data/config/sections.yml:5\nhttp = 127.0.0.1:9090\n"), "{text}");
}

#[test]
fn the_shipped_configurations_load() {
    let demo = effective(&zergpool(&["--check-config", "config/demo.yml"]));
    let zerglings = demo.iter().filter(|(k, v)| k == "zergling" && v == "target/release/zergling-demo").count();
    assert_eq!(zerglings, 2, "{demo:?}");
    assert!(demo.contains(&("http".into(), "127.0.0.1:8080".into())));
    assert!(demo.contains(&("zerg-server".into(), "/tmp/zergpool-demo.sock".into())));

    let out = zergpool(&["--check-config", "--yaml", "config/galaxy.yml"]);
    let galaxy = effective(&out);
    assert_eq!(galaxy.iter().filter(|(k, _)| k == "static-map").count(), 3);
    assert!(galaxy.iter().all(|(k, _)| !k.contains('_')), "the galaxy: section leaked: {galaxy:?}");
    let config_dir = std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("config")).unwrap();
    let sock = format!("{}/../database/zergpool.sock", config_dir.display());
    assert!(galaxy.contains(&("zerg-server".into(), sock.clone())), "{sock} not in {galaxy:?}");
    assert_eq!(stderr(&out).matches("application-side options ignored").count(), 1);

    let out = zergpool(&["--check-config", "--ini", "config/production.ini"]);
    let production = effective(&out);
    for key in ["uid", "gid", "stats", "https", "static-map"] {
        assert!(production.iter().any(|(k, _)| k == key), "{key} missing from {production:?}");
    }
    assert_eq!(production.iter().filter(|(k, _)| k == "zergling").count(), 2);
    let ports: Vec<_> = production.iter().filter(|(k, _)| k == "shared-socket").map(|(_, v)| v.as_str()).collect();
    assert_eq!(ports, [":80", ":443"]);
    let err = stderr(&out);
    assert!(!err.contains("application-side"), "{err}");

    // And through the library, the typed view.
    let production_ini = format!("{}/config/production.ini", env!("CARGO_MANIFEST_DIR"));
    let CliRequest::Run(list) = parse_args_with_env(["--ini".to_string(), production_ini], &|_| None).expect("loads")
    else {
        panic!("not a run request")
    };
    let c = Config::from_options(&list).expect("valid");
    assert_eq!(c.http, ["0.0.0.0:80".parse().unwrap()]);
    assert_eq!(c.zerglings.len(), 2);
    assert_eq!(c.statics.mounts().count(), 2);
    assert_eq!(c.signals.action(1), Some(SignalAction::GracefulReload));
}

#[test]
fn check_config_binds_nothing() {
    // The address is taken; a pool that tried to bind it would fail.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = zergpool(&["--check-config", "--http", &addr, "--zergling", "/nonexistent/zergling"]);
    assert_eq!(effective(&out), [("http".to_string(), addr), ("zergling".into(), "/nonexistent/zergling".into())]);
}

#[test]
fn broken_files_exit_64_naming_file_and_line() {
    fails_with(
        &zergpool(&["--check-config", &fixture("bad-indent.yml")]),
        &["tests/data/config/bad-indent.yml:4:", "bad indentation"],
    );
    fails_with(
        &zergpool(&["--check-config", &fixture("missing-section.yml")]),
        &["tests/data/config/missing-section.yml", "`uwsgi:`", "galaxy, other"],
    );
    fails_with(
        &zergpool(&["--check-config", "--yaml", &fixture("missing-section.yml:nowhere")]),
        &["tests/data/config/missing-section.yml: no top-level `nowhere:` section (it has: galaxy, other;"],
    );
    fails_with(
        &zergpool(&["--check-config", "--ini", &fixture("unknown-option.ini")]),
        &["tests/data/config/unknown-option.ini:3:", "unknown option `statc-map`", "did you mean `static-map`?"],
    );
    fails_with(
        &zergpool(&["--check-config", &fixture("bad-value.ini")]),
        &["tests/data/config/bad-value.ini:3:", "`lots`", "`listen`"],
    );
    fails_with(
        &zergpool(&["--check-config", &fixture("bad-hook.yml")]),
        &["tests/data/config/bad-hook.yml:3:", "unknown function `stop_everything_now`"],
    );
    // Without --check-config too: the same exit status, before anything is bound.
    fails_with(&zergpool(&[&fixture("bad-value.ini")]), &["bad-value.ini:3:"]);
    fails_with(
        &zergpool(&["--yaml", "/nonexistent/zergpool.yml"]),
        &["command line (argument 1): cannot read `/nonexistent/zergpool.yml`: No such file"],
    );
}

#[test]
fn placeholders_expand() {
    let dir = tempfile::tempdir().unwrap();
    let folder: PathBuf = std::fs::canonicalize(dir.path()).unwrap();
    let file = folder.join("site.ini");
    std::fs::write(
        &file,
        "[uwsgi]\n\
         http = 127.0.0.1:8080\n\
         set-placeholder = run=%drun\n\
         zerg-server = %(run)/zerg.sock\n\
         static-map = /static=%dstatic\n\
         static-map = /first=%(static-map)\n\
         static-map = /home=$(ZERGPOOL_TEST_HOME)/public\n\
         static-map = /unset=$(ZERGPOOL_TEST_SURELY_UNSET)\n\
         static-map = /pct=100%%/%n\n",
    )
    .unwrap();
    let out = zergpool_env(&["--check-config", file.to_str().unwrap()], &[("ZERGPOOL_TEST_HOME", "/home/galaxy")]);
    let options = effective(&out);
    let d = format!("{}/", folder.display());
    let value = |key: &str, nth: usize| options.iter().filter(|(k, _)| k == key).nth(nth).map(|(_, v)| v.clone());
    assert_eq!(value("set-placeholder", 0), Some(format!("run={d}run")));
    assert_eq!(value("zerg-server", 0), Some(format!("{d}run/zerg.sock")));
    assert_eq!(value("static-map", 0), Some(format!("/static={d}static")));
    assert_eq!(value("static-map", 1), Some(format!("/first=/static={d}static")));
    assert_eq!(value("static-map", 2), Some("/home=/home/galaxy/public".into()));
    assert_eq!(value("static-map", 3), Some("/unset=$(ZERGPOOL_TEST_SURELY_UNSET)".into()));
    assert_eq!(value("static-map", 4), Some("/pct=100%/site".into()));
}

#[test]
fn an_unknown_percent_placeholder_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("odd.yml");
    std::fs::write(&file, "uwsgi:\n  http: :8080\n  static-map: /x=a%2Fb\n").unwrap();
    let shown = file.display().to_string();
    fails_with(&zergpool(&["--check-config", &shown]), &[&format!("{shown}:3:"), "unknown placeholder `%2`"]);
}

/// What the options name but the pool cannot use (a certificate, a static folder)
/// and what does not parse (an https spec, a regex) both exit with 64 and say
/// which option, never 1.
#[test]
fn unusable_certificates_and_static_folders_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let file = file.display().to_string();
    // Parse errors: --check-config finds them, naming the argument.
    fails_with(
        &zergpool(&["--check-config", "--http", "127.0.0.1:0", "--https", "127.0.0.1:0,only-a-cert"]),
        &["command line (argument 4): bad value `127.0.0.1:0,only-a-cert` for `https`"],
    );
    fails_with(
        &zergpool(&["--check-config", "--http", "127.0.0.1:0", "--static-expires", "( 10"]),
        &["command line (argument 4)", "`static-expires`", "bad regular expression"],
    );
    // The file-system step, at bind: a missing certificate, a file where a static
    // folder is wanted.
    fails_with(
        &zergpool(&["--https", "127.0.0.1:0,/nonexistent/cert.pem,/nonexistent/key.pem"]),
        &["cannot set up TLS", "/nonexistent/cert.pem"],
    );
    fails_with(
        &zergpool(&["--http", "127.0.0.1:0", "--static-safe", &file]),
        &["command line (argument 3): cannot use", "`static-safe`", "is not a folder"],
    );
}

/// `--print-options`: the options as read (files, placeholders), one JSON object
/// per line, without their meaning checked: what the `zergling` command reads
/// uWSGI files through.
#[test]
fn print_options_lists_what_was_read_without_checking_it() {
    let out = zergpool(&["--print-options", "--yaml", &fixture("seed.yml")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert_eq!(lines.len(), 19);
    assert_eq!(lines[0]["key"], "module");
    assert_eq!(lines[0]["value"], "galaxy.webapps.galaxy.buildapp:uwsgi_app()");
    assert_eq!(lines[0]["origin"], "tests/data/config/seed.yml:10");
    // No listener, an application-only section: still printed (no meaning checked).
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("app.ini");
    std::fs::write(&ini, "[uwsgi]\nmodule = app\nthreads = 4\nenv = T=%(threads)\n").unwrap();
    let out = zergpool(&["--print-options", &ini.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(r#""key":"env""#) && stdout(&out).contains(r#""value":"T=4""#), "{}", stdout(&out));
}
