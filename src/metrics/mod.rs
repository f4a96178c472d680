//! Metrics: the Prometheus text format and its HTTP endpoint.

pub mod exposition;
pub mod http;
