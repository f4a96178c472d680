//! The real tachyond binary answers NTP clients, with each I/O backend, over
//! IPv4 and IPv6, following the reply rules.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tachyon::proto::{LeapIndicator, Mode};

fn config(backend: &str, port: u16, extra: &str) -> String {
    format!(
        "listen 127.0.0.1:{port}\nlisten [::1]:{port}\nworkers 2\nio {backend}\nclock software\n{extra}"
    )
}

fn answers_v1_to_v4_over_ipv4_and_ipv6(backend: &str) {
    let port = free_port();
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let daemon = Daemon::start(&config(backend, port, "local stratum 2\n"), v4);
    for server in [v4, v6] {
        for version in 1..=4u8 {
            let a = query(server, version, Duration::from_secs(2))
                .unwrap_or_else(|| panic!("{backend}: no answer from {server} v{version}"));
            let h = a.header;
            assert_eq!(a.len, 48);
            assert_eq!(h.mode, Mode::Server);
            assert_eq!(h.version, version, "{backend}: version echoed");
            assert_eq!(h.stratum, 2);
            assert_eq!(h.leap, LeapIndicator::NoWarning);
            assert_eq!(&h.reference_id, b"LOCL");
            assert_eq!(h.poll, 6);
            // T1 <= T2 <= T3 <= T4 on one shared clock (with 1 us of slack for
            // the 2^-32 s rounding of the timestamps).
            let t2 = ntp_to_unix_ns(h.receive_ts);
            let t3 = ntp_to_unix_ns(h.transmit_ts);
            assert!(a.t1_ns <= t2 + 1_000, "{backend}: T1 {} > T2 {t2}", a.t1_ns);
            assert!(t2 <= t3, "{backend}: T2 {t2} > T3 {t3}");
            assert!(t3 <= a.t4_ns + 1_000, "{backend}: T3 {t3} > T4 {}", a.t4_ns);
        }
    }
    let log = daemon.stop();
    let wanted = if backend == "uring" {
        "backend io_uring"
    } else {
        "backend recvmmsg/sendmmsg"
    };
    assert!(
        log.contains(wanted),
        "{backend}: log lacks {wanted:?}:\n{log}"
    );
    // 8 queries above plus the start-up probe(s), none dropped.
    assert!(
        summary_count(&log, "answered") >= 9,
        "{backend}: summary:\n{log}"
    );
    assert_eq!(
        summary_count(&log, "received"),
        summary_count(&log, "answered"),
        "{backend}: nothing dropped:\n{log}"
    );
}

#[test]
fn answers_v1_to_v4_over_ipv4_and_ipv6_with_io_uring() {
    answers_v1_to_v4_over_ipv4_and_ipv6("uring");
}

#[test]
fn answers_v1_to_v4_over_ipv4_and_ipv6_with_mmsg() {
    answers_v1_to_v4_over_ipv4_and_ipv6("mmsg");
}

fn unsynchronized_server_says_so(backend: &str) {
    let port = free_port();
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let daemon = Daemon::start(&config(backend, port, ""), v4);
    let a = query(v4, 4, Duration::from_secs(2)).expect("answer");
    assert_eq!(a.header.leap, LeapIndicator::Unknown);
    assert_eq!(a.header.stratum, 0);
    assert_eq!(a.header.mode, Mode::Server);
    let log = daemon.stop();
    assert!(log.contains("unsynchronized"), "{log}");
}

#[test]
fn unsynchronized_server_says_so_with_io_uring() {
    unsynchronized_server_says_so("uring");
}

#[test]
fn unsynchronized_server_says_so_with_mmsg() {
    unsynchronized_server_says_so("mmsg");
}

fn restrict_ignore_and_noserve_drop_silently(backend: &str) {
    let port = free_port();
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let daemon = Daemon::start(
        &config(backend, port, "local stratum 2\nrestrict ::1 noserve\n"),
        v4,
    );
    assert!(query(v6, 4, Duration::from_millis(300)).is_none());
    assert!(query(v4, 4, Duration::from_secs(1)).is_some());
    let log = daemon.stop();
    assert_eq!(summary_count(&log, "denied"), 1, "{log}");
}

#[test]
fn restrict_ignore_and_noserve_drop_silently_with_io_uring() {
    restrict_ignore_and_noserve_drop_silently("uring");
}

#[test]
fn restrict_ignore_and_noserve_drop_silently_with_mmsg() {
    restrict_ignore_and_noserve_drop_silently("mmsg");
}

#[test]
fn check_config_accepts_the_seed_file_and_rejects_errors() {
    let dir = scratch_dir("check-config");
    let seed = dir.join("seed.conf");
    std::fs::write(&seed, include_str!("../docs/examples/seed-ntp.conf")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tachyond"))
        .arg("--check-config")
        .arg(&seed)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (5 upstream lines, 4 restrict rules"));

    let bad = dir.join("bad.conf");
    std::fs::write(&bad, "server a iburst\nworkers zero\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tachyond"))
        .arg("--check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.conf:2: workers"), "{err}");
}

#[test]
fn a_bad_config_stops_the_daemon_with_the_location() {
    let dir = scratch_dir("bad-config");
    let path = dir.join("ntp.conf");
    std::fs::write(&path, "listen 127.0.0.1:1234\nfrobnicate 3\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tachyond"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ntp.conf:2: ") && err.contains("frobnicate"),
        "{err}"
    );
}

#[test]
fn sighup_reloads_restrict_rules_and_names_what_needs_a_restart() {
    let port = free_port();
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let base = config("uring", port, "local stratum 2\n");
    let mut daemon = Daemon::start(&format!("{base}restrict ::1 noserve\n"), v4);
    assert!(
        query(v6, 4, Duration::from_millis(300)).is_none(),
        "denied before"
    );

    // Lift the restriction and change something that needs a restart.
    std::fs::write(&daemon.config_path, base.replace("workers 2", "workers 1")).unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while query(v6, 4, Duration::from_millis(200)).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "still denied after SIGHUP:\n{}",
            daemon.log()
        );
    }

    // A broken file is refused and the running rules stay.
    std::fs::write(
        &daemon.config_path,
        format!("{base}restrict ::1 frobnicate\n"),
    )
    .unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(query(v6, 4, Duration::from_secs(1)).is_some());
    assert!(daemon.is_running());
    let log = daemon.stop();
    assert!(log.contains("SIGHUP: reloaded 0 restrict rules"), "{log}");
    assert!(
        log.contains("SIGHUP: changes to workers take effect after a restart"),
        "{log}"
    );
    assert!(log.contains("keeping the running configuration"), "{log}");
}

/// A second tachyond on an address the first one serves refuses to start
/// (SO_REUSEPORT would otherwise let it take part of the traffic), and the
/// first one keeps every client.
#[test]
fn a_second_instance_on_the_same_address_refuses_to_start() {
    let port = free_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = format!("listen {server}\nworkers 2\nclock software\nlocal stratum 2\n");
    let first = Daemon::start(&config, server);
    let dir = scratch_dir("second");
    std::fs::write(dir.join("ntp.conf"), &config).unwrap();
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_tachyond"))
        .arg("--config")
        .arg(dir.join("ntp.conf"))
        .arg("--control-socket")
        .arg(dir.join("control.sock"))
        .output()
        .expect("run a second tachyond");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "the second instance started:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("another process already serves {server}")),
        "{stderr}"
    );
    let mut stratum_2 = 0;
    for _ in 0..200 {
        if let Some(a) = query(server, 4, Duration::from_secs(1)) {
            stratum_2 += usize::from(a.header.stratum == 2);
        }
    }
    assert_eq!(stratum_2, 200);
    drop(first);
}
