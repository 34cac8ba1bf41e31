//! Thread scheduling: `SCHED_BATCH` for the threads of a zergling whose work
//! passes from thread to thread on every request (the connection thread and
//! the Python application thread of the WSGI and ASGI bridges).
//!
//! Why: under Linux's default policy a thread woken by another one preempts it
//! at once when both share a CPU, so a request handed from the connection
//! thread to the application thread and its response handed back cost two
//! context switches each, one request at a time. Under `SCHED_BATCH` a woken
//! thread waits for the running one to block or use up its slice, so each
//! thread works through every request that is ready before the other runs:
//! measured with `benches/python.sh`'s hello application on one CPU, context
//! switches fell from about one per request to one per sixteen, and
//! throughput rose by a third. Nothing is deprioritised: the nice value stays,
//! and a thread that blocks hands the CPU over as before (latency at low load
//! is unchanged). No privilege is needed (sched(7)).
//!
//! The second and last `unsafe` block of the workspace (the other is the
//! descriptor passing of `proto::sys`): one system call that neither nix nor
//! std wraps.
#![allow(unsafe_code)]

use std::io;

use nix::libc;

/// Puts the calling thread under `SCHED_BATCH`; threads it starts afterwards
/// inherit the policy (sched(7)), so call it before starting them.
pub fn batch_scheduling() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, initialised `sched_param` that outlives the
    // call; pid 0 is the calling thread; the call reads nothing else.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's scheduling policy is `SCHED_BATCH`.
pub fn is_batch() -> bool {
    // SAFETY: no arguments but the calling thread's pid 0; reads nothing.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_BATCH }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_thread_goes_batch_and_its_children_follow() {
        std::thread::spawn(|| {
            assert!(!super::is_batch());
            super::batch_scheduling().expect("SCHED_BATCH needs no privilege");
            assert!(super::is_batch());
            assert!(std::thread::spawn(super::is_batch).join().unwrap(), "a new thread inherits the policy");
        })
        .join()
        .unwrap();
        assert!(!super::is_batch(), "only the thread that asked");
    }
}
