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
//! * what is not a file (a miss that goes to the application, a refusal, a redirect)
//!   is cached too: a file created where there was none shows within `valid_for`;
//! * at most `capacity` entries (each file entry holds one descriptor); when full,
//!   expired entries go, and if none had expired, the whole cache is emptied (simple,
//!   and a full cache of live entries is rare: it means more hot paths than room).
//!
//! The key is the decoded request path (query included, for redirects) and the
//! encodings the client accepts, in order: both decide the resolution.

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

/// What a resolution depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The decoded request path.
    pub path: RequestPath,
    /// The encodings the client accepts, best first.
    pub accepted: Vec<Encoding>,
}

#[derive(Debug)]
struct Entry {
    resolved_at: Instant,
    resolution: Resolution,
}

/// Resolutions of recent request paths. Shared by every connection of a process.
#[derive(Debug)]
pub struct ResolutionCache {
    entries: Mutex<HashMap<CacheKey, Entry>>,
    valid_for: Duration,
    capacity: usize,
}

impl Default for ResolutionCache {
    fn default() -> Self {
        ResolutionCache::new(DEFAULT_VALID_FOR, DEFAULT_CAPACITY)
    }
}

impl ResolutionCache {
    /// A cache whose entries live `valid_for` (zero: nothing is cached).
    pub fn new(valid_for: Duration, capacity: usize) -> Self {
        ResolutionCache { entries: Mutex::new(HashMap::new()), valid_for, capacity }
    }

    /// Whether anything is cached at all.
    pub fn enabled(&self) -> bool {
        !self.valid_for.is_zero() && self.capacity > 0
    }

    /// How long entries live.
    pub fn valid_for(&self) -> Duration {
        self.valid_for
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Entry>> {
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
            let entry = entries.get(key)?;
            if now.saturating_duration_since(entry.resolved_at) >= self.valid_for {
                entries.remove(key);
                return None;
            }
            entry.resolution.clone()
        };
        if let Resolution::File(f) = &resolution {
            if !unchanged(f) {
                self.lock().remove(key);
                return None;
            }
        }
        Some(resolution)
    }

    /// Remembers a fresh resolution.
    pub fn put(&self, key: CacheKey, resolution: Resolution, now: Instant) {
        if !self.enabled() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let valid_for = self.valid_for;
            entries.retain(|_, e| now.saturating_duration_since(e.resolved_at) < valid_for);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, Entry { resolved_at: now, resolution });
    }

    /// How many entries are held (for tests and logs).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    fn keys_differ_by_accepted_encodings_and_query() {
        let c = ResolutionCache::new(Duration::from_secs(1), 8);
        let t0 = Instant::now();
        c.put(key("/a"), Resolution::Fallthrough, t0);
        let mut gz = key("/a");
        gz.accepted.push(Encoding::Gzip);
        assert!(c.get(&gz, t0).is_none());
        assert!(c.get(&key("/a?x=1"), t0).is_none());
    }
}
