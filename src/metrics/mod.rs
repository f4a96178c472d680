//! Metrics: per-worker histograms, the Prometheus text format, the HTTP endpoint.

pub mod exposition;
pub mod histogram;
pub mod http;
