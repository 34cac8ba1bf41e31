//! Fuzz target `static_path`: the static-map path resolver (`offload::path` and
//! `offload::resolve`) on arbitrary request targets, against a real directory tree
//! that holds the tricks an attacker aims at: a symlink out of the root, a symlink
//! to a directory out of it, a file outside, an index, `.gz` variants, a FIFO.
//!
//! The input is a request target (as sent on the request line, percent-encoded)
//! and, read a second time, a decoded `PATH_INFO` as nginx passes it over uwsgi.
//! Checked:
//!
//! * a file served lies inside the mapping's root (by canonical path components);
//!   nothing outside, through any encoding or symlink, is ever opened for serving;
//! * a clean path never has an empty, `.` or `..` segment, a slash, a backslash or
//!   a control byte in a segment;
//! * a redirect's `Location` is a local path: it starts with one `/` and never
//!   with `//` or `/\` (which browsers read as another host);
//! * `precheck` never says "no mount" for a path `resolve` serves.

#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use zergpool::config::{ConfigOption, OptionList, Origin};
use zergpool::offload::{precheck, resolve, Encoding, Precheck, RequestPath, Resolution, StaticOptions};

struct Tree {
    root: PathBuf,
    opts: StaticOptions,
}

thread_local! {
    static TREE: Tree = tree();
}

fn tree() -> Tree {
    let base = std::env::temp_dir().join(format!("zergpool-fuzz-static-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let root = base.join("root");
    let outside = base.join("outside");
    for dir in [&root.join("dir"), &root.join("noindex"), &outside] {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(root.join("a.txt"), b"a").expect("write");
    std::fs::write(root.join("a.txt.gz"), b"gz").expect("write");
    std::fs::write(root.join("dir/index.html"), b"index").expect("write");
    std::fs::write(root.join("%2e"), b"percent").expect("write");
    std::fs::write(outside.join("secret"), b"secret").expect("write");
    std::fs::write(outside.join("index.html"), b"secret index").expect("write");
    std::os::unix::fs::symlink(outside.join("secret"), root.join("out")).expect("symlink");
    std::os::unix::fs::symlink(&outside, root.join("outdir")).expect("symlink");
    std::os::unix::fs::symlink("a.txt", root.join("in")).expect("symlink");
    std::os::unix::fs::symlink("../outside", root.join("dir/up")).expect("symlink");
    let _ = nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU);
    let root = std::fs::canonicalize(&root).expect("canonical root");
    let pairs = [
        ("static-map", format!("/static={}", root.display())),
        ("static-map", format!("/={}", root.display())),
        ("static-map2", format!("/s2={}", root.display())),
        ("static-index", "index.html".to_owned()),
        ("static-gzip-all", "true".to_owned()),
        ("static-cache-paths", "0".to_owned()),
    ];
    let list = OptionList(
        pairs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| ConfigOption { key: (*k).into(), value: v.clone(), origin: Origin::CommandLine(i + 1) })
            .collect(),
    );
    let opts = zergpool::config::StaticConfig::parse(&list).and_then(|c| c.resolve()).expect("valid static options");
    Tree { root, opts }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    TREE.with(|tree| {
        let target = RequestPath::from_target(text);
        let (path_info, query) = text.split_once('?').map_or((text, None), |(p, q)| (p, Some(q)));
        let decoded = RequestPath::from_decoded(path_info, query);
        for path in [target, decoded].into_iter().flatten() {
            check(tree, &path);
        }
    });
});

fn check(tree: &Tree, path: &RequestPath) {
    if let Ok(segments) = path.clean_segments() {
        for s in segments {
            assert!(!s.is_empty() && s != "." && s != "..", "unclean segment {s:?}");
            assert!(!s.contains(['/', '\\']) && !s.bytes().any(|b| b < 0x20 || b == 0x7f), "unclean segment {s:?}");
        }
    }
    let pre = precheck(&tree.opts, path);
    for method in ["GET", "HEAD"] {
        match resolve(&tree.opts, method, path, &[Encoding::Gzip]) {
            Resolution::File(file) => {
                assert!(file.path.starts_with(&tree.root), "served {} from outside the root", file.path.display());
                assert!(!file.path.to_string_lossy().contains("outside"), "served {}", file.path.display());
                assert_eq!(pre, Precheck::Candidate, "precheck missed a served path");
            }
            Resolution::Redirect { location } => {
                assert!(location.starts_with('/'), "redirect to {location:?}");
                assert!(!location.starts_with("//") && !location.starts_with("/\\"), "open redirect to {location:?}");
            }
            Resolution::Refused(_) | Resolution::Fallthrough => {}
        }
    }
}
