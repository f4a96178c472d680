//! Clock control: the one trait through which the sync engine steers a clock,
//! and the software clock that never touches the host's clock.
//!
//! The engine only ever asks a clock for three things: what time it is (on the
//! served time scale), to run at a given frequency correction, and to step. A
//! gradual offset correction (a slew) is a temporary frequency correction that
//! the engine's discipline starts and ends itself: that works the same way for
//! every clock, and it keeps the slew in progress known exactly to the
//! estimator, so measurements taken during a slew stay consistent.
//!
//! Implementations: [`SoftwareClock`] (served time = system time + a
//! correction the workers apply), the simulation's clock (the same software
//! clock over a simulated oscillator), and, outside this module, a system clock
//! driving `clock_adjtime` (frequency through `ADJ_FREQUENCY`, plus `ADJ_TICK`
//! for rates beyond 500 ppm, steps through `ADJ_SETOFFSET`, kernel status
//! through [`ClockControl::set_status`]).

use std::fmt;

use crate::proto::{LeapIndicator, NtpTimestamp};
use crate::state::ClockCorrection;

/// A clock operation failed (for a system clock: the syscall's error).
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("clock operation failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("clock operation refused: {0}")]
    Refused(String),
}

/// What the discipline knows about the clock's quality, for the kernel's
/// status words (`STA_UNSYNC`, `maxerror`, `esterror`, leap bits) and the like.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockStatus {
    pub synchronized: bool,
    /// Leap second scheduled at the end of the current UTC day.
    pub leap: LeapIndicator,
    /// Estimated error, seconds (one standard deviation).
    pub est_error: f64,
    /// Maximum error, seconds (the root distance).
    pub max_error: f64,
    /// TAI − UTC, seconds, from a leap table that covers now (`None`
    /// without one: the kernel's value is then left alone).
    pub tai_offset: Option<i32>,
}

/// The clock the engine disciplines.
///
/// Frequencies are corrections in parts per million: positive makes the clock
/// run faster. The engine calls these from its `update`, never concurrently.
pub trait ClockControl {
    /// The current time on the served time scale.
    fn now(&self) -> NtpTimestamp;
    /// The frequency correction now in effect, ppm.
    fn frequency_ppm(&self) -> f64;
    /// Sets the frequency correction, ppm, from now on.
    fn set_frequency(&mut self, ppm: f64) -> Result<(), ClockError>;
    /// Moves the clock by `seconds` at once (positive: forward).
    fn step(&mut self, seconds: f64) -> Result<(), ClockError>;
    /// The largest frequency correction the clock accepts, ppm; slews are
    /// limited so that frequency plus slew rate stays within it.
    fn max_frequency_ppm(&self) -> f64 {
        500.0
    }
    /// Publishes the synchronization status (a system clock hands it to the
    /// kernel; the default ignores it).
    fn set_status(&mut self, status: &ClockStatus) -> Result<(), ClockError> {
        let _ = status;
        Ok(())
    }
}

/// Where a [`SoftwareClock`] reads the underlying (undisciplined) system time.
pub trait SystemTime {
    /// The system time in Unix nanoseconds.
    fn unix_ns(&self) -> i64;
}

/// The host's `CLOCK_REALTIME`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostTime;

impl SystemTime for HostTime {
    fn unix_ns(&self) -> i64 {
        crate::clock::system_unix_ns()
    }
}

/// A clock that only exists in the published [`ClockCorrection`]: served time =
/// system time + offset + frequency × (system time − epoch). Steering it never
/// changes the host's clock; the sync thread publishes [`SoftwareClock::correction`]
/// and the workers apply it.
pub struct SoftwareClock<S: SystemTime = HostTime> {
    source: S,
    correction: ClockCorrection,
}

impl SoftwareClock<HostTime> {
    /// A software clock over the host's clock, starting with no correction.
    pub fn new() -> Self {
        SoftwareClock::with_source(HostTime)
    }
}

impl Default for SoftwareClock<HostTime> {
    fn default() -> Self {
        SoftwareClock::new()
    }
}

impl<S: SystemTime> SoftwareClock<S> {
    pub fn with_source(source: S) -> Self {
        SoftwareClock {
            source,
            correction: ClockCorrection::default(),
        }
    }

    /// Starts from a correction published earlier (for example by a previous
    /// engine instance).
    pub fn with_correction(source: S, correction: ClockCorrection) -> Self {
        SoftwareClock { source, correction }
    }

    /// The correction to publish in `ServerState`.
    pub fn correction(&self) -> ClockCorrection {
        self.correction
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    /// Moves the epoch to the current system time, folding the frequency term
    /// accumulated so far into the offset, so a new frequency or step starts
    /// from a continuous time scale.
    fn rebase(&mut self) {
        let now = self.source.unix_ns();
        let c = &mut self.correction;
        if c.frequency != 0.0 {
            let elapsed = (now - c.epoch_unix_ns) as f64 * 1e-9;
            c.offset += c.frequency * elapsed;
        }
        c.epoch_unix_ns = now;
    }
}

impl<S: SystemTime> ClockControl for SoftwareClock<S> {
    fn now(&self) -> NtpTimestamp {
        self.correction.served_timestamp(self.source.unix_ns())
    }

    fn frequency_ppm(&self) -> f64 {
        self.correction.frequency * 1e6
    }

    fn set_frequency(&mut self, ppm: f64) -> Result<(), ClockError> {
        if !ppm.is_finite() {
            return Err(ClockError::Refused(format!("frequency {ppm} ppm")));
        }
        self.rebase();
        self.correction.frequency = ppm * 1e-6;
        Ok(())
    }

    fn step(&mut self, seconds: f64) -> Result<(), ClockError> {
        if !seconds.is_finite() {
            return Err(ClockError::Refused(format!("step of {seconds} s")));
        }
        self.rebase();
        self.correction.offset += seconds;
        Ok(())
    }

    /// Served time is only arithmetic, so any rate works; 10% keeps a wild
    /// estimate from making the served clock absurd.
    fn max_frequency_ppm(&self) -> f64 {
        100_000.0
    }
}

impl<S: SystemTime> fmt::Debug for SoftwareClock<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftwareClock")
            .field("correction", &self.correction)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[derive(Clone)]
    struct FakeTime(Rc<Cell<i64>>);

    impl SystemTime for FakeTime {
        fn unix_ns(&self) -> i64 {
            self.0.get()
        }
    }

    const T0: i64 = 1_700_000_000_000_000_000;

    #[test]
    fn frequency_and_step_keep_time_continuous() {
        let time = FakeTime(Rc::new(Cell::new(T0)));
        let mut clock = SoftwareClock::with_source(time.clone());
        assert_eq!(clock.now(), crate::state::unix_ns_to_ntp(T0));
        clock.set_frequency(100.0).unwrap();
        time.0.set(T0 + 10_000_000_000); // 10 s later: +1 ms
        let served =
            |c: &SoftwareClock<FakeTime>| c.correction().apply(time.0.get()) - time.0.get();
        assert_eq!(served(&clock), 1_000_000);
        // Changing the frequency does not move the time scale.
        clock.set_frequency(-50.0).unwrap();
        assert_eq!(served(&clock), 1_000_000);
        time.0.set(T0 + 20_000_000_000); // 10 s at -50 ppm: -0.5 ms
        assert_eq!(served(&clock), 500_000);
        clock.step(-0.25).unwrap();
        assert_eq!(served(&clock), 500_000 - 250_000_000);
        assert!((clock.frequency_ppm() + 50.0).abs() < 1e-9);
        assert!(clock.set_frequency(f64::NAN).is_err());
        assert!(clock.step(f64::INFINITY).is_err());
    }
}
