//! Walking what follows the header: extension fields (RFC 7822) and a MAC.
//!
//! tachyon does not interpret extension fields or verify MACs, but it must tell a
//! well-formed request from garbage before answering it, so every length is checked.

/// What a well-formed trailer contained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trailer {
    pub extension_fields: usize,
    pub mac: Option<MacKind>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacKind {
    /// Key identifier 0 and no digest: the crypto-NAK of RFC 5905 §7.5.
    CryptoNak,
    /// Key identifier plus a 128-bit (MD5, AES-CMAC) or 160-bit (SHA-1) digest.
    Keyed { key_id: u32 },
}

/// The largest symmetric key identifier: ntpd and NTPsec number their keys
/// 1..=65535, and chrony's clients use the same small numbers in practice. A
/// 20- or 24-byte trailer whose first word is beyond it, or 0, is not a MAC.
pub const MAX_KEY_ID: u32 = 65_535;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrailerError {
    /// An extension field header says it is shorter than 16 bytes, not a multiple
    /// of 4, or longer than what is left of the datagram.
    BadExtensionLength,
    /// Bytes left over that are neither an extension field nor a MAC.
    TrailingGarbage,
    /// Extension fields in a request older than NTPv4.
    ExtensionBeforeV4,
    /// The last extension field, with no MAC after it, is shorter than 28
    /// bytes (RFC 7822 §7.5: shorter ones could be mistaken for a MAC).
    ShortLastExtension,
}

/// Minimum extension field length, header included (RFC 7822 §3).
pub const MIN_EXTENSION_LEN: usize = 16;
/// Minimum length of the last extension field when no MAC follows it (RFC 7822 §7.5).
pub const MIN_LAST_EXTENSION_LEN: usize = 28;

/// Recognises a MAC by the length left over (RFC 7822 §7.5): 4 bytes of zero
/// (crypto-NAK), or a key identifier in 1..=[`MAX_KEY_ID`] followed by a
/// 16- or 20-byte digest that is not all zero (an all-zero digest is
/// MS-SNTP's placeholder or padding, never a real MD5 or SHA-1 output).
fn mac_kind(block: &[u8]) -> Option<MacKind> {
    match block.len() {
        4 if block == [0, 0, 0, 0] => Some(MacKind::CryptoNak),
        20 | 24 => {
            let key_id = u32::from_be_bytes([block[0], block[1], block[2], block[3]]);
            let digest_present = block[4..].iter().any(|&b| b != 0);
            ((1..=MAX_KEY_ID).contains(&key_id) && digest_present)
                .then_some(MacKind::Keyed { key_id })
        }
        _ => None,
    }
}

/// Checks the bytes after the 48-byte header.
///
/// A remainder of exactly 4 (crypto-NAK), 20 or 24 bytes is a MAC when it
/// looks like one (RFC 7822 §7.5: the MAC is recognised by the length left
/// over). Otherwise, for NTPv4, it is a sequence of extension fields,
/// optionally followed by a MAC; without a MAC the last field is at least
/// 28 bytes long.
pub fn walk_trailer(version: u8, trailer: &[u8]) -> Result<Trailer, TrailerError> {
    let mut result = Trailer::default();
    let mut rest = trailer;
    let mut last_length = None;
    loop {
        if rest.is_empty() {
            return match last_length {
                Some(length) if length < MIN_LAST_EXTENSION_LEN => {
                    Err(TrailerError::ShortLastExtension)
                }
                _ => Ok(result),
            };
        }
        if let Some(mac) = mac_kind(rest) {
            result.mac = Some(mac);
            return Ok(result);
        }
        if version < 4 {
            return Err(TrailerError::ExtensionBeforeV4);
        }
        if rest.len() < MIN_EXTENSION_LEN {
            return Err(TrailerError::TrailingGarbage);
        }
        let length = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        if length < MIN_EXTENSION_LEN || length % 4 != 0 || length > rest.len() {
            return Err(TrailerError::BadExtensionLength);
        }
        result.extension_fields += 1;
        last_length = Some(length);
        rest = &rest[length..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ef(field_type: u16, length: usize) -> Vec<u8> {
        let mut v = vec![0u8; length.max(4)];
        v[0..2].copy_from_slice(&field_type.to_be_bytes());
        v[2..4].copy_from_slice(&(length as u16).to_be_bytes());
        v
    }

    #[test]
    fn empty_trailer() {
        assert_eq!(walk_trailer(4, &[]), Ok(Trailer::default()));
        assert_eq!(walk_trailer(1, &[]), Ok(Trailer::default()));
    }

    fn mac(key_id: u32, digest_len: usize) -> Vec<u8> {
        let mut m = key_id.to_be_bytes().to_vec();
        m.extend((0..digest_len).map(|i| 0x5a ^ i as u8));
        m
    }

    #[test]
    fn macs_by_length() {
        assert_eq!(
            walk_trailer(3, &mac(7, 16)).unwrap().mac,
            Some(MacKind::Keyed { key_id: 7 })
        );
        assert_eq!(
            walk_trailer(4, &mac(65_535, 20)).unwrap().mac,
            Some(MacKind::Keyed { key_id: 65_535 })
        );
        assert_eq!(
            walk_trailer(4, &[0u8; 4]).unwrap().mac,
            Some(MacKind::CryptoNak)
        );
        assert_eq!(
            walk_trailer(4, &[1u8; 4]),
            Err(TrailerError::TrailingGarbage)
        );
    }

    #[test]
    fn garbage_of_mac_length_is_not_a_mac() {
        // Key identifier 0 or beyond ntpd's range, or an all-zero digest.
        for trailer in [
            vec![0u8; 20],
            vec![0xff; 20],
            vec![0xab; 24],
            mac(1 << 16, 16),
            {
                let mut m = vec![0u8; 24];
                m[3] = 9;
                m
            },
        ] {
            assert!(
                walk_trailer(3, &trailer).is_err(),
                "v3 {:02x?}",
                &trailer[..4]
            );
            assert!(
                walk_trailer(4, &trailer).is_err(),
                "v4 {:02x?}",
                &trailer[..4]
            );
        }
    }

    #[test]
    fn the_last_extension_field_without_a_mac_is_at_least_28_bytes() {
        for length in [16usize, 20, 24] {
            assert_eq!(
                walk_trailer(4, &ef(0x0104, length)),
                Err(TrailerError::ShortLastExtension),
                "{length}"
            );
        }
        assert_eq!(
            walk_trailer(4, &ef(0x0104, 28)).unwrap().extension_fields,
            1
        );
        // A short field is fine when another field or a MAC follows it.
        let mut t = ef(0x0104, 16);
        t.extend(ef(0x0204, 32));
        assert_eq!(walk_trailer(4, &t).unwrap().extension_fields, 2);
        let mut t = ef(0x0104, 16);
        t.extend(mac(3, 16));
        let r = walk_trailer(4, &t).unwrap();
        assert_eq!(
            (r.extension_fields, r.mac),
            (1, Some(MacKind::Keyed { key_id: 3 }))
        );
    }

    #[test]
    fn extension_fields_then_mac() {
        let mut t = ef(0x0104, 36);
        t.extend(ef(0x0204, 104));
        assert_eq!(walk_trailer(4, &t).unwrap().extension_fields, 2);
        t.extend(mac(12, 16));
        let r = walk_trailer(4, &t).unwrap();
        assert_eq!(r.extension_fields, 2);
        assert!(r.mac.is_some());
    }

    #[test]
    fn malformed_extension_fields() {
        // Length below the minimum, not a multiple of four, beyond the datagram, zero.
        for (declared, actual) in [(12usize, 16usize), (18, 28), (64, 32), (0, 16)] {
            let mut t = ef(0x0104, actual);
            t[2..4].copy_from_slice(&(declared as u16).to_be_bytes());
            assert_eq!(
                walk_trailer(4, &t),
                Err(TrailerError::BadExtensionLength),
                "declared {declared}, actual {actual}"
            );
        }
        // Too short to be anything.
        assert_eq!(
            walk_trailer(4, &[0u8; 9]),
            Err(TrailerError::TrailingGarbage)
        );
    }

    #[test]
    fn extension_fields_need_v4() {
        assert_eq!(
            walk_trailer(3, &ef(0x0104, 32)),
            Err(TrailerError::ExtensionBeforeV4)
        );
    }
}
