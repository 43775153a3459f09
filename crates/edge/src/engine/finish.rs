//! How a run ends — one path for every ending: completed (with or without missing services,
//! analysed at once or after the analysis queue), timeout, failed, cancelled. The run's
//! final write, its diagnosis and finish events, then the KV snapshot and, for a pipeline,
//! the admission of what waits for its resources.
//!
//! The ending is one statement (`d1::runs::finish`, from the statuses core allows, under
//! the decision's gate when there is one) that writes a fresh version token; the events are
//! written only if the run carries that token afterwards, so whoever races to end a run,
//! exactly one ending and one set of events stands (the events' dedupe keys agree).

use baton_core::state::RunKind;
use baton_core::state::StepStatus;
use baton_core::summary::{confidence, missing_services};
use baton_core::synthesis::{self, Diagnosis};
use serde_json::Value;

use super::run::{Engine, Loaded};
use crate::log;

/// The `type` of the diagnosis event.
pub const DIAGNOSIS_EVENT_TYPE: &str = "diagnosis";

/// The rule-based diagnosis of a claimed run, from the outputs of its completed steps.
/// `synthesis_error`: why a narrative is missing, if it is.
pub fn rule_based_diagnosis(loaded: &Loaded, synthesis_error: Option<&str>) -> Diagnosis {
    let records = loaded.records().unwrap_or_default();
    let missing: Vec<String> =
        missing_services(&loaded.plan, &records).iter().map(|s| s.as_str().to_string()).collect();
    let outputs: Vec<(String, Value)> = loaded
        .steps
        .iter()
        // A map step's items are in its own output (the list of theirs).
        .filter(|s| s.status == StepStatus::Completed && baton_core::map::item_of(&s.service).is_none())
        .map(|s| {
            (s.service.clone(), s.output.as_deref().and_then(|o| serde_json::from_str(o).ok()).unwrap_or(Value::Null))
        })
        .collect();
    let mut diagnosis = synthesis::diagnose(&loaded.run.domain, &outputs, &missing, confidence(&loaded.plan, &records));
    diagnosis.synthesis_error = synthesis_error.map(str::to_string);
    diagnosis
}

impl Engine<'_> {
    /// What follows an ending: the KV mirror of the run as it ended (no read), the webhook
    /// messages, the run's spans to an OpenTelemetry collector (when one is configured), and
    /// for a pipeline, whose reservation is free now, the admission of what waits (the poller
    /// would, later). Best effort: none decides anything.
    /// `deliveries`: the webhook deliveries the ending wrote ([`Outbox::written`]), to queue.
    ///
    /// The span export runs alongside the KV mirror and the webhook messages, under its own
    /// timeout ([`crate::otlp::export`]), not after them: it adds nothing to this tail unless
    /// the collector is slower than they are, and then at most `OTEL_EXPORTER_OTLP_TIMEOUT`.
    /// It is not handed to `ctx.wait_until` here because the engine has no `Context`: where a
    /// waiting client is answered (a first wave run in place, a hand-over), this whole tail
    /// already runs after the answer, inside the `wait_until` of `attempts::run_first_wave`; on
    /// the other paths (a service's callback, a queue message, a poller tick) nobody waits for
    /// the run, and the ending is written before the tail starts, so a slow collector can hold
    /// up only the acknowledgement of the event that ended the run, never the run.
    pub(crate) async fn after_ending(&self, ended: &Loaded, deliveries: &[String]) {
        let took = ended.run.completed_at.map(|at| (at - ended.run.started_at).max(0) as u64);
        let line =
            log::Line { duration_ms: took, error: ended.run.error.as_deref(), ..log::Line::run(&ended.run.run_id) };
        log::emit(log::Event::RunFinished, &line);
        let mirrors = async {
            self.write_snapshot(ended).await;
            self.queue_deliveries(&ended.run.run_id, deliveries).await;
        };
        crate::concurrency::join(mirrors, crate::otlp::export(self.env(), &self.db, ended)).await;
        // A child reports to its parent's step; a parent cancels its open children.
        Box::pin(self.after_ending_in_family(ended)).await;
        if ended.run.kind == RunKind::Pipeline {
            if let Err(e) = Box::pin(super::admission::admit_queued(self, 10)).await {
                worker::console_warn!("admission after run {} ended: {e}", ended.run.run_id);
            }
        }
    }

    /// The `service` of lifecycle events (`ORCHESTRATOR_SERVICE_NAME`, default "orchestrator").
    pub(crate) fn orchestrator_service_name(&self) -> String {
        crate::settings::orchestrator_service_name(self.env())
    }
}
