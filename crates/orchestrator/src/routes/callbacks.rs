//! `POST /api/jobs/:trace_id/results/:service`: a service reports a step's outcome
//! asynchronously. Signed ([`baton_core::signature`], purpose `result`) with the key of the
//! service the step calls (`SERVICE_KEYS`, else `WORKER_SECRET`), over this path and the attempt
//! (`X-Baton-Attempt`, required): a signature made for another run, step or attempt is refused,
//! and a replay of the same one finds its attempt ended (`already_recorded`).

use baton_api::callbacks::{Recorded, ReportStatus, ResultRecorded, ResultReport};
use baton_api::Success;
use baton_core::signature::Purpose;
use baton_core::state::{ErrorKind, StepError};
use baton_edge::engine::{Dispatch, Engine, RecordOutcome, Report};
use baton_edge::{auth, http, settings, Error, Result};
use serde_json::Value;
use worker::{Env, Request, Response};

use super::input;

pub async fn result(mut req: Request, env: &Env, trace_id: &str, service: &str) -> Result<Response> {
    let body = http::read_body(&mut req).await?;
    let engine = Engine::for_id(env, trace_id).await?;
    let not_found = || Error::NotFound { what: format!("step {service} of job {trace_id}") };
    // The key is the step's service's: read the run first (a miss is the same 404 for anyone).
    let loaded = engine.load(trace_id).await?.ok_or_else(not_found)?;
    let worker = loaded.plan.step(service).map(|spec| spec.worker_key.as_str().to_string()).ok_or_else(not_found)?;
    let keys = settings::service_keys(env, &worker);
    let attempt = auth::verify_request(&req, &keys, Purpose::Result, &body, "result callback")?.ok_or_else(|| {
        Error::Unauthorized(format!(
            "result callback refused: the {} header is required",
            baton_core::signature::ATTEMPT_HEADER
        ))
    })?;
    let (in_body, report) = decode(http::parse_json(&body)?)?;
    if in_body.is_some_and(|a| a != attempt) {
        return Err(Error::bad_request(
            "invalid_field",
            "attempt",
            format!("`attempt` in the body differs from the signed attempt {attempt}"),
        ));
    }
    let outcome = engine.record_loaded(loaded, service, Some(attempt), report, Dispatch::Queue).await?;
    let (result, advance) = match outcome {
        RecordOutcome::Recorded { advance, .. } => {
            (Recorded::Recorded, serde_json::to_value(advance).unwrap_or(Value::Null))
        }
        RecordOutcome::AlreadyTerminal => (Recorded::AlreadyRecorded, Value::Null),
        RecordOutcome::Stale => (Recorded::Stale, Value::Null),
        RecordOutcome::NotFound => return Err(not_found()),
    };
    let answer = ResultRecorded {
        success: Success,
        trace_id: trace_id.to_string(),
        service: service.to_string(),
        result,
        advance,
    };
    http::json(200, &answer)
}

/// The callback's body: the attempt it reports on (any when absent), and what happened.
fn decode(body: Value) -> Result<(Option<u32>, Report)> {
    let body: ResultReport = input::decode(body)?;
    let report = match body.status {
        ReportStatus::Completed => Report::Succeeded {
            output: body.output.unwrap_or(Value::Null),
            usage: body.usage,
            duration_ms: body.duration_ms,
        },
        ReportStatus::Failed => Report::Failed(step_error(body.error.as_ref())),
    };
    Ok((body.attempt, report))
}

/// A reported failure: `error` is a message, or `{message, retryable}` (not retryable unless it says so).
fn step_error(error: Option<&Value>) -> StepError {
    let message = match error {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => {
            o.get("message").and_then(Value::as_str).unwrap_or("service reported failure").to_string()
        }
        _ => "service reported failure".to_string(),
    };
    let retryable = error.and_then(|e| e.get("retryable")).and_then(Value::as_bool).unwrap_or(false);
    StepError::new(if retryable { ErrorKind::Transient } else { ErrorKind::Permanent }, message)
}
