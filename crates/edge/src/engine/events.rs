//! A run's events (`kbase_events`) as clients read them.

use baton_core::events::diagnosis_dedupe_key;
use baton_core::time::Millis;
use serde::Serialize;
use serde_json::Value;

use super::run::{Engine, Loaded};
use crate::d1::events::{self, EventRow};
use crate::Result;

/// One event as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunEvent {
    /// The event id.
    pub id: String,
    /// The run's website.
    pub website_id: String,
    /// The run.
    pub run_id: String,
    /// Who wrote it: a step's service, or the orchestrator.
    pub service: String,
    /// The event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The payload; `null` when it is not JSON.
    pub payload: Value,
    /// When it was written (RFC 3339).
    pub created_at: String,
}

impl From<EventRow> for RunEvent {
    fn from(e: EventRow) -> Self {
        RunEvent {
            payload: serde_json::from_str::<Value>(&e.payload).unwrap_or(Value::Null),
            created_at: Millis::new(e.created_at.max(0) as u64).to_rfc3339(),
            id: e.id,
            website_id: e.website_id,
            run_id: e.run_id,
            service: e.service,
            kind: e.kind,
        }
    }
}

impl Engine<'_> {
    /// A run's events, oldest first.
    pub async fn run_events(&self, run_id: &str) -> Result<Vec<RunEvent>> {
        Ok(events::of_run(&self.db, run_id).await?.into_iter().map(RunEvent::from).collect())
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
