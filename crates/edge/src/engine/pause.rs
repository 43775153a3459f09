//! Pausing and resuming a run: core's decisions for [`Event::Pause`] (`started|running →
//! paused`: nothing new is dispatched) and [`Event::Resume`] (`paused → running`, and what
//! became ready meanwhile is dispatched in the same write), written under the run's gate like
//! every other decision — so a result racing a pause is recorded either way, and whatever it
//! makes ready waits for the resume.

use baton_core::lifecycle::{self, Event, Observer};
use baton_core::state::RunStatus;

use super::run::{AdvanceReport, Dispatch, Engine, Loaded};
use crate::{Error, Result};

/// What a pause or a resume did.
#[derive(Debug, Clone)]
pub enum HoldOutcome {
    /// The run is (now, or already) as asked; `changed`: this call changed it.
    Done { loaded: Box<Loaded>, changed: bool, report: Box<AdvanceReport> },
    /// It cannot be: it has ended, or (a pause) its analysis has begun.
    Refused { status: RunStatus },
}

impl Engine<'_> {
    /// Pauses `loaded`'s run (see the module docs).
    pub async fn pause(&self, loaded: Loaded) -> Result<HoldOutcome> {
        self.hold(loaded, Event::Pause).await
    }

    /// Resumes `loaded`'s paused run (see the module docs).
    pub async fn resume(&self, loaded: Loaded) -> Result<HoldOutcome> {
        self.hold(loaded, Event::Resume).await
    }

    async fn hold(&self, loaded: Loaded, event: Event) -> Result<HoldOutcome> {
        crate::meter::attribute(&loaded.run.run_id);
        let run_id = loaded.run.run_id.clone();
        let pause = event == Event::Pause;
        let (_, report) = self.carry_out(loaded, Vec::new(), event, Observer::EventDriven, Dispatch::Queue).await?;
        let changed = if pause { report.paused } else { report.resumed };
        let after = match &report.after {
            Some(after) if changed => after.clone(),
            // Unchanged (or a racing writer won every round): as the run is now.
            _ => self.load(&run_id).await?.ok_or_else(|| Error::NotFound { what: format!("run {run_id}") })?,
        };
        let status = after.status()?;
        if status.is_terminal() || (pause && !lifecycle::OPEN.contains(&status)) {
            return Ok(HoldOutcome::Refused { status });
        }
        let as_asked = if pause { status == RunStatus::Paused } else { status != RunStatus::Paused };
        if !as_asked {
            // Racing writers won every round: nothing was decided.
            let what = if pause { "paused" } else { "resumed" };
            return Err(Error::Conflict(format!("run {run_id} kept changing while it was being {what}: try again")));
        }
        Ok(HoldOutcome::Done { loaded: Box::new(after), changed, report: Box::new(report) })
    }
}
