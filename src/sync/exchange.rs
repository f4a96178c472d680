//! The sync thread's packets: each poll from a fresh random-port socket,
//! connected to the polled address (RFC 9109), its reply read with the
//! kernel's receive timestamp.

use std::io::IoSliceMut;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage, TimestampingFlag,
    Timestamps,
};

use crate::proto::NtpTimestamp;

/// One outstanding request.
pub struct InFlight {
    pub socket: UdpSocket,
    /// When it was sent, on the served time scale.
    pub t1: NtpTimestamp,
    pub peer: SocketAddr,
}

/// A socket for one request to `peer`: a fresh random port, connected, with
/// kernel receive timestamps.
pub fn open_request_socket(peer: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    // Port 0: the kernel picks a fresh random port for every request.
    let socket = UdpSocket::bind(local)?;
    socket.connect(peer)?;
    setsockopt(
        &socket,
        sockopt::Timestamping,
        &(TimestampingFlag::SOF_TIMESTAMPING_RX_SOFTWARE
            | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE),
    )
    .map_err(std::io::Error::from)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Reads one datagram and its kernel receive timestamp (Unix ns).
pub fn receive(socket: &UdpSocket, buf: &mut [u8]) -> Option<(usize, Option<i64>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(Timestamps);
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT,
    )
    .ok()?;
    let mut stamp = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmTimestampsns(ts) = c {
                let s = ts.system;
                stamp = s
                    .tv_sec()
                    .checked_mul(1_000_000_000)
                    .and_then(|ns| ns.checked_add(s.tv_nsec()));
            }
        }
    }
    Some((msg.bytes, stamp))
}
