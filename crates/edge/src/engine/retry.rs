//! Retrying an ended run in place, and running it again as a new run.
//!
//! A retry is core's decision ([`lifecycle::retry`]): the steps that did not complete start
//! over with a fresh retry budget, completed outputs are kept. One gated batch writes it — the
//! steps, the run back to `running` from now (a new deadline, one more retry counted), the
//! client's quota of runs in progress, a start event of the new round — then a look dispatches
//! what is ready. The round's diagnosis and finish events have their own dedupe keys, so the
//! run's history keeps every round's.

use baton_core::events::{RunStartedPayload, RUN_STATUS_EVENT_TYPE};
use baton_core::fanin;
use baton_core::ids::{EventId, RunId};
use baton_core::lifecycle::{self, Observer, RetryRefused};
use baton_core::quota::QuotaExceeded;
use baton_core::state::RunKind;
use baton_core::state::RunStatus;
use baton_core::time::Millis;
use serde_json::Value;

use super::rows::row_with_record;
use super::run::{AdvanceReport, Dispatch, Engine, Loaded};
use super::start::{NewRun, Started};
use crate::d1::events::{self as event_rows, EventRow};
use crate::d1::{runs, steps};
use crate::{clock, log, Error, Result};

/// What retrying came to.
#[derive(Debug, Clone)]
pub enum RetryOutcome {
    /// The run runs again: the steps started over, and what the first look did.
    Retried { steps: Vec<String>, retries: i64, advance: Box<AdvanceReport> },
    /// Core refused it.
    Refused(RetryRefused),
}

impl Engine<'_> {
    /// Retries the ended run `loaded` in place.
    pub async fn retry_run(&self, loaded: Loaded) -> Result<RetryOutcome> {
        let status = loaded.status()?;
        let writes = match lifecycle::retry(status, &loaded.plan, &loaded.records()?) {
            Ok(writes) => writes,
            Err(refused) => return Ok(RetryOutcome::Refused(refused)),
        };
        let now = self.now();
        let at = now.as_u64() as i64;
        let deadline = fanin::run_deadline(&loaded.plan, now, &self.config.fan_in());
        let run_id = loaded.run.run_id.clone();
        let token = self.token();
        let mut after = loaded.clone();
        let mut statements = vec![runs::gate(&self.db, &run_id, loaded.run.version, token)?];
        for write in &writes {
            let Some(row) = loaded.step(write.after.service.as_str()) else { continue };
            let new_row = row_with_record(row, &write.after);
            statements.push(steps::compare_and_set(&self.db, row.status, row.attempts, &new_row, None, Some(token))?);
            after.replace_step(new_row);
        }
        statements.push(runs::restart(&self.db, &run_id, token, at, deadline.as_u64() as i64)?);
        let max_active = crate::settings::quotas(self.env()).of(&loaded.run.client_id).active_runs;
        statements.push(runs::count_started(&self.db, &loaded.run.client_id, max_active)?);
        let round = loaded.run.retries + 1;
        let payload = RunStartedPayload::new(&loaded.plan, &loaded.run.domain, now, deadline);
        let event = EventRow {
            id: EventId::from_parts(now, clock::random_bytes::<8>()?).as_str().to_string(),
            website_id: loaded.run.website_id.clone(),
            run_id: run_id.clone(),
            service: loaded.run.events_service.clone().unwrap_or_else(|| self.orchestrator_service_name()),
            kind: RUN_STATUS_EVENT_TYPE.to_string(),
            payload: serde_json::to_string(&payload).map_err(|e| Error::Internal(e.to_string()))?,
            created_at: at,
            dedupe_key: Some(format!("run:{run_id}:start:{round}")),
        };
        statements.push(event_rows::insert_if_run_version(&self.db, &event, token)?);
        let metas = match self.db.batch(statements).await {
            Ok(metas) => metas,
            Err(e) if runs::is_over_active_quota(&e) => {
                return Err(Error::Quota(QuotaExceeded::ActiveRuns { limit: max_active }))
            }
            Err(e) => return Err(e),
        };
        if metas.first().is_none_or(|m| m.changes == 0) {
            return Err(Error::Conflict(format!("run {run_id} changed while it was being retried; try again")));
        }
        log::emit(log::Event::RunStarted, &log::Line::run(&run_id));
        after.run.version = token;
        after.run.status = RunStatus::Running;
        after.run.started_at = at;
        after.run.deadline_at = deadline.as_u64() as i64;
        after.run.due_at = Some(deadline.as_u64() as i64);
        for column in [&mut after.run.claimed_at, &mut after.run.completed_at] {
            *column = None;
        }
        after.run.partial = None;
        after.run.missing = None;
        after.run.diagnosis_event_id = None;
        after.run.synthesis_error = None;
        after.run.error = None;
        after.run.retries = round;
        let timer = self.run_deadline_timer(&after)?;
        if let Err(e) = self.send_timers(vec![timer]).await {
            worker::console_warn!("run {run_id}: deadline timer of the retry not sent ({e}); the poller keeps it");
        }
        let advance = self.advance(&after, Observer::EventDriven, Dispatch::Queue).await?;
        let names = writes.iter().map(|w| w.after.service.as_str().to_string()).collect();
        Ok(RetryOutcome::Retried { steps: names, retries: round, advance: Box::new(advance) })
    }

    /// Starts a new run with the same inputs as `loaded` (plan as it ran, site, domain,
    /// parameters) for the same client; `acted_by`: the delegate asking, if not the client.
    pub async fn rerun(&self, loaded: &Loaded, acted_by: Option<String>) -> Result<Started> {
        let parameters: Value = serde_json::from_str(&loaded.run.parameters).unwrap_or(Value::Null);
        let new = NewRun {
            run_id: RunId::from_parts(Millis::new(clock::now_ms()), clock::random_bytes::<8>()?),
            kind: RunKind::Diagnostic,
            client_id: loaded.run.client_id.clone(),
            website_id: loaded.run.website_id.clone(),
            domain: loaded.run.domain.clone(),
            plan: loaded.plan.clone(),
            parameters,
            idempotency_key: None,
            priority: loaded.run.priority,
            acted_by,
        };
        self.start_run(new).await
    }
}
