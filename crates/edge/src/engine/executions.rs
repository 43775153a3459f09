//! The executions service ([`Executions`], reached as `engine.executions()`): pipeline
//! executions as clients see them — submitting one (`POST /execute`) and reading one back with
//! its run (`GET /executions/:execution_id`).
//!
//! Submitting is idempotent per `(client, request_id)`: a repeated request, or one that lost
//! the race to insert the same request id, answers with the execution that stands. A new
//! execution is queued with the plan core compiled from the key-account service's template,
//! then an admission pass runs at once (see [`super::admission`]); the run of an execution has
//! the execution's id.

use baton_core::execution::{self, client_status, waiting_reason, QueueStatus};
use baton_core::ids::{ExecutionId, RunId};
use baton_core::plan::Plan;
use baton_core::request::Priority;
use baton_core::state::RunStatus;
use baton_core::template::{compile, CompileOptions};
use serde_json::{json, Value};

use super::admission;
use super::run::{Engine, Loaded};
use crate::d1::executions::{self, ExecutionRow};
use crate::d1::{resources, runs};
use crate::{clock, kam, Error, Result};

/// Executions a request's admission pass may start (the poller's passes do the rest).
pub const ADMIT_PER_REQUEST: u32 = 5;

/// A valid execution request of an authenticated client.
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// The client it is for: the bearer token's, or the one its delegate acts for.
    pub client_id: String,
    /// The delegate that submits it for `client_id` (`API_DELEGATIONS`); `None` when the
    /// client submits it itself.
    pub acted_by: Option<String>,
    /// The master template to compile.
    pub template_name: String,
    /// Makes retries of the same request submit one execution.
    pub request_id: Option<String>,
    /// Queue priority.
    pub priority: Priority,
    /// The pipeline's inputs (a JSON object).
    pub parameters: Value,
    /// The domain the pipeline works on.
    pub domain: String,
    /// The caller's trace, which the execution's run joins.
    pub trace: Option<baton_core::trace::Parent>,
}

/// A submitted execution, as it stands after the request's admission pass.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// Its queue row.
    pub execution: ExecutionRow,
    /// Its run's status, once the run exists.
    pub run_status: Option<RunStatus>,
    /// Core's completion estimate, from the history of the plan's workers.
    pub estimated_completion_ms: u64,
    /// An earlier request with the same request id submitted it.
    pub replay: bool,
}

impl Submitted {
    /// The status clients see ([`execution::client_status`]).
    pub fn status(&self) -> String {
        client_status(self.execution.status, self.run_status)
    }

    /// Why it waits or failed ([`execution::waiting_reason`]).
    pub fn reason(&self) -> Option<String> {
        waiting_reason(self.execution.status, self.execution.last_error.as_deref())
    }
}

/// An execution and, once started, its run.
#[derive(Debug, Clone)]
pub struct ExecutionDetail {
    /// Its queue row.
    pub execution: ExecutionRow,
    /// Its run, once started.
    pub run: Option<Loaded>,
}

impl ExecutionDetail {
    /// The status clients see ([`execution::client_status`]).
    pub fn status(&self) -> String {
        client_status(self.execution.status, self.run.as_ref().map(|l| l.run.status))
    }

    /// Why it waits or failed ([`execution::waiting_reason`]).
    pub fn reason(&self) -> Option<String> {
        waiting_reason(self.execution.status, self.execution.last_error.as_deref())
    }

    /// Whether it has ended: its run has, or it failed without one.
    pub fn terminal(&self) -> Result<bool> {
        match &self.run {
            Some(loaded) => Ok(loaded.status()?.is_terminal()),
            None => Ok(self.execution.status == QueueStatus::Failed),
        }
    }

    /// What went wrong: its run's error, or why it failed without one.
    pub fn error(&self) -> Option<String> {
        match &self.run {
            Some(loaded) => loaded.run.error.clone(),
            None if self.execution.status == QueueStatus::Failed => self.execution.last_error.clone(),
            None => None,
        }
    }
}

/// The executions service: submitting a client's pipeline executions and reading them back.
/// Reached through [`Engine::executions`].
#[derive(Clone, Copy)]
pub struct Executions<'e> {
    engine: &'e Engine<'e>,
}

impl Engine<'_> {
    /// The executions service, working with this engine.
    pub fn executions(&self) -> Executions<'_> {
        Executions { engine: self }
    }
}

impl Executions<'_> {
    /// How many of `client_id`'s executions wait for admission.
    pub async fn queued_of_client(&self, client_id: &str) -> Result<u64> {
        executions::count_queued_of_client(&self.engine.db, client_id).await
    }

    /// Queues `new` (or finds the execution its request id already submitted) and runs an
    /// admission pass, so it starts at once if the pools have room. An unknown template or
    /// one core cannot compile is a 400 naming `template_name`.
    pub async fn submit(&self, new: NewExecution) -> Result<Submitted> {
        if let Some(existing) = self.execution_by_request(&new.client_id, new.request_id.as_deref()).await? {
            return self.submitted(existing, true).await;
        }
        let plan = self.compiled_template(&new.template_name).await?;
        let row = self.queued_row(new, &plan)?;
        if let Err(e) = self.engine.db.batch(vec![executions::insert(&self.engine.db, &row)?]).await {
            // Two requests with the same request_id raced: the other one's execution stands.
            return match self.execution_by_request(&row.client_id, row.request_id.as_deref()).await? {
                Some(existing) => self.submitted(existing, true).await,
                None => Err(e),
            };
        }
        // The execution is queued whatever happens now; a failed pass is the poller's to redo.
        if let Err(e) = admission::admit_queued(self.engine, ADMIT_PER_REQUEST).await {
            worker::console_error!("execute {}: admission pass failed ({e}); the poller will admit it", row.run_id);
        }
        let current = executions::get(&self.engine.db, &row.run_id).await?.unwrap_or(row);
        self.submitted(current, false).await
    }

    /// The execution `execution_id` with its run, if its client is one `may_see` accepts;
    /// `None` otherwise (an execution the caller may not see is as if it did not exist).
    pub async fn visible(
        &self,
        execution_id: &ExecutionId,
        may_see: impl Fn(&str) -> bool,
    ) -> Result<Option<ExecutionDetail>> {
        let found = executions::get(&self.engine.db, execution_id.as_str()).await?.filter(|r| may_see(&r.client_id));
        let Some(execution) = found else { return Ok(None) };
        let run = self.engine.load(&execution.run_id).await?;
        Ok(Some(ExecutionDetail { execution, run }))
    }

    async fn execution_by_request(&self, client_id: &str, request_id: Option<&str>) -> Result<Option<ExecutionRow>> {
        match request_id {
            Some(request_id) => executions::by_request(&self.engine.db, client_id, request_id).await,
            None => Ok(None),
        }
    }

    /// The key-account service's master template `name`, compiled by core.
    async fn compiled_template(&self, name: &str) -> Result<Plan> {
        let template = kam::master_template(self.engine.env(), name).await?.ok_or_else(|| Error::BadRequest {
            code: "unknown_template",
            message: format!("the key-account service has no master template {name:?}"),
            details: json!({ "field": "template_name" }),
        })?;
        compile(&template, &CompileOptions::default()).map_err(|e| Error::BadRequest {
            code: e.code(),
            message: e.to_string(),
            details: json!({ "field": "template_name", "template_field": e.field(), "template": name }),
        })
    }

    /// The queue row of a new execution: a fresh id, queued now, due by core's queue deadline.
    fn queued_row(&self, new: NewExecution, plan: &Plan) -> Result<ExecutionRow> {
        let now = self.engine.now();
        let execution_id = ExecutionId::in_shard(now, clock::random_bytes::<6>()?, self.engine.shard());
        let run_id = RunId::from_execution(&execution_id);
        Ok(ExecutionRow {
            run_id: run_id.as_str().to_string(),
            website_id: new.client_id.clone(),
            client_id: new.client_id,
            request_id: new.request_id,
            template_name: new.template_name,
            domain: new.domain,
            plan_json: serde_json::to_string(plan).map_err(|e| Error::Internal(e.to_string()))?,
            parameters: new.parameters.to_string(),
            priority: new.priority.rank(),
            enqueued_at: now.as_u64() as i64,
            deadline_at: execution::queue_deadline(now, self.engine.config.job_timeout_ms()).as_u64() as i64,
            status: QueueStatus::Queued,
            attempts: 0,
            admitted_at: None,
            admission_token: None,
            last_error: None,
            acted_by: new.acted_by,
            traceparent: new.trace.as_ref().map(|p| baton_core::trace::traceparent(p.trace_id, p.span_id, p.sampled)),
            tracestate: new.trace.as_ref().and_then(|p| p.state.clone()),
        })
    }

    /// `row` with its run's status and its completion estimate.
    async fn submitted(&self, row: ExecutionRow, replay: bool) -> Result<Submitted> {
        let run_status = runs::get(&self.engine.db, &row.run_id).await?.map(|r| r.status);
        let plan: Plan = serde_json::from_str(&row.plan_json)
            .map_err(|e| Error::Storage(format!("execution {}: unreadable plan: {e}", row.run_id)))?;
        let workers: Vec<&str> = plan.steps().iter().map(|s| s.worker_key.as_str()).collect();
        let stats = resources::stats_of(&self.engine.db, &workers).await?;
        Ok(Submitted {
            estimated_completion_ms: execution::estimated_completion_ms(&plan, &stats),
            execution: row,
            run_status,
            replay,
        })
    }
}
