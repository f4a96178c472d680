//! Counters and latency histograms, and their summaries for reporting.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::validate::{kiss_name, Invalid};

/// Largest latency recorded, in nanoseconds (larger values saturate).
const HIST_MAX_NS: u64 = 60_000_000_000;

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("valid histogram bounds")
}

/// What one thread (or all of them, merged) saw over a span: a step, a second,
/// or the whole run.
#[derive(Clone)]
pub struct Stats {
    /// Requests scheduled by the pacer (the offered load).
    pub offered: u64,
    /// Requests handed to the kernel.
    pub sent: u64,
    /// Requests due that were not sent because the generator fell behind.
    pub skipped: u64,
    /// Answers matched to an outstanding request (good, unsync, KoD or invalid).
    pub answered: u64,
    /// Good answers.
    pub ok: u64,
    /// Unsynchronized answers accepted by --allow-unsync.
    pub unsync: u64,
    /// Requests not answered within the timeout.
    pub lost: u64,
    /// Answers that came after the timeout.
    pub late: u64,
    pub duplicate: u64,
    /// Invalid datagrams by reason (matched or not).
    pub invalid: [u64; Invalid::ALL.len()],
    /// Kiss-o'-Death answers by code.
    pub kod: BTreeMap<[u8; 4], u64>,
    /// Send errors by errno.
    pub send_errors: BTreeMap<i32, u64>,
    /// Receive errors by errno (ECONNREFUSED after an ICMP port unreachable).
    pub recv_errors: BTreeMap<i32, u64>,
    /// Answers whose RTT used the user-space send time although kernel TX
    /// stamps were asked for (the stamp had not arrived).
    pub t1_fallback: u64,
    /// Answers received without a kernel RX timestamp.
    pub no_rx_stamp: u64,
    /// Datagrams the kernel dropped on ntp-blast's own sockets (receive
    /// buffer full: the generator did not read the answers fast enough).
    pub local_drops: u64,
    /// Client round-trip time T4 - T1, ns.
    pub rtt: Histogram<u64>,
    /// Server processing time T3 - T2, ns.
    pub server: Histogram<u64>,
    /// |offset| = |((T2 - T1) + (T3 - T4)) / 2|, ns: the server's timestamp error
    /// where client and server share a clock. Basic replies only.
    pub time_error: Histogram<u64>,
    /// The signed offsets of basic replies, summed (their mean is the
    /// asymmetry of the server's timestamps), ns.
    pub offset_sum: i64,
    /// Good answers in the basic and in the interleaved mode (RFC 9769,
    /// with --interleaved).
    pub basic: u64,
    pub interleaved: u64,
    /// |offset| of the exchange an interleaved reply completes: the reply
    /// before's T1, T2, T4 and the exact T3 this reply carries, ns.
    pub time_error_interleaved: Histogram<u64>,
    pub offset_sum_interleaved: i64,
    /// T4 - T3 of basic replies, ns: how long after the transmit timestamp
    /// it carries the reply arrived. On a veth pair, where the kernel stamps
    /// the arrival as the sender's driver hands the reply over, this is the
    /// server's T3 error measured from outside, the same way for any server.
    pub reply_after_t3: SignedHistogram,
    /// How long answers waited in ntp-blast's sockets: the read time minus
    /// the kernel's arrival stamp, ns. A generator that timestamps answers
    /// when it reads them adds this to every T4.
    pub read_delay: Histogram<u64>,
}

/// A histogram of signed nanoseconds: magnitudes below zero and from zero up.
#[derive(Clone)]
pub struct SignedHistogram {
    below: Histogram<u64>,
    above: Histogram<u64>,
    sum: i64,
}

impl Default for SignedHistogram {
    fn default() -> Self {
        SignedHistogram {
            below: new_hist(),
            above: new_hist(),
            sum: 0,
        }
    }
}

impl SignedHistogram {
    pub fn record(&mut self, ns: i64) {
        if ns < 0 {
            self.below.saturating_record(ns.unsigned_abs());
        } else {
            self.above.saturating_record(ns as u64);
        }
        self.sum += ns;
    }

    fn merge(&mut self, o: &SignedHistogram) {
        let _ = self.below.add(&o.below);
        let _ = self.above.add(&o.above);
        self.sum += o.sum;
    }

    pub fn count(&self) -> u64 {
        self.below.len() + self.above.len()
    }

    /// The value at quantile `q`, ns.
    pub fn quantile(&self, q: f64) -> Option<i64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let negatives = self.below.len();
        if rank <= negatives {
            let magnitude_rank = negatives - rank + 1;
            let m = self
                .below
                .value_at_quantile(magnitude_rank as f64 / negatives as f64);
            return Some(-(m as i64));
        }
        let q_above = (rank - negatives) as f64 / self.above.len() as f64;
        Some(self.above.value_at_quantile(q_above.min(1.0)) as i64)
    }
}

/// Percentiles of a signed quantity, µs.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct SignedPercentiles {
    pub count: u64,
    pub mean: Option<f64>,
    pub p1: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
}

impl SignedPercentiles {
    pub fn of(h: &SignedHistogram) -> Self {
        let us = |q| h.quantile(q).map(|ns| round3(ns as f64 / 1000.0));
        SignedPercentiles {
            count: h.count(),
            mean: mean_us(h.sum, h.count()),
            p1: us(0.01),
            p50: us(0.5),
            p99: us(0.99),
            p999: us(0.999),
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            offered: 0,
            sent: 0,
            skipped: 0,
            answered: 0,
            ok: 0,
            unsync: 0,
            lost: 0,
            late: 0,
            duplicate: 0,
            invalid: [0; Invalid::ALL.len()],
            kod: BTreeMap::new(),
            send_errors: BTreeMap::new(),
            recv_errors: BTreeMap::new(),
            t1_fallback: 0,
            no_rx_stamp: 0,
            local_drops: 0,
            rtt: new_hist(),
            server: new_hist(),
            time_error: new_hist(),
            offset_sum: 0,
            basic: 0,
            interleaved: 0,
            time_error_interleaved: new_hist(),
            offset_sum_interleaved: 0,
            reply_after_t3: SignedHistogram::default(),
            read_delay: new_hist(),
        }
    }
}

impl Stats {
    pub fn invalid_total(&self) -> u64 {
        self.invalid.iter().sum()
    }

    pub fn kod_total(&self) -> u64 {
        self.kod.values().sum()
    }

    pub fn send_errors_total(&self) -> u64 {
        self.send_errors.values().sum()
    }

    pub fn recv_errors_total(&self) -> u64 {
        self.recv_errors.values().sum()
    }

    pub fn add_invalid(&mut self, reason: Invalid) {
        self.invalid[reason.index()] += 1;
    }

    pub fn add_kod(&mut self, code: [u8; 4]) {
        *self.kod.entry(code).or_insert(0) += 1;
    }

    /// Records one good (or accepted unsynchronized) answer's timings, in ns.
    pub fn record_times(&mut self, rtt_ns: i64, server_ns: i64, error_ns: i64) {
        self.rtt.saturating_record(rtt_ns.max(0) as u64);
        self.server.saturating_record(server_ns.max(0) as u64);
        self.time_error.saturating_record(error_ns.unsigned_abs());
        self.offset_sum += error_ns;
        self.basic += 1;
    }

    /// Records one interleaved answer: its own round trip, and the offset
    /// of the exchange it completes, in ns.
    pub fn record_interleaved(&mut self, rtt_ns: i64, error_ns: i64) {
        self.rtt.saturating_record(rtt_ns.max(0) as u64);
        self.time_error_interleaved
            .saturating_record(error_ns.unsigned_abs());
        self.offset_sum_interleaved += error_ns;
        self.interleaved += 1;
    }

    pub fn merge(&mut self, o: &Stats) {
        self.offered += o.offered;
        self.sent += o.sent;
        self.skipped += o.skipped;
        self.answered += o.answered;
        self.ok += o.ok;
        self.unsync += o.unsync;
        self.lost += o.lost;
        self.late += o.late;
        self.duplicate += o.duplicate;
        for (a, b) in self.invalid.iter_mut().zip(o.invalid.iter()) {
            *a += b;
        }
        for (k, v) in &o.kod {
            *self.kod.entry(*k).or_insert(0) += v;
        }
        for (k, v) in &o.send_errors {
            *self.send_errors.entry(*k).or_insert(0) += v;
        }
        for (k, v) in &o.recv_errors {
            *self.recv_errors.entry(*k).or_insert(0) += v;
        }
        self.t1_fallback += o.t1_fallback;
        self.no_rx_stamp += o.no_rx_stamp;
        self.local_drops += o.local_drops;
        // Same bounds on both sides: addition cannot fail.
        let _ = self.rtt.add(&o.rtt);
        let _ = self.server.add(&o.server);
        let _ = self.time_error.add(&o.time_error);
        self.offset_sum += o.offset_sum;
        self.basic += o.basic;
        self.interleaved += o.interleaved;
        let _ = self.time_error_interleaved.add(&o.time_error_interleaved);
        self.offset_sum_interleaved += o.offset_sum_interleaved;
        self.reply_after_t3.merge(&o.reply_after_t3);
        let _ = self.read_delay.add(&o.read_delay);
    }

    /// Counts and percentiles, ready to print or serialize. `secs` is the
    /// span's length, for the rates.
    pub fn summary(&self, secs: f64) -> Summary {
        let pct = |n: u64| {
            if self.sent == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.sent as f64
            }
        };
        let rate = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        Summary {
            offered: self.offered,
            sent: self.sent,
            skipped: self.skipped,
            answered: self.answered,
            ok: self.ok,
            unsync: self.unsync,
            lost: self.lost,
            late: self.late,
            duplicate: self.duplicate,
            invalid: self.invalid_total(),
            kod: self.kod_total(),
            send_errors: self.send_errors_total(),
            recv_errors: self.recv_errors_total(),
            lost_pct: pct(self.lost),
            invalid_pct: pct(self.invalid_total()),
            kod_pct: pct(self.kod_total()),
            send_rate: rate(self.sent),
            answer_rate: rate(self.answered),
            invalid_by_reason: Invalid::ALL
                .iter()
                .filter(|r| self.invalid[r.index()] > 0)
                .map(|r| (r.name().to_string(), self.invalid[r.index()]))
                .collect(),
            kod_by_code: self.kod.iter().map(|(k, v)| (kiss_name(*k), *v)).collect(),
            send_errors_by_errno: errno_map(&self.send_errors),
            recv_errors_by_errno: errno_map(&self.recv_errors),
            t1_fallback: self.t1_fallback,
            no_rx_stamp: self.no_rx_stamp,
            local_drops: self.local_drops,
            rtt_us: Percentiles::of(&self.rtt),
            server_us: Percentiles::of(&self.server),
            time_error_us: Percentiles::of(&self.time_error),
            basic: self.basic,
            interleaved: self.interleaved,
            interleaved_pct: if self.answered == 0 {
                0.0
            } else {
                round3(100.0 * self.interleaved as f64 / self.answered as f64)
            },
            offset_mean_us: mean_us(self.offset_sum, self.basic),
            time_error_interleaved_us: Percentiles::of(&self.time_error_interleaved),
            offset_mean_interleaved_us: mean_us(self.offset_sum_interleaved, self.interleaved),
            reply_after_t3_us: SignedPercentiles::of(&self.reply_after_t3),
            read_delay_us: Percentiles::of(&self.read_delay),
        }
    }
}

fn errno_map(m: &BTreeMap<i32, u64>) -> BTreeMap<String, u64> {
    m.iter().map(|(e, n)| (errno_name(*e), *n)).collect()
}

/// Short name of an errno for reports.
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EAGAIN => "EAGAIN",
        libc::ENOBUFS => "ENOBUFS",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EINVAL => "EINVAL",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// Percentiles of a histogram, in microseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| round3(ns as f64 / 1000.0);
        Percentiles {
            count: h.len(),
            min: us(h.min()),
            mean: round3(h.mean() / 1000.0),
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

/// The mean of `count` values summing to `sum_ns`, in µs.
fn mean_us(sum_ns: i64, count: u64) -> Option<f64> {
    (count > 0).then(|| round3(sum_ns as f64 / count as f64 / 1000.0))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A span's counts and percentiles, as reported.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub offered: u64,
    pub sent: u64,
    pub skipped: u64,
    pub answered: u64,
    pub ok: u64,
    pub unsync: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicate: u64,
    pub invalid: u64,
    pub kod: u64,
    pub send_errors: u64,
    pub recv_errors: u64,
    pub lost_pct: f64,
    pub invalid_pct: f64,
    pub kod_pct: f64,
    pub send_rate: f64,
    pub answer_rate: f64,
    pub invalid_by_reason: BTreeMap<String, u64>,
    pub kod_by_code: BTreeMap<String, u64>,
    pub send_errors_by_errno: BTreeMap<String, u64>,
    pub recv_errors_by_errno: BTreeMap<String, u64>,
    pub t1_fallback: u64,
    pub no_rx_stamp: u64,
    pub local_drops: u64,
    pub rtt_us: Percentiles,
    pub server_us: Percentiles,
    pub time_error_us: Percentiles,
    /// Good answers in the basic mode and in the interleaved mode, and the
    /// share of all answers that were interleaved (%).
    pub basic: u64,
    pub interleaved: u64,
    pub interleaved_pct: f64,
    /// Mean signed offset of the basic answers (the server's asymmetry), µs.
    pub offset_mean_us: Option<f64>,
    /// |offset| of the exchanges interleaved answers complete, and their
    /// mean signed offset, µs.
    pub time_error_interleaved_us: Percentiles,
    pub offset_mean_interleaved_us: Option<f64>,
    /// T4 - T3 of basic replies (the server's T3 error on a veth pair), µs.
    pub reply_after_t3_us: SignedPercentiles,
    /// How long answers waited in ntp-blast's sockets before it read them.
    pub read_delay_us: Percentiles,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_values() {
        let mut s = Stats::default();
        // 1..=1000 µs of RTT, server time 10 µs, error ±5 µs.
        for i in 1..=1000i64 {
            let e = if i % 2 == 0 { 5_000 } else { -5_000 };
            s.record_times(i * 1000, 10_000, e);
        }
        let p = Percentiles::of(&s.rtt);
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() <= 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() <= 1.0, "{p:?}");
        assert!((p.p999 - 999.0).abs() <= 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() <= 1.0, "{p:?}");
        assert!((p.mean - 500.5).abs() <= 1.0, "{p:?}");
        let e = Percentiles::of(&s.time_error);
        assert!(
            (e.p50 - 5.0).abs() < 0.01 && (e.max - 5.0).abs() < 0.01,
            "{e:?}"
        );
        assert_eq!(
            Percentiles::of(&Stats::default().rtt),
            Percentiles::default()
        );
    }

    #[test]
    fn interleaved_answers_are_counted_apart() {
        let mut s = Stats {
            answered: 4,
            ..Default::default()
        };
        s.record_times(40_000, 10_000, 2_000);
        s.record_interleaved(40_000, -100);
        s.record_interleaved(40_000, 300);
        s.record_interleaved(40_000, 100);
        let mut other = Stats {
            answered: 1,
            ..Default::default()
        };
        other.record_interleaved(40_000, 100);
        s.merge(&other);
        let sum = s.summary(1.0);
        assert_eq!((sum.basic, sum.interleaved), (1, 4));
        assert!((sum.interleaved_pct - 80.0).abs() < 1e-9);
        assert_eq!(sum.offset_mean_us, Some(2.0));
        assert_eq!(sum.offset_mean_interleaved_us, Some(0.1));
        assert_eq!(sum.time_error_interleaved_us.count, 4);
        assert_eq!(sum.time_error_us.count, 1);
        assert_eq!(sum.rtt_us.count, 5);
        assert_eq!(Stats::default().summary(1.0).offset_mean_us, None);
    }

    #[test]
    fn signed_percentiles_span_zero() {
        let mut h = SignedHistogram::default();
        for v in -500..500i64 {
            h.record(v * 10);
        }
        let mut other = SignedHistogram::default();
        other.record(20_000);
        h.merge(&other);
        let p = SignedPercentiles::of(&h);
        assert_eq!(p.count, 1001);
        assert!((p.p50.unwrap()).abs() <= 0.02, "{p:?}");
        assert!((p.p1.unwrap() + 4.9).abs() <= 0.02, "{p:?}");
        assert!((p.p99.unwrap() - 4.9).abs() <= 0.02, "{p:?}");
        // The 1000th of 1001 values; the 20 µs one is the 1001st.
        assert!((p.p999.unwrap() - 4.99).abs() <= 0.02, "{p:?}");
        let top = h.quantile(1.0).unwrap();
        assert!((20_000..=20_020).contains(&top), "{top}");
        // (-5000 + 20000) / 1001 ns.
        assert_eq!(p.mean, Some(0.015));
        assert_eq!(SignedPercentiles::of(&SignedHistogram::default()).p50, None);
    }

    #[test]
    fn merge_and_summary() {
        let mut a = Stats {
            sent: 100,
            answered: 90,
            ok: 88,
            lost: 10,
            ..Default::default()
        };
        a.add_kod(*b"RATE");
        a.add_invalid(Invalid::Mode);
        a.record_times(50_000, 2_000, 100);
        let mut b = Stats {
            sent: 100,
            answered: 100,
            ok: 100,
            ..Default::default()
        };
        b.add_kod(*b"RATE");
        b.add_kod(*b"DENY");
        *b.send_errors.entry(libc::ECONNREFUSED).or_insert(0) += 2;
        b.record_times(70_000, 3_000, -100);
        a.merge(&b);
        let s = a.summary(2.0);
        assert_eq!(s.sent, 200);
        assert_eq!(s.lost, 10);
        assert!((s.lost_pct - 5.0).abs() < 1e-9);
        assert_eq!(s.kod, 3);
        assert!((s.kod_pct - 1.5).abs() < 1e-9);
        assert_eq!(s.kod_by_code["RATE"], 2);
        assert_eq!(s.invalid_by_reason["mode"], 1);
        assert_eq!(s.send_errors_by_errno["ECONNREFUSED"], 2);
        assert_eq!(s.send_rate, 100.0);
        assert_eq!(s.rtt_us.count, 2);
        assert!((s.rtt_us.max - 70.0).abs() < 0.1);
    }
}
