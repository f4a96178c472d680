//! The AF_XDP path's frame code on arbitrary frames: parsing never panics,
//! and a frame that parses becomes a reply that is no longer than it, parses
//! again with addresses and ports swapped, and verifies (IPv4 header and UDP
//! checksums), also after the transmit timestamp is rewritten and the UDP
//! checksum updated incrementally.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tachyon::server::io::xdp::frame::{fold, parse, sum16, update_udp_checksum, write_reply};

fuzz_target!(|input: (u16, [u8; 8], &[u8])| {
    let (reply_len, stamp, bytes) = input;
    let mut frame = bytes.to_vec();
    fix_ipv4_checksum(&mut frame);
    let Ok(request) = parse(&frame) else {
        return;
    };
    assert!(request.payload.end <= frame.len());
    let len = write_reply(&mut frame, &request, reply_len as usize);
    assert!(len <= frame.len());
    let reply_payload = len - request.payload.start;
    if reply_payload >= 48 {
        let at = request.payload.start;
        let old: [u8; 8] = frame[at + 40..at + 48].try_into().unwrap();
        frame[at + 40..at + 48].copy_from_slice(&stamp);
        update_udp_checksum(&mut frame, at, 40, &old);
    }
    let reply = parse(&frame[..len]).expect("a reply parses");
    assert_eq!(reply.source, request.destination);
    assert_eq!(reply.destination, request.source);
    assert_eq!(reply.source_port, request.destination_port);
    assert_eq!(reply.destination_port, request.source_port);
    let udp = &frame[reply.payload.start - 8..reply.payload.end];
    let mut pseudo = 17 + udp.len() as u32;
    match (reply.source, reply.destination) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            pseudo = sum16(&d.octets(), sum16(&s.octets(), pseudo));
        }
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
            pseudo = sum16(&d.octets(), sum16(&s.octets(), pseudo));
        }
        _ => unreachable!("one family"),
    }
    assert_eq!(fold(sum16(udp, pseudo)), 0xffff, "UDP checksum");
});

/// Writes a valid IPv4 header checksum where the frame has an IPv4 header
/// (after an optional VLAN tag), so that the fuzzer gets past it.
fn fix_ipv4_checksum(frame: &mut [u8]) {
    let mut ip = 14;
    if frame.len() >= 18 && matches!(&frame[12..14], [0x81, 0x00] | [0x88, 0xa8]) {
        ip = 18;
    }
    if frame.len() < ip + 20 || frame[ip - 2..ip] != [0x08, 0x00] {
        return;
    }
    frame[ip + 10..ip + 12].fill(0);
    let checksum = !fold(sum16(&frame[ip..ip + 20], 0));
    frame[ip + 10..ip + 12].copy_from_slice(&checksum.to_be_bytes());
}
