//! The per-packet path shared by every I/O backend: access decision, reply rules,
//! timestamps, counters. It knows nothing of sockets, so a kernel-bypass backend
//! can reuse it unchanged.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::clock::system_unix_ns;
use crate::config::RestrictFlags;
use crate::proto::control::parse_control_request;
use crate::proto::reply::set_transmit;
use crate::proto::{parse_client_request, respond, ReplyAction};
use crate::server::access::ratelimit::LeakRng;
use crate::server::access::ratelimit::Verdict;
use crate::server::access::{decide_access, AccessControl, SharedAccess};
use crate::server::queries::{self, ControlQueries};
use crate::server::stats::{Outcome, WorkerStats};
use crate::state::{ServerState, StateReader};

/// Requests from this port may come from an NTPv1 peer rather than a client.
const NTP_PORT: u16 = 123;

pub struct Responder {
    state: StateReader,
    shared_access: Arc<SharedAccess>,
    access_generation: u64,
    access: AccessControl,
    leak: LeakRng,
    stats: Arc<WorkerStats>,
    snapshot: ServerState,
    batch_started: std::time::Instant,
    /// What mode 6 queries read; none: they are refused.
    queries: Option<Arc<dyn ControlQueries>>,
}

impl Responder {
    pub fn new(
        state: StateReader,
        shared_access: Arc<SharedAccess>,
        stats: Arc<WorkerStats>,
    ) -> Self {
        let snapshot = state.read();
        let access_generation = shared_access.generation();
        let access = shared_access.current();
        let seed = Arc::as_ptr(&stats) as u64 ^ crate::clock::system_unix_ns() as u64;
        Responder {
            state,
            shared_access,
            access_generation,
            access,
            leak: LeakRng::new(seed),
            stats,
            snapshot,
            batch_started: std::time::Instant::now(),
            queries: None,
        }
    }

    /// Answers mode 6 queries from `queries` (where `restrict` allows them).
    pub fn with_queries(mut self, queries: Option<Arc<dyn ControlQueries>>) -> Self {
        self.queries = queries;
        self
    }

    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Takes a fresh copy of the server state; called once per batch.
    #[inline]
    pub fn begin_batch(&mut self) {
        self.batch_started = std::time::Instant::now();
        self.snapshot = self.state.read();
        let generation = self.shared_access.generation();
        if generation != self.access_generation {
            self.access = self.shared_access.current();
            self.access_generation = generation;
        }
        self.stats.batches.bump();
    }

    /// Records the size of the batch begun by [`Responder::begin_batch`] and the
    /// time spent on it.
    #[inline]
    pub fn end_batch(&mut self, datagrams: usize) {
        self.stats.batch_size.record(datagrams as u64);
        self.stats
            .busy_ns
            .add(self.batch_started.elapsed().as_nanos() as u64);
    }

    /// Counts a datagram that never reached [`Responder::handle`] (oversized,
    /// or no reply slot free).
    pub fn count_unhandled(&self, peer: SocketAddr, first_byte: u8, outcome: Outcome) {
        self.stats.count(peer.is_ipv6(), first_byte, outcome);
    }

    /// Handles one datagram. On `Some(reply)`, `out[..reply.len]` is the reply
    /// to send to `peer`; it still needs its transmit timestamp, written by
    /// [`Responder::stamp_transmit`] just before the reply is handed to the
    /// kernel (see `server::io::departure`).
    ///
    /// The datagram is checked in full before access control sees it, so
    /// garbage and requests that would never be answered (other modes, bad
    /// versions, malformed extension fields) are never charged to the rate
    /// limit of the address they claim to come from.
    #[inline]
    pub fn handle(
        &mut self,
        request: &[u8],
        peer: SocketAddr,
        rx_unix_ns: Option<i64>,
        out: &mut [u8],
    ) -> Option<Reply> {
        let stats = &*self.stats;
        stats.bytes_in.add(request.len() as u64);
        let ipv6 = peer.is_ipv6();
        let first_byte = request.first().copied().unwrap_or(0);
        let parsed = match parse_client_request(request, peer.port() == NTP_PORT) {
            Ok(parsed) => parsed,
            Err(reason) => {
                stats.count(ipv6, first_byte, Outcome::from_drop(reason));
                return None;
            }
        };
        let rx_ns = match rx_unix_ns {
            Some(ns) => ns,
            None => {
                stats.rx_stamp_missing.bump();
                system_unix_ns()
            }
        };
        let access = decide_access(&self.access, &mut self.leak, stats, peer.ip(), rx_ns);
        let received = self.snapshot.correction.served_timestamp(rx_ns);
        let (len, kind) = match respond(&parsed, received, &self.snapshot.system, access, out) {
            ReplyAction::Reply { len } => (len, ReplyKind::Answer),
            ReplyAction::Kod { len } => (len, ReplyKind::Kod),
            ReplyAction::Drop(reason) => {
                stats.count(ipv6, first_byte, Outcome::from_drop(reason));
                return None;
            }
        };
        let outcome = match kind {
            ReplyKind::Answer => Outcome::Answered,
            ReplyKind::Kod => Outcome::Kod,
        };
        stats.count(ipv6, first_byte, outcome);
        stats.bytes_out.add(len as u64);
        Some(Reply { len, rx_ns, kind })
    }

    /// Handles a mode 6 query (ntpq): the datagrams of the answer, none when
    /// it is malformed, from an address `restrict ... noquery` (or
    /// `ignore`) covers, or over the rate limit of a `limited` one. Not the
    /// hot path: answers are built on the heap and sent as they come.
    pub fn handle_query(&mut self, request: &[u8], peer: SocketAddr, rx_ns: i64) -> Vec<Vec<u8>> {
        let stats = &*self.stats;
        stats.bytes_in.add(request.len() as u64);
        let ipv6 = peer.is_ipv6();
        let first_byte = request.first().copied().unwrap_or(0);
        let req = match parse_control_request(request) {
            Ok(req) => req,
            Err(reason) => {
                stats.count(ipv6, first_byte, Outcome::from_drop(reason));
                return Vec::new();
            }
        };
        // Where no rule says anything, only the host itself may ask: an
        // answer is many times its query, and must never be an amplifier
        // for whoever forges a source address.
        let rule = self.access.restrict.rule_for(peer.ip());
        let flags = rule.unwrap_or_default();
        let unlisted = rule.is_none() && !peer.ip().to_canonical().is_loopback();
        let refused = if flags.contains(RestrictFlags::IGNORE) {
            Some(Outcome::Denied)
        } else if flags.contains(RestrictFlags::NOQUERY) || unlisted || self.queries.is_none() {
            Some(Outcome::QueryRefused)
        } else if flags.contains(RestrictFlags::LIMITED)
            && self.access.limiter.check(peer.ip(), rx_ns, false) != Verdict::Allow
        {
            Some(Outcome::RateLimited)
        } else {
            None
        };
        let (Some(queries), None) = (&self.queries, refused) else {
            stats.count(ipv6, first_byte, refused.unwrap_or(Outcome::QueryRefused));
            return Vec::new();
        };
        let answer = queries::answer(&req, queries.as_ref());
        stats.count(ipv6, first_byte, Outcome::Query);
        stats
            .bytes_out
            .add(answer.iter().map(|d| d.len() as u64).sum());
        answer
    }

    /// Writes the transmit timestamp of a reply built by [`Responder::handle`]
    /// from the request received at `rx_ns`: `tx_ns` is when the reply
    /// leaves, on the system clock, served through the same clock correction
    /// as its receive timestamp.
    #[inline]
    pub fn stamp_transmit(&self, reply: &mut [u8], rx_ns: i64, tx_ns: i64) {
        set_transmit(reply, self.snapshot.correction.served_timestamp(tx_ns));
        self.stats
            .response_time
            .record(tx_ns.saturating_sub(rx_ns).max(0) as u64);
    }
}

/// What kind of reply [`Responder::handle`] built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// Time for the client.
    Answer,
    /// A RATE Kiss-o'-Death: the client is over its rate.
    Kod,
}

/// A reply built by [`Responder::handle`]; its transmit timestamp is still
/// to be written, at its departure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Its length in the output buffer.
    pub len: usize,
    /// When its request was received (system clock, Unix ns).
    pub rx_ns: i64,
    pub kind: ReplyKind,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::server::access::ratelimit::RateLimiter;
    use crate::server::access::restrict::RestrictTable;
    use crate::state::shared_state;

    /// A responder under `restrict default kod limited` with the given limits.
    fn limited(ratelimit: &str) -> Responder {
        let config = Config::parse(
            &format!("restrict default kod limited\nratelimit {ratelimit}\n"),
            "test.conf",
        )
        .unwrap();
        let access = AccessControl {
            restrict: Arc::new(RestrictTable::new(&config.restrict)),
            limiter: Arc::new(RateLimiter::new(config.ratelimit)),
        };
        let (_publisher, reader) = shared_state(ServerState::unsynchronized(-20));
        Responder::new(
            reader,
            SharedAccess::new(access),
            Arc::new(WorkerStats::default()),
        )
    }

    fn client_request() -> [u8; 48] {
        let mut r = [0u8; 48];
        r[0] = 0x23;
        r
    }

    #[test]
    fn garbage_is_not_charged_to_the_address_it_claims() {
        let mut responder = limited("interval 3 burst 1 leak 8");
        let victim: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let mut out = [0u8; 64];
        let mode7 = [0x17u8, 0x00, 0x03, 0x2a, 0, 0, 0, 0];
        let mut mode6 = [0u8; 48];
        mode6[0] = 0x26;
        let t = 1_000_000_000_000i64;
        for i in 0..200 {
            let junk: &[u8] = match i % 3 {
                0 => &mode7,
                1 => &mode6,
                _ => &[0x23],
            };
            assert!(responder.handle(junk, victim, Some(t), &mut out).is_none());
        }
        // The victim's one-request burst is still there.
        let reply = responder.handle(&client_request(), victim, Some(t), &mut out);
        assert_eq!(reply.map(|r| r.kind), Some(ReplyKind::Answer));
        let stats = responder.stats();
        assert_eq!(stats.outcome_total(Outcome::RateLimited), 0);
        assert_eq!(stats.outcome_total(Outcome::Kod), 0);
        assert_eq!(stats.rate_limit_leaked.get(), 0);
        assert_eq!(stats.outcome_total(Outcome::UnsupportedMode), 67);
        // mode 7 requests (8 bytes) are shorter than an NTP header.
        assert_eq!(stats.outcome_total(Outcome::TooShort), 133);
    }

    #[test]
    fn a_kod_carries_receive_and_transmit_timestamps() {
        let mut responder = limited("interval 3 burst 1 leak 8");
        let client: SocketAddr = "192.0.2.8:40000".parse().unwrap();
        let mut out = [0u8; 64];
        let t = 1_000_000_000_000i64;
        assert!(responder
            .handle(&client_request(), client, Some(t), &mut out)
            .is_some());
        let reply = responder
            .handle(&client_request(), client, Some(t + 1000), &mut out)
            .expect("a KoD");
        assert_eq!(reply.kind, ReplyKind::Kod);
        responder.stamp_transmit(&mut out[..reply.len], reply.rx_ns, t + 5000);
        let h = crate::proto::Header::parse(&out).unwrap();
        assert_eq!(&h.reference_id, b"RATE");
        assert!(!h.receive_ts.is_zero() && !h.transmit_ts.is_zero());
        assert!(h.transmit_ts > h.receive_ts);
    }
}
