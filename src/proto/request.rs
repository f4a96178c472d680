//! Telling a request the server answers from everything else that arrives.
//!
//! [`parse_client_request`] checks a datagram completely (header, version,
//! mode, extension fields, MAC) before anything is charged to its sender: the
//! rate limiter only ever sees requests that would be answered.

use super::ext::{walk_trailer, MacKind};
use super::packet::{Header, Mode, HEADER_LEN};
use super::time::NtpTimestamp;

/// Why a datagram got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than the 48-byte header.
    TooShort,
    /// Version 0 or 5..=7.
    BadVersion,
    /// Any mode but 3 (client).
    UnsupportedMode(u8),
    /// Malformed extension fields or trailing garbage.
    BadTrailer,
    /// Refused by a restrict rule.
    Denied,
    /// Over the rate limit.
    RateLimited,
    /// The caller's reply buffer cannot hold the reply (a caller bug, never the peer's).
    BufferTooSmall,
}

impl DropReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::BadVersion => "bad_version",
            DropReason::UnsupportedMode(_) => "unsupported_mode",
            DropReason::BadTrailer => "bad_extension",
            DropReason::Denied => "denied",
            DropReason::RateLimited => "rate_limited",
            DropReason::BufferTooSmall => "buffer_too_small",
        }
    }
}

/// A well-formed client request: what the reply is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    /// 1..=4, echoed in the reply.
    pub version: u8,
    /// The client's poll exponent, echoed (or raised) in the reply.
    pub poll: i8,
    /// The request's origin timestamp: zero, or what the client took from
    /// the server's previous reply (its receive timestamp when the client
    /// asks for the interleaved mode, RFC 9769).
    pub origin: NtpTimestamp,
    /// The request's receive timestamp: copied into an interleaved reply's
    /// origin.
    pub receive: NtpTimestamp,
    /// The request's transmit timestamp, copied byte for byte into a basic
    /// reply's origin (clients put random nonces there).
    pub transmit: NtpTimestamp,
    /// The request carried a MAC for a key we do not have: the reply ends
    /// with a crypto-NAK (RFC 5905 §7.5), so the client learns why there is
    /// no authenticated answer.
    pub crypto_nak: bool,
}

impl ClientRequest {
    /// Length of the reply: the header, plus 4 bytes of crypto-NAK. Never
    /// more than the request's length.
    pub fn reply_len(&self) -> usize {
        HEADER_LEN + if self.crypto_nak { 4 } else { 0 }
    }
}

/// Checks one datagram. `from_ntp_port`: it came from UDP port 123, which
/// tells an NTPv1 client (mode field reserved, sent from any other port) from
/// an NTPv1 peer (RFC 1059 ties the mode to the ports).
pub fn parse_client_request(
    datagram: &[u8],
    from_ntp_port: bool,
) -> Result<ClientRequest, DropReason> {
    let header = Header::parse(datagram).ok_or(DropReason::TooShort)?;
    if !(1..=4).contains(&header.version) {
        return Err(DropReason::BadVersion);
    }
    let ntpv1_client = header.version == 1 && header.mode == Mode::Reserved && !from_ntp_port;
    if header.mode != Mode::Client && !ntpv1_client {
        return Err(DropReason::UnsupportedMode(header.mode as u8));
    }
    let trailer = walk_trailer(header.version, &datagram[HEADER_LEN..])
        .map_err(|_| DropReason::BadTrailer)?;
    Ok(ClientRequest {
        version: header.version,
        poll: header.poll,
        origin: header.origin_ts,
        receive: header.receive_ts,
        transmit: header.transmit_ts,
        crypto_nak: matches!(trailer.mac, Some(MacKind::Keyed { .. })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(version: u8, mode: u8) -> Vec<u8> {
        let mut r = vec![0u8; 48];
        r[0] = (version << 3) | mode;
        r[2] = 6;
        r[24..32].copy_from_slice(&[0xe8, 0, 0, 1, 0, 0, 0, 0x11]);
        r[32..40].copy_from_slice(&[0xe8, 0, 0, 2, 0, 0, 0, 0x22]);
        r[40..48].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]);
        r
    }

    #[test]
    fn client_requests_of_versions_one_to_four() {
        for v in 1..=4 {
            let req = parse_client_request(&datagram(v, 3), false).unwrap();
            assert_eq!((req.version, req.poll), (v, 6));
            assert_eq!(
                req.transmit.to_be_bytes(),
                [0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]
            );
            assert_eq!(req.origin, NtpTimestamp(0xe800_0001_0000_0011));
            assert_eq!(req.receive, NtpTimestamp(0xe800_0002_0000_0022));
            assert!(!req.crypto_nak);
            assert_eq!(req.reply_len(), 48);
        }
    }

    #[test]
    fn an_ntpv1_request_has_no_mode_and_comes_from_a_client_port() {
        let req = parse_client_request(&datagram(1, 0), false).unwrap();
        assert_eq!(req.version, 1);
        // From port 123 it is a peer, and mode 0 is reserved in later versions.
        assert_eq!(
            parse_client_request(&datagram(1, 0), true),
            Err(DropReason::UnsupportedMode(0))
        );
        for v in 2..=4 {
            assert_eq!(
                parse_client_request(&datagram(v, 0), false),
                Err(DropReason::UnsupportedMode(0))
            );
        }
    }

    #[test]
    fn everything_else_is_dropped_with_its_reason() {
        assert_eq!(
            parse_client_request(&[0x23; 47], false),
            Err(DropReason::TooShort)
        );
        assert_eq!(
            parse_client_request(&datagram(0, 3), false),
            Err(DropReason::BadVersion)
        );
        assert_eq!(
            parse_client_request(&datagram(5, 3), false),
            Err(DropReason::BadVersion)
        );
        for mode in [1u8, 2, 4, 5, 6, 7] {
            assert_eq!(
                parse_client_request(&datagram(4, mode), false),
                Err(DropReason::UnsupportedMode(mode))
            );
        }
        let mut garbage = datagram(4, 3);
        garbage.extend([0xffu8; 20]);
        assert_eq!(
            parse_client_request(&garbage, false),
            Err(DropReason::BadTrailer)
        );
    }

    #[test]
    fn a_well_formed_mac_asks_for_a_crypto_nak() {
        let mut req = datagram(3, 3);
        req.extend(42u32.to_be_bytes());
        req.extend([0x11u8; 16]);
        let parsed = parse_client_request(&req, false).unwrap();
        assert!(parsed.crypto_nak);
        assert_eq!(parsed.reply_len(), 52);
    }
}
