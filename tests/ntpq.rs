//! Mode 6 against the real daemon: NTPsec's ntpq (`-p`, `-c rv`, `-c as`,
//! `-c "rv 0 offset,frequency"`) and monitoring-plugins' check_ntp_peer and
//! check_ntp_time read tachyond as they read ntpd, from an address `restrict`
//! allows queries from; any other address gets nothing. Each test has its
//! own 127.0.8.x addresses on port 123 (ntpq asks only port 123): run as
//! root, as CI does.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::fake_ntp::{honest, Clock, FakeNtp};
use common::*;

/// An upstream on `upstream`:123 and tachyond on `server`:123 polling it,
/// queries allowed from 127.0.0.1 only; returns once tachyond selected it.
fn synchronized(upstream: &str, server: &str) -> (FakeNtp, Daemon) {
    assert!(
        may_bind_123(server),
        "these tests bind 127.0.8.x:123: run them as root (as CI does)"
    );
    let fake = FakeNtp::start((upstream, 123), 1, Clock::HOST, honest()).unwrap();
    let probe: SocketAddr = format!("{server}:123").parse().unwrap();
    let daemon = Daemon::start(
        &format!(
            "server {upstream} iburst\nlisten {server}:123\nworkers 1\nclock software\n\
             restrict default kod limited nomodify notrap nopeer noquery\nrestrict 127.0.0.1\n"
        ),
        probe,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_tachyonctl"))
            .arg("--control-socket")
            .arg(daemon.control_socket())
            .args(["sources", "--json"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("\"mark\":\"*\"") {
            return (fake, daemon);
        }
        assert!(
            Instant::now() < deadline,
            "not synchronized:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn run(mut command: Command) -> String {
    let out = command.output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{command:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn ntpq_shows_sources_and_system_variables() {
    let Some(_) = ntpq() else { return };
    let (_upstream, daemon) = synchronized("127.0.8.1", "127.0.8.2");
    let ntpq_with = |args: &[&str]| {
        let mut c = ntpq().unwrap();
        c.args(args).arg("127.0.8.2");
        run(c)
    };

    // `ntpq -p`: the source, its tally code, reach, delay, offset, jitter.
    let peers = ntpq_with(&["-p"]);
    let row = peers
        .lines()
        .find(|l| l.starts_with('*'))
        .unwrap_or_else(|| panic!("no system peer row:\n{peers}"));
    let fields: Vec<&str> = row[1..].split_whitespace().collect();
    // remote refid st t when poll reach delay offset jitter
    assert_eq!(fields[0], "127.0.8.1", "{row}");
    assert_eq!(fields[1], ".TEST.", "{row}");
    assert_eq!(fields[2], "1", "{row}");
    assert_eq!(fields[3], "u", "{row}");
    assert!(
        u32::from_str_radix(fields[6], 8).unwrap() >= 1,
        "reach: {row}"
    );
    for (name, field) in [
        ("delay", fields[7]),
        ("offset", fields[8]),
        ("jitter", fields[9]),
    ] {
        let ms: f64 = field.parse().unwrap_or_else(|_| panic!("{name}: {row}"));
        assert!(ms.abs() < 50.0, "{name} {ms} ms: {row}");
    }

    // `ntpq -c rv`: the system variables.
    let rv = ntpq_with(&["-c", "rv"]);
    assert!(rv.contains("sync_ntp"), "{rv}");
    for needle in [
        "leap=00",
        "stratum=2",
        "refid=127.0.8.1",
        "offset=",
        "frequency=",
        "version=\"tachyond",
    ] {
        assert!(rv.contains(needle), "{needle}: {rv}");
    }
    // `ntpq -c "rv 0 offset,frequency"`: only those.
    let two = ntpq_with(&["-c", "rv 0 offset,frequency"]);
    assert!(
        two.contains("offset=") && two.contains("frequency="),
        "{two}"
    );
    assert!(!two.contains("stratum="), "{two}");
    // `ntpq -c as`: the association and its condition.
    let associations = ntpq_with(&["-c", "as"]);
    assert!(associations.contains("sys.peer"), "{associations}");
    // `ntpq -c "rv 1"`: one association's variables.
    let peer = ntpq_with(&["-c", "rv 1"]);
    assert!(peer.contains("srcadr=127.0.8.1"), "{peer}");
    assert!(
        peer.contains("sel_sys.peer") || peer.contains("sys.peer"),
        "{peer}"
    );

    let log = daemon.stop();
    assert!(summary_count(&log, "query") >= 6, "{log}");
    assert_eq!(summary_count(&log, "query_refused"), 0, "{log}");
}

#[test]
fn monitoring_plugins_report_ok() {
    let check_peer = "/usr/lib/nagios/plugins/check_ntp_peer";
    if !have_tool(check_peer, "monitoring-plugins-basic") {
        return;
    }
    let (_upstream, _daemon) = synchronized("127.0.8.3", "127.0.8.4");
    let out = run({
        let mut c = Command::new(check_peer);
        c.args([
            "-H",
            "127.0.8.4",
            "-w",
            "0.5",
            "-c",
            "1",
            "-W",
            "4",
            "-C",
            "6",
        ]);
        c
    });
    assert!(out.starts_with("NTP OK"), "{out}");
    assert!(out.contains("stratum=1"), "{out}");
    let out = run({
        let mut c = Command::new("/usr/lib/nagios/plugins/check_ntp_time");
        c.args(["-H", "127.0.8.4", "-w", "0.5", "-c", "1"]);
        c
    });
    assert!(out.starts_with("NTP OK"), "{out}");
}

#[test]
fn queries_from_an_address_under_noquery_get_nothing() {
    let (_upstream, daemon) = synchronized("127.0.8.5", "127.0.8.6");
    // READSTAT from 127.0.0.5, which only `restrict default ... noquery`
    // covers; then the same from 127.0.0.1, which may ask.
    let readstat = [0x16u8, 0x01, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    let ask = |from: &str| {
        let socket = UdpSocket::bind((from, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        socket.send_to(&readstat, ("127.0.8.6", 123)).unwrap();
        let mut buf = [0u8; 600];
        socket.recv_from(&mut buf).ok().map(|(n, _)| n)
    };
    assert_eq!(ask("127.0.0.5"), None, "a noquery address was answered");
    let n = ask("127.0.0.1").expect("127.0.0.1 may ask");
    assert!(n >= 12);
    let log = daemon.stop();
    assert_eq!(summary_count(&log, "query_refused"), 1, "{log}");
    assert_eq!(summary_count(&log, "query"), 1, "{log}");
}
