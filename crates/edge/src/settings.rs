//! Variables and secrets: `[vars]` in the wrangler configs, secrets from `wrangler secret
//! put` (locally both come from `.dev.vars`). Every read of one goes through this module:
//! one function per setting, its name a constant here. Binding names are in
//! [`crate::bindings`]; the orchestration configuration's keys are core's
//! ([`baton_core::config`]).

use std::collections::BTreeMap;

use baton_core::config::{Config, ConfigError};
use baton_core::delegation::{DelegationError, Delegations};
use baton_core::rate_limit::{RateLimitError, RateLimits};
use serde_json::Value;
use worker::Env;

/// Secret: the client tokens, `token:client_id,token:client_id`.
pub const API_TOKENS: &str = "API_TOKENS";
/// Secret (or variable): which clients may act for which others, `delegate:client|client,delegate:*`
/// ([`baton_core::delegation`]).
pub const API_DELEGATIONS: &str = "API_DELEGATIONS";
/// Per-client rate limits on the API, a JSON object ([`baton_core::rate_limit`]); unset: none.
pub const RATE_LIMITS: &str = "RATE_LIMITS";
/// Secret: the operator token.
pub const ADMIN_TOKEN: &str = "ADMIN_TOKEN";
/// Secret: the HMAC key of a service that has none in [`SERVICE_KEYS`] (kept for one release:
/// give every service its own key).
pub const WORKER_SECRET: &str = "WORKER_SECRET";
/// Secret: a JSON object of worker key → key (or [key, previous key]): each service's HMAC key.
pub const SERVICE_KEYS: &str = "SERVICE_KEYS";
/// Secret (optional): the keys with which a sender without an API token (a third party's
/// webhook, an approval tool) signs an event for a client's runs: a JSON object of client id →
/// key or [keys] (the first is the current one; all are accepted).
pub const EVENT_KEYS: &str = "EVENT_KEYS";
/// Secret: the HMAC key of calls between Baton's own workers (`key` or `key,previous key`).
pub const INTERNAL_KEY: &str = "INTERNAL_KEY";
/// Per-service concurrency caps: a JSON object of worker key → most attempts in flight.
pub const SERVICE_CONCURRENCY: &str = "SERVICE_CONCURRENCY";
/// Per-client quotas, a JSON object (see [`baton_core::quota`]).
pub const QUOTAS: &str = "QUOTAS";
/// Worker keys custom plans may name, comma-separated (on top of those in [`SERVICE_URLS`]
/// and [`SERVICE_KEYS`]).
pub const ALLOWED_WORKER_KEYS: &str = "ALLOWED_WORKER_KEYS";
/// Where service workers are reached: a JSON object of worker key → base URL.
pub const SERVICE_URLS: &str = "SERVICE_URLS";
/// The `service` of lifecycle events.
pub const ORCHESTRATOR_SERVICE_NAME: &str = "ORCHESTRATOR_SERVICE_NAME";
/// [`ORCHESTRATOR_SERVICE_NAME`] when unset or empty.
pub const DEFAULT_ORCHESTRATOR_SERVICE_NAME: &str = "orchestrator";
/// How long a run request without `?wait` waits for its run, in seconds (default 0).
pub const RUN_WAIT_DEFAULT_SECONDS: &str = "RUN_WAIT_DEFAULT_SECONDS";
/// How long after answering a run request the orchestrator goes on running the run's
/// attempts in place, in seconds (default [`DEFAULT_IN_PLACE_SECONDS`]); 0: a run nobody waits
/// for goes through the task queue.
pub const IN_PLACE_SECONDS: &str = "IN_PLACE_SECONDS";
/// [`IN_PLACE_SECONDS`] when unset: within the 30 s a worker may work on after its response.
pub const DEFAULT_IN_PLACE_SECONDS: u64 = 25;
/// "true" makes the test-only routes (`/__test/...`) exist.
pub const BATON_TEST_HOOKS: &str = "BATON_TEST_HOOKS";
/// Faults to inject, comma-separated (`kv`, `analysis`, `task-queue`, `in-place`); unset in every
/// real deployment.
pub const BATON_FAULT_INJECTION: &str = "BATON_FAULT_INJECTION";
/// "true" lets webhooks use `http://localhost` and `http://127.0.0.1` (a local stack); else
/// webhook URLs must be https.
pub const WEBHOOK_ALLOW_HTTP_LOCALHOST: &str = "WEBHOOK_ALLOW_HTTP_LOCALHOST";
/// The wait after a webhook delivery's first failed attempt, in seconds (doubled after each).
pub const WEBHOOK_RETRY_BASE_SECONDS: &str = "WEBHOOK_RETRY_BASE_SECONDS";
/// [`WEBHOOK_RETRY_BASE_SECONDS`] when unset or not a number.
pub const DEFAULT_WEBHOOK_RETRY_BASE_SECONDS: u32 = 10;
/// The LLM's OpenAI-compatible base URL (e.g. `https://api.openai.com/v1`); unset: no LLM.
pub const LLM_API_URL: &str = "LLM_API_URL";
/// Secret: the LLM's API key.
pub const LLM_API_KEY: &str = "LLM_API_KEY";
/// The LLM model.
pub const LLM_MODEL: &str = "LLM_MODEL";
/// How long one LLM call may take, in milliseconds.
pub const LLM_TIMEOUT_MS: &str = "LLM_TIMEOUT_MS";
/// [`LLM_MODEL`] when unset.
pub const DEFAULT_LLM_MODEL: &str = "gpt-4o-mini";
/// [`LLM_TIMEOUT_MS`] when unset or not a number.
pub const DEFAULT_LLM_TIMEOUT_MS: u64 = 15_000;

/// The least level of the lifecycle log lines (`debug`, `info`, `warn`, `error`).
pub const LOG_LEVEL: &str = "LOG_LEVEL";

/// [`LOG_LEVEL`], if set and not blank.
pub fn log_level(env: &Env) -> Option<String> {
    var(env, LOG_LEVEL).filter(|v| !v.trim().is_empty())
}

/// A plain variable, if set.
fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string())
}

/// A secret, else a plain variable of the same name.
pub fn secret_or_var(env: &Env, name: &str) -> Option<String> {
    env.secret(name).ok().map(|s| s.to_string()).or_else(|| var(env, name))
}

/// [`API_TOKENS`]; empty when unset.
pub fn api_tokens(env: &Env) -> String {
    secret_or_var(env, API_TOKENS).unwrap_or_default()
}

/// [`API_DELEGATIONS`], parsed; unset: no client acts for another.
pub fn api_delegations(env: &Env) -> Result<Delegations, DelegationError> {
    Delegations::parse(&secret_or_var(env, API_DELEGATIONS).unwrap_or_default())
}

/// [`RATE_LIMITS`], parsed; unset: no client is limited.
pub fn rate_limits(env: &Env) -> Result<RateLimits, RateLimitError> {
    RateLimits::parse(&secret_or_var(env, RATE_LIMITS).unwrap_or_default())
}

/// [`ADMIN_TOKEN`], if set and not empty.
pub fn admin_token(env: &Env) -> Option<String> {
    secret_or_var(env, ADMIN_TOKEN).filter(|t| !t.is_empty())
}

/// [`WORKER_SECRET`], if set and not empty.
pub fn worker_secret(env: &Env) -> Option<String> {
    secret_or_var(env, WORKER_SECRET).filter(|s| !s.is_empty())
}

/// The keys of `worker` (a service's worker key): its entry in [`SERVICE_KEYS`], else
/// [`WORKER_SECRET`]. The first signs; any verifies. Empty when neither is set.
pub fn service_keys(env: &Env, worker: &str) -> Vec<String> {
    let configured = secret_or_var(env, SERVICE_KEYS).filter(|t| !t.trim().is_empty());
    let mut keys = match configured.map(|text| baton_core::signature::parse_service_keys(&text)) {
        Some(Ok(keys)) => keys,
        Some(Err(e)) => {
            worker::console_error!("{e}; services fall back to {WORKER_SECRET}");
            BTreeMap::new()
        }
        None => BTreeMap::new(),
    };
    keys.remove(worker).unwrap_or_else(|| worker_secret(env).into_iter().collect())
}

/// The keys that sign events for `client`'s runs ([`EVENT_KEYS`]); none when unset or when
/// it does not name the client (a malformed value is logged, and signs nothing).
pub fn event_keys(env: &Env, client: &str) -> Vec<String> {
    let Some(text) = secret_or_var(env, EVENT_KEYS).filter(|t| !t.trim().is_empty()) else { return Vec::new() };
    match baton_core::signature::parse_event_keys(&text) {
        Ok(mut keys) => keys.remove(client).unwrap_or_default(),
        Err(e) => {
            worker::console_error!("{e}; no signed event is accepted");
            Vec::new()
        }
    }
}

/// The worker keys [`SERVICE_KEYS`] names.
pub fn keyed_workers(env: &Env) -> Vec<String> {
    secret_or_var(env, SERVICE_KEYS)
        .and_then(|text| baton_core::signature::parse_service_keys(&text).ok())
        .map(|keys| keys.into_keys().collect())
        .unwrap_or_default()
}

/// The keys of calls between Baton's workers ([`INTERNAL_KEY`], comma-separated for a
/// rotation), else [`WORKER_SECRET`] (kept for one release). The first signs; any verifies.
pub fn internal_keys(env: &Env) -> Vec<String> {
    match secret_or_var(env, INTERNAL_KEY).filter(|k| !k.trim().is_empty()) {
        Some(keys) => keys.split(',').map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect(),
        None => worker_secret(env).into_iter().collect(),
    }
}

/// The worker keys custom plans may name: [`ALLOWED_WORKER_KEYS`], and those with an address
/// in [`SERVICE_URLS`] or a key in [`SERVICE_KEYS`].
pub fn allowed_worker_keys(env: &Env) -> Vec<String> {
    let listed = var(env, ALLOWED_WORKER_KEYS).unwrap_or_default();
    let mut allowed: Vec<String> = listed.split(',').map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect();
    allowed.extend(service_urls(env).into_keys());
    allowed.extend(keyed_workers(env));
    allowed.sort();
    allowed.dedup();
    allowed
}

/// Every concurrency cap ([`SERVICE_CONCURRENCY`]): worker key → most attempts in flight
/// (caps of 0 left out). An invalid setting caps nothing, with an error logged.
pub fn concurrency_caps(env: &Env) -> BTreeMap<String, u32> {
    let Some(text) = var(env, SERVICE_CONCURRENCY).filter(|t| !t.trim().is_empty()) else { return BTreeMap::new() };
    match serde_json::from_str::<BTreeMap<String, u32>>(&text) {
        Ok(caps) => caps.into_iter().filter(|(_, cap)| *cap > 0).collect(),
        Err(e) => {
            worker::console_error!("{SERVICE_CONCURRENCY} must be a JSON object of worker key → count: {e}");
            BTreeMap::new()
        }
    }
}

/// The concurrency cap of `worker`, if it has one (see [`concurrency_caps`]).
pub fn concurrency_cap(env: &Env, worker: &str) -> Option<u32> {
    concurrency_caps(env).remove(worker)
}

/// [`QUOTAS`]; invalid: the built-in defaults, with an error logged.
pub fn quotas(env: &Env) -> baton_core::quota::Quotas {
    let text = var(env, QUOTAS).unwrap_or_default();
    baton_core::quota::Quotas::parse(&text).unwrap_or_else(|e| {
        worker::console_error!("{e}; the default quotas apply");
        baton_core::quota::Quotas::default()
    })
}

/// [`SERVICE_URLS`]: worker key → base URL (without a trailing slash). Empty when unset or
/// not a JSON object; entries that are not strings are left out.
pub fn service_urls(env: &Env) -> BTreeMap<String, String> {
    let urls = var(env, SERVICE_URLS).and_then(|text| serde_json::from_str::<Value>(&text).ok());
    let Some(Value::Object(urls)) = urls else { return BTreeMap::new() };
    urls.into_iter()
        .filter_map(|(worker, url)| url.as_str().map(|u| (worker, u.trim_end_matches('/').to_string())))
        .collect()
}

/// [`ORCHESTRATOR_SERVICE_NAME`], default [`DEFAULT_ORCHESTRATOR_SERVICE_NAME`].
pub fn orchestrator_service_name(env: &Env) -> String {
    var(env, ORCHESTRATOR_SERVICE_NAME)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_ORCHESTRATOR_SERVICE_NAME.to_string())
}

/// [`RUN_WAIT_DEFAULT_SECONDS`]: how long a run request without `?wait` waits for its run
/// (0, the default: it answers 202 at once). A value that is not a whole number is ignored,
/// with an error logged.
pub fn run_wait_default_seconds(env: &Env) -> u64 {
    whole_seconds(env, RUN_WAIT_DEFAULT_SECONDS, 0)
}

/// [`IN_PLACE_SECONDS`], default [`DEFAULT_IN_PLACE_SECONDS`] (and at most that: the
/// platform ends work left after a response 30 s later).
pub fn in_place_seconds(env: &Env) -> u64 {
    whole_seconds(env, IN_PLACE_SECONDS, DEFAULT_IN_PLACE_SECONDS).min(DEFAULT_IN_PLACE_SECONDS)
}

/// The variable `name` as whole seconds; `default` when unset or empty, and when not a whole
/// number (with an error logged).
fn whole_seconds(env: &Env, name: &str, default: u64) -> u64 {
    match var(env, name).filter(|v| !v.trim().is_empty()) {
        None => default,
        Some(text) => text.trim().parse().unwrap_or_else(|_| {
            worker::console_error!("{name} {text:?} is not a whole number of seconds; using {default}");
            default
        }),
    }
}

/// Whether webhooks may use local `http` URLs ([`WEBHOOK_ALLOW_HTTP_LOCALHOST`] is "true").
pub fn webhook_allow_http_localhost(env: &Env) -> bool {
    var(env, WEBHOOK_ALLOW_HTTP_LOCALHOST).is_some_and(|v| v == "true")
}

/// [`WEBHOOK_RETRY_BASE_SECONDS`], default [`DEFAULT_WEBHOOK_RETRY_BASE_SECONDS`].
pub fn webhook_retry_base_seconds(env: &Env) -> u32 {
    var(env, WEBHOOK_RETRY_BASE_SECONDS)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_WEBHOOK_RETRY_BASE_SECONDS)
}

/// Whether the test-only routes exist in this worker ([`BATON_TEST_HOOKS`] is "true").
pub fn test_hooks_enabled(env: &Env) -> bool {
    var(env, BATON_TEST_HOOKS).is_some_and(|v| v == "true")
}

/// Whether `fault` is listed in [`BATON_FAULT_INJECTION`].
pub fn fault_injected(env: &Env, fault: &str) -> bool {
    var(env, BATON_FAULT_INJECTION).is_some_and(|v| v.split(',').any(|f| f.trim() == fault))
}

/// The orchestration configuration from this worker's variables (core's keys and bounds),
/// before any KV override.
pub fn base_config(env: &Env) -> Result<Config, ConfigError> {
    Config::from_lookup(|key| var(env, key))
}

/// The LLM settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmSettings {
    /// [`LLM_API_URL`], without a trailing slash.
    pub url: String,
    /// [`LLM_API_KEY`], if set.
    pub key: Option<String>,
    /// [`LLM_MODEL`].
    pub model: String,
    /// [`LLM_TIMEOUT_MS`].
    pub timeout_ms: u64,
}

/// The LLM settings; `None` when no [`LLM_API_URL`] is set. Each may be a secret or a
/// variable; a blank value counts as unset.
pub fn llm(env: &Env) -> Option<LlmSettings> {
    let setting = |name: &str| secret_or_var(env, name).filter(|v| !v.trim().is_empty());
    let url = setting(LLM_API_URL)?;
    Some(LlmSettings {
        url: url.trim_end_matches('/').to_string(),
        key: setting(LLM_API_KEY),
        model: setting(LLM_MODEL).unwrap_or_else(|| DEFAULT_LLM_MODEL.to_string()),
        timeout_ms: setting(LLM_TIMEOUT_MS).and_then(|t| t.parse().ok()).unwrap_or(DEFAULT_LLM_TIMEOUT_MS),
    })
}

/// `LLM_PRICES` ([`baton_core::llm::Prices`]): USD per million tokens by model. An invalid
/// setting is an error naming the variable.
pub fn llm_prices(env: &Env) -> std::result::Result<baton_core::llm::Prices, String> {
    baton_core::llm::Prices::parse(&var(env, baton_core::llm::PRICES_VAR).unwrap_or_default())
}

/// `LLM_CACHE_SECONDS` ([`baton_core::llm::parse_cache_seconds`]): how long an answer is
/// reused, 0 for never. An invalid setting is an error naming the variable.
pub fn llm_cache_seconds(env: &Env) -> std::result::Result<u64, String> {
    baton_core::llm::parse_cache_seconds(var(env, baton_core::llm::CACHE_SECONDS_VAR).as_deref())
}

/// `COST_PRICES` ([`baton_core::cost::UnitPrices`]): the billed units' prices over the defaults.
/// An invalid setting is an error naming the variable.
pub fn cost_prices(env: &Env) -> std::result::Result<baton_core::cost::UnitPrices, String> {
    baton_core::cost::UnitPrices::parse(var(env, baton_core::cost::PRICES_VAR).as_deref())
}

/// `RETENTION_DAYS` and `RETENTION_DAYS_BY_CLIENT` ([`baton_core::retention`]). An invalid
/// setting is an error naming the variable: nothing is archived under it.
pub fn retention(
    env: &Env,
) -> std::result::Result<baton_core::retention::Retention, baton_core::retention::RetentionError> {
    use baton_core::retention::{Retention, RETENTION_DAYS, RETENTION_DAYS_BY_CLIENT};
    Retention::parse(var(env, RETENTION_DAYS).as_deref(), var(env, RETENTION_DAYS_BY_CLIENT).as_deref())
}

/// The span exporter (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
/// `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`: [`baton_core::otlp`]); each may
/// be a secret or a variable (the headers often hold a key). `Ok(None)`: export is off. An
/// invalid setting is an error naming the variable.
pub fn otlp_exporter(
    env: &Env,
) -> std::result::Result<Option<baton_core::otlp::Exporter>, baton_core::otlp::ExporterError> {
    baton_core::otlp::Exporter::from_lookup(|name| secret_or_var(env, name))
}

/// `D1_SHARDS` and `SHARD_BY_CLIENT` ([`baton_core::shard`]): which database holds whose data.
/// An invalid setting is an error naming the variable: nothing can be routed under it.
pub fn shards(env: &Env) -> crate::Result<baton_core::shard::Shards> {
    use baton_core::shard::{Shards, D1_SHARDS, SHARD_BY_CLIENT};
    Shards::parse(var(env, D1_SHARDS).as_deref(), var(env, SHARD_BY_CLIENT).as_deref())
        .map_err(|e| crate::Error::Binding { name: e.variable.into(), cause: e.problem })
}
