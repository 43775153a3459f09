//! `baton-tasks-dlq`: a task message that exhausted the queue's retries. The step is
//! failed with its last error and the run goes on (dependents skipped, fan-in as usual).

use baton_core::messages::TaskMessage;
use baton_core::state::{ErrorKind, StepError};
use baton_edge::engine::{record_of, Engine, Report};
use worker::{MessageExt, QueueRetryOptionsBuilder, RawMessage};

pub async fn task(engine: &Engine<'_>, message: &RawMessage) {
    let task = match crate::body_json(message).and_then(|v| TaskMessage::decode(&v).map_err(|e| e.to_string())) {
        Ok(task) => task,
        Err(e) => {
            worker::console_error!("baton-tasks-dlq: poison message {} acknowledged: {e}", message.id());
            message.ack();
            return;
        }
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
        Ok(()) => message.ack(),
        Err(e) => {
            worker::console_error!("baton-tasks-dlq: {}/{}: {e}; will retry", task.run_id, task.service);
            message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(5).build());
        }
    }
}
