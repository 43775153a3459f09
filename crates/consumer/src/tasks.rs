//! `baton-tasks`: run one step attempt against its service.
//!
//! A task message asks for attempt `n` of a step. The first delivery claims the attempt in
//! D1 (a guarded update; duplicates lose and are acknowledged), calls the service, and
//! records the outcome through the engine — the same transition the orchestrator's callback
//! uses, including the fan-in claim. Transient failures come back through the queue after
//! core's backoff (message retry with delay); after the queue's last retry the message goes
//! to the dead-letter queue.

use baton_core::messages::TaskMessage;
use baton_core::state::{self, StepEvent, StepOutcome, StepRecord, StepStatus};
use baton_core::time::Millis;
use baton_edge::d1::steps;
use baton_edge::concurrency::join_all;
use baton_edge::engine::{record_of, row_with_record, AdvanceReport, Dispatch, Engine, Loaded, RecordOutcome, Report};
use baton_edge::kv::Kv;
use baton_edge::{Error, Result};
use serde_json::{json, Map, Value};
use worker::{MessageExt, QueueRetryOptionsBuilder, RawMessage};

use crate::llm::LlmConfig;
use crate::services::{run_attempt, Attempt, ServiceOutcome};

/// Inputs larger than this travel by reference through KV, never inline.
pub const INLINE_INPUT_LIMIT: usize = 64 * 1024;

/// What to do with the message.
enum Disposition {
    Ack,
    /// Deliver again after this many seconds.
    RetryAfter(u32),
}

pub async fn handle(engine: &Engine<'_>, message: &RawMessage) {
    let task = match crate::body_json(message).and_then(|v| TaskMessage::decode(&v).map_err(|e| e.to_string())) {
        Ok(task) => task,
        Err(e) => {
            worker::console_error!("baton-tasks: poison message {} acknowledged: {e}", message.id());
            message.ack();
            return;
        }
    };
    match execute(engine, &task).await {
        Ok(Disposition::Ack) => message.ack(),
        Ok(Disposition::RetryAfter(seconds)) => {
            message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(seconds).build())
        }
        Err(e) => {
            // Storage or binding trouble: nothing was decided, try again later.
            worker::console_error!("baton-tasks: {}/{} attempt {}: {e}; will retry", task.run_id, task.service, task.attempt);
            message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(1).build());
        }
    }
}

async fn execute(engine: &Engine<'_>, task: &TaskMessage) -> Result<Disposition> {
    let run_id = task.run_id.as_str();
    let service = task.service.as_str();
    let Some(mut loaded) = engine.load(run_id).await? else { return Ok(Disposition::Ack) };
    if !matches!(loaded.run.status.as_str(), "started" | "running") {
        return Ok(Disposition::Ack); // cancelled, aggregating or finished: nothing to run
    }
    let (Some(row), Some(spec)) = (loaded.step(service).cloned(), loaded.plan.step(service).cloned()) else {
        return Ok(Disposition::Ack);
    };
    let record = record_of(&row)?;
    let now = engine.now();
    // A retried message keeps its body (the first attempt's number), so while the step backs
    // off any delivery of it may dispatch the next attempt; the guarded write keeps that to one.
    let current = record.attempts == task.attempt;
    let retry_trigger = record.status == StepStatus::Retrying && task.attempt <= record.attempts;
    let attempt = match (record.status, current || retry_trigger) {
        // The attempt the message asks for, dispatched and not yet claimed by anyone.
        (StepStatus::Running, true) if current => {
            let claim = steps::claim_start(&engine.db, run_id, service, row.attempts, now.as_u64() as i64)?;
            if engine.db.batch(vec![claim]).await?.first().map(|m| m.changes).unwrap_or(0) == 0 {
                return Ok(Disposition::Ack); // a duplicate delivery: another consumer has it
            }
            let mut claimed = row.clone();
            claimed.claimed_at = Some(now.as_u64() as i64);
            loaded.replace_step(claimed);
            task.attempt
        }
        // Redelivered after a transient failure: this delivery dispatches the next attempt.
        (StepStatus::Retrying, true) => {
            let mut rng = baton_core::retry::SplitMix64::new(baton_edge::clock::random_u64()?);
            let next = match state::apply(&record, StepEvent::Dispatched, now, &spec, &mut rng) {
                Ok(StepOutcome::Applied(next)) => next,
                Err(state::IllegalTransition::RetryNotDue { next_attempt_at, .. }) => {
                    return Ok(Disposition::RetryAfter(seconds_until(next_attempt_at, now)));
                }
                _ => return Ok(Disposition::Ack),
            };
            let mut claimed = row_with_record(&row, &next);
            claimed.claimed_at = Some(now.as_u64() as i64);
            let write = steps::compare_and_set(&engine.db, &row.status, row.attempts, &claimed)?;
            let claim = steps::claim_start(&engine.db, run_id, service, claimed.attempts, now.as_u64() as i64)?;
            let metas = engine.db.batch(vec![write, claim]).await?;
            if metas.first().map(|m| m.changes).unwrap_or(0) == 0 {
                return Ok(Disposition::Ack);
            }
            loaded.replace_step(claimed);
            next.attempts
        }
        _ => return Ok(Disposition::Ack), // stale: that attempt is over
    };

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
                let mark = steps::mark_progress_pollable(&engine.db, run_id, service, attempt, engine.now().as_u64() as i64)?;
                engine.db.batch(vec![mark]).await?;
            }
            return Ok(Disposition::Ack);
        }
        ServiceOutcome::Done { output, usage, duration_ms } => Report::Succeeded { output, usage, duration_ms },
        ServiceOutcome::Failed(error) => Report::Failed(error),
    };
    // The step row in `loaded` is this attempt's claimed state: record on it, no reload.
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
/// the steps it dispatched, concurrently, and the analysis of a fan-in it won. What cannot
/// be finished here goes to its queue; if this invocation dies, the steps' deadlines and the
/// analysis timeout bring the poller.
pub async fn carry_on(engine: &Engine<'_>, advance: AdvanceReport) {
    run_here(engine, advance.unsent_tasks).await;
    if let Some(message) = advance.unsent_analysis {
        let run_id = message.trace_id.as_str().to_string();
        if let Err(e) = crate::analysis::finalize(engine, &run_id, None).await {
            worker::console_warn!("baton-tasks: {run_id} inline analysis: {e}; queueing it");
            if let Err(e) = engine.send_analysis(&message).await {
                worker::console_error!("baton-tasks: {run_id}: analysis not queued ({e}); the poller resends it");
            }
        }
    }
}

/// Runs task attempts in this invocation, concurrently. A retry one asks for, or one that
/// could not run, goes on the task queue.
pub async fn run_here(engine: &Engine<'_>, tasks: Vec<TaskMessage>) {
    let runs: Vec<_> = tasks.into_iter().map(|task| run_one_here(engine, task)).collect();
    join_all(runs).await;
}

async fn run_one_here(engine: &Engine<'_>, task: TaskMessage) {
    // Boxed: running a step may run the steps it makes ready (recursion).
    let outcome = Box::pin(execute(engine, &task)).await;
    let delay = match outcome {
        Ok(Disposition::Ack) => return,
        Ok(Disposition::RetryAfter(seconds)) => seconds,
        Err(e) => {
            worker::console_warn!("baton-tasks: {}/{} inline: {e}; queueing it", task.run_id, task.service);
            0
        }
    };
    let send = async {
        let queue = baton_edge::queues::task_queue(engine.env())?;
        let message = worker::MessageBuilder::new(task.clone()).delay_seconds(delay).build();
        queue.send(message).await.map_err(|e| Error::Queue(e.to_string()))
    };
    if let Err(e) = send.await {
        worker::console_error!("baton-tasks: {}/{}: not queued ({e}); the poller dispatches it", task.run_id, task.service);
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
