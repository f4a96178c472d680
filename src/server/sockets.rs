//! Listening sockets: one per worker per listen address, joined by SO_REUSEPORT
//! so the kernel spreads clients over the workers.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use nix::sys::socket::{setsockopt, sockopt, TimestampingFlag};
use socket2::{Domain, Protocol, Socket, Type};

/// Receive buffer asked for each socket: bursts at pool scale must not overflow
/// it while a worker is busy with the previous batch.
const RECV_BUFFER_BYTES: usize = 4 << 20;

/// A bound UDP socket with everything the workers need to know about it.
#[derive(Debug)]
pub struct ListenSocket {
    pub socket: UdpSocket,
    /// The address actually bound (port resolved when 0 was asked for).
    pub local: SocketAddr,
    /// Bound to the unspecified address: replies must carry the request's
    /// destination as their source (IP_PKTINFO / IPV6_PKTINFO).
    pub wildcard: bool,
}

/// Opens one socket for `addr`: SO_REUSEPORT, kernel software receive timestamps,
/// packet info, a large receive buffer.
pub fn open_listen_socket(addr: SocketAddr) -> io::Result<ListenSocket> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // One socket per family: the IPv4 listener handles IPv4.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    // Prefer the privileged override so a busy server gets the buffer it asks for.
    if setsockopt(&socket, sockopt::RcvBufForce, &RECV_BUFFER_BYTES).is_err() {
        let _ = socket.set_recv_buffer_size(RECV_BUFFER_BYTES);
    }
    setsockopt(
        &socket,
        sockopt::Timestamping,
        &(TimestampingFlag::SOF_TIMESTAMPING_RX_SOFTWARE
            | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE),
    )
    .map_err(io::Error::from)?;
    let wildcard = addr.ip().is_unspecified();
    if wildcard {
        if addr.is_ipv4() {
            setsockopt(&socket, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from)?;
        } else {
            setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true).map_err(io::Error::from)?;
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let socket: UdpSocket = socket.into();
    let local = socket.local_addr()?;
    Ok(ListenSocket {
        socket,
        local,
        wildcard,
    })
}

/// Opens `count` sockets sharing `addr` (one per worker). With port 0 the first
/// socket picks the port and the others join it.
pub fn open_listen_group(addr: SocketAddr, count: usize) -> io::Result<Vec<ListenSocket>> {
    let first = open_listen_socket(addr)?;
    let bound = first.local;
    let mut group = vec![first];
    for _ in 1..count {
        group.push(open_listen_socket(bound)?);
    }
    Ok(group)
}
