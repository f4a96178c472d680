//! Per-worker counters and histograms. Each worker owns its own set and is its
//! only writer, so a bump is a plain load and store (no locked instruction, no
//! shared cache line); readers (metrics, logs, tests) sum over workers.

use std::sync::Arc;

use crate::proto::DropReason;
use crate::telemetry::histogram::{Histogram, Snapshot};
use crate::telemetry::signed::{SignedBounds, SignedHistogram, SignedSnapshot};
pub use crate::telemetry::Counter;

/// What became of a received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Answered = 0,
    Kod,
    RateLimited,
    Denied,
    TooShort,
    BadVersion,
    UnsupportedMode,
    BadExtension,
    /// Larger than a receive buffer.
    Truncated,
    /// No reply slot free: the worker was overloaded.
    Overload,
    /// Sent to a broadcast or multicast address: not answered.
    NotUnicast,
    /// A mode 6 query (ntpq) answered.
    Query,
    /// A mode 6 query from an address `restrict ... noquery` covers.
    QueryRefused,
    /// A caller bug (reply buffer too small); should stay 0.
    Internal,
}

pub const OUTCOMES: [Outcome; 14] = [
    Outcome::Answered,
    Outcome::Kod,
    Outcome::RateLimited,
    Outcome::Denied,
    Outcome::TooShort,
    Outcome::BadVersion,
    Outcome::UnsupportedMode,
    Outcome::BadExtension,
    Outcome::Truncated,
    Outcome::Overload,
    Outcome::NotUnicast,
    Outcome::Query,
    Outcome::QueryRefused,
    Outcome::Internal,
];

impl Outcome {
    /// The `outcome` label in metrics and the word in log summaries.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Kod => "kod",
            Outcome::RateLimited => "rate_limited",
            Outcome::Denied => "denied",
            Outcome::TooShort => "too_short",
            Outcome::BadVersion => "bad_version",
            Outcome::UnsupportedMode => "unsupported_mode",
            Outcome::BadExtension => "malformed",
            Outcome::Truncated => "oversized",
            Outcome::Overload => "overload",
            Outcome::NotUnicast => "not_unicast",
            Outcome::Query => "query",
            Outcome::QueryRefused => "query_refused",
            Outcome::Internal => "internal_error",
        }
    }

    pub fn from_drop(reason: DropReason) -> Outcome {
        match reason {
            DropReason::TooShort => Outcome::TooShort,
            DropReason::BadVersion => Outcome::BadVersion,
            DropReason::UnsupportedMode(_) => Outcome::UnsupportedMode,
            DropReason::BadTrailer => Outcome::BadExtension,
            DropReason::Denied => Outcome::Denied,
            DropReason::RateLimited => Outcome::RateLimited,
            DropReason::BufferTooSmall => Outcome::Internal,
        }
    }
}

/// IP family index: 0 for IPv4, 1 for IPv6.
pub const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];

/// `le` bounds of the server processing time histogram, in ns (1 µs .. 100 ms).
pub static RESPONSE_TIME_BOUNDS_NS: [u64; 16] = [
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
];

/// `le` bounds of the batch size histogram (datagrams per wake-up).
pub static BATCH_SIZE_BOUNDS: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];

/// Where a reply's transmit timestamp came from, once it had left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StampSource {
    /// The kernel's software stamp, as the driver got the reply.
    Kernel = 0,
    /// The NIC's stamp.
    Hardware,
    /// None came (transmit timestamps off or unavailable, or lost).
    None,
}

pub const STAMP_SOURCES: [StampSource; 3] = [
    StampSource::Kernel,
    StampSource::Hardware,
    StampSource::None,
];

impl StampSource {
    /// The `source` label in metrics.
    pub fn label(self) -> &'static str {
        match self {
            StampSource::Kernel => "kernel",
            StampSource::Hardware => "hardware",
            StampSource::None => "none",
        }
    }
}

static T3_ERROR_BELOW: [u64; 9] = [
    499, 999, 1_999, 4_999, 9_999, 19_999, 99_999, 999_999, 9_999_999,
];
static T3_ERROR_ABOVE: [u64; 13] = [
    0,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    1_000_000,
    5_000_000,
    10_000_000,
    100_000_000,
];

/// `le` bounds of the transmit timestamp error histogram, in ns: -10 ms ..
/// 100 ms, finest around zero.
pub static T3_ERROR_BOUNDS_NS: SignedBounds = SignedBounds {
    negative: &T3_ERROR_BELOW,
    positive: &T3_ERROR_ABOVE,
};

/// What the interleaved mode did (RFC 9769), per worker.
#[derive(Default)]
pub struct XleaveCounters {
    /// Replies in the interleaved mode.
    pub interleaved: Counter,
    /// Requests that asked for it and were answered in the basic mode:
    /// their pair was not kept (the client's first request in the mode),
    /// was replaced, or had been taken.
    pub missed: Counter,
    /// Pairs kept, and of those, kept in place of another.
    pub kept: Counter,
    pub replaced: Counter,
    /// Pairs not kept: the same receive stamp twice, a reply that left more
    /// than 67 ms after its request arrived, a busy bucket.
    pub not_kept: Counter,
    /// Pairs removed: a duplicate, or the table emptied after a clock step.
    pub removed: Counter,
}

/// Counters of one worker, aligned so that two workers never share a cache line.
#[repr(align(128))]
pub struct WorkerStats {
    /// [family][version 0..=7][outcome]
    requests: [[[Counter; OUTCOMES.len()]; 8]; 2],
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    /// Over the rate limit but answered anyway (leak); also counted as answered.
    pub rate_limit_leaked: Counter,
    pub rx_stamp_missing: Counter,
    pub recv_errors: Counter,
    pub send_errors: Counter,
    pub multishot_rearms: Counter,
    /// Requests the kernel dropped because a socket's receive queue was full.
    pub socket_drops: Counter,
    pub batches: Counter,
    /// Nanoseconds spent handling batches (the rest is waiting for packets).
    pub busy_ns: Counter,
    /// Server processing time T3 − T2 of answered requests, ns.
    pub response_time: Histogram,
    pub batch_size: Histogram,
    /// Kernel transmit stamp − transmit timestamp written, ns, per basic
    /// reply: how far off the estimated departure was.
    pub t3_error: SignedHistogram,
    /// Replies by where their transmit timestamp came from, once sent.
    tx_stamps: [Counter; STAMP_SOURCES.len()],
    pub xleave: XleaveCounters,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            requests: Default::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            rate_limit_leaked: Counter::default(),
            rx_stamp_missing: Counter::default(),
            recv_errors: Counter::default(),
            send_errors: Counter::default(),
            multishot_rearms: Counter::default(),
            socket_drops: Counter::default(),
            batches: Counter::default(),
            busy_ns: Counter::default(),
            response_time: Histogram::new(&RESPONSE_TIME_BOUNDS_NS),
            batch_size: Histogram::new(&BATCH_SIZE_BOUNDS),
            t3_error: SignedHistogram::new(&T3_ERROR_BOUNDS_NS),
            tx_stamps: Default::default(),
            xleave: XleaveCounters::default(),
        }
    }
}

impl WorkerStats {
    /// Counts one datagram: `first_byte` is its first byte (0 if empty).
    #[inline]
    pub fn count(&self, ipv6: bool, first_byte: u8, outcome: Outcome) {
        let version = ((first_byte >> 3) & 7) as usize;
        self.requests[ipv6 as usize][version][outcome as usize].bump();
    }

    pub fn requests(&self, family: usize, version: usize, outcome: Outcome) -> u64 {
        self.requests[family][version][outcome as usize].get()
    }

    /// Datagrams with this outcome, all families and versions.
    pub fn outcome_total(&self, outcome: Outcome) -> u64 {
        self.requests
            .iter()
            .flat_map(|f| f.iter())
            .map(|v| v[outcome as usize].get())
            .sum()
    }

    pub fn received(&self) -> u64 {
        OUTCOMES.iter().map(|o| self.outcome_total(*o)).sum()
    }

    /// Counts one sent reply's transmit timestamp by its source.
    #[inline]
    pub fn count_stamp(&self, source: StampSource) {
        self.tx_stamps[source as usize].bump();
    }

    pub fn stamps(&self, source: StampSource) -> u64 {
        self.tx_stamps[source as usize].get()
    }

    /// Pairs kept for interleaved replies and not yet taken, replaced or
    /// removed (by this worker's count; summed over workers it is the
    /// table's).
    pub fn xleave_held(&self) -> i64 {
        let x = &self.xleave;
        x.kept.get() as i64
            - x.interleaved.get() as i64
            - x.replaced.get() as i64
            - x.removed.get() as i64
    }
}

/// Sum of one outcome over workers.
pub fn total(all: &[Arc<WorkerStats>], outcome: Outcome) -> u64 {
    all.iter().map(|s| s.outcome_total(outcome)).sum()
}

/// Sum of one counter over workers.
pub fn sum(all: &[Arc<WorkerStats>], counter: fn(&WorkerStats) -> u64) -> u64 {
    all.iter().map(|s| counter(s)).sum()
}

/// One signed histogram merged over workers.
pub fn merged_signed(
    all: &[Arc<WorkerStats>],
    pick: fn(&WorkerStats) -> &SignedHistogram,
) -> SignedSnapshot {
    let histograms: Vec<&SignedHistogram> = all.iter().map(|s| pick(s)).collect();
    SignedSnapshot::merge(&histograms)
}

/// One histogram merged over workers.
pub fn merged(all: &[Arc<WorkerStats>], pick: fn(&WorkerStats) -> &Histogram) -> Snapshot {
    let histograms: Vec<&Histogram> = all.iter().map(|s| pick(s)).collect();
    Snapshot::merge(&histograms)
}

/// Turns the cumulative drop count each datagram carries (`SO_RXQ_OVFL`) into
/// increments of [`WorkerStats::socket_drops`]: one per socket, owned by the
/// socket's worker.
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketDrops {
    last: u32,
}

impl SocketDrops {
    /// Counts the drops that `reported` (a datagram's count) adds to what was
    /// seen before. The kernel's count wraps at 2^32; datagrams read in a
    /// batch may carry a count older than one already seen, which adds nothing.
    #[inline]
    pub fn update(&mut self, reported: Option<u32>, stats: &WorkerStats) {
        let Some(now) = reported else {
            return;
        };
        let new = now.wrapping_sub(self.last);
        // A "negative" difference (an older count) reads as over 2^31.
        if new != 0 && new < 1 << 31 {
            stats.socket_drops.add(new as u64);
            self.last = now;
        }
    }
}

/// A one-line summary over all workers, for the log.
pub fn summary(all: &[Arc<WorkerStats>]) -> String {
    let received = sum(all, WorkerStats::received);
    let mut line = format!("received {received}");
    for outcome in OUTCOMES {
        line.push_str(&format!(" {} {}", outcome.label(), total(all, outcome)));
    }
    line.push_str(&format!(
        " leaked {} socket_drops {} rx_stamp_missing {} recv_errors {} send_errors {}",
        sum(all, |s| s.rate_limit_leaked.get()),
        sum(all, |s| s.socket_drops.get()),
        sum(all, |s| s.rx_stamp_missing.get()),
        sum(all, |s| s.recv_errors.get()),
        sum(all, |s| s.send_errors.get()),
    ));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_family_version_outcome() {
        let s = WorkerStats::default();
        s.count(false, 0x23, Outcome::Answered);
        s.count(true, 0x1b, Outcome::Answered);
        s.count(true, 0x1b, Outcome::Kod);
        s.count(false, 0x3b, Outcome::BadVersion);
        assert_eq!(s.requests(0, 4, Outcome::Answered), 1);
        assert_eq!(s.requests(1, 3, Outcome::Answered), 1);
        assert_eq!(s.requests(0, 7, Outcome::BadVersion), 1);
        assert_eq!(s.outcome_total(Outcome::Answered), 2);
        assert_eq!(s.received(), 4);
        let all = [Arc::new(s)];
        let line = summary(&all);
        assert!(line.starts_with("received 4 answered 2 kod 1 "), "{line}");
    }
}
