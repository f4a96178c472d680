//! How fast one ntp-blast thread goes, on loopback. Ignored by default (it
//! loads the machine for a few seconds); run it with
//!
//! ```text
//! cargo test --release -p ntp-blast --test perf -- --ignored --nocapture
//! ```
//!
//! Two measurements, both bounded (a few seconds, 127.0.0.1 only):
//! - against a sink (a socket that never reads): the send rate alone, which on
//!   loopback includes the kernel's delivery to the receiving socket;
//! - against an in-test reflector thread (recv_from/send_to, one datagram per
//!   syscall): the full loop at the offered rate. The reflector, on the other
//!   core of a 2-core machine, is likely the bottleneck.
//!
//! `NTP_BLAST_PERF_RATE` sets the reflector run's offered rate (default 200000),
//! `NTP_BLAST_PERF_SINK_RATE` the sink run's (default 1000000), and
//! `NTP_BLAST_PERF_ARGS` adds arguments to both (e.g. `--tx-timestamp kernel`).

use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

fn ntp_now() -> [u8; 8] {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let secs = (d.as_secs() + 2_208_988_800) as u32;
    let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (((secs as u64) << 32) | frac).to_be_bytes()
}

/// Reflects NTP requests as minimal stratum-2 answers until `stop`.
fn reflector(sock: UdpSocket, stop: Arc<AtomicBool>) -> u64 {
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 512];
    let mut n = 0;
    let give_up = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
        let Ok((len, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if len < 48 {
            continue;
        }
        let t2 = ntp_now();
        let mut r = [0u8; 48];
        r[0] = (buf[0] & 0x38) | 4;
        r[1] = 2;
        r[2] = buf[2];
        r[3] = 0xec;
        r[12..16].copy_from_slice(&[127, 0, 0, 1]);
        r[24..32].copy_from_slice(&buf[40..48]);
        r[32..40].copy_from_slice(&t2);
        r[40..48].copy_from_slice(&ntp_now());
        let _ = sock.send_to(&r, from);
        n += 1;
    }
    n
}

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

#[test]
#[ignore]
fn single_thread_rate() {
    // 1. Send capacity: a sink that never reads.
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_rate = std::env::var("NTP_BLAST_PERF_SINK_RATE").unwrap_or_else(|_| "1000000".into());
    let v = blast(&sink.local_addr().unwrap().to_string(), &sink_rate, "2s");
    show(&format!("sink, offered {sink_rate}/s for 2 s"), &v);
    drop(sink);

    // 2. Full loop against the reflector.
    let rate = std::env::var("NTP_BLAST_PERF_RATE").unwrap_or_else(|_| "200000".into());
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = sock.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let h = std::thread::spawn(move || reflector(sock, flag));
    let v = blast(&target, &rate, "3s");
    stop.store(true, Ordering::Relaxed);
    let reflected = h.join().unwrap();
    show(&format!("reflector, offered {rate}/s for 3 s"), &v);
    eprintln!("== reflector answered {reflected} requests");
}
