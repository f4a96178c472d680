//! The reference identifier a stratum 2+ server publishes for its system peer
//! (RFC 5905 §7.3): the peer's IPv4 address, or for IPv6 the first four bytes
//! of the MD5 digest of the address — what ntpd, NTPsec and chrony send, so
//! loop detection by other servers works against ours. MD5 is implemented
//! here (RFC 1321) because no hash crate is a dependency; it serves only this
//! identifier, never security.

use std::net::IpAddr;

/// The reference ID for a system peer at `addr`.
pub fn reference_id(addr: IpAddr) -> [u8; 4] {
    match addr {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let digest = md5(&v6.octets());
            [digest[0], digest[1], digest[2], digest[3]]
        }
    }
}

/// Renders a reference ID the way ntpq does: dotted quad, or ASCII for
/// stratum 0/1 codes such as GPS, LOCL, RATE.
pub fn refid_text(id: [u8; 4], stratum: u8) -> String {
    if stratum <= 1 && id.iter().all(|b| *b == 0 || b.is_ascii_graphic()) {
        let s: String = id
            .iter()
            .take_while(|b| **b != 0)
            .map(|b| *b as char)
            .collect();
        return format!(".{s}.");
    }
    format!("{}.{}.{}.{}", id[0], id[1], id[2], id[3])
}

/// Per-round left-rotation amounts.
const SHIFTS: [[u32; 4]; 4] = [
    [7, 12, 17, 22],
    [5, 9, 14, 20],
    [4, 11, 16, 23],
    [6, 10, 15, 21],
];

/// The 64 additive constants: floor(|sin(i + 1)| × 2^32). `f64::sin` is exact
/// enough for all 64 (checked by the RFC 1321 test vectors below).
fn sine_table() -> [u32; 64] {
    std::array::from_fn(|i| (((i + 1) as f64).sin().abs() * 4_294_967_296.0) as u32)
}

/// The MD5 digest of `data` (RFC 1321).
pub fn md5(data: &[u8]) -> [u8; 16] {
    let k = sine_table();
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    // Message, a 1 bit, zeros to 56 mod 64, then the bit length little-endian.
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());

    for block in message.chunks_exact(64) {
        let words: [u32; 16] = std::array::from_fn(|i| {
            u32::from_le_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ])
        });
        let [mut a, mut b, mut c, mut d] = state;
        for (i, &constant) in k.iter().enumerate() {
            let round = i / 16;
            let (mix, index) = match round {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let sum = a
                .wrapping_add(mix)
                .wrapping_add(constant)
                .wrapping_add(words[index]);
            let rotated = b.wrapping_add(sum.rotate_left(SHIFTS[round][i % 4]));
            a = d;
            d = c;
            c = b;
            b = rotated;
        }
        state[0] = state[0].wrapping_add(a);
        state[1] = state[1].wrapping_add(b);
        state[2] = state[2].wrapping_add(c);
        state[3] = state[3].wrapping_add(d);
    }

    let mut out = [0u8; 16];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refids_render_like_ntpq() {
        assert_eq!(refid_text([192, 0, 2, 1], 2), "192.0.2.1");
        assert_eq!(refid_text(*b"GPS\0", 1), ".GPS.");
        assert_eq!(refid_text(*b"RATE", 0), ".RATE.");
        assert_eq!(refid_text([0, 0, 0, 0], 0), "..");
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn rfc1321_test_suite() {
        let cases: [(&str, &str); 7] = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, digest) in cases {
            assert_eq!(hex(&md5(input.as_bytes())), digest, "md5({input:?})");
        }
    }

    #[test]
    fn refid_forms() {
        assert_eq!(reference_id("192.0.2.7".parse().unwrap()), [192, 0, 2, 7]);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let id = reference_id(v6);
        let IpAddr::V6(a) = v6 else { unreachable!() };
        assert_eq!(&id[..], &md5(&a.octets())[..4]);
        assert_ne!(id, reference_id("2001:db8::2".parse().unwrap()));
    }
}
