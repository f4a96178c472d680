//! Single-writer histograms the owning worker updates with plain loads and stores
//! and any thread can read: a log-linear (HDR-style, 8 sub-buckets per power of
//! two, ≤ 12.5 % relative error) histogram for percentiles, plus exact counters
//! for the fixed Prometheus `le` buckets.
//!
//! Why not `hdrhistogram::sync`: its recorders hand data over only when they
//! record, so an idle worker stalls or truncates a scrape; here a scrape simply
//! reads the atomics.

use super::Counter;

const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
const LOG_BUCKETS: usize = SUB + (64 - SUB_BITS as usize) * SUB;

fn log_index(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let sub = ((v >> (e - SUB_BITS)) as usize) & (SUB - 1);
    SUB + (e - SUB_BITS) as usize * SUB + sub
}

/// The largest value that falls in log bucket `i` (inclusive).
fn log_upper(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let e = ((i - SUB) / SUB) as u32 + SUB_BITS;
    let sub = ((i - SUB) % SUB) as u64;
    (((SUB as u64 + sub + 1) << (e - SUB_BITS)) as u128 - 1).min(u64::MAX as u128) as u64
}

/// A histogram of non-negative integer values (nanoseconds, counts...).
pub struct Histogram {
    bounds: &'static [u64],
    /// Exact count of values ≤ bounds[i] and > bounds[i-1]; the last is +Inf.
    fixed: Box<[Counter]>,
    log: Box<[Counter]>,
    sum: Counter,
    count: Counter,
}

impl Histogram {
    /// `bounds`: the fixed `le` bucket bounds, ascending.
    pub fn new(bounds: &'static [u64]) -> Self {
        Histogram {
            bounds,
            fixed: (0..=bounds.len()).map(|_| Counter::default()).collect(),
            log: (0..LOG_BUCKETS).map(|_| Counter::default()).collect(),
            sum: Counter::default(),
            count: Counter::default(),
        }
    }

    /// Records one value. Only the owning thread may call this.
    #[inline]
    pub fn record(&self, v: u64) {
        let fixed = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.fixed[fixed].bump();
        self.log[log_index(v)].bump();
        self.sum.add(v);
        self.count.bump();
    }

    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }

    pub fn count(&self) -> u64 {
        self.count.get()
    }
}

/// A merged, read-only copy of one or more histograms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub bounds: Vec<u64>,
    /// Per fixed bucket (not cumulative); last is +Inf.
    pub fixed: Vec<u64>,
    pub log: Vec<u64>,
    pub sum: u64,
    pub count: u64,
}

impl Snapshot {
    pub fn merge(histograms: &[&Histogram]) -> Snapshot {
        let Some(first) = histograms.first() else {
            return Snapshot::default();
        };
        let mut s = Snapshot {
            bounds: first.bounds.to_vec(),
            fixed: vec![0; first.fixed.len()],
            log: vec![0; LOG_BUCKETS],
            sum: 0,
            count: 0,
        };
        for h in histograms {
            // The count is derived from the buckets below, so a scrape racing
            // the worker is still self-consistent.
            for (acc, c) in s.fixed.iter_mut().zip(h.fixed.iter()) {
                *acc += c.get();
            }
            for (acc, c) in s.log.iter_mut().zip(h.log.iter()) {
                *acc += c.get();
            }
            s.sum += h.sum.get();
        }
        s.count = s.fixed.iter().sum();
        s
    }

    /// Cumulative counts per fixed bound, then +Inf (= count).
    pub fn cumulative(&self) -> Vec<u64> {
        let mut acc = 0;
        self.fixed
            .iter()
            .map(|c| {
                acc += c;
                acc
            })
            .collect()
    }

    /// The value at quantile `q` (0..=1), to within the log bucket's width
    /// (reported as the bucket's upper bound). None when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.log.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut acc = 0;
        for (i, c) in self.log.iter().enumerate() {
            acc += c;
            if acc >= rank {
                return Some(log_upper(i));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static BOUNDS: [u64; 4] = [1_000, 10_000, 100_000, 1_000_000];

    #[test]
    fn log_buckets_are_contiguous_and_tight() {
        let mut prev_upper = None;
        for i in 0..LOG_BUCKETS - 1 {
            let upper = log_upper(i);
            if let Some(p) = prev_upper {
                assert!(upper > p, "bucket {i}");
            }
            assert_eq!(log_index(upper), i, "upper of {i}");
            assert_eq!(log_index(upper + 1), i + 1, "after {i}");
            prev_upper = Some(upper);
        }
        for v in [9u64, 100, 1234, 99_999, 1 << 40] {
            let upper = log_upper(log_index(v));
            assert!(
                upper >= v && (upper - v) as f64 <= v as f64 * 0.125,
                "{v} -> {upper}"
            );
        }
        assert_eq!(log_index(u64::MAX), LOG_BUCKETS - 1);
    }

    #[test]
    fn fixed_buckets_are_exact_and_cumulative() {
        let h = Histogram::new(&BOUNDS);
        for v in [0u64, 1_000, 1_001, 10_000, 50_000, 2_000_000, 5_000_000] {
            h.record(v);
        }
        let s = Snapshot::merge(&[&h]);
        assert_eq!(s.fixed, vec![2, 2, 1, 0, 2]);
        assert_eq!(s.cumulative(), vec![2, 4, 5, 5, 7]);
        assert_eq!(s.count, 7);
        assert_eq!(
            s.sum,
            1_000 + 1_001 + 10_000 + 50_000 + 2_000_000 + 5_000_000
        );
    }

    #[test]
    fn merge_and_quantiles() {
        let a = Histogram::new(&BOUNDS);
        let b = Histogram::new(&BOUNDS);
        for v in 1..=1000u64 {
            a.record(v * 100);
            b.record(v * 100);
        }
        let s = Snapshot::merge(&[&a, &b]);
        assert_eq!(s.count, 2000);
        let p50 = s.quantile(0.5).unwrap();
        assert!((50_000..=56_250).contains(&p50), "{p50}");
        let p99 = s.quantile(0.99).unwrap();
        assert!((99_000..=112_500).contains(&p99), "{p99}");
        assert_eq!(Snapshot::merge(&[]).quantile(0.5), None);
    }
}
