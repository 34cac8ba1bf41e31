//! Fuzz target `proto_frame`: a frame as a zergling (or the pool) could send it,
//! with descriptors, received through a real `SOCK_SEQPACKET` socket pair by
//! `proto::Channel` (the raw `recvmsg` and descriptor adoption of `proto::sys`,
//! then `proto::decode`).
//!
//! The first input byte is how many descriptors travel with the frame (0 to 4, so
//! both "one too many" and `MSG_CTRUNC`-free multiples are covered); the rest is the
//! frame. Checked:
//!
//! * no descriptor is ever left open: the process holds exactly as many as before,
//!   whatever the verdict;
//! * a message is returned with a descriptor exactly when its type carries one;
//! * a message that decodes re-encodes to a frame that decodes to the same message
//!   (so the pool and the zergling never disagree on what was said);
//! * `decode` on the bare bytes agrees with what the channel returned.

#![no_main]

use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use libfuzzer_sys::fuzz_target;
use nix::sys::socket::{sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr};
use zergpool::proto::{decode, encode, Channel, ChannelError, RecvBuf, MAX_FRAME};

struct Rig {
    rt: tokio::runtime::Runtime,
    sender: OwnedFd,
    channel: Channel,
    buf: RecvBuf,
    files: Vec<File>,
}

thread_local! {
    static RIG: std::cell::RefCell<Rig> = std::cell::RefCell::new(rig());
}

fn rig() -> Rig {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let (sender, receiver) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .expect("a socket pair");
    let channel = rt.block_on(async { Channel::from_fd(receiver) }).expect("a channel");
    let files = (0..4).map(|_| File::open("/dev/null").expect("/dev/null")).collect();
    Rig { rt, sender, channel, buf: RecvBuf::new(), files }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fuzz_target!(|data: &[u8]| {
    let Some((&count, frame)) = data.split_first() else {
        return;
    };
    // An empty record reads as "peer closed" and is not a frame; longer ones than
    // the kernel's socket buffer would just fail to send.
    if frame.is_empty() || frame.len() > MAX_FRAME + 16 {
        return;
    }
    RIG.with(|rig| {
        let rig = &mut *rig.borrow_mut();
        let count = usize::from(count % 5);
        let raws: Vec<RawFd> = rig.files[..count].iter().map(AsRawFd::as_raw_fd).collect();
        let before = open_fds();
        let cmsgs = if raws.is_empty() { vec![] } else { vec![ControlMessage::ScmRights(&raws)] };
        let iov = [IoSlice::new(frame)];
        if sendmsg::<UnixAddr>(rig.sender.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_DONTWAIT, None).is_err() {
            return;
        }
        let got = rig.rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), rig.channel.recv_with(&mut rig.buf)).await
        });
        let got = got.expect("a frame that was sent is received");
        match got {
            Ok((msg, fd)) => {
                assert_eq!(fd.is_some(), msg.carries_fd(), "{} with the wrong descriptors", msg.name());
                assert_eq!(decode(frame).as_ref(), Ok(&msg), "the channel and decode disagree");
                let again = encode(&msg);
                assert_eq!(decode(&again), Ok(msg.clone()), "re-encoding changed the message");
                drop(fd);
            }
            Err(ChannelError::Decode(e)) => assert_eq!(decode(frame), Err(e)),
            Err(ChannelError::Oversize) => assert!(frame.len() > MAX_FRAME),
            Err(ChannelError::WrongFdCount { .. }) => {}
            Err(other) => panic!("unexpected channel error: {other}"),
        }
        assert_eq!(open_fds(), before, "descriptors leaked ({count} sent with the frame)");
    });
});
