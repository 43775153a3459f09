//! `llm-analysis`: the run's one diagnosis and its finalisation (its dead-letter queue is
//! [`crate::dead_letters`]).
//!
//! Idempotent: a message for a run that is not `aggregating` (already finalised, or never
//! claimed) is acknowledged and does nothing; two racing deliveries both compute, but the
//! guarded finalisation and the events' dedupe keys let exactly one diagnosis stand.

use baton_core::messages::AnalysisMessage;
use baton_core::state::RunStatus;
use baton_edge::engine::{rule_based_diagnosis, Engine, Loaded};
use baton_edge::Result;
use worker::{MessageExt, QueueRetryOptionsBuilder, RawMessage};

use crate::llm::{narrative, LlmConfig};

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
    match finalize(engine, analysis.trace_id.as_str(), None).await {
        Ok(()) => message.ack(),
        Err(e) => {
            worker::console_error!("{queue}: run {}: {e}; will retry", analysis.trace_id);
            message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(1).build());
        }
    }
}

/// Writes the diagnosis and finishes the run, once.
pub(crate) async fn finalize(engine: &Engine<'_>, run_id: &str, synthesis_error: Option<&str>) -> Result<()> {
    let Some(loaded) = engine.load(run_id).await? else { return Ok(()) };
    finalize_loaded(engine, loaded, synthesis_error).await
}

/// [`finalize`] on a run the caller has (the one that just won the fan-in claim).
pub(crate) async fn finalize_loaded(engine: &Engine<'_>, loaded: Loaded, synthesis_error: Option<&str>) -> Result<()> {
    // Resilience tests make the analysis fail so its messages reach the dead-letter queue
    // (whose finalisation, with `synthesis_error`, is let through).
    if synthesis_error.is_none() && baton_edge::faults::injected(engine.env(), "analysis") {
        return Err(baton_edge::Error::Internal("injected analysis fault".into()));
    }
    if loaded.status()? != RunStatus::Aggregating {
        return Ok(()); // finalised already, or not claimed: nothing to do
    }
    let mut diagnosis = rule_based_diagnosis(&loaded, synthesis_error);
    // The dead-letter path finalises with the rules alone: it must not wait on the LLM again.
    if let (None, Some(llm)) = (synthesis_error, LlmConfig::from_env(engine.env())) {
        match narrative(&llm, &diagnosis).await {
            Ok(text) => {
                diagnosis.narrative = Some(text);
                diagnosis.synthesis = "rules+llm".to_string();
            }
            Err(error) => diagnosis.synthesis_error = Some(error),
        }
    }
    engine.finish_analysed(&loaded, diagnosis).await?;
    Ok(())
}
