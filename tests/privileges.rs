//! What tachyond keeps after start-up: started as root it becomes its user,
//! started by a service manager with ambient capabilities it sheds them; in
//! both cases nothing but CAP_SYS_TIME (and that only to discipline the
//! system clock, never in tests) and no_new_privs. And the shipped systemd
//! unit passes systemd-analyze.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;

fn needs_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert_eq!(
        std::env::var("TACHYON_SKIP_EXTERNAL").as_deref(),
        Ok("1"),
        "these tests start tachyond as root: run them as root (as CI does), or set \
         TACHYON_SKIP_EXTERNAL=1 to skip"
    );
    false
}

/// CapEff, CapAmb and NoNewPrivs of a running process.
fn proc_status(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str, radix| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| u64::from_str_radix(v.trim(), radix).unwrap())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    (
        field("CapEff:", 16),
        field("CapAmb:", 16),
        field("NoNewPrivs:", 10),
    )
}

fn start(
    prefix: &[&str],
    extra_args: &[&str],
    config: &str,
) -> (Child, SocketAddr, std::path::PathBuf) {
    let port = free_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = scratch_dir("privileges");
    // World-readable, so that an unprivileged tachyond can read its config.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The control socket's directory, the unprivileged daemon's own.
    std::fs::create_dir(dir.join("run")).unwrap();
    nix::unistd::chown(
        &dir.join("run"),
        Some(nix::unistd::Uid::from_raw(65534)),
        None,
    )
    .unwrap();
    std::fs::write(
        dir.join("ntp.conf"),
        format!("listen {server}\nworkers 1\nclock software\n{config}"),
    )
    .unwrap();
    let mut command = Command::new(
        prefix
            .first()
            .copied()
            .unwrap_or(env!("CARGO_BIN_EXE_tachyond")),
    );
    if !prefix.is_empty() {
        command
            .args(&prefix[1..])
            .arg(env!("CARGO_BIN_EXE_tachyond"));
    }
    let child = command
        .arg("--config")
        .arg(dir.join("ntp.conf"))
        .arg("--control-socket")
        .arg(dir.join("run/control.sock"))
        .args(extra_args)
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .expect("start tachyond");
    let deadline = Instant::now() + Duration::from_secs(10);
    while query(server, 4, Duration::from_millis(200)).is_none() {
        assert!(
            Instant::now() < deadline,
            "tachyond did not answer:\n{}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
    }
    (child, server, dir)
}

#[test]
fn ambient_capabilities_are_shed_after_binding() {
    if !needs_root() || !have_tool("setpriv", "util-linux") {
        return;
    }
    // As a service manager starts it: an unprivileged user with ambient
    // capabilities to bind port 123 and to set the time.
    let caps = "+net_bind_service,+net_admin,+sys_time";
    let (mut child, _, dir) = start(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
        ],
        &[],
        "local stratum 2\n",
    );
    // setpriv execs tachyond: the child's pid is the daemon's.
    let (effective, ambient, no_new_privs) = proc_status(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.join("log")).unwrap();
    assert_eq!(
        effective, 0,
        "capabilities kept with clock software:\n{log}"
    );
    assert_eq!(ambient, 0, "ambient capabilities kept:\n{log}");
    assert_eq!(no_new_privs, 1, "{log}");
}

#[test]
fn root_becomes_its_user_and_warns_about_what_it_cannot_keep() {
    if !needs_root() {
        return;
    }
    let drift_dir = scratch_dir("drift-root-only");
    let (mut child, _, dir) = start(
        &[],
        &["--user", "nobody"],
        &format!(
            "server 127.0.0.1 iburst\ndriftfile {}/ntp.drift\n",
            drift_dir.display()
        ),
    );
    let (effective, _, no_new_privs) = proc_status(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.join("log")).unwrap();
    assert_eq!(effective, 0, "{log}");
    assert_eq!(no_new_privs, 1, "{log}");
    assert!(log.contains("running as nobody"), "{log}");
    assert!(log.contains("shared account nobody"), "{log}");
    assert!(
        log.contains("its directory is not writable by nobody"),
        "no driftfile warning:\n{log}"
    );
}

#[test]
fn the_systemd_unit_verifies() {
    if !have_tool("systemd-analyze", "systemd") {
        return;
    }
    let dir = scratch_dir("unit");
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/systemd/tachyond.service"
    ))
    .unwrap()
    .replace("/usr/sbin/tachyond", env!("CARGO_BIN_EXE_tachyond"));
    let path = dir.join("tachyond.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("tachyond.service:"),
        "warnings about the unit: {text}"
    );
}
