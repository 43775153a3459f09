//! How a run ends — one path for every ending: completed (with or without missing services,
//! analysed at once or after the analysis queue), timeout, failed, cancelled. The run's
//! final write, its diagnosis and finish events, then the KV snapshot and, for a pipeline,
//! the admission of what waits for its resources.
//!
//! The ending is one statement (`d1::runs::finish`, from the statuses core allows, under
//! the decision's gate when there is one) that writes a fresh version token; the events are
//! written only if the run carries that token afterwards, so whoever races to end a run,
//! exactly one ending and one set of events stands (the events' dedupe keys agree).

use baton_core::events::{
    diagnosis_dedupe_key, finish_dedupe_key, RunFinish, RunFinishedPayload, RUN_STATUS_EVENT_TYPE,
};
use baton_core::ids::EventId;
use baton_core::lifecycle::{self, Finish};
use baton_core::state::RunKind;
use baton_core::state::StepStatus;
use baton_core::summary::{confidence, missing_services};
use baton_core::synthesis::{self, Diagnosis};
use baton_core::time::Millis;
use serde_json::Value;

use super::run::{Engine, Loaded};
use super::webhooks::Outbox;
use crate::d1::events::{self as event_rows, EventRow};
use crate::d1::runs::{self, Ending};
use crate::d1::Stmt;
use crate::{clock, log, Error, Result};

/// The `type` of the diagnosis event.
pub const DIAGNOSIS_EVENT_TYPE: &str = "diagnosis";

/// The rule-based diagnosis of a claimed run, from the outputs of its completed steps.
/// `synthesis_error`: why a narrative is missing, if it is.
pub fn rule_based_diagnosis(loaded: &Loaded, synthesis_error: Option<&str>) -> Diagnosis {
    let records = loaded.records().unwrap_or_default();
    let missing: Vec<String> =
        missing_services(&loaded.plan, &records).iter().map(|s| s.as_str().to_string()).collect();
    let outputs: Vec<(String, Value)> = loaded
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Completed)
        .map(|s| {
            (s.service.clone(), s.output.as_deref().and_then(|o| serde_json::from_str(o).ok()).unwrap_or(Value::Null))
        })
        .collect();
    let mut diagnosis = synthesis::diagnose(&loaded.run.domain, &outputs, &missing, confidence(&loaded.plan, &records));
    diagnosis.synthesis_error = synthesis_error.map(str::to_string);
    diagnosis
}

impl Engine<'_> {
    /// Ends a claimed run with its diagnosis (the analysis queue's path). The status is
    /// core's ([`lifecycle::analysed`]). Whether this call ended it: `false` if it was not
    /// claimed (already ended, or never claimed) or another delivery ended it first.
    pub async fn finish_analysed(&self, loaded: &Loaded, diagnosis: Diagnosis) -> Result<bool> {
        let claimed_at = Millis::new(loaded.run.claimed_at.unwrap_or(0).max(0) as u64);
        let deadline_at = Millis::new(loaded.run.deadline_at.max(0) as u64);
        let partial = loaded.run.partial == Some(1);
        let Some(finish) = lifecycle::analysed(loaded.status()?, partial, claimed_at, deadline_at) else {
            return Ok(false);
        };
        let (statements, ended, outbox) = self.ending(loaded, &finish, Some(diagnosis), None, self.now())?;
        let last = statements.len() - 1;
        let metas = self.db.batch(statements).await?;
        let won = metas.first().is_some_and(|m| m.changes > 0);
        if won {
            log::emit(log::Event::AnalysisFinished, &log::Line::run(&ended.run.run_id));
            let deliveries = outbox.written(metas.get(last).map_or(0, |m| m.changes));
            self.after_ending(&ended, &deliveries).await;
        }
        Ok(won)
    }

    /// The statements that end `loaded` as `finish` says (under `gate`, if any), the run as
    /// they leave it, and its webhook deliveries (always the last statement: see [`Outbox`]).
    pub(super) fn ending(
        &self,
        loaded: &Loaded,
        finish: &Finish,
        diagnosis: Option<Diagnosis>,
        gate: Option<i64>,
        now: Millis,
    ) -> Result<(Vec<Stmt>, Loaded, Outbox)> {
        let token = self.token();
        let run_id = loaded.run_id()?;
        let diagnosis_event_id = match &diagnosis {
            Some(_) => Some(EventId::from_parts(now, clock::random_bytes::<8>()?)),
            None => None,
        };
        let synthesis_error = diagnosis.as_ref().and_then(|d| d.synthesis_error.clone());
        let mut ended = loaded.clone();
        ended.run.status = finish.status;
        ended.run.completed_at = Some(now.as_u64() as i64);
        ended.run.error = finish.error.clone().or(ended.run.error);
        ended.run.diagnosis_event_id = diagnosis_event_id.as_ref().map(|id| id.as_str().to_string());
        ended.run.synthesis_error = synthesis_error.clone();
        ended.run.due_at = None;
        ended.run.version = token;
        let ending = Ending {
            status: finish.status,
            from: finish.from,
            completed_at: now.as_u64() as i64,
            error: finish.error.clone(),
            diagnosis_event_id: ended.run.diagnosis_event_id.clone(),
            synthesis_error: synthesis_error.clone(),
            token,
            gate,
        };
        let mut statements = vec![runs::finish(&self.db, &ended.run.run_id, &ending)?];
        if let (Some(diagnosis), Some(id)) = (&diagnosis, &diagnosis_event_id) {
            let row = self.event_row(
                &ended,
                id.clone(),
                DIAGNOSIS_EVENT_TYPE,
                serde_json::to_string(diagnosis).map_err(|e| Error::Internal(e.to_string()))?,
                diagnosis_dedupe_key(&run_id, ended.run.retries.max(0) as u32),
                now,
            );
            statements.push(event_rows::insert_if_run_version(&self.db, &row, token)?);
        }
        let payload = RunFinishedPayload::new(
            RunFinish {
                status: finish.status,
                domain: loaded.run.domain.clone(),
                started_at: loaded.started_at(),
                completed_at: now,
                diagnosis_event_id,
                synthesis_error,
            },
            &loaded.plan,
            &ended.records()?,
        );
        let row = self.event_row(
            &ended,
            EventId::from_parts(now, clock::random_bytes::<8>()?),
            RUN_STATUS_EVENT_TYPE,
            serde_json::to_string(&payload).map_err(|e| Error::Internal(e.to_string()))?,
            finish_dedupe_key(&run_id, ended.run.retries.max(0) as u32),
            now,
        );
        statements.push(event_rows::insert_if_run_version(&self.db, &row, token)?);
        statements.push(runs::count_ended(&self.db, &ended.run.run_id, &ended.run.client_id, token)?);
        let outbox = self.outbox(now)?;
        statements.push(outbox.statement(&self.db, &ended, token, now)?);
        Ok((statements, ended, outbox))
    }

    /// What follows an ending: the KV mirror of the run as it ended (no read), and for a
    /// pipeline, whose reservation is free now, the admission of what waits (the poller would,
    /// later). Best effort: neither decides anything.
    /// `deliveries`: the webhook deliveries the ending wrote ([`Outbox::written`]), to queue.
    pub async fn after_ending(&self, ended: &Loaded, deliveries: &[String]) {
        let took = ended.run.completed_at.map(|at| (at - ended.run.started_at).max(0) as u64);
        let line =
            log::Line { duration_ms: took, error: ended.run.error.as_deref(), ..log::Line::run(&ended.run.run_id) };
        log::emit(log::Event::RunFinished, &line);
        self.write_snapshot(ended).await;
        self.queue_deliveries(&ended.run.run_id, deliveries).await;
        if ended.run.kind == RunKind::Pipeline {
            if let Err(e) = Box::pin(super::admission::admit_queued(self, 10)).await {
                worker::console_warn!("admission after run {} ended: {e}", ended.run.run_id);
            }
        }
    }

    fn event_row(
        &self,
        run: &Loaded,
        id: EventId,
        kind: &str,
        payload: String,
        dedupe: String,
        now: Millis,
    ) -> EventRow {
        EventRow {
            id: id.as_str().to_string(),
            website_id: run.run.website_id.clone(),
            run_id: run.run.run_id.clone(),
            service: run.run.events_service.clone().unwrap_or_else(|| self.orchestrator_service_name()),
            kind: kind.to_string(),
            payload,
            created_at: now.as_u64() as i64,
            dedupe_key: Some(dedupe),
        }
    }

    /// The `service` of lifecycle events (`ORCHESTRATOR_SERVICE_NAME`, default "orchestrator").
    pub fn orchestrator_service_name(&self) -> String {
        crate::settings::orchestrator_service_name(self.env())
    }
}
