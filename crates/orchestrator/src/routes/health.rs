//! `GET /health`: this worker's bindings and the health of the workers behind its service
//! bindings. Public, it says only `{status}`; the detail (bindings, workers, configuration
//! problems) needs the admin token.

use baton_edge::{auth, bindings, health, http, Result};
use serde_json::{json, Value};
use worker::{Env, Request, Response};

pub async fn health(req: &Request, env: &Env) -> Result<Response> {
    let mut probes = health::probe_d1(env).await;
    probes.extend([
        health::probe_kv(env).await,
        health::probe_queue(env, bindings::TASK_QUEUE),
        health::probe_queue(env, bindings::LLM_ANALYSIS_QUEUE),
        health::probe_service(env, bindings::POLLER),
        health::probe_service(env, bindings::CONSUMER),
        health::probe_service(env, bindings::KAM),
    ]);
    let mut workers = serde_json::Map::new();
    for (name, binding) in
        [("poller", bindings::POLLER), ("consumer", bindings::CONSUMER), ("sample-services", bindings::KAM)]
    {
        workers.insert(name.to_string(), fetch_health(env, binding).await);
    }
    // The poller may report "degraded" (no recent tick) without the orchestrator being unhealthy.
    let healthy = probes.iter().all(|p| p.ok)
        && workers
            .values()
            .all(|w| w.get("worker").is_some() && w.get("status").and_then(Value::as_str) != Some("unreachable"));
    let status = if healthy { "ok" } else { "degraded" };
    let code = if healthy { 200 } else { 503 };
    if auth::require_admin(req, env).is_err() {
        return http::json(code, &json!({ "status": status }));
    }
    let body = json!({ "status": status, "worker": "orchestrator", "bindings": probes, "workers": workers });
    http::json(code, &body)
}

async fn fetch_health(env: &Env, binding: &'static str) -> Value {
    let outcome = async {
        let fetcher =
            baton_edge::services::worker(env, binding).map_err(|e| worker::Error::RustError(e.to_string()))?;
        let mut response = fetcher.fetch("https://internal/health", None).await?;
        let status = response.status_code();
        let mut body = response.json::<Value>().await?;
        body["http_status"] = json!(status);
        Ok::<Value, worker::Error>(body)
    }
    .await;
    outcome.unwrap_or_else(|e| json!({ "status": "unreachable", "error": e.to_string() }))
}
