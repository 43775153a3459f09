//! A run's events (`kbase_events`) as clients read them.

use baton_api::runs::RunEvent;
use baton_api::Instant;
use baton_core::events::diagnosis_dedupe_key;
use serde_json::Value;

use super::run::{Engine, Loaded};
use crate::d1::events::{self, EventRow};
use crate::Result;

/// One event as the API shows it.
pub(super) fn run_event(e: EventRow) -> RunEvent {
    RunEvent {
        payload: serde_json::from_str::<Value>(&e.payload).unwrap_or(Value::Null),
        created_at: Instant::at(e.created_at),
        id: e.id,
        website_id: e.website_id,
        run_id: e.run_id,
        service: e.service,
        kind: e.kind,
    }
}

impl Engine<'_> {
    /// A run's events, oldest first.
    pub async fn run_events(&self, run_id: &str) -> Result<Vec<RunEvent>> {
        Ok(events::of_run(&self.db, run_id).await?.into_iter().map(run_event).collect())
    }

    /// The diagnosis of a run that has one: the payload of its diagnosis event (`None` when
    /// the run has none yet, or the payload is not JSON).
    pub async fn diagnosis_of(&self, loaded: &Loaded) -> Result<Option<Value>> {
        if loaded.run.diagnosis_event_id.is_none() {
            return Ok(None);
        }
        let key = diagnosis_dedupe_key(&loaded.run_id()?, loaded.run.retries.max(0) as u32);
        let event = events::by_dedupe_key(&self.db, &key).await?;
        Ok(event.and_then(|e| serde_json::from_str::<Value>(&e.payload).ok()))
    }
}
