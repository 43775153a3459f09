//! `baton-tasks`: run step attempts against their services, and carry out timers.
//!
//! A task message asks for attempt `n` of a step. The messages of a batch are grouped by run:
//! one D1 transaction claims every attempt asked for and reads the run (a duplicate delivery
//! loses its claim and is acknowledged), then the claimed attempts run concurrently
//! (`baton_edge::engine::attempts`). Transient failures come back through the queue after
//! core's backoff; after the queue's last retry the message goes to the dead-letter queue.

use std::collections::BTreeMap;

use baton_core::messages::{TaskMessage, TasksQueueMessage, TimerMessage};
use baton_core::shard::Shard;
use baton_edge::concurrency::{join, join_all};
use baton_edge::engine::attempts::{run_batch, send_task, Disposition};
use baton_edge::engine::Engine;
use baton_edge::log;
use worker::{MessageExt, QueueRetryOptionsBuilder, RawMessage};

/// A batch of `baton-tasks`: each message is acknowledged or retried on its own. Task
/// messages run attempts; timer messages look at runs when something falls due.
pub async fn handle_batch(engine: &Engine<'_>, messages: &[RawMessage]) {
    let mut decoded: Vec<(&RawMessage, TaskMessage)> = Vec::new();
    let mut timers: Vec<(&RawMessage, TimerMessage)> = Vec::new();
    for message in messages {
        match crate::body_json(message).and_then(|v| TasksQueueMessage::decode(&v).map_err(|e| e.to_string())) {
            Ok(TasksQueueMessage::Task(task)) => decoded.push((message, task)),
            Ok(TasksQueueMessage::Timer(timer)) => timers.push((message, timer)),
            Err(e) => {
                worker::console_error!("baton-tasks: poison message {} acknowledged: {e}", message.id());
                message.ack();
            }
        }
    }
    // A batch may hold runs of several shards: each shard's tasks go through its own engine.
    let mut by_shard: BTreeMap<Shard, Vec<(&RawMessage, TaskMessage)>> = BTreeMap::new();
    for (message, task) in decoded {
        by_shard.entry(task.run_id.shard()).or_default().push((message, task));
    }
    let mut groups = Vec::new();
    for (shard, tasks) in by_shard {
        match engine.on_shard(shard) {
            Ok(on_shard) => groups.push((on_shard, tasks)),
            Err(e) => {
                for (message, task) in tasks {
                    worker::console_error!("baton-tasks: {}/{}: {e}; acknowledged", task.run_id, task.service);
                    message.ack();
                }
            }
        }
    }
    let ran = groups.iter().map(|(on_shard, tasks)| run_tasks(on_shard, tasks));
    let fired = timers
        .iter()
        .map(|(message, timer)| baton_edge::meter::for_run(timer.run_id.as_str(), fire(engine, message, timer)));
    join(join_all(ran), join_all(fired)).await;
}

/// Runs the attempts of one shard's task messages, and acknowledges or retries each.
async fn run_tasks(engine: &Engine<'_>, decoded: &[(&RawMessage, TaskMessage)]) {
    let tasks: Vec<TaskMessage> = decoded.iter().map(|(_, task)| task.clone()).collect();
    let (outcomes, _) = run_batch(engine, &tasks, None, None, None).await;
    for ((message, task), outcome) in decoded.iter().zip(outcomes) {
        match outcome {
            Ok(Disposition::Ack) => message.ack(),
            Ok(Disposition::RetryAfter(seconds)) => {
                message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(seconds).build())
            }
            Ok(Disposition::Requeue(seconds)) => {
                send_task(engine, task, seconds).await;
                message.ack();
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

/// Carries out one timer; acknowledged once done, retried in a second on trouble.
async fn fire(engine: &Engine<'_>, message: &RawMessage, timer: &TimerMessage) {
    let outcome = match engine.on_id(timer.run_id.as_str()) {
        Ok(engine) => engine.on_timer(timer).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(_) => {
            let late = engine.now().as_u64().saturating_sub(timer.due_at);
            let line = log::Line {
                service: timer.service.as_ref().map(|s| s.as_str()),
                attempt: timer.attempt,
                duration_ms: Some(late),
                ..log::Line::run(timer.run_id.as_str())
            };
            log::emit(log::Event::TimerFired, &line);
            message.ack();
        }
        Err(e) => {
            worker::console_error!("baton-tasks: {} timer of {}: {e}; will retry", timer.timer.as_str(), timer.run_id);
            message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(1).build());
        }
    }
}
