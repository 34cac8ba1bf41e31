//! zergpool: a zero-downtime front-end for application servers, in the spirit of
//! uWSGI's *Zerg mode*.
//!
//! One long-lived **pool** process owns the listening sockets. It accepts each
//! connection, reads the first request head, and hands the connection (its file
//! descriptor, with the bytes already read) to an attached **zergling**, an
//! application process, over a Unix `SOCK_SEQPACKET` socket with `SCM_RIGHTS`.
//! Zerglings come and go; the pool queues what arrives meanwhile.
//!
//! ```text
//! listener.accept ─► classify (read the first request head, bounded, with a timeout)
//!                      ├─ malformed / too large / too slow ─► 400 / 431 / 408, close
//!                      └─ dynamic ─► dispatch: pick a ready zergling (or queue)
//!                                      ─► send {meta, bytes already read} + fd ──SCM_RIGHTS──►
//!                                      ◄─ ACK ─ pool closes its copy; zergling owns the connection
//!                                      ◄─ CLOSED ─ one unit of capacity free again
//! ```
//!
//! # Layout
//!
//! * [`config`]: option sources (command line, YAML, INI, placeholders) → one ordered
//!   option list → one typed [`config::Config`].
//! * [`listener`]: binding (socket2), TLS (rustls), the privilege drop, the accept
//!   loops and the connection limit (`listener::limit`).
//! * [`classify`]: pure parsers of a request head (HTTP, uwsgi), and the bounded read
//!   that feeds them.
//! * [`offload`]: static-map: path rules, resolution, response plans, sending files.
//! * [`dispatch`]: the zergling registry, selection, the queue, the hand-off with ACK
//!   and re-dispatch, and the attach socket (`dispatch::attach`).
//! * [`proto`]: THE protocol shared with the zergling side (frames, limits, fd
//!   passing: the crate's only `unsafe`, in `proto::sys`).
//! * [`zergling`]: the public worker library: a hyper service becomes a zergling
//!   (the attach session, HTTP/1 with drain and hand-back, HTTP/2, uwsgi, static
//!   files, idle connections, direct accept: one file each).
//! * [`supervise`]: spawned zerglings, respawned with back-off, chain reloads.
//! * [`control`]: signals, the master FIFO and touch files, all as one `Control`.
//! * [`pool`]: the pool's life: bind, run, stop; and the per-connection data path
//!   (`pool::conn`).
//! * [`reply`]: the canned answers the pool writes itself (400, 408, 503, redirects).
//! * [`stream`]: the connection stream types shared by the pool and the zergling.
//! * [`warn_limit`]: rate-limited warnings for what clients and zerglings can cause.

#![deny(unsafe_code)]

pub mod classify;
pub mod config;
pub mod control;
pub mod dispatch;
pub mod listener;
pub mod offload;
pub mod pool;
pub mod proto;
pub mod reply;
pub mod stream;
pub mod supervise;
pub mod warn_limit;
pub mod zergling;

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
