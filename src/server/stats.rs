//! Per-worker counters. Each worker owns its own set and is its only writer, so a
//! bump is a plain load and store (no locked instruction, no shared cache line);
//! readers (logs, metrics, tests) sum over workers.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::proto::DropReason;

#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Single-writer increment.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub fn bump(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of one worker, aligned so that two workers never share a cache line.
#[derive(Default, Debug)]
#[repr(align(128))]
pub struct WorkerStats {
    pub received: Counter,
    pub bytes_in: Counter,
    pub answered: Counter,
    pub kod_sent: Counter,
    pub bytes_out: Counter,
    pub drop_too_short: Counter,
    pub drop_bad_version: Counter,
    pub drop_unsupported_mode: Counter,
    pub drop_bad_extension: Counter,
    pub drop_denied: Counter,
    pub drop_rate_limited: Counter,
    pub drop_truncated: Counter,
    pub drop_no_send_slot: Counter,
    pub drop_internal: Counter,
    /// Over the rate limit but answered anyway (leak).
    pub rate_limit_leaked: Counter,
    pub rx_stamp_missing: Counter,
    pub recv_errors: Counter,
    pub send_errors: Counter,
    pub multishot_rearms: Counter,
    pub batches: Counter,
    /// Answered requests by NTP version (index 1..=4).
    pub answered_by_version: [Counter; 5],
}

impl WorkerStats {
    pub fn count_drop(&self, reason: DropReason) {
        match reason {
            DropReason::TooShort => self.drop_too_short.bump(),
            DropReason::BadVersion => self.drop_bad_version.bump(),
            DropReason::UnsupportedMode(_) => self.drop_unsupported_mode.bump(),
            DropReason::BadTrailer => self.drop_bad_extension.bump(),
            DropReason::Denied => self.drop_denied.bump(),
            DropReason::RateLimited => self.drop_rate_limited.bump(),
            DropReason::BufferTooSmall => self.drop_internal.bump(),
        }
    }

    /// All drops, whatever the reason.
    pub fn dropped(&self) -> u64 {
        [
            &self.drop_too_short,
            &self.drop_bad_version,
            &self.drop_unsupported_mode,
            &self.drop_bad_extension,
            &self.drop_denied,
            &self.drop_rate_limited,
            &self.drop_truncated,
            &self.drop_no_send_slot,
            &self.drop_internal,
        ]
        .iter()
        .map(|c| c.get())
        .sum()
    }
}

/// A one-line summary over all workers, for the log.
pub fn summary(all: &[std::sync::Arc<WorkerStats>]) -> String {
    let sum = |f: fn(&WorkerStats) -> u64| all.iter().map(|s| f(s)).sum::<u64>();
    format!(
        "received {} answered {} kod {} leaked {} dropped {} (short {} version {} mode {} extension {} denied {} limited {} truncated {} overload {}) rx-stamp-missing {} send-errors {}",
        sum(|s| s.received.get()),
        sum(|s| s.answered.get()),
        sum(|s| s.kod_sent.get()),
        sum(|s| s.rate_limit_leaked.get()),
        sum(|s| s.dropped()),
        sum(|s| s.drop_too_short.get()),
        sum(|s| s.drop_bad_version.get()),
        sum(|s| s.drop_unsupported_mode.get()),
        sum(|s| s.drop_bad_extension.get()),
        sum(|s| s.drop_denied.get()),
        sum(|s| s.drop_rate_limited.get()),
        sum(|s| s.drop_truncated.get()),
        sum(|s| s.drop_no_send_slot.get()),
        sum(|s| s.rx_stamp_missing.get()),
        sum(|s| s.send_errors.get()),
    )
}
