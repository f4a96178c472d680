//! One upstream association: when to poll, the request it sends, and whether a
//! reply is a valid sample.
//!
//! Sans-IO: the caller passes the monotonic time (`now`, seconds), chooses the
//! random transmit-timestamp nonce of each request (RFC 9109, NTP data
//! minimization), keeps the real local send time T1, and hands back the reply
//! with its local receive time T4. Both T1 and T4 are on the served time scale.

use std::fmt;
use std::net::IpAddr;

use crate::config::ServerConfig;
use crate::proto::reply::DISPERSION_RATE;
use crate::proto::{Header, LeapIndicator, Mode, NtpTimestamp, HEADER_LEN};

/// Requests in an `iburst`/`burst` burst.
pub const BURST_COUNT: u8 = 8;
/// Seconds between the requests of a burst.
pub const BURST_SPACING: f64 = 2.0;
/// The poll range the protocol allows (log2 s), as the configuration does.
pub const POLL_MIN_LIMIT: i8 = 3;
pub const POLL_MAX_LIMIT: i8 = 17;
/// Upstream root distance (root delay / 2 + root dispersion) above which a
/// reply is refused (RFC 5905 MAXDIST).
pub const MAX_ROOT_DISTANCE: f64 = 1.5;
/// Consecutive `Raise` advices before the poll goes up.
const POLL_RAISE_COUNT: i32 = 3;

/// What the estimator says about the poll interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollAdvice {
    Raise,
    Hold,
    Lower,
}

/// Per-source options, from a `server`/`pool` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceOptions {
    /// A burst of requests at start and whenever the source is unreachable.
    pub iburst: bool,
    /// A burst of requests at every poll.
    pub burst: bool,
    pub prefer: bool,
    /// Polled and reported, never selected.
    pub noselect: bool,
    /// log2 seconds.
    pub minpoll: i8,
    /// log2 seconds.
    pub maxpoll: i8,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            iburst: false,
            burst: false,
            prefer: false,
            noselect: false,
            minpoll: 6,
            maxpoll: 10,
        }
    }
}

impl From<&ServerConfig> for SourceOptions {
    fn from(c: &ServerConfig) -> Self {
        SourceOptions {
            iburst: c.iburst,
            burst: c.burst,
            prefer: c.prefer,
            noselect: c.noselect,
            minpoll: c.minpoll,
            maxpoll: c.maxpoll,
        }
    }
}

/// A Kiss-o'-Death code (RFC 5905 §7.4).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum KissCode {
    /// Slow down.
    Rate,
    /// Access denied: stop.
    Deny,
    /// Access restricted: stop.
    Rstr,
    /// Any other code: the reply is not a sample, nothing else changes.
    Other([u8; 4]),
}

impl KissCode {
    pub fn from_refid(refid: [u8; 4]) -> Self {
        match &refid {
            b"RATE" => KissCode::Rate,
            b"DENY" => KissCode::Deny,
            b"RSTR" => KissCode::Rstr,
            _ => KissCode::Other(refid),
        }
    }

    pub fn as_bytes(self) -> [u8; 4] {
        match self {
            KissCode::Rate => *b"RATE",
            KissCode::Deny => *b"DENY",
            KissCode::Rstr => *b"RSTR",
            KissCode::Other(b) => b,
        }
    }
}

impl fmt::Debug for KissCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for KissCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_bytes() {
            let c = if b.is_ascii_graphic() { b as char } else { '?' };
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// Why a reply gave no sample.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum Reject {
    #[error("shorter than an NTP header")]
    TooShort,
    #[error("mode {0}, not a server reply")]
    NotServerMode(u8),
    #[error("version {0}")]
    BadVersion(u8),
    /// No request outstanding, or the origin timestamp is not its nonce: a
    /// duplicate, a late reply, or a spoof.
    #[error("does not answer the outstanding request")]
    Unexpected,
    #[error("kiss-o'-death {0}")]
    Kiss(KissCode),
    /// LI 3 or stratum 16 and above.
    #[error("server unsynchronized")]
    Unsynchronized,
    #[error("server root distance {0:.3} s too large")]
    RootDistance(f64),
    #[error("zero receive or transmit timestamp")]
    ZeroTimestamp,
    #[error("negative delay {0:.6} s")]
    NegativeDelay(f64),
    #[error("unknown source")]
    UnknownSource,
}

/// One valid measurement (RFC 5905 §8).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// θ: add this to the local clock to agree with the server, seconds.
    pub offset: f64,
    /// δ: round-trip delay, seconds, at least the local precision.
    pub delay: f64,
    /// ε: precision of both clocks plus PHI over the exchange, seconds.
    pub dispersion: f64,
    pub root_delay: f64,
    pub root_dispersion: f64,
    pub stratum: u8,
    pub leap: LeapIndicator,
    pub reference_id: [u8; 4],
    /// Monotonic time of the exchange's midpoint, which the offset refers to.
    pub mono: f64,
    /// Whether the request was part of a burst.
    pub burst: bool,
}

#[derive(Clone, Copy, Debug)]
struct Outstanding {
    nonce: NtpTimestamp,
    burst: bool,
}

/// One upstream address.
#[derive(Clone, Debug)]
pub struct Source {
    addr: IpAddr,
    options: SourceOptions,
    /// 2^-precision of the local clock, seconds.
    local_precision: f64,
    poll: i8,
    /// The smallest poll allowed now: minpoll, raised by RATE kisses.
    min_poll: i8,
    max_poll: i8,
    next_poll: f64,
    last_poll: Option<f64>,
    /// Requests still to send in the current poll (1 normally, up to 8 in a burst).
    burst_left: u8,
    in_burst: bool,
    reach: u8,
    polls: u64,
    outstanding: Option<Outstanding>,
    poll_counter: i32,
    stopped: Option<KissCode>,
    last_kiss: Option<KissCode>,
    /// Header fields of the last valid reply.
    stratum: u8,
    reference_id: [u8; 4],
    leap: LeapIndicator,
    root_delay: f64,
    root_dispersion: f64,
    pub(crate) counters: SourceCounters,
}

/// Per-source packet counters (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceCounters {
    pub sent: u64,
    pub valid: u64,
    pub rejected: u64,
    pub kisses: u64,
}

fn poll_interval(poll: i8) -> f64 {
    2f64.powi(poll as i32)
}

impl Source {
    /// A new association, due for its first poll at `now`. `precision` is the
    /// local clock's (log2 s).
    pub fn new(addr: IpAddr, options: SourceOptions, precision: i8, now: f64) -> Self {
        let min_poll = options.minpoll.clamp(POLL_MIN_LIMIT, POLL_MAX_LIMIT);
        let max_poll = options.maxpoll.clamp(min_poll, POLL_MAX_LIMIT);
        Source {
            addr,
            options,
            local_precision: 2f64.powi(precision as i32),
            poll: min_poll,
            min_poll,
            max_poll,
            next_poll: now,
            last_poll: None,
            burst_left: 0,
            in_burst: false,
            reach: 0,
            polls: 0,
            outstanding: None,
            poll_counter: 0,
            stopped: None,
            last_kiss: None,
            stratum: 0,
            reference_id: [0; 4],
            leap: LeapIndicator::Unknown,
            root_delay: 0.0,
            root_dispersion: 0.0,
            counters: SourceCounters::default(),
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn options(&self) -> &SourceOptions {
        &self.options
    }

    /// When the next request is due (monotonic seconds); infinite once a
    /// DENY/RSTR kiss stopped the association.
    pub fn next_poll_at(&self) -> f64 {
        if self.stopped.is_some() {
            f64::INFINITY
        } else {
            self.next_poll
        }
    }

    pub fn is_due(&self, now: f64) -> bool {
        now >= self.next_poll_at()
    }

    /// The reach register: bit 0 is the latest poll, set when it was answered.
    pub fn reach(&self) -> u8 {
        self.reach
    }

    /// The current poll interval, log2 seconds.
    pub fn poll(&self) -> i8 {
        self.poll
    }

    /// Whether any of the last three polls was answered (RFC 5905 fit test).
    pub fn is_reachable(&self) -> bool {
        self.reach & 0x07 != 0
    }

    /// Whether the source has been polled at least once.
    pub fn has_been_polled(&self) -> bool {
        self.polls > 0
    }

    /// Polls made (a burst counts once).
    pub fn polls(&self) -> u64 {
        self.polls
    }

    /// The DENY/RSTR kiss that stopped this association, if any.
    pub fn stopped(&self) -> Option<KissCode> {
        self.stopped
    }

    pub fn last_kiss(&self) -> Option<KissCode> {
        self.last_kiss
    }

    pub fn stratum(&self) -> u8 {
        self.stratum
    }

    pub fn reference_id(&self) -> [u8; 4] {
        self.reference_id
    }

    pub fn leap(&self) -> LeapIndicator {
        self.leap
    }

    pub fn root_delay(&self) -> f64 {
        self.root_delay
    }

    pub fn root_dispersion(&self) -> f64 {
        self.root_dispersion
    }

    pub fn in_burst(&self) -> bool {
        self.in_burst
    }

    pub fn counters(&self) -> SourceCounters {
        self.counters
    }

    /// Builds the next request (mode 3, version 4, transmit timestamp = the
    /// caller's random `nonce`, every other field zero but poll) and advances
    /// the schedule. Any earlier request still unanswered is abandoned: only
    /// one is ever outstanding.
    pub fn make_request(&mut self, now: f64, nonce: NtpTimestamp) -> [u8; HEADER_LEN] {
        if self.burst_left == 0 {
            // A new poll: age the reach register.
            if self.polls > 0 {
                self.reach <<= 1;
                if self.reach == 0 && self.poll < self.max_poll {
                    // Unreachable: back off while bursting for it.
                    self.poll += 1;
                }
            }
            self.polls += 1;
            let burst =
                (self.options.iburst && self.reach == 0) || (self.options.burst && self.reach != 0);
            self.burst_left = if burst { BURST_COUNT } else { 1 };
            self.in_burst = burst;
        }
        self.burst_left -= 1;
        self.last_poll = Some(now);
        self.next_poll = if self.burst_left > 0 {
            now + BURST_SPACING
        } else {
            now + poll_interval(self.poll)
        };
        self.outstanding = Some(Outstanding {
            nonce,
            burst: self.in_burst,
        });
        self.counters.sent += 1;
        if self.burst_left == 0 {
            self.in_burst = false;
        }
        Header {
            leap: LeapIndicator::NoWarning,
            version: 4,
            mode: Mode::Client,
            poll: self.poll,
            transmit_ts: nonce,
            ..Header::default()
        }
        .to_bytes()
    }

    /// Forgets the outstanding request (after a clock step its T1 is on the old
    /// time scale, so its reply would be a false sample).
    pub fn abandon_outstanding(&mut self) {
        self.outstanding = None;
    }

    /// Validates a reply and turns it into a sample.
    ///
    /// `t1` is the local time the request was sent, `t4` the local time the
    /// reply was received, both on the served time scale; `now` the monotonic
    /// time of reception. The caller must have checked that the reply came
    /// from [`Source::addr`].
    pub fn handle_reply(
        &mut self,
        bytes: &[u8],
        t1: NtpTimestamp,
        t4: NtpTimestamp,
        now: f64,
    ) -> Result<Sample, Reject> {
        let result = self.check_reply(bytes, t1, t4, now);
        match &result {
            Ok(_) => self.counters.valid += 1,
            Err(Reject::Kiss(_)) => self.counters.kisses += 1,
            Err(_) => self.counters.rejected += 1,
        }
        result
    }

    fn check_reply(
        &mut self,
        bytes: &[u8],
        t1: NtpTimestamp,
        t4: NtpTimestamp,
        now: f64,
    ) -> Result<Sample, Reject> {
        let header = Header::parse(bytes).ok_or(Reject::TooShort)?;
        if header.mode != Mode::Server {
            return Err(Reject::NotServerMode(header.mode as u8));
        }
        let outstanding = match self.outstanding {
            Some(o) if o.nonce == header.origin_ts => o,
            _ => return Err(Reject::Unexpected),
        };
        // The reply answers our request: whatever it says, no other may.
        self.outstanding = None;
        if !(1..=4).contains(&header.version) {
            return Err(Reject::BadVersion(header.version));
        }
        if header.stratum == 0 {
            let code = KissCode::from_refid(header.reference_id);
            self.handle_kiss(code, header.poll, now);
            return Err(Reject::Kiss(code));
        }
        if header.leap == LeapIndicator::Unknown || header.stratum > 15 {
            return Err(Reject::Unsynchronized);
        }
        let root_delay = header.root_delay.to_seconds();
        let root_dispersion = header.root_dispersion.to_seconds();
        let root_distance = root_delay / 2.0 + root_dispersion;
        if root_distance >= MAX_ROOT_DISTANCE {
            return Err(Reject::RootDistance(root_distance));
        }
        if header.receive_ts.is_zero() || header.transmit_ts.is_zero() {
            return Err(Reject::ZeroTimestamp);
        }
        let (t2, t3) = (header.receive_ts, header.transmit_ts);
        let offset = (t2.seconds_since(t1) + t3.seconds_since(t4)) / 2.0;
        let round_trip = t4.seconds_since(t1);
        let mut delay = round_trip - t3.seconds_since(t2);
        let precision = self.local_precision + 2f64.powi(header.precision as i32);
        if delay < -precision {
            return Err(Reject::NegativeDelay(delay));
        }
        delay = delay.max(self.local_precision);
        let dispersion = precision + DISPERSION_RATE * round_trip.max(0.0);

        self.reach |= 1;
        self.stratum = header.stratum;
        self.reference_id = header.reference_id;
        self.leap = header.leap;
        self.root_delay = root_delay;
        self.root_dispersion = root_dispersion;
        self.last_kiss = None;
        Ok(Sample {
            offset,
            delay,
            dispersion,
            root_delay,
            root_dispersion,
            stratum: header.stratum,
            leap: header.leap,
            reference_id: header.reference_id,
            mono: now - round_trip.max(0.0) / 2.0,
            burst: outstanding.burst,
        })
    }

    fn handle_kiss(&mut self, code: KissCode, server_poll: i8, now: f64) {
        self.last_kiss = Some(code);
        match code {
            KissCode::Rate => {
                // At least double the interval, and at least what the server
                // asks, but never beyond the configured maxpoll: one hostile
                // or broken server must not stretch our polling to a day and
                // leave us unsynchronized.
                let mut poll = self.poll.saturating_add(1);
                if (POLL_MIN_LIMIT..=POLL_MAX_LIMIT).contains(&server_poll) {
                    poll = poll.max(server_poll);
                }
                let poll = poll.min(self.max_poll);
                self.poll = poll;
                self.min_poll = self.min_poll.max(poll);
                self.burst_left = 0;
                self.in_burst = false;
                self.poll_counter = 0;
                let from = self.last_poll.unwrap_or(now);
                self.next_poll = self.next_poll.max(from + poll_interval(poll));
                log::warn!(
                    "source {}: RATE kiss-o'-death, poll interval now {} s",
                    self.addr,
                    poll_interval(poll)
                );
            }
            KissCode::Deny | KissCode::Rstr => {
                self.stopped = Some(code);
                self.burst_left = 0;
                self.in_burst = false;
                log::warn!(
                    "source {}: {code} kiss-o'-death, no longer polled",
                    self.addr
                );
            }
            KissCode::Other(_) => {
                log::info!("source {}: kiss-o'-death {code} ignored", self.addr);
            }
        }
    }

    /// Poll adaptation. `Raise` (the source is stable enough for a longer
    /// interval) counts up and raises the poll after three in a row, like
    /// ntpd's jiggle counter; `Lower` (a large offset surprise, or more
    /// wander than the interval allows) lowers it at once. Always within
    /// [minpoll, maxpoll] (minpoll raised by RATE kisses).
    pub fn adapt_poll(&mut self, advice: PollAdvice) {
        match advice {
            PollAdvice::Raise => {
                self.poll_counter += 1;
                if self.poll_counter >= POLL_RAISE_COUNT {
                    self.poll_counter = 0;
                    if self.poll < self.max_poll {
                        self.poll += 1;
                        self.reschedule();
                    }
                }
            }
            PollAdvice::Hold => self.poll_counter = 0,
            PollAdvice::Lower => {
                self.poll_counter = 0;
                if self.poll > self.min_poll {
                    self.poll -= 1;
                    self.reschedule();
                }
            }
        }
    }

    /// Moves the next poll to one poll interval after the last, unless a
    /// burst is in progress.
    fn reschedule(&mut self) {
        if self.burst_left == 0 {
            if let Some(last) = self.last_poll {
                self.next_poll = last + poll_interval(self.poll);
            }
        }
    }
}

/// Builds a server reply for tests and the simulation.
#[cfg(test)]
pub(crate) fn test_reply(
    request: &[u8],
    stratum: u8,
    t2: NtpTimestamp,
    t3: NtpTimestamp,
) -> [u8; HEADER_LEN] {
    use crate::proto::NtpShort;
    let req = Header::parse(request).expect("request");
    Header {
        leap: LeapIndicator::NoWarning,
        version: req.version,
        mode: Mode::Server,
        stratum,
        poll: req.poll,
        precision: -20,
        root_delay: NtpShort::from_seconds(0.0),
        root_dispersion: NtpShort::from_seconds(0.0001),
        reference_id: *b"GPS\0",
        reference_ts: t2.add_seconds(-10.0),
        origin_ts: req.transmit_ts,
        receive_ts: t2,
        transmit_ts: t3,
    }
    .to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::NtpShort;

    const T: u64 = 3_900_000_000u64 << 32;

    fn ts(seconds: f64) -> NtpTimestamp {
        NtpTimestamp(T).add_seconds(seconds)
    }

    fn source(options: SourceOptions) -> Source {
        Source::new("192.0.2.1".parse().unwrap(), options, -20, 0.0)
    }

    fn iburst() -> SourceOptions {
        SourceOptions {
            iburst: true,
            ..SourceOptions::default()
        }
    }

    #[test]
    fn request_fields() {
        let mut s = source(SourceOptions::default());
        let nonce = NtpTimestamp(0x1234_5678_9abc_def0);
        let bytes = s.make_request(0.0, nonce);
        let h = Header::parse(&bytes).unwrap();
        assert_eq!((h.mode, h.version, h.poll), (Mode::Client, 4, 6));
        assert_eq!(h.transmit_ts, nonce);
        assert_eq!(h.origin_ts, NtpTimestamp::ZERO);
        assert_eq!(h.receive_ts, NtpTimestamp::ZERO);
        assert_eq!(h.reference_ts, NtpTimestamp::ZERO);
        assert_eq!(&bytes[1..2], &[0]);
        assert_eq!(s.next_poll_at(), 64.0);
    }

    #[test]
    fn offset_and_delay_rfc5905() {
        let mut s = source(SourceOptions::default());
        let nonce = NtpTimestamp(42);
        let req = s.make_request(0.0, nonce);
        // Local clock 5 ms behind the server; 10 ms each way; 1 ms in the server.
        let t1 = ts(0.0);
        let t2 = ts(0.010 + 0.005);
        let t3 = ts(0.011 + 0.005);
        let t4 = ts(0.021);
        let reply = test_reply(&req, 1, t2, t3);
        let sample = s.handle_reply(&reply, t1, t4, 100.0).unwrap();
        assert!((sample.offset - 0.005).abs() < 1e-9, "{sample:?}");
        assert!((sample.delay - 0.020).abs() < 1e-9);
        assert!((sample.mono - (100.0 - 0.0105)).abs() < 1e-9);
        assert_eq!(s.reach(), 1);
        assert_eq!(s.stratum(), 1);
        // A duplicate of the same reply is refused.
        assert_eq!(
            s.handle_reply(&reply, t1, t4, 100.0),
            Err(Reject::Unexpected)
        );
    }

    #[test]
    fn validation() {
        let t1 = ts(0.0);
        let t4 = ts(0.002);
        let good = |s: &mut Source| {
            let req = s.make_request(0.0, NtpTimestamp(7));
            test_reply(&req, 2, ts(0.001), ts(0.001))
        };
        let check = |edit: &dyn Fn(&mut Header), expect: Reject| {
            let mut s = source(SourceOptions::default());
            let mut h = Header::parse(&good(&mut s)).unwrap();
            edit(&mut h);
            assert_eq!(s.handle_reply(&h.to_bytes(), t1, t4, 1.0), Err(expect));
            assert_eq!(s.reach(), 0);
        };
        check(&|h| h.mode = Mode::Client, Reject::NotServerMode(3));
        check(&|h| h.origin_ts = NtpTimestamp(8), Reject::Unexpected);
        check(&|h| h.version = 5, Reject::BadVersion(5));
        check(&|h| h.leap = LeapIndicator::Unknown, Reject::Unsynchronized);
        check(&|h| h.stratum = 16, Reject::Unsynchronized);
        check(
            &|h| h.root_dispersion = NtpShort::from_seconds(1.6),
            Reject::RootDistance(NtpShort::from_seconds(1.6).to_seconds()),
        );
        check(
            &|h| h.receive_ts = NtpTimestamp::ZERO,
            Reject::ZeroTimestamp,
        );
        let mut s = source(SourceOptions::default());
        let mut h = Header::parse(&good(&mut s)).unwrap();
        h.receive_ts = ts(0.0);
        h.transmit_ts = ts(0.004);
        let r = s.handle_reply(&h.to_bytes(), t1, t4, 1.0);
        assert!(
            matches!(r, Err(Reject::NegativeDelay(d)) if (d + 0.002).abs() < 1e-6),
            "{r:?}"
        );
        // Too short.
        let mut s = source(SourceOptions::default());
        let r = good(&mut s);
        assert_eq!(s.handle_reply(&r[..47], t1, t4, 1.0), Err(Reject::TooShort));
        // Nothing outstanding.
        let mut s = source(SourceOptions::default());
        let r = test_reply(&[0x23; 48], 2, ts(0.001), ts(0.001));
        assert_eq!(s.handle_reply(&r, t1, t4, 1.0), Err(Reject::Unexpected));
        // A tiny negative delay is rounding: clamped to the precision.
        let mut s = source(SourceOptions::default());
        let req = s.make_request(0.0, NtpTimestamp(9));
        let r = test_reply(&req, 2, ts(0.0), ts(0.0010000005));
        let sample = s.handle_reply(&r, ts(0.0), ts(0.001), 1.0).unwrap();
        assert_eq!(sample.delay, 2f64.powi(-20));
    }

    #[test]
    fn only_the_latest_request_is_answerable() {
        let mut s = source(SourceOptions::default());
        let first = s.make_request(0.0, NtpTimestamp(1));
        let _second = s.make_request(64.0, NtpTimestamp(2));
        let late = test_reply(&first, 2, ts(0.001), ts(0.001));
        assert_eq!(
            s.handle_reply(&late, ts(0.0), ts(0.002), 64.5),
            Err(Reject::Unexpected)
        );
    }

    #[test]
    fn iburst_at_start_then_poll_interval() {
        let mut s = source(iburst());
        let mut times = Vec::new();
        let mut now = 0.0;
        for i in 0..10 {
            assert!(s.is_due(now));
            let req = s.make_request(now, NtpTimestamp(i + 1));
            times.push(now);
            // Answer every request.
            let r = test_reply(&req, 1, ts(0.001), ts(0.001));
            s.handle_reply(&r, ts(0.0), ts(0.002), now + 0.002).unwrap();
            now = s.next_poll_at();
        }
        assert_eq!(
            times,
            [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 78.0, 142.0]
        );
        assert_eq!(s.reach(), 0b111);
    }

    #[test]
    fn unreachable_source_bursts_again_and_backs_off() {
        let mut s = source(iburst());
        let mut now = 0.0;
        let mut requests = 0;
        // Answered once (the first poll), then silent.
        let req = s.make_request(now, NtpTimestamp(1));
        let r = test_reply(&req, 1, ts(0.001), ts(0.001));
        s.handle_reply(&r, ts(0.0), ts(0.002), 0.01).unwrap();
        let mut bursts = Vec::new();
        while now < 20_000.0 {
            now = s.next_poll_at();
            let was_in_burst = s.in_burst();
            s.make_request(now, NtpTimestamp(100 + requests));
            if s.in_burst() && !was_in_burst {
                bursts.push((now, s.poll()));
            }
            requests += 1;
        }
        assert_eq!(s.reach(), 0);
        // The first burst comes once 8 polls went unanswered (the start burst
        // itself is the first poll), and the poll backs off toward maxpoll.
        assert!(!bursts.is_empty(), "no burst when unreachable");
        assert!(bursts.windows(2).all(|w| w[1].1 >= w[0].1));
        assert_eq!(bursts.last().unwrap().1, 10);
    }

    #[test]
    fn rate_kiss_backs_off() {
        let mut s = source(SourceOptions::default());
        let req = s.make_request(0.0, NtpTimestamp(5));
        let mut h = Header::parse(&test_reply(&req, 1, ts(0.001), ts(0.001))).unwrap();
        h.stratum = 0;
        h.leap = LeapIndicator::Unknown;
        h.reference_id = *b"RATE";
        h.poll = 9;
        assert_eq!(
            s.handle_reply(&h.to_bytes(), ts(0.0), ts(0.002), 0.01),
            Err(Reject::Kiss(KissCode::Rate))
        );
        assert_eq!(s.poll(), 9);
        assert_eq!(s.next_poll_at(), 512.0);
        assert_eq!(s.reach(), 0);
        // Poll adaptation can no longer go below it.
        for _ in 0..100 {
            s.adapt_poll(PollAdvice::Lower);
        }
        assert_eq!(s.poll(), 9);
        // Without a server poll: at least doubled.
        let mut s = source(SourceOptions::default());
        let req = s.make_request(0.0, NtpTimestamp(5));
        h.origin_ts = Header::parse(&req).unwrap().transmit_ts;
        h.poll = 0;
        let _ = s.handle_reply(&h.to_bytes(), ts(0.0), ts(0.002), 0.01);
        assert_eq!(s.poll(), 7);
    }

    #[test]
    fn a_rate_kiss_never_takes_the_poll_beyond_maxpoll() {
        let mut s = source(SourceOptions {
            maxpoll: 10,
            ..SourceOptions::default()
        });
        let req = s.make_request(0.0, NtpTimestamp(5));
        let mut h = Header::parse(&test_reply(&req, 1, ts(0.001), ts(0.001))).unwrap();
        h.stratum = 0;
        h.reference_id = *b"RATE";
        h.poll = 17; // 36 hours
        let _ = s.handle_reply(&h.to_bytes(), ts(0.0), ts(0.002), 0.01);
        assert_eq!(s.poll(), 10);
        assert_eq!(s.next_poll_at(), 1024.0);
        for _ in 0..10 {
            s.adapt_poll(PollAdvice::Raise);
        }
        assert_eq!(s.poll(), 10);
    }

    #[test]
    fn deny_and_rstr_stop_polling() {
        for code in [*b"DENY", *b"RSTR"] {
            let mut s = source(iburst());
            let req = s.make_request(0.0, NtpTimestamp(5));
            let mut h = Header::parse(&test_reply(&req, 1, ts(0.001), ts(0.001))).unwrap();
            h.stratum = 0;
            h.reference_id = code;
            let r = s.handle_reply(&h.to_bytes(), ts(0.0), ts(0.002), 0.01);
            assert_eq!(r, Err(Reject::Kiss(KissCode::from_refid(code))));
            assert_eq!(s.next_poll_at(), f64::INFINITY);
            assert!(!s.is_due(1e9));
            assert_eq!(s.stopped(), Some(KissCode::from_refid(code)));
        }
    }

    #[test]
    fn spoofed_kiss_is_ignored() {
        let mut s = source(SourceOptions::default());
        let req = s.make_request(0.0, NtpTimestamp(5));
        let mut h = Header::parse(&test_reply(&req, 1, ts(0.001), ts(0.001))).unwrap();
        h.stratum = 0;
        h.reference_id = *b"DENY";
        h.origin_ts = NtpTimestamp(6);
        assert_eq!(
            s.handle_reply(&h.to_bytes(), ts(0.0), ts(0.002), 0.01),
            Err(Reject::Unexpected)
        );
        assert_eq!(s.stopped(), None);
    }

    #[test]
    fn poll_adaptation_within_bounds() {
        let mut s = source(SourceOptions {
            minpoll: 4,
            maxpoll: 6,
            ..SourceOptions::default()
        });
        s.make_request(0.0, NtpTimestamp(1));
        s.adapt_poll(PollAdvice::Raise);
        s.adapt_poll(PollAdvice::Raise);
        s.adapt_poll(PollAdvice::Hold);
        s.adapt_poll(PollAdvice::Raise);
        s.adapt_poll(PollAdvice::Raise);
        assert_eq!(s.poll(), 4);
        s.adapt_poll(PollAdvice::Raise);
        assert_eq!(s.poll(), 5);
        for _ in 0..100 {
            s.adapt_poll(PollAdvice::Raise);
        }
        assert_eq!(s.poll(), 6);
        assert_eq!(s.next_poll_at(), 64.0);
        s.adapt_poll(PollAdvice::Lower);
        assert_eq!(s.poll(), 5);
        for _ in 0..100 {
            s.adapt_poll(PollAdvice::Lower);
        }
        assert_eq!(s.poll(), 4);
        assert_eq!(s.next_poll_at(), 16.0);
    }
}
