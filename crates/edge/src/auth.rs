//! Authentication. Bearer tokens come from secrets (`wrangler secret put`), locally from
//! `.dev.vars`: `API_TOKENS` = "token:client_id,token:client_id", `ADMIN_TOKEN`. Requests
//! from services are signed with their own key (`SERVICE_KEYS`, else `WORKER_SECRET`), those
//! between Baton's workers with `INTERNAL_KEY` ([`baton_core::signature`]). A client may act
//! for others only as `API_DELEGATIONS` allows ([`Caller`]).

use baton_core::delegation::{Acting, DelegationError, Delegations};
use baton_core::signature::{self, constant_time_eq};
use baton_core::time::Millis;
use worker::{Env, Request};

use crate::settings;
use crate::{clock, http, Error, Result};

/// The client id the request's bearer token belongs to.
pub fn client_id(req: &Request, env: &Env) -> Result<String> {
    let token = http::bearer_token(req)
        .ok_or_else(|| Error::Unauthorized("missing bearer token: send `Authorization: Bearer <token>`".into()))?;
    let tokens = settings::api_tokens(env);
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

/// An authenticated client, and whom it may act for.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client its bearer token belongs to.
    pub client_id: String,
    delegations: Result<Delegations, DelegationError>,
}

/// The caller of a request with a client token: its client and its delegations.
pub fn caller(req: &Request, env: &Env) -> Result<Caller> {
    Ok(Caller { client_id: client_id(req, env)?, delegations: settings::api_delegations(env) })
}

impl Caller {
    /// Whether the caller may see and act on what `owner` owns: its own, or a client it is
    /// delegated to act for.
    pub fn may_act_for(&self, owner: &str) -> bool {
        owner == self.client_id || self.delegations.as_ref().is_ok_and(|d| d.may_act_for(&self.client_id, owner))
    }

    /// Whom a request acts for: the `client_id` it names (`field`), when the caller may act
    /// for it (403 otherwise); the caller itself when it names none.
    pub fn acting(&self, claimed: Option<&str>, field: &'static str) -> Result<Acting> {
        // A malformed API_DELEGATIONS stops only the requests that need it.
        let none = Delegations::default();
        let delegations = match (&self.delegations, claimed) {
            (Ok(delegations), _) => delegations,
            (Err(_), None) => &none,
            (Err(_), Some(claimed)) if claimed == self.client_id => &none,
            (Err(e), Some(_)) => {
                return Err(Error::Binding { name: settings::API_DELEGATIONS.into(), cause: e.to_string() });
            }
        };
        delegations.acting(&self.client_id, claimed).ok_or_else(|| Error::Forbidden {
            message: format!(
                "{field} {:?} is not the client of this token, and this token may not act for it; omit it or send your own",
                claimed.unwrap_or_default()
            ),
            field,
        })
    }
}

/// Succeeds only for the operator token (`ADMIN_TOKEN`).
pub fn require_admin(req: &Request, env: &Env) -> Result<()> {
    let token = http::bearer_token(req).ok_or_else(|| {
        Error::Unauthorized("missing bearer token: send `Authorization: Bearer <admin token>`".into())
    })?;
    match settings::admin_token(env) {
        Some(admin) if constant_time_eq(admin.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(Error::Unauthorized("invalid admin token".into())),
    }
}

/// Checks a signed request ([`baton_core::signature`]) made for `purpose` with any of `keys`;
/// returns the attempt it is about (its `X-Baton-Attempt`).
pub fn verify_request(
    req: &Request,
    keys: &[String],
    purpose: signature::Purpose,
    body: &[u8],
    what: &str,
) -> Result<Option<u32>> {
    let header = |name: &str| req.headers().get(name).ok().flatten();
    let (method, path) = (req.method().to_string(), req.path());
    signature::verify_received(keys, purpose, (&method, &path, body), header, Millis::new(clock::now_ms()))
        .map_err(|e| Error::Unauthorized(format!("{what} refused: {e}")))
}

/// Checks a request between Baton's own workers (signed with the internal key).
pub fn verify_internal(req: &Request, env: &Env, body: &[u8], what: &str) -> Result<()> {
    let keys = settings::internal_keys(env);
    verify_request(req, &keys, signature::Purpose::HandOver, body, what).map(|_| ())
}

/// The headers of a request between Baton's own workers, as [`verify_internal`] checks them.
pub fn internal_headers(env: &Env, method: &str, path: &str, body: &[u8]) -> Result<Vec<(&'static str, String)>> {
    let keys = settings::internal_keys(env);
    let key = keys
        .first()
        .ok_or_else(|| Error::Binding { name: settings::INTERNAL_KEY.into(), cause: "secret not set".into() })?;
    let request =
        signature::Signed { purpose: signature::Purpose::HandOver, method, path, attempt: None, body, trace: None };
    Ok(signature::headers(key, &request, Millis::new(clock::now_ms())))
}
