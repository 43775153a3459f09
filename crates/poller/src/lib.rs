//! The cron-driven fan-in poller worker: the safety net for everything that does not
//! arrive. The cron fires every minute; a tick acts only when `POLLING_FREQUENCY_MINUTES`
//! have passed since `orchestration:last_run`, so the frequency changes at runtime.

mod tick;

use baton_edge::engine::Engine;
use baton_edge::{auth, health, http, Error};
use serde_json::json;
use worker::{event, Context, Env, Method, Request, Response, ScheduleContext, ScheduledEvent};

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    // A scheduled handler cannot return an error: it logs its own failures.
    if let Err(e) = tick::cron(&env).await {
        worker::console_error!("poller: tick failed: {e}");
    }
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let result = match (req.method(), req.path().as_str()) {
        (Method::Get, "/health") => health(&env).await,
        (Method::Post, "/admin/cron") => match auth::require_admin(&req, &env) {
            Ok(()) => tick::cron(&env).await.and_then(|outcome| http::json(200, &outcome)),
            Err(e) => Err(e),
        },
        (Method::Get, "/__test/meter") => baton_edge::meter::respond(&req, &env),
        (Method::Post, "/admin/tick") => match auth::require_admin(&req, &env) {
            Ok(()) => tick::run_now(&env).await.and_then(|outcome| http::json(200, &outcome)),
            Err(e) => Err(e),
        },
        (_, path) => Err(Error::NotFound { what: format!("route {path}") }),
    };
    result.or_else(|e| e.to_response())
}

/// `GET /health`: last tick and its age, effective config (and a rejected override),
/// active and overdue runs. 503 `degraded` when the last tick is older than 3× the frequency.
async fn health(env: &Env) -> baton_edge::Result<Response> {
    let probes = vec![health::probe_d1(env).await, health::probe_kv(env).await];
    let engine = Engine::new(env).await?;
    let now = engine.now();
    let last_run = tick::last_run(env).await.ok().flatten();
    let last_at = last_run.as_ref().and_then(tick::last_run_at);
    let age_ms = last_at.map(|at| now.since(at));
    let stale_after_ms = 3 * engine.config.polling_frequency_ms();
    let (active, overdue) = engine.count_active(now.as_u64() as i64).await?;
    let degraded = age_ms.is_none_or(|age| age > stale_after_ms) || probes.iter().any(|p| !p.ok);
    let body = json!({
        "status": if degraded { "degraded" } else { "ok" },
        "worker": "poller",
        "bindings": probes,
        "last_run": last_run,
        "last_run_age_ms": age_ms,
        "stale_after_ms": stale_after_ms,
        "config": {
            "POLLING_FREQUENCY_MINUTES": engine.config.polling_frequency_minutes,
            "JOB_TIMEOUT_MINUTES": engine.config.job_timeout_minutes,
            "ENABLE_PARTIAL_DATA": engine.config.enable_partial_data,
            "EVENT_DRIVEN_FANIN": engine.config.event_driven_fanin,
            "POLLER_BATCH_SIZE": engine.config.poller_batch_size,
        },
        "rejected_override": engine.rejected_override,
        "active_runs": active,
        "overdue_runs": overdue,
    });
    http::json(if degraded { 503 } else { 200 }, &body)
}
