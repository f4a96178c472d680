//! tachyon: a multi-core NTP server for busy NTP Pool servers.
//!
//! The crate is split by concern:
//! - [`proto`]: the NTP wire format and the server's reply rules (pure, no I/O);
//! - [`state`]: the server state published by the sync thread through a seqlock;
//! - [`config`]: the ntp.conf-style configuration;
//! - [`server`]: worker threads, I/O backends, access control.

pub mod clock;
pub mod config;
pub mod control;
pub mod endpoint;
pub mod manual;
pub mod metrics;
pub mod observe;
pub mod privileges;
pub mod proto;
pub mod server;
pub mod state;
pub mod sync;
pub mod telemetry;
