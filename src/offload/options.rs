//! The static-map options, in uWSGI's vocabulary, turned into a resolved,
//! cheap-to-clone [`StaticOptions`].
//!
//! Invariants:
//! * every directory kept here (mapping roots, `static-safe`, `static-gzip-dir`) is
//!   canonical (absolute, no symlink, no `..`) and existed at start-up; a missing one
//!   is a loud `warn` and is skipped, never an error and never resolved lazily later
//!   (uWSGI resolves lazily at the first request: a knowing difference);
//! * mappings are kept in uWSGI's lookup order: every `static-map` in declaration
//!   order, then every `static-map2`; mappings with the same mount point form a
//!   search path;
//! * relative directories are resolved against the pool's working directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use super::cache::{self, ResolutionCache};
use super::path::mount_segments;
use crate::config::options::truthy;
use crate::config::{ConfigError, ConfigOption, OptionList};

/// Most seconds `static-expires*` accepts (about 136 years).
const MAX_EXPIRES_SECS: u64 = u32::MAX as u64;

/// The resolved static-map configuration. Cloning is cheap (one `Arc`), so that each
/// request can carry it into `spawn_blocking`.
#[derive(Debug, Clone, Default)]
pub struct StaticOptions {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    mappings: Vec<Mapping>,
    index: Vec<String>,
    expires_file: Vec<ExpiresRule>,
    expires_uri: Vec<ExpiresRule>,
    gzip_all: bool,
    gzip_dirs: Vec<PathBuf>,
    gzip_exts: Vec<String>,
    safe: Vec<PathBuf>,
    /// Recent resolutions (`static-cache-paths`), shared by every request.
    cache: ResolutionCache,
    /// `static-cache-paths` as configured, to send it on to zerglings.
    cache_seconds: Option<u64>,
    /// Longest wait for a client to take more of a response (`http-timeout`);
    /// `None`: 60 s.
    send_timeout: Option<std::time::Duration>,
}

/// One `static-map` or `static-map2` line, resolved.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The mount point as configured (`/static`).
    pub mount: String,
    /// The mount point's segments (`["static"]`; `/` is `[]`).
    pub mount_segments: Vec<String>,
    /// The canonical target directory or file.
    pub root: PathBuf,
    /// Whether the target is a single file (served for the mount point itself only).
    pub root_is_file: bool,
    /// `static-map2`: the whole request path is appended to the directory, not only
    /// what follows the mount point.
    pub whole_path: bool,
}

/// One `static-expires` / `static-expires-uri` rule.
#[derive(Debug, Clone)]
struct ExpiresRule {
    regex: Regex,
    seconds: u64,
}

impl StaticOptions {
    /// Sets how long a client may take no bytes of a static response before the
    /// connection is closed (the pool's `http-timeout`). Only before the options
    /// are shared (right after they are built); later calls do nothing.
    pub fn set_send_timeout(&mut self, limit: std::time::Duration) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.send_timeout = Some(limit);
        }
    }

    /// See [`StaticOptions::set_send_timeout`].
    pub fn send_timeout(&self) -> std::time::Duration {
        self.inner.send_timeout.unwrap_or(std::time::Duration::from_secs(60))
    }

    /// Reads every static option from the list.
    ///
    /// `static-map`/`static-map2` (`/MOUNT=PATH`), `static-index` (a file name),
    /// `static-expires`/`static-expires-uri` (`REGEX SECONDS`), `static-gzip-all`,
    /// `static-gzip-dir` (a directory), `static-gzip-ext` (an extension, with or
    /// without the dot), `static-safe` (a directory). `honour-range` is accepted and
    /// has no effect: ranges are always honoured. `offload-threads` is accepted and
    /// has no effect: the pool sends files from its own runtime (sendfile on plain TCP,
    /// a blocking-read pool otherwise). `static-cache-paths` (seconds, default 1, `0`
    /// turns it off) is how long a resolved path is kept (see [`super::cache`]).
    pub fn from_options(list: &OptionList) -> Result<StaticOptions, ConfigError> {
        let mut inner = Inner::default();
        for (key, whole_path) in [("static-map", false), ("static-map2", true)] {
            for o in list.all(key) {
                if let Some(m) = parse_mapping(o, whole_path)? {
                    inner.mappings.push(m);
                }
            }
        }
        for o in list.all("static-index") {
            let name = o.value.trim();
            if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
                return Err(bad(o, "expected a file name such as index.html"));
            }
            inner.index.push(name.to_owned());
        }
        for (key, rules) in
            [("static-expires", &mut inner.expires_file), ("static-expires-uri", &mut inner.expires_uri)]
        {
            for o in list.all(key) {
                rules.push(parse_expires(o)?);
            }
        }
        inner.gzip_all = list.last("static-gzip-all").is_some_and(|o| truthy(&o.value));
        for o in list.all("static-gzip-dir") {
            if let Some(dir) = resolve_dir(o, "static-gzip-dir")? {
                inner.gzip_dirs.push(dir);
            }
        }
        for o in list.all("static-gzip-ext") {
            let ext = o.value.trim().trim_start_matches('.');
            if ext.is_empty() || ext.contains('/') {
                return Err(bad(o, "expected a file extension such as css or .css"));
            }
            inner.gzip_exts.push(ext.to_owned());
        }
        for o in list.all("static-safe") {
            if let Some(dir) = resolve_dir(o, "static-safe")? {
                inner.safe.push(dir);
            }
        }
        if let Some(o) = list.last("static-cache-paths") {
            let seconds: u64 = o.value.trim().parse().map_err(|_| {
                bad(o, "expected how many seconds a resolved path stays cached (0 turns the cache off)")
            })?;
            inner.cache = ResolutionCache::new(Duration::from_secs(seconds), cache::DEFAULT_CAPACITY);
            inner.cache_seconds = Some(seconds);
        }
        if let Some(o) = list.last("offload-threads") {
            if o.value.trim().parse::<u32>().is_err() {
                return Err(bad(o, "expected a number of threads (accepted and ignored)"));
            }
        }
        Ok(StaticOptions { inner: Arc::new(inner) })
    }

    /// The settings as WELCOME carries them to zerglings (typed protocol fields,
    /// folders canonical).
    pub fn to_settings(&self) -> crate::proto::StaticSettings {
        let i = &self.inner;
        let mut expires = Vec::new();
        for (by_uri, rules) in [(false, &i.expires_file), (true, &i.expires_uri)] {
            expires.extend(rules.iter().map(|r| crate::proto::ExpiresRule {
                by_uri,
                regex: r.regex.as_str().to_owned(),
                seconds: u32::try_from(r.seconds).unwrap_or(u32::MAX),
            }));
        }
        crate::proto::StaticSettings {
            maps: i
                .mappings
                .iter()
                .map(|m| crate::proto::StaticMount {
                    mount: m.mount.clone(),
                    root: m.root.display().to_string(),
                    whole_path: m.whole_path,
                })
                .collect(),
            index: i.index.clone(),
            expires,
            gzip_all: i.gzip_all,
            gzip_dirs: i.gzip_dirs.iter().map(|d| d.display().to_string()).collect(),
            gzip_exts: i.gzip_exts.clone(),
            safe: i.safe.iter().map(|d| d.display().to_string()).collect(),
            cache_seconds: i.cache_seconds.map(|s| u32::try_from(s).unwrap_or(u32::MAX)),
        }
    }

    /// Static-map as a zergling builds it from the pool's WELCOME. The pool
    /// checked every value already; what cannot be used here (a folder this
    /// process cannot see, a pattern that does not compile) is skipped with a
    /// warning, and the rest serves.
    pub fn from_settings(settings: &crate::proto::StaticSettings) -> StaticOptions {
        let mut inner = Inner::default();
        for m in &settings.maps {
            let segments = match mount_segments(&m.mount) {
                Ok(s) => s,
                Err(why) => {
                    tracing::warn!(mount = %m.mount, why, "static-map from the pool has a bad mount point; skipped");
                    continue;
                }
            };
            let root = PathBuf::from(&m.root);
            let root_is_file = match fs::metadata(&root) {
                Ok(md) if md.is_dir() => false,
                Ok(md) if md.is_file() => true,
                other => {
                    tracing::warn!(root = %m.root, error = ?other.err(), "static-map folder from the pool cannot be used here; skipped");
                    continue;
                }
            };
            inner.mappings.push(Mapping {
                mount: m.mount.clone(),
                mount_segments: segments,
                root,
                root_is_file,
                whole_path: m.whole_path,
            });
        }
        inner.index = settings.index.clone();
        for r in &settings.expires {
            match Regex::new(&r.regex) {
                Ok(regex) => {
                    let rule = ExpiresRule { regex, seconds: u64::from(r.seconds) };
                    if r.by_uri { &mut inner.expires_uri } else { &mut inner.expires_file }.push(rule);
                }
                Err(e) => {
                    tracing::warn!(regex = %r.regex, error = %e, "static-expires rule from the pool does not compile; skipped")
                }
            }
        }
        inner.gzip_all = settings.gzip_all;
        inner.gzip_dirs = settings.gzip_dirs.iter().map(PathBuf::from).collect();
        inner.gzip_exts = settings.gzip_exts.clone();
        inner.safe = settings.safe.iter().map(PathBuf::from).collect();
        if let Some(seconds) = settings.cache_seconds {
            inner.cache = ResolutionCache::new(Duration::from_secs(u64::from(seconds)), cache::DEFAULT_CAPACITY);
            inner.cache_seconds = Some(u64::from(seconds));
        }
        StaticOptions { inner: Arc::new(inner) }
    }

    /// The resolution cache (`static-cache-paths`).
    pub fn cache(&self) -> &ResolutionCache {
        &self.inner.cache
    }

    /// Whether no mapping is active: the pool can skip static lookups entirely.
    pub fn is_empty(&self) -> bool {
        self.inner.mappings.is_empty()
    }

    /// The active mappings, in lookup order.
    pub fn mappings(&self) -> &[Mapping] {
        &self.inner.mappings
    }

    /// The `static-index` names, in order.
    pub fn index(&self) -> &[String] {
        &self.inner.index
    }

    /// The canonical `static-safe` directories.
    pub fn safe_dirs(&self) -> &[PathBuf] {
        &self.inner.safe
    }

    /// Whether `real` (a canonical path) lies inside `root` or a `static-safe`
    /// directory, by path components.
    pub fn is_allowed(&self, real: &Path, root: &Path) -> bool {
        real.starts_with(root) || self.inner.safe.iter().any(|s| real.starts_with(s))
    }

    /// Whether the gzip options cover the file at `real` (a canonical path): then
    /// `FILE.br`/`FILE.gz` are looked for and `Vary: Accept-Encoding` is sent.
    pub fn gzip_applies(&self, real: &Path) -> bool {
        let i = &self.inner;
        if i.gzip_all || i.gzip_dirs.iter().any(|d| real.starts_with(d)) {
            return true;
        }
        let Some(name) = real.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        i.gzip_exts
            .iter()
            .any(|e| name.len() > e.len() && name.ends_with(e.as_str()) && name[..name.len() - e.len()].ends_with('.'))
    }

    /// The `max-age` for a file: the first `static-expires` rule matching the real
    /// file name, else the first `static-expires-uri` rule matching the decoded request
    /// path. (uWSGI checks the same lists in the same order but may send several
    /// `Expires` headers; one is sent here.)
    pub fn max_age(&self, real: &Path, request_path: Option<&str>) -> Option<u64> {
        let file = real.to_string_lossy();
        let by_file = self.inner.expires_file.iter().find(|r| r.regex.is_match(&file));
        let by_uri = || request_path.and_then(|p| self.inner.expires_uri.iter().find(|r| r.regex.is_match(p)));
        by_file.or_else(by_uri).map(|r| r.seconds)
    }
}

fn bad(o: &ConfigOption, reason: &str) -> ConfigError {
    ConfigError::BadValue {
        key: o.key.clone(),
        value: o.value.clone(),
        origin: o.origin.clone(),
        reason: reason.to_owned(),
    }
}

fn parse_mapping(o: &ConfigOption, whole_path: bool) -> Result<Option<Mapping>, ConfigError> {
    let Some((mount, target)) = o.value.split_once('=') else {
        return Err(bad(o, "expected /MOUNT=PATH, such as /static=/srv/app/static"));
    };
    let (mount, target) = (mount.trim(), target.trim());
    let segments = mount_segments(mount).map_err(|reason| bad(o, &reason))?;
    if target.is_empty() {
        return Err(bad(o, "the path after `=` is empty"));
    }
    let root = match fs::canonicalize(target) {
        Ok(root) => root,
        Err(e) => {
            tracing::warn!(option = %o.key, value = %o.value, origin = %o.origin, error = %e,
                "static target does not exist or cannot be resolved; this mapping is skipped");
            return Ok(None);
        }
    };
    let root_is_file = match fs::metadata(&root) {
        Ok(md) if md.is_dir() => false,
        Ok(md) if md.is_file() => true,
        Ok(_) => {
            tracing::warn!(option = %o.key, value = %o.value, origin = %o.origin,
                "static target is neither a directory nor a regular file; this mapping is skipped");
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!(option = %o.key, value = %o.value, origin = %o.origin, error = %e,
                "static target cannot be read; this mapping is skipped");
            return Ok(None);
        }
    };
    Ok(Some(Mapping { mount: mount.to_owned(), mount_segments: segments, root, root_is_file, whole_path }))
}

fn resolve_dir(o: &ConfigOption, what: &str) -> Result<Option<PathBuf>, ConfigError> {
    let value = o.value.trim();
    if value.is_empty() {
        return Err(bad(o, "expected a directory"));
    }
    match fs::canonicalize(value) {
        Ok(dir) if dir.is_dir() => Ok(Some(dir)),
        Ok(_) => {
            tracing::warn!(option = %what, value = %o.value, origin = %o.origin, "not a directory; ignored");
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(option = %what, value = %o.value, origin = %o.origin, error = %e,
                "directory does not exist or cannot be resolved; ignored");
            Ok(None)
        }
    }
}

fn parse_expires(o: &ConfigOption) -> Result<ExpiresRule, ConfigError> {
    let value = o.value.trim();
    let Some((pattern, secs)) = value.rsplit_once(char::is_whitespace) else {
        return Err(bad(o, "expected REGEX SECONDS, such as \\.css$ 86400"));
    };
    let seconds = secs
        .parse::<u64>()
        .ok()
        .filter(|s| *s <= MAX_EXPIRES_SECS)
        .ok_or_else(|| bad(o, "expected REGEX SECONDS with a whole number of seconds"))?;
    let regex = Regex::new(pattern.trim_end()).map_err(|e| bad(o, &format!("bad regular expression: {e}")))?;
    Ok(ExpiresRule { regex, seconds })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;

    fn list(pairs: &[(&str, &str)]) -> OptionList {
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

    #[test]
    fn mappings_keep_uwsgi_order_and_skip_missing_dirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::create_dir(&a).expect("mkdir");
        fs::create_dir(&b).expect("mkdir");
        fs::write(a.join("f.ico"), b"x").expect("write");
        let opts = StaticOptions::from_options(&list(&[
            ("static-map2", &format!("/m2={}", b.display())),
            ("static-map", &format!("/s={}", a.display())),
            ("static-map", &format!("/missing={}/nope", dir.path().display())),
            ("static-map", &format!("/s/={}", b.display())),
            ("static-map", &format!("/favicon.ico={}/f.ico", a.display())),
        ]))
        .expect("valid options");
        let mounts: Vec<_> = opts.mappings().iter().map(|m| (m.mount.as_str(), m.whole_path, m.root_is_file)).collect();
        assert_eq!(
            mounts,
            [("/s", false, false), ("/s/", false, false), ("/favicon.ico", false, true), ("/m2", true, false)]
        );
        assert!(opts.mappings().iter().all(|m| m.root.is_absolute()));
        assert!(!opts.is_empty());
        assert!(StaticOptions::from_options(&list(&[])).expect("empty").is_empty());
    }

    #[test]
    fn bad_values_are_errors() {
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
            ("offload-threads", "many"),
        ] {
            let err = StaticOptions::from_options(&list(&[(k, v)])).expect_err(v);
            assert!(matches!(err, ConfigError::BadValue { .. }), "{k} {v}: {err}");
        }
    }

    #[test]
    fn gzip_and_expires_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = fs::canonicalize(dir.path()).expect("canonical");
        fs::create_dir(real.join("gz")).expect("mkdir");
        let opts = StaticOptions::from_options(&list(&[
            ("static-gzip-ext", ".css"),
            ("static-gzip-ext", "js"),
            ("static-gzip-dir", &real.join("gz").display().to_string()),
            ("static-expires", "\\.png$ 100"),
            ("static-expires-uri", "^/static/ 200"),
            ("honour-range", ""),
            ("offload-threads", "4"),
        ]))
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
        let all = StaticOptions::from_options(&list(&[("static-gzip-all", "")])).expect("valid");
        assert!(all.gzip_applies(Path::new("/x/anything")));
        let off = StaticOptions::from_options(&list(&[("static-gzip-all", "false")])).expect("valid");
        assert!(!off.gzip_applies(Path::new("/x/anything")));
    }
}
