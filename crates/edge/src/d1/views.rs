//! Read-only views: the attempt history of a run (`step_attempts`, written by a trigger on
//! `steps`) and the aggregates behind `GET /metrics`. Nothing here writes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Arg, Db, Stmt};
use crate::{Error, Result};

/// One ended attempt of a step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptRow {
    pub service: String,
    pub attempt: i64,
    /// When a consumer began running it (`None`: it was never claimed).
    pub started_at: Option<i64>,
    pub ended_at: i64,
    /// The status the step left `running` for.
    pub outcome: String,
    pub error: Option<String>,
    pub error_kind: Option<String>,
}

/// A run's ended attempts, by step and attempt.
pub async fn attempts_of_run(db: &Db, run_id: &str) -> Result<Vec<AttemptRow>> {
    let (rows, _) = db
        .all::<AttemptRow>(
            "SELECT service, attempt, started_at, ended_at, outcome, error, error_kind FROM step_attempts \
             WHERE run_id = ?1 ORDER BY service, attempt",
            &[Arg::from(run_id)],
        )
        .await?;
    Ok(rows)
}

/// Counts of a histogram as SQL computed them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Buckets {
    /// For each bound, how many values are at most that bound.
    pub cumulative: Vec<u64>,
    /// How many values.
    pub count: u64,
    /// Their sum (milliseconds).
    pub sum_ms: u64,
}

/// Every aggregate `GET /metrics` shows, read in one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregates {
    pub runs_by_status: Vec<(String, u64)>,
    pub steps_by_status: Vec<(String, u64)>,
    pub attempts_total: u64,
    pub retries_by_service: Vec<(String, u64)>,
    pub run_ms: Buckets,
    pub fan_in_ms: Buckets,
    pub attempt_ms: Buckets,
    pub queue_by_status: Vec<(String, u64)>,
    /// `(resource, capacity, in_use)`.
    pub pools: Vec<(String, u64, u64)>,
    /// What runs that left D1 counted (`metric_totals`): `(metric, label, value)`.
    pub totals: Vec<(String, String, i64)>,
}

/// Ended runs: start to end.
const RUN_DURATIONS: &str = "SELECT completed_at - started_at AS v FROM runs WHERE completed_at IS NOT NULL";
/// Runs whose fan-in was claimed: from their last step settling to the claim.
const FAN_IN_LATENCIES: &str = "SELECT MAX(0, r.claimed_at - MAX(s.finished_at)) AS v FROM runs r \
     JOIN steps s ON s.run_id = r.run_id WHERE r.claimed_at IS NOT NULL AND s.finished_at IS NOT NULL \
     GROUP BY r.run_id";
/// Ended attempts a consumer ran: claim to end.
const ATTEMPT_DURATIONS: &str =
    "SELECT MAX(0, ended_at - started_at) AS v FROM step_attempts WHERE started_at IS NOT NULL";

/// `SELECT COUNT(*), SUM(v), SUM(v <= bound) ...` over the values `v` of `source`; the
/// bounds are bound parameters.
fn histogram(db: &Db, source: &str, bounds_ms: &[u64]) -> Result<Stmt> {
    let columns: Vec<String> =
        (1..=bounds_ms.len()).map(|i| format!("SUM(CASE WHEN v <= ?{i} THEN 1 ELSE 0 END) AS b{i}")).collect();
    let args: Vec<Arg> = bounds_ms.iter().map(|b| Arg::from(*b)).collect();
    db.stmt(
        &format!("SELECT COUNT(*) AS n, COALESCE(SUM(v), 0) AS total, {} FROM ({source})", columns.join(", ")),
        &args,
    )
}

fn int(row: &Value, column: &str) -> u64 {
    row.get(column).and_then(Value::as_f64).map(|v| v.max(0.0) as u64).unwrap_or(0)
}

fn text(row: &Value, column: &str) -> Result<String> {
    row.get(column)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::Storage(format!("metrics: column {column} is not text in {row}")))
}

fn counts(rows: &[Value], key: &str, value: &str) -> Result<Vec<(String, u64)>> {
    rows.iter().map(|r| Ok((text(r, key)?, int(r, value)))).collect()
}

fn buckets(rows: &[Value], bounds: usize) -> Buckets {
    let Some(row) = rows.first() else { return Buckets::default() };
    Buckets {
        cumulative: (1..=bounds).map(|i| int(row, &format!("b{i}"))).collect(),
        count: int(row, "n"),
        sum_ms: int(row, "total"),
    }
}

/// Every aggregate, in one round trip. Each statement reads its whole table: a scrape costs
/// rows read in proportion to history (runs, steps, attempts).
pub async fn aggregates(
    db: &Db,
    run_bounds_ms: &[u64],
    fan_in_bounds_ms: &[u64],
    attempt_bounds_ms: &[u64],
) -> Result<Aggregates> {
    let statements = vec![
        db.stmt("SELECT status, COUNT(*) AS n FROM runs GROUP BY status", &[])?,
        db.stmt(
            "SELECT status, COUNT(*) AS n, COALESCE(SUM(attempts), 0) AS attempts FROM steps GROUP BY status",
            &[],
        )?,
        db.stmt(
            "SELECT service, SUM(attempts - 1) AS n FROM steps WHERE attempts > 1 GROUP BY service ORDER BY service",
            &[],
        )?,
        histogram(db, RUN_DURATIONS, run_bounds_ms)?,
        histogram(db, FAN_IN_LATENCIES, fan_in_bounds_ms)?,
        histogram(db, ATTEMPT_DURATIONS, attempt_bounds_ms)?,
        db.stmt("SELECT status, COUNT(*) AS n FROM execution_queue GROUP BY status", &[])?,
        db.stmt("SELECT resource, capacity, in_use FROM resource_pools ORDER BY resource", &[])?,
        db.stmt("SELECT metric, label, value FROM metric_totals", &[])?,
    ];
    let results = db.batch_rows(statements).await?;
    let rows = |i: usize| results.get(i).map(|(rows, _)| rows.as_slice()).unwrap_or(&[]);
    Ok(Aggregates {
        runs_by_status: counts(rows(0), "status", "n")?,
        steps_by_status: counts(rows(1), "status", "n")?,
        attempts_total: rows(1).iter().map(|r| int(r, "attempts")).sum(),
        retries_by_service: counts(rows(2), "service", "n")?,
        run_ms: buckets(rows(3), run_bounds_ms.len()),
        fan_in_ms: buckets(rows(4), fan_in_bounds_ms.len()),
        attempt_ms: buckets(rows(5), attempt_bounds_ms.len()),
        queue_by_status: counts(rows(6), "status", "n")?,
        pools: rows(7)
            .iter()
            .map(|r| Ok((text(r, "resource")?, int(r, "capacity"), int(r, "in_use"))))
            .collect::<Result<_>>()?,
        totals: rows(8)
            .iter()
            .map(|r| Ok((text(r, "metric")?, text(r, "label")?, r["value"].as_i64().unwrap_or(0))))
            .collect::<Result<_>>()?,
    })
}
