//! Read-only views: the attempt history of a run (`step_attempts`, written by a trigger on
//! `steps`) and the aggregates behind `GET /metrics`. Nothing here writes.

use baton_core::execution::QueueStatus;
use baton_core::lifecycle;
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
    /// Its run, when several runs' attempts are read at once ([`attempts_of_runs_stmt`]);
    /// never written into a run's own history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

const ATTEMPTS_OF_RUN: &str = "SELECT service, attempt, started_at, ended_at, outcome, error, error_kind \
     FROM step_attempts WHERE run_id = ?1 ORDER BY service, attempt";

/// The ended attempts of several runs (at most 100), with their `run_id`, by run, step and
/// attempt.
pub fn attempts_of_runs_stmt(db: &Db, run_ids: &[&str]) -> Result<Stmt> {
    let (list, args) = super::id_list(run_ids)?;
    db.stmt(
        &format!(
            "SELECT run_id, service, attempt, started_at, ended_at, outcome, error, error_kind              FROM step_attempts WHERE run_id IN ({list}) ORDER BY run_id, service, attempt"
        ),
        &args,
    )
}

/// A run's ended attempts, by step and attempt.
pub async fn attempts_of_run(db: &Db, run_id: &str) -> Result<Vec<AttemptRow>> {
    let (rows, _) = db.all::<AttemptRow>(ATTEMPTS_OF_RUN, &[Arg::from(run_id)]).await?;
    Ok(rows)
}

/// [`attempts_of_run`] as a statement, to batch with others.
pub fn attempts_of_run_stmt(db: &Db, run_id: &str) -> Result<Stmt> {
    db.stmt(ATTEMPTS_OF_RUN, &[Arg::from(run_id)])
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
    /// What ended runs and archive failures counted (`metric_totals`): `(metric, label, value)`.
    pub totals: Vec<(String, String, i64)>,
}

/// Runs not yet ended, through the index of their status (`runs_by_status_deadline`): what a
/// scrape reads of runs, steps and attempts grows with the runs in progress, never with history.
fn live_runs() -> String {
    format!("SELECT run_id, claimed_at FROM runs WHERE status IN ({})", super::runs::status_list(lifecycle::UNFINISHED))
}

/// Live runs whose fan-in was claimed: from their last step settling to the claim.
fn fan_in_latencies() -> String {
    format!(
        "SELECT MAX(0, r.claimed_at - MAX(s.finished_at)) AS v FROM ({}) r \
         JOIN steps s ON s.run_id = r.run_id WHERE r.claimed_at IS NOT NULL AND s.finished_at IS NOT NULL \
         GROUP BY r.run_id",
        live_runs()
    )
}

/// Ended attempts of live runs that a consumer ran: claim to end.
fn attempt_durations() -> String {
    format!(
        "SELECT MAX(0, a.ended_at - a.started_at) AS v FROM ({}) r \
         JOIN step_attempts a ON a.run_id = r.run_id WHERE a.started_at IS NOT NULL",
        live_runs()
    )
}

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

/// Every aggregate, in one round trip: the live runs' rows ([`live_runs`]) and the totals of
/// the runs that ended (added by each ending, taken back by a retry), of archive failures, and
/// the small tables of the execution queue and the admission pools.
pub async fn aggregates(
    db: &Db,
    run_bounds_ms: &[u64],
    fan_in_bounds_ms: &[u64],
    attempt_bounds_ms: &[u64],
) -> Result<Aggregates> {
    let live = live_runs();
    let statements = vec![
        db.stmt(
            &format!(
                "SELECT status, COUNT(*) AS n FROM runs WHERE status IN ({}) GROUP BY status",
                super::runs::status_list(lifecycle::UNFINISHED)
            ),
            &[],
        )?,
        db.stmt(
            &format!(
                "SELECT s.status, COUNT(*) AS n, COALESCE(SUM(s.attempts), 0) AS attempts FROM ({live}) r \
                 JOIN steps s ON s.run_id = r.run_id GROUP BY s.status"
            ),
            &[],
        )?,
        db.stmt(
            &format!(
                // A map step's items (`audit.3`) count under their step: one series per step.
                "SELECT CASE WHEN instr(s.service, '.') > 0 THEN substr(s.service, 1, instr(s.service, '.') - 1) \
                 ELSE s.service END AS service, SUM(s.attempts - 1) AS n FROM ({live}) r \
                 JOIN steps s ON s.run_id = r.run_id WHERE s.attempts > 1 GROUP BY 1 ORDER BY 1"
            ),
            &[],
        )?,
        // A live run has not ended: every run duration is in the totals.
        histogram(db, "SELECT 0 AS v WHERE 0", run_bounds_ms)?,
        histogram(db, &fan_in_latencies(), fan_in_bounds_ms)?,
        histogram(db, &attempt_durations(), attempt_bounds_ms)?,
        // The waiting executions only, each status through its partial index.
        db.stmt(
            &[QueueStatus::Queued, QueueStatus::Admitted]
                .iter()
                .map(|st| {
                    let status = super::literal(st.as_str());
                    format!("SELECT {status} AS status, COUNT(*) AS n FROM execution_queue WHERE status = {status}")
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL "),
            &[],
        )?,
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
