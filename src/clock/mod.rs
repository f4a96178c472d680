//! The clock: reading it, measuring how precisely it can be read, and
//! steering it — the [`ClockControl`] trait the sync engine drives, with the
//! software clock (`control`) and the kernel clock (`system`) behind it.

pub mod control;
pub mod system;

pub use control::{ClockControl, ClockError, ClockStatus, HostTime, SoftwareClock, SystemTime};

use std::time::UNIX_EPOCH;

/// Reads CLOCK_REALTIME (through the vDSO) in Unix nanoseconds.
#[inline]
pub fn system_unix_ns() -> i64 {
    match std::time::SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

/// The NTP precision (log2 seconds) of this system's clock reads: the mean cost
/// of one read, rounded up to a power of two, as ntpd measures it at start.
pub fn measure_precision() -> i8 {
    const READS: u32 = 2000;
    let start = std::time::Instant::now();
    let mut last = 0i64;
    for _ in 0..READS {
        last = last.max(system_unix_ns());
    }
    std::hint::black_box(last);
    let per_read = start.elapsed().as_secs_f64() / READS as f64;
    let log2 = per_read.max(1e-9).log2().ceil();
    log2.clamp(-30.0, 0.0) as i8
}

/// Whether this thread may set the system clock (CAP_SYS_TIME in its effective
/// set), read from /proc so no privilege is needed to ask.
pub fn may_set_time() -> bool {
    const CAP_SYS_TIME: u32 = 25;
    // thread-self: capabilities are per thread, and this is what the calling
    // thread (the one that will adjust the clock) holds.
    let Ok(status) = std::fs::read_to_string("/proc/thread-self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_TIME) != 0)
}

/// A process that steers the system clock: another time daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeDaemon {
    pub name: String,
    pub pid: u32,
}

/// Whether a process, by its name and arguments, disciplines the system
/// clock: chronyd (unless `-x`, which leaves the clock alone, or `-Q`),
/// ntpd (ntp, NTPsec, OpenNTPD), systemd-timesyncd.
fn steers_the_clock(comm: &str, args: &[&str]) -> bool {
    match comm {
        "chronyd" => !args.iter().any(|a| *a == "-x" || *a == "-Q"),
        "ntpd" | "systemd-timesyn" | "systemd-timesyncd" => true,
        _ => false,
    }
}

/// Other time daemons running on this machine, found in /proc: two daemons
/// steering one clock fight each other, so tachyond never does so silently.
pub fn other_time_daemons() -> Vec<TimeDaemon> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        let comm = comm.trim();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&str> = cmdline
            .split(|b| *b == 0)
            .skip(1)
            .filter_map(|a| std::str::from_utf8(a).ok())
            .collect();
        if steers_the_clock(comm, &args) {
            found.push(TimeDaemon {
                name: comm.to_string(),
                pid,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_daemons_are_told_by_name_and_arguments() {
        assert!(steers_the_clock("chronyd", &["-d"]));
        assert!(!steers_the_clock("chronyd", &["-x", "-d"]));
        assert!(!steers_the_clock("chronyd", &["-Q", "server x"]));
        assert!(steers_the_clock("ntpd", &["-g"]));
        assert!(steers_the_clock("systemd-timesyn", &[]));
        assert!(!steers_the_clock("tachyond", &[]));
        assert!(!steers_the_clock("sshd", &[]));
    }

    #[test]
    fn a_running_time_daemon_is_found() {
        // A shell copied under the name chronyd: a process whose comm is
        // chronyd, with and without -x among its arguments.
        let dir = std::env::temp_dir().join(format!("tachyon-td-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("chronyd");
        std::fs::copy("/bin/sh", &fake).unwrap();
        let mut steering = std::process::Command::new(&fake)
            .args(["-c", "sleep 30; true"])
            .spawn()
            .unwrap();
        let mut harmless = std::process::Command::new(&fake)
            .args(["-c", "sleep 30; true", "-x"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let found = other_time_daemons();
        let _ = steering.kill();
        let _ = harmless.kill();
        let _ = steering.wait();
        let _ = harmless.wait();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            found.contains(&TimeDaemon {
                name: "chronyd".into(),
                pid: steering.id()
            }),
            "{found:?}"
        );
        assert!(!found.iter().any(|d| d.pid == harmless.id()), "{found:?}");
    }

    #[test]
    fn precision_is_plausible() {
        let p = measure_precision();
        // Between 1 ns and 1 ms per read on anything that can run this server.
        assert!((-30..=-10).contains(&p), "precision {p}");
    }

    #[test]
    fn clock_reads_are_recent() {
        // After 2020-01-01 and before 2200.
        let now = system_unix_ns();
        assert!(now > 1_577_836_800_000_000_000 && now < 7_258_118_400_000_000_000);
    }
}
