//! The kernel clock (`clock_adjtime` on CLOCK_REALTIME), for `clock system`.
//!
//! Only tachyond in production uses it: tests use the software clock and never
//! reach this code, which would change the host's time.

use super::control::{ClockControl, ClockError, ClockStatus};
use crate::proto::{LeapIndicator, NtpTimestamp};
use crate::state::unix_ns_to_ntp;

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
    /// ADJ_TAI's value (TAI − UTC).
    pub constant: i64,
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
            constant: 0,
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
    /// leap bits, error estimates (µs, capped at the kernel's 16 s), and the
    /// TAI offset when `tai` is given (for CLOCK_TAI).
    pub fn status(status: &ClockStatus, tai: Option<i32>) -> Self {
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
        let mut modes = libc::ADJ_STATUS | libc::ADJ_MAXERROR | libc::ADJ_ESTERROR;
        if tai.is_some() {
            modes |= libc::ADJ_TAI;
        }
        Adjustment {
            modes,
            status: bits,
            maxerror_us: us(status.max_error),
            esterror_us: us(status.est_error),
            constant: tai.map_or(0, i64::from),
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
    tx.constant = adj.constant as _;
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
    /// The TAI offset last handed to the kernel. Sent again only when the
    /// leap table's value changes: the kernel adds the inserted second to
    /// it by itself, and the table, read at 23:59:60, still gives the old
    /// value, which must not undo that.
    tai_sent: Option<i32>,
}

impl SystemClock {
    /// Reads the kernel's current frequency (ntpd or chrony may have left one).
    pub fn open() -> Result<SystemClock, ClockError> {
        let tx = adjtime(&Adjustment::empty())?;
        Ok(SystemClock {
            frequency_ppm: tx.freq as f64 / PPM_SCALE,
            tai_sent: None,
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
        let tai = status.tai_offset.filter(|&t| Some(t) != self.tai_sent);
        adjtime(&Adjustment::status(status, tai))?;
        if tai.is_some() {
            self.tai_sent = tai;
        }
        Ok(())
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
        let unsync = Adjustment::status(
            &ClockStatus {
                synchronized: false,
                leap: LeapIndicator::NoWarning,
                est_error: 0.001,
                max_error: 100.0,
                tai_offset: None,
            },
            None,
        );
        assert_eq!(unsync.status, libc::STA_UNSYNC);
        assert_eq!(unsync.maxerror_us, 16_000_000);
        let leap = Adjustment::status(
            &ClockStatus {
                synchronized: true,
                leap: LeapIndicator::InsertSecond,
                est_error: 0.000_05,
                max_error: 0.02,
                tai_offset: Some(36),
            },
            Some(36),
        );
        assert_eq!(leap.status, libc::STA_INS);
        assert_eq!((leap.esterror_us, leap.maxerror_us), (50, 20_000));
        // The TAI offset goes out with ADJ_TAI in `constant`; without one
        // the kernel's is left alone.
        assert_ne!(leap.modes & libc::ADJ_TAI, 0);
        assert_eq!(leap.constant, 36);
        assert_eq!(unsync.modes & libc::ADJ_TAI, 0);
    }
}
