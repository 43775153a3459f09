//! Starting a run: core decides its first wave on the plan's pending steps; the interpreter
//! ([`super::apply`]) writes the run, its steps and its start event in one transaction, then
//! sends the first wave on the task queue with the timer of the run's deadline.

use baton_core::events::{start_dedupe_key, RunStartedPayload, RUN_STATUS_EVENT_TYPE};
use baton_core::fanin;
use baton_core::ids::{EventId, RunId};
use baton_core::lifecycle::{self, Event, Observer, RunAction, RunState};
use baton_core::messages::TaskMessage;
use baton_core::plan::Plan;
use baton_core::quota::QuotaExceeded;
use baton_core::state::RunKind;
use baton_core::state::{RunStatus, StepRecord};
use serde_json::Value;

use super::run::{Dispatch, Engine, Loaded};
use crate::d1::events::EventRow;
use crate::d1::runs::{self, RunRow};
use crate::d1::steps::StepRow;
use crate::{clock, Error, Result};

/// What a new run is made of.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Its id (a run id or an execution id).
    pub run_id: RunId,
    /// `diagnostic` or `pipeline`.
    pub kind: RunKind,
    /// The client that started it.
    pub client_id: String,
    /// The website it is about.
    pub website_id: String,
    /// The domain it is about.
    pub domain: String,
    /// The plan to run.
    pub plan: Plan,
    /// Free-form parameters passed to every service.
    pub parameters: Value,
    /// Client-chosen key that makes starting idempotent.
    pub idempotency_key: Option<String>,
    /// 0 low … 3 critical.
    pub priority: i64,
    /// The delegate that starts it for `client_id` (`API_DELEGATIONS`); `None` when the
    /// client starts it itself.
    pub acted_by: Option<String>,
    /// The caller's trace, which the run joins (`None`: a trace of its own).
    pub trace: Option<baton_core::trace::Parent>,
    /// The run step that starts it, for a child run (`None`: a client started it).
    pub parent: Option<ParentLink>,
}

/// Where a child run comes from: its parent's run, step and attempt, and its depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentLink {
    /// The parent run.
    pub run_id: String,
    /// The parent's `run` step.
    pub step: String,
    /// That step's attempt.
    pub attempt: u32,
    /// The child's depth: the parent's + 1.
    pub depth: u32,
}

/// The run that a start request resolved to.
#[derive(Debug, Clone)]
pub enum Started {
    /// A new run, as written (its first wave dispatched).
    New(Box<Loaded>),
    /// The run this client already started with the same idempotency key.
    Existing(Box<RunRow>),
}

impl Engine<'_> {
    /// Starts a run: one D1 transaction writes the run, its steps (the first wave already
    /// dispatched) and the start event; then the first wave goes on the task queue. If that
    /// send fails the wave is put back and the run made due, so the poller dispatches it.
    pub async fn start_run(&self, new: NewRun) -> Result<Started> {
        Ok(self.start_with(new, Dispatch::Queue).await?.0)
    }

    /// [`start_run`](Self::start_run) for a caller that has the first wave run at once
    /// ([`Dispatch::Inline`]): the wave is claimed in the insert and its task messages are
    /// returned, not sent (see [`Engine::hand_over`]).
    pub async fn start_run_inline(&self, new: NewRun) -> Result<(Started, Vec<TaskMessage>)> {
        self.start_with(new, Dispatch::Inline { analysis: false }).await
    }

    async fn start_with(&self, new: NewRun, dispatch: Dispatch) -> Result<(Started, Vec<TaskMessage>)> {
        if let Some(key) = &new.idempotency_key {
            if let Some(existing) = runs::by_idempotency_key(&self.db, &new.client_id, new.kind, key).await? {
                crate::meter::attribute(&existing.run_id);
                return Ok((Started::Existing(Box::new(existing)), Vec::new()));
            }
        }
        crate::meter::attribute(new.run_id.as_str());
        let now = self.now();
        let plan = &new.plan;
        let deadline = fanin::run_deadline(plan, now, &self.config.fan_in());
        let pending: Vec<StepRecord> = plan.steps().iter().map(|s| StepRecord::pending(s.service.clone())).collect();
        let state = RunState { status: RunStatus::Started, started_at: now, plan, steps: &pending, sizes: &[] };
        let first_wave =
            lifecycle::decide(&state, &[Event::Look], &self.rules(Observer::EventDriven), &mut *self.rng());
        let run_id = new.run_id.as_str().to_string();
        let plan_json = serde_json::to_string(plan).map_err(|e| Error::Internal(e.to_string()))?;
        let run = RunRow {
            run_id: run_id.clone(),
            kind: new.kind,
            client_id: new.client_id.clone(),
            website_id: new.website_id.clone(),
            domain: new.domain.clone(),
            plan_id: plan.plan_id().as_str().to_string(),
            plan_name: plan.name().to_string(),
            plan_json,
            parameters: new.parameters.to_string(),
            idempotency_key: new.idempotency_key.clone(),
            status: if first_wave.run == RunAction::Start { RunStatus::Running } else { RunStatus::Started },
            priority: new.priority,
            created_at: now.as_u64() as i64,
            started_at: now.as_u64() as i64,
            deadline_at: deadline.as_u64() as i64,
            due_at: Some(deadline.as_u64() as i64),
            claimed_at: None,
            completed_at: None,
            partial: None,
            missing: None,
            diagnosis_event_id: None,
            synthesis_error: None,
            error: None,
            version: 0,
            events_service: Some(self.orchestrator_service_name()),
            acted_by: new.acted_by.clone(),
            retries: 0,
            traceparent: new.trace.as_ref().map(|p| baton_core::trace::traceparent(p.trace_id, p.span_id, p.sampled)),
            tracestate: new.trace.as_ref().and_then(|p| p.state.clone()),
            usage_d1_round_trips: 0,
            usage_d1_statements: 0,
            usage_d1_rows_read: 0,
            usage_d1_rows_written: 0,
            usage_kv_reads: 0,
            usage_kv_writes: 0,
            usage_queue_messages: 0,
            usage_subrequests: 0,
            usage_r2_reads: 0,
            usage_r2_writes: 0,
            parent_run_id: new.parent.as_ref().map(|p| p.run_id.clone()),
            parent_step: new.parent.as_ref().map(|p| p.step.clone()),
            parent_attempt: new.parent.as_ref().map(|p| i64::from(p.attempt)),
            depth: new.parent.as_ref().map_or(0, |p| i64::from(p.depth)),
        };
        crate::log::note_trace(&run.trace());
        let pending_rows: Vec<StepRow> = plan
            .steps()
            .iter()
            .zip(plan.waves())
            .enumerate()
            .map(|(position, (spec, wave))| {
                StepRow::pending(&run_id, spec.service.as_str(), position as i64, i64::from(*wave))
            })
            .collect();
        let start_payload =
            RunStartedPayload::new(plan, &new.domain, now, deadline).with_acted_by(new.acted_by.clone());
        let event = EventRow {
            id: EventId::from_parts(now, clock::random_bytes::<8>()?).as_str().to_string(),
            website_id: new.website_id.clone(),
            run_id: run_id.clone(),
            service: self.orchestrator_service_name(),
            kind: RUN_STATUS_EVENT_TYPE.to_string(),
            payload: serde_json::to_string(&start_payload).map_err(|e| Error::Internal(e.to_string()))?,
            created_at: now.as_u64() as i64,
            dedupe_key: Some(start_dedupe_key(&new.run_id)),
        };
        // Diagnostic runs count against the client's quota of runs in progress; pipeline runs
        // are counted too, but their admission already bounds them.
        let max_active = match new.kind {
            RunKind::Diagnostic => crate::settings::quotas(self.env()).of(&new.client_id).active_runs,
            RunKind::Pipeline => u32::MAX,
        };
        let written = match self
            .insert_run(
                Loaded { run, plan: plan.clone(), steps: pending_rows },
                event,
                &first_wave,
                dispatch,
                max_active,
            )
            .await
        {
            Ok(written) => written,
            Err(e) if runs::is_over_active_quota(&e) => {
                return Err(Error::Quota(QuotaExceeded::ActiveRuns { limit: max_active }))
            }
            Err(e) => {
                // Two requests with the same idempotency key raced: the other one won.
                if let Some(key) = &new.idempotency_key {
                    if let Some(existing) = runs::by_idempotency_key(&self.db, &new.client_id, new.kind, key).await? {
                        return Ok((Started::Existing(Box::new(existing)), Vec::new()));
                    }
                }
                return Err(e);
            }
        };
        let messages = self.after_insert(&written, &first_wave, dispatch).await?;
        Ok((Started::New(Box::new(written)), messages))
    }
}
