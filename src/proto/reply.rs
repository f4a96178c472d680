//! The server's reply rules (RFC 5905 §9-§10, RFC 8633, RFC 9769;
//! docs/architecture.md).
//!
//! [`respond`] turns one request into an action. It writes the whole reply except
//! the transmit timestamp, which the caller stamps with [`set_transmit`] as late as
//! possible before the reply is queued. [`respond_interleaved`] builds an
//! interleaved reply (RFC 9769, see `interleave`), whose transmit timestamp is
//! the exact one of the previous reply and is written at once.

use super::interleave::{mark_receive, mark_transmit};
use super::packet::{Header, LeapIndicator, Mode, HEADER_LEN, TRANSMIT_OFFSET};
use super::request::{ClientRequest, DropReason};
use super::time::{NtpShort, NtpTimestamp};

/// Root dispersion grows at this rate from the last clock update (RFC 5905 PHI).
pub const DISPERSION_RATE: f64 = 15e-6;

/// The system variables a reply carries: what the sync thread publishes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SystemInfo {
    pub leap: LeapIndicator,
    /// 1..=15 when synchronized; 0 or 16 mean unsynchronized.
    pub stratum: u8,
    /// log2 seconds.
    pub precision: i8,
    /// Seconds.
    pub root_delay: f64,
    /// Seconds, at `reference_time`.
    pub root_dispersion: f64,
    pub reference_id: [u8; 4],
    /// Time of the last clock update (served time scale); zero if never.
    pub reference_time: NtpTimestamp,
}

impl SystemInfo {
    /// The state of a server that has no time to give.
    pub fn unsynchronized(precision: i8) -> Self {
        SystemInfo {
            leap: LeapIndicator::Unknown,
            stratum: 0,
            precision,
            root_delay: 0.0,
            root_dispersion: 0.0,
            reference_id: [0; 4],
            reference_time: NtpTimestamp::ZERO,
        }
    }

    pub fn is_synchronized(&self) -> bool {
        self.leap != LeapIndicator::Unknown && (1..=15).contains(&self.stratum)
    }

    /// Root dispersion at `now`: the published value plus 15 ppm of the time since
    /// the reference instant.
    pub fn root_dispersion_at(&self, now: NtpTimestamp) -> f64 {
        if self.reference_time.is_zero() {
            return self.root_dispersion;
        }
        let age = now.seconds_since(self.reference_time).max(0.0);
        self.root_dispersion + DISPERSION_RATE * age
    }
}

/// What access control and the rate limiter decided for the request's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Answer normally.
    Serve,
    /// Over its rate but let through (leak): answer, with poll raised to at least this.
    ServeRaisingPoll(i8),
    /// Over its rate: answer with a RATE Kiss-o'-Death, poll raised to at least this.
    Kod(i8),
    /// Over its rate, no KoD allowed: drop.
    Limit,
    /// `restrict ... ignore` or `noserve`: drop silently.
    Deny,
}

/// The outcome of [`respond`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyAction {
    /// A reply of `len` bytes is in the buffer; stamp it with [`set_transmit`].
    Reply {
        len: usize,
    },
    /// A RATE Kiss-o'-Death of `len` bytes is in the buffer; stamp it with
    /// [`set_transmit`] like any reply (chrony's client ignores a KoD whose
    /// receive or transmit timestamp is zero, and never backs off).
    Kod {
        len: usize,
    },
    Drop(DropReason),
}

/// RFC 5905 kiss code for rate limiting.
pub const KISS_RATE: [u8; 4] = *b"RATE";

/// Root delay and root dispersion sent while unsynchronized, in seconds, as
/// chrony sends them: large enough that no client mistakes the server for a
/// good source even if it ignores the leap indicator and stratum.
pub const UNSYNCHRONIZED_ROOT_DISTANCE: f64 = 1.0;

/// Builds the reply to a checked request (see
/// [`parse_client_request`](super::request::parse_client_request)).
///
/// `received` is the request's receive timestamp on the served time scale,
/// `system` the published state and `access` the access decision for the
/// source. The reply is written into `out` and is never longer than the
/// request; its transmit timestamp is left for [`set_transmit`].
pub fn respond(
    req: &ClientRequest,
    received: NtpTimestamp,
    system: &SystemInfo,
    access: Access,
    out: &mut [u8],
) -> ReplyAction {
    build(req, received, None, system, access, out)
}

/// Builds an interleaved reply (RFC 9769) to a request that asked for one
/// ([`asks_interleaved`](super::interleave::asks_interleaved)) and whose
/// origin named a kept pair: origin = the request's receive timestamp,
/// receive = `received`, transmit = `previous_transmit`, the exact transmit
/// timestamp of the reply that carried the origin, already written. A KoD is
/// never interleaved: with `access` asking for one, the reply is a basic KoD,
/// left for [`set_transmit`] like any basic reply.
pub fn respond_interleaved(
    req: &ClientRequest,
    received: NtpTimestamp,
    previous_transmit: NtpTimestamp,
    system: &SystemInfo,
    access: Access,
    out: &mut [u8],
) -> ReplyAction {
    let interleaved = (!matches!(access, Access::Kod(_))).then_some(previous_transmit);
    build(req, received, interleaved, system, access, out)
}

fn build(
    req: &ClientRequest,
    received: NtpTimestamp,
    interleaved: Option<NtpTimestamp>,
    system: &SystemInfo,
    access: Access,
    out: &mut [u8],
) -> ReplyAction {
    let poll_floor = match access {
        Access::Deny => return ReplyAction::Drop(DropReason::Denied),
        Access::Limit => return ReplyAction::Drop(DropReason::RateLimited),
        Access::ServeRaisingPoll(p) | Access::Kod(p) => p,
        Access::Serve => i8::MIN,
    };
    let len = req.reply_len();
    if out.len() < len {
        return ReplyAction::Drop(DropReason::BufferTooSmall);
    }
    let kod = matches!(access, Access::Kod(_));
    let synced = system.is_synchronized();
    let (root_delay, root_dispersion) = if synced {
        (system.root_delay, system.root_dispersion_at(received))
    } else {
        (UNSYNCHRONIZED_ROOT_DISTANCE, UNSYNCHRONIZED_ROOT_DISTANCE)
    };
    let reply = Header {
        leap: if synced && !kod {
            system.leap
        } else {
            LeapIndicator::Unknown
        },
        version: req.version,
        mode: Mode::Server,
        stratum: if synced && !kod { system.stratum } else { 0 },
        poll: req.poll.max(poll_floor),
        precision: system.precision,
        root_delay: NtpShort::from_seconds(root_delay),
        root_dispersion: NtpShort::from_seconds(root_dispersion),
        reference_id: if kod { KISS_RATE } else { system.reference_id },
        reference_ts: system.reference_time,
        origin_ts: if interleaved.is_some() {
            req.receive
        } else {
            req.transmit
        },
        receive_ts: mark_receive(received),
        transmit_ts: interleaved.map_or(NtpTimestamp::ZERO, mark_transmit),
    };
    reply.write(out);
    out[HEADER_LEN..len].fill(0);
    if kod {
        ReplyAction::Kod { len }
    } else {
        ReplyAction::Reply { len }
    }
}

/// Writes the transmit timestamp of a reply built by [`respond`] (its
/// lowest bit cleared: a transmit timestamp never equals a receive one).
pub fn set_transmit(reply: &mut [u8], transmit: NtpTimestamp) {
    reply[TRANSMIT_OFFSET..TRANSMIT_OFFSET + 8]
        .copy_from_slice(&mark_transmit(transmit).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::request::parse_client_request;
    use proptest::prelude::*;

    const RX: NtpTimestamp = NtpTimestamp(0xE8F0_0000_8000_0000);

    fn synced() -> SystemInfo {
        SystemInfo {
            leap: LeapIndicator::NoWarning,
            stratum: 2,
            precision: -23,
            root_delay: 0.0125,
            root_dispersion: 0.001,
            reference_id: [192, 0, 2, 1],
            reference_time: RX.add_seconds(-100.0),
        }
    }

    fn request(version: u8, mode: u8) -> Vec<u8> {
        let mut r = vec![0u8; 48];
        r[0] = (version << 3) | mode;
        r[2] = 6; // poll 64 s
        r[40..48].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x01, 0x23, 0x45, 0x67]);
        r
    }

    /// The whole per-request path: check the datagram, then build the reply.
    fn answer(req: &[u8], system: &SystemInfo, access: Access) -> (ReplyAction, Vec<u8>) {
        let mut out = vec![0u8; 2048];
        let action = match parse_client_request(req, false) {
            Ok(parsed) => respond(&parsed, RX, system, access, &mut out),
            Err(reason) => ReplyAction::Drop(reason),
        };
        (action, out)
    }

    fn reply_header(req: &[u8], system: &SystemInfo) -> Header {
        let (action, out) = answer(req, system, Access::Serve);
        assert_eq!(action, ReplyAction::Reply { len: 48 });
        Header::parse(&out).unwrap()
    }

    #[test]
    fn versions_one_to_four_are_echoed() {
        for v in 1..=4 {
            assert_eq!(reply_header(&request(v, 3), &synced()).version, v);
        }
    }

    #[test]
    fn versions_zero_and_five_up_are_dropped() {
        for v in [0u8, 5, 6, 7] {
            let (action, _) = answer(&request(v, 3), &synced(), Access::Serve);
            assert_eq!(action, ReplyAction::Drop(DropReason::BadVersion), "v{v}");
        }
    }

    #[test]
    fn only_client_mode_is_answered() {
        for mode in [1u8, 2, 4, 5, 6, 7] {
            let (action, _) = answer(&request(4, mode), &synced(), Access::Serve);
            assert_eq!(
                action,
                ReplyAction::Drop(DropReason::UnsupportedMode(mode)),
                "mode {mode}"
            );
        }
    }

    #[test]
    fn reply_fields_follow_the_rules() {
        let sys = synced();
        let req = request(4, 3);
        let h = reply_header(&req, &sys);
        assert_eq!(h.mode, Mode::Server);
        assert_eq!(h.leap, LeapIndicator::NoWarning);
        assert_eq!(h.stratum, 2);
        assert_eq!(h.poll, 6);
        assert_eq!(h.precision, -23);
        assert_eq!(h.reference_id, [192, 0, 2, 1]);
        assert_eq!(h.reference_ts, sys.reference_time);
        assert_eq!(h.receive_ts, mark_receive(RX));
        assert_eq!(h.transmit_ts, NtpTimestamp::ZERO, "left for set_transmit");
        assert_eq!(h.root_delay, NtpShort::from_seconds(0.0125));
        // 1 ms + 15 ppm x 100 s = 2.5 ms.
        let disp = h.root_dispersion.to_seconds();
        assert!((disp - 0.0025).abs() < 2.0 / 65536.0, "{disp}");
    }

    #[test]
    fn origin_is_copied_byte_for_byte() {
        let mut req = request(4, 3);
        let nonce = [0xff, 0x00, 0x7f, 0x80, 0x01, 0xfe, 0x55, 0xaa];
        req[40..48].copy_from_slice(&nonce);
        let (_, out) = answer(&req, &synced(), Access::Serve);
        assert_eq!(&out[24..32], &nonce);
    }

    #[test]
    fn transmit_is_stamped_last() {
        let req = request(4, 3);
        let (action, mut out) = answer(&req, &synced(), Access::Serve);
        let ReplyAction::Reply { len } = action else {
            panic!("{action:?}")
        };
        let tx = RX.add_seconds(0.000_02);
        set_transmit(&mut out[..len], tx);
        assert_eq!(Header::parse(&out).unwrap().transmit_ts, mark_transmit(tx));
    }

    #[test]
    fn leap_indicator_is_passed_on() {
        let mut sys = synced();
        sys.leap = LeapIndicator::InsertSecond;
        assert_eq!(
            reply_header(&request(4, 3), &sys).leap,
            LeapIndicator::InsertSecond
        );
    }

    #[test]
    fn unsynchronized_state_says_so() {
        for sys in [
            SystemInfo::unsynchronized(-20),
            SystemInfo {
                stratum: 16,
                ..synced()
            },
            SystemInfo {
                leap: LeapIndicator::Unknown,
                ..synced()
            },
        ] {
            let h = reply_header(&request(4, 3), &sys);
            assert_eq!(h.leap, LeapIndicator::Unknown);
            assert_eq!(h.stratum, 0);
            assert_eq!(h.receive_ts, mark_receive(RX));
            // 1 s each, as chrony sends: never mistaken for a good source.
            assert_eq!(h.root_delay, NtpShort::from_seconds(1.0));
            assert_eq!(h.root_dispersion, NtpShort::from_seconds(1.0));
        }
    }

    #[test]
    fn an_ntpv1_request_is_answered_in_server_mode() {
        let h = reply_header(&request(1, 0), &synced());
        assert_eq!((h.version, h.mode), (1, Mode::Server));
    }

    #[test]
    fn short_packets_are_dropped() {
        for n in [0usize, 1, 12, 47] {
            let req = &request(4, 3)[..n];
            let (action, _) = answer(req, &synced(), Access::Serve);
            assert_eq!(action, ReplyAction::Drop(DropReason::TooShort));
        }
    }

    #[test]
    fn extension_fields_get_a_plain_reply() {
        let mut req = request(4, 3);
        let mut ef = vec![0u8; 36];
        ef[0..2].copy_from_slice(&0x0104u16.to_be_bytes());
        ef[2..4].copy_from_slice(&36u16.to_be_bytes());
        req.extend(&ef);
        let (action, _) = answer(&req, &synced(), Access::Serve);
        assert_eq!(action, ReplyAction::Reply { len: 48 });
    }

    #[test]
    fn malformed_extension_fields_are_dropped() {
        let mut req = request(4, 3);
        let mut ef = vec![0u8; 36];
        ef[2..4].copy_from_slice(&40u16.to_be_bytes()); // longer than what is there
        req.extend(&ef);
        let (action, _) = answer(&req, &synced(), Access::Serve);
        assert_eq!(action, ReplyAction::Drop(DropReason::BadTrailer));
        let mut req = request(4, 3);
        req.extend([1u8; 7]);
        let (action, _) = answer(&req, &synced(), Access::Serve);
        assert_eq!(action, ReplyAction::Drop(DropReason::BadTrailer));
    }

    #[test]
    fn keyed_mac_gets_a_crypto_nak() {
        for mac_len in [20usize, 24] {
            let mut req = request(3, 3);
            let mut mac = vec![0xabu8; mac_len];
            mac[..4].copy_from_slice(&42u32.to_be_bytes());
            req.extend(&mac);
            let (action, out) = answer(&req, &synced(), Access::Serve);
            assert_eq!(action, ReplyAction::Reply { len: 52 });
            assert_eq!(&out[48..52], &[0, 0, 0, 0]);
        }
    }

    #[test]
    fn garbage_of_mac_length_gets_no_crypto_nak() {
        for mac_len in [20usize, 24] {
            let mut req = request(3, 3);
            let mac = vec![0xffu8; mac_len];
            req.extend(&mac);
            let (action, _) = answer(&req, &synced(), Access::Serve);
            assert_eq!(action, ReplyAction::Drop(DropReason::BadTrailer));
        }
    }

    #[test]
    fn rate_kiss_of_death() {
        let req = request(4, 3);
        let (action, out) = answer(&req, &synced(), Access::Kod(10));
        assert_eq!(action, ReplyAction::Kod { len: 48 });
        let h = Header::parse(&out).unwrap();
        assert_eq!(h.leap, LeapIndicator::Unknown);
        assert_eq!(h.stratum, 0);
        assert_eq!(h.reference_id, *b"RATE");
        assert_eq!(h.mode, Mode::Server);
        assert_eq!(h.version, 4);
        assert_eq!(h.poll, 10, "poll raised to the limit interval");
        assert_eq!(&out[24..32], &req[40..48]);
        // Timestamps filled as in any reply: chrony's client discards a reply
        // with a zero receive or transmit timestamp, KoD or not.
        assert_eq!(h.receive_ts, mark_receive(RX));
        assert_eq!(h.transmit_ts, NtpTimestamp::ZERO, "left for set_transmit");
    }

    #[test]
    fn kod_never_answers_a_non_client() {
        let (action, _) = answer(&request(4, 4), &synced(), Access::Kod(10));
        assert_eq!(action, ReplyAction::Drop(DropReason::UnsupportedMode(4)));
    }

    #[test]
    fn limited_poll_is_raised_but_never_lowered() {
        let h = {
            let (_, out) = answer(&request(4, 3), &synced(), Access::ServeRaisingPoll(8));
            Header::parse(&out).unwrap()
        };
        assert_eq!(h.poll, 8);
        let mut req = request(4, 3);
        req[2] = 12;
        let (_, out) = answer(&req, &synced(), Access::ServeRaisingPoll(8));
        assert_eq!(Header::parse(&out).unwrap().poll, 12);
    }

    #[test]
    fn denied_and_limited_are_dropped() {
        let req = request(4, 3);
        assert_eq!(
            answer(&req, &synced(), Access::Deny).0,
            ReplyAction::Drop(DropReason::Denied)
        );
        assert_eq!(
            answer(&req, &synced(), Access::Limit).0,
            ReplyAction::Drop(DropReason::RateLimited)
        );
    }

    #[test]
    fn small_buffer_is_a_drop_not_a_panic() {
        let mut out = [0u8; 20];
        let req = parse_client_request(&request(4, 3), false).unwrap();
        let action = respond(&req, RX, &synced(), Access::Serve, &mut out);
        assert_eq!(action, ReplyAction::Drop(DropReason::BufferTooSmall));
    }

    /// A request in the interleaved mode (RFC 9769): origin = our receive
    /// stamp of the previous reply, receive = the client's own receive time.
    fn interleaved_request() -> Vec<u8> {
        let mut r = request(4, 3);
        r[24..32].copy_from_slice(&0xE8F0_0000_7000_0001u64.to_be_bytes());
        r[32..40].copy_from_slice(&0xE8F0_0000_7100_0000u64.to_be_bytes());
        r
    }

    fn answer_interleaved(
        req: &[u8],
        access: Access,
        previous: NtpTimestamp,
    ) -> (ReplyAction, Vec<u8>) {
        let mut out = vec![0u8; 64];
        let parsed = parse_client_request(req, false).unwrap();
        let action = respond_interleaved(&parsed, RX, previous, &synced(), access, &mut out);
        (action, out)
    }

    #[test]
    fn every_receive_stamp_is_marked_and_every_transmit_stamp_is_not() {
        let (_, mut out) = answer(&request(4, 3), &synced(), Access::Serve);
        // Stamped with the receive time itself: still two different values.
        set_transmit(&mut out[..48], mark_receive(RX));
        let h = Header::parse(&out).unwrap();
        assert!(crate::proto::interleave::is_marked_receive(h.receive_ts));
        assert!(!crate::proto::interleave::is_marked_receive(h.transmit_ts));
        assert_ne!(h.receive_ts, h.transmit_ts);
    }

    #[test]
    fn an_interleaved_reply_echoes_the_receive_stamp_and_carries_the_kept_transmit() {
        let req = interleaved_request();
        let previous = NtpTimestamp(0xE8F0_0000_7000_8000);
        let (action, out) = answer_interleaved(&req, Access::Serve, previous);
        assert_eq!(action, ReplyAction::Reply { len: 48 });
        let h = Header::parse(&out).unwrap();
        assert_eq!(&out[24..32], &req[32..40], "origin = the request's receive");
        assert_eq!(
            h.receive_ts,
            mark_receive(RX),
            "receive = this request's arrival"
        );
        assert_eq!(
            h.transmit_ts, previous,
            "transmit = the previous reply's exact one"
        );
        assert_eq!(h.stratum, 2);
        assert_eq!(h.mode, Mode::Server);
    }

    #[test]
    fn the_kept_transmit_is_written_without_the_receive_mark() {
        let (_, out) = answer_interleaved(
            &interleaved_request(),
            Access::Serve,
            NtpTimestamp(0x0123_0000_0000_0007),
        );
        let h = Header::parse(&out).unwrap();
        assert_eq!(h.transmit_ts, NtpTimestamp(0x0123_0000_0000_0006));
    }

    #[test]
    fn a_kod_is_never_interleaved() {
        let req = interleaved_request();
        let (action, out) =
            answer_interleaved(&req, Access::Kod(9), NtpTimestamp(0xE8F0_0000_7000_8000));
        assert_eq!(action, ReplyAction::Kod { len: 48 });
        let h = Header::parse(&out).unwrap();
        assert_eq!(
            &out[24..32],
            &req[40..48],
            "a basic KoD's origin is the request's transmit"
        );
        assert_eq!(h.transmit_ts, NtpTimestamp::ZERO, "left for set_transmit");
        assert_eq!(h.reference_id, *b"RATE");
    }

    #[test]
    fn an_interleaved_request_still_obeys_access_control() {
        let req = interleaved_request();
        let previous = NtpTimestamp(0xE8F0_0000_7000_8000);
        assert_eq!(
            answer_interleaved(&req, Access::Deny, previous).0,
            ReplyAction::Drop(DropReason::Denied)
        );
        assert_eq!(
            answer_interleaved(&req, Access::Limit, previous).0,
            ReplyAction::Drop(DropReason::RateLimited)
        );
        let (action, out) = answer_interleaved(&req, Access::ServeRaisingPoll(9), previous);
        assert_eq!(action, ReplyAction::Reply { len: 48 });
        assert_eq!(Header::parse(&out).unwrap().poll, 9);
    }

    #[test]
    fn a_basic_reply_to_an_interleaved_request_echoes_its_transmit() {
        // No kept pair: the server answers in the basic mode, and the client
        // sees origin = its transmit, which tells it so.
        let req = interleaved_request();
        let (action, out) = answer(&req, &synced(), Access::Serve);
        assert_eq!(action, ReplyAction::Reply { len: 48 });
        assert_eq!(&out[24..32], &req[40..48]);
    }

    fn any_access() -> impl Strategy<Value = Access> {
        prop_oneof![
            Just(Access::Serve),
            any::<i8>().prop_map(Access::ServeRaisingPoll),
            any::<i8>().prop_map(Access::Kod),
            Just(Access::Limit),
            Just(Access::Deny),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        // The server is never an amplifier: no reply is longer than its request.
        #[test]
        fn reply_never_longer_than_request(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            access in any_access(),
        ) {
            let (action, out) = answer(&bytes, &synced(), access);
            match action {
                ReplyAction::Reply { len } | ReplyAction::Kod { len } => {
                    prop_assert!(len <= bytes.len());
                    prop_assert!(len >= HEADER_LEN);
                    prop_assert_eq!(&out[24..32], &bytes[40..48]);
                }
                ReplyAction::Drop(_) => {}
            }
        }

        // Interleaved replies follow the same length rule; their origin is the
        // request's receive timestamp, a KoD's its transmit timestamp.
        #[test]
        fn interleaved_reply_never_longer_and_echoes_receive(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            access in any_access(),
            previous in any::<u64>(),
        ) {
            let mut out = vec![0u8; 2048];
            let Ok(parsed) = parse_client_request(&bytes, false) else { return Ok(()) };
            match respond_interleaved(&parsed, RX, NtpTimestamp(previous), &synced(), access, &mut out) {
                ReplyAction::Reply { len } => {
                    prop_assert!(len <= bytes.len());
                    prop_assert_eq!(&out[24..32], &bytes[32..40]);
                    prop_assert_eq!(&out[40..48], &mark_transmit(NtpTimestamp(previous)).to_be_bytes());
                }
                ReplyAction::Kod { len } => {
                    prop_assert!(len <= bytes.len());
                    prop_assert_eq!(&out[24..32], &bytes[40..48]);
                }
                ReplyAction::Drop(_) => {}
            }
        }

        // Well-formed client requests with arbitrary header bytes are always answered.
        #[test]
        fn client_requests_are_answered(mut bytes in proptest::collection::vec(any::<u8>(), 48..=48), v in 1u8..=4) {
            bytes[0] = (bytes[0] & 0xc0) | (v << 3) | 3;
            prop_assert_eq!(answer(&bytes, &synced(), Access::Serve).0, ReplyAction::Reply { len: 48 });
        }
    }
}
