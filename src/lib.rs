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
//! The pool shares its protocol and data path with the worker library through
//! the `zergpool-core` crate (re-exported here as [`proto`], [`classify`],
//! [`offload`], [`stream`], [`warn_limit`]); the worker library itself is the
//! `zergling` crate, which never depends on this one.
//!
//! * [`config`]: option sources (command line, YAML, INI, placeholders) → one ordered
//!   option list → one typed [`config::Config`].
//! * [`listener`]: binding (socket2), TLS (rustls), the privilege drop, the accept
//!   loops and the connection limit (`listener::limit`).
//! * [`dispatch`]: the zergling registry, selection, the queue, the hand-off with ACK
//!   and re-dispatch, and the attach socket (`dispatch::attach`).
//! * [`supervise`]: spawned zerglings, respawned with back-off, chain reloads.
//! * [`control`]: signals, the master FIFO and touch files, all as one `Control`.
//! * [`pool`]: the pool's life: bind, run, stop; and the per-connection data path
//!   (`pool::conn`).
//! * [`events`]: one JSON line per event for machines (`events` option): listening,
//!   ready, attached, detached, reload-complete, stopped.
//! * [`reply`]: the canned answers the pool writes itself (400, 408, 503, redirects).

#![deny(unsafe_code)]

pub mod config;
pub mod control;
pub mod dispatch;
pub mod events;
pub mod listener;
pub mod logfile;
pub mod metrics;
pub mod notify;
pub mod pool;
pub mod reply;
pub mod reqlog;
pub mod sockdiag;
pub mod stats;
pub mod supervise;

pub use zergpool_core::{classify, error_chain, offload, proto, stream, warn_limit, warn_limited};
