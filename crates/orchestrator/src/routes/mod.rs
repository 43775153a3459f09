//! The route table.

mod admin;
mod bulk;
mod callbacks;
mod cancel;
mod executions;
mod health;
mod input;
mod listing;
mod metrics;
mod openapi;
mod pause;
mod plans;
mod retry;
mod runs;
mod schedules;
mod signal;
mod test_hooks;
mod ui;
mod webhooks;

use baton_edge::{Error, Result};
use worker::{Context, Env, Request, Response};

/// Dispatches a request by method and path, once its client is within its rate limit (429
/// otherwise); unknown paths are 404, known paths with any other method (a custom one too) are
/// 405 with `Allow`.
pub async fn route(req: Request, env: &Env, ctx: &Context) -> Result<Response> {
    baton_edge::rate_limit::check(&req, env).await?;
    let path = req.path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // The method as sent: workers-rs reads a method it has no variant for (`QUERY`, say) as GET,
    // which would serve it; an undeclared method must be 405 instead.
    let method = req.inner().method();
    let allowed: &[&'static str] = match segments.as_slice() {
        ["health"] | ["api", "orchestration", "health"] => match method.as_str() {
            "GET" => return health::health(&req, env).await,
            _ => &["GET"],
        },
        ["api", "orchestration", "run"] => match method.as_str() {
            "POST" => return runs::start(req, env, ctx).await,
            _ => &["POST"],
        },
        ["api", "orchestration", "plans"] => match method.as_str() {
            "GET" => return plans::list(req, env).await,
            "POST" => return plans::create(req, env).await,
            _ => &["GET", "POST"],
        },
        ["api", "orchestration", "plans", plan_id] => match method.as_str() {
            "GET" => return plans::get(req, env, plan_id).await,
            _ => &["GET"],
        },
        ["api", "orchestration", "runs"] => match method.as_str() {
            "GET" => return listing::list(req, env).await,
            _ => &["GET"],
        },
        // Before `runs/{run_id}`: these two names are never run ids.
        ["api", "orchestration", "runs", "cancel"] => match method.as_str() {
            "POST" => return bulk::act(req, env, baton_core::bulk::BulkAction::Cancel).await,
            _ => &["POST"],
        },
        ["api", "orchestration", "runs", "retry"] => match method.as_str() {
            "POST" => return bulk::act(req, env, baton_core::bulk::BulkAction::Retry).await,
            _ => &["POST"],
        },
        ["api", "orchestration", "runs", run_id] => match method.as_str() {
            "GET" => return runs::get(req, env, run_id).await,
            "DELETE" => return runs::delete(req, env, run_id).await,
            _ => &["GET", "DELETE"],
        },
        ["api", "orchestration", "runs", run_id, "events"] => match method.as_str() {
            "GET" => return runs::events(req, env, run_id).await,
            _ => &["GET"],
        },
        ["api", "orchestration", "runs", run_id, "retry"] => match method.as_str() {
            "POST" => return retry::retry(req, env, run_id).await,
            _ => &["POST"],
        },
        ["api", "orchestration", "runs", run_id, "rerun"] => match method.as_str() {
            "POST" => return retry::rerun(req, env, run_id).await,
            _ => &["POST"],
        },
        ["api", "orchestration", "runs", run_id, "cancel"] => match method.as_str() {
            "POST" => return cancel::cancel(req, env, run_id).await,
            _ => &["POST"],
        },
        ["api", "orchestration", "runs", run_id, "events", name] => match method.as_str() {
            "POST" => return signal::deliver(req, env, run_id, name).await,
            _ => &["POST"],
        },
        ["api", "orchestration", "runs", run_id, "pause"] => match method.as_str() {
            "POST" => return pause::pause(req, env, run_id).await,
            _ => &["POST"],
        },
        ["api", "orchestration", "runs", run_id, "resume"] => match method.as_str() {
            "POST" => return pause::resume(req, env, run_id).await,
            _ => &["POST"],
        },
        ["api", "orchestration", "schedules"] => match method.as_str() {
            "GET" => return schedules::list(req, env).await,
            "POST" => return schedules::create(req, env).await,
            _ => &["GET", "POST"],
        },
        ["api", "orchestration", "schedules", schedule_id] => match method.as_str() {
            "GET" => return schedules::get(req, env, schedule_id).await,
            "PATCH" => return schedules::update(req, env, schedule_id).await,
            "DELETE" => return schedules::delete(req, env, schedule_id).await,
            _ => &["GET", "PATCH", "DELETE"],
        },
        ["api", "orchestration", "webhooks"] => match method.as_str() {
            "GET" => return webhooks::list(req, env).await,
            "POST" => return webhooks::create(req, env).await,
            _ => &["GET", "POST"],
        },
        ["api", "orchestration", "webhooks", webhook_id] => match method.as_str() {
            "GET" => return webhooks::get(req, env, webhook_id).await,
            "DELETE" => return webhooks::delete(req, env, webhook_id).await,
            _ => &["GET", "DELETE"],
        },
        ["api", "orchestration", "webhooks", webhook_id, "deliveries"] => match method.as_str() {
            "GET" => return webhooks::deliveries(req, env, webhook_id).await,
            _ => &["GET"],
        },
        ["api", "orchestration", "webhooks", webhook_id, "deliveries", delivery_id, "replay"] => {
            match method.as_str() {
                "POST" => return webhooks::replay(req, env, webhook_id, delivery_id).await,
                _ => &["POST"],
            }
        }
        ["execute"] => match method.as_str() {
            "POST" => return executions::execute(req, env).await,
            _ => &["POST"],
        },
        ["executions", execution_id] => match method.as_str() {
            "GET" => return executions::get(req, env, execution_id).await,
            _ => &["GET"],
        },
        ["api", "jobs", trace_id, "results", service] => match method.as_str() {
            "POST" => return callbacks::result(req, env, trace_id, service).await,
            _ => &["POST"],
        },
        ["ui", rest @ ..] => match method.as_str() {
            "GET" => return ui::serve(rest),
            _ => &["GET"],
        },
        ["openapi.json"] => match method.as_str() {
            "GET" => return openapi::spec(),
            _ => &["GET"],
        },
        ["metrics"] => match method.as_str() {
            "GET" => return metrics::metrics(req, env).await,
            _ => &["GET"],
        },
        ["admin", "poller", action @ ("cron" | "tick")] => match method.as_str() {
            "POST" => return admin::poller(req, env, action).await,
            _ => &["POST"],
        },
        ["__test", "drive"] => match method.as_str() {
            "POST" => return test_hooks::drive(req, env).await,
            _ => &["POST"],
        },
        ["__test", "sql"] => match method.as_str() {
            "POST" => return test_hooks::sql(req, env).await,
            _ => &["POST"],
        },
        ["__test", "d1-size"] => match method.as_str() {
            "GET" => return test_hooks::d1_size(req, env).await,
            _ => &["GET"],
        },
        ["__test", "queues", name] => match method.as_str() {
            "POST" => return test_hooks::queue(req, env, name).await,
            _ => &["POST"],
        },
        ["__test", "meter"] => match method.as_str() {
            "GET" => return test_hooks::meter(req, env).await,
            _ => &["GET"],
        },
        ["__test", "kv", key] => match method.as_str() {
            "GET" | "PUT" | "DELETE" => return test_hooks::kv(req, env, key).await,
            _ => &["GET", "PUT", "DELETE"],
        },
        _ => return Err(Error::NotFound { what: format!("route {path}") }),
    };
    Err(Error::MethodNotAllowed { method, allowed: allowed.to_vec() })
}
