//! Stand-ins for the external services and the key-account service, so the whole suite
//! runs and is tested locally.
//!
//! One worker plays every service under a path prefix: `/{service}/api/handshake`,
//! `/{service}/api/process`, `/{service}/api/progress/{executionId}`,
//! `/{service}/api/result/{executionId}`, `/{service}/api/cancel/{executionId}` (each checks
//! Baton's signature); and the key-account
//! service at `/api/master-templates/{name}`. Outputs are deterministic, derived from a hash
//! of the domain. Behaviour is steerable per request through the run's parameters (see
//! [`behaviour::Behaviour`]).

mod behaviour;
mod outputs;
mod protocol;
mod templates;

use serde_json::json;
use worker::{event, Context, Env, Method, Request, Response};

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    if env.var("BATON_ENV").is_ok_and(|v| v.to_string() == "production") {
        return protocol::error(
            503,
            "not_for_production",
            "the sample services are stand-ins for tests and staging; bind your real services in production",
        );
    }
    let path = req.path();
    // Services are addressed by worker key; keys spell `serp_intelligence` what slugs spell
    // `serp-intelligence`, so both name the same service.
    let normalized: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .enumerate()
        .map(|(i, s)| if i == 0 { s.replace('_', "-") } else { s.to_string() })
        .collect();
    let segments: Vec<&str> = normalized.iter().map(String::as_str).collect();
    match (req.method(), segments.as_slice()) {
        (Method::Get, ["health"]) => Response::from_json(&json!({
            "status": "ok",
            "worker": "sample-services",
            "services": outputs::SERVICES,
            "templates": templates::names(),
        })),
        (Method::Get, ["api", "master-templates", name]) => templates::get(name),
        (Method::Post, [service, "api", "handshake"]) if outputs::is_known(service) => {
            protocol::handshake(req, &env, service).await
        }
        (Method::Post, [service, "api", "process"]) if outputs::is_known(service) => {
            protocol::process(req, env, ctx, service).await
        }
        (Method::Get, [service, "api", "progress", execution_id]) if outputs::is_known(service) => {
            protocol::progress(req, &env, service, execution_id).await
        }
        (Method::Get, [service, "api", "result", execution_id]) if outputs::is_known(service) => {
            protocol::result(req, &env, service, execution_id).await
        }
        (Method::Post, [service, "api", "cancel", execution_id]) if outputs::is_known(service) => {
            protocol::cancel(req, &env, service, execution_id).await
        }
        _ => protocol::error(404, "not_found", &format!("no route {} {path}", req.method())),
    }
}
