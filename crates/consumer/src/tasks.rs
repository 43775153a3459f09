//! `baton-tasks`: run step attempts against their services.
//!
//! A task message asks for attempt `n` of a step. The messages of a batch are grouped by run:
//! one read of the run, then one D1 transaction claims every attempt asked for (guarded
//! updates: a duplicate delivery loses and is acknowledged), then the claimed attempts run
//! concurrently. Each outcome is recorded through the engine — the same transition the
//! orchestrator's callback uses, including the fan-in claim — and what it makes ready (the
//! next steps, the analysis) runs here too, claimed in the same transaction that dispatches
//! it. Transient failures come back through the queue after core's backoff; after the
//! queue's last retry the message goes to the dead-letter queue.

use std::collections::BTreeMap;

use baton_core::messages::TaskMessage;
use baton_core::state::{self, StepEvent, StepOutcome, StepRecord, StepStatus};
use baton_core::time::Millis;
use baton_edge::concurrency::join_all;
use baton_edge::d1::steps;
use baton_edge::engine::{record_of, row_with_record, AdvanceReport, Dispatch, Engine, Loaded, RecordOutcome, Report};
use baton_edge::kv::Kv;
use baton_edge::{Error, Result};
use serde_json::{json, Map, Value};
use worker::{MessageExt, QueueRetryOptionsBuilder, RawMessage};

use crate::llm::LlmConfig;
use crate::services::{run_attempt, Attempt, ServiceOutcome};

/// Inputs larger than this travel by reference through KV, never inline.
pub const INLINE_INPUT_LIMIT: usize = 64 * 1024;

/// What to do with a task message.
#[derive(Debug, Clone, Copy)]
pub enum Disposition {
    Ack,
    /// Deliver again after this many seconds.
    RetryAfter(u32),
}

/// A batch of `baton-tasks`: each message is acknowledged or retried on its own.
pub async fn handle_batch(engine: &Engine<'_>, messages: &[RawMessage]) {
    let mut decoded: Vec<(&RawMessage, TaskMessage)> = Vec::new();
    for message in messages {
        match crate::body_json(message).and_then(|v| TaskMessage::decode(&v).map_err(|e| e.to_string())) {
            Ok(task) => decoded.push((message, task)),
            Err(e) => {
                worker::console_error!("baton-tasks: poison message {} acknowledged: {e}", message.id());
                message.ack();
            }
        }
    }
    let tasks: Vec<TaskMessage> = decoded.iter().map(|(_, task)| task.clone()).collect();
    let outcomes = run_batch(engine, &tasks, None).await;
    for ((message, task), outcome) in decoded.iter().zip(outcomes) {
        match outcome {
            Ok(Disposition::Ack) => message.ack(),
            Ok(Disposition::RetryAfter(seconds)) => {
                message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(seconds).build())
            }
            Err(e) => {
                // Storage or binding trouble: the claim (if any) was given up; try again later.
                worker::console_error!(
                    "baton-tasks: {}/{} attempt {}: {e}; will retry",
                    task.run_id,
                    task.service,
                    task.attempt
                );
                message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(1).build());
            }
        }
    }
}

/// Runs task attempts, grouped by run (runs concurrently); the outcomes in input order.
/// `known`: a run the caller has just read or written (its tasks skip the read).
pub async fn run_batch(engine: &Engine<'_>, tasks: &[TaskMessage], known: Option<&Loaded>) -> Vec<Result<Disposition>> {
    let mut by_run: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, task) in tasks.iter().enumerate() {
        by_run.entry(task.run_id.as_str()).or_default().push(i);
    }
    let groups: Vec<Vec<usize>> = by_run.into_values().collect();
    let runs: Vec<_> = groups
        .iter()
        .map(|indices| {
            let group: Vec<TaskMessage> = indices.iter().map(|&i| tasks[i].clone()).collect();
            let known = known.filter(|k| group.first().is_some_and(|t| t.run_id.as_str() == k.run.run_id));
            async move { run_tasks_of_run(engine, &group, known).await }
        })
        .collect();
    let mut outcomes: Vec<Option<Result<Disposition>>> = tasks.iter().map(|_| None).collect();
    for (indices, results) in groups.iter().zip(join_all(runs).await) {
        for (&i, result) in indices.iter().zip(results) {
            outcomes[i] = Some(result);
        }
    }
    outcomes.into_iter().map(|o| o.unwrap_or(Ok(Disposition::Ack))).collect()
}

/// For an attempt run in place (no message of its own): queues what its outcome leaves to
/// do — the retry it asks for, or the attempt itself after an error.
pub async fn queue_what_remains(engine: &Engine<'_>, task: &TaskMessage, outcome: Result<Disposition>) {
    match outcome {
        Ok(Disposition::Ack) => {}
        Ok(Disposition::RetryAfter(seconds)) => send_task(engine, task, seconds).await,
        Err(e) => {
            worker::console_warn!("baton-tasks: {}/{} in place: {e}; queueing it", task.run_id, task.service);
            send_task(engine, task, 1).await;
        }
    }
}

/// Sends a task message, after `delay` seconds (for work this invocation could not finish).
async fn send_task(engine: &Engine<'_>, task: &TaskMessage, delay: u32) {
    let send = async {
        let queue = baton_edge::queues::task_queue(engine.env())?;
        baton_edge::queues::send_delayed(&queue, task.clone(), delay).await
    };
    if let Err(e) = send.await {
        worker::console_error!(
            "baton-tasks: {}/{}: not queued ({e}); the poller dispatches it",
            task.run_id,
            task.service
        );
    }
}

/// What a task's claim came to.
enum Claim {
    /// This invocation runs that attempt.
    Run(u32),
    /// Nothing to run: acknowledge or come back later.
    Settled(Disposition),
}

/// One run's tasks: one read, one transaction of claims, then the claimed attempts
/// concurrently.
async fn run_tasks_of_run(
    engine: &Engine<'_>,
    tasks: &[TaskMessage],
    known: Option<&Loaded>,
) -> Vec<Result<Disposition>> {
    let (loaded, claims) = match claim(engine, tasks, known).await {
        Ok(claimed) => claimed,
        Err(e) => {
            let message = e.to_string();
            return tasks.iter().map(|_| Err(Error::Storage(message.clone()))).collect();
        }
    };
    let runs: Vec<_> = claims
        .into_iter()
        .zip(tasks)
        .map(|(claim, task)| {
            let loaded = &loaded;
            async move {
                match (claim, loaded) {
                    (Claim::Run(attempt), Some(loaded)) => {
                        run_claimed_or_release(engine, loaded.clone(), task.service.as_str(), attempt).await
                    }
                    (Claim::Settled(disposition), _) => Ok(disposition),
                    (Claim::Run(_), None) => Ok(Disposition::Ack),
                }
            }
        })
        .collect();
    join_all(runs).await
}

/// Claims the attempts the tasks ask for, in one transaction. Returns the run as it stands
/// after the claims (`None`: no such run). The claims are guarded, so a `known` copy of the
/// run that is already stale only makes them lose.
async fn claim(
    engine: &Engine<'_>,
    tasks: &[TaskMessage],
    known: Option<&Loaded>,
) -> Result<(Option<Loaded>, Vec<Claim>)> {
    let settled = |d| tasks.iter().map(|_| Claim::Settled(d)).collect::<Vec<_>>();
    let Some(run_id) = tasks.first().map(|t| t.run_id.as_str()) else { return Ok((None, Vec::new())) };
    let read = match known {
        Some(known) => Some(known.clone()),
        None => engine.load(run_id).await?,
    };
    let Some(mut loaded) = read else { return Ok((None, settled(Disposition::Ack))) };
    if !matches!(loaded.run.status.as_str(), "started" | "running") {
        return Ok((None, settled(Disposition::Ack))); // cancelled, aggregating or finished
    }
    let now = engine.now();
    let at = now.as_u64() as i64;
    let mut claims = settled(Disposition::Ack);
    let mut statements = Vec::new();
    // (task index, index of the statement that decides, the claimed row, attempt)
    let mut pending = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        let service = task.service.as_str();
        let (Some(row), Some(spec)) = (loaded.step(service), loaded.plan.step(service)) else { continue };
        let record = record_of(row)?;
        // A retried message keeps its body (the first attempt's number), so while the step
        // backs off any delivery of it may dispatch the next attempt; the guarded write keeps
        // that to one.
        let current = record.attempts == task.attempt;
        let retry_trigger = record.status == StepStatus::Retrying && task.attempt <= record.attempts;
        match record.status {
            // The attempt the message asks for, dispatched and not yet claimed by anyone.
            StepStatus::Running if current => {
                let mut claimed = row.clone();
                claimed.claimed_at = Some(at);
                pending.push((i, statements.len(), claimed, task.attempt));
                statements.push(steps::claim_start(&engine.db, run_id, service, row.attempts, at)?);
            }
            // Redelivered after a transient failure: this delivery dispatches the next attempt.
            StepStatus::Retrying if retry_trigger => {
                let mut rng = baton_core::retry::SplitMix64::new(baton_edge::clock::random_u64()?);
                let next = match state::apply(&record, StepEvent::Dispatched, now, spec, &mut rng) {
                    Ok(StepOutcome::Applied(next)) => next,
                    Err(state::IllegalTransition::RetryNotDue { next_attempt_at, .. }) => {
                        claims[i] = Claim::Settled(Disposition::RetryAfter(seconds_until(next_attempt_at, now)));
                        continue;
                    }
                    _ => continue,
                };
                let mut claimed = row_with_record(row, &next);
                claimed.claimed_at = Some(at);
                pending.push((i, statements.len(), claimed.clone(), next.attempts));
                statements.push(steps::compare_and_set(&engine.db, &row.status, row.attempts, &claimed)?);
                statements.push(steps::claim_start(&engine.db, run_id, service, claimed.attempts, at)?);
            }
            _ => {} // stale: that attempt is over, or someone else runs it
        }
    }
    if statements.is_empty() {
        return Ok((Some(loaded), claims));
    }
    let metas = engine.db.batch(statements).await?;
    for (i, decides, claimed, attempt) in pending {
        // A duplicate delivery (or a racing consumer) finds the attempt claimed: `changes` = 0.
        if metas.get(decides).is_some_and(|m| m.changes > 0) {
            loaded.replace_step(claimed);
            claims[i] = Claim::Run(attempt);
        }
    }
    Ok((Some(loaded), claims))
}

/// [`run_claimed`]; on an error, gives the claim up so that the attempt's message (retried,
/// or sent by the caller) can claim it again instead of waiting for the attempt's deadline.
async fn run_claimed_or_release(
    engine: &Engine<'_>,
    loaded: Loaded,
    service: &str,
    attempt: u32,
) -> Result<Disposition> {
    let claimed_at = loaded.step(service).and_then(|row| row.claimed_at);
    let run_id = loaded.run.run_id.clone();
    // Boxed: running a step may run the steps it makes ready (recursion).
    let outcome = Box::pin(run_claimed(engine, loaded, service, attempt)).await;
    if let (Err(_), Some(at)) = (&outcome, claimed_at) {
        let release = steps::release_claim(&engine.db, &run_id, service, i64::from(attempt), at);
        if let Err(e) = async { engine.db.batch(vec![release?]).await }.await {
            worker::console_warn!("baton-tasks: {run_id}/{service}: claim not released ({e}); its deadline frees it");
        }
    }
    outcome
}

/// Runs an attempt this invocation has claimed (`loaded` shows the claim) and records its
/// outcome.
async fn run_claimed(engine: &Engine<'_>, loaded: Loaded, service: &str, attempt: u32) -> Result<Disposition> {
    let Some(spec) = loaded.plan.step(service).cloned() else { return Ok(Disposition::Ack) };
    let run_id = loaded.run.run_id.clone();
    let run_id = run_id.as_str();
    let input = build_input(engine, &loaded, service, attempt).await?;
    let outcome = run_attempt(
        engine.env(),
        &Attempt {
            run_id,
            service,
            worker: spec.worker_key.as_str(),
            attempt,
            action: spec.action.as_deref(),
            timeout_ms: spec.timeout_ms,
            estimated_tokens: 1000,
            input,
        },
    )
    .await;
    let report = match outcome {
        // The result comes by callback; a service that reports progress is polled by the poller.
        ServiceOutcome::Accepted { progress } => {
            if progress {
                let now = engine.now().as_u64() as i64;
                let mark =
                    steps::mark_progress_pollable(&engine.db, run_id, service, spec.worker_key.as_str(), attempt, now)?;
                engine.db.batch(vec![mark]).await?;
            }
            return Ok(Disposition::Ack);
        }
        ServiceOutcome::Done { output, usage, duration_ms } => Report::Succeeded { output, usage, duration_ms },
        ServiceOutcome::Failed(error) => Report::Failed(error),
    };
    // With an LLM configured the analysis may take seconds: it stays on its own queue.
    let dispatch = Dispatch::Inline { analysis: LlmConfig::from_env(engine.env()).is_none() };
    match engine.record_loaded(loaded, service, Some(attempt), report, dispatch).await? {
        RecordOutcome::Recorded { step, advance } => {
            carry_on(engine, advance).await;
            if step.status == StepStatus::Retrying {
                return Ok(Disposition::RetryAfter(retry_delay(&step, engine.now())));
            }
            Ok(Disposition::Ack)
        }
        _ => Ok(Disposition::Ack),
    }
}

/// Carries out here what a result made ready ([`Dispatch::Inline`] saves a queue hop each):
/// the steps it dispatched and claimed, concurrently, and the analysis of a fan-in it won.
/// What cannot be finished here goes to its queue; if this invocation dies, the steps'
/// deadlines and the analysis timeout bring the poller.
async fn carry_on(engine: &Engine<'_>, advance: AdvanceReport) {
    let run_id = match (advance.unsent_tasks.first(), &advance.unsent_analysis) {
        (Some(task), _) => task.run_id.as_str().to_string(),
        (None, Some(message)) => message.trace_id.as_str().to_string(),
        (None, None) => return,
    };
    let after = match advance.after {
        Some(after) => Some(after),
        None => engine.load(&run_id).await.unwrap_or_else(|e| {
            worker::console_warn!("baton-tasks: {run_id}: reading the run failed ({e})");
            None
        }),
    };
    let Some(after) = after else {
        // The dispatched steps are claimed by us: their deadlines bring the poller.
        if !advance.unsent_tasks.is_empty() {
            worker::console_error!(
                "baton-tasks: {run_id}: dispatched steps not run here; the poller retries them at their deadline"
            );
        }
        if let Some(message) = &advance.unsent_analysis {
            if let Err(e) = engine.send_analysis(message).await {
                worker::console_error!("baton-tasks: {run_id}: analysis not queued ({e}); the poller resends it");
            }
        }
        return;
    };
    let runs: Vec<_> = advance
        .unsent_tasks
        .iter()
        .map(|task| {
            let after = after.clone();
            async move {
                let outcome = run_claimed_or_release(engine, after, task.service.as_str(), task.attempt).await;
                queue_what_remains(engine, task, outcome).await;
            }
        })
        .collect();
    join_all(runs).await;
    if let Some(message) = advance.unsent_analysis {
        if let Err(e) = crate::analysis::finalize_loaded(engine, after, None).await {
            worker::console_warn!("baton-tasks: {run_id} inline analysis: {e}; queueing it");
            if let Err(e) = engine.send_analysis(&message).await {
                worker::console_error!("baton-tasks: {run_id}: analysis not queued ({e}); the poller resends it");
            }
        }
    }
}

fn seconds_until(at: Millis, now: Millis) -> u32 {
    // Queue delays are whole seconds; round up so a retry never comes before its backoff.
    at.since(now).div_ceil(1000).min(u64::from(u32::MAX)) as u32
}

fn retry_delay(step: &StepRecord, now: Millis) -> u32 {
    step.next_attempt_at.map(|at| seconds_until(at, now)).unwrap_or(0)
}

/// The step's input: the run's parameters and the outputs of the steps it depends on.
/// Over [`INLINE_INPUT_LIMIT`] it is stored in KV and passed as a `dataReference`.
async fn build_input(engine: &Engine<'_>, loaded: &Loaded, service: &str, attempt: u32) -> Result<Value> {
    let mut upstream = Map::new();
    if let Some(spec) = loaded.plan.step(service) {
        for dependency in &spec.depends_on {
            if let Some(output) = loaded.step(dependency.as_str()).and_then(|s| s.output.as_deref()) {
                upstream.insert(dependency.as_str().to_string(), serde_json::from_str(output).unwrap_or(Value::Null));
            }
        }
    }
    let data = json!({
        "website_id": loaded.run.website_id,
        "domain": loaded.run.domain,
        "parameters": serde_json::from_str::<Value>(&loaded.run.parameters).unwrap_or(Value::Null),
        "upstream": upstream,
    });
    let text = data.to_string();
    if text.len() <= INLINE_INPUT_LIMIT {
        return Ok(json!({ "inputData": data }));
    }
    let key = format!("input:{}:{service}:{attempt}", loaded.run.run_id);
    Kv::from_env(engine.env())?.put_text(&key, &text).await.map_err(|e| Error::Kv(e.to_string()))?;
    Ok(json!({ "dataReference": { "store": "kv", "key": key, "bytes": text.len() } }))
}
