//! Ethernet frames in and out of the XDP path: parsing a request frame
//! (Ethernet, at most one VLAN tag, IPv4 without options or IPv6 without
//! extension headers, UDP) and turning it into its reply in place (MAC
//! addresses, IP addresses and ports swapped, lengths, the IPv4 header
//! checksum and the UDP checksum).
//!
//! Pure functions over byte slices, no unsafe code: the XDP program already
//! filtered what reaches here, but nothing is trusted, and any frame gives a
//! `Rejected` reason rather than a panic.
//!
//! The request's UDP checksum is not verified: on veth, and with checksum
//! offload on the sending host's own stack, a frame seen at XDP can carry a
//! partial checksum (`CHECKSUM_PARTIAL`: the pseudo-header sum only) that
//! the NIC or the receiving stack was trusted to complete. The kernel's own
//! UDP path makes the same exception for such frames. The IPv4 header
//! checksum, always complete, is verified.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

const ETH_HEADER: usize = 14;
const VLAN_TAG: usize = 4;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const UDP_HEADER: usize = 8;
const IPPROTO_UDP: u8 = 17;
/// IPv4 flags and fragment offset: More Fragments, and the offset bits.
const IPV4_MF_OR_OFFSET: u16 = 0x3fff;
const IPV4_DF: u16 = 0x4000;
/// The hop limit / TTL of replies (Linux's default).
pub const REPLY_HOP_LIMIT: u8 = 64;

/// Why a frame is not a request this path answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Shorter than its headers, or its lengths point past its end.
    Truncated,
    /// Neither IPv4 nor IPv6 (after at most one VLAN tag).
    NotIp,
    /// IPv4 with options, or a header that is not IPv4's/IPv6's.
    BadIpHeader,
    /// The IPv4 header checksum does not verify.
    BadChecksum,
    /// A fragment, or IPv6 with extension headers before UDP.
    Fragment,
    /// Not UDP.
    NotUdp,
    /// The UDP length disagrees with the IP length.
    BadUdpLength,
}

/// A request frame, as [`parse`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpFrame {
    /// Where the IP header starts (after Ethernet and the VLAN tag).
    pub ip_offset: usize,
    pub source: IpAddr,
    pub destination: IpAddr,
    pub source_port: u16,
    pub destination_port: u16,
    /// The UDP payload, within the frame.
    pub payload: Range<usize>,
}

impl UdpFrame {
    fn ip_header_len(&self) -> usize {
        match self.source {
            IpAddr::V4(_) => IPV4_HEADER,
            IpAddr::V6(_) => IPV6_HEADER,
        }
    }

    fn udp_offset(&self) -> usize {
        self.ip_offset + self.ip_header_len()
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Parses a frame as Ethernet, an optional VLAN tag (802.1Q or 802.1ad),
/// IPv4 (no options, not a fragment, header checksum valid) or IPv6 (UDP
/// right after the fixed header), and UDP. Ethernet padding after the IP
/// datagram is ignored.
pub fn parse(frame: &[u8]) -> Result<UdpFrame, Rejected> {
    if frame.len() < ETH_HEADER {
        return Err(Rejected::Truncated);
    }
    let mut ip_offset = ETH_HEADER;
    let mut ethertype = be16(frame, 12);
    if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        if frame.len() < ETH_HEADER + VLAN_TAG {
            return Err(Rejected::Truncated);
        }
        ethertype = be16(frame, 16);
        ip_offset += VLAN_TAG;
    }
    let ip = &frame[ip_offset..];
    let (source, destination, udp_offset, ip_payload_len) = match ethertype {
        ETHERTYPE_IPV4 => parse_ipv4(ip)?,
        ETHERTYPE_IPV6 => parse_ipv6(ip)?,
        _ => return Err(Rejected::NotIp),
    };
    let udp = &ip[udp_offset..];
    let udp_len = be16(udp, 4) as usize;
    if udp_len < UDP_HEADER || udp_len > ip_payload_len {
        return Err(Rejected::BadUdpLength);
    }
    let payload_start = ip_offset + udp_offset + UDP_HEADER;
    Ok(UdpFrame {
        ip_offset,
        source,
        destination,
        source_port: be16(udp, 0),
        destination_port: be16(udp, 2),
        payload: payload_start..payload_start + udp_len - UDP_HEADER,
    })
}

/// Source, destination, where UDP starts in `ip`, and the length the IP
/// header gives its payload (checked to fit in `ip` and hold a UDP header).
type IpParts = (IpAddr, IpAddr, usize, usize);

fn parse_ipv4(ip: &[u8]) -> Result<IpParts, Rejected> {
    if ip.len() < IPV4_HEADER {
        return Err(Rejected::Truncated);
    }
    if ip[0] != 0x45 {
        return Err(Rejected::BadIpHeader);
    }
    let total = be16(ip, 2) as usize;
    if total < IPV4_HEADER + UDP_HEADER || total > ip.len() {
        return Err(Rejected::Truncated);
    }
    if be16(ip, 6) & IPV4_MF_OR_OFFSET != 0 {
        return Err(Rejected::Fragment);
    }
    if ip[9] != IPPROTO_UDP {
        return Err(Rejected::NotUdp);
    }
    if fold(sum16(&ip[..IPV4_HEADER], 0)) != 0xffff {
        return Err(Rejected::BadChecksum);
    }
    let source = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let destination = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    Ok((
        source.into(),
        destination.into(),
        IPV4_HEADER,
        total - IPV4_HEADER,
    ))
}

fn parse_ipv6(ip: &[u8]) -> Result<IpParts, Rejected> {
    if ip.len() < IPV6_HEADER {
        return Err(Rejected::Truncated);
    }
    if ip[0] >> 4 != 6 {
        return Err(Rejected::BadIpHeader);
    }
    let payload = be16(ip, 4) as usize;
    if payload < UDP_HEADER || IPV6_HEADER + payload > ip.len() {
        return Err(Rejected::Truncated);
    }
    match ip[6] {
        IPPROTO_UDP => {}
        // Hop-by-hop, routing, fragment, destination options: the kernel's.
        0 | 43 | 44 | 60 => return Err(Rejected::Fragment),
        _ => return Err(Rejected::NotUdp),
    }
    let source: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
    let destination: [u8; 16] = ip[24..40].try_into().expect("16 bytes");
    Ok((
        Ipv6Addr::from(source).into(),
        Ipv6Addr::from(destination).into(),
        IPV6_HEADER,
        payload,
    ))
}

/// Whether the request was sent to this host alone: not to an Ethernet
/// group address (broadcast or multicast) nor to an IP multicast address or
/// the IPv4 limited broadcast. Others are not answered, as on the socket
/// path.
pub fn is_unicast(frame: &[u8], request: &UdpFrame) -> bool {
    let group_mac = frame.first().is_none_or(|b| b & 1 != 0);
    let group_ip = match request.destination {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast(),
    };
    !group_mac && !group_ip
}

/// Turns the request `frame` (as [`parse`] found it) into its reply, whose
/// UDP payload of `reply_len` bytes is already at `request.payload.start`:
/// swaps the MAC addresses, the IP addresses and the ports, writes the
/// lengths, the hop limit, a zero DSCP/ECN (traffic class and flow label on
/// IPv6), the IPv4 header checksum and the UDP checksum.
/// Returns the reply frame's length, which is never more than the request's:
/// `reply_len` is cut to the request's payload (0, nothing to send, for a
/// `request` whose addresses are of two families, which `parse` never gives).
pub fn write_reply(frame: &mut [u8], request: &UdpFrame, reply_len: usize) -> usize {
    let reply_len = reply_len.min(request.payload.len());
    let (macs, _) = frame.split_at_mut(12);
    let (destination_mac, source_mac) = macs.split_at_mut(6);
    destination_mac.swap_with_slice(source_mac);
    let ip = request.ip_offset;
    let udp = request.udp_offset();
    let udp_len = UDP_HEADER + reply_len;
    match (request.source, request.destination) {
        (IpAddr::V4(client), IpAddr::V4(server)) => {
            // DSCP and ECN of our own, as a socket's: a congestion mark on
            // the request is not the reply's.
            frame[ip + 1] = 0;
            put16(frame, ip + 2, (IPV4_HEADER + udp_len) as u16);
            put16(frame, ip + 4, 0); // identification: unused with DF
            put16(frame, ip + 6, IPV4_DF);
            frame[ip + 8] = REPLY_HOP_LIMIT;
            frame[ip + 12..ip + 16].copy_from_slice(&server.octets());
            frame[ip + 16..ip + 20].copy_from_slice(&client.octets());
            put16(frame, ip + 10, 0);
            let checksum = !fold(sum16(&frame[ip..ip + IPV4_HEADER], 0));
            put16(frame, ip + 10, checksum);
        }
        (IpAddr::V6(client), IpAddr::V6(server)) => {
            // Version 6, traffic class and flow label 0, as a socket's.
            frame[ip..ip + 4].copy_from_slice(&[0x60, 0, 0, 0]);
            put16(frame, ip + 4, udp_len as u16);
            frame[ip + 7] = REPLY_HOP_LIMIT;
            frame[ip + 8..ip + 24].copy_from_slice(&server.octets());
            frame[ip + 24..ip + 40].copy_from_slice(&client.octets());
        }
        // Never from `parse`: both addresses come from one header.
        _ => return 0,
    }
    put16(frame, udp, request.destination_port);
    put16(frame, udp + 2, request.source_port);
    put16(frame, udp + 4, udp_len as u16);
    put16(frame, udp + 6, 0);
    let checksum = udp_checksum(
        request.destination,
        request.source,
        &frame[udp..udp + udp_len],
    );
    put16(frame, udp + 6, checksum);
    udp + udp_len
}

/// Updates the UDP checksum of a reply built by [`write_reply`] after the
/// bytes at `at` (an even offset into its payload, which starts at
/// `payload_start` in `frame`) changed from `old` to what they are now: the
/// incremental update of RFC 1624 (HC' = ~(~HC + ~m + m')), so stamping the
/// transmit time costs a few additions instead of a second pass over the
/// datagram. Out-of-range arguments leave the frame as it is.
pub fn update_udp_checksum(frame: &mut [u8], payload_start: usize, at: usize, old: &[u8]) {
    let Some(checksum_at) = payload_start.checked_sub(2) else {
        return;
    };
    let start = payload_start + at;
    let Some(new) = frame.get(start..start + old.len()) else {
        return;
    };
    if at % 2 != 0 || old.len() % 2 != 0 {
        return;
    }
    let mut sum = !be16(frame, checksum_at) as u32;
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        sum += !u16::from_be_bytes([o[0], o[1]]) as u32;
        sum += u16::from_be_bytes([n[0], n[1]]) as u32;
    }
    let checksum = match !fold(sum) {
        0 => 0xffff,
        c => c,
    };
    put16(frame, checksum_at, checksum);
}

/// The UDP checksum of `datagram` (header with a zero checksum field, and
/// payload) from `source` to `destination`; 0 is sent as 0xffff (RFC 768;
/// on IPv6 a zero checksum is invalid, RFC 8200).
pub fn udp_checksum(source: IpAddr, destination: IpAddr, datagram: &[u8]) -> u16 {
    let sum = pseudo_header_sum(source, destination, datagram.len());
    match !fold(sum16(datagram, sum)) {
        0 => 0xffff,
        c => c,
    }
}

fn pseudo_header_sum(source: IpAddr, destination: IpAddr, udp_len: usize) -> u32 {
    let sum = address_sum(destination, address_sum(source, 0));
    sum + IPPROTO_UDP as u32 + udp_len as u32
}

fn address_sum(ip: IpAddr, sum: u32) -> u32 {
    match ip {
        IpAddr::V4(a) => sum16(&a.octets(), sum),
        IpAddr::V6(a) => sum16(&a.octets(), sum),
    }
}

/// Adds `bytes` as big-endian 16-bit words (a last odd byte padded with
/// zero) to `sum`, without folding. Frames are far below the 128 KiB where
/// a u32 could overflow.
pub fn sum16(bytes: &[u8], mut sum: u32) -> u32 {
    let mut words = bytes.chunks_exact(2);
    for w in &mut words {
        sum += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    if let [last] = words.remainder() {
        sum += (*last as u32) << 8;
    }
    sum
}

/// Folds a 32-bit one's-complement sum to 16 bits.
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A request frame: MACs, optional VLAN tag, IP, UDP with payload.
    fn request_frame(
        source: IpAddr,
        destination: IpAddr,
        ports: (u16, u16),
        vlan: bool,
        payload: &[u8],
        padding: usize,
    ) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
        if vlan {
            f.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            f.extend_from_slice(&[0x00, 0x07]);
        }
        let udp_len = UDP_HEADER + payload.len();
        let mut udp = Vec::new();
        udp.extend_from_slice(&ports.0.to_be_bytes());
        udp.extend_from_slice(&ports.1.to_be_bytes());
        udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(payload);
        let c = udp_checksum(source, destination, &udp);
        udp[6..8].copy_from_slice(&c.to_be_bytes());
        match (source, destination) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
                let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 57, IPPROTO_UDP, 0, 0];
                ip[2..4].copy_from_slice(&((IPV4_HEADER + udp_len) as u16).to_be_bytes());
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                let c = !fold(sum16(&ip, 0));
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&(udp_len as u16).to_be_bytes());
                f.extend_from_slice(&[IPPROTO_UDP, 57]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            _ => panic!("one family"),
        }
        f.extend_from_slice(&udp);
        f.extend(std::iter::repeat_n(0u8, padding));
        f
    }

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Checks a reply frame the way a receiving stack would.
    fn verify_reply(reply: &[u8], request: &UdpFrame) -> UdpFrame {
        let parsed = parse(reply).expect("the reply parses");
        assert_eq!(parsed.source, request.destination);
        assert_eq!(parsed.destination, request.source);
        assert_eq!(parsed.source_port, request.destination_port);
        assert_eq!(parsed.destination_port, request.source_port);
        let udp = parsed.payload.start - UDP_HEADER..parsed.payload.end;
        let sum = pseudo_header_sum(parsed.source, parsed.destination, udp.len());
        assert_eq!(
            fold(sum16(&reply[udp.clone()], sum)),
            0xffff,
            "UDP checksum"
        );
        assert_ne!(be16(reply, udp.start + 6), 0, "a zero UDP checksum");
        if parsed.source.is_ipv4() {
            let ip = parsed.ip_offset;
            assert_eq!(fold(sum16(&reply[ip..ip + IPV4_HEADER], 0)), 0xffff);
        }
        parsed
    }

    #[test]
    fn an_ipv4_request_becomes_its_reply() {
        let payload = [0x23u8; 48];
        let mut f = request_frame(
            v4("10.0.0.2"),
            v4("10.0.0.1"),
            (40000, 123),
            false,
            &payload,
            0,
        );
        let original = f.clone();
        let request = parse(&f).unwrap();
        assert_eq!(request.payload, 42..90);
        assert_eq!(request.source_port, 40000);
        let len = write_reply(&mut f, &request, 48);
        assert_eq!(len, original.len());
        assert_eq!(&f[0..6], &original[6..12]);
        assert_eq!(&f[6..12], &original[0..6]);
        let reply = verify_reply(&f[..len], &request);
        assert_eq!(&f[reply.payload], &payload[..]);
        assert_eq!(f[14 + 8], REPLY_HOP_LIMIT);
    }

    #[test]
    fn an_ipv6_request_with_a_vlan_tag_becomes_its_reply() {
        let payload = [0x1bu8; 68];
        let mut f = request_frame(
            v4("2001:db8::2"),
            v4("2001:db8::1"),
            (123, 123),
            true,
            &payload,
            0,
        );
        let request = parse(&f).unwrap();
        assert_eq!(request.ip_offset, 18);
        let len = write_reply(&mut f, &request, 52);
        assert_eq!(len, 18 + 40 + 8 + 52);
        assert_eq!(&f[12..16], &[0x81, 0x00, 0x00, 0x07], "the tag stays");
        verify_reply(&f[..len], &request);
    }

    #[test]
    fn a_congestion_mark_is_not_echoed() {
        let mut f = request_frame(v4("10.0.0.2"), v4("10.0.0.1"), (1, 123), false, &[0; 48], 0);
        f[14 + 1] = 0xb8 | 0x03; // EF, CE
        f[14 + 10..14 + 12].fill(0);
        let c = !fold(sum16(&f[14..34], 0));
        f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
        let request = parse(&f).unwrap();
        let len = write_reply(&mut f, &request, 48);
        assert_eq!(f[14 + 1], 0);
        verify_reply(&f[..len], &request);
        let mut f = request_frame(
            v4("2001:db8::2"),
            v4("2001:db8::1"),
            (1, 123),
            false,
            &[0; 48],
            0,
        );
        f[14..18].copy_from_slice(&[0x6b, 0x8f, 0x12, 0x34]);
        let request = parse(&f).unwrap();
        write_reply(&mut f, &request, 48);
        assert_eq!(&f[14..18], &[0x60, 0, 0, 0]);
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let f = request_frame(v4("10.0.0.2"), v4("10.0.0.1"), (1, 123), false, &[7; 4], 20);
        assert_eq!(parse(&f).unwrap().payload.len(), 4);
    }

    #[test]
    fn what_the_kernel_keeps_is_rejected() {
        let good = request_frame(v4("10.0.0.2"), v4("10.0.0.1"), (1, 123), false, &[0; 48], 0);
        let mut fragment = good.clone();
        fragment[14 + 6] = 0x20; // MF
        assert_eq!(parse(&fragment), Err(Rejected::Fragment));
        let mut later_fragment = good.clone();
        later_fragment[14 + 7] = 0x08;
        assert_eq!(parse(&later_fragment), Err(Rejected::Fragment));
        let mut options = good.clone();
        options[14] = 0x46;
        assert_eq!(parse(&options), Err(Rejected::BadIpHeader));
        let mut tcp = good.clone();
        tcp[14 + 9] = 6;
        assert_eq!(parse(&tcp), Err(Rejected::NotUdp));
        let mut bad_sum = good.clone();
        bad_sum[14 + 8] ^= 1;
        assert_eq!(parse(&bad_sum), Err(Rejected::BadChecksum));
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse(&arp), Err(Rejected::NotIp));
        assert_eq!(parse(&good[..40]), Err(Rejected::Truncated));
        let mut long_udp = good.clone();
        long_udp[14 + 20 + 5] += 1;
        assert_eq!(parse(&long_udp), Err(Rejected::BadUdpLength));

        let v6 = request_frame(
            v4("2001:db8::2"),
            v4("2001:db8::1"),
            (1, 123),
            false,
            &[0; 48],
            0,
        );
        let mut v6_fragment = v6.clone();
        v6_fragment[14 + 6] = 44;
        assert_eq!(parse(&v6_fragment), Err(Rejected::Fragment));
        let mut v6_long = v6.clone();
        v6_long[14 + 5] += 1;
        assert_eq!(parse(&v6_long), Err(Rejected::Truncated));
    }

    #[test]
    fn broadcasts_and_multicasts_are_not_unicast() {
        let mut f = request_frame(v4("10.0.0.2"), v4("10.0.0.1"), (1, 123), false, &[0; 48], 0);
        let request = parse(&f).unwrap();
        assert!(is_unicast(&f, &request));
        f[0] = 0xff;
        assert!(!is_unicast(&f, &request));
        let f = request_frame(
            v4("10.0.0.2"),
            v4("224.0.1.1"),
            (1, 123),
            false,
            &[0; 48],
            0,
        );
        assert!(!is_unicast(&f, &parse(&f).unwrap()));
        let f = request_frame(v4("fe80::2"), v4("ff02::101"), (1, 123), false, &[0; 48], 0);
        assert!(!is_unicast(&f, &parse(&f).unwrap()));
    }

    #[test]
    fn checksum_edge_cases() {
        // RFC 1071's example words sum to 0xddf2 once folded.
        assert_eq!(
            fold(sum16(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0)),
            0xddf2
        );
        // An odd length pads the last byte with zero.
        assert_eq!(sum16(&[0x12], 0), 0x1200);
    }

    fn address(v6: bool, bytes: [u8; 16]) -> IpAddr {
        if v6 {
            Ipv6Addr::from(bytes).into()
        } else {
            Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into()
        }
    }

    proptest! {
        #[test]
        fn replies_are_never_longer_and_always_verify(
            v6 in any::<bool>(),
            vlan in any::<bool>(),
            s in any::<[u8; 16]>(),
            d in any::<[u8; 16]>(),
            ports in any::<(u16, u16)>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            reply_len in 0usize..400,
            padding in 0usize..32,
        ) {
            let (source, destination) = (address(v6, s), address(v6, d));
            let mut f = request_frame(source, destination, ports, vlan, &payload, padding);
            let original = f.clone();
            let request = parse(&f).unwrap();
            prop_assert_eq!(&f[request.payload.clone()], &payload[..]);
            let len = write_reply(&mut f, &request, reply_len);
            prop_assert!(len <= original.len() - padding);
            prop_assert_eq!(len, request.payload.start + reply_len.min(payload.len()));
            verify_reply(&f[..len], &request);
            prop_assert_eq!(&f[0..6], &original[6..12]);
            prop_assert_eq!(&f[6..12], &original[0..6]);
        }

        #[test]
        fn an_updated_checksum_equals_a_fresh_one(
            v6 in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 48..100),
            stamp in any::<[u8; 8]>(),
        ) {
            let (source, destination) = if v6 {
                (v4("2001:db8::2"), v4("2001:db8::1"))
            } else {
                (v4("10.0.0.2"), v4("10.0.0.1"))
            };
            let mut f = request_frame(source, destination, (4000, 123), false, &payload, 0);
            let request = parse(&f).unwrap();
            let len = write_reply(&mut f, &request, 48);
            let at = request.payload.start;
            let old: [u8; 8] = f[at + 40..at + 48].try_into().unwrap();
            f[at + 40..at + 48].copy_from_slice(&stamp);
            update_udp_checksum(&mut f, at, 40, &old);
            verify_reply(&f[..len], &request);
        }

        #[test]
        fn any_bytes_parse_or_are_rejected_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            ethertype in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x8100), any::<u16>()],
        ) {
            let mut f = bytes;
            if f.len() >= 14 {
                f[12..14].copy_from_slice(&ethertype.to_be_bytes());
            }
            if let Ok(request) = parse(&f) {
                prop_assert!(request.payload.end <= f.len());
                let original_len = f.len();
                let len = write_reply(&mut f, &request, usize::MAX);
                prop_assert!(len <= original_len);
            }
        }
    }
}
