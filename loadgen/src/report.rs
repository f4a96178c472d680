//! Gathers the threads' counts into seconds, steps and totals, prints the live
//! table and the final summary, and writes JSON or CSV.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::pacing::Step;
use crate::stats::{Percentiles, Stats, Summary};

/// One step of the run, as reported.
#[derive(Clone, Debug, Serialize)]
pub struct StepRow {
    pub step: usize,
    /// Offered rate of the step, requests/s.
    pub rate: f64,
    pub start_s: f64,
    /// Planned length.
    pub duration_s: f64,
    /// How long it actually sent (shorter when stopped early).
    pub sending_s: f64,
    pub clients: u32,
    #[serde(flatten)]
    pub summary: Summary,
}

/// One second of the run (counted when things happened), as reported.
#[derive(Clone, Debug, Serialize)]
pub struct SecondRow {
    pub second: u64,
    #[serde(flatten)]
    pub summary: Summary,
}

/// Which rows the live table shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Live {
    Seconds,
    Steps,
}

pub struct Reporter {
    live: Live,
    quiet: bool,
    threads: u32,
    clients: u32,
    steps: Vec<Step>,
    intervals: BTreeMap<u64, (u32, Stats)>,
    step_parts: BTreeMap<usize, (u32, Stats, u64)>,
    header_done: bool,
    pub second_rows: Vec<SecondRow>,
    pub step_rows: Vec<StepRow>,
    pub totals: Stats,
}

impl Reporter {
    pub fn new(live: Live, quiet: bool, threads: u32, clients: u32, steps: Vec<Step>) -> Self {
        Reporter {
            live,
            quiet,
            threads,
            clients,
            steps,
            intervals: BTreeMap::new(),
            step_parts: BTreeMap::new(),
            header_done: false,
            second_rows: Vec::new(),
            step_rows: Vec::new(),
            totals: Stats::default(),
        }
    }

    /// One thread's second `index`; prints the row once every thread's is in.
    pub fn on_interval(&mut self, index: u64, stats: &Stats) {
        let e = self
            .intervals
            .entry(index)
            .or_insert_with(|| (0, Stats::default()));
        e.0 += 1;
        e.1.merge(stats);
        if e.0 == self.threads {
            let (_, s) = self.intervals.remove(&index).unwrap_or_default();
            self.finish_second(index, &s);
        }
    }

    fn finish_second(&mut self, index: u64, s: &Stats) {
        let row = SecondRow {
            second: index,
            summary: s.summary(1.0),
        };
        let end_ns = self.steps.last().map_or(0, |s| s.end_ns());
        // The seconds after the sending: the last answers and timeouts.
        let tail = index * 1_000_000_000 >= end_ns;
        let quiet_tail = tail
            && s.answered + s.lost + s.late + s.duplicate + s.invalid_total() + s.local_drops == 0;
        if self.live == Live::Seconds && !self.quiet && !quiet_tail {
            self.print_header();
            let label = if tail {
                "tail".to_string()
            } else {
                format!("{}s", index + 1)
            };
            eprintln!(
                "{}",
                table_line(&label, s.offered as f64, self.clients, &row.summary)
            );
        }
        self.second_rows.push(row);
    }

    /// One thread's final counts of step `step`; returns the step's row once
    /// every thread's is in.
    pub fn on_step(&mut self, step: usize, stats: &Stats, sending_ns: u64) -> Option<StepRow> {
        let e = self
            .step_parts
            .entry(step)
            .or_insert_with(|| (0, Stats::default(), 0));
        e.0 += 1;
        e.1.merge(stats);
        e.2 = e.2.max(sending_ns);
        if e.0 < self.threads {
            return None;
        }
        let (_, s, sending_ns) = self.step_parts.remove(&step)?;
        Some(self.complete_step(step, &s, sending_ns))
    }

    fn complete_step(&mut self, step: usize, s: &Stats, sending_ns: u64) -> StepRow {
        let plan = self.steps[step];
        let sending_s = sending_ns as f64 / 1e9;
        let row = StepRow {
            step,
            rate: plan.rate,
            start_s: plan.start_ns as f64 / 1e9,
            duration_s: plan.len_ns as f64 / 1e9,
            sending_s,
            clients: self.clients,
            summary: s.summary(sending_s),
        };
        self.totals.merge(s);
        if self.live == Live::Steps && !self.quiet {
            self.print_header();
            eprintln!(
                "{}",
                table_line(&format!("#{step}"), plan.rate, self.clients, &row.summary)
            );
        }
        self.step_rows.push(row.clone());
        row
    }

    /// Rows left incomplete (a thread died): fold them in as they are.
    pub fn flush_partial(&mut self) {
        let intervals = std::mem::take(&mut self.intervals);
        for (i, (_, s)) in intervals {
            self.finish_second(i, &s);
        }
        let parts = std::mem::take(&mut self.step_parts);
        for (k, (_, s, ns)) in parts {
            self.complete_step(k, &s, ns);
        }
        self.step_rows.sort_by_key(|r| r.step);
    }

    fn print_header(&mut self) {
        if self.header_done {
            return;
        }
        self.header_done = true;
        eprintln!("{}", table_header());
    }
}

pub fn table_header() -> String {
    format!(
        "{:>6} {:>9} {:>7} {:>10} {:>10} {:>7} {:>6} {:>6} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8}",
        "",
        "offered/s",
        "clients",
        "sent",
        "answered",
        "lost%",
        "inv%",
        "kod%",
        "rtt p50",
        "p99",
        "p99.9",
        "t3-t2 p50",
        "p99",
        "p99.9"
    )
}

pub fn table_line(label: &str, offered_rate: f64, clients: u32, s: &Summary) -> String {
    format!(
        "{:>6} {:>9.0} {:>7} {:>10} {:>10} {:>7.3} {:>6.2} {:>6.2} | {:>8} {:>8} {:>8} | {:>9} {:>8} {:>8}",
        label,
        offered_rate,
        clients,
        s.sent,
        s.answered,
        s.lost_pct,
        s.invalid_pct,
        s.kod_pct,
        us(&s.rtt_us, |p| p.p50),
        us(&s.rtt_us, |p| p.p99),
        us(&s.rtt_us, |p| p.p999),
        us(&s.server_us, |p| p.p50),
        us(&s.server_us, |p| p.p99),
        us(&s.server_us, |p| p.p999),
    )
}

fn us(p: &Percentiles, f: impl Fn(&Percentiles) -> f64) -> String {
    if p.count == 0 {
        "-".into()
    } else {
        let v = f(p);
        if v >= 10_000.0 {
            format!("{:.0}", v)
        } else {
            format!("{:.1}", v)
        }
    }
}

/// The human summary printed at the end (to stderr).
pub fn summary_text(target: &str, elapsed_s: f64, t: &Summary, how_t1: &str) -> String {
    let mut o = String::new();
    let pct = |n: u64| {
        if t.sent == 0 {
            0.0
        } else {
            100.0 * n as f64 / t.sent as f64
        }
    };
    let _ = writeln!(o, "--- ntp-blast {target}: {elapsed_s:.2} s ---");
    let _ = writeln!(
        o,
        "offered {} | sent {} ({:.0}/s) | answered {} ({:.3}%) | good {} | unsync {}",
        t.offered,
        t.sent,
        t.send_rate,
        t.answered,
        pct(t.answered),
        t.ok,
        t.unsync
    );
    let _ = writeln!(
        o,
        "lost {} ({:.3}%) | late {} | duplicate {} | invalid {} ({:.3}%) | KoD {} ({:.3}%)",
        t.lost, t.lost_pct, t.late, t.duplicate, t.invalid, t.invalid_pct, t.kod, t.kod_pct
    );
    if t.skipped > 0 || t.send_errors > 0 || t.recv_errors > 0 {
        let _ = writeln!(
            o,
            "not sent: {} skipped (generator behind) | send errors {} {} | receive errors {} {}",
            t.skipped,
            t.send_errors,
            kv(&t.send_errors_by_errno),
            t.recv_errors,
            kv(&t.recv_errors_by_errno)
        );
    }
    if t.local_drops > 0 {
        let _ = writeln!(
            o,
            "dropped at ntp-blast's own sockets: {} answers (receive buffers full: the generator \
             could not keep up; they count as lost)",
            t.local_drops
        );
    }
    if !t.invalid_by_reason.is_empty() {
        let _ = writeln!(o, "invalid by reason: {}", kv(&t.invalid_by_reason));
    }
    if !t.kod_by_code.is_empty() {
        let _ = writeln!(o, "KoD by code: {}", kv(&t.kod_by_code));
    }
    if t.interleaved > 0 || t.invalid_by_reason.contains_key("interleaved_t3") {
        let mean = |m: Option<f64>| m.map_or_else(|| "-".to_string(), |v| format!("{v:+.3} µs"));
        let _ = writeln!(
            o,
            "interleaved mode: interleaved {} ({:.3}% of answers) | basic {} | invalid \
             interleaved {} | mean offset: basic {}, interleaved {}",
            t.interleaved,
            t.interleaved_pct,
            t.basic,
            t.invalid_by_reason
                .get("interleaved_t3")
                .copied()
                .unwrap_or(0),
            mean(t.offset_mean_us),
            mean(t.offset_mean_interleaved_us),
        );
    }
    let _ = writeln!(
        o,
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "µs", "min", "mean", "p50", "p90", "p99", "p99.9", "max"
    );
    let mut rows = vec![
        ("round trip T4-T1", &t.rtt_us),
        ("server T3-T2", &t.server_us),
        ("|offset| (same clock)", &t.time_error_us),
    ];
    if t.time_error_interleaved_us.count > 0 {
        rows.push(("|offset| interleaved", &t.time_error_interleaved_us));
    }
    rows.push(("read T4 waited", &t.read_delay_us));
    for (name, p) in rows {
        if p.count == 0 {
            let _ = writeln!(o, "{name:<22} {:>9}", "-");
        } else {
            let _ = writeln!(
                o,
                "{name:<22} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                p.min, p.mean, p.p50, p.p90, p.p99, p.p999, p.max
            );
        }
    }
    let a = &t.reply_after_t3_us;
    if a.count > 0 {
        let f = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        let _ = writeln!(
            o,
            "T4-T3 of basic replies, µs: mean {}  p1 {}  p50 {}  p99 {}  p99.9 {} (on a veth pair: \
             the server's T3 error)",
            f(a.mean),
            f(a.p1),
            f(a.p50),
            f(a.p99),
            f(a.p999)
        );
    }
    let _ = write!(o, "timestamps: T1 {how_t1}; T4 kernel software RX stamp");
    if t.no_rx_stamp > 0 {
        let _ = write!(o, " ({} without: user-space clock)", t.no_rx_stamp);
    }
    if t.t1_fallback > 0 {
        let _ = write!(
            o,
            "; {} answers without a kernel TX stamp used the user-space T1",
            t.t1_fallback
        );
    }
    o.push('\n');
    o
}

fn kv(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// CSV: a header and one row per step.
pub fn csv(rows: &[StepRow]) -> String {
    let mut o = String::from(
        "step,rate,start_s,duration_s,sending_s,clients,offered,sent,skipped,answered,ok,unsync,lost,lost_pct,late,duplicate,invalid,invalid_pct,kod,kod_pct,send_errors,local_drops,send_rate,answer_rate,rtt_p50_us,rtt_p90_us,rtt_p99_us,rtt_p999_us,rtt_max_us,server_p50_us,server_p90_us,server_p99_us,server_p999_us,server_max_us,offset_p50_us,offset_p99_us,offset_max_us\n",
    );
    for r in rows {
        let s = &r.summary;
        let _ = writeln!(
            o,
            "{},{},{},{},{:.3},{},{},{},{},{},{},{},{},{:.4},{},{},{},{:.4},{},{:.4},{},{},{:.1},{:.1},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.step,
            r.rate,
            r.start_s,
            r.duration_s,
            r.sending_s,
            r.clients,
            s.offered,
            s.sent,
            s.skipped,
            s.answered,
            s.ok,
            s.unsync,
            s.lost,
            s.lost_pct,
            s.late,
            s.duplicate,
            s.invalid,
            s.invalid_pct,
            s.kod,
            s.kod_pct,
            s.send_errors,
            s.local_drops,
            s.send_rate,
            s.answer_rate,
            s.rtt_us.p50,
            s.rtt_us.p90,
            s.rtt_us.p99,
            s.rtt_us.p999,
            s.rtt_us.max,
            s.server_us.p50,
            s.server_us.p90,
            s.server_us.p99,
            s.server_us.p999,
            s.server_us.max,
            s.time_error_us.p50,
            s.time_error_us.p99,
            s.time_error_us.max,
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps() -> Vec<Step> {
        vec![
            Step {
                rate: 1000.0,
                start_ns: 0,
                len_ns: 1_000_000_000,
            },
            Step {
                rate: 2000.0,
                start_ns: 1_000_000_000,
                len_ns: 1_000_000_000,
            },
        ]
    }

    #[test]
    fn rows_complete_when_every_thread_reported() {
        let mut r = Reporter::new(Live::Steps, true, 2, 10, steps());
        let a = Stats {
            sent: 500,
            answered: 490,
            ok: 490,
            lost: 10,
            ..Default::default()
        };
        assert!(r.on_step(0, &a, 1_000_000_000).is_none());
        let row = r.on_step(0, &a, 1_000_000_000).unwrap();
        assert_eq!(row.summary.sent, 1000);
        assert!((row.summary.lost_pct - 2.0).abs() < 1e-9);
        assert_eq!(row.rate, 1000.0);
        assert_eq!(r.totals.sent, 1000);

        r.on_interval(0, &a);
        assert!(r.second_rows.is_empty());
        r.on_interval(0, &a);
        assert_eq!(r.second_rows.len(), 1);
        assert_eq!(r.second_rows[0].summary.answered, 980);

        // Thread 2 never reports step 1: flushed as it is.
        r.on_step(1, &a, 500_000_000);
        r.flush_partial();
        assert_eq!(r.step_rows.len(), 2);
        assert_eq!(r.step_rows[1].summary.sent, 500);
        assert_eq!(r.totals.sent, 1500);
    }

    #[test]
    fn csv_has_a_row_per_step() {
        let mut r = Reporter::new(Live::Steps, true, 1, 1, steps());
        r.on_step(0, &Stats::default(), 1_000_000_000);
        r.on_step(1, &Stats::default(), 1_000_000_000);
        let text = csv(&r.step_rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let cols = lines[0].split(',').count();
        assert!(lines.iter().all(|l| l.split(',').count() == cols));
        assert!(lines[2].starts_with("1,2000,"));
    }

    #[test]
    fn table_lines_line_up() {
        let s = Stats::default().summary(1.0);
        assert_eq!(
            table_header().chars().count(),
            table_line("10s", 50000.0, 100, &s).chars().count()
        );
    }
}
