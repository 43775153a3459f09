//! `POST /api/jobs/{trace_id}/results/{service}`'s body (a service reports a step's outcome) and
//! its answer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How the step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    Completed,
    Failed,
}

/// A step's outcome, signed by its service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultReport {
    pub status: ReportStatus,
    /// The step's result (any JSON).
    #[serde(default)]
    pub output: Option<Value>,
    /// Why it failed: a message, or `{message, retryable}` (not retryable unless it says so).
    #[serde(default)]
    #[schemars(extend("type" = ["string", "object", "null"]))]
    pub error: Option<Value>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// What it used, e.g. `{"tokens": 120}`.
    #[serde(default)]
    #[schemars(extend("type" = ["object", "null"]))]
    pub usage: Option<Value>,
    /// The attempt it reports on (any when absent); it must be the signed one.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub attempt: Option<u32>,
}

/// What became of a reported outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Recorded {
    /// The step changed; the run was advanced.
    Recorded,
    /// The step had already ended: a duplicate or late report, acknowledged and ignored.
    AlreadyRecorded,
    /// The report is for another attempt, or another writer changed the step first.
    Stale,
}

/// `POST /api/jobs/{trace_id}/results/{service}`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ResultRecorded {
    pub success: crate::Success,
    pub trace_id: String,
    pub service: String,
    pub result: Recorded,
    /// What the run did next once the outcome was recorded (steps dispatched, skipped, ...);
    /// null otherwise.
    pub advance: Value,
}
