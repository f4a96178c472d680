//! Reading the system clock, and measuring how precisely it can be read.

use std::time::{SystemTime, UNIX_EPOCH};

/// Reads CLOCK_REALTIME (through the vDSO) in Unix nanoseconds.
#[inline]
pub fn system_unix_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
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

/// The kernel clock (`clock_adjtime` on CLOCK_REALTIME), for `clock system`.
///
/// Only tachyond in production uses it: tests use the software clock and never
/// reach this code, which would change the host's time.
pub mod system {
    use crate::proto::{LeapIndicator, NtpTimestamp};
    use crate::state::unix_ns_to_ntp;
    use crate::sync::{ClockControl, ClockError, ClockStatus};

    /// The kernel's frequency unit: ppm with a 16-bit binary fraction.
    const PPM_SCALE: f64 = 65536.0;
    /// The kernel accepts ±500 ppm through ADJ_FREQUENCY.
    pub const MAX_FREQUENCY_PPM: f64 = 500.0;

    /// What to ask the kernel for: the fields of a `struct timex` request,
    /// built without touching the clock so the arithmetic can be tested.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Adjustment {
        pub modes: u32,
        pub freq: i64,
        pub offset_sec: i64,
        pub offset_nsec: i64,
        pub status: i32,
        pub maxerror_us: i64,
        pub esterror_us: i64,
    }

    impl Adjustment {
        fn empty() -> Self {
            Adjustment {
                modes: 0,
                freq: 0,
                offset_sec: 0,
                offset_nsec: 0,
                status: 0,
                maxerror_us: 0,
                esterror_us: 0,
            }
        }

        pub fn frequency(ppm: f64) -> Self {
            let ppm = ppm.clamp(-MAX_FREQUENCY_PPM, MAX_FREQUENCY_PPM);
            Adjustment {
                modes: libc::ADJ_FREQUENCY,
                freq: (ppm * PPM_SCALE).round() as i64,
                ..Adjustment::empty()
            }
        }

        /// A step by `seconds` (ADJ_SETOFFSET with nanoseconds: the
        /// nanosecond field must be in 0..1e9).
        pub fn step(seconds: f64) -> Self {
            let total_ns = (seconds * 1e9).round() as i64;
            Adjustment {
                modes: libc::ADJ_SETOFFSET | libc::ADJ_NANO,
                offset_sec: total_ns.div_euclid(1_000_000_000),
                offset_nsec: total_ns.rem_euclid(1_000_000_000),
                ..Adjustment::empty()
            }
        }

        /// Kernel status for other programs: STA_UNSYNC while unsynchronized,
        /// leap bits, and error estimates (µs, capped at the kernel's 16 s).
        pub fn status(status: &ClockStatus) -> Self {
            let mut bits = if status.synchronized {
                0
            } else {
                libc::STA_UNSYNC
            };
            match status.leap {
                LeapIndicator::InsertSecond => bits |= libc::STA_INS,
                LeapIndicator::DeleteSecond => bits |= libc::STA_DEL,
                _ => {}
            }
            let us = |s: f64| ((s * 1e6).round() as i64).clamp(0, 16_000_000);
            Adjustment {
                modes: libc::ADJ_STATUS | libc::ADJ_MAXERROR | libc::ADJ_ESTERROR,
                status: bits,
                maxerror_us: us(status.max_error),
                esterror_us: us(status.est_error),
                ..Adjustment::empty()
            }
        }
    }

    fn adjtime(adj: &Adjustment) -> Result<libc::timex, ClockError> {
        // SAFETY: timex is a plain C struct; all-zero is a valid request (modes 0
        // reads the state).
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        tx.modes = adj.modes;
        tx.freq = adj.freq as _;
        tx.time.tv_sec = adj.offset_sec as _;
        tx.time.tv_usec = adj.offset_nsec as _;
        tx.status = adj.status;
        tx.maxerror = adj.maxerror_us as _;
        tx.esterror = adj.esterror_us as _;
        // SAFETY: `tx` is a valid, initialised timex that outlives the call.
        let r = unsafe { libc::clock_adjtime(libc::CLOCK_REALTIME, &mut tx) };
        if r < 0 {
            return Err(ClockError::Io(std::io::Error::last_os_error()));
        }
        Ok(tx)
    }

    /// The host clock, disciplined through the kernel.
    pub struct SystemClock {
        frequency_ppm: f64,
    }

    impl SystemClock {
        /// Reads the kernel's current frequency (ntpd or chrony may have left one).
        pub fn open() -> Result<SystemClock, ClockError> {
            let tx = adjtime(&Adjustment::empty())?;
            Ok(SystemClock {
                frequency_ppm: tx.freq as f64 / PPM_SCALE,
            })
        }
    }

    impl ClockControl for SystemClock {
        fn now(&self) -> NtpTimestamp {
            unix_ns_to_ntp(super::system_unix_ns())
        }

        fn frequency_ppm(&self) -> f64 {
            self.frequency_ppm
        }

        fn set_frequency(&mut self, ppm: f64) -> Result<(), ClockError> {
            let adj = Adjustment::frequency(ppm);
            adjtime(&adj)?;
            self.frequency_ppm = adj.freq as f64 / PPM_SCALE;
            Ok(())
        }

        fn step(&mut self, seconds: f64) -> Result<(), ClockError> {
            adjtime(&Adjustment::step(seconds)).map(|_| ())
        }

        fn max_frequency_ppm(&self) -> f64 {
            MAX_FREQUENCY_PPM
        }

        fn set_status(&mut self, status: &ClockStatus) -> Result<(), ClockError> {
            adjtime(&Adjustment::status(status)).map(|_| ())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn frequency_in_kernel_units_and_clamped() {
            assert_eq!(Adjustment::frequency(1.0).freq, 65536);
            assert_eq!(Adjustment::frequency(-12.5).freq, -819200);
            assert_eq!(Adjustment::frequency(900.0).freq, 500 * 65536);
            assert_eq!(Adjustment::frequency(1.0).modes, libc::ADJ_FREQUENCY);
        }

        #[test]
        fn negative_steps_keep_nanoseconds_positive() {
            let a = Adjustment::step(-0.25);
            assert_eq!((a.offset_sec, a.offset_nsec), (-1, 750_000_000));
            let b = Adjustment::step(2.5);
            assert_eq!((b.offset_sec, b.offset_nsec), (2, 500_000_000));
            assert_eq!(a.modes, libc::ADJ_SETOFFSET | libc::ADJ_NANO);
        }

        #[test]
        fn status_bits() {
            let unsync = Adjustment::status(&ClockStatus {
                synchronized: false,
                leap: LeapIndicator::NoWarning,
                est_error: 0.001,
                max_error: 100.0,
            });
            assert_eq!(unsync.status, libc::STA_UNSYNC);
            assert_eq!(unsync.maxerror_us, 16_000_000);
            let leap = Adjustment::status(&ClockStatus {
                synchronized: true,
                leap: LeapIndicator::InsertSecond,
                est_error: 0.000_05,
                max_error: 0.02,
            });
            assert_eq!(leap.status, libc::STA_INS);
            assert_eq!((leap.esterror_us, leap.maxerror_us), (50, 20_000));
        }
    }
}
