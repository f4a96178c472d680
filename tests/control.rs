//! tachyonctl against a running tachyond, and against none.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;

fn tachyonctl(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tachyonctl"))
        .arg("--socket")
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
