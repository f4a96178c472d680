//! Where the sync thread posts its view for others to read (the control
//! socket, the metrics endpoint, mode 6 queries): typed reports, formatted
//! by whoever shows them.

use std::sync::{Arc, Mutex};

use super::engine::{EngineStatus, SourceReport};

#[derive(Clone, Default)]
struct Posted {
    sources: Vec<SourceReport>,
    status: Option<EngineStatus>,
}

/// The sources and the engine's status as the sync thread last posted
/// them; cheap to clone.
#[derive(Clone, Default)]
pub struct SourceBoard(Arc<Mutex<Posted>>);

impl SourceBoard {
    /// Replaces what is posted (the sync thread, after each round).
    pub fn post(&self, sources: Vec<SourceReport>, status: EngineStatus) {
        let mut shared = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *shared = Posted {
            sources,
            status: Some(status),
        };
    }

    /// The last source reports.
    pub fn read(&self) -> Vec<SourceReport> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .sources
            .clone()
    }

    /// The engine's last status (none before the first round, or with
    /// `local stratum`).
    pub fn status(&self) -> Option<EngineStatus> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .status
    }
}
