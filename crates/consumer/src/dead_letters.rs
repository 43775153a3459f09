//! The dead-letter queues: what exhausted its queue's retries.
//! - `baton-tasks-dlq`: the step is failed with its last error and the run goes on
//!   (dependents skipped, fan-in as usual).
//! - `llm-analysis-dlq`: the run is finalised with the rule-based diagnosis alone.
//!
//! A message that cannot be handled here either is never dropped silently: every failed
//! delivery is counted in D1 (`dead_letters`) before the message is retried with a growing
//! delay, and after [`GIVE_UP_AFTER`] failures (at once for a body that cannot be decoded) it
//! is acknowledged and its row stays for an operator. Only if D1 itself fails on every one of
//! the queue's deliveries is a message lost, and then each failure is logged.

use baton_core::messages::{AnalysisMessage, TasksQueueMessage};
use baton_core::state::{ErrorKind, StepError};
use baton_edge::bindings::queue_names;
use baton_edge::dead_letters::{self, Failure};
use baton_edge::engine::{record_of, Analysis, Engine, Report};
use baton_edge::log;
use worker::{MessageExt, QueueRetryOptionsBuilder, RawMessage};

/// Failed deliveries of a dead-lettered message before it is given up. Below the dead-letter
/// queues' `max_retries` (10, crates/consumer/wrangler.toml), so that recording the last
/// failure still has deliveries left if D1 is briefly unavailable.
pub const GIVE_UP_AFTER: u32 = 8;

/// Delay before the next delivery when D1 could not count the failure.
const UNCOUNTED_RETRY_DELAY_SECONDS: u32 = 60;

/// Delay before the next delivery after `failures` failures: 10 s doubling to 5 minutes, so the
/// eight deliveries span about 15 minutes of trouble.
fn retry_delay_seconds(failures: u32) -> u32 {
    10u32.saturating_mul(1 << failures.saturating_sub(1).min(5)).min(300)
}

pub async fn task(engine: &Engine<'_>, message: &RawMessage) {
    let queue = queue_names::TASKS_DLQ;
    let decoded = crate::body_json(message).and_then(|v| TasksQueueMessage::decode(&v).map_err(|e| e.to_string()));
    let task = match decoded {
        Ok(TasksQueueMessage::Task(task)) => task,
        Ok(TasksQueueMessage::Timer(timer)) => {
            // A timer that kept failing: the poller keeps what it was for.
            let line = log::Line {
                service: timer.service.as_ref().map(|s| s.as_str()),
                attempt: timer.attempt,
                error: Some(timer.timer.as_str()),
                ..log::Line::run(timer.run_id.as_str())
            };
            log::emit(log::Event::DeadLettered, &line);
            return handled(engine, queue, message).await;
        }
        Err(e) => return failed(engine, queue, message, &format!("undecodable: {e}"), 1).await,
    };
    let line = log::Line {
        service: Some(task.service.as_str()),
        attempt: Some(task.attempt),
        ..log::Line::run(task.run_id.as_str())
    };
    log::emit(log::Event::DeadLettered, &line);
    let engine = &match engine.on_id(task.run_id.as_str()) {
        Ok(on_run) => on_run,
        Err(e) => return failed(engine, queue, message, &format!("{}/{}: {e}", task.run_id, task.service), 1).await,
    };
    let outcome = async {
        let Some(loaded) = engine.load(task.run_id.as_str()).await? else { return Ok(()) };
        let Some(row) = loaded.step(task.service.as_str()) else { return Ok(()) };
        let record = record_of(row)?;
        if record.status.is_terminal() {
            return Ok(());
        }
        let last = record.error.clone().unwrap_or_else(|| "no error recorded".to_string());
        let error = StepError::new(ErrorKind::Permanent, format!("retries exhausted (dead-lettered): {last}"));
        engine.record(task.run_id.as_str(), task.service.as_str(), None, Report::Failed(error)).await.map(|_| ())
    }
    .await;
    match outcome {
        Ok(()) => handled(engine, queue, message).await,
        Err(e) => {
            failed(engine, queue, message, &format!("{}/{}: {e}", task.run_id, task.service), GIVE_UP_AFTER).await
        }
    }
}

pub async fn analysis(engine: &Engine<'_>, message: &RawMessage) {
    let queue = queue_names::ANALYSIS_DLQ;
    let analysis = match crate::body_json(message).and_then(|v| AnalysisMessage::decode(&v).map_err(|e| e.to_string()))
    {
        Ok(analysis) => analysis,
        Err(e) => return failed(engine, queue, message, &format!("undecodable: {e}"), 1).await,
    };
    log::emit(log::Event::DeadLettered, &log::Line::run(analysis.trace_id.as_str()));
    let rules_only = Analysis::RulesOnly { because: "analysis retries exhausted; rule-based diagnosis only" };
    let engine = &match engine.on_id(analysis.trace_id.as_str()) {
        Ok(on_run) => on_run,
        Err(e) => return failed(engine, queue, message, &format!("run {}: {e}", analysis.trace_id), 1).await,
    };
    match engine.finalize(analysis.trace_id.as_str(), rules_only).await {
        Ok(()) => handled(engine, queue, message).await,
        Err(e) => failed(engine, queue, message, &format!("run {}: {e}", analysis.trace_id), GIVE_UP_AFTER).await,
    }
}

/// Acknowledges a message handled, forgetting its earlier failures if it had any.
async fn handled(engine: &Engine<'_>, queue: &str, message: &RawMessage) {
    message.ack();
    if let Err(e) = dead_letters::forget(&engine.db, queue, &message.id()).await {
        worker::console_warn!("{queue}: message {} handled, but its failures stay recorded: {e}", message.id());
    }
}

/// Counts a failed delivery in D1 (the shard of the run the message is about; shard 0 for a
/// message that names none), then gives the message up (acknowledged, kept in D1) or
/// retries it. If D1 cannot count it, the message is retried: it is never acknowledged unrecorded.
async fn failed(engine: &Engine<'_>, queue: &str, message: &RawMessage, error: &str, give_up_after: u32) {
    let body = crate::body_json(message).map_or_else(|e| format!("<{e}>"), |v| v.to_string());
    let failure =
        Failure { queue, message_id: &message.id(), body: &body, error, at: baton_edge::clock::now_ms() as i64 };
    match dead_letters::record_failure(&engine.db, &failure, give_up_after).await {
        Ok(recorded) if recorded.given_up_at.is_some() => {
            worker::console_error!(
                "{queue}: message {} given up after {} failures ({error}); kept in D1 dead_letters",
                message.id(),
                recorded.failures
            );
            message.ack();
        }
        Ok(recorded) => {
            worker::console_error!("{queue}: {error}; failure {} of {give_up_after}, will retry", recorded.failures);
            let delay = retry_delay_seconds(recorded.failures);
            message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(delay).build());
        }
        Err(e) => {
            worker::console_error!("{queue}: {error}; the failure could not be recorded ({e}), will retry");
            let delay = UNCOUNTED_RETRY_DELAY_SECONDS;
            message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(delay).build());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_delay_doubles_from_ten_seconds_to_five_minutes() {
        let delays: Vec<u32> = (1..=GIVE_UP_AFTER).map(retry_delay_seconds).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(retry_delay_seconds(0), 10);
        assert_eq!(retry_delay_seconds(u32::MAX), 300);
    }
}
