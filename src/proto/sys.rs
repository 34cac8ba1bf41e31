//! Descriptor passing and adoption: the only `unsafe` code of the crate.
//!
//! Each block says why it is sound. Descriptors only ever leave this module as
//! [`OwnedFd`], so whoever holds one closes it exactly once. Receiving follows the
//! sozu habits: room for [`MAX_FDS_PER_FRAME`] descriptors only, `MSG_CMSG_CLOEXEC`,
//! `MSG_CTRUNC` and `MSG_TRUNC` are errors, and every descriptor that arrived is
//! adopted (and so closed if unwanted) before any check can return early.
#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{accept4, recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, UnixAddr};

use super::MAX_FDS_PER_FRAME;

/// What one `recvmsg` produced.
#[derive(Debug)]
pub(crate) struct Received {
    /// Bytes of the frame (0 means the peer closed).
    pub(crate) len: usize,
    /// Descriptors that came with it, adopted.
    pub(crate) fds: Vec<OwnedFd>,
    /// The frame did not fit in the buffer.
    pub(crate) truncated: bool,
    /// More descriptors were sent than there was room for.
    pub(crate) ctrunc: bool,
}

/// Sends one frame, with at most one descriptor. Non-blocking: `WouldBlock` means
/// "wait until writable and call again"; nothing was sent then.
pub(crate) fn send_frame(sock: BorrowedFd<'_>, frame: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let iov = [IoSlice::new(frame)];
    let raw: [RawFd; 1];
    let cmsgs: Vec<ControlMessage<'_>> = match fd {
        Some(fd) => {
            raw = [fd.as_raw_fd()];
            vec![ControlMessage::ScmRights(&raw)]
        }
        None => Vec::new(),
    };
    let sent =
        sendmsg::<UnixAddr>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT, None)
            .map_err(io::Error::from)?;
    if sent != frame.len() {
        // SOCK_SEQPACKET sends whole records or fails; a short send would be a kernel bug.
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short send on a SOCK_SEQPACKET socket"));
    }
    Ok(())
}

/// Receives one frame into `buf`. Non-blocking.
pub(crate) fn recv_frame(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS_PER_FRAME]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg_space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raws) = cmsg {
            for raw in raws {
                // SAFETY: the kernel just installed `raw` in our table for this message
                // (SCM_RIGHTS); nothing else in the process knows the number, so we are
                // its only owner.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // Other control messages (credentials, …) are not used and are dropped.
    }
    Ok(Received {
        len: msg.bytes,
        fds,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
        ctrunc: msg.flags.contains(MsgFlags::MSG_CTRUNC),
    })
}

/// Accepts one connection on a listening socket, non-blocking and close-on-exec.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let raw =
        accept4(listener.as_raw_fd(), SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC).map_err(io::Error::from)?;
    // SAFETY: accept4 returned a fresh descriptor that no one else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Registers a descriptor with the tokio reactor.
pub(crate) fn register(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is a valid open descriptor that stays open, and keeps
    // returning the same number from `as_raw_fd`, until it is dropped, which only
    // happens when the `AsyncFd` that owns it is dropped or unwrapped.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}
