//! The client side of the handshake protocol with a service. Every call is signed and
//! bounded by the attempt's remaining time ([`Endpoint::call`]).

use std::time::Duration;

use crate::services::{endpoint, Call, CallError, Endpoint};
use baton_core::state::{ErrorKind, StepError};
use baton_core::time::Millis;
use baton_core::trace::{RunTrace, SpanOf};
use serde_json::{json, Value};
use worker::{Env, Method};

/// What a service did with an attempt.
#[derive(Debug)]
pub enum ServiceOutcome {
    /// It answered with the result.
    Done { output: Value, usage: Option<Value>, duration_ms: Option<u64> },
    /// It accepted the work and will report with a callback; `progress`: it can be asked how
    /// it is going (`Some`, with its own estimate of the time the work takes, if it gave one).
    Accepted { progress: Option<Option<u64>> },
    /// It failed; the kind says whether to retry.
    Failed(StepError),
    /// No answer before the attempt expired.
    TimedOut,
    /// This invocation's time ran out before the service was asked to start (the handshake
    /// was not answered in time): the attempt can be run elsewhere.
    NotStarted,
}

/// One attempt of one step, as sent to the service.
pub struct Attempt<'a> {
    pub run_id: &'a str,
    /// The step's slug (unique in the plan).
    pub service: &'a str,
    /// The service to call: the step's worker key (one worker may serve several steps).
    pub worker: &'a str,
    pub attempt: u32,
    pub action: Option<&'a str>,
    pub timeout_ms: u64,
    pub estimated_tokens: u64,
    /// `{"inputData": ...}` or `{"dataReference": ...}`.
    pub input: Value,
    /// When the attempt expires: no call may outlast it.
    pub expires_at: Millis,
    /// When this invocation must stop waiting (at most `expires_at`). A process call cut
    /// here leaves the work with the service, as if it had accepted it (202).
    pub call_until: Millis,
    /// The run's trace: each call carries its own span of the attempt.
    pub trace: &'a RunTrace,
}

/// Why a call did not get an answer to read.
enum Unanswered {
    /// The attempt expired first.
    TimedOut,
    /// It failed on the way.
    Failed(StepError),
}

/// Posts `body` to `path` (the call `what`) for `attempt`, within `expires_at`.
async fn post(
    env: &Env,
    endpoint: &Endpoint,
    (what, path): (&str, &str),
    body: &Value,
    attempt: &Attempt<'_>,
    expires_at: Millis,
) -> Result<(u16, Value), Unanswered> {
    let left = expires_at.since(Millis::new(crate::clock::now_ms()));
    if left == 0 {
        return Err(Unanswered::TimedOut);
    }
    let body = body.to_string();
    let call = Call {
        method: Method::Post,
        path,
        attempt: Some(attempt.attempt),
        body: Some(&body),
        trace: attempt.trace,
        span: SpanOf::Call(attempt.service, attempt.attempt, what),
    };
    let answer = endpoint.call(env, call, Duration::from_millis(left)).await.map_err(|e| match e {
        CallError::TimedOut { .. } => Unanswered::TimedOut,
        CallError::InvalidUrl { .. } => Unanswered::Failed(StepError::new(ErrorKind::Permanent, e.to_string())),
        CallError::NoBinding { .. } | CallError::Network { .. } => {
            Unanswered::Failed(StepError::new(ErrorKind::Transient, e.to_string()))
        }
    })?;
    Ok((answer.status, serde_json::from_str(&answer.body).unwrap_or(Value::String(answer.body))))
}

fn error_message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .or_else(|| body["error"].as_str())
        .or_else(|| body.as_str())
        .unwrap_or("no error message")
        .to_string()
}

/// Maps an HTTP failure to a step error: 429 rate limited and 5xx transient (retried),
/// other 4xx permanent (e.g. "Worker config invalid: No API key found").
fn failure(phase: &str, status: u16, body: &Value) -> StepError {
    let message = error_message(body);
    match status {
        429 => StepError::new(ErrorKind::RateLimited, format!("{phase}: 429 {message}")),
        500..=599 => StepError::new(ErrorKind::Transient, format!("{phase}: {status} {message}")),
        _ => StepError::new(ErrorKind::Permanent, message),
    }
}

/// Runs the handshake, then process.
pub async fn run_attempt(env: &Env, attempt: &Attempt<'_>) -> ServiceOutcome {
    let stage_id = format!("{}:{}", attempt.run_id, attempt.service);
    let mut common = json!({
        "executionId": attempt.run_id,
        "stageId": stage_id,
        "attempt": attempt.attempt,
        "action": attempt.action,
    });
    if let (Value::Object(common), Value::Object(input)) = (&mut common, &attempt.input) {
        common.extend(input.clone());
    }
    let mut handshake = common.clone();
    handshake["resourceRequirements"] =
        json!({ "estimatedTokens": attempt.estimated_tokens, "timeoutMs": attempt.timeout_ms });
    handshake["validationConfig"] = json!({ "requireOutput": true });
    let endpoint = endpoint(env, attempt.worker);
    let until = attempt.call_until.min(attempt.expires_at);
    // Cut by this invocation's own limit, not by the attempt's expiry.
    let cut = || Millis::new(crate::clock::now_ms()) < attempt.expires_at;
    let unanswered = |why: Unanswered| match why {
        Unanswered::TimedOut => ServiceOutcome::TimedOut,
        Unanswered::Failed(error) => ServiceOutcome::Failed(error),
    };
    let progress_capable;
    match post(env, &endpoint, ("handshake", "/api/handshake"), &handshake, attempt, until).await {
        Err(Unanswered::TimedOut) if cut() => return ServiceOutcome::NotStarted,
        Err(why) => return unanswered(why),
        Ok((200..=299, body)) => {
            progress_capable =
                (body["capabilities"]["progress"] == Value::Bool(true)).then(|| body["estimatedCompletionMs"].as_u64());
            if body["accepted"] != Value::Bool(true) {
                let reason = body["reason"].as_str().unwrap_or("no reason given");
                return ServiceOutcome::Failed(StepError::new(
                    ErrorKind::Rejected,
                    format!("handshake not accepted: {reason}"),
                ));
            }
        }
        Ok((status, body)) => return ServiceOutcome::Failed(failure("handshake", status, &body)),
    }
    match post(env, &endpoint, ("process", "/api/process"), &common, attempt, until).await {
        Err(Unanswered::TimedOut) if cut() => ServiceOutcome::Accepted { progress: progress_capable },
        Err(why) => unanswered(why),
        Ok((202, _)) => ServiceOutcome::Accepted { progress: progress_capable },
        Ok((200..=299, body)) => match body["status"].as_str() {
            Some("failed") => ServiceOutcome::Failed(StepError::new(ErrorKind::Permanent, error_message(&body))),
            _ => ServiceOutcome::Done {
                output: body.get("output").cloned().unwrap_or(Value::Null),
                usage: body.get("usage").cloned().filter(|u| !u.is_null()),
                duration_ms: body["duration_ms"].as_u64(),
            },
        },
        Ok((status, body)) => ServiceOutcome::Failed(failure("process", status, &body)),
    }
}
