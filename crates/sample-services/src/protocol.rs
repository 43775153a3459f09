//! The handshake protocol, as an external service implements it:
//! 1. `POST /{service}/api/handshake` → `{executionId, workerId, accepted, estimatedCompletionMs,
//!    resourceRequirements, capabilities}`
//! 2. `POST /{service}/api/process` → 200 with the result, or 202 and later a signed callback
//!    to the orchestrator's `POST /api/jobs/:trace_id/results/:service`.
//!
//! Both requests carry the same fields (`executionId`, `stageId`, `attempt`, `action`,
//! `inputData` or `dataReference`), so the service keeps no state between them.

use std::time::Duration;

use baton_core::signature;
use baton_core::time::Millis;
use serde::Deserialize;
use serde_json::{json, Value};
use worker::{Context, Delay, Env, Headers, Method, Request, RequestInit, Response};

use crate::behaviour::Behaviour;
use crate::outputs;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StageRequest {
    execution_id: String,
    #[serde(default)]
    stage_id: String,
    #[serde(default = "first_attempt")]
    attempt: u32,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    input_data: Option<Value>,
    #[serde(default)]
    data_reference: Option<DataReference>,
}

#[derive(Debug, Deserialize)]
struct DataReference {
    key: String,
}

fn first_attempt() -> u32 {
    1
}

/// A JSON error response.
pub fn error(status: u16, code: &str, message: &str) -> worker::Result<Response> {
    Ok(Response::from_json(&json!({ "success": false, "error": { "code": code, "message": message } }))?
        .with_status(status))
}

async fn read_stage(mut req: Request) -> Result<StageRequest, String> {
    let body = req.text().await.map_err(|e| e.to_string())?;
    serde_json::from_str(&body).map_err(|e| format!("invalid request body: {e}"))
}

/// The input, inline or fetched from KV by reference.
async fn resolve_input(env: &Env, stage: &StageRequest) -> Result<Value, String> {
    if let Some(input) = &stage.input_data {
        return Ok(input.clone());
    }
    let reference = stage.data_reference.as_ref().ok_or("neither inputData nor dataReference given")?;
    let kv = env.kv("KV").map_err(|e| e.to_string())?;
    let text = kv
        .get(&reference.key)
        .text()
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("dataReference {} not found", reference.key))?;
    let mut input: Value = serde_json::from_str(&text).map_err(|e| format!("dataReference is not JSON: {e}"))?;
    // Lets tests see that the input travelled by reference.
    input["received_by_reference"] = json!(true);
    Ok(input)
}

/// `POST /{service}/api/handshake`
pub async fn handshake(req: Request, env: &Env, service: &str) -> worker::Result<Response> {
    let stage = match read_stage(req).await {
        Ok(stage) => stage,
        Err(message) => return error(400, "invalid_request", &message),
    };
    let input = match resolve_input(env, &stage).await {
        Ok(input) => input,
        Err(message) => return error(400, "invalid_input", &message),
    };
    let behaviour = Behaviour::for_service(&input["parameters"], service);
    let accepted = stage.attempt > behaviour.reject;
    Response::from_json(&json!({
        "executionId": stage.execution_id,
        "stageId": stage.stage_id,
        "workerId": format!("sample-{service}"),
        "accepted": accepted,
        "reason": if accepted { Value::Null } else { json!("at capacity, try again later") },
        "estimatedCompletionMs": behaviour.latency_ms(),
        "resourceRequirements": { "estimatedTokens": outputs::usage(service, &input)["tokens"] },
        "capabilities": { "async": true, "progress": true, "dataReference": true },
    }))
}

/// `POST /{service}/api/process`
pub async fn process(req: Request, env: Env, ctx: Context, service: &str) -> worker::Result<Response> {
    let stage = match read_stage(req).await {
        Ok(stage) => stage,
        Err(message) => return error(400, "invalid_request", &message),
    };
    let mut input = match resolve_input(&env, &stage).await {
        Ok(input) => input,
        Err(message) => return error(400, "invalid_input", &message),
    };
    if let Some(action) = &stage.action {
        input["template_ref"] = json!(action);
    }
    let behaviour = Behaviour::for_service(&input["parameters"], service);
    if let Some(message) = behaviour.permanent_error() {
        return error(400, "worker_config_invalid", &message);
    }
    if stage.attempt <= behaviour.rate_limit {
        return error(429, "rate_limited", "too many requests, retry later");
    }
    if stage.attempt <= behaviour.fail_transient {
        return error(503, "temporarily_unavailable", &format!("transient failure on attempt {}", stage.attempt));
    }
    if behaviour.never_answer {
        return Ok(
            Response::from_json(&json!({ "status": "accepted", "executionId": stage.execution_id }))?.with_status(202)
        );
    }
    let mut output = outputs::output(service, &input);
    if input["received_by_reference"] == true {
        output["received_by_reference"] = json!(true);
    }
    let result = json!({
        "status": "completed",
        "output": output,
        "usage": outputs::usage(service, &input),
        "duration_ms": behaviour.latency_ms(),
        "attempt": stage.attempt,
    });
    if behaviour.asynchronous {
        // Report for the step that called (its slug ends the stage id), not the worker name.
        let service = stage.stage_id.rsplit(':').next().filter(|s| !s.is_empty()).unwrap_or(service).to_string();
        let trace_id = stage.execution_id.clone();
        let latency = behaviour.latency_ms();
        ctx.wait_until(async move {
            Delay::from(Duration::from_millis(latency)).await;
            if let Err(e) = send_callback(&env, &trace_id, &service, &result).await {
                worker::console_error!("sample {service}: callback for {trace_id} failed: {e}");
            }
        });
        return Ok(
            Response::from_json(&json!({ "status": "accepted", "executionId": stage.execution_id }))?.with_status(202)
        );
    }
    if behaviour.latency_ms() > 0 {
        Delay::from(Duration::from_millis(behaviour.latency_ms())).await;
    }
    Response::from_json(&result)
}

/// Reports a result to the orchestrator, signed with `WORKER_SECRET`.
async fn send_callback(env: &Env, trace_id: &str, service: &str, result: &Value) -> Result<(), String> {
    let secret = env.secret("WORKER_SECRET").map(|s| s.to_string()).map_err(|e| format!("WORKER_SECRET: {e}"))?;
    let body = serde_json::to_string(result).map_err(|e| e.to_string())?;
    let now = Millis::new(js_now());
    let headers = Headers::new();
    headers.set("Content-Type", "application/json").map_err(|e| e.to_string())?;
    headers.set(signature::TIMESTAMP_HEADER, &now.as_u64().to_string()).map_err(|e| e.to_string())?;
    headers
        .set(signature::SIGNATURE_HEADER, &signature::sign(&secret, now, body.as_bytes()))
        .map_err(|e| e.to_string())?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let orchestrator = env.service("ORCHESTRATOR").map_err(|e| e.to_string())?;
    let response = orchestrator
        .fetch(format!("https://orchestrator.internal/api/jobs/{trace_id}/results/{service}"), Some(init))
        .await
        .map_err(|e| e.to_string())?;
    match response.status_code() {
        200..=299 => Ok(()),
        status => Err(format!("orchestrator answered {status}")),
    }
}

fn js_now() -> u64 {
    worker::Date::now().as_millis()
}

/// `GET /{service}/api/progress/{executionId}`
pub fn progress(service: &str, execution_id: &str) -> worker::Result<Response> {
    let fraction = (outputs::fnv1a(&format!("{service}/{execution_id}")) % 90 + 5) as f64 / 100.0;
    Response::from_json(&json!({
        "executionId": execution_id,
        "service": service,
        "status": "running",
        "progress": fraction,
    }))
}
