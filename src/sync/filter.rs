//! The RFC 5905 §10 clock filter: the last eight samples of one source, the
//! one with the lowest distance (half the delay plus dispersion aged at
//! 15 ppm) chosen as the best, the peer dispersion as the weighted sum of the
//! stages' dispersions, and the jitter as the RMS of offset differences from
//! the best sample.
//!
//! The engine keeps one per source. Its dispersion and jitter always enter the
//! root distance; whether its best samples or all samples feed the source's
//! estimator is [`crate::sync::engine::SampleFilter`].
//!
//! Two departures from the RFC, both because the estimator behind it supplies
//! what they stood in for: empty stages count as absent, not as samples with
//! the maximum dispersion (the estimator's own uncertainty grows instead
//! while a source has few samples); and offsets are stored in the engine's
//! free-running frame, so the jitter is taken after removing a frequency
//! (`detrend`) rather than from raw offsets that a slewing clock would spread.

use std::collections::VecDeque;

use crate::proto::reply::DISPERSION_RATE;

/// Stages of the filter (RFC 5905 NSTAGE).
pub const NSTAGE: usize = 8;

/// One sample as the filter keeps it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FilterSample {
    /// Monotonic time the sample refers to, seconds.
    pub mono: f64,
    pub offset: f64,
    pub delay: f64,
    /// Dispersion when the sample was taken; aged at 15 ppm from `mono`.
    pub dispersion: f64,
}

impl FilterSample {
    fn dispersion_at(&self, now: f64) -> f64 {
        self.dispersion + DISPERSION_RATE * (now - self.mono).max(0.0)
    }

    fn distance_at(&self, now: f64) -> f64 {
        self.delay / 2.0 + self.dispersion_at(now)
    }
}

/// The eight-stage shift register.
#[derive(Clone, Debug, Default)]
pub struct ClockFilter {
    /// Newest first.
    stages: VecDeque<FilterSample>,
    /// Time of the last sample [`ClockFilter::add`] returned.
    last_output: Option<f64>,
}

impl ClockFilter {
    pub fn new() -> Self {
        ClockFilter::default()
    }

    pub fn len(&self) -> usize {
        self.stages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Shifts a sample in. Returns the best sample if it is newer than the
    /// last one returned (RFC 5905: an older best sample is not used twice,
    /// nor out of order).
    pub fn add(&mut self, sample: FilterSample) -> Option<FilterSample> {
        if self.stages.len() == NSTAGE {
            self.stages.pop_back();
        }
        self.stages.push_front(sample);
        let best = self.best(sample.mono)?;
        if self.last_output.is_some_and(|t| best.mono <= t) {
            return None;
        }
        self.last_output = Some(best.mono);
        Some(best)
    }

    /// The stages sorted by distance at `now`, best first.
    fn sorted(&self, now: f64) -> Vec<FilterSample> {
        let mut v: Vec<FilterSample> = self.stages.iter().copied().collect();
        v.sort_by(|a, b| a.distance_at(now).total_cmp(&b.distance_at(now)));
        v
    }

    /// The sample with the lowest distance at `now`.
    pub fn best(&self, now: f64) -> Option<FilterSample> {
        self.stages
            .iter()
            .min_by(|a, b| a.distance_at(now).total_cmp(&b.distance_at(now)))
            .copied()
    }

    /// Peer dispersion ε = Σ εᵢ / 2^(i+1) over the stages in distance order.
    pub fn dispersion(&self, now: f64) -> f64 {
        self.sorted(now)
            .iter()
            .enumerate()
            .map(|(i, s)| s.dispersion_at(now) / 2f64.powi(i as i32 + 1))
            .sum()
    }

    /// Peer jitter ψ: RMS of the differences between each stage's offset and
    /// the best one's, after removing `detrend` × time from every offset.
    /// Zero with fewer than two stages.
    pub fn jitter(&self, now: f64, detrend: f64) -> f64 {
        let sorted = self.sorted(now);
        if sorted.len() < 2 {
            return 0.0;
        }
        let level = |s: &FilterSample| s.offset - detrend * s.mono;
        let best = level(&sorted[0]);
        let sum: f64 = sorted[1..].iter().map(|s| (level(s) - best).powi(2)).sum();
        (sum / (sorted.len() - 1) as f64).sqrt()
    }

    /// The most recent sample.
    pub fn latest(&self) -> Option<FilterSample> {
        self.stages.front().copied()
    }

    pub fn clear(&mut self) {
        self.stages.clear();
        self.last_output = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(mono: f64, offset: f64, delay: f64) -> FilterSample {
        FilterSample {
            mono,
            offset,
            delay,
            dispersion: 1e-6,
        }
    }

    #[test]
    fn picks_lowest_delay_and_never_reuses() {
        let mut f = ClockFilter::new();
        assert_eq!(f.add(s(0.0, 0.001, 0.010)), Some(s(0.0, 0.001, 0.010)));
        // Higher delay: the old best is still best, and is not returned again.
        assert_eq!(f.add(s(64.0, 0.004, 0.030)), None);
        // Lower delay: new best.
        let better = s(128.0, 0.002, 0.005);
        assert_eq!(f.add(better), Some(better));
        assert_eq!(f.best(128.0), Some(better));
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn dispersion_ages_and_old_samples_lose() {
        let mut f = ClockFilter::new();
        f.add(s(0.0, 0.0, 0.010));
        // 15 ppm × 1000 s = 15 ms of aging: a newer sample with 20 ms delay
        // (distance 10 ms) beats the old 10 ms one (5 ms + 15 ms).
        let newer = s(1000.0, 0.0, 0.020);
        assert_eq!(f.add(newer), Some(newer));
        let d = f.dispersion(1000.0);
        let expected = (1e-6) / 2.0 + (1e-6 + 0.015) / 4.0;
        assert!((d - expected).abs() < 1e-12, "{d} {expected}");
    }

    #[test]
    fn keeps_eight_stages() {
        let mut f = ClockFilter::new();
        for i in 0..20 {
            f.add(s(i as f64, 0.0, 0.01 + i as f64 * 1e-3));
        }
        assert_eq!(f.len(), NSTAGE);
        assert_eq!(f.latest().unwrap().mono, 19.0);
        assert_eq!(f.best(19.0).unwrap().mono, 12.0);
    }

    #[test]
    fn jitter_is_rms_of_differences_after_detrending() {
        let mut f = ClockFilter::new();
        // Offsets on a 10 ppm slope plus ±1 µs: detrended jitter ~1 µs.
        for (i, noise) in [0.0, 1e-6, -1e-6, 1e-6].iter().enumerate() {
            let t = i as f64 * 64.0;
            f.add(s(t, 10e-6 * t + noise, 0.01 + i as f64 * 0.01));
        }
        let j = f.jitter(200.0, 10e-6);
        assert!((j - (3e-12f64 / 3.0).sqrt()).abs() < 1e-9, "{j}");
        // Without detrending the slope shows up as jitter.
        assert!(f.jitter(200.0, 0.0) > 1e-3);
        f.clear();
        assert_eq!(f.jitter(0.0, 0.0), 0.0);
    }
}
