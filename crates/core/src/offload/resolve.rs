//! Resolution of a request path to an opened file, with blocking file-system calls:
//! the caller runs [`resolve`] inside `tokio::task::spawn_blocking`.
//!
//! Invariants (the security contract of static-map):
//! * only [`Segment::Clean`](super::path::Segment) segments are ever joined to a
//!   mapping's root, so the candidate names a path below the root before symlinks;
//! * every candidate is canonicalised (all symlinks followed) and must then lie inside
//!   the mapping's canonical root **by path components** (`Path::starts_with`), or
//!   inside a `static-safe` directory; otherwise it is refused, never served;
//! * the same check applies to index files and to `.br`/`.gz` variants;
//! * the file is opened once, with `O_NOFOLLOW | O_NONBLOCK` (a FIFO cannot block
//!   us), must be a regular file by `fstat` on the opened descriptor, and, where
//!   `/proc` is mounted, the descriptor's own path is checked again, which closes the
//!   window between the check and the open;
//! * the metadata that plans the response comes from that same descriptor.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::options::{Mapping, StaticOptions};
use super::path::{MountMatch, PathRefusal, RequestPath};
use super::plan::{content_type, FileMeta};
use super::request::{Encoding, StaticMethod};

/// What static-map makes of a request. Cheap to clone (the cache hands out copies).
#[derive(Debug, Clone)]
pub enum Resolution {
    /// Not a static request, a miss, or a directory without an index: the
    /// application answers.
    Fallthrough,
    /// Refused: answered `403`, never the file.
    Refused(Refusal),
    /// A directory with an index, asked for without the trailing slash: `301` to this
    /// location (nginx's behaviour).
    Redirect {
        /// The path with a slash appended, query kept.
        location: String,
    },
    /// A file to serve.
    File(Arc<StaticFile>),
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The path itself is a trick.
    Path(PathRefusal),
    /// The real path lies outside the mapping and every `static-safe` directory
    /// (a symlink pointing out).
    Outside(PathBuf),
}

/// A file opened for serving.
#[derive(Debug)]
pub struct StaticFile {
    /// The opened file (the variant, when one is served).
    pub file: Arc<File>,
    /// Its metadata, from `fstat` on `file`.
    pub meta: FileMeta,
    /// `Content-Type`, from the name asked for (not the variant's).
    pub content_type: String,
    /// The variant's encoding, if a variant is served.
    pub encoding: Option<Encoding>,
    /// Whether the gzip options cover this file (`Vary: Accept-Encoding`).
    pub vary: bool,
    /// `max-age` from the expires options.
    pub max_age: Option<u64>,
    /// The canonical path of the file sent, for logs.
    pub path: PathBuf,
}

/// Where a request path first meets the mappings, without touching the file system:
/// lets the caller skip `spawn_blocking` for dynamic requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precheck {
    /// No mount point covers the path.
    NoMount,
    /// A mount point covers the path, and the rest of it is refused.
    Refused(PathRefusal),
    /// A mount point covers the path: [`resolve`] decides.
    Candidate,
}

/// Matches the path against every mount point.
pub fn precheck(opts: &StaticOptions, path: &RequestPath) -> Precheck {
    let mut out = Precheck::NoMount;
    for m in opts.mappings() {
        match path.strip_mount(&m.mount_segments) {
            MountMatch::No => {}
            // Under `/` every path is "under the mount": a path static-map refuses
            // there (an encoded slash in an API path, say) is the application's,
            // as in uWSGI; static-map still never reads anything for it.
            MountMatch::Refused(_) if m.mount_segments.is_empty() => {}
            MountMatch::Refused(r) => return Precheck::Refused(r),
            MountMatch::Rest(_) => out = Precheck::Candidate,
        }
    }
    out
}

/// Resolves a request: method, decoded path and the encodings the client accepts,
/// best first. Blocking.
///
/// Mappings are tried in order; a miss (nothing there, not a regular file, a
/// directory without an index) falls to the next; the first servable file wins. A
/// candidate refused because its real path lies outside is skipped too, and if no
/// later mapping serves the request, the answer is `403`.
pub fn resolve(opts: &StaticOptions, method: &str, path: &RequestPath, accepted: &[Encoding]) -> Resolution {
    if StaticMethod::from_token(method).is_none() {
        return Resolution::Fallthrough;
    }
    let mut refused = None;
    for m in opts.mappings() {
        let rest = match path.strip_mount(&m.mount_segments) {
            MountMatch::No => continue,
            MountMatch::Refused(_) if m.mount_segments.is_empty() => continue,
            MountMatch::Refused(r) => return Resolution::Refused(Refusal::Path(r)),
            MountMatch::Rest(rest) => rest,
        };
        match try_mapping(opts, m, path, rest, accepted) {
            Attempt::Miss => {}
            Attempt::Outside(real) => {
                tracing::warn!(path = %real.display(), root = %m.root.display(),
                    "static-map: refused a path that leaves its directory and every static-safe directory");
                refused = Some(Refusal::Outside(real));
            }
            Attempt::Redirect(location) => return Resolution::Redirect { location },
            Attempt::File(f) => return Resolution::File(Arc::new(f)),
        }
    }
    refused.map_or(Resolution::Fallthrough, Resolution::Refused)
}

enum Attempt {
    Miss,
    Outside(PathBuf),
    Redirect(String),
    File(StaticFile),
}

fn try_mapping(
    opts: &StaticOptions,
    m: &Mapping,
    path: &RequestPath,
    rest: Vec<&str>,
    accepted: &[Encoding],
) -> Attempt {
    if m.root_is_file {
        // A file target serves the mount point itself only (uWSGI serves it for every
        // path that starts with the mount point, `/favicon.icoXYZ` included).
        if !rest.is_empty() || path.has_trailing_slash() {
            return Attempt::Miss;
        }
        return match open_for_serving(opts, &m.root, &m.root, &m.root, path, accepted) {
            Some(f) => Attempt::File(f),
            None => Attempt::Miss,
        };
    }
    let segments = if m.whole_path {
        match path.clean_segments() {
            Ok(all) => all,
            Err(_) => return Attempt::Miss,
        }
    } else {
        rest
    };
    let mut candidate = m.root.clone();
    candidate.extend(&segments);
    let (real, is_dir) = match probe(opts, &candidate, &m.root) {
        Probe::Missing => return Attempt::Miss,
        Probe::Outside(real) => return Attempt::Outside(real),
        Probe::Found { real, is_dir } => (real, is_dir),
    };
    if !is_dir {
        if path.has_trailing_slash() {
            return Attempt::Miss;
        }
        return match open_for_serving(opts, &candidate, &real, &m.root, path, accepted) {
            Some(f) => Attempt::File(f),
            None => Attempt::Miss,
        };
    }
    for name in opts.index() {
        let index = real.join(name);
        match probe(opts, &index, &m.root) {
            Probe::Found { real: index_real, is_dir: false } => {
                if !path.has_trailing_slash() {
                    return match path.location_with_slash() {
                        Some(location) => Attempt::Redirect(location),
                        None => Attempt::Miss,
                    };
                }
                if let Some(f) = open_for_serving(opts, &index, &index_real, &m.root, path, accepted) {
                    return Attempt::File(f);
                }
            }
            Probe::Outside(real) => return Attempt::Outside(real),
            _ => {}
        }
    }
    Attempt::Miss
}

enum Probe {
    Missing,
    Outside(PathBuf),
    Found { real: PathBuf, is_dir: bool },
}

/// Canonicalises a candidate and checks containment.
fn probe(opts: &StaticOptions, candidate: &Path, root: &Path) -> Probe {
    let Ok(real) = fs::canonicalize(candidate) else {
        return Probe::Missing;
    };
    if !opts.is_allowed(&real, root) {
        return Probe::Outside(real);
    }
    match fs::metadata(&real) {
        Ok(md) if md.is_dir() => Probe::Found { real, is_dir: true },
        Ok(md) if md.is_file() => Probe::Found { real, is_dir: false },
        _ => Probe::Missing,
    }
}

/// Opens the file (or its best accepted variant) found at `real`; `asked` is the name
/// the client asked for, which gives the `Content-Type`.
fn open_for_serving(
    opts: &StaticOptions,
    asked: &Path,
    real: &Path,
    root: &Path,
    path: &RequestPath,
    accepted: &[Encoding],
) -> Option<StaticFile> {
    let vary = opts.gzip_applies(real);
    let content_type = content_type(asked);
    let max_age = opts.max_age(real, path.normalized().as_deref());
    if vary {
        for &encoding in accepted {
            let mut variant = real.as_os_str().to_owned();
            variant.push(encoding.suffix());
            let Probe::Found { real: variant_real, is_dir: false } = probe(opts, Path::new(&variant), root) else {
                continue;
            };
            if let Some((file, meta)) = open_checked(opts, &variant_real, root) {
                return Some(StaticFile {
                    file: Arc::new(file),
                    meta,
                    content_type,
                    encoding: Some(encoding),
                    vary,
                    max_age,
                    path: variant_real,
                });
            }
        }
    }
    let (file, meta) = open_checked(opts, real, root)?;
    Some(StaticFile { file: Arc::new(file), meta, content_type, encoding: None, vary, max_age, path: real.to_owned() })
}

/// Opens a canonical path that passed the containment check, and checks again what
/// was really opened.
fn open_checked(opts: &StaticOptions, real: &Path, root: &Path) -> Option<(File, FileMeta)> {
    let file =
        OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK).open(real).ok()?;
    let md = file.metadata().ok()?;
    if !md.is_file() {
        return None;
    }
    if let Ok(opened) = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        if !opts.is_allowed(&opened, root) {
            tracing::warn!(path = %opened.display(), root = %root.display(),
                "static-map: the file changed into a path outside its directory between check and open; refused");
            return None;
        }
    }
    Some((file, FileMeta::from_metadata(&md)))
}
