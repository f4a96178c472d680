//! The clock discipline: turns the combined offset and frequency estimates into
//! clock commands, and keeps the exact record of what it commanded.
//!
//! The estimates come from regressions in the free-running frame (see
//! [`crate::sync::estimate`]), so the discipline is not a feedback loop that
//! must be tuned for stability (as an ntpd PLL/FLL is): it sets the clock's
//! frequency to the estimated correction and slews the estimated offset away.
//!
//! - **Step** only at the first update, and only when |offset| exceeds the
//!   step threshold (0.128 s, like `ntpd -g`); otherwise, and always later,
//!   **slew**.
//! - A slew is a temporary extra frequency: `offset / duration`, with the
//!   duration the longer of `min_slew_time` and what the maximum slew rate
//!   needs. The discipline ends it itself ([`Discipline::wakeup`]).
//! - The record of commands gives the phase `P(t)` (total correction applied
//!   by monotonic time `t`) that maps every measurement into the free-running
//!   frame. Only commands the clock accepted enter it.

use crate::clock::{ClockControl, ClockError};

/// Tunables.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DisciplineConfig {
    /// |offset| above which an update steps instead of slewing, s.
    pub step_threshold: f64,
    /// Clock updates, from the first, in which a step is allowed (chrony's
    /// `makestep` limit; 1: the first update only, `u64::MAX`: any).
    pub step_limit: u64,
    /// Largest slew rate, ppm (further limited by the clock's own maximum).
    pub max_slew_ppm: f64,
    /// Shortest time over which an offset is slewed, s.
    pub min_slew_time: f64,
    /// Largest frequency correction believed, ppm.
    pub max_frequency_ppm: f64,
}

impl Default for DisciplineConfig {
    fn default() -> Self {
        DisciplineConfig {
            step_threshold: 0.128,
            step_limit: 1,
            max_slew_ppm: 5000.0,
            min_slew_time: 4.0,
            max_frequency_ppm: 500.0,
        }
    }
}

/// What an update did to the clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClockUpdate {
    /// Stepped by this many seconds (frequency set as well).
    Stepped { offset: f64, frequency_ppm: f64 },
    /// Started slewing `offset` over `duration` seconds, at base frequency
    /// `frequency_ppm`.
    Slewed {
        offset: f64,
        duration: f64,
        frequency_ppm: f64,
    },
}

/// The discipline's state.
#[derive(Clone, Debug)]
pub struct Discipline {
    config: DisciplineConfig,
    /// Frequency correction (dimensionless) without the slew.
    base: f64,
    /// Frequency correction commanded now, slew included.
    rate: f64,
    /// P at `anchor_t`.
    anchor_p: f64,
    anchor_t: f64,
    slew_end: Option<f64>,
    updates: u64,
    last_update: Option<f64>,
}

impl Discipline {
    /// Starts at monotonic time `now`: the clock's frequency is set to
    /// `initial_ppm` (a driftfile value) or, without one, kept as it is.
    pub fn new<C: ClockControl + ?Sized>(
        config: DisciplineConfig,
        initial_ppm: Option<f64>,
        now: f64,
        clock: &mut C,
    ) -> Result<Self, ClockError> {
        let limit = config.max_frequency_ppm;
        let ppm = match initial_ppm {
            Some(ppm) => {
                let ppm = ppm.clamp(-limit, limit);
                clock.set_frequency(ppm)?;
                ppm
            }
            None => clock.frequency_ppm().clamp(-limit, limit),
        };
        Ok(Discipline {
            config,
            base: ppm * 1e-6,
            rate: ppm * 1e-6,
            anchor_p: 0.0,
            anchor_t: now,
            slew_end: None,
            updates: 0,
            last_update: None,
        })
    }

    pub fn config(&self) -> &DisciplineConfig {
        &self.config
    }

    /// The total correction applied by monotonic time `t` (for `t` at or after
    /// the last command; earlier times are extrapolated at the current rate).
    pub fn phase_at(&self, t: f64) -> f64 {
        self.anchor_p + self.rate * (t - self.anchor_t)
    }

    /// The frequency correction without any slew, dimensionless.
    pub fn base_frequency(&self) -> f64 {
        self.base
    }

    /// The frequency correction commanded now, slew included, dimensionless.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// When the slew in progress must end.
    pub fn wakeup(&self) -> Option<f64> {
        self.slew_end
    }

    /// Offset still to be slewed at `now`, seconds.
    pub fn remaining_slew(&self, now: f64) -> f64 {
        match self.slew_end {
            Some(end) if end > now => (self.rate - self.base) * (end - now),
            _ => 0.0,
        }
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    pub fn last_update(&self) -> Option<f64> {
        self.last_update
    }

    fn set_rate<C: ClockControl + ?Sized>(
        &mut self,
        now: f64,
        rate: f64,
        clock: &mut C,
    ) -> Result<(), ClockError> {
        clock.set_frequency(rate * 1e6)?;
        self.anchor_p = self.phase_at(now);
        self.anchor_t = now;
        self.rate = rate;
        Ok(())
    }

    /// Ends a slew that is due. Returns whether one ended.
    pub fn tick<C: ClockControl + ?Sized>(
        &mut self,
        now: f64,
        clock: &mut C,
    ) -> Result<bool, ClockError> {
        match self.slew_end {
            Some(end) if now >= end => {
                self.set_rate(now, self.base, clock)?;
                self.slew_end = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Ends any slew now, leaving the clock at the base frequency: for a
    /// daemon that stops, since nobody would end a slew left running on a
    /// kernel clock. Returns whether one was cut short.
    pub fn end_slew<C: ClockControl + ?Sized>(
        &mut self,
        now: f64,
        clock: &mut C,
    ) -> Result<bool, ClockError> {
        if self.slew_end.is_none() {
            return Ok(false);
        }
        self.set_rate(now, self.base, clock)?;
        self.slew_end = None;
        Ok(true)
    }

    /// Corrects `offset` (seconds; positive: the clock is behind) and, when
    /// given, sets the frequency correction to `frequency` (dimensionless).
    pub fn apply<C: ClockControl + ?Sized>(
        &mut self,
        now: f64,
        offset: f64,
        frequency: Option<f64>,
        clock: &mut C,
    ) -> Result<ClockUpdate, ClockError> {
        let limit = self.config.max_frequency_ppm * 1e-6;
        let base = frequency.map_or(self.base, |f| f.clamp(-limit, limit));
        if self.updates < self.config.step_limit && offset.abs() > self.config.step_threshold {
            self.set_rate(now, base, clock)?;
            self.base = base;
            self.slew_end = None;
            clock.step(offset)?;
            self.anchor_p += offset;
            self.updates += 1;
            self.last_update = Some(now);
            return Ok(ClockUpdate::Stepped {
                offset,
                frequency_ppm: base * 1e6,
            });
        }
        let max_rate = (self
            .config
            .max_slew_ppm
            .min(clock.max_frequency_ppm() - base.abs() * 1e6))
        .max(1.0)
            * 1e-6;
        let duration = (offset.abs() / max_rate).max(self.config.min_slew_time);
        let slew = offset / duration;
        self.set_rate(now, base + slew, clock)?;
        self.base = base;
        self.slew_end = Some(now + duration);
        self.updates += 1;
        self.last_update = Some(now);
        Ok(ClockUpdate::Slewed {
            offset,
            duration,
            frequency_ppm: base * 1e6,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::NtpTimestamp;

    /// Records commands; time is whatever the test says.
    #[derive(Default)]
    struct Recorder {
        ppm: f64,
        steps: Vec<f64>,
    }

    impl ClockControl for Recorder {
        fn now(&self) -> NtpTimestamp {
            NtpTimestamp::ZERO
        }
        fn frequency_ppm(&self) -> f64 {
            self.ppm
        }
        fn set_frequency(&mut self, ppm: f64) -> Result<(), ClockError> {
            self.ppm = ppm;
            Ok(())
        }
        fn step(&mut self, seconds: f64) -> Result<(), ClockError> {
            self.steps.push(seconds);
            Ok(())
        }
        fn max_frequency_ppm(&self) -> f64 {
            1e5
        }
    }

    #[test]
    fn initial_frequency_from_driftfile_or_clock() {
        let mut clock = Recorder {
            ppm: 12.0,
            ..Recorder::default()
        };
        let d = Discipline::new(DisciplineConfig::default(), None, 0.0, &mut clock).unwrap();
        assert!((d.base_frequency() - 12e-6).abs() < 1e-15);
        let d = Discipline::new(DisciplineConfig::default(), Some(-33.5), 0.0, &mut clock).unwrap();
        assert_eq!(clock.ppm, -33.5);
        assert!((d.phase_at(100.0) + 33.5e-4).abs() < 1e-12);
        // Absurd driftfile values are clamped.
        Discipline::new(DisciplineConfig::default(), Some(9000.0), 0.0, &mut clock).unwrap();
        assert_eq!(clock.ppm, 500.0);
    }

    #[test]
    fn steps_only_first_time() {
        let mut clock = Recorder::default();
        let mut d = Discipline::new(DisciplineConfig::default(), None, 0.0, &mut clock).unwrap();
        let u = d.apply(10.0, 0.5, Some(20e-6), &mut clock).unwrap();
        assert!(matches!(u, ClockUpdate::Stepped { offset, .. } if offset == 0.5));
        assert_eq!(clock.steps, [0.5]);
        assert!((clock.ppm - 20.0).abs() < 1e-9);
        assert!((d.phase_at(10.0) - 0.5).abs() < 1e-12);
        // A later large offset is slewed at the maximum rate.
        let u = d.apply(20.0, 0.5, None, &mut clock).unwrap();
        let ClockUpdate::Slewed { duration, .. } = u else {
            panic!("{u:?}")
        };
        assert!((duration - 100.0).abs() < 1e-9);
        assert!((clock.ppm - 5020.0).abs() < 1e-6);
        assert_eq!(clock.steps.len(), 1);
    }

    #[test]
    fn makestep_limit_allows_steps_in_the_first_updates() {
        // chrony's `makestep 1 3`: beyond 1 s, a step in any of the first 3
        // updates; a slew after that, and below the threshold.
        let config = DisciplineConfig {
            step_threshold: 1.0,
            step_limit: 3,
            ..DisciplineConfig::default()
        };
        let mut clock = Recorder::default();
        let mut d = Discipline::new(config, None, 0.0, &mut clock).unwrap();
        assert!(matches!(
            d.apply(10.0, 0.5, None, &mut clock).unwrap(),
            ClockUpdate::Slewed { .. }
        ));
        assert!(matches!(
            d.apply(20.0, 2.0, None, &mut clock).unwrap(),
            ClockUpdate::Stepped { .. }
        ));
        assert!(matches!(
            d.apply(30.0, -1.5, None, &mut clock).unwrap(),
            ClockUpdate::Stepped { .. }
        ));
        assert!(matches!(
            d.apply(40.0, 3.0, None, &mut clock).unwrap(),
            ClockUpdate::Slewed { .. }
        ));
        assert_eq!(clock.steps, [2.0, -1.5]);
    }

    #[test]
    fn small_first_offset_is_slewed_and_slew_ends() {
        let mut clock = Recorder::default();
        let mut d = Discipline::new(DisciplineConfig::default(), None, 0.0, &mut clock).unwrap();
        let u = d.apply(0.0, 0.1, None, &mut clock).unwrap();
        let ClockUpdate::Slewed { duration, .. } = u else {
            panic!("{u:?}")
        };
        assert!((duration - 20.0).abs() < 1e-9);
        assert_eq!(d.wakeup(), Some(20.0));
        assert!((d.remaining_slew(5.0) - 0.075).abs() < 1e-12);
        assert!(!d.tick(19.0, &mut clock).unwrap());
        // Ending late: the phase keeps what was really applied.
        assert!(d.tick(20.5, &mut clock).unwrap());
        assert_eq!(clock.ppm, 0.0);
        assert!((d.phase_at(30.0) - 0.1025).abs() < 1e-12);
        assert_eq!(d.wakeup(), None);
        assert_eq!(d.remaining_slew(25.0), 0.0);
    }

    #[test]
    fn ending_a_slew_early_leaves_the_base_frequency() {
        let mut clock = Recorder::default();
        let mut d = Discipline::new(DisciplineConfig::default(), None, 0.0, &mut clock).unwrap();
        d.apply(0.0, 0.1, Some(12e-6), &mut clock).unwrap();
        assert!(clock.ppm > 4000.0);
        assert!(d.end_slew(5.0, &mut clock).unwrap());
        assert!((clock.ppm - 12.0).abs() < 1e-9);
        assert_eq!(d.wakeup(), None);
        assert_eq!(d.remaining_slew(6.0), 0.0);
        // What was applied until the cut stays in the phase record.
        let applied = 0.1 / 20.0 * 5.0;
        assert!((d.phase_at(5.0) - (12e-6 * 5.0 + applied)).abs() < 1e-12);
        assert!(!d.end_slew(6.0, &mut clock).unwrap());
    }

    #[test]
    fn small_offsets_use_the_minimum_slew_time() {
        let mut clock = Recorder::default();
        let mut d = Discipline::new(DisciplineConfig::default(), None, 0.0, &mut clock).unwrap();
        d.apply(0.0, 1e-5, Some(1e-6), &mut clock).unwrap();
        assert!((clock.ppm - (1.0 + 10.0 / 4.0)).abs() < 1e-9);
        assert_eq!(d.wakeup(), Some(4.0));
    }
}
