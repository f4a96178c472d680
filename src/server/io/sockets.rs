//! Listening sockets: one per worker per listen address, joined by SO_REUSEPORT
//! so the kernel spreads clients over the workers.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use nix::sys::socket::{setsockopt, sockopt, TimestampingFlag};
use socket2::{Domain, Protocol, Socket, Type};

/// A bound UDP socket with everything the workers need to know about it.
#[derive(Debug)]
pub struct ListenSocket {
    pub socket: UdpSocket,
    /// The address actually bound (port resolved when 0 was asked for).
    pub local: SocketAddr,
    /// Bound to the unspecified address: replies must carry the request's
    /// destination as their source (IP_PKTINFO / IPV6_PKTINFO).
    pub wildcard: bool,
    /// SO_RCVBUF as the kernel set it (twice what was asked, when granted).
    pub rcvbuf: usize,
}

/// Opens one socket for `addr`: SO_REUSEPORT, kernel software receive
/// timestamps, packet info, and a receive buffer of `rcvbuf` bytes (see
/// `config::DEFAULT_RCVBUF` for why it is not larger).
pub fn open_listen_socket(addr: SocketAddr, rcvbuf: usize) -> io::Result<ListenSocket> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // One socket per family: the IPv4 listener handles IPv4.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    // The privileged override goes past net.core.rmem_max; without
    // CAP_NET_ADMIN the plain option is capped there, which the caller reports.
    if setsockopt(&socket, sockopt::RcvBufForce, &rcvbuf).is_err() {
        let _ = socket.set_recv_buffer_size(rcvbuf);
    }
    let granted = socket.recv_buffer_size()?;
    setsockopt(
        &socket,
        sockopt::Timestamping,
        &(TimestampingFlag::SOF_TIMESTAMPING_RX_SOFTWARE
            | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE),
    )
    .map_err(io::Error::from)?;
    // Each datagram then tells how many the kernel dropped before it for a
    // full receive queue: overload that never reaches the worker otherwise.
    setsockopt(&socket, sockopt::RxqOvfl, &1).map_err(io::Error::from)?;
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
        rcvbuf: granted,
    })
}

/// Fails when another process already serves `addr`. Our sockets use
/// SO_REUSEPORT, so a second tachyond (or anything else with the option)
/// would silently join their group and take part of the traffic; a plain
/// bind of the same address succeeds only when nobody holds it (a wildcard
/// holder blocks a specific address and the other way round).
fn ensure_not_served(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    match probe.bind(&addr.into()) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another process already serves {addr} (another tachyond, or another NTP \
                 daemon: `ss -ulpn 'sport = :{}'` names it)",
                addr.port()
            ),
        )),
        other => other,
    }
}

/// Opens `count` sockets sharing `addr` (one per worker). With port 0 the first
/// socket picks the port and the others join it. Refuses an address another
/// process already serves.
pub fn open_listen_group(
    addr: SocketAddr,
    count: usize,
    rcvbuf: usize,
) -> io::Result<Vec<ListenSocket>> {
    if addr.port() != 0 {
        ensure_not_served(addr)?;
    }
    let first = open_listen_socket(addr, rcvbuf)?;
    let bound = first.local;
    let mut group = vec![first];
    for _ in 1..count {
        group.push(open_listen_socket(bound, rcvbuf)?);
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receive_buffer_is_what_was_asked() {
        let asked = 256 << 10;
        let socket = open_listen_socket("127.0.0.1:0".parse().unwrap(), asked).unwrap();
        // Linux doubles the value for its own overhead. Without CAP_NET_ADMIN
        // the kernel caps it at net.core.rmem_max instead.
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        assert!(
            socket.rcvbuf == 2 * asked || socket.rcvbuf == 2 * cap.min(asked),
            "granted {} for {asked} asked (rmem_max {cap})",
            socket.rcvbuf
        );
        let smaller = open_listen_socket("127.0.0.1:0".parse().unwrap(), 32 << 10).unwrap();
        assert_eq!(smaller.rcvbuf, 64 << 10);
    }

    #[test]
    fn an_address_served_by_another_group_is_refused() {
        let first = open_listen_group("127.0.0.1:0".parse().unwrap(), 2, 64 << 10).unwrap();
        let taken = first[0].local;
        let second = open_listen_group(taken, 2, 64 << 10).unwrap_err();
        assert_eq!(second.kind(), io::ErrorKind::AddrInUse);
        assert!(
            second
                .to_string()
                .contains("another process already serves"),
            "{second}"
        );
        // A wildcard holder blocks a specific address of the same port.
        let wildcard = open_listen_group("0.0.0.0:0".parse().unwrap(), 1, 64 << 10).unwrap();
        let specific: SocketAddr = format!("127.0.0.1:{}", wildcard[0].local.port())
            .parse()
            .unwrap();
        assert!(open_listen_group(specific, 1, 64 << 10).is_err());
    }
}
