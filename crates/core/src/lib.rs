//! baton-core: every decision Baton makes, as pure functions over plain data.
//!
//! Invariants (what this crate must never do):
//! - **No Workers.** No `worker`, no `wasm-bindgen`, no async, no I/O. It builds natively and
//!   for `wasm32-unknown-unknown`.
//! - **No clock, no entropy.** `now` ([`time::Millis`]) and randomness
//!   ([`retry::RandomSource`], id `random` bytes) are parameters; `SystemTime::now()` panics on
//!   wasm32 and is never called.
//! - **Decisions as data.** Functions return what to do ([`scheduler::Schedule`],
//!   [`fanin::FanIn`], [`state::StepOutcome`]); the workers persist and act.
//! - **Typed errors.** Each area has its error type naming the offending field or value; all
//!   convert into [`Error`].
//!
//! Module map:
//! - [`plan`]: plans, drafts, validation (every problem), built-in plans.
//! - [`template`]: master templates (`pipeline_stages`) compiled into plans.
//! - [`failure`]: error kinds and step errors (what decides a retry).
//! - [`state`]: run and step statuses, the step record, transitions.
//! - [`scheduler`]: ready steps, dependency skips, waves.
//! - [`trigger`]: trigger rules (when a step with dependencies runs).
//! - [`fanin`]: wait / aggregate / fail, with deadline and attempt timeouts.
//! - [`retry`]: retry policy with full-jitter backoff; random sources.
//! - [`summary`], [`events`]: the run summary, confidence, lifecycle event payloads.
//! - [`config`]: environment and KV-override configuration.
//! - [`ids`], [`time`]: identifier newtypes; instants and RFC 3339.
//! - [`messages`]: queue message shapes; when timers are sent and what they do on firing.
//! - [`quota`]: per-client quotas.
//! - [`retention`]: how long finished runs stay in D1, and where an archived one is kept.
//! - [`vars`]: every worker variable core validates, checked at once (`baton check-config`).
//! - [`progress`]: what a service's progress answer means for its attempt.
//! - [`request`]: run and execution request validation.
//! - [`listing`]: run listing queries and page cursors.
//! - [`llm`]: the analysis's LLM prompt template and its hash, usage, prices, cache keys.
//! - [`metrics`]: the operator's metrics in the Prometheus text format; what a run's ending
//!   adds to the totals and its retry takes back.
//! - [`lifecycle`]: every change to a run, decided in one place (the engine interprets it).
//! - [`cancel`]: cancelling a run.
//! - [`bulk`]: cancelling or retrying every run a filter matches: the filter's validation, the
//!   statuses each action takes, why a run is skipped.
//! - [`execution`]: pipeline executions: demand, admission, costs.
//! - [`signature`]: signed result callbacks (HMAC-SHA256).
//! - [`trace`]: W3C trace context: a run's trace, its spans' ids, `traceparent` headers.
//! - [`otlp`]: an ended run as OpenTelemetry spans (OTLP/HTTP JSON), and the exporter's variables.
//! - [`delegation`]: which clients may act for which others.
//! - [`rate_limit`]: per-client rate limits and the fixed-window decision.
//! - [`synthesis`]: the rule-based analysis (signals, rules, findings, recommendations).

#![warn(missing_docs)]

pub mod bulk;
pub mod cancel;
pub mod config;
pub mod cost;
pub mod delegation;
pub mod error;
pub mod events;
pub mod execution;
pub mod failure;
pub mod fanin;
pub mod ids;
pub mod json;
pub mod lifecycle;
pub mod listing;
pub mod llm;
pub mod map;
pub mod messages;
pub mod metrics;
pub mod otlp;
pub mod plan;
pub mod progress;
pub mod quota;
pub mod rate_limit;
pub mod request;
pub mod retention;
pub mod retry;
pub mod schedule;
pub mod scheduler;
pub mod shard;
pub mod signal;
pub mod signature;
pub mod state;
pub mod summary;
pub mod synthesis;
pub mod template;
pub mod time;
pub mod trace;
pub mod trigger;
pub mod vars;
pub mod webhook;

pub use error::{Error, Result};
