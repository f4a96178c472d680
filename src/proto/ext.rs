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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrailerError {
    /// An extension field header says it is shorter than 16 bytes, not a multiple
    /// of 4, or longer than what is left of the datagram.
    BadExtensionLength,
    /// Bytes left over that are neither an extension field nor a MAC.
    TrailingGarbage,
    /// Extension fields in a request older than NTPv4.
    ExtensionBeforeV4,
}

/// Minimum extension field length, header included (RFC 7822 §3).
pub const MIN_EXTENSION_LEN: usize = 16;

fn mac_kind(block: &[u8]) -> Option<MacKind> {
    match block.len() {
        4 if block == [0, 0, 0, 0] => Some(MacKind::CryptoNak),
        20 | 24 => Some(MacKind::Keyed {
            key_id: u32::from_be_bytes([block[0], block[1], block[2], block[3]]),
        }),
        _ => None,
    }
}

/// Checks the bytes after the 48-byte header.
///
/// A remainder of exactly 4 (crypto-NAK), 20 or 24 bytes is a MAC (RFC 7822 §7.5:
/// the MAC is recognised by the length left over). Otherwise, for NTPv4, it is a
/// sequence of extension fields, optionally followed by a MAC.
pub fn walk_trailer(version: u8, trailer: &[u8]) -> Result<Trailer, TrailerError> {
    let mut result = Trailer::default();
    let mut rest = trailer;
    loop {
        if rest.is_empty() {
            return Ok(result);
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

    #[test]
    fn macs_by_length() {
        let mut md5 = vec![0u8; 20];
        md5[3] = 7;
        assert_eq!(
            walk_trailer(3, &md5).unwrap().mac,
            Some(MacKind::Keyed { key_id: 7 })
        );
        assert!(walk_trailer(4, &[1u8; 24]).unwrap().mac.is_some());
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
    fn extension_fields_then_mac() {
        let mut t = ef(0x0104, 36);
        t.extend(ef(0x0204, 104));
        assert_eq!(walk_trailer(4, &t).unwrap().extension_fields, 2);
        t.extend([0u8; 20]);
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
