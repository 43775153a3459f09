//! Loading a run, recording step results, and advancing a run (skips, dispatches, fan-in).

use std::cell::RefCell;
use std::collections::BTreeMap;

use baton_core::config::{apply_override, Config};
use baton_core::events::{finish_dedupe_key, RunFinish, RunFinishedPayload, RUN_STATUS_EVENT_TYPE};
use baton_core::fanin::{self, FanInDecision, RunView};
use baton_core::ids::{EventId, RunId, ServiceSlug};
use baton_core::messages::{AnalysisMessage, TaskMessage};
use baton_core::plan::Plan;
use baton_core::retry::SplitMix64;
use baton_core::scheduler;
use baton_core::state::{self, RunStatus, StepError, StepEvent, StepOutcome, StepRecord, StepStatus};
use baton_core::summary::{RunFacts, RunSummary};
use baton_core::time::Millis;
use serde_json::Value;
use worker::Env;

use super::rows::{record_of, row_with_record};
use crate::d1::events::{self as event_rows, EventRow};
use crate::d1::runs::{self, RunRow};
use crate::d1::steps::{self, StepRow};
use crate::d1::{Arg, Db, Stmt};
use crate::kv::Kv;
use crate::{bindings, clock, queues, Error, Result};

/// How long after its backoff a retry's own message counts as lost (the poller then
/// dispatches the step anew).
pub const RETRY_GRACE_MS: u64 = 10_000;

/// A recorded result makes its run due for the poller this soon, unless it already is: if
/// the worker dies between recording a result and acting on it (dispatching the next wave,
/// claiming the fan-in), the poller carries on from there instead of waiting for the run's
/// deadline. Costs one row write per run per window, and nothing when the run ends first.
pub const RESULT_RECHECK_MS: u64 = 15_000;

/// A run with its plan and steps, as read from D1.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The run row.
    pub run: RunRow,
    /// Its plan (as it was when the run started).
    pub plan: Plan,
    /// Its steps in plan order.
    pub steps: Vec<StepRow>,
}

impl Loaded {
    /// A run from its rows (the plan is read from the run's `plan_json`).
    pub fn from_rows(run: RunRow, steps: Vec<StepRow>) -> Result<Loaded> {
        let plan: Plan = serde_json::from_str(&run.plan_json)
            .map_err(|e| Error::Storage(format!("run {} has an unreadable plan: {e}", run.run_id)))?;
        Ok(Loaded { run, plan, steps })
    }

    /// The run id.
    pub fn run_id(&self) -> Result<RunId> {
        self.run.run_id.parse().map_err(|e| Error::Storage(format!("run id {}: {e}", self.run.run_id)))
    }

    /// The run status.
    pub fn status(&self) -> Result<RunStatus> {
        self.run.status.parse().map_err(|e| Error::Storage(format!("run {} status: {e}", self.run.run_id)))
    }

    /// The core records of every step.
    pub fn records(&self) -> Result<Vec<StepRecord>> {
        self.steps.iter().map(record_of).collect()
    }

    /// One step's row.
    pub fn step(&self, service: &str) -> Option<&StepRow> {
        self.steps.iter().find(|s| s.service == service)
    }

    /// Replaces the row of the same step (after this caller's own write to it).
    pub fn replace_step(&mut self, row: StepRow) {
        if let Some(slot) = self.steps.iter_mut().find(|s| s.service == row.service) {
            *slot = row;
        }
    }

    /// The run as the fan-in claim leaves it (what `runs::claim_fan_in` writes).
    fn mark_fan_in_claimed(&mut self, now: Millis, partial: bool, missing: &[ServiceSlug]) {
        self.run.status = RunStatus::Aggregating.as_str().to_string();
        self.run.claimed_at = Some(now.as_u64() as i64);
        self.run.partial = Some(i64::from(partial));
        self.run.missing = Some(missing_json(missing));
    }

    /// When the run started.
    pub fn started_at(&self) -> Millis {
        Millis::new(self.run.started_at.max(0) as u64)
    }
}

/// What a service reported for a step attempt.
#[derive(Debug, Clone)]
pub enum Report {
    /// It produced a result.
    Succeeded { output: Value, usage: Option<Value>, duration_ms: Option<u64> },
    /// It failed.
    Failed(StepError),
}

/// What recording a report did.
// Returned once per call and never stored: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum RecordOutcome {
    /// The step changed; the run was advanced.
    Recorded { step: StepRecord, advance: AdvanceReport },
    /// The step had already ended: a duplicate or late report, acknowledged and ignored.
    AlreadyTerminal,
    /// The report is for another attempt, or another writer changed the step first.
    Stale,
    /// No such run or step.
    NotFound,
}

/// What advancing a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AdvanceReport {
    /// Steps dispatched (messages sent).
    pub dispatched: Vec<String>,
    /// Steps skipped because a dependency did not complete.
    pub skipped: Vec<String>,
    /// Steps timed out.
    pub timed_out: Vec<String>,
    /// Steps whose timed-out attempt will be retried.
    pub retrying: Vec<String>,
    /// The fan-in claim this caller won: `Some(partial)`.
    pub aggregated: Option<bool>,
    /// Fan-in is due but left to the poller (event-driven fan-in is off).
    pub deferred: bool,
    /// The run failed without analysis.
    pub failed: bool,
    /// [`Dispatch::Inline`]: the task messages of `dispatched`, not sent.
    #[serde(skip)]
    pub unsent_tasks: Vec<TaskMessage>,
    /// [`Dispatch::Inline`] with analysis: the won fan-in's analysis message, not sent.
    #[serde(skip)]
    pub unsent_analysis: Option<AnalysisMessage>,
    /// [`Dispatch::Inline`]: the run after this advance's writes (dispatched steps claimed by
    /// the caller, the fan-in claim), so the caller runs them without reading it again.
    /// `None` when a racing writer changed a step first: the caller reads the run.
    #[serde(skip)]
    pub after: Option<Loaded>,
}

/// Who carries out what a change makes ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Newly dispatched steps and a won analysis go on their queues.
    Queue,
    /// The caller runs them in this invocation (saving a queue hop each): their messages are
    /// not sent but handed back in [`AdvanceReport::unsent_tasks`] (and
    /// [`AdvanceReport::unsent_analysis`] when `analysis` is true). Whatever the caller does not
    /// finish it must send; if the invocation dies, the steps' deadlines and the analysis
    /// timeout bring the poller.
    Inline {
        /// The caller also runs the analysis of a fan-in it wins.
        analysis: bool,
    },
}

/// A fan-in claim made in the same transaction as the result that settles the run.
struct SettlingClaim {
    partial: bool,
    missing: Vec<ServiceSlug>,
}

/// Who is advancing a run: the poller claims fan-in even when event-driven fan-in is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The orchestrator or the consumer, right after a change.
    EventDriven,
    /// The poller.
    Poller,
}

/// The engine for one event (request, queue batch, cron tick): bindings, config, clock.
pub struct Engine<'a> {
    env: &'a Env,
    /// The database.
    pub db: Db,
    /// The effective configuration (env + KV override).
    pub config: Config,
    /// Why the KV override was ignored, if it was.
    pub rejected_override: Option<String>,
    // Core takes `&mut dyn RandomSource`; a cell lets concurrent handlers share one engine
    // (never borrowed across an await).
    rng: RefCell<SplitMix64>,
}

impl<'a> Engine<'a> {
    /// Resolves bindings and configuration once per event. A bad or unreadable override is
    /// ignored (and reported in `rejected_override`): it never stops work.
    pub async fn new(env: &'a Env) -> Result<Engine<'a>> {
        let (config, rejected_override) = resolve_config(env).await;
        Ok(Engine { rejected_override, ..Engine::with_config(env, config)? })
    }

    /// An engine with a configuration handed over by another worker (which resolved it
    /// moments ago), saving the KV read.
    pub fn with_config(env: &'a Env, config: Config) -> Result<Engine<'a>> {
        let db = Db::from_env(env)?;
        let rng = RefCell::new(SplitMix64::new(clock::random_u64()?));
        Ok(Engine { env, db, config, rejected_override: None, rng })
    }

    /// The worker's environment.
    pub fn env(&self) -> &Env {
        self.env
    }

    /// Now, from the JS clock.
    pub fn now(&self) -> Millis {
        Millis::new(clock::now_ms())
    }

    /// Loads a run, its plan and its steps in one round trip.
    pub async fn load(&self, run_id: &str) -> Result<Option<Loaded>> {
        let results =
            self.db.batch_rows(vec![runs::select(&self.db, run_id)?, steps::select_of_run(&self.db, run_id)?]).await?;
        let mut results = results.into_iter();
        let (run_rows, _) = results.next().unwrap_or_default();
        let (step_rows, _) = results.next().unwrap_or_default();
        let Some(run) = run_rows.into_iter().next() else { return Ok(None) };
        let run: RunRow = serde_json::from_value(run).map_err(|e| Error::Storage(format!("decoding run: {e}")))?;
        Loaded::from_rows(run, decode_steps(step_rows)?).map(Some)
    }

    /// Records what a service reported for `service`'s attempt `attempt` (any attempt when
    /// `None`), then advances the run.
    pub async fn record(
        &self,
        run_id: &str,
        service: &str,
        attempt: Option<u32>,
        report: Report,
    ) -> Result<RecordOutcome> {
        let Some(loaded) = self.load(run_id).await? else { return Ok(RecordOutcome::NotFound) };
        self.record_loaded(loaded, service, attempt, report, Dispatch::Queue).await
    }

    /// [`record`](Self::record) on a run the caller has just loaded (and whose step row it
    /// keeps current with its own writes). Saves a read; safe on a stale copy because the
    /// step write is guarded by the status and attempt it was read with.
    pub async fn record_loaded(
        &self,
        mut loaded: Loaded,
        service: &str,
        attempt: Option<u32>,
        report: Report,
        dispatch: Dispatch,
    ) -> Result<RecordOutcome> {
        let run_id = loaded.run.run_id.clone();
        let run_id = run_id.as_str();
        let Some(row) = loaded.step(service).cloned() else { return Ok(RecordOutcome::NotFound) };
        let record = record_of(&row)?;
        if record.status.is_terminal() {
            return Ok(RecordOutcome::AlreadyTerminal);
        }
        if attempt.is_some_and(|a| a != record.attempts) {
            return Ok(RecordOutcome::Stale);
        }
        let Some(spec) = loaded.plan.step(service).cloned() else { return Ok(RecordOutcome::NotFound) };
        let (event, output, usage, reported_duration) = match report {
            Report::Succeeded { output, usage, duration_ms } => {
                (StepEvent::Succeeded, Some(output), usage, duration_ms)
            }
            Report::Failed(error) => (StepEvent::Failed { error }, None, None, None),
        };
        let now = self.now();
        let next = match state::apply(&record, event, now, &spec, &mut *self.rng.borrow_mut()) {
            Ok(StepOutcome::Applied(next)) => next,
            Ok(StepOutcome::AlreadyTerminal) => return Ok(RecordOutcome::AlreadyTerminal),
            // E.g. a result for a step that was never dispatched.
            Err(_) => return Ok(RecordOutcome::Stale),
        };
        let mut new_row = row_with_record(&row, &next);
        if let Some(output) = &output {
            new_row.output = Some(output.to_string());
        }
        if let Some(usage) = &usage {
            new_row.usage = Some(usage.to_string());
        }
        if next.status == StepStatus::Completed {
            // The service's own measure of its work, when it gives one.
            new_row.duration_ms = reported_duration.map(|d| d as i64).or(new_row.duration_ms);
        }
        // Write, then read the run's steps in the same transaction: deciding on what is in
        // D1 after our write means two racing last results cannot both miss the fan-in.
        let recheck_at = now.saturating_add(RESULT_RECHECK_MS).as_u64() as i64;
        let mut statements = vec![
            steps::compare_and_set(&self.db, &row.status, row.attempts, &new_row)?,
            runs::due_no_later_than(&self.db, run_id, recheck_at)?,
        ];
        // An inline caller whose result settles the run (as far as it read) also claims the
        // fan-in in this transaction, saving the advance's round trip.
        let settling = match dispatch {
            Dispatch::Inline { .. } => self.settling_claim(&loaded, &next, now)?,
            Dispatch::Queue => None,
        };
        if let Some(claim) = &settling {
            statements.push(runs::claim_fan_in_settled_by(
                &self.db,
                run_id,
                now.as_u64() as i64,
                claim.partial,
                &missing_json(&claim.missing),
                now.saturating_add(self.config.analysis_timeout_ms()).as_u64() as i64,
                (service, next.status.as_str(), i64::from(next.attempts)),
            )?);
        }
        statements.push(steps::select_of_run(&self.db, run_id)?);
        let results = self.db.batch_rows(statements).await?;
        let write_won = results.first().is_some_and(|(_, m)| m.changes > 0);
        let claim_won = settling.is_some() && results.get(2).is_some_and(|(_, m)| m.changes > 0);
        let (fresh, _) = results.into_iter().last().unwrap_or_default();
        loaded.steps = decode_steps(fresh)?;
        match (settling, write_won, claim_won) {
            (Some(claim), true, true) => {
                let mut report = AdvanceReport { aggregated: Some(claim.partial), ..AdvanceReport::default() };
                let message = AnalysisMessage::new(loaded.run_id()?, claim.partial, claim.missing.clone());
                if dispatch == (Dispatch::Inline { analysis: true }) {
                    loaded.mark_fan_in_claimed(now, claim.partial, &claim.missing);
                    report.unsent_analysis = Some(message);
                    report.after = Some(loaded);
                } else if !self.start_analysis(run_id, &message).await? {
                    report.aggregated = None;
                }
                Ok(RecordOutcome::Recorded { step: next, advance: report })
            }
            // Another writer recorded the same outcome first, and our claim won: the analysis
            // is ours to start.
            (Some(claim), false, true) => {
                let message = AnalysisMessage::new(loaded.run_id()?, claim.partial, claim.missing);
                self.start_analysis(run_id, &message).await?;
                Ok(RecordOutcome::Stale)
            }
            (_, false, _) => Ok(RecordOutcome::Stale),
            (_, true, _) => {
                let advance = self.advance(&loaded, Caller::EventDriven, dispatch).await?;
                Ok(RecordOutcome::Recorded { step: next, advance })
            }
        }
    }

    /// The fan-in claim to make together with writing `next`, if every step is then settled
    /// in `loaded` (terminal steps never change, so only `next` itself must be as written:
    /// the claim is guarded by it) and core decides to aggregate.
    fn settling_claim(&self, loaded: &Loaded, next: &StepRecord, now: Millis) -> Result<Option<SettlingClaim>> {
        let status = loaded.status()?;
        if !self.config.event_driven_fanin || !matches!(status, RunStatus::Started | RunStatus::Running) {
            return Ok(None);
        }
        let mut records = loaded.records()?;
        for record in records.iter_mut().filter(|r| r.service == next.service) {
            *record = next.clone();
        }
        if !records.iter().all(|r| r.status.is_terminal()) {
            return Ok(None);
        }
        let run_view = RunView { status, started_at: loaded.started_at() };
        let fan_in =
            fanin::decide(&loaded.plan, &run_view, &records, now, &self.config.fan_in(), &mut *self.rng.borrow_mut());
        match fan_in.decision {
            FanInDecision::Aggregate { partial, missing, .. } if fan_in.step_updates.is_empty() => {
                Ok(Some(SettlingClaim { partial, missing }))
            }
            _ => Ok(None),
        }
    }

    /// Carries out the consequences of the run's current step states: time-outs, skips,
    /// dispatch of ready steps, and the fan-in decision (claim → analysis, or fail).
    pub async fn advance(&self, loaded: &Loaded, caller: Caller, dispatch: Dispatch) -> Result<AdvanceReport> {
        let mut report = AdvanceReport::default();
        let status = loaded.status()?;
        if !matches!(status, RunStatus::Started | RunStatus::Running) {
            return Ok(report);
        }
        let now = self.now();
        let plan = &loaded.plan;
        let original = loaded.records()?;
        let run_view = RunView { status, started_at: loaded.started_at() };
        let fan_in = fanin::decide(plan, &run_view, &original, now, &self.config.fan_in(), &mut *self.rng.borrow_mut());

        let mut records: BTreeMap<String, StepRecord> =
            original.iter().map(|r| (r.service.as_str().to_string(), r.clone())).collect();
        for update in &fan_in.step_updates {
            records.insert(update.service.as_str().to_string(), update.clone());
        }
        report.timed_out = names(fan_in.timed_out());
        report.retrying = names(fan_in.retrying());
        report.skipped = names(fan_in.skipped());

        let mut dispatching = Vec::new();
        if fan_in.decision == FanInDecision::Wait {
            let current: Vec<StepRecord> = records.values().cloned().collect();
            let schedule = scheduler::schedule(plan, &current, now);
            for service in schedule.skip.iter().chain(&schedule.dispatch) {
                let (Some(record), Some(spec)) = (records.get(service.as_str()), plan.step(service.as_str())) else {
                    continue;
                };
                // A backing-off step comes back through its own task message (queue retry
                // with delay, dead-lettered after the queue's retries). Only the poller
                // re-dispatches it, and only once that message is overdue (lost).
                let retry_is_overdue = record.next_attempt_at.is_none_or(|at| at.saturating_add(RETRY_GRACE_MS) <= now);
                if record.status == StepStatus::Retrying && !(caller == Caller::Poller && retry_is_overdue) {
                    continue;
                }
                let event =
                    if schedule.dispatch.contains(service) { StepEvent::Dispatched } else { StepEvent::Skipped };
                if let Ok(StepOutcome::Applied(next)) =
                    state::apply(record, event.clone(), now, spec, &mut *self.rng.borrow_mut())
                {
                    if event == StepEvent::Dispatched {
                        dispatching.push(service.as_str().to_string());
                    } else {
                        report.skipped.push(service.as_str().to_string());
                    }
                    records.insert(service.as_str().to_string(), next);
                }
            }
        }

        // Step writes, each guarded by the state it was read in. An inline caller claims what
        // it dispatches in the same transaction (it runs them: no message, no second claim).
        let inline = matches!(dispatch, Dispatch::Inline { .. });
        let mut statements: Vec<Stmt> = Vec::new();
        // (service, index of its write in the batch, the row written)
        let mut written: Vec<(String, usize, StepRow)> = Vec::new();
        for row in &loaded.steps {
            let Some(next) = records.get(&row.service) else { continue };
            if record_of(row)? == *next {
                continue;
            }
            let mut new_row = row_with_record(row, next);
            new_row.claimed_at = if new_row.attempts == row.attempts { row.claimed_at } else { None };
            written.push((row.service.clone(), statements.len(), new_row.clone()));
            statements.push(steps::compare_and_set(&self.db, &row.status, row.attempts, &new_row)?);
            if inline && dispatching.contains(&row.service) {
                statements.push(steps::claim_start(
                    &self.db,
                    &loaded.run.run_id,
                    &row.service,
                    new_row.attempts,
                    now.as_u64() as i64,
                )?);
                if let Some((_, _, claimed)) = written.last_mut() {
                    claimed.claimed_at = Some(now.as_u64() as i64);
                }
            }
        }
        let run_id = loaded.run.run_id.as_str();
        if !dispatching.is_empty() && status == RunStatus::Started {
            statements.push(runs::transition(&self.db, run_id, &["started"], "running", &[])?);
        }
        let final_records: Vec<StepRecord> = records.values().cloned().collect();
        // (kind, index in the batch) of the run-level statement whose `changes` we act on.
        let mut run_statement: Option<(&'static str, usize)> = None;
        match &fan_in.decision {
            FanInDecision::Wait => {}
            FanInDecision::Aggregate { partial, missing, .. } => {
                if caller == Caller::Poller || self.config.event_driven_fanin {
                    let missing_json = missing_json(missing);
                    run_statement = Some(("claim", statements.len()));
                    statements.push(runs::claim_fan_in(
                        &self.db,
                        run_id,
                        now.as_u64() as i64,
                        *partial,
                        &missing_json,
                        now.saturating_add(self.config.analysis_timeout_ms()).as_u64() as i64,
                    )?);
                } else {
                    statements.push(runs::set_due(&self.db, run_id, now.as_u64() as i64)?);
                    report.deferred = true;
                }
            }
            FanInDecision::Fail { reason } => {
                run_statement = Some(("fail", statements.len()));
                statements.push(runs::fail_if_settled(&self.db, run_id, now.as_u64() as i64, &reason.to_string())?);
                let finish = RunFinishedPayload::new(
                    RunFinish {
                        status: RunStatus::Failed,
                        domain: loaded.run.domain.clone(),
                        started_at: loaded.started_at(),
                        completed_at: now,
                        diagnosis_event_id: None,
                        synthesis_error: None,
                    },
                    plan,
                    &final_records,
                );
                statements.push(event_rows::insert(&self.db, &self.finish_event_row(loaded, &finish, now)?)?);
            }
        }
        if statements.is_empty() {
            return Ok(report);
        }
        let metas = self.db.batch(statements).await?;
        let won = |i: usize| metas.get(i).is_some_and(|m| m.changes > 0);

        let dispatched_won: Vec<&String> =
            written.iter().filter(|(s, i, _)| won(*i) && dispatching.contains(s)).map(|(s, _, _)| s).collect();
        let claim_won = matches!(run_statement, Some(("claim", i)) if won(i));
        // Known without a read only if every write of ours went in (a racing caller that
        // wrote a step first has its own version of it).
        let all_won = written.iter().all(|(_, i, _)| won(*i));
        if inline && all_won && (!dispatched_won.is_empty() || claim_won) {
            // The run as it stands after this caller's writes, for running what it claimed.
            let mut after = loaded.clone();
            for (_, _, row) in written.iter().filter(|(_, i, _)| won(*i)) {
                after.replace_step(row.clone());
            }
            if let (Some(("claim", i)), FanInDecision::Aggregate { partial, missing, .. }) =
                (run_statement, &fan_in.decision)
            {
                if won(i) {
                    after.mark_fan_in_claimed(now, *partial, missing);
                }
            }
            report.after = Some(after);
        }
        if !dispatched_won.is_empty() {
            let messages: Vec<TaskMessage> = dispatched_won
                .iter()
                .filter_map(|service| {
                    let attempt = records.get(service.as_str())?.attempts;
                    Some(TaskMessage::new(loaded.run_id().ok()?, service.parse().ok()?, attempt))
                })
                .collect();
            if matches!(dispatch, Dispatch::Inline { .. }) {
                report.dispatched = dispatched_won.iter().map(|s| s.to_string()).collect();
                report.unsent_tasks = messages;
            } else if let Err(e) = self.send_tasks(&messages).await {
                worker::console_error!("run {run_id}: dispatch send failed ({e}); leaving it to the poller");
                self.undo_dispatch(loaded, &records, &dispatched_won).await?;
            } else {
                report.dispatched = dispatched_won.iter().map(|s| s.to_string()).collect();
            }
        }
        match (run_statement, &fan_in.decision) {
            (Some(("claim", i)), FanInDecision::Aggregate { partial, missing, .. }) if won(i) => {
                let message = AnalysisMessage::new(loaded.run_id()?, *partial, missing.clone());
                if dispatch == (Dispatch::Inline { analysis: true }) {
                    report.aggregated = Some(*partial);
                    report.unsent_analysis = Some(message);
                    return Ok(report);
                }
                if self.start_analysis(run_id, &message).await? {
                    report.aggregated = Some(*partial);
                }
            }
            (Some(("fail", i)), _) if won(i) => {
                report.failed = true;
                if let Some(reloaded) = self.load(run_id).await? {
                    self.write_snapshot(&reloaded).await;
                }
                if loaded.run.kind == "pipeline" {
                    // Its reservation is free now: admit what waits (the poller would, later).
                    if let Err(e) = Box::pin(crate::admission::admit_queued(self, 10)).await {
                        worker::console_warn!("admission after a failed pipeline: {e}");
                    }
                }
            }
            _ => {}
        }
        Ok(report)
    }

    /// The finish event row for a run (written once: its dedupe key is per run).
    pub fn finish_event_row(&self, loaded: &Loaded, payload: &RunFinishedPayload, now: Millis) -> Result<EventRow> {
        let run_id = loaded.run_id()?;
        let id = EventId::from_parts(now, clock::random_bytes::<8>()?);
        Ok(EventRow {
            id: id.as_str().to_string(),
            website_id: loaded.run.website_id.clone(),
            run_id: run_id.as_str().to_string(),
            service: self.orchestrator_service_name(),
            kind: RUN_STATUS_EVENT_TYPE.to_string(),
            payload: serde_json::to_string(payload).map_err(|e| Error::Internal(e.to_string()))?,
            created_at: now.as_u64() as i64,
            dedupe_key: Some(finish_dedupe_key(&run_id)),
        })
    }

    /// The `service` of lifecycle events (`ORCHESTRATOR_SERVICE_NAME`, default "orchestrator").
    pub fn orchestrator_service_name(&self) -> String {
        self.env
            .var("ORCHESTRATOR_SERVICE_NAME")
            .map(|v| v.to_string())
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "orchestrator".to_string())
    }

    /// Sends task messages on the task queue.
    pub async fn send_tasks(&self, messages: &[TaskMessage]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        if crate::faults::injected(self.env, "task-queue") {
            return Err(Error::Queue("injected task-queue fault".into()));
        }
        let queue = queues::task_queue(self.env)?;
        queues::send_all(&queue, messages).await
    }

    /// Sends an analysis message (e.g. one a [`Dispatch::Inline`] caller could not run).
    pub async fn send_analysis(&self, message: &AnalysisMessage) -> Result<()> {
        queues::send(&queues::analysis_queue(self.env)?, message).await
    }

    /// Puts dispatched steps back as they were, and makes the run due now, so the poller
    /// dispatches them again: a failed send loses nothing.
    pub(super) async fn undo_dispatch(
        &self,
        loaded: &Loaded,
        records: &BTreeMap<String, StepRecord>,
        services: &[&String],
    ) -> Result<()> {
        let mut statements = Vec::new();
        for service in services {
            let (Some(row), Some(record)) = (loaded.step(service), records.get(service.as_str())) else { continue };
            let dispatched = row_with_record(row, record);
            statements.push(steps::compare_and_set(&self.db, &dispatched.status, dispatched.attempts, row)?);
        }
        statements.push(runs::set_due(&self.db, &loaded.run.run_id, self.now().as_u64() as i64)?);
        self.db.batch(statements).await?;
        Ok(())
    }

    /// Sends the analysis message of a fan-in claim this caller won; if it cannot be sent, the
    /// claim is released and the run made due, so the poller claims again. Whether it was sent.
    async fn start_analysis(&self, run_id: &str, message: &AnalysisMessage) -> Result<bool> {
        match self.send_analysis(message).await {
            Ok(()) => Ok(true),
            Err(e) => {
                self.release_claim(run_id, &e).await?;
                Ok(false)
            }
        }
    }

    async fn release_claim(&self, run_id: &str, cause: &Error) -> Result<()> {
        worker::console_error!("run {run_id}: analysis send failed ({cause}); releasing the fan-in claim");
        let now = self.now().as_u64() as i64;
        let statement = runs::transition(
            &self.db,
            run_id,
            &["aggregating"],
            "running",
            &[("claimed_at", Arg::Null), ("due_at", Arg::Int(now))],
        )?;
        self.db.batch(vec![statement]).await?;
        Ok(())
    }

    /// Mirrors the run's summary into KV (`job:{traceId}`) for fast reads. Best effort: KV
    /// never decides anything, so a failure is logged, not raised.
    pub async fn write_snapshot(&self, loaded: &Loaded) {
        write_snapshot(self.env, loaded).await
    }
}

/// [`Engine::write_snapshot`] without an engine (no configuration needed).
pub async fn write_snapshot(env: &Env, loaded: &Loaded) {
    let outcome = async {
        let snapshot = snapshot_of(loaded)?;
        Kv::from_env(env)?.put_json(&bindings::kv_keys::job(&loaded.run.run_id), &snapshot).await
    }
    .await;
    if let Err(e) = outcome {
        worker::console_warn!("run {}: KV snapshot not written: {e}", loaded.run.run_id);
    }
}

/// The run's summary in core's shape (camelCase, RFC 3339 times).
pub fn summary_of(loaded: &Loaded) -> Result<RunSummary> {
    let corrupt = |what: &str, e: String| Error::Storage(format!("run {}: {what}: {e}", loaded.run.run_id));
    let facts = RunFacts {
        run_id: loaded.run_id()?,
        website_id: loaded
            .run
            .website_id
            .parse()
            .map_err(|e: baton_core::ids::IdError| corrupt("website_id", e.to_string()))?,
        domain: loaded.run.domain.clone(),
        plan_id: loaded.plan.plan_id().clone(),
        status: loaded.status()?,
        started_at: loaded.started_at(),
        completed_at: loaded.run.completed_at.map(|ms| Millis::new(ms.max(0) as u64)),
        diagnosis_event_id: match &loaded.run.diagnosis_event_id {
            Some(id) => {
                Some(id.parse().map_err(|e: baton_core::ids::IdError| corrupt("diagnosis_event_id", e.to_string()))?)
            }
            None => None,
        },
        error: loaded.run.error.clone(),
    };
    Ok(RunSummary::new(facts, &loaded.plan, &loaded.records()?))
}

/// The `job:{traceId}` snapshot: the run's summary and its steps' statuses.
pub fn snapshot_of(loaded: &Loaded) -> Result<Value> {
    let steps: Vec<Value> = loaded
        .steps
        .iter()
        .map(|s| serde_json::json!({ "service": s.service, "status": s.status, "attempts": s.attempts }))
        .collect();
    Ok(serde_json::json!({ "traceId": loaded.run.run_id, "summary": summary_of(loaded)?, "steps": steps }))
}

/// The `runs.missing` column: a JSON array of step slugs.
fn missing_json(missing: &[ServiceSlug]) -> String {
    Value::from(names(missing.iter())).to_string()
}

fn names<'s>(services: impl IntoIterator<Item = &'s ServiceSlug>) -> Vec<String> {
    services.into_iter().map(|s| s.as_str().to_string()).collect()
}

fn decode_steps(rows: Vec<Value>) -> Result<Vec<StepRow>> {
    rows.into_iter()
        .map(|r| serde_json::from_value(r).map_err(|e| Error::Storage(format!("decoding step: {e}"))))
        .collect()
}

async fn resolve_config(env: &Env) -> (Config, Option<String>) {
    let base = Config::from_lookup(|key| env.var(key).ok().map(|v| v.to_string())).unwrap_or_else(|e| {
        worker::console_error!("invalid configuration variable ({e}); using defaults");
        Config::default()
    });
    let override_text = match Kv::from_env(env) {
        Ok(kv) => kv.get_text(bindings::kv_keys::CONFIG).await,
        Err(e) => Err(e),
    };
    match override_text {
        Ok(None) => (base, None),
        Ok(Some(text)) => match apply_override(&base, &text) {
            Ok(config) => (config, None),
            Err(e) => {
                worker::console_warn!("ignoring KV orchestration:config: {e}");
                (base, Some(e.to_string()))
            }
        },
        Err(e) => {
            worker::console_warn!("could not read KV orchestration:config ({e}); using env config");
            (base, Some(format!("unreadable: {e}")))
        }
    }
}
