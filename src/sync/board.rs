//! Where the sync thread posts its view of the sources for others to read
//! (the control socket, the metrics endpoint): typed reports, formatted by
//! whoever shows them.

use std::sync::{Arc, Mutex};

use super::engine::SourceReport;

/// The sources as the sync thread last reported them; cheap to clone.
#[derive(Clone, Default)]
pub struct SourceBoard(Arc<Mutex<Vec<SourceReport>>>);

impl SourceBoard {
    /// Replaces the reports (the sync thread, after each round).
    pub fn post(&self, reports: Vec<SourceReport>) {
        let mut shared = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *shared = reports;
    }

    /// The last reports.
    pub fn read(&self) -> Vec<SourceReport> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}
