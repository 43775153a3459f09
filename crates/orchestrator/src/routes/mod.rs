//! The route table.

mod admin;
mod callbacks;
mod cancel;
mod executions;
mod health;
mod input;
mod listing;
mod metrics;
mod openapi;
mod plans;
mod retry;
mod runs;
mod schedules;
mod test_hooks;
mod ui;
mod webhooks;

use baton_edge::{Error, Result};
use worker::{Context, Env, Method, Request, Response};

/// Dispatches a request by method and path, once its client is within its rate limit (429
/// otherwise); unknown paths are 404, known paths with another method are 405.
pub async fn route(req: Request, env: &Env, ctx: &Context) -> Result<Response> {
    baton_edge::rate_limit::check(&req, env).await?;
    let path = req.path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method();
    let allowed: &[Method] = match segments.as_slice() {
        ["health"] | ["api", "orchestration", "health"] => match method {
            Method::Get => return health::health(&req, env).await,
            _ => &[Method::Get],
        },
        ["api", "orchestration", "run"] => match method {
            Method::Post => return runs::start(req, env, ctx).await,
            _ => &[Method::Post],
        },
        ["api", "orchestration", "plans"] => match method {
            Method::Get => return plans::list(req, env).await,
            Method::Post => return plans::create(req, env).await,
            _ => &[Method::Get, Method::Post],
        },
        ["api", "orchestration", "plans", plan_id] => match method {
            Method::Get => return plans::get(req, env, plan_id).await,
            _ => &[Method::Get],
        },
        ["api", "orchestration", "runs"] => match method {
            Method::Get => return listing::list(req, env).await,
            _ => &[Method::Get],
        },
        ["api", "orchestration", "runs", run_id] => match method {
            Method::Get => return runs::get(req, env, run_id).await,
            _ => &[Method::Get],
        },
        ["api", "orchestration", "runs", run_id, "events"] => match method {
            Method::Get => return runs::events(req, env, run_id).await,
            _ => &[Method::Get],
        },
        ["api", "orchestration", "runs", run_id, "retry"] => match method {
            Method::Post => return retry::retry(req, env, run_id).await,
            _ => &[Method::Post],
        },
        ["api", "orchestration", "runs", run_id, "rerun"] => match method {
            Method::Post => return retry::rerun(req, env, run_id).await,
            _ => &[Method::Post],
        },
        ["api", "orchestration", "runs", run_id, "cancel"] => match method {
            Method::Post => return cancel::cancel(req, env, run_id).await,
            _ => &[Method::Post],
        },
        ["api", "orchestration", "schedules"] => match method {
            Method::Get => return schedules::list(req, env).await,
            Method::Post => return schedules::create(req, env).await,
            _ => &[Method::Get, Method::Post],
        },
        ["api", "orchestration", "schedules", schedule_id] => match method {
            Method::Get => return schedules::get(req, env, schedule_id).await,
            Method::Patch => return schedules::update(req, env, schedule_id).await,
            Method::Delete => return schedules::delete(req, env, schedule_id).await,
            _ => &[Method::Get, Method::Patch, Method::Delete],
        },
        ["api", "orchestration", "webhooks"] => match method {
            Method::Get => return webhooks::list(req, env).await,
            Method::Post => return webhooks::create(req, env).await,
            _ => &[Method::Get, Method::Post],
        },
        ["api", "orchestration", "webhooks", webhook_id] => match method {
            Method::Get => return webhooks::get(req, env, webhook_id).await,
            Method::Delete => return webhooks::delete(req, env, webhook_id).await,
            _ => &[Method::Get, Method::Delete],
        },
        ["api", "orchestration", "webhooks", webhook_id, "deliveries"] => match method {
            Method::Get => return webhooks::deliveries(req, env, webhook_id).await,
            _ => &[Method::Get],
        },
        ["api", "orchestration", "webhooks", webhook_id, "deliveries", delivery_id, "replay"] => match method {
            Method::Post => return webhooks::replay(req, env, webhook_id, delivery_id).await,
            _ => &[Method::Post],
        },
        ["execute"] => match method {
            Method::Post => return executions::execute(req, env).await,
            _ => &[Method::Post],
        },
        ["executions", execution_id] => match method {
            Method::Get => return executions::get(req, env, execution_id).await,
            _ => &[Method::Get],
        },
        ["api", "jobs", trace_id, "results", service] => match method {
            Method::Post => return callbacks::result(req, env, trace_id, service).await,
            _ => &[Method::Post],
        },
        ["ui", rest @ ..] => match method {
            Method::Get => return ui::serve(rest),
            _ => &[Method::Get],
        },
        ["openapi.json"] => match method {
            Method::Get => return openapi::spec(),
            _ => &[Method::Get],
        },
        ["metrics"] => match method {
            Method::Get => return metrics::metrics(req, env).await,
            _ => &[Method::Get],
        },
        ["admin", "poller", action @ ("cron" | "tick")] => match method {
            Method::Post => return admin::poller(req, env, action).await,
            _ => &[Method::Post],
        },
        ["__test", "drive"] => match method {
            Method::Post => return test_hooks::drive(req, env).await,
            _ => &[Method::Post],
        },
        ["__test", "sql"] => match method {
            Method::Post => return test_hooks::sql(req, env).await,
            _ => &[Method::Post],
        },
        ["__test", "queues", name] => match method {
            Method::Post => return test_hooks::queue(req, env, name).await,
            _ => &[Method::Post],
        },
        ["__test", "meter"] => match method {
            Method::Get => return test_hooks::meter(req, env).await,
            _ => &[Method::Get],
        },
        ["__test", "kv", key] => match method {
            Method::Get | Method::Put | Method::Delete => return test_hooks::kv(req, env, key).await,
            _ => &[Method::Get, Method::Put, Method::Delete],
        },
        _ => return Err(Error::NotFound { what: format!("route {path}") }),
    };
    Err(Error::MethodNotAllowed { method: method.to_string(), allowed: allowed.iter().map(method_name).collect() })
}

fn method_name(m: &Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Patch => "PATCH",
        Method::Head => "HEAD",
        Method::Options => "OPTIONS",
        _ => "OTHER",
    }
}
