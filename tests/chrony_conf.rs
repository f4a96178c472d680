//! tachyond with a chrony.conf: one of ours that serves 127.0.0.1 only, and
//! Debian's stock /etc/chrony/chrony.conf (installed with the chrony
//! package), which loads, starts, and answers nobody until an `allow` line
//! is added, as with chronyd.
//!
//! Tests never let tachyond near the host clock or the network: each file
//! here says `clock software`, binds loopback addresses on a free port, and
//! has `local stratum`, so no upstream (the stock file's pool) is polled.
//! The stock file is run through a file of ours that includes it and then
//! sets those, as an operator would override it in a conf.d file.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DEBIAN_CONF: &str = "/etc/chrony/chrony.conf";

/// A tachyond started on a configuration file, stopped when dropped.
struct Running {
    child: Option<Child>,
    dir: PathBuf,
}

impl Running {
    /// Starts tachyond on `config` and waits until it logs that it serves.
    fn start(config: &Path, dir: &Path) -> Running {
        let text = std::fs::read_to_string(config).unwrap();
        assert!(
            text.lines().any(|l| l.trim() == "clock software"),
            "test configurations must say `clock software`:\n{text}"
        );
        let log = std::fs::File::create(dir.join("tachyond.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tachyond"))
            .arg("--config")
            .arg(config)
            .arg("--control-socket")
            .arg(dir.join("control.sock"))
            .args(["--log-level", "debug"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tachyond");
        let mut running = Running {
            child: Some(child),
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !running.log().contains("serving on ") {
            if let Some(status) = running.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tachyond exited with {status}:\n{}", running.log());
            }
            assert!(
                Instant::now() < deadline,
                "tachyond did not start:\n{}",
                running.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        running
    }

    fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("tachyond.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// SIGTERM, then the log with the stop summary.
    fn stop(mut self) -> String {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tachyond did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn check_config(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tachyond"))
        .arg("--check-config")
        .arg(path)
        .output()
        .expect("run tachyond --check-config")
}

/// The loopback addresses and free port a test file serves on.
fn overrides(port: u16) -> String {
    format!(
        "# The test's own settings: never touch the host clock, poll nothing,\n\
         # serve loopback on a free port.\n\
         clock software\nlocal stratum 2\nworkers 1\n\
         bindaddress 127.0.0.1\nbindaddress ::1\nport {port}\n"
    )
}

/// Whether Debian's stock file is here. It must be, unless
/// TACHYON_SKIP_EXTERNAL=1 says a missing one may skip the test.
fn have_debian_conf() -> bool {
    if Path::new(DEBIAN_CONF).exists() {
        return true;
    }
    if std::env::var("TACHYON_SKIP_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("SKIPPED: {DEBIAN_CONF} is absent (TACHYON_SKIP_EXTERNAL=1)");
        return false;
    }
    panic!("{DEBIAN_CONF} is absent: run scripts/install-test-deps (Debian package chrony)");
}

/// Asks `server` a few times; whether any answer came.
fn answered(server: SocketAddr) -> bool {
    (0..3).any(|_| query(server, 4, Duration::from_millis(300)).is_some())
}

#[test]
fn a_chrony_conf_serves_the_clients_it_allows() {
    if !have_tool("chronyd", "chrony") {
        return;
    }
    let port = free_port();
    let dir = scratch_dir("chrony-conf");
    let config = dir.join("chrony.conf");
    std::fs::write(
        &config,
        format!(
            "# Serve 127.0.0.1 only.\nallow 127.0.0.1\n{}",
            overrides(port)
        ),
    )
    .unwrap();
    let out = check_config(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("chrony.conf: read as chrony (the file is named chrony.conf)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("chrony.conf: OK (0 upstream lines, 3 restrict rules, "),
        "{stdout}"
    );

    let daemon = Running::start(&config, &dir);
    assert!(
        daemon
            .log()
            .contains("read as chrony (the file is named chrony.conf)"),
        "{}",
        daemon.log()
    );
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let answer = query(v4, 4, Duration::from_secs(1)).expect("127.0.0.1 is allowed");
    assert_eq!(answer.header.stratum, 2);
    assert!(!answered(v6), "::1 is not allowed, but was answered");

    // A real client accepts the answer: chronyd -Q measures and sets nothing.
    let chronyd_dir = scratch_dir("chronyd-q");
    let out = Command::new("timeout")
        .args(["20", "chronyd", "-Q", "-f", "/dev/null", "-u", "root"])
        .arg(format!("server 127.0.0.1 port {port} iburst maxsamples 4"))
        .arg(format!("pidfile {}/chronyd.pid", chronyd_dir.display()))
        .arg("cmdport 0")
        .output()
        .expect("run chronyd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chronyd -Q failed: {stderr}");
    assert!(stderr.contains("System clock wrong by"), "{stderr}");

    let log = daemon.stop();
    assert!(summary_count(&log, "denied") >= 1, "{log}");
    assert!(summary_count(&log, "answered") >= 2, "{log}");
}

#[test]
fn debian_stock_chrony_conf_checks_starts_and_answers_only_with_allow() {
    if !have_debian_conf() {
        return;
    }
    // --check-config: valid, read as chrony, with the documented warnings,
    // each naming the file and its line.
    let out = check_config(Path::new(DEBIAN_CONF));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout} {stderr}");
    assert!(
        stdout.starts_with(&format!(
            "{DEBIAN_CONF}: read as chrony (the file is named chrony.conf)\n{DEBIAN_CONF}: OK ("
        )),
        "{stdout}"
    );
    for needle in [
        "no 'allow' directive: as chronyd does, tachyon answers no NTP client",
        "rtcsync: ignored by tachyon",
        "leapsectz right/UTC: tachyon reads the leap seconds from",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    for line in stderr.lines() {
        assert!(line.starts_with("warning: /etc/chrony/"), "{line}");
    }

    // Started on it: it serves nobody.
    let port = free_port();
    let dir = scratch_dir("chrony-stock");
    let config = dir.join("chrony.conf");
    std::fs::write(
        &config,
        format!("include {DEBIAN_CONF}\n{}", overrides(port)),
    )
    .unwrap();
    let daemon = Running::start(&config, &dir);
    let log = daemon.log();
    assert!(log.contains("no 'allow' directive"), "{log}");
    // Its pool was read, and is not polled in the test (local stratum).
    assert!(
        log.contains("server/pool line(s) are not polled while 'local' is set"),
        "{log}"
    );
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(!answered(v4), "answered without an allow line");
    let log = daemon.stop();
    assert!(summary_count(&log, "denied") >= 1, "{log}");
    assert_eq!(summary_count(&log, "answered"), 0, "{log}");

    // The same with an allow line, as an operator adds one: it answers.
    std::fs::write(
        &config,
        format!(
            "include {DEBIAN_CONF}\nallow 127.0.0.1\n{}",
            overrides(port)
        ),
    )
    .unwrap();
    let daemon = Running::start(&config, &dir);
    assert!(!daemon.log().contains("no 'allow' directive"));
    assert!(answered(v4), "not answered with 'allow 127.0.0.1'");
    let log = daemon.stop();
    assert!(summary_count(&log, "answered") >= 1, "{log}");
}

#[test]
fn check_config_names_the_file_and_line_of_an_error() {
    let dir = scratch_dir("chrony-check");
    let confd = dir.join("conf.d");
    std::fs::create_dir_all(&confd).unwrap();
    std::fs::write(confd.join("10-ok.conf"), "allow 10/8\n").unwrap();
    std::fs::write(confd.join("20-bad.conf"), "# ours\nallow 10.0.0.0/40\n").unwrap();
    let config = dir.join("chrony.conf");
    std::fs::write(
        &config,
        format!(
            "pool pool.example.org iburst\nconfdir {}\n",
            confd.display()
        ),
    )
    .unwrap();
    let out = check_config(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "error: {}:2: allow: \"10.0.0.0/40\": the prefix length must be 0..=32",
            confd.join("20-bad.conf").display()
        )
    );
    // The same file read as ntp.conf stops at its first chrony line.
    let out = Command::new(env!("CARGO_BIN_EXE_tachyond"))
        .args(["--config-format", "ntp", "--check-config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: {}:2: unknown directive 'confdir'",
            config.display()
        )),
        "{stderr}"
    );
}
