//! Socket addresses and control messages as raw bytes, parsed and built without
//! unsafe code. Both I/O backends hand the kernel's bytes to these functions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Room for any socket address we deal with (`sockaddr_in6` is 28 bytes).
pub const SOCKADDR_SPACE: usize = 28;
/// Room for the receive control messages: a timestamping message (3 timespecs)
/// plus a packet-info message, with headers and alignment, and slack.
pub const RX_CONTROL_SPACE: usize = 192;
/// Room for the control messages on send: packet info (40 bytes for
/// IPv6), then the transmit timestamp's id (24).
pub const TX_CONTROL_SPACE: usize = 64;

const CMSG_HEADER: usize = std::mem::size_of::<libc::cmsghdr>();
const ALIGN: usize = std::mem::size_of::<usize>();

fn cmsg_align(len: usize) -> usize {
    (len + ALIGN - 1) & !(ALIGN - 1)
}

fn read_usize(b: &[u8]) -> usize {
    let mut a = [0u8; ALIGN];
    a.copy_from_slice(&b[..ALIGN]);
    usize::from_ne_bytes(a)
}

fn read_i32(b: &[u8]) -> i32 {
    i32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

fn read_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_ne_bytes(a)
}

/// Decodes a `sockaddr_in` or `sockaddr_in6`.
pub fn parse_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    if name.len() < 2 {
        return None;
    }
    let family = u16::from_ne_bytes([name[0], name[1]]) as i32;
    match family {
        libc::AF_INET if name.len() >= 16 => {
            let port = u16::from_be_bytes([name[2], name[3]]);
            let ip = Ipv4Addr::new(name[4], name[5], name[6], name[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 if name.len() >= 28 => {
            let port = u16::from_be_bytes([name[2], name[3]]);
            let flowinfo = u32::from_be_bytes([name[4], name[5], name[6], name[7]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&name[8..24]);
            let scope = u32::from_ne_bytes([name[24], name[25], name[26], name[27]]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(octets),
                port,
                flowinfo,
                scope,
            )))
        }
        _ => None,
    }
}

/// Encodes a socket address into `out` (at least [`SOCKADDR_SPACE`] bytes) and
/// returns its length.
pub fn write_sockaddr(addr: &SocketAddr, out: &mut [u8]) -> usize {
    out[..SOCKADDR_SPACE].fill(0);
    match addr {
        SocketAddr::V4(a) => {
            out[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            out[2..4].copy_from_slice(&a.port().to_be_bytes());
            out[4..8].copy_from_slice(&a.ip().octets());
            16
        }
        SocketAddr::V6(a) => {
            out[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            out[2..4].copy_from_slice(&a.port().to_be_bytes());
            out[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
            out[8..24].copy_from_slice(&a.ip().octets());
            out[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
            28
        }
    }
}

/// What the kernel told us about a received datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxMeta {
    /// Software receive timestamp (`SCM_TIMESTAMPING` ts[0]), Unix nanoseconds.
    pub timestamp_ns: Option<i64>,
    /// The address the datagram was sent to, and the interface it came in on.
    pub local: Option<(IpAddr, u32)>,
    /// It was sent to a broadcast or multicast address, not to one of ours:
    /// never answered (the reply could not leave from that address, and a
    /// server must not answer a whole subnet's worth of spoofed requests).
    pub not_unicast: bool,
    /// `SO_RXQ_OVFL`: how many datagrams the kernel had dropped on this socket,
    /// for a full receive queue, since it was opened (a wrapping count, sent
    /// only once it is non-zero).
    pub socket_drops: Option<u32>,
}

/// Walks a control-message buffer as the kernel laid it out (`CMSG_FIRSTHDR` /
/// `CMSG_NXTHDR` semantics), calling `f(level, type, data)` for each message
/// and stopping at anything malformed.
fn for_each_message(control: &[u8], mut f: impl FnMut(i32, i32, &[u8])) {
    let mut at = 0usize;
    while at + CMSG_HEADER <= control.len() {
        let len = read_usize(&control[at..]);
        // Compared against what is left, so that a huge length cannot overflow.
        if len < CMSG_HEADER || len > control.len() - at {
            break;
        }
        let level = read_i32(&control[at + ALIGN..]);
        let kind = read_i32(&control[at + ALIGN + 4..]);
        f(
            level,
            kind,
            &control[at + cmsg_align(CMSG_HEADER)..at + len],
        );
        at = match at.checked_add(cmsg_align(len)) {
            Some(next) => next,
            None => break,
        };
    }
}

/// Reads the control messages of a received datagram, ignoring anything
/// malformed.
pub fn parse_control(control: &[u8]) -> RxMeta {
    let mut meta = RxMeta::default();
    for_each_message(control, |level, kind, data| match (level, kind) {
        (libc::SOL_SOCKET, libc::SCM_TIMESTAMPING) if data.len() >= 16 => {
            let secs = read_i64(data);
            let nanos = read_i64(&data[8..]);
            if secs != 0 || nanos != 0 {
                meta.timestamp_ns = timespec_ns(secs, nanos);
            }
        }
        (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) if data.len() >= 16 => {
            meta.timestamp_ns = timespec_ns(read_i64(data), read_i64(&data[8..]));
        }
        (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) if data.len() >= 4 => {
            meta.socket_drops = Some(read_i32(data) as u32);
        }
        // struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
        // For a datagram to one of our addresses the kernel sets
        // ipi_spec_dst to the header's destination; for a broadcast or
        // multicast one, to a local address of the interface instead.
        (libc::IPPROTO_IP, libc::IP_PKTINFO) if data.len() >= 12 => {
            let ifindex = read_i32(data) as u32;
            let spec_dst = Ipv4Addr::new(data[4], data[5], data[6], data[7]);
            let dst = Ipv4Addr::new(data[8], data[9], data[10], data[11]);
            meta.local = Some((IpAddr::V4(dst), ifindex));
            meta.not_unicast = dst != spec_dst || dst.is_broadcast() || dst.is_multicast();
        }
        // struct in6_pktinfo { in6_addr ipi6_addr; unsigned ipi6_ifindex; }
        (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if data.len() >= 20 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&data[..16]);
            let ifindex = read_i32(&data[16..]) as u32;
            let dst = Ipv6Addr::from(octets);
            meta.local = Some((IpAddr::V6(dst), ifindex));
            meta.not_unicast = dst.is_multicast();
        }
        _ => {}
    });
    meta
}

/// A transmit timestamp the kernel queued on a socket's error queue
/// (`SO_TIMESTAMPING` with `SOF_TIMESTAMPING_OPT_ID`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxStampMeta {
    /// The datagram's id: the socket's count of datagrams sent, or the id
    /// given with `SCM_TS_OPT_ID`.
    pub id: u32,
    /// The software stamp (taken as the driver got the datagram), Unix ns.
    pub software_ns: Option<i64>,
    /// The NIC's stamp, on its own clock (`SCM_TIMESTAMPING` ts[2]).
    pub hardware_ns: Option<i64>,
}

/// `SO_EE_ORIGIN_TIMESTAMPING`: the error-queue message is a timestamp.
const ORIGIN_TIMESTAMPING: u8 = 4;
/// `SCM_TSTAMP_SND`: stamped when the datagram went to the device.
const TSTAMP_SND: u32 = 0;

/// Reads the control messages of one error-queue message: a transmit
/// timestamp of a sent datagram, or `None` for anything else (scheduler or
/// acknowledgement stamps, ICMP errors, malformed control data).
pub fn parse_tx_stamp(control: &[u8]) -> Option<TxStampMeta> {
    let mut stamp = TxStampMeta::default();
    let mut is_send_stamp = false;
    for_each_message(control, |level, kind, data| match (level, kind) {
        (libc::SOL_SOCKET, libc::SCM_TIMESTAMPING) if data.len() >= 48 => {
            let at =
                |i: usize| timespec_ns(read_i64(&data[16 * i..]), read_i64(&data[16 * i + 8..]));
            stamp.software_ns = at(0).filter(|&ns| ns != 0);
            stamp.hardware_ns = at(2).filter(|&ns| ns != 0);
        }
        // struct sock_extended_err { u32 ee_errno; u8 ee_origin, ee_type,
        // ee_code, ee_pad; u32 ee_info; u32 ee_data; }
        (libc::SOL_IP, libc::IP_RECVERR) | (libc::SOL_IPV6, libc::IPV6_RECVERR)
            if data.len() >= 16 =>
        {
            let errno = read_i32(data);
            let info = read_i32(&data[8..]) as u32;
            is_send_stamp =
                errno == libc::ENOMSG && data[4] == ORIGIN_TIMESTAMPING && info == TSTAMP_SND;
            stamp.id = read_i32(&data[12..]) as u32;
        }
        _ => {}
    });
    let stamped = stamp.software_ns.is_some() || stamp.hardware_ns.is_some();
    (is_send_stamp && stamped).then_some(stamp)
}

/// A kernel `timespec` in Unix nanoseconds; `None` beyond what i64
/// nanoseconds hold (year 2262), which no kernel stamp reaches.
fn timespec_ns(secs: i64, nanos: i64) -> Option<i64> {
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn write_cmsg_header(out: &mut [u8], data_len: usize, level: i32, kind: i32) -> usize {
    let len = cmsg_align(CMSG_HEADER) + data_len;
    out[..ALIGN].copy_from_slice(&len.to_ne_bytes());
    out[ALIGN..ALIGN + 4].copy_from_slice(&level.to_ne_bytes());
    out[ALIGN + 4..ALIGN + 8].copy_from_slice(&kind.to_ne_bytes());
    len
}

/// Writes the packet-info message that makes a reply leave from the address the
/// request was sent to (needed on wildcard sockets of multi-homed hosts). Returns
/// the control length to put in `msg_controllen`.
pub fn write_source_pktinfo(local: IpAddr, ifindex: u32, out: &mut [u8]) -> usize {
    out[..TX_CONTROL_SPACE].fill(0);
    let data_at = cmsg_align(CMSG_HEADER);
    match local {
        IpAddr::V4(ip) => {
            let len = write_cmsg_header(out, 12, libc::IPPROTO_IP, libc::IP_PKTINFO);
            // ifindex 0: let routing choose the interface; ipi_spec_dst sets the source.
            out[data_at + 4..data_at + 8].copy_from_slice(&ip.octets());
            cmsg_align(len)
        }
        IpAddr::V6(ip) => {
            let len = write_cmsg_header(out, 20, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO);
            out[data_at..data_at + 16].copy_from_slice(&ip.octets());
            // The interface matters for link-local sources.
            out[data_at + 16..data_at + 20].copy_from_slice(&(ifindex as i32).to_ne_bytes());
            cmsg_align(len)
        }
    }
}

/// `SCM_TS_OPT_ID` (Linux 6.13): the id a datagram's transmit timestamp
/// will carry, given with the datagram instead of taken from the socket's
/// counter. Not in the libc crate yet; 81 on every architecture but alpha,
/// mips, parisc and sparc, which tachyon does not build for.
pub const SCM_TS_OPT_ID: i32 = 81;

/// Room for the `SCM_TS_OPT_ID` message.
pub const TS_OPT_ID_SPACE: usize = 24;

/// Writes the message that gives a datagram's transmit timestamp the id
/// `id`; returns its length (to add to `msg_controllen`).
pub fn write_ts_opt_id(id: u32, out: &mut [u8]) -> usize {
    out[..TS_OPT_ID_SPACE].fill(0);
    let len = write_cmsg_header(out, 4, libc::SOL_SOCKET, SCM_TS_OPT_ID);
    let data_at = cmsg_align(CMSG_HEADER);
    out[data_at..data_at + 4].copy_from_slice(&id.to_ne_bytes());
    cmsg_align(len)
}

/// Writes a per-datagram `SO_TIMESTAMPING` message asking for no transmit
/// timestamp: the datagram neither gets one nor takes an id from the
/// socket's counter, so sends outside the reply path (mode 6 answers) never
/// shift the matching of stamps to replies. Returns its length.
pub fn write_no_tx_stamp(out: &mut [u8]) -> usize {
    out[..TS_OPT_ID_SPACE].fill(0);
    let len = write_cmsg_header(out, 4, libc::SOL_SOCKET, libc::SO_TIMESTAMPING);
    cmsg_align(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for addr in [
            "127.0.0.1:123".parse::<SocketAddr>().unwrap(),
            "[::1]:40000".parse().unwrap(),
            "[fe80::1%3]:5".parse().unwrap(),
        ] {
            let mut buf = [0u8; SOCKADDR_SPACE];
            let len = write_sockaddr(&addr, &mut buf);
            assert_eq!(parse_sockaddr(&buf[..len]), Some(addr));
        }
        assert_eq!(parse_sockaddr(&[0u8; 1]), None);
        assert_eq!(parse_sockaddr(&[0xffu8; 28]), None);
    }

    fn timestamping(secs: i64, nanos: i64) -> Vec<u8> {
        let mut out = vec![0u8; 64];
        let len = write_cmsg_header(&mut out, 48, libc::SOL_SOCKET, libc::SCM_TIMESTAMPING);
        out[16..24].copy_from_slice(&secs.to_ne_bytes());
        out[24..32].copy_from_slice(&nanos.to_ne_bytes());
        out.truncate(cmsg_align(len));
        out
    }

    #[test]
    fn parses_timestamp_and_pktinfo() {
        let mut control = timestamping(1_700_000_000, 123);
        let mut pktinfo = [0u8; TX_CONTROL_SPACE];
        let n = write_source_pktinfo("::1".parse().unwrap(), 7, &mut pktinfo);
        control.extend_from_slice(&pktinfo[..n]);
        let meta = parse_control(&control);
        assert_eq!(meta.timestamp_ns, Some(1_700_000_000_000_000_123));
        assert_eq!(meta.local, Some(("::1".parse().unwrap(), 7)));
    }

    fn ipv4_pktinfo(spec_dst: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut c = vec![0u8; 32];
        write_cmsg_header(&mut c, 12, libc::IPPROTO_IP, libc::IP_PKTINFO);
        c[16..20].copy_from_slice(&2i32.to_ne_bytes());
        c[20..24].copy_from_slice(&spec_dst);
        c[24..28].copy_from_slice(&dst);
        c
    }

    #[test]
    fn ipv4_pktinfo_reads_the_destination_address() {
        let meta = parse_control(&ipv4_pktinfo([127, 0, 0, 5], [127, 0, 0, 5]));
        assert_eq!(meta.local, Some(("127.0.0.5".parse().unwrap(), 2)));
        assert!(!meta.not_unicast);
    }

    #[test]
    fn broadcast_and_multicast_destinations_are_flagged() {
        // As the kernel reports a datagram to lo's broadcast address.
        for (spec_dst, dst) in [
            ([127, 0, 0, 1], [127, 255, 255, 255]),
            ([192, 0, 2, 2], [255, 255, 255, 255]),
            ([192, 0, 2, 2], [224, 0, 1, 1]),
        ] {
            assert!(
                parse_control(&ipv4_pktinfo(spec_dst, dst)).not_unicast,
                "{dst:?}"
            );
        }
        let mut pktinfo = [0u8; TX_CONTROL_SPACE];
        let n = write_source_pktinfo("ff02::101".parse().unwrap(), 3, &mut pktinfo);
        assert!(parse_control(&pktinfo[..n]).not_unicast);
        let n = write_source_pktinfo("2001:db8::1".parse().unwrap(), 3, &mut pktinfo);
        assert!(!parse_control(&pktinfo[..n]).not_unicast);
    }

    #[test]
    fn timestamps_at_the_limits_do_not_overflow() {
        // Found by the control_messages fuzz target with debug assertions.
        for (secs, nanos) in [
            (i64::MAX / 1_000_000_000, 999_999_999),
            (i64::MAX, 1),
            (i64::MIN, -1),
            (-1, i64::MIN),
        ] {
            let meta = parse_control(&timestamping(secs, nanos));
            assert_eq!(meta.timestamp_ns, timespec_ns(secs, nanos));
        }
        assert_eq!(
            parse_control(&timestamping(1_700_000_000, 5)).timestamp_ns,
            Some(1_700_000_000_000_000_005)
        );
    }

    #[test]
    fn huge_length_after_a_valid_message_is_not_an_overflow() {
        // Found by the control_messages fuzz target: a second header whose
        // length wraps `at + len` around.
        let mut c = timestamping(1, 2);
        let mut second = vec![0u8; 32];
        second[..8].copy_from_slice(&(usize::MAX - 8).to_ne_bytes());
        c.extend_from_slice(&second);
        assert_eq!(parse_control(&c).timestamp_ns, Some(1_000_000_002));
    }

    /// An error-queue message as the kernel writes it for a transmit
    /// timestamp: SCM_TIMESTAMPING (three timespecs), then the extended error.
    fn tx_stamp_control(
        software: i64,
        hardware: i64,
        id: u32,
        origin: u8,
        info: u32,
        v6: bool,
    ) -> Vec<u8> {
        let mut out = vec![0u8; 64 + 32];
        write_cmsg_header(&mut out, 48, libc::SOL_SOCKET, libc::SCM_TIMESTAMPING);
        out[16..24].copy_from_slice(&(software / 1_000_000_000).to_ne_bytes());
        out[24..32].copy_from_slice(&(software % 1_000_000_000).to_ne_bytes());
        out[48..56].copy_from_slice(&(hardware / 1_000_000_000).to_ne_bytes());
        out[56..64].copy_from_slice(&(hardware % 1_000_000_000).to_ne_bytes());
        let (level, kind) = if v6 {
            (libc::SOL_IPV6, libc::IPV6_RECVERR)
        } else {
            (libc::SOL_IP, libc::IP_RECVERR)
        };
        write_cmsg_header(&mut out[64..], 16, level, kind);
        out[80..84].copy_from_slice(&libc::ENOMSG.to_ne_bytes());
        out[84] = origin;
        out[88..92].copy_from_slice(&info.to_ne_bytes());
        out[92..96].copy_from_slice(&id.to_ne_bytes());
        out
    }

    #[test]
    fn parses_a_transmit_timestamp_and_its_id() {
        for v6 in [false, true] {
            let c = tx_stamp_control(1_700_000_000_000_000_123, 0, 77, 4, 0, v6);
            assert_eq!(
                parse_tx_stamp(&c),
                Some(TxStampMeta {
                    id: 77,
                    software_ns: Some(1_700_000_000_000_000_123),
                    hardware_ns: None
                })
            );
        }
        let hw = tx_stamp_control(0, 5_000_000_123, 9, 4, 0, false);
        let meta = parse_tx_stamp(&hw).unwrap();
        assert_eq!(
            (meta.software_ns, meta.hardware_ns),
            (None, Some(5_000_000_123))
        );
    }

    #[test]
    fn other_error_queue_messages_are_not_stamps() {
        // A scheduler stamp (SCM_TSTAMP_SCHED), an ICMP error, no stamp at all.
        assert_eq!(
            parse_tx_stamp(&tx_stamp_control(5, 0, 1, 4, 1, false)),
            None
        );
        assert_eq!(
            parse_tx_stamp(&tx_stamp_control(5, 0, 1, 2, 0, false)),
            None
        );
        assert_eq!(
            parse_tx_stamp(&tx_stamp_control(0, 0, 1, 4, 0, false)),
            None
        );
        assert_eq!(parse_tx_stamp(&[]), None);
        assert_eq!(parse_tx_stamp(&[0xff; 96]), None);
        let c = tx_stamp_control(5, 0, 1, 4, 0, false);
        for n in 0..c.len() {
            let _ = parse_tx_stamp(&c[..n]);
        }
    }

    #[test]
    fn packet_info_and_a_timestamp_id_fit_the_send_space() {
        let mut out = [0u8; TX_CONTROL_SPACE];
        let n = write_source_pktinfo("2001:db8::1".parse().unwrap(), 3, &mut out);
        let m = write_ts_opt_id(0xdead_beef, &mut out[n..]);
        assert_eq!(n + m, TX_CONTROL_SPACE);
        let mut ids = Vec::new();
        for_each_message(&out, |level, kind, data| {
            if (level, kind) == (libc::SOL_SOCKET, SCM_TS_OPT_ID) {
                ids.push(u32::from_ne_bytes([data[0], data[1], data[2], data[3]]));
            }
        });
        assert_eq!(ids, [0xdead_beef]);
    }

    #[test]
    fn malformed_control_is_ignored_not_a_panic() {
        assert_eq!(parse_control(&[]), RxMeta::default());
        assert_eq!(parse_control(&[0xff; 40]), RxMeta::default());
        let mut c = timestamping(5, 5);
        c[0..8].copy_from_slice(&1000usize.to_ne_bytes()); // claims more than there is
        assert_eq!(parse_control(&c), RxMeta::default());
        for n in 0..70 {
            let _ = parse_control(&timestamping(1, 2)[..n.min(64)]);
        }
    }
}
