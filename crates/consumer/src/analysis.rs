//! `llm-analysis` (and its dead-letter queue): the run's one diagnosis and its finalisation.
//!
//! Idempotent: a message for a run that is not `aggregating` (already finalised, or never
//! claimed) is acknowledged and does nothing; two racing deliveries both compute, but the
//! guarded finalisation and the events' dedupe keys let exactly one diagnosis stand.

use baton_core::events::{diagnosis_dedupe_key, RunFinish, RunFinishedPayload};
use baton_core::ids::EventId;
use baton_core::messages::AnalysisMessage;
use baton_core::state::{RunStatus, StepStatus};
use baton_core::summary::{confidence, missing_services};
use baton_core::synthesis;
use baton_edge::d1::events::{self as event_rows, EventRow};
use baton_edge::d1::{runs, Arg};
use baton_edge::engine::{Engine, Loaded};
use baton_edge::{clock, Error, Result};
use serde_json::Value;
use worker::{MessageExt, QueueRetryOptionsBuilder, RawMessage};

use crate::llm::{narrative, LlmConfig};

/// The `type` of the diagnosis event.
pub const DIAGNOSIS_EVENT_TYPE: &str = "diagnosis";

pub async fn handle(engine: &Engine<'_>, message: &RawMessage, dead_lettered: bool) {
    let queue = if dead_lettered { "llm-analysis-dlq" } else { "llm-analysis" };
    let analysis = match crate::body_json(message).and_then(|v| AnalysisMessage::decode(&v).map_err(|e| e.to_string()))
    {
        Ok(analysis) => analysis,
        Err(e) => {
            worker::console_error!("{queue}: poison message {} acknowledged: {e}", message.id());
            message.ack();
            return;
        }
    };
    let note = dead_lettered.then_some("analysis retries exhausted; rule-based diagnosis only");
    match finalize(engine, analysis.trace_id.as_str(), note).await {
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
    let run_id = loaded.run.run_id.clone();
    let run_id = run_id.as_str();
    if loaded.status()? != RunStatus::Aggregating {
        return Ok(()); // finalised already, or not claimed: nothing to do
    }
    let records = loaded.records()?;
    let plan = &loaded.plan;
    let missing: Vec<String> = missing_services(plan, &records).iter().map(|s| s.as_str().to_string()).collect();
    let outputs: Vec<(String, Value)> = loaded
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Completed.as_str())
        .map(|s| {
            (s.service.clone(), s.output.as_deref().and_then(|o| serde_json::from_str(o).ok()).unwrap_or(Value::Null))
        })
        .collect();
    let mut diagnosis = synthesis::diagnose(&loaded.run.domain, &outputs, &missing, confidence(plan, &records));
    diagnosis.synthesis_error = synthesis_error.map(str::to_string);
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
    let now = engine.now();

    let run_id_typed = loaded.run_id()?;
    let event_id = EventId::from_parts(now, clock::random_bytes::<8>()?);
    // Timed out if the deadline passed with data missing; otherwise completed.
    let status = if loaded.run.partial == Some(1) && loaded.run.claimed_at.unwrap_or(0) >= loaded.run.deadline_at {
        RunStatus::Timeout
    } else {
        RunStatus::Completed
    };
    let finish = RunFinishedPayload::new(
        RunFinish {
            status,
            domain: loaded.run.domain.clone(),
            started_at: loaded.started_at(),
            completed_at: now,
            diagnosis_event_id: Some(event_id.clone()),
            synthesis_error: diagnosis.synthesis_error.clone(),
        },
        plan,
        &records,
    );
    let diagnosis_row = EventRow {
        id: event_id.as_str().to_string(),
        website_id: loaded.run.website_id.clone(),
        run_id: run_id.to_string(),
        service: engine.orchestrator_service_name(),
        kind: DIAGNOSIS_EVENT_TYPE.to_string(),
        payload: serde_json::to_string(&diagnosis).map_err(|e| Error::Internal(e.to_string()))?,
        created_at: now.as_u64() as i64,
        dedupe_key: Some(diagnosis_dedupe_key(&run_id_typed)),
    };
    let finish_row = engine.finish_event_row(&loaded, &finish, now)?;
    // The guarded run update comes first: only the delivery that moves the run out of
    // `aggregating` writes; a racing one changes nothing (its events collide on dedupe keys
    // and are ignored, as the batch runs after the winner's).
    let statements = vec![
        runs::transition(
            &engine.db,
            run_id,
            &["aggregating"],
            status.as_str(),
            &[
                ("completed_at", Arg::Int(now.as_u64() as i64)),
                ("diagnosis_event_id", Arg::from(event_id.as_str())),
                ("synthesis_error", Arg::from(diagnosis.synthesis_error.clone())),
                ("due_at", Arg::Null),
            ],
        )?,
        event_rows::insert_if_run_status(&engine.db, &diagnosis_row, status.as_str(), event_id.as_str())?,
        event_rows::insert_if_run_status(&engine.db, &finish_row, status.as_str(), event_id.as_str())?,
    ];
    let metas = engine.db.batch(statements).await?;
    if metas.first().is_some_and(|m| m.changes > 0) {
        // The KV mirror of what was just written (no second read).
        let mut done = loaded.clone();
        done.run.status = status.as_str().to_string();
        done.run.completed_at = Some(now.as_u64() as i64);
        done.run.diagnosis_event_id = Some(event_id.as_str().to_string());
        done.run.synthesis_error = diagnosis.synthesis_error.clone();
        done.run.due_at = None;
        engine.write_snapshot(&done).await;
        if loaded.run.kind == "pipeline" {
            release_and_admit(engine).await;
        }
    }
    Ok(())
}

/// A finished pipeline frees its reserved resources: release them and admit what waits now,
/// rather than at the next poller tick. Best effort; the poller's admission pass is the net.
async fn release_and_admit(engine: &Engine<'_>) {
    if let Err(e) = baton_edge::admission::admit_queued(engine, 10).await {
        worker::console_warn!("admission after a finished pipeline failed: {e}");
    }
}
