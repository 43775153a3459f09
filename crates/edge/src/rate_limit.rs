//! Per-client rate limits on the API (`RATE_LIMITS`, [`baton_core::rate_limit`]).
//!
//! A limit is counted by the Workers rate-limiting binding its entry names (`binding`) when
//! this worker has it (deployed), else in D1 fixed windows (`rate_limit_windows`): one
//! statement batch per request of a limited client, and none at all while no client is
//! limited. Requests are counted per client of the token (a delegate acting for others
//! counts as itself). Requests without a valid client token are left to the handler (401).

use baton_core::rate_limit::{self, Limit, Verdict};
use baton_core::time::Millis;
use worker::{Env, Request};

use crate::d1::{rate_limits, Db};
use crate::{auth, clock, http, settings, Error, Result};

/// Counts the request against its client's limit: `Err(RateLimited)` (429 with `Retry-After`)
/// when it is over. A malformed `RATE_LIMITS` limits no one (logged): the API stays up.
pub async fn check(req: &Request, env: &Env) -> Result<()> {
    let limits = match settings::rate_limits(env) {
        Ok(limits) if limits.is_empty() => return Ok(()),
        Ok(limits) => limits,
        Err(e) => {
            worker::console_error!("{e}; no rate limits are applied");
            return Ok(());
        }
    };
    if http::bearer_token(req).is_none() {
        return Ok(());
    }
    let Ok(client) = auth::client_id(req, env) else { return Ok(()) };
    let Some(limit) = limits.for_client(&client) else { return Ok(()) };
    match counted(env, &client, limit).await? {
        Verdict::Allowed => Ok(()),
        Verdict::Refused { retry_after_s } => {
            Err(Error::RateLimited { client, requests: limit.requests, period_s: limit.period_s, retry_after_s })
        }
    }
}

/// The verdict of whichever counter keeps `limit`.
async fn counted(env: &Env, client: &str, limit: &Limit) -> Result<Verdict> {
    if let Some(binding) = limit.binding.as_deref() {
        if let Ok(limiter) = env.rate_limiter(binding) {
            let outcome = limiter.limit(client.to_string()).await?;
            return Ok(if outcome.success { Verdict::Allowed } else { rate_limit::refused_by_binding(limit) });
        }
    }
    let now = Millis::new(clock::now_ms());
    let window = rate_limit::window_start(limit, now);
    let count = rate_limits::count_request(&Db::of_client(env, client)?, client, window.as_u64() as i64).await?;
    Ok(rate_limit::verdict(limit, window, count, now))
}
