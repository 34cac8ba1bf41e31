//! The resolution cache of static-map (nginx's `open_file_cache`, uWSGI's
//! `static-cache-paths`): what a request path resolved to, kept for a short time,
//! files kept open, so that a hot file costs neither a trip to the blocking pool nor
//! the path walk, `open` and checks of [`resolve`](super::resolve) on every request.
//!
//! Invariants:
//! * an entry is used for at most `valid_for` after it was resolved (default 1 s,
//!   `static-cache-paths = SECONDS`, `0` turns the cache off);
//! * a cached file is checked with `fstat` on its open descriptor before every use:
//!   if it was unlinked or replaced (link count 0, as after `mv new old`), or its
//!   length or mtime changed (rewritten in place), the entry is dropped and the path
//!   resolved again, so a changed file is never served with stale headers;
//!   What the `fstat` cannot see is seen within `valid_for`: a symlink inside the
//!   mapping switched to another file, a replaced file that had another hard link,
//!   a file moved away or made unreadable;
//! * misses (the application answers) and refusals are cached too: a file created
//!   where there was none shows within `valid_for`; redirects are not cached (their
//!   `Location` carries the request's query);
//! * at most `capacity` entries (each file entry holds one descriptor; at most an
//!   eighth of the process's descriptor limit); expired entries are swept at most
//!   once per `valid_for`, so descriptors of files no longer asked for are closed;
//!   when full of live entries, the whole cache is emptied (simple, and rare: it
//!   means more hot paths than room).
//!
//! The key is the decoded request path without its query (`?v=123` cache busters
//! share one entry) and the encodings the client accepts, in order: together they
//! decide the resolution.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::path::RequestPath;
use super::plan::FileMeta;
use super::request::Encoding;
use super::resolve::{Resolution, StaticFile};

/// How long an entry stays valid unless configured (`static-cache-paths`).
pub const DEFAULT_VALID_FOR: Duration = Duration::from_secs(1);

/// How many entries the cache holds at most.
pub const DEFAULT_CAPACITY: usize = 512;

/// What a resolution depends on: the path's segments and trailing slash (not its
/// query), and the accepted encodings.
#[derive(Debug, Clone)]
pub struct CacheKey {
    /// The decoded request path.
    pub path: RequestPath,
    /// The encodings the client accepts, best first.
    pub accepted: Vec<Encoding>,
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        self.path.segments() == other.path.segments()
            && self.path.has_trailing_slash() == other.path.has_trailing_slash()
            && self.accepted == other.accepted
    }
}

impl Eq for CacheKey {}

impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.path.segments().hash(state);
        self.path.has_trailing_slash().hash(state);
        self.accepted.hash(state);
    }
}

#[derive(Debug)]
struct Entry {
    resolved_at: Instant,
    resolution: Resolution,
}

/// Resolutions of recent request paths. Shared by every connection of a process.
#[derive(Debug)]
pub struct ResolutionCache {
    entries: Mutex<Entries>,
    valid_for: Duration,
    capacity: usize,
}

#[derive(Debug)]
struct Entries {
    map: HashMap<CacheKey, Entry>,
    last_sweep: Instant,
}

impl Entries {
    /// Drops expired entries, at most once per `valid_for`.
    fn sweep(&mut self, now: Instant, valid_for: Duration) {
        if now.saturating_duration_since(self.last_sweep) >= valid_for {
            self.map.retain(|_, e| now.saturating_duration_since(e.resolved_at) < valid_for);
            self.last_sweep = now;
        }
    }
}

impl Default for ResolutionCache {
    fn default() -> Self {
        ResolutionCache::new(DEFAULT_VALID_FOR, DEFAULT_CAPACITY)
    }
}

impl ResolutionCache {
    /// A cache whose entries live `valid_for` (zero: nothing is cached).
    pub fn new(valid_for: Duration, capacity: usize) -> Self {
        let entries = Entries { map: HashMap::new(), last_sweep: Instant::now() };
        ResolutionCache { entries: Mutex::new(entries), valid_for, capacity: capacity.min(descriptor_budget()) }
    }

    /// Whether anything is cached at all.
    pub fn enabled(&self) -> bool {
        !self.valid_for.is_zero() && self.capacity > 0
    }

    /// How long entries live.
    pub fn valid_for(&self) -> Duration {
        self.valid_for
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached resolution of `key`, if it is still valid. A cached file is
    /// checked with `fstat` first (outside the lock).
    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<Resolution> {
        if !self.enabled() {
            return None;
        }
        let resolution = {
            let mut entries = self.lock();
            entries.sweep(now, self.valid_for);
            let entry = entries.map.get(key)?;
            if now.saturating_duration_since(entry.resolved_at) >= self.valid_for {
                entries.map.remove(key);
                return None;
            }
            entry.resolution.clone()
        };
        if let Resolution::File(f) = &resolution {
            if !unchanged(f) {
                self.lock().map.remove(key);
                return None;
            }
        }
        Some(resolution)
    }

    /// Remembers a fresh resolution.
    pub fn put(&self, key: CacheKey, resolution: Resolution, now: Instant) {
        if !self.enabled() || matches!(resolution, Resolution::Redirect { .. }) {
            return;
        }
        let mut entries = self.lock();
        entries.sweep(now, self.valid_for);
        if entries.map.len() >= self.capacity && !entries.map.contains_key(&key) {
            let valid_for = self.valid_for;
            entries.map.retain(|_, e| now.saturating_duration_since(e.resolved_at) < valid_for);
            if entries.map.len() >= self.capacity {
                entries.map.clear();
            }
        }
        entries.map.insert(key, Entry { resolved_at: now, resolution });
    }

    /// How many entries are held (for tests and logs).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// At most an eighth of the soft limit on open descriptors goes to the cache.
fn descriptor_budget() -> usize {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => usize::try_from(soft / 8).unwrap_or(usize::MAX).max(1),
        Err(_) => DEFAULT_CAPACITY,
    }
}

/// Whether the open file is still the one that was resolved: linked, same length,
/// same mtime (`fstat` on the descriptor; no path lookup).
fn unchanged(f: &Arc<StaticFile>) -> bool {
    match f.file.metadata() {
        Ok(md) => md.nlink() > 0 && FileMeta::from_metadata(&md) == f.meta,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::resolve::Refusal;
    use crate::offload::PathRefusal;

    fn key(path: &str) -> CacheKey {
        CacheKey { path: RequestPath::from_target(path).expect("origin form"), accepted: Vec::new() }
    }

    #[test]
    fn entries_expire() {
        let c = ResolutionCache::new(Duration::from_secs(1), 8);
        let t0 = Instant::now();
        c.put(key("/a"), Resolution::Fallthrough, t0);
        assert!(matches!(c.get(&key("/a"), t0 + Duration::from_millis(500)), Some(Resolution::Fallthrough)));
        assert!(c.get(&key("/a"), t0 + Duration::from_secs(1)).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn zero_means_off() {
        let c = ResolutionCache::new(Duration::ZERO, 8);
        let t0 = Instant::now();
        c.put(key("/a"), Resolution::Fallthrough, t0);
        assert!(c.get(&key("/a"), t0).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first_then_everything() {
        let c = ResolutionCache::new(Duration::from_secs(1), 2);
        let t0 = Instant::now();
        c.put(key("/a"), Resolution::Fallthrough, t0);
        c.put(key("/b"), Resolution::Fallthrough, t0 + Duration::from_millis(900));
        c.put(key("/c"), Resolution::Refused(Refusal::Path(PathRefusal::DotSegment)), t0 + Duration::from_millis(1100));
        assert_eq!(c.len(), 2, "/a had expired and made room");
        c.put(key("/d"), Resolution::Fallthrough, t0 + Duration::from_millis(1200));
        assert_eq!(c.len(), 1, "nothing had expired: emptied, then /d");
    }

    #[test]
    fn keys_differ_by_accepted_encodings_and_slash_not_by_query() {
        let c = ResolutionCache::new(Duration::from_secs(1), 8);
        let t0 = Instant::now();
        c.put(key("/a"), Resolution::Fallthrough, t0);
        let mut gz = key("/a");
        gz.accepted.push(Encoding::Gzip);
        assert!(c.get(&gz, t0).is_none());
        assert!(c.get(&key("/a/"), t0).is_none());
        assert!(c.get(&key("/a?v=123"), t0).is_some(), "cache busters share the entry");
    }

    #[test]
    fn redirects_are_not_cached_and_expired_entries_are_swept() {
        let c = ResolutionCache::new(Duration::from_secs(1), 8);
        let t0 = Instant::now();
        c.put(key("/d"), Resolution::Redirect { location: "/d/?q=1".into() }, t0);
        assert!(c.is_empty(), "a redirect's Location carries the request's query");
        c.put(key("/a"), Resolution::Fallthrough, t0);
        c.put(key("/b"), Resolution::Fallthrough, t0 + Duration::from_millis(1500));
        assert_eq!(c.len(), 1, "/a expired and was swept by the next put");
    }
}
