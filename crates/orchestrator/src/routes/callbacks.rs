//! `POST /api/jobs/:trace_id/results/:service`: a service reports a step's outcome
//! asynchronously. Authenticated by HMAC-SHA256 (`WORKER_SECRET`) over timestamp + body.

use baton_core::state::{ErrorKind, StepError};
use baton_edge::engine::{Engine, RecordOutcome, Report};
use baton_edge::{auth, http, Error, Result};
use serde_json::{json, Value};
use worker::{Env, Request, Response};

use super::input;

pub async fn result(mut req: Request, env: &Env, trace_id: &str, service: &str) -> Result<Response> {
    let body = http::read_body(&mut req).await?;
    auth::verify_signed(&req, env, &body, "result callback")?;
    let (attempt, report) = decode(http::parse_json(&body)?)?;
    let engine = Engine::new(env).await?;
    let outcome = engine.record(trace_id, service, attempt, report).await?;
    let (code, recorded) = match &outcome {
        RecordOutcome::Recorded { .. } => (200, "recorded"),
        RecordOutcome::AlreadyTerminal => (200, "already_recorded"),
        RecordOutcome::Stale => (200, "stale"),
        RecordOutcome::NotFound => return Err(Error::NotFound { what: format!("step {service} of job {trace_id}") }),
    };
    let advance = match outcome {
        RecordOutcome::Recorded { advance, .. } => serde_json::to_value(advance).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    http::json(
        code,
        &json!({ "success": true, "trace_id": trace_id, "service": service, "result": recorded, "advance": advance }),
    )
}

/// The callback's body: the attempt it reports on (any when absent), and what happened.
fn decode(body: Value) -> Result<(Option<u32>, Report)> {
    let map = input::object(body, &["status", "output", "error", "duration_ms", "usage", "attempt"])?;
    let attempt = match map.get("attempt") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|a| *a >= 1 && *a <= u64::from(u32::MAX))
                .ok_or_else(|| Error::bad_request("invalid_field", "attempt", "`attempt` must be a positive integer"))?
                as u32,
        ),
    };
    let duration_ms = match map.get("duration_ms") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            Error::bad_request("invalid_field", "duration_ms", "`duration_ms` must be a non-negative integer")
        })?),
    };
    let report = match input::optional_string(&map, "status")?.as_deref() {
        Some("completed") => Report::Succeeded {
            output: map.get("output").cloned().unwrap_or(Value::Null),
            usage: map.get("usage").cloned().filter(|u| !u.is_null()),
            duration_ms,
        },
        Some("failed") => Report::Failed(step_error(map.get("error"))),
        Some(other) => {
            return Err(Error::bad_request(
                "invalid_field",
                "status",
                format!("`status` must be \"completed\" or \"failed\", got {other:?}"),
            ))
        }
        None => return Err(Error::bad_request("missing_field", "status", "`status` is required")),
    };
    Ok((attempt, report))
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
