//! What the daemon shows of itself: one view of its workers, its state, its
//! access rules and its sources, read by the control socket (tachyonctl) and
//! the metrics endpoint (Prometheus), each formatting it its own way; and
//! the answers to mode 6 queries (`queries`).

pub mod queries;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::server::access::SharedAccess;
use crate::server::stats::{total, Outcome, WorkerStats, OUTCOMES};
use crate::state::StateReader;
use crate::sync::SourceBoard;

/// Everything tachyonctl and a scrape read.
pub struct Observed {
    pub workers: Vec<Arc<WorkerStats>>,
    /// The I/O backend's name.
    pub backend: &'static str,
    /// How the clock is steered: "system" or "software".
    pub clock: String,
    pub state: StateReader,
    pub access: Arc<SharedAccess>,
    pub started: Instant,
    /// Upstream sources as the sync thread last posted them (empty with
    /// `local stratum`).
    pub sources: SourceBoard,
    /// Requests per second over the last seconds (f64 bits), kept by the daemon.
    pub request_rate: Arc<AtomicU64>,
    /// Pairs the interleaved mode's table holds at most; `None`: mode off.
    pub xleave_capacity: Option<usize>,
}

impl Observed {
    /// Requests per second, as the daemon last measured it.
    pub fn requests_per_second(&self) -> f64 {
        f64::from_bits(self.request_rate.load(Ordering::Relaxed))
    }

    /// Datagrams by outcome over all workers, each counter read once: the
    /// workers go on counting meanwhile, and totals read at different
    /// moments need not add up.
    pub fn outcomes(&self) -> OutcomeCounts {
        OutcomeCounts(OUTCOMES.map(|o| (o, total(&self.workers, o))))
    }
}

/// One reading of every outcome counter.
#[derive(Clone, Copy, Debug)]
pub struct OutcomeCounts([(Outcome, u64); OUTCOMES.len()]);

impl OutcomeCounts {
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.0
            .iter()
            .find(|(o, _)| *o == outcome)
            .map_or(0, |(_, n)| *n)
    }

    /// Every datagram received.
    pub fn received(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Outcome, u64)> + '_ {
        self.0.iter().copied()
    }
}
