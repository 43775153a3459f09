//! The handshake protocol, as an external service implements it:
//! 1. `POST /{service}/api/handshake` → `{executionId, workerId, accepted, estimatedCompletionMs,
//!    resourceRequirements, capabilities}`
//! 2. `POST /{service}/api/process` → 200 with the result, or 202 and later a signed callback
//!    to the orchestrator's `POST /api/jobs/:trace_id/results/:service`.
//!
//! Both requests carry the same fields (`executionId`, `stageId`, `attempt`, `action`,
//! `inputData` or `dataReference`), so the service keeps no state between them — except for
//! work that reports through progress answers (`GET /{service}/api/progress/{executionId}`,
//! then `GET /{service}/api/result/{executionId}`), kept in KV. `POST
//! /{service}/api/cancel/{executionId}` records that Baton cancelled the work.
//!
//! Every request must carry Baton's signature (`X-Baton-Timestamp`, `X-Baton-Signature`:
//! HMAC-SHA256 with `WORKER_SECRET` over `"{timestamp}." + body`); one that does not is
//! refused with 401, as a real service would.

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

/// The keys of `worker` (as the path names it): its entry in `SERVICE_KEYS`, else
/// `WORKER_SECRET`.
pub fn keys_for(env: &Env, worker: &str) -> Vec<String> {
    let text = env
        .secret("SERVICE_KEYS")
        .map(|s| s.to_string())
        .ok()
        .or_else(|| env.var("SERVICE_KEYS").ok().map(|v| v.to_string()));
    // The key of exactly this worker key, as Baton looks it up: `technical-seo` and
    // `technical_seo` are two worker keys (two paths), each with its own key or none.
    if let Some(Ok(mut keys)) = text.map(|t| signature::parse_service_keys(&t)) {
        if let Some(found) = keys.remove(worker) {
            return found;
        }
    }
    env.secret("WORKER_SECRET").map(|s| vec![s.to_string()]).unwrap_or_default()
}

/// The worker key a request's path names (its first segment, as sent).
fn worker_of(req: &Request) -> String {
    req.path().trim_start_matches('/').split('/').next().unwrap_or_default().to_string()
}

/// The request's body, once its signature (purpose `call`, with this service's key) checks out
/// (`Err`: the answer to give).
pub async fn read_signed(mut req: Request, env: &Env) -> Result<String, worker::Result<Response>> {
    let body = req.text().await.map_err(|e| error(400, "invalid_request", &e.to_string()))?;
    let keys = keys_for(env, &worker_of(&req));
    let header = |name: &str| req.headers().get(name).ok().flatten();
    let (method, path) = (req.method().to_string(), req.path());
    let received = (method.as_str(), path.as_str(), body.as_bytes());
    signature::verify_received(&keys, signature::Purpose::Call, received, header, Millis::new(js_now()))
        .map_err(|e| error(401, "invalid_signature", &format!("not signed by Baton: {e}")))?;
    Ok(body)
}

async fn read_stage(req: Request, env: &Env) -> Result<StageRequest, worker::Result<Response>> {
    let body = read_signed(req, env).await?;
    serde_json::from_str(&body).map_err(|e| error(400, "invalid_request", &format!("invalid request body: {e}")))
}

/// The input, inline or fetched from KV by reference.
async fn resolve_input(env: &Env, stage: &StageRequest) -> Result<Value, String> {
    if let Some(input) = &stage.input_data {
        return Ok(input.clone());
    }
    let reference = stage.data_reference.as_ref().ok_or("neither inputData nor dataReference given")?;
    // Only what Baton stored as a step's input may be read.
    if !reference.key.starts_with(&format!("input:{}:", stage.execution_id)) {
        return Err(format!("dataReference {} is not an input of execution {}", reference.key, stage.execution_id));
    }
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
    let stage = match read_stage(req, env).await {
        Ok(stage) => stage,
        Err(answer) => return answer,
    };
    let input = match resolve_input(env, &stage).await {
        Ok(input) => input,
        Err(message) => return error(400, "invalid_input", &message),
    };
    let behaviour = match Behaviour::for_service(&input["parameters"], service) {
        Ok(behaviour) => behaviour,
        Err(message) => return error(400, "invalid_sample_behaviour", &message),
    };
    let accepted = stage.attempt > behaviour.reject;
    Response::from_json(&json!({
        "executionId": stage.execution_id,
        "stageId": stage.stage_id,
        "workerId": format!("sample-{service}"),
        "accepted": accepted,
        "reason": if accepted { Value::Null } else { json!("at capacity, try again later") },
        "estimatedCompletionMs": behaviour.latency_ms(),
        "resourceRequirements": { "estimatedTokens": outputs::usage(service, &input)["tokens"] },
        "capabilities": { "async": true, "progress": !behaviour.no_progress, "dataReference": true },
    }))
}

/// `POST /{service}/api/process`
pub async fn process(req: Request, env: Env, ctx: Context, service: &str) -> worker::Result<Response> {
    let worker = worker_of(&req);
    // The caller's trace context, carried back on the result callback.
    let traceparent = req.headers().get(baton_core::trace::TRACEPARENT).ok().flatten();
    let stage = match read_stage(req, &env).await {
        Ok(stage) => stage,
        Err(answer) => return answer,
    };
    let mut input = match resolve_input(&env, &stage).await {
        Ok(input) => input,
        Err(message) => return error(400, "invalid_input", &message),
    };
    if let Some(action) = &stage.action {
        input["template_ref"] = json!(action);
    }
    let behaviour = match Behaviour::for_service(&input["parameters"], service) {
        Ok(behaviour) => behaviour,
        Err(message) => return error(400, "invalid_sample_behaviour", &message),
    };
    if let Some(message) = behaviour.permanent_error() {
        return error(400, "worker_config_invalid", &message);
    }
    if input["index"].as_u64().is_some_and(|index| behaviour.fail_items.contains(&index)) {
        return error(400, "item_refused", &format!("item {} refused", input["index"]));
    }
    if stage.attempt <= behaviour.fail_permanent_until {
        return error(400, "worker_config_invalid", &format!("permanent failure on attempt {}", stage.attempt));
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
    // An item of a map step says which element it worked on.
    if let (Some(item), Value::Object(fields)) = (input.get("item"), &mut output) {
        fields.insert("item".into(), item.clone());
        fields.insert("index".into(), input["index"].clone());
    }
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
    if let Some(hold) = behaviour.hold_open_ms() {
        Delay::from(Duration::from_millis(hold)).await;
        return Response::from_json(&result);
    }
    if behaviour.progress_only || behaviour.heartbeat_then_silent_ms.is_some() {
        let job = json!({
            "started_at": js_now(),
            "latency_ms": behaviour.latency_ms(),
            "silent_after_ms": behaviour.heartbeat_then_silent_ms,
            "by_fetch": behaviour.result_by_fetch,
            "result": result,
        });
        if let Err(e) = put_kv(&env, &job_key(&stage.execution_id, service), &job).await {
            return error(503, "temporarily_unavailable", &e);
        }
        return Ok(
            Response::from_json(&json!({ "status": "accepted", "executionId": stage.execution_id }))?.with_status(202)
        );
    }
    if behaviour.asynchronous {
        // Report for the step that called (its slug ends the stage id), not the worker name.
        let service = stage.stage_id.rsplit(':').next().filter(|s| !s.is_empty()).unwrap_or(service).to_string();
        let trace_id = stage.execution_id.clone();
        let latency = behaviour.latency_ms();
        let attempt = stage.attempt;
        ctx.wait_until(async move {
            Delay::from(Duration::from_millis(latency)).await;
            let sent = send_callback(&env, &worker, (&trace_id, &service, attempt), &result, traceparent.as_deref());
            if let Err(e) = sent.await {
                worker::console_error!("sample {service}: callback for {trace_id} failed: {e}");
            }
        });
        return Ok(
            Response::from_json(&json!({ "status": "accepted", "executionId": stage.execution_id }))?.with_status(202)
        );
    }
    let began = js_now();
    if behaviour.latency_ms() > 0 {
        Delay::from(Duration::from_millis(behaviour.latency_ms())).await;
    }
    if behaviour.record_calls {
        let key = format!("sample:call:{}:{service}:{}", stage.execution_id, stage.attempt);
        let call =
            json!({ "start": began, "end": js_now(), "traceparent": traceparent, "upstream": input["upstream"] });
        if let Err(e) = put_kv(&env, &key, &call).await {
            return error(503, "temporarily_unavailable", &e);
        }
    }
    Response::from_json(&result)
}

/// Reports a result to the orchestrator, signed (purpose `result`) with this service's key,
/// with the trace context the work was asked for with (`traceparent`), if any.
async fn send_callback(
    env: &Env,
    worker: &str,
    (trace_id, service, attempt): (&str, &str, u32),
    result: &Value,
    traceparent: Option<&str>,
) -> Result<(), String> {
    let key = keys_for(env, worker).into_iter().next().ok_or("no key to sign with (SERVICE_KEYS, WORKER_SECRET)")?;
    let body = serde_json::to_string(result).map_err(|e| e.to_string())?;
    let path = format!("/api/jobs/{trace_id}/results/{service}");
    let request = signature::Signed {
        purpose: signature::Purpose::Result,
        method: "POST",
        path: &path,
        attempt: Some(attempt),
        body: body.as_bytes(),
        trace: traceparent.map(|tp| (tp, None)),
    };
    let headers = Headers::new();
    headers.set("Content-Type", "application/json").map_err(|e| e.to_string())?;
    for (name, value) in signature::headers(&key, &request, Millis::new(js_now())) {
        headers.set(name, &value).map_err(|e| e.to_string())?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let orchestrator = env.service("ORCHESTRATOR").map_err(|e| e.to_string())?;
    let response = orchestrator
        .fetch(format!("https://orchestrator.internal{path}"), Some(init))
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

fn job_key(execution_id: &str, service: &str) -> String {
    format!("sample:job:{execution_id}:{service}")
}

/// The KV key where a cancel of `service`'s work on `execution_id` is recorded.
pub fn cancel_key(execution_id: &str, service: &str) -> String {
    format!("sample:cancelled:{execution_id}:{service}")
}

async fn put_kv(env: &Env, key: &str, value: &Value) -> Result<(), String> {
    let kv = env.kv("KV").map_err(|e| e.to_string())?;
    kv.put(key, value.to_string())
        .map_err(|e| e.to_string())?
        .expiration_ttl(3600)
        .execute()
        .await
        .map_err(|e| e.to_string())
}

async fn get_kv(env: &Env, key: &str) -> Option<Value> {
    let text = env.kv("KV").ok()?.get(key).text().await.ok()??;
    serde_json::from_str(&text).ok()
}

/// `GET /{service}/api/progress/{executionId}`: for work that reports through progress, how
/// far it is (or its result once done); otherwise a running fraction derived from the id.
pub async fn progress(req: Request, env: &Env, service: &str, execution_id: &str) -> worker::Result<Response> {
    if let Err(answer) = read_signed(req, env).await {
        return answer;
    }
    let Some(job) = get_kv(env, &job_key(execution_id, service)).await else {
        let fraction = (outputs::fnv1a(&format!("{service}/{execution_id}")) % 90 + 5) as f64 / 100.0;
        return Response::from_json(&json!({
            "executionId": execution_id,
            "service": service,
            "status": "running",
            "progress": fraction,
        }));
    };
    let elapsed = js_now().saturating_sub(job["started_at"].as_u64().unwrap_or(0));
    if let Some(silent_after) = job["silent_after_ms"].as_u64() {
        if elapsed >= silent_after {
            // Gone quiet: hold the question without answering.
            Delay::from(Duration::from_secs(60)).await;
        }
        return Response::from_json(&json!({
            "executionId": execution_id, "status": "running", "progress": 0.5, "heartbeat": true,
        }));
    }
    let latency = job["latency_ms"].as_u64().unwrap_or(0);
    if elapsed < latency {
        let fraction = (elapsed as f64 / latency.max(1) as f64 * 100.0).round() / 100.0;
        return Response::from_json(&json!({ "executionId": execution_id, "status": "running", "progress": fraction }));
    }
    let mut result = job["result"].clone();
    if job["by_fetch"] == true {
        if let Value::Object(fields) = &mut result {
            fields.remove("output");
        }
    }
    Response::from_json(&result)
}

/// `GET /{service}/api/result/{executionId}`: the output of work that reported through progress.
pub async fn result(req: Request, env: &Env, service: &str, execution_id: &str) -> worker::Result<Response> {
    if let Err(answer) = read_signed(req, env).await {
        return answer;
    }
    match get_kv(env, &job_key(execution_id, service)).await {
        Some(job) => Response::from_json(&json!({ "executionId": execution_id, "output": job["result"]["output"] })),
        None => error(404, "not_found", &format!("no work {execution_id} at {service}")),
    }
}

/// `POST /{service}/api/cancel/{executionId}`: records that Baton cancelled the work.
pub async fn cancel(req: Request, env: &Env, service: &str, execution_id: &str) -> worker::Result<Response> {
    let body = match read_signed(req, env).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let record = json!({ "cancelled_at": js_now(), "request": request });
    if let Err(e) = put_kv(env, &cancel_key(execution_id, service), &record).await {
        return error(503, "temporarily_unavailable", &e);
    }
    Response::from_json(&json!({ "executionId": execution_id, "status": "cancelled" }))
}
