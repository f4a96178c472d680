//! Name look-ups never hold up the polling of other upstreams: with two names
//! behind a resolver that never answers, a literal upstream is polled at once.
//! Runs tachyond in a network namespace of its own whose resolv.conf points
//! at an address on a dummy interface there, where queries vanish.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Seconds from the daemon's first log line to the first that contains `what`.
fn seconds_until(log: &str, what: &str) -> Option<f64> {
    let stamp = |line: &str| -> Option<f64> {
        // [2026-11-30T01:02:03.456789Z LEVEL ...]
        let time = line.get(12..27)?;
        let (hms, micros) = time.split_once('.')?;
        let mut parts = hms.split(':').map(|p| p.parse::<f64>().ok());
        let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
        Some(h * 3600.0 + m * 60.0 + s + micros.parse::<f64>().ok()? * 1e-6)
    };
    let first = stamp(log.lines().next()?)?;
    let line = log.lines().find(|l| l.contains(what))?;
    Some(stamp(line)? - first)
}

#[test]
fn a_silent_resolver_does_not_delay_a_literal_upstream() {
    if !may_make_netns() || !have_tool("chronyd", "chrony") {
        return;
    }
    let ns = Netns::new("dns");
    // Queries to 10.53.0.2 leave through a veth pair inside the namespace,
    // addressed to a MAC nobody has: dropped, never answered.
    let n = ns.name.as_str();
    ns.ip(&[
        "-n", n, "link", "add", "dns0", "type", "veth", "peer", "name", "dns1",
    ]);
    ns.ip(&["-n", n, "addr", "add", "10.53.0.1/24", "dev", "dns0"]);
    ns.ip(&["-n", n, "link", "set", "dns0", "up"]);
    ns.ip(&["-n", n, "link", "set", "dns1", "up"]);
    ns.ip(&[
        "-n",
        n,
        "neigh",
        "replace",
        "10.53.0.2",
        "lladdr",
        "02:00:00:00:53:02",
        "dev",
        "dns0",
        "nud",
        "permanent",
    ]);
    ns.etc_file(
        "resolv.conf",
        "nameserver 10.53.0.2\noptions timeout:5 attempts:2\n",
    );

    let dir = scratch_dir("resolver");
    let chrony_conf = dir.join("chrony.conf");
    std::fs::write(
        &chrony_conf,
        format!(
            "local stratum 1\nallow all\nbindaddress 127.0.0.1\nport 123\ncmdport 0\npidfile {}/chronyd.pid\n",
            dir.display()
        ),
    )
    .unwrap();
    let _upstream = Killed(
        ns.command("chronyd")
            .args(["-x", "-d", "-u", "root", "-f"])
            .arg(&chrony_conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chronyd"),
    );
    let conf = dir.join("ntp.conf");
    std::fs::write(
        &conf,
        "server silent-one.example iburst\nserver silent-two.example iburst\n\
         server 127.0.0.1 iburst\nlisten 127.0.0.1:12300\nclock software\nworkers 1\n",
    )
    .unwrap();
    let log_path = dir.join("tachyond.log");
    let daemon = Killed(
        ns.command(env!("CARGO_BIN_EXE_tachyond"))
            .arg("--config")
            .arg(&conf)
            .arg("--control-socket")
            .arg(dir.join("control.sock"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("start tachyond"),
    );
    // The literal upstream answers within seconds; with blocking look-ups
    // its first poll waited for both names (2 x 10 s here).
    let deadline = Instant::now() + Duration::from_secs(8);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("system peer now") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(daemon);
    let polled = seconds_until(&log, "server 127.0.0.1: polling 127.0.0.1")
        .unwrap_or_else(|| panic!("the literal upstream was never polled:\n{log}"));
    assert!(polled < 1.0, "first poll after {polled:.1} s:\n{log}");
    let answered = seconds_until(&log, "system peer now")
        .unwrap_or_else(|| panic!("the literal upstream never answered:\n{log}"));
    assert!(answered < 6.0, "first answer after {answered:.1} s:\n{log}");
    assert!(
        !log.contains("cannot resolve"),
        "the silent resolver cannot have failed yet:\n{log}"
    );
}
