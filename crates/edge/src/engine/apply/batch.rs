//! A decision's D1 batch as data: what each statement writes ([`Write`]), built by pure
//! functions from core's decision and its [`Effect`]s, and only then turned into SQL
//! ([`Write::statement`]). Nothing here reads, sends or decides; the tests at the bottom check
//! the batches without a runtime.

use std::collections::{BTreeMap, BTreeSet};

use baton_core::events::{
    diagnosis_dedupe_key, finish_dedupe_key, RunFinish, RunFinishedPayload, RUN_STATUS_EVENT_TYPE,
};
use baton_core::ids::{EventId, ServiceSlug};
use baton_core::lifecycle::{self, Cause, Effect, Finish, RunAction};
use baton_core::metrics;
use baton_core::shard::Shard;
use baton_core::state::{RunStatus, StepStatus};
use baton_core::synthesis::Diagnosis;
use baton_core::time::Millis;
use serde_json::Value;

use super::super::finish::{rule_based_diagnosis, DIAGNOSIS_EVENT_TYPE};
use super::super::rows::row_with_record;
use super::super::run::{missing_json, Loaded, Report};
use super::super::webhooks::Outbox;
use super::totals;
use crate::d1::archive::{self, ArchivedRow};
use crate::d1::events::{self as event_rows, EventRow};
use crate::d1::executions;
use crate::d1::runs::{self, Ending, RunRow};
use crate::d1::steps::{self, StepRow};
use crate::d1::{service_slots, Db, Stmt};
use crate::{clock, Error, Result};

/// One statement of a batch, as data.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    /// The decision's gate: the run's version moves from `read` to `token` only if no one
    /// changed the run since it was read.
    Gate { read: i64, token: i64 },
    /// A step's compare-and-set on its status and attempts as read (`row` is what it
    /// becomes), claimed for the writer with `claim`, under the gate `gate` if any.
    Step { read_status: StepStatus, read_attempts: i64, row: Box<StepRow>, claim: Option<i64>, gate: Option<i64> },
    /// A running attempt claimed by the first delivery of its message.
    ClaimAttempt { service: String, attempt: i64, at: i64 },
    /// A claim on a running attempt given up by the invocation that held it.
    ReleaseAttempt { service: String, attempt: i64, claimed_at: i64 },
    /// A concurrency slot the ended attempt held, given back.
    ReleaseSlot { service: String, attempt: u32 },
    /// The run due for the poller no later than `at`.
    DueNoLaterThan(i64),
    /// The run due for the poller at `at` (while it is in the poller's index).
    Due(i64),
    /// The run due for the poller at `at`, only while its status is one of `statuses`.
    DueWhile { at: i64, statuses: &'static [RunStatus] },
    /// `started → running`, under the gate `token`.
    Running { token: i64 },
    /// `started|running → paused`, under the gate `token`.
    Pause { token: i64 },
    /// `paused → running`, under the gate `token`.
    Resume { token: i64 },
    /// The fan-in claim, under the gate `token`: the run as it leaves it.
    ClaimFanIn { token: i64, run: Box<RunRow> },
    /// A fan-in claim given back (its analysis could not be sent).
    ReleaseFanIn { at: i64, token: i64 },
    /// The run's ending (its row as it ends), from one of `from`, under `gate` if any.
    Finish { run: Box<RunRow>, from: &'static [RunStatus], gate: Option<i64> },
    /// An ended round started over (a retry) under the gate `token`: the run as it restarts.
    Restart { token: i64, run: Box<RunRow> },
    /// An event, written only if the run carries `token` afterwards.
    EventIfVersion { event: Box<EventRow>, token: i64 },
    /// An event.
    Event(Box<EventRow>),
    /// A new run.
    InsertRun(Box<RunRow>),
    /// A group of a new run's steps (at most [`steps::ROWS_PER_INSERT`]).
    InsertSteps(Vec<StepRow>),
    /// Items `0..count` of a map step, `pending` (those there already kept), under the gate
    /// `token`.
    InsertItems { step: String, position: i64, wave: i64, count: u32, token: i64 },
    /// A run counted against its client's quota of runs in progress (fails the batch above it).
    CountStarted { client_id: String, max: u32 },
    /// An ended run no longer counted, if the ending carrying `token` won.
    CountEnded { client_id: String, token: i64 },
    /// An ending's webhook deliveries, written only if the run carries `token`.
    Deliveries { outbox: Outbox, ended: Box<Loaded>, token: i64, now: Millis },
    /// A fresh version after writes outside a won gate, so every copy read before is stale.
    Bump(i64),
    /// A running attempt marked as reporting progress, asked every `interval_ms`.
    ProgressPollable { service: String, worker: String, attempt: u32, at: i64, interval_ms: u64 },
    /// A heartbeat of a running attempt with what its service said.
    Heartbeat { service: String, attempt: i64, progress: String, at: i64 },
    /// An archived run's slim row, if the run is still the version read.
    Archived { row: Box<ArchivedRow>, version: i64 },
    /// What an ending adds to (or a restart takes back from) the metric totals, if the run
    /// carries `version`; with `attempts`, also the run's ended attempts as the batch leaves
    /// them (an ending's, read by the statement itself).
    Totals { totals: Vec<(String, String, i64)>, version: i64, attempts: bool },
    /// A run's attempts' history, if it is still the version read.
    DeleteAttempts { version: i64 },
    /// A run's steps, if it is still the version read.
    DeleteSteps { version: i64 },
    /// A run's events, if it is still the version read.
    DeleteEvents { version: i64 },
    /// An event delivered to the run, kept for its wait step (`changes` = 0: delivered before).
    Inbox(Box<crate::d1::inbox::InboxRow>),
    /// A run's delivered events, if it is still the version read.
    DeleteInbox { version: i64 },
    /// A pipeline run's execution row, if it is still the version read.
    DeleteExecution { version: i64 },
    /// A pipeline run's released reservations, if it is still the version read.
    DeleteAllocations { version: i64 },
    /// A pipeline run's usage samples, if it is still the version read.
    DeleteUsage { version: i64 },
    /// An ended run's row, if it is still the version read: last of a batch that moves a run
    /// out of D1.
    DeleteRun { version: i64 },
    /// An archived run's slim row.
    DeleteArchived,
}

impl Write {
    /// The SQL of this write on `run_id`'s rows.
    pub(crate) fn statement(&self, db: &Db, run_id: &str) -> Result<Stmt> {
        match self {
            Write::Gate { read, token } => runs::gate(db, run_id, *read, *token),
            Write::Step { read_status, read_attempts, row, claim, gate } => {
                steps::compare_and_set(db, *read_status, *read_attempts, row, *claim, *gate)
            }
            Write::ClaimAttempt { service, attempt, at } => steps::claim_start(db, run_id, service, *attempt, *at),
            Write::ReleaseAttempt { service, attempt, claimed_at } => {
                steps::release_claim(db, run_id, service, *attempt, *claimed_at)
            }
            Write::ReleaseSlot { service, attempt } => service_slots::release(db, run_id, service, *attempt),
            Write::DueNoLaterThan(at) => runs::due_no_later_than(db, run_id, *at),
            Write::Due(at) => runs::set_due(db, run_id, *at),
            Write::DueWhile { at, statuses } => runs::set_due_while(db, run_id, *at, statuses),
            Write::Running { token } => runs::mark_running(db, run_id, *token),
            Write::Pause { token } => runs::pause(db, run_id, *token),
            Write::Resume { token } => runs::resume(db, run_id, *token),
            Write::ClaimFanIn { token, run } => runs::claim_fan_in(db, run, *token),
            Write::ReleaseFanIn { at, token } => runs::release_fan_in(db, run_id, *at, *token),
            Write::Finish { run, from, gate } => runs::finish(db, &Ending { run, from, gate: *gate }),
            Write::Restart { token, run } => runs::restart(db, run, *token),
            Write::EventIfVersion { event, token } => event_rows::insert_if_run_version(db, event, *token),
            Write::Event(event) => event_rows::insert(db, event),
            Write::InsertRun(run) => runs::insert(db, run),
            Write::InsertSteps(rows) => steps::insert_group(db, rows),
            Write::InsertItems { step, position, wave, count, token } => {
                steps::insert_items(db, run_id, step, *position, *wave, *count, *token)
            }
            Write::CountStarted { client_id, max } => runs::count_started(db, client_id, *max),
            Write::CountEnded { client_id, token } => runs::count_ended(db, run_id, client_id, *token),
            Write::Deliveries { outbox, ended, token, now } => outbox.statement(db, ended, *token, *now),
            Write::Bump(token) => runs::bump(db, run_id, *token),
            Write::ProgressPollable { service, worker, attempt, at, interval_ms } => {
                steps::mark_progress_pollable(db, run_id, service, worker, *attempt, *at, *interval_ms)
            }
            Write::Heartbeat { service, attempt, progress, at } => {
                steps::record_heartbeat(db, run_id, service, *attempt, progress, *at)
            }
            Write::Archived { row, version } => archive::insert_if_run_version(db, row, *version),
            Write::Totals { totals, version, attempts } => {
                archive::add_totals_if_run_version(db, run_id, *version, totals, *attempts)
            }
            Write::DeleteAttempts { version } => steps::delete_attempts_if_version(db, run_id, *version),
            Write::DeleteSteps { version } => steps::delete_of_run_if_version(db, run_id, *version),
            Write::DeleteEvents { version } => event_rows::delete_of_run_if_version(db, run_id, *version),
            Write::Inbox(row) => crate::d1::inbox::insert(db, run_id, row),
            Write::DeleteInbox { version } => crate::d1::inbox::delete_of_run_if_version(db, run_id, *version),
            Write::DeleteExecution { version } => executions::delete_of_run_if_version(db, run_id, *version),
            Write::DeleteAllocations { version } => {
                let [allocations, _] = executions::delete_resources_if_version(db, run_id, *version)?;
                Ok(allocations)
            }
            Write::DeleteUsage { version } => {
                let [_, usage] = executions::delete_resources_if_version(db, run_id, *version)?;
                Ok(usage)
            }
            Write::DeleteRun { version } => runs::delete_if_version(db, run_id, *version),
            Write::DeleteArchived => archive::delete(db, run_id),
        }
    }
}

/// The statements of `writes`, in order, on `run_id`'s rows.
pub(crate) fn statements(db: &Db, run_id: &str, writes: &[Write]) -> Result<Vec<Stmt>> {
    writes.iter().map(|w| w.statement(db, run_id)).collect()
}

/// What a batch needs drawn fresh: version tokens and event ids.
pub(crate) trait Fresh {
    /// A fresh version token for a run.
    fn token(&mut self) -> i64;
    /// A fresh event id at `now`.
    fn event_id(&mut self, now: Millis) -> Result<EventId> {
        Ok(EventId::from_parts(now, clock::random_bytes::<8>()?))
    }
    /// A fresh outbox for an ending at `now` of a run in `shard`.
    fn outbox(&mut self, now: Millis, shard: Shard) -> Result<Outbox> {
        Outbox::fresh(now, shard)
    }
}

/// What a decision's batch is carried out under, besides the decision.
pub(crate) struct Under {
    /// Now.
    pub now: Millis,
    /// The workers whose services have a concurrency cap (their attempts hold slots).
    pub capped: BTreeSet<String>,
    /// The `service` of lifecycle events of a run that does not name its own.
    pub events_service: String,
}

/// A batch built from a decision: its writes and what each write's `changes` means.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The writes, the gate first.
    pub writes: Vec<Write>,
    /// (index of the write, its step, why it is written)
    pub steps: Vec<(usize, String, Cause)>,
    /// Index of the fan-in claim, if any.
    pub claim: Option<usize>,
    /// The ending written with it: (index of its write, the run as it ends, the index of its
    /// deliveries' write).
    pub ending: Option<(usize, Loaded, usize)>,
    /// The run as the batch leaves it if its gate is won.
    pub after: Loaded,
}

/// The batch of `decision` on `loaded` with its `effects`; `payloads`: what the reported
/// steps sent.
pub(crate) fn decision_batch(
    loaded: &Loaded,
    decision: &lifecycle::Decision,
    effects: &[Effect],
    payloads: &BTreeMap<&str, &Report>,
    under: &Under,
    fresh: &mut dyn Fresh,
) -> Result<Batch> {
    let at = under.now.as_u64() as i64;
    let token = fresh.token();
    let mut batch = Batch {
        writes: vec![Write::Gate { read: loaded.run.version, token }],
        steps: Vec::new(),
        claim: None,
        ending: None,
        after: loaded.clone(),
    };
    batch.after.run.version = token;
    if decision.resume {
        // Running again before anything the resume dispatches (and before a claim from it).
        batch.after.run.status = RunStatus::Running;
        batch.writes.push(Write::Resume { token });
        let event = held_event(loaded, RunStatus::Running, under, fresh)?;
        batch.writes.push(Write::EventIfVersion { event: Box::new(event), token });
    }
    let handed_over: BTreeSet<&ServiceSlug> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::HandOver { service, .. } => Some(service),
            _ => None,
        })
        .collect();
    let created = super::maps::created_rows(loaded, &decision.created);
    for (step, position, wave, count) in super::maps::item_ranges(loaded, &decision.created) {
        batch.writes.push(Write::InsertItems { step, position, wave, count, token });
    }
    batch.after.steps.extend(created.iter().cloned());
    for write in &decision.writes {
        let service = write.after.service.as_str();
        let Some(row) = loaded.step(service).or_else(|| created.iter().find(|r| r.service == service)) else {
            continue;
        };
        let mut new_row = row_with_record(row, &write.after);
        // The step's duration stays Baton's own measure (first dispatch to its end), as its
        // attempts' are: a service's `duration_ms` may leave out queueing and transport.
        if let Some(Report::Succeeded { output, usage, .. }) = payloads.get(row.service.as_str()) {
            new_row.output = Some(output.to_string());
            new_row.usage = usage.as_ref().map(Value::to_string);
        }
        if let Some(output) = super::maps::collected(&batch.after, &write.after) {
            new_row.output = Some(output.to_string());
        }
        let claim = (write.cause == Cause::Dispatched && handed_over.contains(&write.after.service)).then_some(at);
        new_row.claimed_at = claim.or(if new_row.attempts == row.attempts { row.claimed_at } else { None });
        let gate = (write.cause != Cause::Reported).then_some(token);
        batch.steps.push((batch.writes.len(), new_row.service.clone(), write.cause));
        batch.writes.push(Write::Step {
            read_status: row.status,
            read_attempts: row.attempts,
            row: Box::new(new_row.clone()),
            claim,
            gate,
        });
        batch.after.replace_step(new_row);
    }
    for effect in effects {
        match effect {
            Effect::ReleaseSlot { service, attempt } => {
                let capped = loaded
                    .plan
                    .step(service.as_str())
                    .is_some_and(|spec| under.capped.contains(spec.worker_key.as_str()));
                if capped {
                    batch.writes.push(Write::ReleaseSlot { service: service.as_str().to_string(), attempt: *attempt });
                }
            }
            Effect::LookNoLaterThan(when) => batch.writes.push(Write::DueNoLaterThan(when.as_u64() as i64)),
            _ => {}
        }
    }
    match &decision.run {
        RunAction::Keep => {}
        RunAction::Start => {
            batch.after.run.status = RunStatus::Running;
            batch.writes.push(Write::Running { token });
        }
        RunAction::DeferFanIn => batch.writes.push(Write::Due(at)),
        RunAction::Pause => {
            batch.after.run.status = RunStatus::Paused;
            batch.writes.push(Write::Pause { token });
            let event = held_event(loaded, RunStatus::Paused, under, fresh)?;
            batch.writes.push(Write::EventIfVersion { event: Box::new(event), token });
        }
        RunAction::Claim { partial, missing, .. } => {
            let resend_at = effects.iter().find_map(|e| match e {
                Effect::AwaitAnalysis { resend_at } => Some(resend_at.as_u64() as i64),
                _ => None,
            });
            let after = &mut batch.after;
            after.run.status = RunStatus::Aggregating;
            after.run.claimed_at = Some(at);
            after.run.partial = Some(i64::from(*partial));
            after.run.missing = Some(missing_json(missing));
            after.run.due_at = resend_at.or(after.run.due_at);
            batch.claim = Some(batch.writes.len());
            batch.writes.push(Write::ClaimFanIn { token, run: Box::new(after.run.clone()) });
            let now_analysed = effects.iter().find_map(|e| match e {
                Effect::AnalyseNow(finish) => Some(finish),
                _ => None,
            });
            if let Some(finish) = now_analysed {
                // The rule-based analysis is pure: the run ends in this same batch.
                let diagnosis = rule_based_diagnosis(&batch.after, None);
                let (writes, ended) = ending(&batch.after, finish, Some(diagnosis), Some(token), under, fresh)?;
                push_ending(&mut batch, writes, ended);
            }
        }
        RunAction::Finish(finish) => {
            let (writes, ended) = ending(&batch.after, finish, None, Some(token), under, fresh)?;
            push_ending(&mut batch, writes, ended);
        }
    }
    if decision.writes.iter().any(|w| w.cause == Cause::Reported) {
        // Outside a won gate, the report's write still tells every other copy it is stale.
        batch.writes.push(Write::Bump(token));
    }
    Ok(batch)
}

/// The lifecycle event of a pause (`status: paused`) or a resume (`status: running`).
fn held_event(loaded: &Loaded, status: RunStatus, under: &Under, fresh: &mut dyn Fresh) -> Result<EventRow> {
    let now = under.now;
    let payload = serde_json::json!({ "status": status, "at": now.to_rfc3339() });
    Ok(EventRow {
        id: fresh.event_id(now)?.as_str().to_string(),
        website_id: loaded.run.website_id.clone(),
        run_id: loaded.run.run_id.clone(),
        service: loaded.run.events_service.clone().unwrap_or_else(|| under.events_service.to_string()),
        kind: RUN_STATUS_EVENT_TYPE.to_string(),
        payload: payload.to_string(),
        created_at: now.as_u64() as i64,
        dedupe_key: None,
    })
}

fn push_ending(batch: &mut Batch, writes: Vec<Write>, ended: Loaded) {
    let at = batch.writes.len();
    batch.ending = Some((at, ended, at + writes.len() - 1));
    batch.writes.extend(writes);
}

/// The writes that end `loaded` as `finish` says (under `gate`, if any), and the run as they
/// leave it; what it adds to the metric totals includes its ended attempts, counted by the
/// totals' statement itself. The deliveries' write is always the last ([`Outbox`]).
pub(crate) fn ending(
    loaded: &Loaded,
    finish: &Finish,
    diagnosis: Option<Diagnosis>,
    gate: Option<i64>,
    under: &Under,
    fresh: &mut dyn Fresh,
) -> Result<(Vec<Write>, Loaded)> {
    let now = under.now;
    let token = fresh.token();
    let run_id = loaded.run_id()?;
    let diagnosis_event_id = match &diagnosis {
        Some(_) => Some(fresh.event_id(now)?),
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
    let mut writes = vec![Write::Finish { run: Box::new(ended.run.clone()), from: finish.from, gate }];
    let event = |ended: &Loaded, id: EventId, kind: &str, payload: String, dedupe: String| EventRow {
        id: id.as_str().to_string(),
        website_id: ended.run.website_id.clone(),
        run_id: ended.run.run_id.clone(),
        service: ended.run.events_service.clone().unwrap_or_else(|| under.events_service.to_string()),
        kind: kind.to_string(),
        payload,
        created_at: now.as_u64() as i64,
        dedupe_key: Some(dedupe),
    };
    let round = ended.run.retries.max(0) as u32;
    if let (Some(diagnosis), Some(id)) = (&diagnosis, &diagnosis_event_id) {
        let payload = serde_json::to_string(diagnosis).map_err(|e| Error::Internal(e.to_string()))?;
        let row = event(&ended, id.clone(), DIAGNOSIS_EVENT_TYPE, payload, diagnosis_dedupe_key(&run_id, round));
        writes.push(Write::EventIfVersion { event: Box::new(row), token });
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
    let payload = serde_json::to_string(&payload).map_err(|e| Error::Internal(e.to_string()))?;
    let id = fresh.event_id(now)?;
    let row = event(&ended, id, RUN_STATUS_EVENT_TYPE, payload, finish_dedupe_key(&run_id, round));
    writes.push(Write::EventIfVersion { event: Box::new(row), token });
    writes.push(Write::CountEnded { client_id: ended.run.client_id.clone(), token });
    let mut counted = totals::of_run(&ended, &[], metrics::ending_totals);
    if let Some(usage) = diagnosis.as_ref().and_then(|d| d.llm.as_ref()) {
        counted.extend(metrics::llm_totals(usage));
    }
    writes.extend(totals::writes(&counted, token, true));
    writes.push(Write::Deliveries {
        outbox: fresh.outbox(now, Shard::of_id(&ended.run.run_id))?,
        ended: Box::new(ended.clone()),
        token,
        now,
    });
    Ok((writes, ended))
}

#[cfg(test)]
mod tests {
    use crate::d1::views::AttemptRow;
    use baton_core::fanin::FanInConfig;
    use baton_core::lifecycle::{Carry, Dispatch, Event, Observer, Report as Reported, Rules, RunState};
    use baton_core::plan::{validate, Plan, PlanDraft, StepDraft};
    use baton_core::retry::SplitMix64;
    use baton_core::state::{ErrorKind, RunKind, StepError};
    use serde_json::json;

    use super::*;

    const NOW: Millis = Millis::new(1_800_000_000_000);

    /// Version tokens 1, 2, 3, ...
    struct Counting(i64);
    impl Fresh for Counting {
        fn token(&mut self) -> i64 {
            self.0 += 1;
            self.0
        }
    }

    fn plan() -> Plan {
        let step = |service: &str, deps: &[&str], worker: &str| StepDraft {
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            worker_key: Some(worker.to_string()),
            ..StepDraft::new(service)
        };
        validate(&PlanDraft {
            plan_id: "p".into(),
            name: "P".into(),
            description: String::new(),
            max_run_duration_ms: 600_000,
            services: vec![step("a", &[], "capped"), step("b", &["a"], "free")],
            min_completed: None,
        })
        .expect("a valid plan")
    }

    fn loaded(status: RunStatus, a: StepStatus) -> Loaded {
        let plan = plan();
        let run = RunRow {
            run_id: "run_1800000000000_0123456789abcdef".into(),
            kind: RunKind::Diagnostic,
            client_id: "client".into(),
            website_id: "example-site".into(),
            domain: "example.com".into(),
            plan_id: "p".into(),
            plan_name: "P".into(),
            plan_json: serde_json::to_string(&plan).expect("json"),
            parameters: "{}".into(),
            idempotency_key: None,
            status,
            priority: 1,
            created_at: NOW.as_u64() as i64,
            started_at: NOW.as_u64() as i64,
            deadline_at: NOW.saturating_add(600_000).as_u64() as i64,
            due_at: Some(NOW.saturating_add(600_000).as_u64() as i64),
            claimed_at: None,
            completed_at: None,
            partial: None,
            missing: None,
            diagnosis_event_id: None,
            synthesis_error: None,
            error: None,
            version: 7,
            events_service: None,
            acted_by: None,
            retries: 0,
            traceparent: None,
            tracestate: None,
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
            parent_run_id: None,
            parent_step: None,
            parent_attempt: None,
            depth: 0,
        };
        let row = |service: &str, position: i64, status: StepStatus, attempts: i64| StepRow {
            run_id: "run_1800000000000_0123456789abcdef".into(),
            service: service.into(),
            position,
            wave: position,
            status,
            attempts,
            started_at: (attempts > 0).then_some(NOW.as_u64() as i64),
            claimed_at: None,
            finished_at: None,
            deadline_at: (status == StepStatus::Running).then_some(NOW.saturating_add(60_000).as_u64() as i64),
            next_attempt_at: None,
            duration_ms: None,
            error: None,
            error_kind: None,
            output: None,
            usage: None,
            progress: None,
            heartbeat_at: None,
            attempt_base: 0,
        };
        let attempts = i64::from(a != StepStatus::Pending);
        Loaded { run, plan, steps: vec![row("a", 0, a, attempts), row("b", 1, StepStatus::Pending, 0)] }
    }

    /// `a`, then `m` over `a`'s output (`{"list": [...]}` of `items` elements), its items as
    /// given (status, output).
    fn map_run(items: &[(StepStatus, Option<String>)]) -> Loaded {
        let mut run = loaded(RunStatus::Running, StepStatus::Completed);
        let map = StepDraft {
            depends_on: vec!["a".into()],
            for_each: Some("a.list".into()),
            worker_key: Some("free".into()),
            ..StepDraft::new("m")
        };
        let a = StepDraft { worker_key: Some("free".into()), ..StepDraft::new("a") };
        run.plan = validate(&PlanDraft {
            plan_id: "p".into(),
            name: "P".into(),
            description: String::new(),
            max_run_duration_ms: 600_000,
            services: vec![a, map],
            min_completed: None,
        })
        .expect("a valid plan");
        run.run.plan_json = serde_json::to_string(&run.plan).expect("json");
        let template = run.steps[0].clone();
        let list: Vec<Value> = (0..items.len()).map(|i| json!(i)).collect();
        run.steps = vec![
            StepRow { output: Some(json!({ "list": list }).to_string()), ..template.clone() },
            StepRow {
                service: "m".into(),
                position: 1,
                status: StepStatus::Running,
                deadline_at: None,
                ..template.clone()
            },
        ];
        for (i, (status, output)) in items.iter().enumerate() {
            run.steps.push(StepRow {
                service: format!("m.{i}"),
                position: 1,
                status: *status,
                output: output.clone(),
                deadline_at: (*status == StepStatus::Running).then_some(NOW.saturating_add(60_000).as_u64() as i64),
                ..template.clone()
            });
        }
        run
    }

    #[test]
    fn the_last_items_report_completes_its_map_with_the_items_outputs_in_order() {
        let run = map_run(&[
            (StepStatus::Completed, Some(r#"{"n":0}"#.into())),
            (StepStatus::Completed, Some(r#"{"n":1}"#.into())),
            (StepStatus::Running, None),
        ]);
        let report = Report::Succeeded { output: json!({"n": 2}), usage: None, duration_ms: None };
        let payloads = BTreeMap::from([("m.2", &report)]);
        let event = Event::Reported { service: "m.2".parse().unwrap(), attempt: Some(1), report: Reported::Succeeded };
        let batch = decided(&run, &[event], &payloads, Dispatch::Queue);
        let written: Vec<(&str, StepStatus, Option<&str>)> = batch
            .writes
            .iter()
            .filter_map(|w| match w {
                Write::Step { row, .. } => Some((row.service.as_str(), row.status, row.output.as_deref())),
                _ => None,
            })
            .collect();
        assert_eq!(
            written,
            [
                ("m.2", StepStatus::Completed, Some(r#"{"n":2}"#)),
                ("m", StepStatus::Completed, Some(r#"[{"n":0},{"n":1},{"n":2}]"#)),
            ],
            "the item, then its map with every output in order, this batch's report included"
        );
    }

    #[test]
    fn a_collected_output_over_the_bound_says_how_large_it_was() {
        let big = format!("\"{}\"", "x".repeat(super::super::maps::MAX_COLLECTED_BYTES / 2));
        let run = map_run(&[(StepStatus::Completed, Some(big.clone())), (StepStatus::Completed, Some(big))]);
        let record = baton_core::state::StepRecord {
            status: StepStatus::Completed,
            ..crate::engine::rows::record_of(&run.steps[1]).expect("a record")
        };
        let output = super::super::maps::collected(&run, &record).expect("a map's output");
        assert_eq!((output["omitted"].clone(), output["items"].clone()), (json!(true), json!(2)), "{output}");
        assert!(output["bytes"].as_u64().unwrap_or(0) > super::super::maps::MAX_COLLECTED_BYTES as u64);
    }

    fn under() -> Under {
        Under { now: NOW, capped: ["capped".to_string()].into(), events_service: "orchestrator".into() }
    }

    /// Core's decision on `loaded` with `events`, its effects under `dispatch`, and the batch.
    fn decided(loaded: &Loaded, events: &[Event], payloads: &BTreeMap<&str, &Report>, dispatch: Dispatch) -> Batch {
        let records = loaded.records().expect("records");
        let run =
            RunState { status: loaded.run.status, started_at: NOW, plan: &loaded.plan, steps: &records, sizes: &[] };
        let rules = Rules {
            now: NOW,
            fan_in: FanInConfig::default(),
            event_driven_fanin: true,
            observer: Observer::EventDriven,
            retry_grace_ms: 10_000,
        };
        let decision = lifecycle::decide(&run, events, &rules, &mut SplitMix64::new(1));
        let carry = Carry { now: NOW, dispatch, result_recheck_ms: 15_000, analysis_timeout_ms: 30_000 };
        let effects = lifecycle::effects(&decision, &carry);
        decision_batch(loaded, &decision, &effects, payloads, &under(), &mut Counting(0)).expect("a batch")
    }

    fn kinds(batch: &Batch) -> Vec<&'static str> {
        batch
            .writes
            .iter()
            .map(|w| match w {
                Write::Gate { .. } => "gate",
                Write::Step { .. } => "step",
                Write::ReleaseSlot { .. } => "release_slot",
                Write::DueNoLaterThan(_) => "due_no_later_than",
                Write::Due(_) => "due",
                Write::Running { .. } => "running",
                Write::Pause { .. } => "pause",
                Write::Resume { .. } => "resume",
                Write::ClaimFanIn { .. } => "claim_fan_in",
                Write::Finish { .. } => "finish",
                Write::EventIfVersion { .. } => "event",
                Write::CountEnded { .. } => "count_ended",
                Write::Totals { .. } => "totals",
                Write::Deliveries { .. } => "deliveries",
                Write::Bump(_) => "bump",
                _ => "other",
            })
            .collect()
    }

    fn succeeded(service: &str) -> Event {
        Event::Reported { service: service.parse().expect("a slug"), attempt: Some(1), report: Reported::Succeeded }
    }

    #[test]
    fn a_new_runs_look_writes_the_gate_the_dispatch_under_it_and_the_start() {
        let batch = decided(
            &loaded(RunStatus::Started, StepStatus::Pending),
            &[Event::Look],
            &BTreeMap::new(),
            Dispatch::Queue,
        );
        assert_eq!(kinds(&batch), ["gate", "step", "running"]);
        assert!(matches!(batch.writes[0], Write::Gate { read: 7, token: 1 }));
        match &batch.writes[1] {
            Write::Step { read_status, read_attempts, row, claim, gate } => {
                assert_eq!((*read_status, *read_attempts), (StepStatus::Pending, 0));
                assert_eq!((row.service.as_str(), row.status, row.attempts), ("a", StepStatus::Running, 1));
                assert_eq!((*claim, *gate), (None, Some(1)), "queued: not claimed; under the gate");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(batch.writes[2], Write::Running { token: 1 }));
        assert_eq!(batch.after.run.status, RunStatus::Running);
        assert_eq!(batch.after.run.version, 1);
    }

    #[test]
    fn an_inline_caller_claims_what_it_dispatches_in_the_same_write() {
        let inline = Dispatch::Inline { analysis: false };
        let batch = decided(&loaded(RunStatus::Started, StepStatus::Pending), &[Event::Look], &BTreeMap::new(), inline);
        match &batch.writes[1] {
            Write::Step { claim, row, .. } => {
                assert_eq!(*claim, Some(NOW.as_u64() as i64));
                assert_eq!(row.claimed_at, Some(NOW.as_u64() as i64));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pause_writes_the_status_and_its_event_and_a_resume_runs_again_before_its_dispatches() {
        let none = BTreeMap::new();
        let batch = decided(&loaded(RunStatus::Running, StepStatus::Running), &[Event::Pause], &none, Dispatch::Queue);
        assert_eq!(kinds(&batch), ["gate", "pause", "event"]);
        assert_eq!(batch.after.run.status, RunStatus::Paused);
        match &batch.writes[2] {
            Write::EventIfVersion { event, token: 1 } => {
                let payload: Value = serde_json::from_str(&event.payload).expect("json");
                assert_eq!((event.kind.as_str(), &payload["status"]), ("run_status", &json!("paused")));
            }
            other => panic!("{other:?}"),
        }
        let batch =
            decided(&loaded(RunStatus::Paused, StepStatus::Completed), &[Event::Resume], &none, Dispatch::Queue);
        assert_eq!(kinds(&batch), ["gate", "resume", "event", "step"]);
        assert!(matches!(&batch.writes[3], Write::Step { row, gate: Some(1), .. } if row.service == "b"));
        assert_eq!(batch.after.run.status, RunStatus::Running);
    }

    #[test]
    fn a_result_is_written_outside_the_gate_with_its_output_then_the_recheck_and_a_bump() {
        let report = Report::Succeeded { output: json!({"score": 3}), usage: None, duration_ms: Some(5) };
        let payloads = BTreeMap::from([("a", &report)]);
        let batch =
            decided(&loaded(RunStatus::Running, StepStatus::Running), &[succeeded("a")], &payloads, Dispatch::Queue);
        // The result, the slot of the capped service's attempt, the dependent's dispatch.
        assert_eq!(kinds(&batch), ["gate", "step", "step", "release_slot", "due_no_later_than", "bump"]);
        match &batch.writes[1] {
            Write::Step { row, gate, .. } => {
                assert_eq!((row.service.as_str(), row.status), ("a", StepStatus::Completed));
                assert_eq!(row.output.as_deref(), Some(r#"{"score":3}"#));
                assert_eq!(*gate, None, "a report's own write stands on its own");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&batch.writes[2], Write::Step { row, gate: Some(1), .. } if row.service == "b"));
        assert!(matches!(&batch.writes[3], Write::ReleaseSlot { service, attempt: 1 } if service == "a"));
        let recheck = NOW.saturating_add(15_000).as_u64() as i64;
        assert!(matches!(batch.writes[4], Write::DueNoLaterThan(at) if at == recheck));
        assert!(matches!(batch.writes[5], Write::Bump(1)));
        assert_eq!(
            batch.steps.iter().map(|(i, s, c)| (*i, s.as_str(), *c)).collect::<Vec<_>>(),
            [(1, "a", Cause::Reported), (2, "b", Cause::Dispatched)]
        );
    }

    #[test]
    fn the_last_result_claims_the_fan_in_and_an_inline_analysis_ends_the_run_in_the_same_batch() {
        let mut run = loaded(RunStatus::Running, StepStatus::Completed);
        run.steps[1].status = StepStatus::Running;
        run.steps[1].attempts = 1;
        run.steps[1].deadline_at = Some(NOW.saturating_add(60_000).as_u64() as i64);
        let report = Report::Succeeded { output: json!(1), usage: None, duration_ms: None };
        let payloads = BTreeMap::from([("b", &report)]);
        let queued = decided(&run, &[succeeded("b")], &payloads, Dispatch::Queue);
        assert_eq!(kinds(&queued), ["gate", "step", "due_no_later_than", "claim_fan_in", "bump"]);
        assert_eq!(queued.claim, Some(3));
        match &queued.writes[3] {
            Write::ClaimFanIn { token: 1, run } => {
                assert_eq!(run.status, RunStatus::Aggregating);
                assert_eq!((run.partial, run.missing.as_deref()), (Some(0), Some("[]")));
                assert_eq!(run.due_at, Some(NOW.saturating_add(30_000).as_u64() as i64), "the analysis' timeout");
            }
            other => panic!("{other:?}"),
        }
        assert!(queued.ending.is_none());
        let inline = decided(&run, &[succeeded("b")], &payloads, Dispatch::Inline { analysis: true });
        assert_eq!(
            kinds(&inline),
            [
                "gate",
                "step",
                "due_no_later_than",
                "claim_fan_in",
                "finish",
                "event",
                "event",
                "count_ended",
                "totals",
                "deliveries",
                "bump"
            ]
        );
        let (at, ended, deliveries) = inline.ending.as_ref().expect("an ending");
        assert_eq!((*at, *deliveries), (4, 9));
        assert_eq!(ended.run.status, RunStatus::Completed);
        match &inline.writes[4] {
            Write::Finish { run, from, gate } => {
                assert_eq!((run.status, *from, *gate), (RunStatus::Completed, lifecycle::CLAIMED, Some(1)));
                assert!(run.diagnosis_event_id.is_some(), "the rule-based diagnosis is written with it");
                assert_eq!(run.due_at, None, "an ended run leaves the poller's index");
                assert_eq!(run.version, 2, "a fresh version the events are guarded by");
            }
            other => panic!("{other:?}"),
        }
        assert!(inline.writes[5..7].iter().all(|w| matches!(w, Write::EventIfVersion { token: 2, .. })));
    }

    #[test]
    fn a_cancel_ends_every_open_step_under_the_gate_and_the_run_from_any_unfinished_status() {
        let batch = decided(
            &loaded(RunStatus::Running, StepStatus::Running),
            &[Event::Cancel],
            &BTreeMap::new(),
            Dispatch::Queue,
        );
        assert_eq!(
            kinds(&batch),
            ["gate", "step", "step", "release_slot", "finish", "event", "count_ended", "totals", "deliveries"]
        );
        assert!(batch.writes[1..3]
            .iter()
            .all(|w| matches!(w, Write::Step { gate: Some(1), row, .. } if row.status == StepStatus::Cancelled)));
        assert!(
            matches!(&batch.writes[4], Write::Finish { run, from, .. } if run.status == RunStatus::Cancelled && *from == lifecycle::UNFINISHED)
        );
    }

    #[test]
    fn a_failed_attempt_that_is_retried_gives_its_slot_back() {
        let error = StepError::new(ErrorKind::Transient, "busy");
        let failed = Event::Reported {
            service: "a".parse().expect("a slug"),
            attempt: Some(1),
            report: Reported::Failed(error),
        };
        let batch =
            decided(&loaded(RunStatus::Running, StepStatus::Running), &[failed], &BTreeMap::new(), Dispatch::Queue);
        assert_eq!(kinds(&batch), ["gate", "step", "release_slot", "due_no_later_than", "bump"]);
        assert!(matches!(&batch.writes[1], Write::Step { row, .. } if row.status == StepStatus::Retrying));
    }

    #[test]
    fn a_restart_writes_the_run_as_core_restarted_it() {
        let ended = loaded(RunStatus::Failed, StepStatus::Failed);
        let restart = lifecycle::restart(
            RunStatus::Failed,
            &ended.plan,
            &ended.records().expect("records"),
            0,
            NOW.saturating_add(5_000),
            &FanInConfig::default(),
        )
        .expect("a retry");
        let after = super::super::rounds::restarted(&ended, &restart);
        assert_eq!(after.run.status, RunStatus::Running);
        assert_eq!(after.run.retries, 1);
        assert_eq!(after.run.started_at, NOW.saturating_add(5_000).as_u64() as i64);
        assert_eq!(after.run.due_at, Some(after.run.deadline_at));
        assert_eq!((after.run.completed_at, after.run.error.as_deref()), (None, None));
    }

    fn totals_of(writes: &[Write]) -> Vec<(String, String, i64)> {
        writes
            .iter()
            .flat_map(|w| match w {
                Write::Totals { totals, .. } => totals.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn an_ending_counts_the_run_and_its_attempts_in_its_own_batch_and_a_restart_takes_the_count_back() {
        let mut run = loaded(RunStatus::Running, StepStatus::Running);
        let claimed = NOW.as_u64() as i64 - 700;
        run.steps[0].claimed_at = Some(claimed);
        let records = run.records().expect("records");
        let state = RunState { status: run.run.status, started_at: NOW, plan: &run.plan, steps: &records, sizes: &[] };
        let rules = Rules {
            now: NOW,
            fan_in: FanInConfig::default(),
            event_driven_fanin: true,
            observer: Observer::EventDriven,
            retry_grace_ms: 10_000,
        };
        let decision = lifecycle::decide(&state, &[Event::Cancel], &rules, &mut SplitMix64::new(1));
        let carry =
            Carry { now: NOW, dispatch: Dispatch::Queue, result_recheck_ms: 15_000, analysis_timeout_ms: 30_000 };
        let effects = lifecycle::effects(&decision, &carry);
        let batch =
            decision_batch(&run, &decision, &effects, &BTreeMap::new(), &under(), &mut Counting(0)).expect("a batch");
        let (_, ended, _) = batch.ending.as_ref().expect("an ending");
        let totals: Vec<(usize, i64, bool)> = batch
            .writes
            .iter()
            .enumerate()
            .filter_map(|(i, w)| match w {
                Write::Totals { version, attempts, .. } => Some((i, *version, *attempts)),
                _ => None,
            })
            .collect();
        // Every totals write stands only with the ending's version, and the first counts the
        // run's attempts after the step writes that end them (its statement reads them).
        assert!(totals.iter().all(|(_, version, _)| *version == ended.run.version), "{totals:?}");
        assert_eq!(totals.iter().filter(|(.., attempts)| *attempts).count(), 1, "{totals:?}");
        let last_step = batch.steps.iter().map(|(at, ..)| *at).max().expect("step writes");
        assert!(totals[0].2 && totals[0].0 > last_step, "{totals:?}");
        let added = totals_of(&batch.writes);
        let has = |metric: &str, label: &str, value: i64| added.contains(&(metric.into(), label.into(), value));
        assert!(has("runs", "cancelled", 1) && has("steps", "cancelled", 2), "{added:?}");
        assert!(added.iter().all(|(m, ..)| m != "attempt_ms"), "{added:?}");

        // Retried: the restart takes back what the ending added, the attempts as it reads them.
        let history = [AttemptRow {
            service: "a".into(),
            attempt: 1,
            started_at: Some(claimed),
            ended_at: NOW.as_u64() as i64,
            outcome: "cancelled".into(),
            error: None,
            error_kind: None,
            run_id: None,
        }];
        let back = totals_of(&super::super::rounds::taken_back(ended, &history, 9));
        let mut sum: BTreeMap<(String, String), i64> = BTreeMap::new();
        for (m, l, v) in added.into_iter().chain(back) {
            *sum.entry((m, l)).or_default() += v;
        }
        let left: Vec<_> = sum.into_iter().filter(|(_, v)| *v != 0).collect();
        let attempt = |l: &str, v: i64| (("attempt_ms".to_string(), l.to_string()), v);
        assert_eq!(left, vec![attempt("count", -1), attempt("le:1000", -1), attempt("sum", -700)]);
    }
}
