//! Child runs: a step of kind `run` starts a run of another plan (same client, website and
//! domain) and ends with the child's outcome.
//!
//! The step is dispatched and claimed like a service step, so retries, attempt deadlines,
//! claims, timers and the poller apply unchanged. Its attempt starts the child through the
//! normal start path ([`Engine::start_run`]) under an idempotency key of the parent, step and
//! attempt, so a redelivered task message finds the child it started; the attempt then waits
//! as a service's accepted call does (a timer at its expiry). The child, when it ends
//! ([`Engine::after_ending`]), reports to that attempt as a service's callback does
//! ([`Engine::record`]): a report on another attempt or an ended step is a no-op. A lost report
//! leaves the step to its attempt deadline (a retry of the step cancels the child of the
//! attempt before). A parent that ends cancels its open children.

use baton_core::plan::ChildSpec;
use baton_core::state::{RunKind, StepError, StepStatus};
use serde_json::{json, Value};

use super::run::{summary_of, Engine, Loaded, Report};
use super::start::{NewRun, ParentLink, Started};
use crate::d1::runs;
use crate::{Error, Result};

/// At most this many open children are cancelled in one ending's tail; any left run to their
/// own deadline (their reports to an ended parent change nothing).
pub const CASCADE_LIMIT: u32 = 20;

/// A child's diagnosis larger than this (as JSON) is left out of the step's output, which
/// says how large it was: the output lives in the parent's step row.
const MAX_DIAGNOSIS_BYTES: usize = 32 * 1024;

/// Largest parameters of a child run, as JSON: the run row must stay under D1's 100 KB
/// statement limit (the same bound as a client's run request).
const MAX_CHILD_PARAMETERS_BYTES: usize = 90 * 1024;

/// What starting an attempt's child run did.
#[derive(Debug)]
pub enum ChildStart {
    /// The child runs (started now, or by an earlier delivery of the same attempt); it reports
    /// when it ends.
    Running,
    /// The attempt ends now with this report: the child had already ended, or the start was
    /// refused (unknown plan, quota, depth), which retrying would not change.
    Report(Report),
}

/// The idempotency key of the child started by `step`'s attempt `attempt` of `parent`.
pub fn child_key(parent: &str, step: &str, attempt: u32) -> String {
    format!("child:{parent}:{step}:{attempt}")
}

impl Engine<'_> {
    /// Starts the child run of `parent`'s run step `step`, attempt `attempt` (see the module
    /// docs). An error is transient (storage, queue): the caller records it as a retryable
    /// failure of the attempt.
    pub async fn start_child(&self, parent: &Loaded, step: &str, attempt: u32, spec: &ChildSpec) -> Result<ChildStart> {
        let refused = |why: String| Ok(ChildStart::Report(Report::Failed(StepError::permanent(why))));
        // The children of earlier attempts (timed out, or failed to report) are no longer wanted.
        for earlier in 1..attempt {
            self.cancel_child_of(parent, step, earlier).await;
        }
        let client = parent.run.client_id.as_str();
        let depth = parent.run.depth.max(0) as u32 + 1;
        if let Err(e) = crate::settings::quotas(self.env()).of(client).allows_child_depth(depth) {
            return refused(format!("child run refused: {e}"));
        }
        let Some(plan) = self.plans().for_client(spec.plan_id.as_str(), client).await? else {
            return refused(format!(
                "child run refused: plan_id {:?} is not a plan client {client} may use",
                spec.plan_id.as_str()
            ));
        };
        let parameters = spec.parameters_with(|upstream| {
            parent.step(upstream).and_then(|s| s.output.as_deref()).and_then(|o| serde_json::from_str(o).ok())
        });
        let size = Value::Object(parameters.clone()).to_string().len();
        if size > MAX_CHILD_PARAMETERS_BYTES {
            return refused(format!(
                "child run refused: its parameters are {size} bytes, over {MAX_CHILD_PARAMETERS_BYTES} \
                 (parameters_from takes whole outputs: name a path inside them)"
            ));
        }
        let trace = parent.run.trace();
        let new = NewRun {
            run_id: self.new_run_id()?,
            kind: RunKind::Diagnostic,
            client_id: client.to_string(),
            website_id: parent.run.website_id.clone(),
            domain: parent.run.domain.clone(),
            plan,
            parameters: Value::Object(parameters),
            idempotency_key: Some(child_key(&parent.run.run_id, step, attempt)),
            priority: parent.run.priority,
            acted_by: parent.run.acted_by.clone(),
            // The child joins its parent's trace, under the attempt that starts it.
            trace: Some(baton_core::trace::Parent {
                trace_id: trace.trace_id,
                span_id: trace.span(baton_core::trace::SpanOf::Attempt(step, attempt)),
                sampled: trace.sampled,
                state: trace.state.clone(),
            }),
            parent: Some(ParentLink { run_id: parent.run.run_id.clone(), step: step.to_string(), attempt, depth }),
        };
        let child_id = match self.start_run(new).await {
            Ok(Started::New(written)) => written.run.run_id.clone(),
            Ok(Started::Existing(row)) if row.status.is_terminal() => {
                let Some(ended) = self.load(&row.run_id).await? else {
                    return refused(format!("child run {} is gone", row.run_id));
                };
                return Ok(ChildStart::Report(self.child_report(&ended).await));
            }
            Ok(Started::Existing(row)) => row.run_id,
            Err(Error::Quota(e)) => return refused(format!("child run refused: {e}")),
            Err(e) => return Err(e),
        };
        // A cancel of the parent that came before the child existed found nothing to cancel:
        // look again now that it does (a cancel after this read finds the child).
        let fresh = self.load(&parent.run.run_id).await?;
        let still = fresh
            .as_ref()
            .and_then(|f| f.step(step))
            .is_some_and(|s| s.status == StepStatus::Running && s.attempts == i64::from(attempt));
        if !still {
            self.cancel_child(&child_id).await;
        }
        Ok(ChildStart::Running)
    }

    /// The report a child that ended makes to its parent's step: completed → its outcome as
    /// the output (`run_id`, `status`, `summary`, `diagnosis`); failed or cancelled → a
    /// permanent failure; timeout → a timeout.
    pub(crate) async fn child_report(&self, child: &Loaded) -> Report {
        let run_id = child.run.run_id.as_str();
        if let Some(failure) = ChildSpec::failure_of(child.run.status, run_id, child.run.error.as_deref()) {
            return Report::Failed(failure);
        }
        let diagnosis = match self.diagnosis_of(child).await {
            Ok(Some(d)) if d.to_string().len() > MAX_DIAGNOSIS_BYTES => {
                json!({ "omitted": true, "bytes": d.to_string().len() })
            }
            Ok(d) => d.unwrap_or(Value::Null),
            Err(e) => {
                worker::console_warn!("child run {run_id}: diagnosis not read ({e})");
                Value::Null
            }
        };
        let summary = summary_of(child).ok().and_then(|s| serde_json::to_value(s).ok()).unwrap_or(Value::Null);
        let output =
            json!({ "run_id": run_id, "status": child.run.status, "summary": summary, "diagnosis": diagnosis });
        Report::Succeeded { output, usage: None, duration_ms: None }
    }

    /// What a run's ending owes its family: a child reports to its parent's step; a parent
    /// cancels its open children (at most [`CASCADE_LIMIT`]). Best effort, logged: a lost
    /// report leaves the parent's step to its attempt deadline.
    pub(crate) async fn after_ending_in_family(&self, ended: &Loaded) {
        if let (Some(parent), Some(step), Some(attempt)) =
            (&ended.run.parent_run_id, &ended.run.parent_step, ended.run.parent_attempt)
        {
            let report = self.child_report(ended).await;
            let recorded =
                async { self.on_id(parent)?.record(parent, step, Some(attempt.max(0) as u32), report).await };
            if let Err(e) = Box::pin(recorded).await {
                worker::console_warn!(
                    "child run {} not reported to {parent}/{step} ({e}); its attempt deadline ends it",
                    ended.run.run_id
                );
            }
        }
        if ended.plan.has_runs() {
            match runs::children(&self.db, &ended.run.run_id, true, CASCADE_LIMIT).await {
                Ok(open) => {
                    for child in open {
                        self.cancel_child(&child.run_id).await;
                    }
                }
                Err(e) => worker::console_warn!("run {}: open children not read ({e})", ended.run.run_id),
            }
        }
    }

    /// The child each `run` step of `parent_run_id` started last (step → child run id), for
    /// the run's view.
    pub async fn children_of(&self, parent_run_id: &str) -> Result<std::collections::BTreeMap<String, String>> {
        let rows = runs::children(&self.db, parent_run_id, false, (baton_core::plan::MAX_RUN_STEPS * 4) as u32).await?;
        let mut latest: std::collections::BTreeMap<String, (i64, String)> = Default::default();
        for row in rows {
            let newer = latest.get(&row.parent_step).is_none_or(|(attempt, _)| row.parent_attempt > *attempt);
            if newer {
                latest.insert(row.parent_step, (row.parent_attempt, row.run_id));
            }
        }
        Ok(latest.into_iter().map(|(step, (_, run_id))| (step, run_id)).collect())
    }

    /// Cancels the child `step`'s attempt `attempt` of `parent` started, if it did (a cancel
    /// of the parent tells a run step this way instead of calling a service).
    pub(crate) async fn cancel_child_of(&self, parent: &Loaded, step: &str, attempt: u32) {
        let key = child_key(&parent.run.run_id, step, attempt);
        match runs::by_idempotency_key(&self.db, &parent.run.client_id, RunKind::Diagnostic, &key).await {
            Ok(Some(child)) if !child.status.is_terminal() => self.cancel_child(&child.run_id).await,
            Ok(_) => {}
            Err(e) => worker::console_warn!("run {}: child of {step} not read ({e})", parent.run.run_id),
        }
    }

    /// Cancels a child run, best effort (one that has ended already is left as it is).
    async fn cancel_child(&self, child_id: &str) {
        let cancelled = async {
            let Some(child) = self.load(child_id).await? else { return Ok(()) };
            if child.run.status.is_terminal() {
                return Ok(());
            }
            Box::pin(self.cancel(child)).await.map(|_| ())
        };
        if let Err(e) = cancelled.await {
            worker::console_warn!("child run {child_id} not cancelled ({e}); its own deadline ends it");
        }
    }
}
