//! Listening sockets: one per worker per listen address, joined by SO_REUSEPORT
//! so the kernel spreads clients over the workers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use nix::sys::socket::{setsockopt, sockopt, TimestampingFlag};
use socket2::{Domain, Protocol, Socket, Type};

use super::cmsg::{write_sockaddr, write_ts_opt_id, SOCKADDR_SPACE, TS_OPT_ID_SPACE};

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
    /// How the replies' transmit timestamps are matched to their replies.
    pub tx_ids: TxStampIds,
}

/// Whether a socket's replies are stamped by the kernel as they leave, and
/// how a stamp read back from the error queue names its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStampIds {
    /// No transmit timestamps.
    Off,
    /// Each reply names its id (`SCM_TS_OPT_ID`, Linux 6.13 and later).
    Explicit,
    /// The socket numbers the datagrams it sends (`SOF_TIMESTAMPING_OPT_ID`):
    /// every datagram sent takes the next number. Whether a failed send
    /// takes one depends on the kernel (since 6.2 it does not), so the
    /// worker starts the count afresh after a failure.
    Counter,
}

/// The receive timestamping every listening socket has.
fn rx_flags() -> TimestampingFlag {
    TimestampingFlag::SOF_TIMESTAMPING_RX_SOFTWARE | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE
}

/// Receive and software transmit timestamps, numbered, without the datagram
/// looped back with each stamp (`OPT_TSONLY`: the stamp alone).
fn rx_tx_flags() -> TimestampingFlag {
    rx_flags()
        | TimestampingFlag::SOF_TIMESTAMPING_TX_SOFTWARE
        | TimestampingFlag::SOF_TIMESTAMPING_OPT_ID
        | TimestampingFlag::SOF_TIMESTAMPING_OPT_TSONLY
}

/// Turns on transmit timestamps and says how their ids are given. Without
/// them (an old kernel, a sandbox) the socket still serves, stamped on
/// receive only.
fn enable_tx_stamps(socket: &Socket, local: SocketAddr) -> TxStampIds {
    if setsockopt(socket, sockopt::Timestamping, &rx_tx_flags()).is_err() {
        let _ = setsockopt(socket, sockopt::Timestamping, &rx_flags());
        return TxStampIds::Off;
    }
    if explicit_ids_supported(socket, local) {
        TxStampIds::Explicit
    } else {
        TxStampIds::Counter
    }
}

/// Starts a socket's datagram count afresh at 0 (the kernel resets it when
/// `OPT_ID` is turned on). False when the kernel refused.
pub fn restart_tx_count(socket: &UdpSocket) -> bool {
    setsockopt(socket, sockopt::Timestamping, &rx_flags()).is_ok()
        && setsockopt(socket, sockopt::Timestamping, &rx_tx_flags()).is_ok()
}

/// Whether the kernel takes `SCM_TS_OPT_ID`: a `sendmsg` with the message
/// and `MSG_PROBE`, which checks the control messages and the route and
/// sends nothing. Asked once per process.
fn explicit_ids_supported(socket: &Socket, local: SocketAddr) -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let to = match local.ip() {
            ip if !ip.is_unspecified() => SocketAddr::new(ip, 9),
            IpAddr::V4(_) => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 9),
            IpAddr::V6(_) => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 9),
        };
        probe_send(socket, to)
    })
}

/// `MSG_PROBE`: the kernel goes through the send path up to building the
/// datagram, and stops there. Not in the libc crate.
const MSG_PROBE: libc::c_int = 0x10;

fn probe_send(socket: &Socket, to: SocketAddr) -> bool {
    use std::os::fd::AsRawFd;
    let mut name = [0u8; SOCKADDR_SPACE];
    let name_len = write_sockaddr(&to, &mut name);
    #[repr(C, align(8))]
    struct Control([u8; TS_OPT_ID_SPACE]);
    let mut control = Control([0; TS_OPT_ID_SPACE]);
    let control_len = write_ts_opt_id(1, &mut control.0);
    let mut payload = [0u8; 48];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: msghdr is a plain C struct; all-zero is a valid empty value.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = name.as_mut_ptr().cast();
    hdr.msg_namelen = name_len as libc::socklen_t;
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.0.as_mut_ptr().cast();
    hdr.msg_controllen = control_len as _;
    // SAFETY: every pointer in `hdr` points at a live local buffer of the
    // stated length; MSG_PROBE makes the kernel send nothing.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &hdr, MSG_PROBE | libc::MSG_DONTWAIT) };
    sent >= 0
}

/// Opens one socket for `addr`: SO_REUSEPORT, kernel software receive and
/// transmit timestamps, packet info, and a receive buffer of `rcvbuf` bytes
/// (see `config::DEFAULT_RCVBUF` for why it is not larger).
pub fn open_listen_socket(addr: SocketAddr, rcvbuf: usize) -> io::Result<ListenSocket> {
    open_socket(addr, rcvbuf, true)
}

/// [`open_listen_socket`], with transmit timestamps only when `tx_stamps`.
pub fn open_socket(addr: SocketAddr, rcvbuf: usize, tx_stamps: bool) -> io::Result<ListenSocket> {
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
    setsockopt(&socket, sockopt::Timestamping, &rx_flags()).map_err(io::Error::from)?;
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
    let tx_ids = if tx_stamps {
        enable_tx_stamps(&socket, addr)
    } else {
        TxStampIds::Off
    };
    let socket: UdpSocket = socket.into();
    let local = socket.local_addr()?;
    Ok(ListenSocket {
        socket,
        local,
        wildcard,
        rcvbuf: granted,
        tx_ids,
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
    open_group(addr, count, rcvbuf, true)
}

/// [`open_listen_group`], with transmit timestamps only when `tx_stamps`.
pub fn open_group(
    addr: SocketAddr,
    count: usize,
    rcvbuf: usize,
    tx_stamps: bool,
) -> io::Result<Vec<ListenSocket>> {
    if addr.port() != 0 {
        ensure_not_served(addr)?;
    }
    let first = open_socket(addr, rcvbuf, tx_stamps)?;
    let bound = first.local;
    let mut group = vec![first];
    for _ in 1..count {
        group.push(open_socket(bound, rcvbuf, tx_stamps)?);
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
