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

/// The endpoint as an attacker meets it: a huge header line, thousands of
/// slow connections, hundreds of idle ones. Memory and threads stay bounded,
/// the endpoint answers right after each attack, and NTP is served throughout.
#[test]
fn the_endpoint_survives_hostile_clients() {
    use std::io::Read;
    use std::net::TcpStream;
    let port = free_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let daemon = Daemon::start(
        &format!(
            "listen {server}\nworkers 1\nclock software\nlocal stratum 2\nmetrics {metrics}\n"
        ),
        server,
    );
    scrape_metrics(metrics);
    let (rss_before, threads_before) = daemon.rss_kb_and_threads();
    let check = |what: &str| {
        let (rss, threads) = daemon.rss_kb_and_threads();
        assert!(
            rss <= rss_before + 20 * 1024,
            "{what}: RSS {rss} kB, was {rss_before} kB"
        );
        assert!(
            threads <= threads_before,
            "{what}: {threads} threads, was {threads_before}"
        );
        assert!(
            query(server, 4, Duration::from_secs(1)).is_some(),
            "{what}: NTP not served"
        );
    };

    // 1. One 64 MiB header line: the server stops reading after 8 KiB.
    let mut stream = TcpStream::connect(metrics).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ")
        .unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    for _ in 0..64 {
        if stream.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let head = String::from_utf8_lossy(&answer);
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 431"),
        "huge header answered: {head:.80}"
    );
    assert!(sent < 64 << 20, "the server read all 64 MiB of one header");
    check("huge header");
    scrape_metrics(metrics);

    // 2. 2,000 slow connections, each with a byte of a request.
    raise_fd_limit(4096);
    let mut slow = Vec::new();
    for _ in 0..2000 {
        if let Ok(mut s) = TcpStream::connect(metrics) {
            let _ = s.write_all(b"G");
            slow.push(s);
        }
    }
    check("2,000 slow connections");
    drop(slow);
    std::thread::sleep(Duration::from_millis(200));
    scrape_metrics(metrics);

    // 3. 600 idle connections held open, then a scrape while they are held:
    // over the cap they are closed at once, under it they time out.
    let idle: Vec<TcpStream> = (0..600)
        .filter_map(|_| TcpStream::connect(metrics).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    check("600 idle connections");
    scrape_metrics(metrics);
    drop(idle);
    scrape_metrics(metrics);
    drop(daemon);
}

/// Lets this test process hold `n` descriptors (its hard limit permitting).
fn raise_fd_limit(n: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, n.min(hard), hard).unwrap();
}
