//! How fast one ntp-blast thread goes, on loopback:
//!
//! ```text
//! cargo bench -p ntp-blast --bench blast_rate
//! ```
//!
//! Two measurements, both bounded (a few seconds, 127.0.0.1 only):
//! - against a sink (a socket that never reads): the send rate alone, which on
//!   loopback includes the kernel's delivery to the receiving socket;
//! - against the tests' small NTP server (one datagram per system call): the
//!   full loop at the offered rate. That server, on the other core of a
//!   2-core machine, is likely the bottleneck.
//!
//! `NTP_BLAST_PERF_RATE` sets the server run's offered rate (default 200000),
//! `NTP_BLAST_PERF_SINK_RATE` the sink run's (default 1000000), and
//! `NTP_BLAST_PERF_ARGS` adds arguments to both (e.g. `--tx-timestamp kernel`).
//! It reports figures and asserts nothing: a benchmark, not a test.

#[path = "../tests/common/fake_ntp.rs"]
mod fake_ntp;

use std::net::UdpSocket;
use std::process::Command;

use serde_json::Value;

use fake_ntp::{honest, Clock, FakeNtp};

fn blast(target: &str, rate: &str, duration: &str) -> Value {
    let extra = std::env::var("NTP_BLAST_PERF_ARGS").unwrap_or_default();
    let out = Command::new(env!("CARGO_BIN_EXE_ntp-blast"))
        .args(extra.split_whitespace())
        .args([
            target,
            "--rate",
            rate,
            "--duration",
            duration,
            "--timeout",
            "200ms",
            "--json",
            "--quiet",
        ])
        .output()
        .unwrap();
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn show(what: &str, v: &Value) {
    let t = &v["totals"];
    let secs = v["config"]["duration_s"].as_f64().unwrap();
    eprintln!(
        "== {what}: offered {:.0}/s, sent {:.0}/s, answered {:.0}/s, lost {:.2}%, skipped {}, send errors {}, \
         rtt p50 {} µs p99 {} µs, server p50 {} µs",
        t["offered"].as_f64().unwrap() / secs,
        t["sent"].as_f64().unwrap() / secs,
        t["answered"].as_f64().unwrap() / secs,
        t["lost_pct"].as_f64().unwrap(),
        t["skipped"],
        t["send_errors"],
        t["rtt_us"]["p50"],
        t["rtt_us"]["p99"],
        t["server_us"]["p50"],
    );
}

fn main() {
    // `cargo bench` passes --bench; nothing else is expected.
    // 1. Send capacity: a sink that never reads.
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_rate = std::env::var("NTP_BLAST_PERF_SINK_RATE").unwrap_or_else(|_| "1000000".into());
    let v = blast(&sink.local_addr().unwrap().to_string(), &sink_rate, "2s");
    show(&format!("sink, offered {sink_rate}/s for 2 s"), &v);
    drop(sink);

    // 2. Full loop against a server.
    let rate = std::env::var("NTP_BLAST_PERF_RATE").unwrap_or_else(|_| "200000".into());
    let server = FakeNtp::start("127.0.0.1:0", 2, Clock::HOST, honest()).unwrap();
    let v = blast(&server.addr.to_string(), &rate, "3s");
    let seen = server.finish();
    show(&format!("server, offered {rate}/s for 3 s"), &v);
    eprintln!("== the server answered {} requests", seen.answered);
}
