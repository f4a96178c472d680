//! The 48-byte NTP header (RFC 5905 §7.3).

use super::time::{NtpShort, NtpTimestamp};

/// Length of the fixed NTP header; anything after it is extension fields or a MAC.
pub const HEADER_LEN: usize = 48;

/// Byte offset of the transmit timestamp, which a server fills last.
pub const TRANSMIT_OFFSET: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeapIndicator {
    NoWarning = 0,
    InsertSecond = 1,
    DeleteSecond = 2,
    /// Clock unsynchronized.
    Unknown = 3,
}

impl LeapIndicator {
    pub fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => LeapIndicator::NoWarning,
            1 => LeapIndicator::InsertSecond,
            2 => LeapIndicator::DeleteSecond,
            _ => LeapIndicator::Unknown,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Reserved = 0,
    SymmetricActive = 1,
    SymmetricPassive = 2,
    Client = 3,
    Server = 4,
    Broadcast = 5,
    Control = 6,
    Private = 7,
}

impl Mode {
    pub fn from_bits(bits: u8) -> Self {
        match bits & 7 {
            0 => Mode::Reserved,
            1 => Mode::SymmetricActive,
            2 => Mode::SymmetricPassive,
            3 => Mode::Client,
            4 => Mode::Server,
            5 => Mode::Broadcast,
            6 => Mode::Control,
            _ => Mode::Private,
        }
    }
}

/// The fixed NTP header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub leap: LeapIndicator,
    pub version: u8,
    pub mode: Mode,
    pub stratum: u8,
    pub poll: i8,
    pub precision: i8,
    pub root_delay: NtpShort,
    pub root_dispersion: NtpShort,
    pub reference_id: [u8; 4],
    pub reference_ts: NtpTimestamp,
    pub origin_ts: NtpTimestamp,
    pub receive_ts: NtpTimestamp,
    pub transmit_ts: NtpTimestamp,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            leap: LeapIndicator::NoWarning,
            version: 4,
            mode: Mode::Client,
            stratum: 0,
            poll: 0,
            precision: 0,
            root_delay: NtpShort(0),
            root_dispersion: NtpShort(0),
            reference_id: [0; 4],
            reference_ts: NtpTimestamp::ZERO,
            origin_ts: NtpTimestamp::ZERO,
            receive_ts: NtpTimestamp::ZERO,
            transmit_ts: NtpTimestamp::ZERO,
        }
    }
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

impl Header {
    /// Decodes the first 48 bytes; `None` when the datagram is shorter than a header.
    pub fn parse(bytes: &[u8]) -> Option<Header> {
        if bytes.len() < HEADER_LEN {
            return None;
        }
        let b0 = bytes[0];
        Some(Header {
            leap: LeapIndicator::from_bits(b0 >> 6),
            version: (b0 >> 3) & 7,
            mode: Mode::from_bits(b0),
            stratum: bytes[1],
            poll: bytes[2] as i8,
            precision: bytes[3] as i8,
            root_delay: NtpShort::from_be_bytes(array(bytes, 4)),
            root_dispersion: NtpShort::from_be_bytes(array(bytes, 8)),
            reference_id: array(bytes, 12),
            reference_ts: NtpTimestamp::from_be_bytes(array(bytes, 16)),
            origin_ts: NtpTimestamp::from_be_bytes(array(bytes, 24)),
            receive_ts: NtpTimestamp::from_be_bytes(array(bytes, 32)),
            transmit_ts: NtpTimestamp::from_be_bytes(array(bytes, 40)),
        })
    }

    /// Encodes into the first 48 bytes of `out`, which must be at least that long.
    pub fn write(&self, out: &mut [u8]) {
        let out = &mut out[..HEADER_LEN];
        out[0] = ((self.leap as u8) << 6) | ((self.version & 7) << 3) | (self.mode as u8);
        out[1] = self.stratum;
        out[2] = self.poll as u8;
        out[3] = self.precision as u8;
        out[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        out[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        out[12..16].copy_from_slice(&self.reference_id);
        out[16..24].copy_from_slice(&self.reference_ts.to_be_bytes());
        out[24..32].copy_from_slice(&self.origin_ts.to_be_bytes());
        out[32..40].copy_from_slice(&self.receive_ts.to_be_bytes());
        out[40..48].copy_from_slice(&self.transmit_ts.to_be_bytes());
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        self.write(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn field_layout() {
        let h = Header {
            leap: LeapIndicator::InsertSecond,
            version: 3,
            mode: Mode::Server,
            stratum: 2,
            poll: -6,
            precision: -20,
            root_delay: NtpShort(0x0102_0304),
            root_dispersion: NtpShort(0x0506_0708),
            reference_id: *b"GPS\0",
            reference_ts: NtpTimestamp(0x1111_1111_2222_2222),
            origin_ts: NtpTimestamp(0x3333_3333_4444_4444),
            receive_ts: NtpTimestamp(0x5555_5555_6666_6666),
            transmit_ts: NtpTimestamp(0x7777_7777_8888_8888),
        };
        let b = h.to_bytes();
        assert_eq!(b[0], 0b01_011_100);
        assert_eq!(b[1], 2);
        assert_eq!(b[2], 0xfa);
        assert_eq!(b[3], 0xec);
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert_eq!(&b[12..16], b"GPS\0");
        assert_eq!(
            &b[40..48],
            &[0x77, 0x77, 0x77, 0x77, 0x88, 0x88, 0x88, 0x88]
        );
        assert_eq!(Header::parse(&b), Some(h));
    }

    #[test]
    fn short_input_is_rejected() {
        assert_eq!(Header::parse(&[0u8; 47]), None);
        assert!(Header::parse(&[0u8; 48]).is_some());
    }

    proptest! {
        // parse -> serialize reproduces the 48 header bytes exactly.
        #[test]
        fn parse_serialize_round_trip(bytes in proptest::collection::vec(any::<u8>(), 48..200)) {
            let h = Header::parse(&bytes).unwrap();
            prop_assert_eq!(&h.to_bytes()[..], &bytes[..48]);
        }
    }
}
