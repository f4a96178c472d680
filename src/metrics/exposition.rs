//! The Prometheus text exposition format (version 0.0.4), built at scrape time
//! from the workers' counters and histograms and the published server state.

use std::fmt::Write;

use crate::clock::system_unix_ns;
use crate::observe::Observed;
use crate::server::stats::{
    self, merged, merged_signed, WorkerStats, FAMILIES, OUTCOMES, STAMP_SOURCES,
};
use crate::state::unix_ns_to_ntp;
use crate::sync::SourceReport;
use crate::telemetry::histogram::Snapshot;
use crate::telemetry::signed::SignedSnapshot;

struct Out(String);

impl Out {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }

    fn histogram(&mut self, name: &str, help: &str, snapshot: &Snapshot, scale: f64) {
        self.header(name, "histogram", help);
        for (bound, cumulative) in snapshot.bounds.iter().zip(snapshot.cumulative()) {
            let le = *bound as f64 * scale;
            self.sample(
                &format!("{name}_bucket"),
                &format!("le=\"{le}\""),
                cumulative,
            );
        }
        self.sample(&format!("{name}_bucket"), "le=\"+Inf\"", snapshot.count);
        self.sample(&format!("{name}_sum"), "", snapshot.sum as f64 * scale);
        self.sample(&format!("{name}_count"), "", snapshot.count);
    }

    fn signed_histogram(&mut self, name: &str, help: &str, snapshot: &SignedSnapshot, scale: f64) {
        self.header(name, "histogram", help);
        // Divided rather than multiplied: 2000 / 1e9 prints as 0.000002.
        let divisor = (1.0 / scale).round();
        for (bound, cumulative) in snapshot.cumulative() {
            let le = bound as f64 / divisor;
            self.sample(
                &format!("{name}_bucket"),
                &format!("le=\"{le}\""),
                cumulative,
            );
        }
        self.sample(&format!("{name}_bucket"), "le=\"+Inf\"", snapshot.count());
        self.sample(&format!("{name}_sum"), "", snapshot.sum() as f64 * scale);
        self.sample(&format!("{name}_count"), "", snapshot.count());
    }
}

/// Renders the whole exposition.
pub fn render(view: &Observed) -> String {
    let mut o = Out(String::with_capacity(16 * 1024));
    render_process(&mut o, view);
    render_requests(&mut o, view);
    render_counters(&mut o, &view.workers);
    render_workers(&mut o, view);
    render_transmit(&mut o, view);
    render_system(&mut o, view);
    render_sources(&mut o, &view.sources.read());
    o.0
}

/// Build information and uptime.
fn render_process(o: &mut Out, view: &Observed) {
    o.header(
        "tachyon_build_info",
        "gauge",
        "Build and runtime information; always 1.",
    );
    o.sample(
        "tachyon_build_info",
        &format!(
            "version=\"{}\",backend=\"{}\"",
            env!("CARGO_PKG_VERSION"),
            view.backend
        ),
        1,
    );
    o.header(
        "tachyon_uptime_seconds",
        "gauge",
        "Seconds since tachyond started.",
    );
    o.sample(
        "tachyon_uptime_seconds",
        "",
        view.started.elapsed().as_secs_f64(),
    );
}

/// Datagrams by family, version and outcome.
fn render_requests(o: &mut Out, view: &Observed) {
    o.header(
        "tachyon_requests_total",
        "counter",
        "Datagrams received on the NTP port, by IP family, NTP version and outcome.",
    );
    for (f, family) in FAMILIES.iter().enumerate() {
        for version in 0..8 {
            for outcome in OUTCOMES {
                let n: u64 = view
                    .workers
                    .iter()
                    .map(|w| w.requests(f, version, outcome))
                    .sum();
                // Versions 0 and 5..7 can only be bad_version (or earlier drops):
                // skip all-zero series outside 1..=4 to keep the exposition small.
                if n == 0 && !(1..=4).contains(&version) {
                    continue;
                }
                o.sample(
                    "tachyon_requests_total",
                    &format!(
                        "family=\"{family}\",version=\"{version}\",outcome=\"{}\"",
                        outcome.label()
                    ),
                    n,
                );
            }
        }
    }
}

/// Byte and error counters, and the two histograms.
fn render_counters(o: &mut Out, workers: &[std::sync::Arc<WorkerStats>]) {
    let sum = |counter: fn(&WorkerStats) -> u64| stats::sum(workers, counter);
    for (name, help, value) in [
        (
            "tachyon_received_bytes_total",
            "Bytes of NTP datagrams received.",
            sum(|w| w.bytes_in.get()),
        ),
        (
            "tachyon_sent_bytes_total",
            "Bytes of NTP replies and KoDs sent.",
            sum(|w| w.bytes_out.get()),
        ),
        (
            "tachyon_rate_limit_leaked_total",
            "Requests over their rate limit answered anyway (1 in 2^leak).",
            sum(|w| w.rate_limit_leaked.get()),
        ),
        (
            "tachyon_rx_timestamp_missing_total",
            "Datagrams without a kernel receive timestamp (the clock was read instead).",
            sum(|w| w.rx_stamp_missing.get()),
        ),
        (
            "tachyon_receive_errors_total",
            "Receive errors other than running out of buffers.",
            sum(|w| w.recv_errors.get()),
        ),
        (
            "tachyon_send_errors_total",
            "Replies the kernel refused to send.",
            sum(|w| w.send_errors.get()),
        ),
        (
            "tachyon_socket_drops_total",
            "Requests the kernel dropped because a worker's socket receive queue was full (SO_RXQ_OVFL).",
            sum(|w| w.socket_drops.get()),
        ),
        (
            "tachyon_multishot_rearms_total",
            "io_uring multishot receives re-armed after the kernel ended them.",
            sum(|w| w.multishot_rearms.get()),
        ),
    ] {
        o.header(name, "counter", help);
        o.sample(name, "", value);
    }
    o.histogram(
        "tachyon_response_time_seconds",
        "Server processing time of answered requests: kernel receive timestamp (T2) to transmit timestamp (T3).",
        &merged(workers, |w| &w.response_time),
        1e-9,
    );
    o.histogram(
        "tachyon_batch_size",
        "Datagrams handled per worker wake-up.",
        &merged(workers, |w| &w.batch_size),
        1.0,
    );
}

/// Per-worker packets and busy time, and the rate limiter's table.
fn render_workers(o: &mut Out, view: &Observed) {
    let workers = &view.workers;
    o.header(
        "tachyon_worker_packets_total",
        "counter",
        "Datagrams received, per worker.",
    );
    for (i, w) in workers.iter().enumerate() {
        o.sample(
            "tachyon_worker_packets_total",
            &format!("worker=\"{i}\""),
            w.received(),
        );
    }
    o.header(
        "tachyon_worker_busy_seconds_total",
        "counter",
        "Seconds each worker spent handling batches; rate() of it is the busy ratio.",
    );
    for (i, w) in workers.iter().enumerate() {
        o.sample(
            "tachyon_worker_busy_seconds_total",
            &format!("worker=\"{i}\""),
            w.busy_ns.get() as f64 * 1e-9,
        );
    }
    o.header(
        "tachyon_worker_busy_ratio",
        "gauge",
        "Fraction of the time since start each worker spent handling batches.",
    );
    let uptime_ns = view.started.elapsed().as_nanos().max(1) as f64;
    for (i, w) in workers.iter().enumerate() {
        o.sample(
            "tachyon_worker_busy_ratio",
            &format!("worker=\"{i}\",backend=\"{}\"", view.backend),
            w.busy_ns.get() as f64 / uptime_ns,
        );
    }
    let limiter = view.access.current().limiter;
    o.header(
        "tachyon_ratelimit_table_capacity",
        "gauge",
        "Client entries the rate-limit table holds.",
    );
    o.sample("tachyon_ratelimit_table_capacity", "", limiter.capacity());
    o.header(
        "tachyon_ratelimit_table_bytes",
        "gauge",
        "Memory of the rate-limit table.",
    );
    o.sample("tachyon_ratelimit_table_bytes", "", limiter.memory_bytes());
}

/// Transmit timestamps: their sources, how far off the basic mode's estimate
/// was, and the interleaved mode.
fn render_transmit(o: &mut Out, view: &Observed) {
    let workers = &view.workers;
    o.header(
        "tachyon_tx_timestamps_total",
        "counter",
        "Replies sent, by where their transmit timestamp came from once they had left: the kernel's software stamp, the NIC's, or none.",
    );
    for source in STAMP_SOURCES {
        o.sample(
            "tachyon_tx_timestamps_total",
            &format!("source=\"{}\"", source.label()),
            workers.iter().map(|w| w.stamps(source)).sum::<u64>(),
        );
    }
    o.signed_histogram(
        "tachyon_t3_error_seconds",
        "Kernel transmit stamp minus the transmit timestamp (T3) a basic reply carried: how far off the estimated departure was (positive: the reply left later than it said).",
        &merged_signed(workers, |w| &w.t3_error),
        1e-9,
    );
    let Some(capacity) = view.xleave_capacity else {
        return;
    };
    let sum = |counter: fn(&WorkerStats) -> u64| stats::sum(workers, counter);
    for (name, help, value) in [
        (
            "tachyon_interleaved_replies_total",
            "Replies in the interleaved mode (RFC 9769): carrying the exact transmit timestamp of the previous reply.",
            sum(|w| w.xleave.interleaved.get()),
        ),
        (
            "tachyon_interleaved_missed_total",
            "Requests that asked for the interleaved mode and were answered in the basic mode (no pair kept for their origin).",
            sum(|w| w.xleave.missed.get()),
        ),
        (
            "tachyon_interleaved_pairs_kept_total",
            "Receive/transmit timestamp pairs kept for interleaved replies.",
            sum(|w| w.xleave.kept.get()),
        ),
        (
            "tachyon_interleaved_pairs_replaced_total",
            "Pairs lost to a newer one in a full bucket of the table.",
            sum(|w| w.xleave.replaced.get()),
        ),
    ] {
        o.header(name, "counter", help);
        o.sample(name, "", value);
    }
    let held: i64 = workers.iter().map(|w| w.xleave_held()).sum();
    o.header(
        "tachyon_interleaved_pairs_held",
        "gauge",
        "Pairs in the interleaved mode's table now.",
    );
    o.sample("tachyon_interleaved_pairs_held", "", held.max(0));
    o.header(
        "tachyon_interleaved_table_capacity",
        "gauge",
        "Pairs the interleaved mode's table holds at most.",
    );
    o.sample("tachyon_interleaved_table_capacity", "", capacity);
}

/// What the server serves: the published state.
fn render_system(o: &mut Out, view: &Observed) {
    let state = view.state.read();
    let sys = &state.system;
    let now = unix_ns_to_ntp(state.correction.apply(system_unix_ns()));
    for (name, help, value) in [
        (
            "tachyon_system_synchronized",
            "1 when the server has time to give (LI != 3, stratum 1..15), else 0.",
            sys.is_synchronized() as u8 as f64,
        ),
        (
            "tachyon_system_stratum",
            "Stratum served (0 on the wire when unsynchronized).",
            sys.stratum as f64,
        ),
        (
            "tachyon_system_leap",
            "Leap indicator served: 0 none, 1 insert, 2 delete, 3 unsynchronized.",
            sys.leap as u8 as f64,
        ),
        (
            "tachyon_system_root_delay_seconds",
            "Root delay served.",
            sys.root_delay,
        ),
        (
            "tachyon_system_root_dispersion_seconds",
            "Root dispersion served now (grows 15 ppm from the last clock update).",
            sys.root_dispersion_at(now),
        ),
        (
            "tachyon_system_precision_seconds",
            "Clock read precision advertised.",
            2f64.powi(sys.precision as i32),
        ),
        (
            "tachyon_system_clock_offset_seconds",
            "Software clock correction applied to the system time.",
            state.correction.offset,
        ),
        (
            "tachyon_system_frequency_ppm",
            "Software clock frequency correction, ppm.",
            state.correction.frequency * 1e6,
        ),
        (
            "tachyon_system_last_update_age_seconds",
            "Seconds since the last clock update (reference time); -1 if never.",
            if sys.reference_time.is_zero() {
                -1.0
            } else {
                now.seconds_since(sys.reference_time)
            },
        ),
    ] {
        o.header(name, "gauge", help);
        o.sample(name, "", value);
    }
}

/// Per-source gauges, labelled by address.
fn render_sources(o: &mut Out, reports: &[SourceReport]) {
    o.header(
        "tachyon_sources",
        "gauge",
        "Upstream sources configured and resolved.",
    );
    o.sample("tachyon_sources", "", reports.len());
    o.header(
        "tachyon_sources_selectable",
        "gauge",
        "Sources currently selected or combined (marks * and +).",
    );
    o.sample(
        "tachyon_sources_selectable",
        "",
        reports.iter().filter(|r| r.mark.is_selected()).count(),
    );
    type Field = fn(&SourceReport) -> f64;
    let gauges: [(&str, &str, Field); 7] = [
        (
            "tachyon_source_offset_seconds",
            "Estimated offset of the source (positive: we are behind).",
            |r| r.offset.unwrap_or(0.0),
        ),
        (
            "tachyon_source_delay_seconds",
            "Round-trip delay of the source's best recent sample.",
            |r| r.delay.unwrap_or(0.0),
        ),
        (
            "tachyon_source_jitter_seconds",
            "The source's jitter.",
            |r| r.jitter.unwrap_or(0.0),
        ),
        (
            "tachyon_source_stratum",
            "The source's stratum (0 before its first valid reply).",
            |r| r.stratum as f64,
        ),
        (
            "tachyon_source_reach",
            "The 8-bit reach register (255: the last 8 polls answered).",
            |r| r.reach as f64,
        ),
        (
            "tachyon_source_poll_seconds",
            "The source's poll interval.",
            |r| 2f64.powi(r.poll as i32),
        ),
        (
            "tachyon_source_last_sample_age_seconds",
            "Seconds since the source's last valid sample; -1 if none.",
            |r| r.last_sample_age.unwrap_or(-1.0),
        ),
    ];
    for (name, help, field) in gauges {
        o.header(name, "gauge", help);
        for r in reports {
            o.sample(name, &format!("source=\"{}\"", r.address), field(r));
        }
    }
    o.header(
        "tachyon_source_selected",
        "gauge",
        "1 for the source's current selection state, by state (system peer, survivor, candidate, falseticker, unreachable, ...).",
    );
    for r in reports {
        o.sample(
            "tachyon_source_selected",
            &format!("source=\"{}\",state=\"{}\"", r.address, r.mark.as_str()),
            1,
        );
    }
}
