//! tachyonctl against a running tachyond, and against none.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;

fn tachyonctl(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tachyonctl"))
        .arg("--control-socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run tachyonctl")
}

#[test]
fn status_stats_and_sources_from_a_running_daemon() {
    let port = free_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let daemon = Daemon::start(
        &format!(
            "listen {server}\nworkers 2\nclock software\nlocal stratum 3\nserver 192.0.2.1 iburst\n"
        ),
        server,
    );
    for _ in 0..30 {
        assert!(query(server, 4, Duration::from_secs(1)).is_some());
    }
    let socket = daemon.control_socket();

    let out = tachyonctl(&socket, &["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["stratum"], 3);
    assert_eq!(status["synchronized"], true);
    assert_eq!(status["workers"], 2);
    assert_eq!(status["clock"], "software");
    assert!(status["answered"].as_u64().unwrap() >= 30);

    let out = tachyonctl(&socket, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("synchronized   yes") && text.contains(".LOCL."),
        "{text}"
    );

    let out = tachyonctl(&socket, &["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(stats["response_time"]["count"].as_u64().unwrap() >= 30);
    assert!(stats["response_time"]["p99"].as_f64().unwrap() > 0.0);
    let out = tachyonctl(&socket, &["stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("server time T3-T2"), "{text}");

    let out = tachyonctl(&socket, &["sources"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("remote") && text.contains("reach"), "{text}");
    drop(daemon);
}

#[test]
fn clear_message_without_a_daemon() {
    let dir = scratch_dir("no-daemon");
    let out = tachyonctl(&dir.join("nothing.sock"), &["status"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tachyond is not running"), "{err}");
}

/// A client that sends a byte every 1.5 s neither freezes the socket for
/// others nor holds its connection for long.
#[test]
fn a_slow_client_does_not_freeze_the_control_socket() {
    use std::io::{Read, Write};
    let port = free_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let daemon = Daemon::start(
        &format!("listen {server}\nworkers 1\nclock software\nlocal stratum 3\n"),
        server,
    );
    let socket = daemon.control_socket();
    let mut slow = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    slow.write_all(b"s").unwrap();
    let started = std::time::Instant::now();
    let out = tachyonctl(&socket, &["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "status took {:?} behind a slow client",
        started.elapsed()
    );
    // The slow client is cut off within the exchange deadline.
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = slow.write_all(b"t");
    let mut rest = Vec::new();
    let cut = std::time::Instant::now();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        cut.elapsed() < Duration::from_secs(2),
        "slow client held for {:?}",
        started.elapsed()
    );
    drop(daemon);
}

/// `status` adds up (received = answered + KoD + dropped) and shows KoDs.
#[test]
fn status_counts_add_up_with_kods() {
    let port = free_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let daemon = Daemon::start(
        &format!(
            "listen {server}\nworkers 1\nclock software\nlocal stratum 3\n\
             restrict default kod limited\nratelimit interval 3 burst 2 leak 8\n"
        ),
        server,
    );
    for _ in 0..40 {
        let _ = query(server, 4, Duration::from_millis(100));
    }
    let out = tachyonctl(&daemon.control_socket(), &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = |k: &str| {
        status[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k}: {status}"))
    };
    assert!(n("kod") >= 1, "{status}");
    assert_eq!(
        n("received"),
        n("answered") + n("kod") + n("dropped"),
        "{status}"
    );
    let text = String::from_utf8_lossy(&tachyonctl(&daemon.control_socket(), &["status"]).stdout)
        .to_string();
    assert!(text.contains(" KoD, "), "{text}");
    drop(daemon);
}

/// Started as root and dropping to another user, tachyond hands the socket
/// (and the directory it made for it) to that user: the socket is removed on
/// a clean stop, and a user who may not connect is told who may.
#[test]
fn the_socket_belongs_to_the_service_user_and_goes_away_on_stop() {
    if !nix::unistd::geteuid().is_root() {
        assert_eq!(
            std::env::var("TACHYON_SKIP_EXTERNAL").as_deref(),
            Ok("1"),
            "this test drops privileges: run it as root, as CI does"
        );
        return;
    }
    let port = free_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = scratch_dir("control-owner");
    let socket = dir.join("run").join("tachyond.sock");
    std::fs::write(
        dir.join("ntp.conf"),
        format!("listen {server}\nworkers 1\nclock software\nlocal stratum 3\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tachyond"))
        .arg("--config")
        .arg(dir.join("ntp.conf"))
        .arg("--control-socket")
        .arg(&socket)
        .args(["--user", "nobody"])
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while query(server, 4, Duration::from_millis(200)).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "tachyond did not start"
        );
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(meta.uid(), nobody.uid.as_raw());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert!(tachyonctl(&socket, &["status"]).status.success());
    // Another unprivileged user is told whom to ask.
    let out = Command::new("setpriv")
        .args(["--reuid=12345", "--regid=12345", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_tachyonctl"))
        .arg("--control-socket")
        .arg(&socket)
        .arg("status")
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("as nobody"), "{err}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        std::fs::symlink_metadata(&socket).is_err(),
        "control socket left behind:\n{}",
        std::fs::read_to_string(dir.join("log")).unwrap()
    );
}
