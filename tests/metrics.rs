//! The Prometheus endpoint of a running tachyond: the exposition parses (and
//! passes `promtool check metrics`), counters move by exactly the requests
//! answered, and the latency histogram counts every answered reply.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn parse(body: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("exposition parses")
}

fn value(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse(body)
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn histogram_count(body: &str, name: &str) -> f64 {
    parse(body)
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => {
                let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
                inf.count
            }
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}

#[test]
fn counters_and_histograms_track_answers_exactly() {
    let port = free_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let daemon = Daemon::start(
        &format!(
            "listen {server}\nlisten {v6}\nworkers 2\nclock software\nlocal stratum 2\nmetrics {metrics}\n"
        ),
        server,
    );
    let (content_type, before) = scrape_metrics(metrics);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let answered_before = value(
        &before,
        "tachyon_requests_total",
        &[("outcome", "answered")],
    );
    let hist_before = histogram_count(&before, "tachyon_response_time_seconds");
    assert_eq!(answered_before, hist_before);

    // Load: 400 IPv4 v4 requests, 100 IPv6 v3 requests, 50 junk datagrams.
    let mut answered = 0;
    for _ in 0..400 {
        answered += query(server, 4, Duration::from_secs(1)).is_some() as u32;
    }
    for _ in 0..100 {
        answered += query(v6, 3, Duration::from_secs(1)).is_some() as u32;
    }
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..50 {
        junk.send_to(&[0x23; 20], server).unwrap();
    }
    assert_eq!(answered, 500);
    std::thread::sleep(Duration::from_millis(200));

    let (_, after) = scrape_metrics(metrics);
    let answered_after = value(&after, "tachyon_requests_total", &[("outcome", "answered")]);
    assert_eq!(answered_after - answered_before, 500.0);
    assert_eq!(
        value(
            &after,
            "tachyon_requests_total",
            &[
                ("family", "ipv6"),
                ("version", "3"),
                ("outcome", "answered")
            ]
        ),
        100.0
    );
    assert_eq!(
        value(
            &after,
            "tachyon_requests_total",
            &[("outcome", "too_short")]
        ),
        50.0
    );
    let hist_after = histogram_count(&after, "tachyon_response_time_seconds");
    assert_eq!(hist_after, answered_after, "one latency sample per answer");
    assert_eq!(value(&after, "tachyon_system_stratum", &[]), 2.0);
    assert_eq!(value(&after, "tachyon_system_synchronized", &[]), 1.0);
    assert!(after.contains("tachyon_build_info{version=\""));
    // Every metric has HELP and TYPE.
    for line in after.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            after.contains(&format!("# TYPE {base} "))
                || after.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }

    if have_tool("promtool", "prometheus") {
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(after.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "promtool: {report}"
        );
    }
    drop(daemon);
}
