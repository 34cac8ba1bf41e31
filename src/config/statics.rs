//! The `static-*` options, parsed once into a typed [`StaticConfig`] (no file
//! system access), and the separate step that resolves its folders
//! ([`StaticConfig::resolve`]), run when the pool binds and again on SIGHUP.
//!
//! Resolution rules (`docs/ARCHITECTURE.md`, static-map):
//! * every folder kept (mapping roots, `static-safe`, `static-gzip-dir`) is made
//!   canonical (absolute, no symlink, no `..`); relative ones are resolved against
//!   the pool's working directory (after `chdir`);
//! * a folder that does not exist is a loud `warn` and that line is skipped, as a
//!   deploy may create it later (uWSGI resolves lazily at the first request; here
//!   a SIGHUP picks it up);
//! * a folder that exists but cannot be used (permission denied, not a folder, a
//!   loop of symlinks) is an error naming the option and where it was given: the
//!   pool does not start (exit 64), and a SIGHUP keeps the maps in use;
//! * mappings are kept in uWSGI's lookup order: every `static-map` in declaration
//!   order, then every `static-map2`; mappings with the same mount point form a
//!   search path.

use std::fs;
use std::io;
use std::path::PathBuf;

use regex::Regex;

use super::options::truthy;
use super::{ConfigError, ConfigOption, OptionList};
use crate::offload::path::mount_segments;
use crate::offload::StaticOptions;
use crate::proto::{ExpiresRule, StaticMount, StaticSettings};

/// Every `static-*` option, typed and checked; folders not yet resolved.
#[derive(Debug, Clone, Default)]
pub struct StaticConfig {
    /// `static-map` then `static-map2` lines, with the option each came from.
    maps: Vec<(StaticMount, ConfigOption)>,
    /// `static-gzip-dir` folders as given.
    gzip_dirs: Vec<ConfigOption>,
    /// `static-safe` folders as given.
    safe: Vec<ConfigOption>,
    /// Everything that needs no file system: index names, expiry rules (each
    /// pattern compiled once here), gzip flags and extensions, the cache time.
    plain: StaticSettings,
}

impl StaticConfig {
    /// Reads every static option of the list.
    ///
    /// `static-map`/`static-map2` (`/MOUNT=PATH`), `static-index` (a file name),
    /// `static-expires`/`static-expires-uri` (`REGEX SECONDS`), `static-gzip-all`,
    /// `static-gzip-dir` (a directory), `static-gzip-ext` (an extension, with or
    /// without the dot), `static-safe` (a directory), `static-cache-paths`
    /// (seconds, `0` turns the cache off). `honour-range` (ranges are always
    /// honoured) and `offload-threads` (files are sent from the pool's runtime) are
    /// checked and have no effect.
    pub fn parse(list: &OptionList) -> Result<StaticConfig, ConfigError> {
        let mut c = StaticConfig::default();
        for (key, whole_path) in [("static-map", false), ("static-map2", true)] {
            for o in list.all(key) {
                c.maps.push((parse_mapping(o, whole_path)?, o.clone()));
            }
        }
        for o in list.all("static-index") {
            let name = o.value.trim();
            if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
                return Err(ConfigError::bad(o, "expected a file name such as index.html"));
            }
            c.plain.index.push(name.to_owned());
        }
        for (key, by_uri) in [("static-expires", false), ("static-expires-uri", true)] {
            for o in list.all(key) {
                c.plain.expires.push(parse_expires(o, by_uri)?);
            }
        }
        c.plain.gzip_all = list.last("static-gzip-all").is_some_and(|o| truthy(&o.value));
        for (key, dirs) in [("static-gzip-dir", &mut c.gzip_dirs), ("static-safe", &mut c.safe)] {
            for o in list.all(key) {
                if o.value.trim().is_empty() {
                    return Err(ConfigError::bad(o, "expected a directory"));
                }
                dirs.push(o.clone());
            }
        }
        for o in list.all("static-gzip-ext") {
            let ext = o.value.trim().trim_start_matches('.');
            if ext.is_empty() || ext.contains('/') {
                return Err(ConfigError::bad(o, "expected a file extension such as css or .css"));
            }
            c.plain.gzip_exts.push(ext.to_owned());
        }
        if let Some(o) = list.last("static-cache-paths") {
            let seconds: u32 = o.value.trim().parse().map_err(|_| {
                ConfigError::bad(o, "expected how many seconds a resolved path stays cached (0 turns the cache off)")
            })?;
            c.plain.cache_seconds = Some(seconds);
        }
        if let Some(o) = list.last("offload-threads") {
            if o.value.trim().parse::<u32>().is_err() {
                return Err(ConfigError::bad(o, "expected a number of threads (accepted and ignored)"));
            }
        }
        Ok(c)
    }

    /// Whether no `static-map`/`static-map2` is configured.
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    /// The mappings in lookup order, folders as given.
    pub fn mounts(&self) -> impl Iterator<Item = &StaticMount> {
        self.maps.iter().map(|(m, _)| m)
    }

    /// The file-system step: makes every folder canonical (see the module docs for
    /// what is skipped and what is an error) and builds the settings that serve
    /// and that WELCOME carries.
    pub fn resolve(&self) -> Result<StaticOptions, ConfigError> {
        let mut settings = self.plain.clone();
        for (mount, o) in &self.maps {
            if let Some(root) = canonical(o, &mount.root, Want::DirOrFile)? {
                settings.maps.push(StaticMount { root, ..mount.clone() });
            }
        }
        for (options, out) in [(&self.gzip_dirs, &mut settings.gzip_dirs), (&self.safe, &mut settings.safe)] {
            for o in options {
                if let Some(dir) = canonical(o, o.value.trim(), Want::Dir)? {
                    out.push(dir);
                }
            }
        }
        Ok(StaticOptions::from_settings(&settings))
    }
}

fn parse_mapping(o: &ConfigOption, whole_path: bool) -> Result<StaticMount, ConfigError> {
    let Some((mount, target)) = o.value.split_once('=') else {
        return Err(ConfigError::bad(o, "expected /MOUNT=PATH, such as /static=/srv/app/static"));
    };
    let (mount, target) = (mount.trim(), target.trim());
    mount_segments(mount).map_err(|reason| ConfigError::bad(o, reason))?;
    if target.is_empty() {
        return Err(ConfigError::bad(o, "the path after `=` is empty"));
    }
    Ok(StaticMount { mount: mount.to_owned(), root: target.to_owned(), whole_path })
}

fn parse_expires(o: &ConfigOption, by_uri: bool) -> Result<ExpiresRule, ConfigError> {
    let value = o.value.trim();
    let Some((pattern, secs)) = value.rsplit_once(char::is_whitespace) else {
        return Err(ConfigError::bad(o, "expected REGEX SECONDS, such as \\.css$ 86400"));
    };
    // At most u32::MAX seconds (about 136 years), as the protocol carries it.
    let seconds = secs
        .parse::<u32>()
        .ok()
        .ok_or_else(|| ConfigError::bad(o, "expected REGEX SECONDS with a whole number of seconds"))?;
    let pattern = pattern.trim_end();
    Regex::new(pattern).map_err(|e| ConfigError::bad(o, format!("bad regular expression: {e}")))?;
    Ok(ExpiresRule { by_uri, regex: pattern.to_owned(), seconds })
}

/// What a static folder option may name.
#[derive(Clone, Copy)]
enum Want {
    Dir,
    DirOrFile,
}

/// The canonical form of `path`; `None` (after a warning) when it does not exist.
fn canonical(o: &ConfigOption, path: &str, want: Want) -> Result<Option<String>, ConfigError> {
    let unusable = |reason: String| ConfigError::Unusable {
        key: o.key.clone(),
        value: o.value.clone(),
        origin: o.origin.clone(),
        reason,
    };
    let real = match fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(option = %o.key, value = %o.value, origin = %o.origin,
                "{path} does not exist; this line is skipped until it does (a SIGHUP looks again)");
            return Ok(None);
        }
        Err(e) => return Err(unusable(format!("cannot resolve {path}: {e}"))),
    };
    let md = fs::metadata(&real).map_err(|e| unusable(format!("cannot read {}: {e}", real.display())))?;
    match want {
        Want::Dir | Want::DirOrFile if md.is_dir() => {
            // A folder that cannot be listed cannot serve anything (EACCES).
            fs::read_dir(&real).map_err(|e| unusable(format!("cannot read the folder {}: {e}", real.display())))?;
        }
        Want::DirOrFile if md.is_file() => {
            fs::File::open(&real).map_err(|e| unusable(format!("cannot read {}: {e}", real.display())))?;
        }
        Want::Dir => return Err(unusable(format!("{} is not a folder", real.display()))),
        Want::DirOrFile => return Err(unusable(format!("{} is neither a folder nor a regular file", real.display()))),
    }
    path_string(real).map(Some).map_err(unusable)
}

fn path_string(p: PathBuf) -> Result<String, String> {
    p.into_os_string().into_string().map_err(|p| format!("{} is not valid UTF-8", PathBuf::from(p).display()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn list(pairs: &[(&str, &str)]) -> OptionList {
        crate::config::options::command_line_list(pairs)
    }

    fn resolve(pairs: &[(&str, &str)]) -> Result<StaticOptions, ConfigError> {
        StaticConfig::parse(&list(pairs))?.resolve()
    }

    #[test]
    fn mappings_keep_uwsgi_order_and_skip_missing_dirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::create_dir(&a).expect("mkdir");
        fs::create_dir(&b).expect("mkdir");
        fs::write(a.join("f.ico"), b"x").expect("write");
        let opts = resolve(&[
            ("static-map2", &format!("/m2={}", b.display())),
            ("static-map", &format!("/s={}", a.display())),
            ("static-map", &format!("/missing={}/nope", dir.path().display())),
            ("static-map", &format!("/s/={}", b.display())),
            ("static-map", &format!("/favicon.ico={}/f.ico", a.display())),
        ])
        .expect("valid options");
        let mounts: Vec<_> = opts.mappings().iter().map(|m| (m.mount.as_str(), m.whole_path, m.root_is_file)).collect();
        assert_eq!(
            mounts,
            [("/s", false, false), ("/s/", false, false), ("/favicon.ico", false, true), ("/m2", true, false)]
        );
        assert!(opts.mappings().iter().all(|m| m.root.is_absolute()));
        assert!(!opts.is_empty());
        assert!(resolve(&[]).expect("empty").is_empty());
    }

    #[test]
    fn bad_values_are_errors_without_touching_the_file_system() {
        for (k, v) in [
            ("static-map", "/s"),
            ("static-map", "s=/tmp"),
            ("static-map", "/s="),
            ("static-map", "/a/../b=/tmp"),
            ("static-index", "a/b.html"),
            ("static-index", ""),
            ("static-expires", "\\.css$"),
            ("static-expires", "\\.css$ soon"),
            ("static-expires", "( 10"),
            ("static-expires-uri", "x -1"),
            ("static-gzip-ext", "."),
            ("static-safe", " "),
            ("static-cache-paths", "soon"),
            ("offload-threads", "many"),
        ] {
            let err = StaticConfig::parse(&list(&[(k, v)])).expect_err(v);
            assert!(matches!(err, ConfigError::BadValue { .. }), "{k} {v}: {err}");
            assert!(err.to_string().starts_with("command line (argument 1): bad value"), "{err}");
        }
    }

    #[test]
    fn a_folder_that_exists_but_cannot_be_used_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        fs::write(&file, b"x").expect("write");
        // A file where a folder is wanted.
        let err = resolve(&[("static-safe", &file.display().to_string())]).expect_err("a file");
        assert!(matches!(err, ConfigError::Unusable { .. }), "{err}");
        assert!(err.to_string().contains("is not a folder"), "{err}");
        // A path through a file (ENOTDIR), not a missing one.
        let through = format!("/s={}/below", file.display());
        let err = resolve(&[("static-map", &through)]).expect_err("through a file");
        assert!(err.to_string().starts_with("command line (argument 1): cannot use"), "{err}");
    }

    #[test]
    fn gzip_and_expires_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = fs::canonicalize(dir.path()).expect("canonical");
        fs::create_dir(real.join("gz")).expect("mkdir");
        let opts = resolve(&[
            ("static-gzip-ext", ".css"),
            ("static-gzip-ext", "js"),
            ("static-gzip-dir", &real.join("gz").display().to_string()),
            ("static-expires", "\\.png$ 100"),
            ("static-expires-uri", "^/static/ 200"),
            ("honour-range", ""),
            ("offload-threads", "4"),
        ])
        .expect("valid options");
        assert!(opts.gzip_applies(Path::new("/x/a.css")));
        assert!(opts.gzip_applies(Path::new("/x/a.min.js")));
        assert!(!opts.gzip_applies(Path::new("/x/acss")));
        assert!(!opts.gzip_applies(Path::new("/x/a.png")));
        assert!(opts.gzip_applies(&real.join("gz").join("a.png")));
        assert!(!opts.gzip_applies(&real.join("gzz").join("a.png")));
        assert_eq!(opts.max_age(Path::new("/x/a.png"), Some("/static/a.png")), Some(100));
        assert_eq!(opts.max_age(Path::new("/x/a.gif"), Some("/static/a.gif")), Some(200));
        assert_eq!(opts.max_age(Path::new("/x/a.gif"), Some("/other/a.gif")), None);
        let all = resolve(&[("static-gzip-all", "")]).expect("valid");
        assert!(all.gzip_applies(Path::new("/x/anything")));
        let off = resolve(&[("static-gzip-all", "false")]).expect("valid");
        assert!(!off.gzip_applies(Path::new("/x/anything")));
    }
}
