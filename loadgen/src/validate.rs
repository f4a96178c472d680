//! Checks an answer against the request it claims to answer. Pure: the bytes,
//! whether the source and socket were right, and the tracker are passed in.

use tachyon::proto::{Header, LeapIndicator, Mode, NtpTimestamp, HEADER_LEN};

use crate::tracker::{Lookup, Tracker};

/// Why an answer was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invalid {
    /// Shorter than an NTP header.
    Short,
    /// Did not come from the target address and port.
    WrongSource,
    /// Arrived on another client's socket than the one that asked.
    WrongSocket,
    /// Origin timestamp matches no request we sent.
    UnknownOrigin,
    /// Mode is not 4 (server).
    Mode,
    /// Version differs from the request's.
    Version,
    /// Longer than the request (an amplifier).
    TooLong,
    /// Receive timestamp T2 later than transmit timestamp T3.
    T2AfterT3,
    /// Receive or transmit timestamp is zero.
    ZeroTimestamp,
    /// Stratum above 16.
    Stratum,
    /// LI 3 or stratum 16 (and --allow-unsync not given).
    Unsynchronized,
    /// An interleaved reply whose transmit timestamp (the exact departure of
    /// the reply before) is not between that reply's receive timestamp and
    /// this one's, or that answers no request the client knows the reply
    /// before of.
    Interleaved,
}

impl Invalid {
    pub const ALL: [Invalid; 12] = [
        Invalid::Short,
        Invalid::WrongSource,
        Invalid::WrongSocket,
        Invalid::UnknownOrigin,
        Invalid::Mode,
        Invalid::Version,
        Invalid::TooLong,
        Invalid::T2AfterT3,
        Invalid::ZeroTimestamp,
        Invalid::Stratum,
        Invalid::Unsynchronized,
        Invalid::Interleaved,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Invalid::Short => "short",
            Invalid::WrongSource => "wrong_source",
            Invalid::WrongSocket => "wrong_socket",
            Invalid::UnknownOrigin => "unknown_origin",
            Invalid::Mode => "mode",
            Invalid::Version => "version",
            Invalid::TooLong => "too_long",
            Invalid::T2AfterT3 => "t2_after_t3",
            Invalid::ZeroTimestamp => "zero_timestamp",
            Invalid::Stratum => "stratum",
            Invalid::Unsynchronized => "unsynchronized",
            Invalid::Interleaved => "interleaved_t3",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Verdict on an answer that matched an outstanding request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// A good answer: server receive (T2) and transmit (T3) timestamps.
    Ok {
        t2: NtpTimestamp,
        t3: NtpTimestamp,
    },
    /// An unsynchronized answer accepted by --allow-unsync.
    Unsync {
        t2: NtpTimestamp,
        t3: NtpTimestamp,
    },
    /// A Kiss-o'-Death, with its code (the reference id).
    Kod([u8; 4]),
    Invalid(Invalid),
}

/// What the request looked like; the same for every request of a run.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    pub version: u8,
    pub request_len: usize,
    pub allow_unsync: bool,
    /// Requests ask for the interleaved mode (RFC 9769).
    pub interleaved: bool,
}

/// Kiss codes that tell a client to back off or go away; never "unsynchronized".
pub const REJECTING_KISSES: [[u8; 4]; 3] = [*b"RATE", *b"DENY", *b"RSTR"];

/// Checks a reply whose origin already matched. Order: mode, version, length,
/// then KoD, then the synchronization and timestamp rules. An interleaved
/// reply's transmit timestamp belongs to the reply before, so T3 >= T2 is
/// not asked of it (the caller checks it against that reply).
pub fn check_reply(bytes: &[u8], h: &Header, expect: &Expect, interleaved: bool) -> Verdict {
    if h.mode != Mode::Server {
        return Verdict::Invalid(Invalid::Mode);
    }
    if h.version != expect.version {
        return Verdict::Invalid(Invalid::Version);
    }
    if bytes.len() > expect.request_len {
        return Verdict::Invalid(Invalid::TooLong);
    }
    let unsync_ok = expect.allow_unsync;
    let mut unsync = false;
    match h.stratum {
        0 => {
            if !unsync_ok || REJECTING_KISSES.contains(&h.reference_id) {
                return Verdict::Kod(h.reference_id);
            }
            unsync = true;
        }
        1..=15 => {}
        16 => unsync = true,
        _ => return Verdict::Invalid(Invalid::Stratum),
    }
    if h.leap == LeapIndicator::Unknown {
        unsync = true;
    }
    if unsync && !unsync_ok {
        return Verdict::Invalid(Invalid::Unsynchronized);
    }
    let (t2, t3) = (h.receive_ts, h.transmit_ts);
    if t2.is_zero() || t3.is_zero() {
        return Verdict::Invalid(Invalid::ZeroTimestamp);
    }
    if !interleaved && t3.seconds_since(t2) < 0.0 {
        return Verdict::Invalid(Invalid::T2AfterT3);
    }
    if unsync {
        Verdict::Unsync { t2, t3 }
    } else {
        Verdict::Ok { t2, t3 }
    }
}

/// Everything an arriving datagram can turn out to be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    /// It answers the outstanding request in `slot`; the verdict says how
    /// well; `interleaved`: in the interleaved mode.
    Answer {
        slot: usize,
        verdict: Verdict,
        interleaved: bool,
    },
    /// A second answer to one request.
    Duplicate,
    /// An answer that came after the request had timed out.
    Late,
    /// Not an answer to anything outstanding.
    Invalid(Invalid),
}

/// Classifies a datagram received on client socket `client` from a source that
/// was (`source_ok`) or was not the target.
pub fn classify(
    bytes: &[u8],
    source_ok: bool,
    client: u32,
    tracker: &mut Tracker,
    expect: &Expect,
) -> Outcome {
    if bytes.len() < HEADER_LEN {
        return Outcome::Invalid(Invalid::Short);
    }
    if !source_ok {
        return Outcome::Invalid(Invalid::WrongSource);
    }
    let Some(h) = Header::parse(bytes) else {
        return Outcome::Invalid(Invalid::Short);
    };
    let origin = h.origin_ts.to_bits();
    let (found, interleaved) = tracker.lookup_reply(origin, expect.interleaved);
    match found {
        Lookup::Unknown => Outcome::Invalid(Invalid::UnknownOrigin),
        Lookup::Duplicate => Outcome::Duplicate,
        Lookup::Late => Outcome::Late,
        Lookup::Outstanding(slot) => {
            let verdict = if tracker.entry(slot).client != client {
                Verdict::Invalid(Invalid::WrongSocket)
            } else {
                check_reply(bytes, &h, expect, interleaved)
            };
            Outcome::Answer {
                slot,
                verdict,
                interleaved,
            }
        }
    }
}

/// Printable form of a kiss code: the four ASCII letters, or hex when not ASCII.
pub fn kiss_name(code: [u8; 4]) -> String {
    if code.iter().all(|b| b.is_ascii_graphic()) {
        String::from_utf8_lossy(&code).into_owned()
    } else {
        format!("0x{:08x}", u32::from_be_bytes(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tachyon::proto::NtpShort;

    const EXPECT: Expect = Expect {
        version: 4,
        request_len: 48,
        allow_unsync: false,
        interleaved: false,
    };

    fn ts(secs: f64) -> NtpTimestamp {
        NtpTimestamp::from_unix(1_700_000_000, 0).add_seconds(secs)
    }

    /// A tracker holding one outstanding request from client 3; its nonce.
    fn setup() -> (Tracker, u64) {
        let mut t = Tracker::new(1024, 99);
        let (slot, nonce, _) = t.alloc(3, 0);
        t.commit(slot, 1);
        (t, nonce)
    }

    fn good_reply(origin: u64) -> Header {
        Header {
            leap: LeapIndicator::NoWarning,
            version: 4,
            mode: Mode::Server,
            stratum: 2,
            poll: 6,
            precision: -20,
            root_delay: NtpShort(10),
            root_dispersion: NtpShort(20),
            reference_id: [127, 0, 0, 1],
            reference_ts: ts(-10.0),
            origin_ts: NtpTimestamp::from_bits(origin),
            receive_ts: ts(0.001),
            transmit_ts: ts(0.001_02),
        }
    }

    fn run(h: &Header, len: usize, expect: &Expect) -> (Outcome, Tracker) {
        let (mut t, _) = setup();
        let mut bytes = vec![0u8; len];
        h.write(&mut bytes);
        let o = classify(&bytes, true, 3, &mut t, expect);
        (o, t)
    }

    fn verdict(o: Outcome) -> Verdict {
        match o {
            Outcome::Answer { verdict, .. } => verdict,
            other => panic!("not an answer: {other:?}"),
        }
    }

    #[test]
    fn good_reply_is_ok() {
        let (_, nonce) = setup();
        let h = good_reply(nonce);
        let (o, t) = run(&h, 48, &EXPECT);
        match verdict(o) {
            Verdict::Ok { t2, t3 } => {
                assert_eq!(t2, h.receive_ts);
                assert!((t3.seconds_since(t2) - 0.000_02).abs() < 1e-9);
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn an_interleaved_reply_echoes_the_second_nonce() {
        use crate::tracker::INTERLEAVED_NONCE;
        let expect = Expect {
            interleaved: true,
            ..EXPECT
        };
        let (mut t, nonce) = setup();
        let mut h = good_reply(nonce ^ INTERLEAVED_NONCE);
        // Its T3 is the reply before's departure: earlier than its T2.
        h.transmit_ts = ts(-1.0);
        match classify(&h.to_bytes(), true, 3, &mut t, &expect) {
            Outcome::Answer {
                verdict: Verdict::Ok { t3, .. },
                interleaved: true,
                ..
            } => assert_eq!(t3, ts(-1.0)),
            other => panic!("{other:?}"),
        }
        // Not asked for: the same reply matches nothing.
        let (mut t, nonce) = setup();
        let h = good_reply(nonce ^ INTERLEAVED_NONCE);
        assert_eq!(
            classify(&h.to_bytes(), true, 3, &mut t, &EXPECT),
            Outcome::Invalid(Invalid::UnknownOrigin)
        );
        // A basic reply in an interleaved run still has T3 >= T2 checked.
        let (mut t, nonce) = setup();
        let mut h = good_reply(nonce);
        h.transmit_ts = ts(-1.0);
        assert!(matches!(
            classify(&h.to_bytes(), true, 3, &mut t, &expect),
            Outcome::Answer {
                verdict: Verdict::Invalid(Invalid::T2AfterT3),
                interleaved: false,
                ..
            }
        ));
    }

    #[test]
    fn wrong_origin_is_unknown() {
        let (_, nonce) = setup();
        let (o, t) = run(&good_reply(nonce ^ 0x1000_0000_0000), 48, &EXPECT);
        assert_eq!(o, Outcome::Invalid(Invalid::UnknownOrigin));
        assert_eq!(t.outstanding(), 1); // the request still waits
    }

    #[test]
    fn second_answer_is_duplicate_and_after_timeout_late() {
        let (mut t, nonce) = setup();
        let bytes = good_reply(nonce).to_bytes();
        assert!(matches!(
            classify(&bytes, true, 3, &mut t, &EXPECT),
            Outcome::Answer { .. }
        ));
        assert_eq!(
            classify(&bytes, true, 3, &mut t, &EXPECT),
            Outcome::Duplicate
        );

        let (mut t, nonce) = setup();
        t.expire_all(|_| {});
        let bytes = good_reply(nonce).to_bytes();
        assert_eq!(classify(&bytes, true, 3, &mut t, &EXPECT), Outcome::Late);
    }

    #[test]
    fn wrong_mode() {
        let (_, nonce) = setup();
        for mode in [Mode::Client, Mode::SymmetricPassive, Mode::Broadcast] {
            let mut h = good_reply(nonce);
            h.mode = mode;
            assert_eq!(
                verdict(run(&h, 48, &EXPECT).0),
                Verdict::Invalid(Invalid::Mode)
            );
        }
    }

    #[test]
    fn version_mismatch() {
        let (_, nonce) = setup();
        let mut h = good_reply(nonce);
        h.version = 3;
        assert_eq!(
            verdict(run(&h, 48, &EXPECT).0),
            Verdict::Invalid(Invalid::Version)
        );
        let v3 = Expect {
            version: 3,
            ..EXPECT
        };
        assert!(matches!(verdict(run(&h, 48, &v3).0), Verdict::Ok { .. }));
    }

    #[test]
    fn longer_than_request() {
        let (_, nonce) = setup();
        let h = good_reply(nonce);
        assert_eq!(
            verdict(run(&h, 68, &EXPECT).0),
            Verdict::Invalid(Invalid::TooLong)
        );
        let long = Expect {
            request_len: 68,
            ..EXPECT
        };
        assert!(matches!(verdict(run(&h, 68, &long).0), Verdict::Ok { .. }));
    }

    #[test]
    fn receive_after_transmit() {
        let (_, nonce) = setup();
        let mut h = good_reply(nonce);
        h.receive_ts = ts(0.002);
        h.transmit_ts = ts(0.001);
        assert_eq!(
            verdict(run(&h, 48, &EXPECT).0),
            Verdict::Invalid(Invalid::T2AfterT3)
        );
        h.receive_ts = NtpTimestamp::ZERO;
        assert_eq!(
            verdict(run(&h, 48, &EXPECT).0),
            Verdict::Invalid(Invalid::ZeroTimestamp)
        );
    }

    #[test]
    fn kod_rate_is_counted_by_code() {
        let (_, nonce) = setup();
        let mut h = good_reply(nonce);
        h.leap = LeapIndicator::Unknown;
        h.stratum = 0;
        h.reference_id = *b"RATE";
        assert_eq!(verdict(run(&h, 48, &EXPECT).0), Verdict::Kod(*b"RATE"));
        // Still a kiss with --allow-unsync: RATE/DENY/RSTR always are.
        let unsync = Expect {
            allow_unsync: true,
            ..EXPECT
        };
        assert_eq!(verdict(run(&h, 48, &unsync).0), Verdict::Kod(*b"RATE"));
        h.reference_id = *b"DENY";
        assert_eq!(verdict(run(&h, 48, &unsync).0), Verdict::Kod(*b"DENY"));
        assert_eq!(kiss_name(*b"RSTR"), "RSTR");
        assert_eq!(kiss_name([0, 0, 0, 1]), "0x00000001");
    }

    #[test]
    fn unsynchronized_needs_allow_unsync() {
        let (_, nonce) = setup();
        let unsync = Expect {
            allow_unsync: true,
            ..EXPECT
        };
        // LI 3 with a normal stratum.
        let mut h = good_reply(nonce);
        h.leap = LeapIndicator::Unknown;
        assert_eq!(
            verdict(run(&h, 48, &EXPECT).0),
            Verdict::Invalid(Invalid::Unsynchronized)
        );
        assert!(matches!(
            verdict(run(&h, 48, &unsync).0),
            Verdict::Unsync { .. }
        ));
        // Stratum 16.
        let mut h = good_reply(nonce);
        h.stratum = 16;
        assert_eq!(
            verdict(run(&h, 48, &EXPECT).0),
            Verdict::Invalid(Invalid::Unsynchronized)
        );
        assert!(matches!(
            verdict(run(&h, 48, &unsync).0),
            Verdict::Unsync { .. }
        ));
        // LI 3, stratum 0, no rejecting kiss: a KoD without the flag, unsync with it.
        let mut h = good_reply(nonce);
        h.leap = LeapIndicator::Unknown;
        h.stratum = 0;
        h.reference_id = [0; 4];
        assert_eq!(verdict(run(&h, 48, &EXPECT).0), Verdict::Kod([0; 4]));
        assert!(matches!(
            verdict(run(&h, 48, &unsync).0),
            Verdict::Unsync { .. }
        ));
        // Stratum above 16 is never valid.
        let mut h = good_reply(nonce);
        h.stratum = 17;
        assert_eq!(
            verdict(run(&h, 48, &unsync).0),
            Verdict::Invalid(Invalid::Stratum)
        );
    }

    #[test]
    fn short_wrong_source_wrong_socket() {
        let (mut t, nonce) = setup();
        let bytes = good_reply(nonce).to_bytes();
        assert_eq!(
            classify(&bytes[..47], true, 3, &mut t, &EXPECT),
            Outcome::Invalid(Invalid::Short)
        );
        assert_eq!(
            classify(&bytes, false, 3, &mut t, &EXPECT),
            Outcome::Invalid(Invalid::WrongSource)
        );
        assert_eq!(t.outstanding(), 1);
        assert_eq!(
            verdict(classify(&bytes, true, 4, &mut t, &EXPECT)),
            Verdict::Invalid(Invalid::WrongSocket)
        );
    }

    #[test]
    fn names_are_unique() {
        let names: std::collections::HashSet<_> = Invalid::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), Invalid::ALL.len());
        for (i, r) in Invalid::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
