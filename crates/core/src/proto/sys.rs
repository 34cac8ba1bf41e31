//! Descriptor passing and adoption: the only `unsafe` code of the crate.
//!
//! Each block says why it is sound. Descriptors only ever leave this module as
//! [`OwnedFd`], so whoever holds one closes it exactly once. Receiving follows the
//! sozu habits: `MSG_CMSG_CLOEXEC`; `MSG_CTRUNC`, `MSG_TRUNC` and more than
//! [`MAX_FDS_PER_FRAME`](super::MAX_FDS_PER_FRAME) descriptors are errors; and every descriptor that arrived
//! is adopted (and so closed if unwanted) before any check can return early, the
//! control buffer having room for all a message can carry (`SCM_MAX_FD`).
#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{accept4, sendmsg, ControlMessage, MsgFlags, SockFlag, UnixAddr};

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

/// Most descriptors the kernel passes with one message (`SCM_MAX_FD`). The
/// control buffer has room for this many, so that whatever a peer sends, every
/// descriptor the kernel installs arrives where it can be adopted and closed.
const SCM_MAX_FD: usize = 253;

/// Room for one `SCM_RIGHTS` message of [`SCM_MAX_FD`] descriptors, aligned for
/// `cmsghdr`.
#[repr(C, align(8))]
struct ControlBuf([u8; ControlBuf::LEN]);

impl ControlBuf {
    /// `CMSG_SPACE(SCM_MAX_FD * sizeof(int))`, plus room for one more header.
    const LEN: usize = 64 + SCM_MAX_FD * std::mem::size_of::<RawFd>();
}

/// Receives one frame into `buf`. Non-blocking.
///
/// This calls `recvmsg(2)` itself rather than through nix: nix refuses to list the
/// control messages of a message whose control data was truncated
/// (`MSG_CTRUNC`), and descriptors the kernel already installed in our table would
/// then leak. Here every `SCM_RIGHTS` descriptor present in the control buffer is
/// adopted first, whatever the flags say; the caller turns `ctrunc`, `truncated`
/// and an unexpected count into errors afterwards (dropping, so closing, them).
pub(crate) fn recv_frame(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    use nix::libc;

    let mut control = ControlBuf([0; ControlBuf::LEN]);
    let mut iov = [IoSliceMut::new(buf)];
    // SAFETY: an all-zero msghdr is a valid value (null pointers, zero lengths).
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = iov.as_mut_ptr().cast();
    hdr.msg_iovlen = iov.len() as _;
    hdr.msg_control = control.0.as_mut_ptr().cast();
    hdr.msg_controllen = ControlBuf::LEN as _;
    // SAFETY: `hdr` points at one live iovec (our `buf`) and at `control`, both
    // valid for writes of the lengths given, for the duration of the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: `hdr` was filled by the kernel; CMSG_FIRSTHDR/CMSG_NXTHDR only walk
    // within `msg_control[..msg_controllen]`, which the kernel set to the bytes it
    // wrote (it never exceeds the buffer we gave).
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header returned by CMSG_FIRSTHDR/NXTHDR lies within
        // the control buffer.
        let (level, kind, len) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len as usize) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is a constant computation.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = len.saturating_sub(header) / std::mem::size_of::<RawFd>();
            // SAFETY: CMSG_DATA points just past this header, and `cmsg_len` (which
            // the kernel sets to what it wrote) covers `count` descriptors.
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: within the data of this control message (see above);
                // the data may be unaligned, hence read_unaligned.
                let raw = unsafe { data.add(i).read_unaligned() };
                if raw >= 0 {
                    // SAFETY: the kernel just installed `raw` in our table for this
                    // message (SCM_RIGHTS); nothing else in the process knows the
                    // number, so we are its only owner.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
        // Other control messages (credentials, …) are not used and are dropped.
        // SAFETY: as for CMSG_FIRSTHDR above.
        cmsg = unsafe { libc::CMSG_NXTHDR(&hdr, cmsg) };
    }
    Ok(Received {
        len: n as usize,
        fds,
        truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
        ctrunc: hdr.msg_flags & libc::MSG_CTRUNC != 0,
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
pub fn register(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is a valid open descriptor that stays open, and keeps
    // returning the same number from `as_raw_fd`, until it is dropped, which only
    // happens when the `AsyncFd` that owns it is dropped or unwrapped.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsFd;

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
    }

    /// A message carrying more descriptors than a frame may (here 3, and the most
    /// the kernel passes) leaks none: each is adopted and closed with `Received`.
    #[test]
    fn every_descriptor_of_an_oversized_message_is_owned() {
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap();
        let files: Vec<std::fs::File> = (0..SCM_MAX_FD).map(|_| std::fs::File::open("/dev/null").unwrap()).collect();
        for count in [3, 8, SCM_MAX_FD] {
            let raws: Vec<RawFd> = files[..count].iter().map(AsRawFd::as_raw_fd).collect();
            let before = open_fds();
            for _ in 0..20 {
                let iov = [IoSlice::new(b"frame")];
                sendmsg::<UnixAddr>(a.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&raws)], MsgFlags::empty(), None)
                    .unwrap();
                let mut buf = [0u8; 64];
                let got = recv_frame(b.as_fd(), &mut buf).unwrap();
                assert_eq!(got.fds.len(), count);
                assert!(!got.ctrunc);
                assert_eq!(got.len, 5);
            }
            assert_eq!(open_fds(), before, "{count} descriptors per message leaked");
        }
    }
}

/// A listening socket a service manager passed (systemd's socket activation).
#[derive(Debug)]
pub struct Inherited {
    /// The socket.
    pub fd: OwnedFd,
    /// Its `FileDescriptorName=` (`LISTEN_FDNAMES`), when given.
    pub name: Option<String>,
}

/// Takes the sockets systemd passed with socket activation (`LISTEN_PID` is this
/// process, `LISTEN_FDS` of them from descriptor 3, named by `LISTEN_FDNAMES`),
/// marks them close-on-exec and removes the variables, so that nothing this
/// process spawns takes them for its own. Empty when not socket-activated.
pub fn take_inherited() -> Vec<Inherited> {
    let var = |k: &str| std::env::var(k).ok();
    let for_us = var("LISTEN_PID").and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let count = var("LISTEN_FDS").and_then(|n| n.parse::<i32>().ok()).unwrap_or(0);
    let names: Vec<String> =
        var("LISTEN_FDNAMES").map(|n| n.split(':').map(str::to_owned).collect()).unwrap_or_default();
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(k);
    }
    if !for_us || count <= 0 {
        return Vec::new();
    }
    (0..count.min(1024))
        .filter_map(|i| {
            let raw: RawFd = 3 + i;
            // Checked open (F_GETFD succeeds) before anything takes ownership.
            nix::fcntl::fcntl(raw, nix::fcntl::FcntlArg::F_GETFD).ok()?;
            // SAFETY: systemd passes descriptors 3..3+LISTEN_FDS to the process
            // named by LISTEN_PID (checked above) and nothing else in this process
            // owns them: this is the one place that adopts them, once (the
            // variables are removed first).
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let _ = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
            let name = names.get(i as usize).filter(|n| !n.is_empty() && *n != "unknown").cloned();
            Some(Inherited { fd, name })
        })
        .collect()
}
