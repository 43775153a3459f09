//! `llm-analysis`: the run's one diagnosis and its finalisation (its dead-letter queue is
//! [`crate::dead_letters`]).
//!
//! Idempotent: a message for a run that is not `aggregating` (already finalised, or never
//! claimed) is acknowledged and does nothing; two racing deliveries both compute, but the
//! guarded finalisation and the events' dedupe keys let exactly one diagnosis stand.

use baton_core::messages::AnalysisMessage;
use baton_edge::engine::{Analysis, Engine};
use worker::{MessageExt, QueueRetryOptionsBuilder, RawMessage};

pub async fn handle(engine: &Engine<'_>, message: &RawMessage) {
    let queue = baton_edge::bindings::queue_names::ANALYSIS;
    let analysis = match crate::body_json(message).and_then(|v| AnalysisMessage::decode(&v).map_err(|e| e.to_string()))
    {
        Ok(analysis) => analysis,
        Err(e) => {
            worker::console_error!("{queue}: poison message {} acknowledged: {e}", message.id());
            message.ack();
            return;
        }
    };
    let outcome = match engine.on_id(analysis.trace_id.as_str()) {
        Ok(on_run) => on_run.finalize(analysis.trace_id.as_str(), Analysis::Full).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => message.ack(),
        Err(e) => {
            worker::console_error!("{queue}: run {}: {e}; will retry", analysis.trace_id);
            message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(1).build());
        }
    }
}
