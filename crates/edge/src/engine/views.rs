//! What the run page and `GET /metrics` read: each step's attempts with their timings, why
//! a skipped step was skipped, and the aggregates over every run. Read-only.

use std::collections::BTreeMap;

use baton_core::metrics::{self, Observed, Pool, Snapshot};
use baton_core::state::StepStatus;
use baton_core::time::Millis;
use serde::Serialize;

use super::run::{Engine, Loaded};
use crate::d1::views::{self, AttemptRow, Buckets};
use crate::Result;

/// One attempt of a step as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub attempt: i64,
    /// When a consumer began running it (RFC 3339), `null` if none did.
    pub started_at: Option<String>,
    /// When it ended, `null` while it runs.
    pub ended_at: Option<String>,
    /// End minus start, when both are known.
    pub duration_ms: Option<i64>,
    /// `running`, or the status the step left `running` for (`completed`, `retrying`,
    /// `failed`, `timeout`, `cancelled`).
    pub outcome: String,
    /// Its error, if it failed.
    pub error: Option<String>,
    /// The error's kind (`transient`, `permanent`, `timeout`, ...).
    pub error_kind: Option<String>,
}

fn rfc3339(ms: Option<i64>) -> Option<String> {
    ms.map(|ms| Millis::new(ms.max(0) as u64).to_rfc3339())
}

impl From<AttemptRow> for Attempt {
    fn from(row: AttemptRow) -> Self {
        Attempt {
            attempt: row.attempt,
            started_at: rfc3339(row.started_at),
            ended_at: rfc3339(Some(row.ended_at)),
            duration_ms: row.started_at.map(|start| (row.ended_at - start).max(0)),
            outcome: row.outcome,
            error: row.error,
            error_kind: row.error_kind,
        }
    }
}

/// The services among `service`'s dependencies that ended without completing (failed,
/// timed out, skipped, cancelled): why a skipped step never ran.
pub fn blocked_by(loaded: &Loaded, service: &str) -> Vec<String> {
    let Some(spec) = loaded.plan.step(service) else { return Vec::new() };
    spec.depends_on
        .iter()
        .filter(|dep| loaded.step(dep.as_str()).is_some_and(|row| row.status.is_missing()))
        .map(|dep| dep.as_str().to_string())
        .collect()
}

/// The steps `service` waits for, from the run's plan.
pub fn depends_on(loaded: &Loaded, service: &str) -> Vec<String> {
    loaded.plan.step(service).map(|s| s.depends_on.iter().map(|d| d.as_str().to_string()).collect()).unwrap_or_default()
}

fn seconds_to_ms(bounds: &[f64]) -> Vec<u64> {
    bounds.iter().map(|s| (s * 1000.0).round() as u64).collect()
}

fn observed(b: Buckets) -> Observed {
    Observed { cumulative: b.cumulative, count: b.count, sum_ms: b.sum_ms }
}

impl Engine<'_> {
    /// Every attempt of each of the run's steps, oldest first: the ended ones from their
    /// history, and the one running now.
    pub async fn attempts_of(&self, loaded: &Loaded) -> Result<BTreeMap<String, Vec<Attempt>>> {
        let mut by_step: BTreeMap<String, Vec<Attempt>> = BTreeMap::new();
        for row in views::attempts_of_run(&self.db, &loaded.run.run_id).await? {
            by_step.entry(row.service.clone()).or_default().push(Attempt::from(row));
        }
        for step in loaded.steps.iter().filter(|s| s.status == StepStatus::Running && s.attempts > 0) {
            let attempts = by_step.entry(step.service.clone()).or_default();
            if attempts.iter().all(|a| a.attempt != step.attempts) {
                attempts.push(Attempt {
                    attempt: step.attempts,
                    started_at: rfc3339(step.claimed_at),
                    ended_at: None,
                    duration_ms: None,
                    outcome: StepStatus::Running.as_str().to_string(),
                    error: None,
                    error_kind: None,
                });
            }
        }
        Ok(by_step)
    }

    /// The aggregates of `GET /metrics`, read from D1 (one round trip): the live runs' rows and
    /// the totals.
    pub async fn metrics(&self) -> Result<Snapshot> {
        let a = views::aggregates(
            &self.db,
            &seconds_to_ms(metrics::RUN_SECONDS),
            &seconds_to_ms(metrics::FAN_IN_SECONDS),
            &seconds_to_ms(metrics::TASK_SECONDS),
        )
        .await?;
        let mut snapshot = Snapshot {
            runs_by_status: a.runs_by_status,
            steps_by_status: a.steps_by_status,
            attempts_total: a.attempts_total,
            retries_by_service: a.retries_by_service,
            run_seconds: observed(a.run_ms),
            fan_in_seconds: observed(a.fan_in_ms),
            task_seconds: observed(a.attempt_ms),
            queue_by_status: a.queue_by_status,
            pools: a
                .pools
                .into_iter()
                .map(|(resource, capacity, in_use)| Pool { resource, capacity, in_use })
                .collect(),
            archive_failures: 0,
            llm: Default::default(),
            run_units: Default::default(),
            unit_prices: crate::settings::cost_prices(self.env()).unwrap_or_default(),
            otlp_spans_exported: 0,
            otlp_spans_dropped: 0,
        };
        snapshot.add_totals(&a.totals);
        Ok(snapshot)
    }
}
