//! The server's side of RFC 9769's interleaved client/server mode.
//!
//! In the basic mode a reply carries its own transmit timestamp, which the
//! server has to write before the reply leaves: an estimate. In the
//! interleaved mode the reply carries instead the exact transmit timestamp of
//! the server's previous reply to the same client, known only once that reply
//! had left (the kernel's transmit timestamp). A client asks for it by putting
//! the receive timestamp of the server's previous reply into its request's
//! origin field; the server finds the pair it kept for that receive timestamp
//! and answers with origin = the request's receive timestamp, receive = this
//! request's arrival, transmit = the kept exact transmit timestamp.
//!
//! The rules here are pure; the pairs are kept by the server (`server::xleave`).
//!
//! - Every reply's receive timestamp has its lowest bit set and its transmit
//!   timestamp has it clear (one unit is 2^-32 s, 0.23 ns). No reply ever
//!   carries equal receive and transmit timestamps, and a request whose origin
//!   has the bit clear is echoing one of our transmit timestamps (a basic
//!   client), or zero, or its own nonce half the time: the server neither
//!   looks it up nor keeps a pair for its reply. chrony's server marks its
//!   timestamps the same way.
//! - A request asks for the interleaved mode when it is NTPv4, its origin is
//!   non-zero with the bit set, and its receive and transmit timestamps differ
//!   (a client that puts one value in both is not following RFC 9769).
//! - Only a reply that answers with time takes part: a Kiss-o'-Death is always
//!   in the basic mode, and a KoD's pair is never kept.
//! - A kept pair serves one reply at most (the server consumes it), so a
//!   replayed or duplicated request never gets the same transmit timestamp
//!   twice; the pairs are forgotten when the clock is stepped.

use super::request::ClientRequest;
use super::time::NtpTimestamp;

/// The bit of the fraction that marks a receive timestamp.
pub const RECEIVE_MARK: u64 = 1;

/// A receive timestamp as the server sends it: the lowest bit set.
pub fn mark_receive(t: NtpTimestamp) -> NtpTimestamp {
    NtpTimestamp(t.0 | RECEIVE_MARK)
}

/// A transmit timestamp as the server sends it: the lowest bit clear.
pub fn mark_transmit(t: NtpTimestamp) -> NtpTimestamp {
    NtpTimestamp(t.0 & !RECEIVE_MARK)
}

/// Whether `t` may be one of this server's receive timestamps.
pub fn is_marked_receive(t: NtpTimestamp) -> bool {
    t.0 & RECEIVE_MARK != 0
}

/// Whether `request` asks for an interleaved reply: NTPv4, an origin that is
/// one of our receive timestamps (non-zero, marked), and receive != transmit.
/// The server then looks for the pair it kept for that origin, and keeps one
/// for its reply to this request.
pub fn asks_interleaved(request: &ClientRequest) -> bool {
    request.version == 4
        && !request.origin.is_zero()
        && is_marked_receive(request.origin)
        && request.receive != request.transmit
}

/// The transmit timestamp of an interleaved reply: the kept receive timestamp
/// (the request's origin) plus the kept interval from that receive to the
/// kernel's transmit stamp of the reply that carried it, in nanoseconds.
/// `None` when the interval is negative, which no kept pair has.
pub fn kept_transmit(origin: NtpTimestamp, receive_to_transmit_ns: i64) -> Option<NtpTimestamp> {
    if receive_to_transmit_ns < 0 {
        return None;
    }
    let units = ((receive_to_transmit_ns as u128) << 32) / 1_000_000_000;
    let received = origin.0 & !RECEIVE_MARK;
    Some(mark_transmit(NtpTimestamp(
        received.wrapping_add(units as u64),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: u8, origin: u64, receive: u64, transmit: u64) -> ClientRequest {
        ClientRequest {
            version,
            poll: 6,
            origin: NtpTimestamp(origin),
            receive: NtpTimestamp(receive),
            transmit: NtpTimestamp(transmit),
            crypto_nak: false,
        }
    }

    const RX: u64 = 0xE8F0_0000_8000_0001;

    #[test]
    fn receive_and_transmit_stamps_never_collide() {
        for t in [0u64, 1, 2, 3, 0xffff_ffff_ffff_ffff, 0xE8F0_0000_8000_0000] {
            let t = NtpTimestamp(t);
            assert!(is_marked_receive(mark_receive(t)));
            assert!(!is_marked_receive(mark_transmit(t)));
            assert_ne!(mark_receive(t), mark_transmit(t));
            // The mark moves a stamp by at most one unit (0.23 ns).
            assert!(mark_receive(t).0 - t.0 <= 1 && t.0 - mark_transmit(t).0 <= 1);
        }
    }

    #[test]
    fn an_interleaved_request_names_one_of_our_receive_stamps() {
        assert!(asks_interleaved(&request(4, RX, 77, 99)));
    }

    #[test]
    fn basic_requests_do_not_ask() {
        // Origin zero: a client's first request, or data minimization.
        assert!(!asks_interleaved(&request(4, 0, 0, 99)));
        // Origin echoing one of our transmit stamps (lowest bit clear).
        assert!(!asks_interleaved(&request(4, RX & !1, 77, 99)));
        // Only NTPv4 has the interleaved mode.
        for v in 1..=3 {
            assert!(!asks_interleaved(&request(v, RX, 77, 99)));
        }
    }

    #[test]
    fn receive_equal_to_transmit_is_not_interleaved() {
        assert!(!asks_interleaved(&request(4, RX, 99, 99)));
        assert!(!asks_interleaved(&request(4, RX, 0, 0)));
    }

    #[test]
    fn the_kept_transmit_is_the_receive_plus_the_interval() {
        let tx = kept_transmit(NtpTimestamp(RX), 25_000).unwrap();
        assert!(!is_marked_receive(tx));
        let interval = tx.seconds_since(NtpTimestamp(RX & !1));
        assert!((interval - 25e-6).abs() < 1e-9, "{interval}");
        assert_eq!(kept_transmit(NtpTimestamp(RX), -1), None);
        // Across the end of the era.
        let late = NtpTimestamp(0xffff_ffff_ffff_f001);
        let wrapped = kept_transmit(late, 1_000_000).unwrap();
        assert!((wrapped.seconds_since(late) - 1e-3).abs() < 1e-9);
    }
}
