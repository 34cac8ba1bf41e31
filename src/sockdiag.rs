//! The accept queues of the listening TCP sockets, asked of the kernel's socket
//! diagnostics (`NETLINK_SOCK_DIAG`, as `ss -lnt` does): for a socket in LISTEN
//! state the kernel reports the connections waiting to be accepted and its
//! backlog, the figures `TCP_INFO` gives uWSGI (`tcpi_unacked`,
//! `tcpi_sacked`), without a descriptor of each listener kept aside (one would
//! keep a stopping pool's port open).
//!
//! Asking for LISTEN sockets only, the kernel walks its table of listening
//! sockets and nothing else: the cost does not grow with the connections and
//! TIME_WAIT sockets of the machine, as reading `/proc/net/tcp` did (4 ms of
//! CPU per reading on an idle machine with a 262 144-bucket connection table,
//! far more with tens of thousands of TIME_WAIT sockets).
//!
//! The request is built and the answer parsed by pure functions (below the
//! I/O), so that both are tested without a kernel.

use std::io;
use std::os::fd::AsRawFd;

use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

/// One listening TCP socket's accept queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptQueue {
    /// Its port.
    pub port: u16,
    /// Connections waiting to be accepted.
    pub queue: u64,
    /// The most that may wait (the socket's backlog).
    pub backlog: u64,
}

// From <linux/netlink.h>, <linux/sock_diag.h>, <linux/inet_diag.h>, <netinet/tcp.h>.
const NLMSG_HDR_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const IPPROTO_TCP: u8 = 6;
const TCP_LISTEN: u32 = 10;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then a
/// 48-byte `inet_diag_sockid`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg` up to `idiag_wqueue`: family, state, timer,
/// retrans, the 48-byte sockid (source port first, big-endian), expires,
/// rqueue, wqueue.
const MSG_MIN_LEN: usize = 4 + 48 + 12;

/// The dump request for `family`'s TCP sockets in LISTEN state.
pub fn request(family: u8, seq: u32) -> Vec<u8> {
    let len = NLMSG_HDR_LEN + REQ_LEN;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    b.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    b.resize(len, 0);
    b
}

/// What one datagram of the answer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// More messages follow (in the next datagram).
    More,
    /// The dump is over.
    Done,
    /// The kernel refused the request (its errno).
    Error(i32),
}

/// Parses one datagram of the kernel's answer, appending the sockets it
/// describes to `out`. A message cut short ends the parse (as `Done`): the
/// kernel never sends one, and a wrong answer must not make the caller loop.
pub fn parse(datagram: &[u8], out: &mut Vec<AcceptQueue>) -> Answer {
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDR_LEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < NLMSG_HDR_LEN || len > rest.len() {
            return Answer::Done;
        }
        let body = &rest[NLMSG_HDR_LEN..len];
        match kind {
            NLMSG_DONE => return Answer::Done,
            NLMSG_ERROR => {
                let errno = body.get(..4).map_or(0, |e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]));
                return Answer::Error(-errno);
            }
            SOCK_DIAG_BY_FAMILY if body.len() >= MSG_MIN_LEN => {
                let u32_at =
                    |at: usize| u64::from(u32::from_ne_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]));
                out.push(AcceptQueue {
                    port: u16::from_be_bytes([body[4], body[5]]),
                    queue: u32_at(56),
                    backlog: u32_at(60),
                });
            }
            _ => {}
        }
        // Messages are aligned to 4 bytes.
        rest = rest.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Answer::More
}

/// The accept queues of this network namespace's listening TCP sockets (IPv4
/// and IPv6). Blocking: a few system calls, well under a millisecond.
pub fn listening() -> io::Result<Vec<AcceptQueue>> {
    let fd = socket::socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let kernel = NetlinkAddr::new(0, 0);
    let mut out = Vec::new();
    // Large enough for any datagram the kernel sends a dump in.
    let mut buf = vec![0u8; 64 * 1024];
    for (seq, family) in [(1, AddressFamily::Inet as u8), (2, AddressFamily::Inet6 as u8)] {
        socket::sendto(fd.as_raw_fd(), &request(family, seq), &kernel, MsgFlags::empty())?;
        // Bounded: a dump of listening sockets is a few datagrams.
        let mut rounds = 0;
        loop {
            let n = socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            match parse(&buf[..n], &mut out) {
                Answer::More if n > 0 && rounds < 10_000 => rounds += 1,
                Answer::More | Answer::Done => break,
                Answer::Error(errno) => return Err(io::Error::from_raw_os_error(errno)),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel message: header, then `body`, padded to 4 bytes.
    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDR_LEN + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        m.resize((len + 3) & !3, 0);
        m
    }

    fn listener(port: u16, queue: u32, backlog: u32) -> Vec<u8> {
        let mut body = vec![2, TCP_LISTEN as u8, 0, 0];
        body.extend_from_slice(&port.to_be_bytes());
        body.resize(4 + 48, 0);
        body.extend_from_slice(&0u32.to_ne_bytes());
        body.extend_from_slice(&queue.to_ne_bytes());
        body.extend_from_slice(&backlog.to_ne_bytes());
        body.extend_from_slice(&[0; 8]);
        // An attribute the parse skips.
        body.extend_from_slice(&[8, 0, 1, 0, 0, 0, 0, 0]);
        body.push(7); // odd length: the next message starts after padding
        message(SOCK_DIAG_BY_FAMILY, &body)
    }

    #[test]
    fn the_request_asks_for_listening_tcp_sockets() {
        let r = request(10, 7);
        assert_eq!(r.len(), 72);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(r[4..6].try_into().unwrap()), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u16::from_ne_bytes(r[6..8].try_into().unwrap()), 0x301);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 7);
        assert_eq!(&r[16..20], &[10, 6, 0, 0]);
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 1 << 10);
    }

    #[test]
    fn answers_give_each_listeners_queue_and_backlog() {
        let mut d = listener(8080, 3, 128);
        d.extend(listener(443, 0, 4096));
        let mut out = Vec::new();
        assert_eq!(parse(&d, &mut out), Answer::More);
        assert_eq!(
            out,
            [AcceptQueue { port: 8080, queue: 3, backlog: 128 }, AcceptQueue { port: 443, queue: 0, backlog: 4096 }]
        );
        assert_eq!(parse(&message(NLMSG_DONE, &[0; 4]), &mut out), Answer::Done);
        assert_eq!(parse(&message(NLMSG_ERROR, &(-22i32).to_ne_bytes()), &mut out), Answer::Error(22));
        // Cut short, or a length that lies: the parse stops, nothing invented.
        let mut cut = Vec::new();
        assert_eq!(parse(&d[..d.len() - 5], &mut cut), Answer::Done);
        assert_eq!(cut.len(), 1);
        let mut liar = d.clone();
        liar[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(parse(&liar, &mut cut), Answer::Done);
        assert_eq!(cut.len(), 1);
    }

    #[test]
    fn the_kernel_reports_connections_waiting_on_a_listener() {
        // A listener nobody accepts on, with three connections waiting.
        let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        l.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
        l.listen(37).unwrap();
        let port = l.local_addr().unwrap().as_socket().unwrap().port();
        let clients: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
        let found = listening().unwrap().into_iter().find(|q| q.port == port);
        assert_eq!(found, Some(AcceptQueue { port, queue: 3, backlog: 37 }));
        drop(clients);
    }
}
