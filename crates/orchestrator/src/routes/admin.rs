//! Operator routes. `POST /admin/poller/{cron,tick}` forwards to the poller worker over its
//! service binding (locally the poller has no port of its own, and cron triggers do not fire).

use baton_edge::{auth, bindings, http, Error, Result};
use worker::{Env, Headers, Method, Request, RequestInit, Response};

pub async fn poller(req: Request, env: &Env, action: &str) -> Result<Response> {
    auth::require_admin(&req, env)?;
    let poller = baton_edge::services::worker(env, bindings::POLLER)?;
    let headers = Headers::new();
    if let Some(token) = http::bearer_token(&req) {
        headers.set("Authorization", &format!("Bearer {token}"))?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers);
    let response = poller
        .fetch(format!("https://internal/admin/{action}"), Some(init))
        .await
        .map_err(|e| Error::Upstream { service: "poller".into(), message: e.to_string() })?;
    Ok(response)
}
