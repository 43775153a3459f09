//! The cron-driven fan-in poller worker: the safety net for everything that does not
//! arrive. The cron fires every minute; a tick acts only when `POLLING_FREQUENCY_MINUTES`
//! have passed since `orchestration:last_run`, so the frequency changes at runtime.

mod tick;

use baton_core::shard::Shard;
use baton_core::time::Millis;
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
    baton_edge::meter::flush(&env).await;
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
    // What a tick did for each run is that run's: recorded before answering.
    baton_edge::meter::flush(&env).await;
    result.or_else(|e| e.to_response())
}

/// `GET /health`: last tick and its age, effective config (and a rejected override),
/// active and overdue runs. 503 `degraded` when a tick is overdue ([`tick_overdue`]) or a
/// retention setting is invalid (`retention_error` names the variable).
async fn health(env: &Env) -> baton_edge::Result<Response> {
    let mut probes = health::probe_d1(env).await;
    probes.push(health::probe_kv(env).await);
    let engine = Engine::for_shard(env, Shard::FIRST).await?;
    let now = engine.now();
    let last_run = tick::last_run(env).await.ok().flatten();
    let last_at = last_run.as_ref().and_then(tick::last_run_at);
    let age_ms = last_at.map(|at| now.since(at));
    let started_at = health::version_uploaded_at(env);
    let stale_after_ms = 3 * engine.config.polling_frequency_ms();
    let (mut active, mut overdue) = engine.count_active(now.as_u64() as i64).await?;
    for shard in engine.shards().all().skip(1) {
        let (a, o) = engine.on_shard(shard)?.count_active(now.as_u64() as i64).await?;
        active += a;
        overdue += o;
    }
    // An invalid retention setting stops the archive pass: the poller is degraded until it is fixed.
    let retention_error = baton_edge::settings::retention(env).err().map(|e| e.to_string());
    let degraded = tick_overdue(last_at, started_at, now, stale_after_ms)
        || probes.iter().any(|p| !p.ok)
        || retention_error.is_some();
    let body = json!({
        "status": if degraded { "degraded" } else { "ok" },
        "worker": "poller",
        "bindings": probes,
        "last_run": last_run,
        "last_run_age_ms": age_ms,
        "started_at": started_at.map(Millis::as_u64),
        "stale_after_ms": stale_after_ms,
        "config": {
            "POLLING_FREQUENCY_MINUTES": engine.config.polling_frequency_minutes,
            "JOB_TIMEOUT_MINUTES": engine.config.job_timeout_minutes,
            "ENABLE_PARTIAL_DATA": engine.config.enable_partial_data,
            "EVENT_DRIVEN_FANIN": engine.config.event_driven_fanin,
            "POLLER_BATCH_SIZE": engine.config.poller_batch_size,
        },
        "rejected_override": engine.rejected_override,
        "retention_error": retention_error,
        "active_runs": active,
        "overdue_runs": overdue,
    });
    http::json(if degraded { 503 } else { 200 }, &body)
}

/// Whether a tick is overdue: none for `stale_after_ms` since the last one or, before the
/// first, since this version of the poller started (a fresh stack is healthy until its first
/// tick is late). With neither known, it is.
fn tick_overdue(last_tick: Option<Millis>, started_at: Option<Millis>, now: Millis, stale_after_ms: u64) -> bool {
    match last_tick.or(started_at) {
        Some(since) => now.since(since) > stale_after_ms,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: u64 = 15 * 60_000;

    fn at(minutes: u64) -> Millis {
        Millis::new(minutes * 60_000)
    }

    #[test]
    fn a_fresh_poller_is_healthy_until_its_first_tick_is_late() {
        assert!(!tick_overdue(None, Some(at(100)), at(100), STALE));
        assert!(!tick_overdue(None, Some(at(100)), at(115), STALE));
        assert!(tick_overdue(None, Some(at(100)), at(116), STALE));
    }

    #[test]
    fn once_it_has_ticked_the_last_tick_counts() {
        assert!(!tick_overdue(Some(at(110)), Some(at(100)), at(120), STALE));
        // A tick recorded before this version started still counts: the ticks stopped.
        assert!(tick_overdue(Some(at(80)), Some(at(100)), at(101), STALE));
    }

    #[test]
    fn with_no_tick_and_no_start_time_a_tick_is_overdue() {
        assert!(tick_overdue(None, None, at(1), STALE));
    }
}
