//! `GET /metrics` (admin token): the operator's metrics in the Prometheus text format,
//! computed from D1 on every scrape (see `baton_core::metrics`).

use baton_edge::engine::Engine;
use baton_edge::{auth, Result};
use worker::{Env, Request, Response};

pub async fn metrics(req: Request, env: &Env) -> Result<Response> {
    auth::require_admin(&req, env)?;
    let engine = Engine::new(env).await?;
    let snapshot = engine.metrics().await?;
    let mut response = Response::ok(baton_core::metrics::render(&snapshot))?;
    response.headers_mut().set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")?;
    Ok(response)
}
