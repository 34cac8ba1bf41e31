//! zergpool-core: what the zergpool pool and its zergling library share.
//!
//! * [`proto`]: THE protocol between a pool and its zerglings (frames, limits, fd
//!   passing: the workspace's `unsafe` for descriptors, in `proto::sys`);
//!   `docs/PROTOCOL.md` is its description for other languages.
//! * [`sched`]: `SCHED_BATCH` for threads that hand requests to each other (one
//!   system call, the only other `unsafe` block).
//! * [`classify`]: pure parsers of a request head (HTTP, uwsgi), and the bounded
//!   read that feeds them.
//! * [`offload`]: static-map: path rules, resolution, response plans, sending files.
//! * [`stream`]: the connection stream types (TCP or Unix, with bytes already read
//!   replayed first).
//! * [`net`]: listening sockets, bound and registered with the runtime.
//! * [`reqlog`]: request log lines (policy and formats), for whoever answers.
//! * [`warn_limit`]: rate-limited warnings for what clients and zerglings can cause.
//!
//! Nothing here reads configuration, terminates TLS or supervises processes: an
//! application that links the zergling library compiles this crate and no more.

#![deny(unsafe_code)]

pub mod classify;
pub mod net;
pub mod offload;
pub mod proto;
pub mod reqlog;
pub mod sched;
pub mod stream;
pub mod warn_limit;

/// An error and its sources on one line, for logs and for `main`'s messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
