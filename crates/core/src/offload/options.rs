//! Static-map as it serves: a resolved, cheap-to-clone [`StaticOptions`], built
//! from the protocol's typed [`StaticSettings`](crate::proto::StaticSettings) (the
//! pool parses uWSGI's `static-*` options into those in its `config::statics`, and
//! sends the same settings to zerglings in WELCOME).
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
