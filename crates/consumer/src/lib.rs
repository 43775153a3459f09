//! The queue consumer worker. One module per queue:
//! - [`tasks`]: `baton-tasks` — dispatch a step attempt to its service (handshake protocol).
//! - [`dead_letters`]: `baton-tasks-dlq` and `llm-analysis-dlq` — finish what exhausted its
//!   retries; what cannot be finished either is recorded in D1 (`dead_letters`), never dropped.
//! - [`analysis`]: `llm-analysis` — the diagnosis and the run's finalisation.
//! - [`webhooks`]: `baton-webhooks` — one attempt of a webhook delivery; `baton-webhooks-dlq` —
//!   a delivery whose attempts are spent is recorded as failed.
//! - [`drive`]: `POST /internal/drive` — an orchestrator that cannot reach one of a plan's
//!   services hands over the first wave of a run a client waits for, to run here at once
//!   instead of through the queue.
//!
//! Every message is decoded on its own (a malformed one is logged and acknowledged, never
//! failing the batch), and acknowledged, retried with a delay, or recorded per message.

mod analysis;
mod dead_letters;
mod drive;
mod tasks;
mod webhooks;

use baton_core::shard::Shard;
use baton_edge::bindings::queue_names;
use baton_edge::concurrency::join_all;
use baton_edge::engine::Engine;
use baton_edge::{bindings, health, http, Error};
use serde_json::{json, Value};
use worker::{event, Context, Env, MessageBatch, MessageExt, Method, RawMessage, Request, Response};

/// A raw message's body as JSON (queue bodies are JSON-serialisable values).
pub(crate) fn body_json(message: &RawMessage) -> Result<Value, String> {
    let text = worker::js_sys::JSON::stringify(&message.body())
        .map_err(|_| "message body is not JSON-serialisable".to_string())?;
    let text: String = text.into();
    serde_json::from_str(&text).map_err(|e| format!("message body is not JSON: {e}"))
}

#[event(queue)]
async fn queue(batch: MessageBatch<Value>, env: Env, _ctx: Context) -> worker::Result<()> {
    let queue = batch.queue();
    // Shard 0's engine; each message goes to the shard its run or delivery id names.
    let engine = match Engine::for_shard(&env, Shard::FIRST).await {
        Ok(engine) => engine,
        Err(e) => {
            // Nothing was done: let every message come back later.
            worker::console_error!("consumer: cannot start ({e}); retrying the batch of {queue}");
            batch.retry_all();
            return Ok(());
        }
    };
    let messages: Vec<RawMessage> = batch.raw_iter().collect();
    let Some(queue) = queue_names::kind(&queue) else {
        worker::console_error!("consumer: {} messages from unexpected queue {queue}; acknowledged", messages.len());
        batch.ack_all();
        return Ok(());
    };
    if queue == queue_names::TASKS {
        // Grouped by run: one read and one claim transaction per run.
        tasks::handle_batch(&engine, &messages).await;
    } else {
        // Locally one batch per queue is in flight at a time, and in production a batch's
        // messages are independent: handle them concurrently (each decides and acks on its
        // own, and what it does is its run's).
        let handlers: Vec<_> =
            messages.iter().map(|message| baton_edge::meter::for_request(handle(&engine, queue, message))).collect();
        join_all(handlers).await;
    }
    baton_edge::meter::flush(&env).await;
    Ok(())
}

async fn handle(engine: &Engine<'_>, queue: &str, message: &RawMessage) {
    match queue {
        queue_names::ANALYSIS => analysis::handle(engine, message).await,
        queue_names::TASKS_DLQ => dead_letters::task(engine, message).await,
        queue_names::ANALYSIS_DLQ => dead_letters::analysis(engine, message).await,
        queue_names::WEBHOOKS => webhooks::handle(engine, message).await,
        queue_names::WEBHOOKS_DLQ => webhooks::dead_letter(engine, message).await,
        other => {
            worker::console_error!("consumer: message from unexpected queue {other}; acknowledged");
            message.ack();
        }
    }
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let result = match (req.method(), req.path().as_str()) {
        (Method::Get, "/health") => health(&env).await,
        (Method::Post, drive::PATH) => drive::handle(req, env, &ctx).await,
        (Method::Get, "/__test/meter") => baton_edge::meter::respond(&req, &env),
        (_, path) => Err(Error::NotFound { what: format!("route {path}") }),
    };
    result.or_else(|e| e.to_response())
}

async fn health(env: &Env) -> baton_edge::Result<Response> {
    let mut probes = health::probe_d1(env).await;
    probes.extend([
        health::probe_kv(env).await,
        health::probe_queue(env, bindings::TASK_QUEUE),
        health::probe_queue(env, bindings::LLM_ANALYSIS_QUEUE),
        health::probe_service(env, bindings::SERVICES),
    ]);
    let ok = probes.iter().all(|p| p.ok);
    http::json(
        if ok { 200 } else { 503 },
        &json!({ "status": if ok { "ok" } else { "degraded" }, "worker": "consumer", "bindings": probes }),
    )
}
