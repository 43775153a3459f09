//! `POST /api/orchestration/run`'s body, and the answers about runs: started, waited for, read,
//! listed, their events, cancelled, retried, rerun.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use baton_core::state::{RunKind, RunStatus, StepStatus};
use baton_core::summary::RunSummary;
use serde_json::Value;

use crate::{Instant, Object, Success};

/// A run to start: a website's domain, checked by a plan's services.
// `website_id` and `domain` are required, but default to empty when decoded: core reports a
// missing one with the request's other problems.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("required" = ["website_id", "domain"]))]
pub struct StartRun {
    /// The site the run is for.
    #[serde(default)]
    #[schemars(extend("pattern" = "^[A-Za-z0-9_.:-]{1,128}$"))]
    pub website_id: String,
    /// A hostname (a URL is reduced to its host).
    #[serde(default)]
    #[schemars(extend("pattern" = "^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?[.][a-z]{2,10}$"))]
    pub domain: String,
    /// Default `standard-v1`. A built-in plan or one of yours (`[a-z0-9_-]{1,64}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["standard-v1", "quick-v1", null]))]
    pub plan_id: Option<String>,
    /// Passed to every step; at most 90 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Object>,
    /// The same key returns the same run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub idempotency_key: Option<String>,
    /// The client this run is for, when the token may act for others (`API_DELEGATIONS`);
    /// otherwise your own or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// `POST /run`'s answer (202): the run started, or the one its idempotency key already started.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunStarted {
    pub success: Success,
    pub run_id: String,
    pub status: RunStatus,
    /// Where to read the run (`GET`).
    pub status_url: String,
    /// Whether the idempotency key named a run started before.
    pub idempotent_replay: bool,
}

/// `POST /run?wait`'s answer (200): the run's summary once it ended or `wait` seconds passed.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunWaited {
    pub success: Success,
    pub run_id: String,
    pub status: RunStatus,
    pub summary: RunSummary,
    /// Whether the idempotency key named a run started before.
    pub idempotent_replay: bool,
}

/// A run as `GET /runs/{run_id}` shows it: its summary, its steps and its diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunDetail {
    pub success: Success,
    pub summary: RunSummary,
    pub status: RunStatus,
    /// The client the run is for.
    pub client_id: String,
    /// Who started it for that client, when another did (`API_DELEGATIONS`).
    pub acted_by: Option<String>,
    /// Its W3C trace id (32 hex): the caller's when the run was started with a `traceparent`
    /// header, else one of its own. Every call Baton makes for the run carries it.
    pub trace_id: String,
    /// Whether it ended with part of its results; null before it is fanned in.
    pub partial: Option<bool>,
    pub service_results: Vec<StepResult>,
    /// The diagnosis (findings, confidence, missing_services, recommendations, ...) once written, else null.
    pub diagnosis: Option<Value>,
    /// Whether the run has ended.
    pub terminal: bool,
    pub kind: RunKind,
    pub plan_name: String,
    pub created_at: Instant,
    pub deadline_at: Instant,
    /// When the results were fanned in (the fan-in claim); null before, or if the run ended otherwise.
    pub fan_in_at: Option<Instant>,
    /// Services that did not complete, once fanned in; else null.
    pub missing: Option<Vec<String>>,
    /// The schedule that started this run, if one did.
    pub schedule_id: Option<String>,
    /// The slot of that schedule this run is for.
    pub schedule_slot: Option<Instant>,
    /// Whether the run is read from the archive (it ended longer ago than its client's
    /// retention, `RETENTION_DAYS`): the same answer, read from R2.
    pub archived: bool,
    /// What the run cost so far.
    pub cost: RunCost,
    /// For a child run (started by a `run` step of another run): that run and step; null for
    /// a run a client started.
    pub parent: Option<ParentRun>,
}

/// The run and `run` step that started a child run.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ParentRun {
    /// The parent run.
    pub run_id: String,
    /// Its `run` step.
    pub step: String,
}

/// What a run cost: the units Cloudflare bills for that Baton's workers used on its behalf,
/// recorded as each piece of its work ends (so a run in progress shows what is done), and
/// their price at `COST_PRICES`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunCost {
    /// Units by name: `d1_round_trips`, `d1_statements`, `d1_rows_read`, `d1_rows_written`,
    /// `kv_reads`, `kv_writes`, `queue_messages`, `subrequests`, `r2_reads`, `r2_writes`.
    pub units: std::collections::BTreeMap<String, u64>,
    /// Their cost at `COST_PRICES` (USD per million of each unit).
    pub usd: f64,
}

impl RunCost {
    /// The cost of `units` at `prices`.
    pub fn of(units: &baton_core::cost::Units, prices: &baton_core::cost::UnitPrices) -> RunCost {
        let names = baton_core::cost::UNIT_NAMES;
        RunCost {
            units: names.iter().zip(units.values()).map(|(n, v)| (n.to_string(), v)).collect(),
            usd: prices.cost_usd(units),
        }
    }
}

/// One step of a run, with its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct StepResult {
    pub service: String,
    pub status: StepStatus,
    pub wave: i64,
    pub attempts: i64,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    /// The JSON value the service returned for this step (any JSON type); null until it has one.
    pub output: Value,
    /// What a long-running service last reported, or null.
    pub progress: Option<Value>,
    pub depends_on: Vec<String>,
    /// First dispatch.
    pub started_at: Option<Instant>,
    pub finished_at: Option<Instant>,
    /// The current attempt's timeout.
    pub deadline_at: Option<Instant>,
    /// When a retrying step is tried again.
    pub next_attempt_at: Option<Instant>,
    pub error_kind: Option<String>,
    /// For a skipped step: its dependencies that did not complete.
    pub skipped_because: Vec<String>,
    pub attempt_history: Vec<Attempt>,
    /// For a wait step: the event it waits for (`POST /runs/{run_id}/events/{name}`); its
    /// output is the event's payload. Null for a step that calls a service.
    pub waits_for: Option<String>,
    /// For a map step: the list it maps over (`<upstream step>.<path>`); null otherwise.
    pub for_each: Option<String>,
    /// For a map step: its items, in order (`<step>.<index>`, each called with its element of
    /// the list); its `output` is their outputs in order (null for an item that did not
    /// complete). Empty for other steps, and until the map step starts.
    pub items: Vec<StepResult>,
    /// For a `run` step: the child run its latest attempt started, once started; null for
    /// any other step.
    pub child_run_id: Option<String>,
}

/// One attempt of a step.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub attempt: i64,
    /// When a consumer began running it; null if none did.
    pub started_at: Option<Instant>,
    /// Null while it runs.
    pub ended_at: Option<Instant>,
    pub duration_ms: Option<i64>,
    /// `running`, or the status the step left `running` for: completed, retrying, failed, timeout, cancelled.
    pub outcome: String,
    pub error: Option<String>,
    pub error_kind: Option<String>,
}

/// A page of the caller's runs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunList {
    pub success: Success,
    pub runs: Vec<RunSummary>,
    /// Pass back as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A run's events, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunEvents {
    pub success: Success,
    pub run_id: String,
    pub events: Vec<RunEvent>,
}

/// One event of a run.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunEvent {
    pub id: String,
    pub website_id: String,
    pub run_id: String,
    /// Who wrote it: a step's service, or the orchestrator.
    pub service: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The event's JSON payload; null when it is not JSON.
    pub payload: Value,
    pub created_at: Instant,
}

/// `POST /runs/{run_id}/cancel`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunCancelled {
    pub success: Success,
    pub run_id: String,
    pub status: RunStatus,
    /// The steps that were cancelled.
    pub cancelled_steps: Vec<String>,
    pub summary: RunSummary,
}

/// `POST /runs/{run_id}/events/{name}`'s answer: the event is kept for the wait step that
/// waits for it, which takes it now if it waits, or the moment it starts.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct EventDelivered {
    pub success: Success,
    pub run_id: String,
    /// The event's name.
    pub event: String,
    /// `delivered`, or `already_delivered` (an event of this name was delivered before: this
    /// one is not kept).
    pub status: String,
    /// The wait step that takes it.
    pub step: String,
    /// That step's status now: `completed` once it took the event, `pending` while it has
    /// not started (it takes the event when it starts).
    pub step_status: StepStatus,
}

/// `POST /runs/{run_id}/pause`'s answer: the run dispatches nothing new until it is resumed.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunPaused {
    pub success: Success,
    pub run_id: String,
    /// `paused`.
    pub status: RunStatus,
    /// Whether this call paused it (`false`: it was already paused).
    pub changed: bool,
    pub summary: RunSummary,
}

/// `POST /runs/{run_id}/resume`'s answer: the run runs again, and what became ready while it
/// was paused is dispatched.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunResumed {
    pub success: Success,
    pub run_id: String,
    /// `running`, or where the resume's look took it (`aggregating` once every step has
    /// ended, `failed`, `timeout`).
    pub status: RunStatus,
    /// Whether this call resumed it (`false`: it was not paused).
    pub changed: bool,
    /// The steps the resume dispatched.
    pub dispatched: Vec<String>,
    pub summary: RunSummary,
}

/// `POST /runs/{run_id}/retry`'s answer: the run runs again, in place.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunRetried {
    pub success: Success,
    pub run_id: String,
    pub status: RunStatus,
    /// The steps that start over.
    pub retried_steps: Vec<String>,
    /// How many times the run has been retried.
    pub retries: i64,
    /// The steps dispatched at once.
    pub dispatched: Vec<String>,
    /// The steps skipped at once (a dependency did not complete).
    pub skipped: Vec<String>,
}

/// `POST /runs/{run_id}/rerun`'s answer (202): a new run with the same inputs.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunRerun {
    pub success: Success,
    /// The new run.
    pub run_id: String,
    /// The run it repeats.
    pub rerun_of: String,
    pub status: RunStatus,
    /// Where to read the new run (`GET`).
    pub status_url: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::request::{validate_run_request, RunRequestDraft};
    use proptest::prelude::*;

    const WEBSITE_ID: &str = "[A-Za-z0-9_.:-]{1,128}";
    const DOMAIN: &str = "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?[.][a-z]{2,10}";

    proptest! {
        #[test]
        fn every_run_the_schema_allows_is_valid(
            website_id in proptest::string::string_regex(WEBSITE_ID).unwrap(),
            domain in proptest::string::string_regex(DOMAIN).unwrap(),
        ) {
            let draft = RunRequestDraft { website_id, domain, plan_id: None, idempotency_key: None };
            prop_assert!(validate_run_request(&draft).is_ok(), "{:?}", validate_run_request(&draft).err());
        }
    }

    #[test]
    fn the_patterns_tested_are_the_schemas() {
        let schema = serde_json::to_value(schemars::schema_for!(StartRun)).unwrap();
        assert_eq!(schema["properties"]["website_id"]["pattern"], format!("^{WEBSITE_ID}$"));
        assert_eq!(schema["properties"]["domain"]["pattern"], format!("^{DOMAIN}$"));
    }
}
