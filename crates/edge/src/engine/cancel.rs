//! Cancelling a run: core's decision for [`Event::Cancel`] (every step that has not ended is
//! cancelled, and the run ends `cancelled`), written whole under the run's gate like every
//! other decision — so a result racing the cancel either lands first (and the cancel is
//! decided again on it) or finds its step cancelled.

use baton_core::lifecycle::{Event, Observer};
use baton_core::state::RunStatus;

use super::run::{Dispatch, Engine, Loaded};
use crate::{Error, Result};

/// What cancelling did.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// The run is now cancelled; `cancelled_steps` are the steps this call cancelled.
    Cancelled { loaded: Box<Loaded>, cancelled_steps: Vec<String> },
    /// The run had already ended (possibly just now, by another writer).
    AlreadyEnded { status: RunStatus },
}

impl Engine<'_> {
    /// Cancels `loaded`'s run (see the module docs).
    pub async fn cancel(&self, loaded: Loaded) -> Result<CancelOutcome> {
        crate::meter::attribute(&loaded.run.run_id);
        let run_id = loaded.run.run_id.clone();
        let (_, report) =
            self.carry_out(loaded, Vec::new(), Event::Cancel, Observer::EventDriven, Dispatch::Queue).await?;
        match (report.finished, report.after) {
            (Some(RunStatus::Cancelled), Some(after)) => {
                Ok(CancelOutcome::Cancelled { loaded: Box::new(after), cancelled_steps: report.cancelled })
            }
            _ => {
                let fresh =
                    self.load(&run_id).await?.ok_or_else(|| Error::NotFound { what: format!("run {run_id}") })?;
                Ok(CancelOutcome::AlreadyEnded { status: fresh.status()? })
            }
        }
    }
}
