//! A histogram of signed values (nanoseconds early or late), built from two
//! [`Histogram`]s of magnitudes: one for the negative values, one for zero
//! and the positive ones. Single writer, any reader, like `Histogram`.

use super::histogram::{Histogram, Snapshot};

/// `le` bounds of a signed histogram, ascending, symmetric around zero.
pub struct SignedBounds {
    /// The negative bounds, as their magnitudes less one, ascending: 999 for
    /// `le -1000`, so that the magnitude buckets (`<= 999`) count exactly the
    /// values above each negative bound.
    pub negative: &'static [u64],
    /// The bounds from zero up, ascending.
    pub positive: &'static [u64],
}

pub struct SignedHistogram {
    /// Magnitudes of the values below zero.
    below: Histogram,
    /// Zero and the values above it.
    above: Histogram,
}

impl SignedHistogram {
    pub fn new(bounds: &SignedBounds) -> Self {
        SignedHistogram {
            below: Histogram::new(bounds.negative),
            above: Histogram::new(bounds.positive),
        }
    }

    /// Records one value. Only the owning thread may call this.
    #[inline]
    pub fn record(&self, v: i64) {
        if v < 0 {
            self.below.record(v.unsigned_abs());
        } else {
            self.above.record(v as u64);
        }
    }

    pub fn count(&self) -> u64 {
        self.below.count() + self.above.count()
    }
}

/// A merged, read-only copy of one or more signed histograms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SignedSnapshot {
    pub below: Snapshot,
    pub above: Snapshot,
}

impl SignedSnapshot {
    pub fn merge(histograms: &[&SignedHistogram]) -> SignedSnapshot {
        let below: Vec<&Histogram> = histograms.iter().map(|h| &h.below).collect();
        let above: Vec<&Histogram> = histograms.iter().map(|h| &h.above).collect();
        SignedSnapshot {
            below: Snapshot::merge(&below),
            above: Snapshot::merge(&above),
        }
    }

    pub fn count(&self) -> u64 {
        self.below.count + self.above.count
    }

    /// Sum of the values.
    pub fn sum(&self) -> i64 {
        self.above.sum as i64 - self.below.sum as i64
    }

    /// The `le` bounds and the cumulative count at each, ascending: the
    /// negative bounds, then zero and the positive ones (`+Inf` is
    /// [`SignedSnapshot::count`]).
    pub fn cumulative(&self) -> Vec<(i64, u64)> {
        let mut out = Vec::new();
        // `le -(b+1)` holds the values <= -(b+1): the magnitudes > b, every
        // negative value but those counted up to the magnitude bound b.
        let below_cum = self.below.cumulative();
        for (b, up_to) in self.below.bounds.iter().zip(&below_cum).rev() {
            out.push((-(*b as i64) - 1, self.below.count - up_to));
        }
        let base = self.below.count;
        for (b, c) in self.above.bounds.iter().zip(self.above.cumulative()) {
            out.push((*b as i64, base + c));
        }
        out
    }

    /// The value at quantile `q` (0..=1), to within a log bucket's width;
    /// None when empty.
    pub fn quantile(&self, q: f64) -> Option<i64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let negatives = self.below.count;
        if rank <= negatives {
            // The rank-th smallest value has the (negatives - rank + 1)-th
            // smallest magnitude.
            let magnitude_rank = negatives - rank + 1;
            let m = self
                .below
                .quantile(magnitude_rank as f64 / negatives as f64)?;
            return Some(-(m as i64));
        }
        let q_above = (rank - negatives) as f64 / self.above.count as f64;
        self.above.quantile(q_above).map(|v| v as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static NEG: [u64; 3] = [999, 9_999, 99_999];
    static POS: [u64; 4] = [0, 1_000, 10_000, 100_000];
    static BOUNDS: SignedBounds = SignedBounds {
        negative: &NEG,
        positive: &POS,
    };

    #[test]
    fn buckets_are_cumulative_across_zero() {
        let h = SignedHistogram::new(&BOUNDS);
        for v in [
            -200_000i64,
            -10_000,
            -5_000,
            -1_000,
            0,
            500,
            1_000,
            50_000,
            300_000,
        ] {
            h.record(v);
        }
        let s = SignedSnapshot::merge(&[&h]);
        assert_eq!(s.count(), 9);
        assert_eq!(
            s.sum(),
            -200_000 - 10_000 - 5_000 - 1_000 + 500 + 1_000 + 50_000 + 300_000
        );
        assert_eq!(
            s.cumulative(),
            vec![
                (-100_000, 1),
                (-10_000, 2),
                (-1_000, 4),
                (0, 5),
                (1_000, 7),
                (10_000, 7),
                (100_000, 8),
            ]
        );
    }

    #[test]
    fn quantiles_span_both_signs() {
        let h = SignedHistogram::new(&BOUNDS);
        for v in -500..500i64 {
            h.record(v * 100);
        }
        let s = SignedSnapshot::merge(&[&h]);
        let p50 = s.quantile(0.5).unwrap();
        assert!((-400..=0).contains(&p50), "{p50}");
        let p01 = s.quantile(0.01).unwrap();
        assert!((-50_000..=-43_000).contains(&p01), "{p01}");
        let p99 = s.quantile(0.99).unwrap();
        assert!((49_000..=56_000).contains(&p99), "{p99}");
        assert!(s.quantile(0.0).unwrap() <= -43_000);
        assert_eq!(SignedSnapshot::merge(&[]).quantile(0.5), None);
        let only_positive = SignedHistogram::new(&BOUNDS);
        only_positive.record(7);
        assert_eq!(
            SignedSnapshot::merge(&[&only_positive]).quantile(0.99),
            Some(7)
        );
    }
}
