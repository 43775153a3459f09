//! The queue consumer worker: step dispatch and analysis.

use baton_edge::{bindings, health, http, Error};
use serde_json::json;
use worker::{event, Context, Env, MessageBatch, MessageExt, Method, Request, Response};

#[event(queue)]
async fn queue(batch: MessageBatch<serde_json::Value>, _env: Env, _ctx: Context) -> worker::Result<()> {
    for message in batch.raw_iter() {
        message.ack();
    }
    Ok(())
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let result = match (req.method(), req.path().as_str()) {
        (Method::Get, "/health") => health(&env).await,
        (_, path) => Err(Error::NotFound { what: format!("route {path}") }),
    };
    result.or_else(|e| e.to_response().map_err(Into::into))
}

async fn health(env: &Env) -> baton_edge::Result<Response> {
    let probes = vec![
        health::probe_d1(env).await,
        health::probe_kv(env).await,
        health::probe_queue(env, bindings::TASK_QUEUE),
        health::probe_queue(env, bindings::LLM_ANALYSIS_QUEUE),
        health::probe_service(env, bindings::SERVICES),
    ];
    let ok = probes.iter().all(|p| p.ok);
    http::json(if ok { 200 } else { 503 }, &json!({ "status": if ok { "ok" } else { "degraded" }, "worker": "consumer", "bindings": probes }))
}
