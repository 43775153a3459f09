//! `GET /metrics` (admin token): the operator's metrics in the Prometheus text format,
//! computed from D1 on every scrape (see `baton_core::metrics`).

use baton_core::shard::Shard;
use baton_edge::engine::Engine;
use baton_edge::{auth, Result};
use worker::{Env, Request, Response};

pub async fn metrics(req: Request, env: &Env) -> Result<Response> {
    auth::require_admin(&req, env)?;
    // Every shard's aggregates, summed.
    let engine = Engine::for_shard(env, Shard::FIRST).await?;
    let mut snapshot = engine.metrics().await?;
    for shard in engine.shards().all().skip(1) {
        snapshot.absorb(engine.on_shard(shard)?.metrics().await?);
    }
    let mut response = Response::ok(baton_core::metrics::render(&snapshot))?;
    response.headers_mut().set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")?;
    Ok(response)
}
