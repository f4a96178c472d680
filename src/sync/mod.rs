//! The sync engine: polls upstream servers as an NTP client, filters,
//! selects and combines their samples, and disciplines a clock.
//!
//! Sans-IO, in the quinn-proto / ntpd-rs `ntp-proto` way: nothing here opens a
//! socket or reads a clock by itself. Time is passed in (a monotonic `f64` in
//! seconds for scheduling, NTP timestamps on the served time scale for
//! measurements), the clock is steered through [`ClockControl`], and the sync
//! thread does the I/O. The design and the simulation figures are in
//! `docs/sync.md`.
//!
//! - [`source`]: one upstream association (poll, reach, iburst, KoD, reply checks);
//! - [`filter`]: the RFC 5905 clock filter;
//! - [`estimate`]: per-source weighted regression in the free-running frame;
//! - [`select`]: intersection, clustering, combining;
//! - [`discipline`]: steps, slews, frequency;
//! - [`engine`]: all of the above behind `poll` / `on_reply` / `update`;
//! - the clock it steers: [`crate::clock`] ([`ClockControl`], [`SoftwareClock`]);
//! - [`driftfile`], [`leapfile`]: the files ntpd operators already have.
#![forbid(unsafe_code)]

pub mod board;
pub mod discipline;
pub mod driftfile;
pub mod engine;
pub mod estimate;
pub mod exchange;
pub mod filter;
pub mod leapfile;
pub mod names;
pub mod refid;
pub mod runner;
pub mod select;
pub mod source;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_scenarios;

pub use crate::clock::{
    ClockControl, ClockError, ClockStatus, HostTime, SoftwareClock, SystemTime,
};
pub use board::SourceBoard;
pub use discipline::{ClockUpdate, DisciplineConfig};
pub use engine::{
    Engine, EngineConfig, EngineStatus, Request, SampleFilter, SourceId, SourceReport,
};
pub use leapfile::LeapTable;
pub use select::{Mark, Unusable};
pub use source::{KissCode, Reject, Sample, SourceOptions};
