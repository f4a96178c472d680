//! Real NTP clients accept tachyond's answers: ntpdig (NTPsec) and chronyd -Q
//! (chrony), with each I/O backend; chronyd with `xleave` gets interleaved
//! replies (RFC 9769).
//!
//! ntpdig only asks port 123, so each of its tests binds its own 127.0.x.y:123
//! (needs root or CAP_NET_BIND_SERVICE, as in CI).

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;

fn config(backend: &str, listen: &str, stratum: u8) -> String {
    format!("listen {listen}\nworkers 1\nio {backend}\nclock software\nlocal stratum {stratum}\n")
}

#[test]
fn ntpdig_accepts_the_answer() {
    if !have_tool("ntpdig", "ntpsec-ntpdate") {
        return;
    }
    for (i, backend) in BACKENDS.iter().enumerate() {
        let addr = format!("127.0.3.{}", 10 + i);
        assert!(
            may_bind_123(&addr),
            "cannot bind {addr}:123: run the tests as root (as CI does) or give cargo's test \
             binaries CAP_NET_BIND_SERVICE"
        );
        let probe: SocketAddr = format!("{addr}:123").parse().unwrap();
        let daemon = Daemon::start(&config(backend, &format!("{addr}:123"), 3), probe);
        let out = Command::new("ntpdig")
            .args(["--json", "-t", "3", &addr])
            .output()
            .expect("run ntpdig");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{backend}: ntpdig failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("\"stratum\":3"), "{backend}: {stdout}");
        // The answer is our own clock: the offset ntpdig measured is tiny.
        let offset: f64 = stdout
            .split("\"offset\":")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no offset in {stdout}"));
        assert!(offset.abs() < 0.01, "{backend}: offset {offset}");
        drop(daemon);
    }
}

#[test]
fn chronyd_query_accepts_the_answer() {
    if !have_tool("chronyd", "chrony") {
        return;
    }
    for backend in BACKENDS {
        let port = free_port();
        let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let daemon = Daemon::start(&config(backend, &server.to_string(), 2), server);
        let dir = scratch_dir("chronyd-q");
        // -Q: measure and print the offset, never set the clock. Measurements are
        // logged so the test can read the stratum chronyd saw.
        let out = Command::new("timeout")
            .args(["20", "chronyd", "-Q", "-f", "/dev/null", "-u", "root"])
            .arg(format!("server 127.0.0.1 port {port} iburst maxsamples 4"))
            .arg(format!("pidfile {}/chronyd.pid", dir.display()))
            .arg("cmdport 0")
            .arg(format!("logdir {}", dir.display()))
            .arg("log measurements")
            .output()
            .expect("run chronyd");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{backend}: chronyd -Q failed: {stderr}"
        );
        assert!(
            stderr.contains("System clock wrong by"),
            "{backend}: {stderr}"
        );
        let log = std::fs::read_to_string(dir.join("measurements.log")).expect("measurements.log");
        let samples: Vec<&str> = log.lines().filter(|l| l.contains("127.0.0.1")).collect();
        assert!(!samples.is_empty(), "{backend}: no measurements:\n{log}");
        for sample in samples {
            let fields: Vec<&str> = sample.split_whitespace().collect();
            // Date Time IP L St ...
            assert_eq!(fields[4], "2", "{backend}: stratum in {sample}");
            // refid LOCL in hex
            assert!(sample.contains("4C4F434C"), "{backend}: refid in {sample}");
        }
        drop(daemon);
        // Give the next daemon a clean start.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// chronyd -Q with `xleave` on, and the measurements it logged: the mode
/// column (the second to last but one, "4B" basic, "4I" interleaved) of each.
fn chronyd_xleave_modes(backend: &str, extra_config: &str) -> Vec<String> {
    let port = free_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let daemon = Daemon::start(
        &format!("{}{extra_config}", config(backend, &server.to_string(), 2)),
        server,
    );
    let dir = scratch_dir("chronyd-xleave");
    let out = Command::new("timeout")
        .args(["30", "chronyd", "-Q", "-f", "/dev/null", "-u", "root"])
        .arg(format!(
            "server 127.0.0.1 port {port} iburst xleave maxsamples 8"
        ))
        .arg(format!("pidfile {}/chronyd.pid", dir.display()))
        .arg("cmdport 0")
        .arg(format!("logdir {}", dir.display()))
        .arg("log measurements")
        .output()
        .expect("run chronyd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{backend}: chronyd -Q failed: {stderr}"
    );
    let log = std::fs::read_to_string(dir.join("measurements.log")).expect("measurements.log");
    drop(daemon);
    std::thread::sleep(Duration::from_millis(50));
    log.lines()
        .filter(|l| l.contains("127.0.0.1"))
        .map(|l| {
            // ... Refid MTxRx: "4B K K" is mode 4, basic, kernel TX and RX stamps.
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields[fields.len() - 3].to_string()
        })
        .collect()
}

#[test]
fn chronyd_with_xleave_gets_interleaved_replies_from_its_third_exchange() {
    if !have_tool("chronyd", "chrony") {
        return;
    }
    for backend in BACKENDS {
        let modes = chronyd_xleave_modes(backend, "");
        assert!(modes.len() >= 4, "{backend}: {modes:?}");
        // Its first request has no origin, its second names a receive stamp
        // whose pair the server had no reason to keep (the first request did
        // not ask): both basic. Every later one is interleaved.
        assert_eq!(&modes[..2], ["4B", "4B"], "{backend}: {modes:?}");
        assert!(modes[2..].iter().all(|m| m == "4I"), "{backend}: {modes:?}");
    }
}

#[test]
fn chronyd_with_xleave_gets_basic_replies_when_the_mode_is_off() {
    if !have_tool("chronyd", "chrony") {
        return;
    }
    for backend in BACKENDS {
        let modes = chronyd_xleave_modes(backend, "xleave off\n");
        assert!(modes.len() >= 3, "{backend}: {modes:?}");
        assert!(modes.iter().all(|m| m == "4B"), "{backend}: {modes:?}");
    }
}
