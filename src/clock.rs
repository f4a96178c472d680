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

#[cfg(test)]
mod tests {
    use super::*;

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
