//! OpenTelemetry span export: once a run has ended, its spans (core's [`otlp::spans_of`]) are
//! posted to the collector `OTEL_EXPORTER_OTLP_ENDPOINT` names, as OTLP/HTTP JSON.
//!
//! Export never delays or fails a run: it starts only after the ending is written (and, in
//! place, after a waiting client has its answer), it is bounded by
//! `OTEL_EXPORTER_OTLP_TIMEOUT` (2 s by default), it is tried once (never a pile of retries),
//! after a timeout this isolate sends nothing for [`otlp::COOL_OFF_MS`] (so a collector that
//! does not answer costs one timeout per period, not one per run), and whatever goes wrong
//! (reading the attempts, the request, the collector's answer) is one warning line and the
//! spans counted as dropped (`orchestrator_otlp_spans_dropped_total`), never an error. With
//! no endpoint set nothing is read or sent.

use std::cell::Cell;
use std::time::Duration;

use baton_core::metrics::{OTLP_SPANS_DROPPED, OTLP_SPANS_EXPORTED};
use baton_core::otlp::{self, EndedAttempt, EndedRun, EndedStep, Exporter};
use worker::{AbortController, Env, Fetch, Headers, Method, Request, RequestInit};

use crate::concurrency::with_timeout;
use crate::d1::views::{self, AttemptRow};
use crate::d1::Db;
use crate::engine::Loaded;
use crate::settings;

thread_local! {
    /// Until when this isolate sends no export (ms since the epoch): set by a timeout.
    static QUIET_UNTIL: Cell<u64> = const { Cell::new(0) };
}

/// The exporter the variables configure; `None` when export is off, or when a variable is
/// invalid (logged: `baton check-config` refuses such a config before it is deployed).
pub fn exporter(env: &Env) -> Option<Exporter> {
    settings::otlp_exporter(env).unwrap_or_else(|e| {
        worker::console_warn!("span export is off: {e}");
        None
    })
}

/// The facts of an ended run core builds its spans from.
fn ended_run<'a>(
    ended: &'a Loaded,
    trace: &'a baton_core::trace::RunTrace,
    history: &'a [AttemptRow],
    bases: &'a [(String, String)],
) -> EndedRun<'a> {
    let ms = |t: i64| t.max(0) as u64;
    let steps = ended
        .steps
        .iter()
        .map(|step| {
            let worker = ended.plan.step(&step.service).map_or(step.service.as_str(), |s| s.worker_key.as_str());
            let base_url = bases.iter().find(|(w, _)| w == worker).map_or("", |(_, b)| b.as_str());
            EndedStep {
                service: &step.service,
                worker,
                base_url,
                status: step.status.as_str(),
                started_at: step.started_at.map(ms),
                finished_at: step.finished_at.map(ms),
                attempts: history
                    .iter()
                    .filter(|a| a.service == step.service)
                    .map(|a| EndedAttempt {
                        attempt: a.attempt.max(0) as u32,
                        started_at: a.started_at.map(ms),
                        ended_at: ms(a.ended_at),
                        outcome: &a.outcome,
                        error: a.error.as_deref(),
                        error_kind: a.error_kind.as_deref(),
                    })
                    .collect(),
            }
        })
        .collect();
    EndedRun {
        trace,
        plan_id: &ended.run.plan_id,
        client_id: &ended.run.client_id,
        status: ended.run.status.as_str(),
        error: ended.run.error.as_deref(),
        retries: ended.run.retries.max(0) as u64,
        started_at: ms(ended.run.started_at),
        completed_at: ms(ended.run.completed_at.unwrap_or(ended.run.started_at)),
        claimed_at: ended.run.claimed_at.map(ms),
        steps,
    }
}

/// Exports the spans of the run `ended` (as its ending left it, on the database `db`) if an
/// exporter is configured and the run's trace is sampled; counts what the collector accepted
/// or what was dropped in the metric totals. Never fails: see the module.
pub async fn export(env: &Env, db: &Db, ended: &Loaded) {
    let Some(exporter) = exporter(env) else { return };
    let trace = ended.run.trace();
    if !trace.sampled {
        return;
    }
    let run_id = ended.run.run_id.as_str();
    let limit = Duration::from_millis(exporter.timeout_ms);
    // How many spans there are, once known: what a timeout drops.
    let built = Cell::new(0u64);
    // Whether the time ran out waiting for the collector (not for the read).
    let posting = Cell::new(false);
    let attempt = async {
        // The attempt history: one read, only while export is on.
        let history = views::attempts_of_run(db, run_id).await.map_err(|e| (0, format!("attempts not read: {e}")))?;
        let mut bases: Vec<(String, String)> = Vec::new();
        for step in ended.plan.steps() {
            let worker = step.worker_key.as_str();
            if !bases.iter().any(|(w, _)| w == worker) {
                bases.push((worker.to_string(), crate::services::endpoint(env, worker).url("")));
            }
        }
        let request = otlp::spans_of(&ended_run(ended, &trace, &history, &bases), env!("CARGO_PKG_VERSION"));
        let spans = request.span_count() as u64;
        built.set(spans);
        let body = serde_json::to_string(&request).map_err(|e| (spans, format!("not encoded: {e}")))?;
        if crate::clock::now_ms() < QUIET_UNTIL.get() {
            return Err((spans, "not sent: the collector did not answer in time a moment ago".to_string()));
        }
        posting.set(true);
        post(&exporter, body).await.map(|answer| (spans, answer)).map_err(|why| (spans, why))
    };
    let outcome = match with_timeout(attempt, limit).await {
        Some(outcome) => outcome,
        None => {
            if posting.get() {
                QUIET_UNTIL.set(crate::clock::now_ms() + otlp::COOL_OFF_MS);
            }
            Err((built.get(), format!("no answer within {} ms", exporter.timeout_ms)))
        }
    };
    let (exported, dropped) = match outcome {
        Ok((spans, answer)) => {
            let rejected = otlp::rejected_spans(&answer).min(spans);
            if rejected > 0 {
                worker::console_warn!("run {run_id}: the collector rejected {rejected} of {spans} spans");
            }
            (spans - rejected, rejected)
        }
        // Spans not even built (the attempts could not be read in time) count as one.
        Err((spans, why)) => {
            worker::console_warn!("run {run_id}: spans not exported to {}: {why}", exporter.url);
            (0, spans.max(1))
        }
    };
    let totals: Vec<(String, String, i64)> = [(OTLP_SPANS_EXPORTED, exported), (OTLP_SPANS_DROPPED, dropped)]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(metric, n)| (metric.to_string(), String::new(), n as i64))
        .collect();
    if totals.is_empty() {
        return;
    }
    let counted = match crate::d1::archive::add_totals(db, &totals) {
        Ok(statement) => db.batch(vec![statement]).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = counted {
        worker::console_warn!("run {run_id}: span export not counted: {e}");
    }
}

/// Posts `body` once; the collector's answer on a 2xx, else why not. Aborted when the caller's
/// timeout drops it.
async fn post(exporter: &Exporter, body: String) -> Result<String, String> {
    let headers = Headers::new();
    for (name, value) in &exporter.headers {
        headers.set(name, value).map_err(|e| format!("header {name}: {e}"))?;
    }
    headers.set("Content-Type", "application/json").map_err(|e| e.to_string())?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let request = Request::new_with_init(&exporter.url, &init).map_err(|e| format!("no request: {e}"))?;
    let controller = AbortController::default();
    let signal = controller.signal();
    // Dropped at the timeout: the request is aborted with it.
    let mut abort = AbortOnDrop(Some(controller));
    crate::meter::subrequest();
    let mut response = Fetch::Request(request).send_with_signal(&signal).await.map_err(|e| format!("network: {e}"))?;
    let status = response.status_code();
    let text = response.text().await.unwrap_or_default();
    abort.0 = None;
    if (200..=299).contains(&status) {
        Ok(text)
    } else {
        Err(format!("HTTP {status} {}", text.chars().take(200).collect::<String>()))
    }
}

/// Aborts its request when dropped (the export's timeout drops the future awaiting it).
struct AbortOnDrop(Option<AbortController>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(controller) = self.0.take() {
            controller.abort();
        }
    }
}
