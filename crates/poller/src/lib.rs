//! The cron-driven fan-in poller worker: the safety net for results that never arrive.

use baton_edge::{auth, bindings, health, http, kv::Kv, Error};
use serde_json::json;
use worker::{event, Context, Env, Method, Request, Response, ScheduleContext, ScheduledEvent};

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    // A scheduled handler cannot return an error: it logs its own failures.
    if let Err(e) = cron(&env).await {
        worker::console_error!("poller tick failed: {e}");
    }
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let result = match (req.method(), req.path().as_str()) {
        (Method::Get, "/health") => health(&env).await,
        (Method::Post, "/admin/cron") => match auth::require_admin(&req, &env) {
            Ok(()) => cron(&env).await.and_then(|outcome| http::json(200, &outcome)),
            Err(e) => Err(e),
        },
        (Method::Post, "/admin/tick") => match auth::require_admin(&req, &env) {
            Ok(()) => tick(&env).await.and_then(|outcome| http::json(200, &outcome)),
            Err(e) => Err(e),
        },
        (_, path) => Err(Error::NotFound { what: format!("route {path}") }),
    };
    result.or_else(|e| e.to_response())
}

/// The cron trigger's entry point.
async fn cron(env: &Env) -> baton_edge::Result<serde_json::Value> {
    tick(env).await
}

/// One tick: records its outcome in `orchestration:last_run`.
async fn tick(env: &Env) -> baton_edge::Result<serde_json::Value> {
    let started = baton_edge::clock::now_ms();
    let last = json!({ "at": started, "duration_ms": baton_edge::clock::now_ms() - started, "counts": {} });
    Kv::from_env(env)?.put_json(bindings::kv_keys::LAST_RUN, &last).await?;
    Ok(json!({ "ran": true, "last_run": last }))
}

async fn health(env: &Env) -> baton_edge::Result<Response> {
    let probes = vec![health::probe_d1(env).await, health::probe_kv(env).await];
    let ok = probes.iter().all(|p| p.ok);
    http::json(if ok { 200 } else { 503 }, &json!({ "status": if ok { "ok" } else { "degraded" }, "worker": "poller", "bindings": probes }))
}
