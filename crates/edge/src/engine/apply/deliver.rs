//! An event delivered to a run for its wait step: kept in the run's inbox once per name, in
//! one batch with a fresh version of the run. A wait that starts on a copy read before the
//! event therefore loses its gate and reads again, finding it; a wait already waiting is
//! completed by the look that follows here (or by any later look: every decision on a plan
//! with waits reads the inbox). So an event is taken exactly once, early or not.

use baton_core::lifecycle::{Event, Observer};
use serde_json::Value;

use super::super::run::{Dispatch, Engine, Loaded};
use super::Write;
use crate::d1::inbox::InboxRow;
use crate::{Error, Result};

/// What delivering an event did.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// `false`: an event of that name had been delivered before (this one is not kept).
    pub new: bool,
    /// The run after the look that followed.
    pub after: Box<Loaded>,
}

impl Engine<'_> {
    /// Keeps event `name` with `payload` for `loaded`'s run (already accepted by
    /// `baton_core::signal::accept`), then looks at the run.
    pub async fn deliver_event(&self, loaded: Loaded, name: &str, payload: &Value) -> Result<Delivered> {
        crate::meter::attribute(&loaded.run.run_id);
        let run_id = loaded.run.run_id.clone();
        let row =
            InboxRow { name: name.to_string(), payload: payload.to_string(), received_at: self.now().as_u64() as i64 };
        let metas = self.write(&run_id, &[Write::Inbox(Box::new(row)), Write::Bump(self.token())]).await?;
        let new = metas.first().is_some_and(|m| m.changes > 0);
        let fresh = self.load(&run_id).await?.ok_or_else(|| Error::NotFound { what: format!("run {run_id}") })?;
        let (_, report) =
            self.carry_out(fresh, Vec::new(), Event::Look, Observer::EventDriven, Dispatch::Queue).await?;
        let after = match report.after {
            Some(after) => after,
            None => self.load(&run_id).await?.ok_or_else(|| Error::NotFound { what: format!("run {run_id}") })?,
        };
        Ok(Delivered { new, after: Box::new(after) })
    }
}
