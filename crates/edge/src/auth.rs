//! Bearer-token authentication. Tokens come from secrets (`wrangler secret put`), locally
//! from `.dev.vars`: `API_TOKENS` = "token:client_id,token:client_id", `ADMIN_TOKEN`.

use baton_core::signature::constant_time_eq;
use worker::{Env, Request};

use crate::{http, Error, Result};

fn secret(env: &Env, name: &str) -> Option<String> {
    env.secret(name).ok().map(|s| s.to_string()).or_else(|| env.var(name).ok().map(|v| v.to_string()))
}

/// The client id the request's bearer token belongs to.
pub fn client_id(req: &Request, env: &Env) -> Result<String> {
    let token = http::bearer_token(req)
        .ok_or_else(|| Error::Unauthorized("missing bearer token: send `Authorization: Bearer <token>`".into()))?;
    let tokens = secret(env, "API_TOKENS").unwrap_or_default();
    let mut found = None;
    // Check every entry so the time taken does not depend on which one matched.
    for entry in tokens.split(',') {
        if let Some((candidate, client)) = entry.trim().split_once(':') {
            if constant_time_eq(candidate.trim().as_bytes(), token.as_bytes()) {
                found = Some(client.trim().to_string());
            }
        }
    }
    found.ok_or_else(|| Error::Unauthorized("invalid bearer token".into()))
}

/// Succeeds only for the operator token (`ADMIN_TOKEN`).
pub fn require_admin(req: &Request, env: &Env) -> Result<()> {
    let token = http::bearer_token(req)
        .ok_or_else(|| Error::Unauthorized("missing bearer token: send `Authorization: Bearer <admin token>`".into()))?;
    let admin = secret(env, "ADMIN_TOKEN").filter(|t| !t.is_empty());
    match admin {
        Some(admin) if constant_time_eq(admin.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(Error::Unauthorized("invalid admin token".into())),
    }
}
