//! `archived_runs`: the slim row an archived run keeps in D1 (its object is in R2), and
//! `metric_totals`: what ended runs (archived or not) and archive failures count in
//! `GET /metrics`.

use baton_core::metrics;
use baton_core::retention::Pass;
use baton_core::state::{RunKind, RunStatus};
use serde::{Deserialize, Serialize};

use super::runs::RunFilter;
use super::{literal, Arg, Db, Stmt};
use crate::Result;

/// Every column of an archived run's row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArchivedRow {
    pub run_id: String,
    pub client_id: String,
    pub kind: RunKind,
    pub website_id: String,
    pub domain: String,
    pub plan_id: String,
    pub status: RunStatus,
    pub created_at: i64,
    pub started_at: i64,
    pub completed_at: Option<i64>,
    pub services_completed: i64,
    pub services_failed: i64,
    pub services_timeout: i64,
    pub services_skipped: i64,
    pub services_total: i64,
    pub diagnosis_event_id: Option<String>,
    pub error: Option<String>,
    pub archived_at: i64,
    pub object_bytes: i64,
}

const COLUMNS: &str = "run_id, client_id, kind, website_id, domain, plan_id, status, created_at, started_at, \
    completed_at, services_completed, services_failed, services_timeout, services_skipped, services_total, \
    diagnosis_event_id, error, archived_at, object_bytes";

/// An archived run's row.
pub async fn get(db: &Db, run_id: &str) -> Result<Option<ArchivedRow>> {
    db.first(&format!("SELECT {COLUMNS} FROM archived_runs WHERE run_id = ?1"), &[Arg::from(run_id)]).await
}

/// Writes an archived run's row (again, if a crash left it written: the same run, the same
/// object), only if the run as read (`version`) is still in D1, so that a run retried meanwhile
/// is not archived from a stale copy; a run already deleted (an earlier pass finished) keeps
/// its row as it is.
pub fn insert_if_run_version(db: &Db, row: &ArchivedRow, version: i64) -> Result<Stmt> {
    let params: Vec<String> = (1..=19).map(|i| format!("?{i}")).collect();
    db.stmt(
        &format!(
            "INSERT OR REPLACE INTO archived_runs ({COLUMNS}) SELECT {} \
             WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ?1 AND version = ?20)",
            params.join(", ")
        ),
        &[
            Arg::from(&row.run_id),
            Arg::from(&row.client_id),
            Arg::from(row.kind.as_str()),
            Arg::from(&row.website_id),
            Arg::from(&row.domain),
            Arg::from(&row.plan_id),
            Arg::from(row.status.as_str()),
            Arg::Int(row.created_at),
            Arg::Int(row.started_at),
            Arg::from(row.completed_at),
            Arg::Int(row.services_completed),
            Arg::Int(row.services_failed),
            Arg::Int(row.services_timeout),
            Arg::Int(row.services_skipped),
            Arg::Int(row.services_total),
            Arg::from(row.diagnosis_event_id.clone()),
            Arg::from(row.error.clone()),
            Arg::Int(row.archived_at),
            Arg::Int(row.object_bytes),
            Arg::Int(version),
        ],
    )
}

/// Deletes an archived run's row.
pub fn delete(db: &Db, run_id: &str) -> Result<Stmt> {
    db.stmt("DELETE FROM archived_runs WHERE run_id = ?1", &[Arg::from(run_id)])
}

/// Totals one statement adds at most (3 bound values each, D1 binds at most 100).
pub const TOTALS_PER_STATEMENT: usize = 32;

/// Adds `totals` (`(metric, label, value)`, at most [`TOTALS_PER_STATEMENT`]; a value may be
/// negative) to the metric totals, only if the run carries `version`: the statement goes in the
/// batch that ends the run (or retries it) after the write that gives it that version, so only
/// a batch that stands counts. With `attempts`, the same statement also adds the run's ended
/// attempts a consumer ran ([`attempt_totals`]) as the batch has left them.
pub fn add_totals_if_run_version(
    db: &Db,
    run_id: &str,
    version: i64,
    totals: &[(String, String, i64)],
    attempts: bool,
) -> Result<Stmt> {
    let guard = "EXISTS (SELECT 1 FROM runs WHERE run_id = ?1 AND version = ?2)";
    let extra = if attempts { attempt_totals() } else { String::new() };
    insert_totals(db, vec![Arg::from(run_id), Arg::Int(version)], guard, totals, &extra)
}

/// Adds `totals` (`(metric, label, value)`, at most [`TOTALS_PER_STATEMENT`]) to the metric
/// totals, unconditionally (counters of events that belong to no run, as an archive failure).
pub fn add_totals(db: &Db, totals: &[(String, String, i64)]) -> Result<Stmt> {
    insert_totals(db, Vec::new(), "true", totals, "")
}

/// The rows (`m`, `l`, `n`) that the ended attempts a consumer ran of the run `?1` add to
/// `attempt_ms`, read from `step_attempts` where the statement runs: one per bucket (core's
/// [`metrics::bucket_label`] over [`metrics::TASK_SECONDS`]), `count` and `sum`, each as
/// [`metrics::leaving_totals`] counts them. Read inside the batch that ends the run, they
/// include the attempts its own step writes end, and cost the ending no read of its own.
fn attempt_totals() -> String {
    let bounds = metrics::TASK_SECONDS;
    let buckets: String = bounds
        .iter()
        .map(|b| (b * 1000.0).round() as u64)
        .map(|ms| format!("WHEN v <= {ms} THEN '{}' ", metrics::bucket_label(bounds, ms)))
        .collect();
    let ran =
        "SELECT MAX(0, ended_at - started_at) AS v FROM step_attempts WHERE run_id = ?1 AND started_at IS NOT NULL";
    format!(
        " UNION ALL SELECT 'attempt_ms', l, COUNT(*) FROM (SELECT CASE {buckets}ELSE {inf} END AS l FROM ({ran})) GROUP BY l \
         UNION ALL SELECT 'attempt_ms', 'count', COUNT(*) FROM ({ran}) \
         UNION ALL SELECT 'attempt_ms', 'sum', SUM(v) FROM ({ran})",
        inf = literal("le:+Inf"),
    )
}

/// The insert of `totals` and the rows of the select `extra` (`UNION ALL …`) after the
/// arguments `args` of `guard`, only where `guard` holds; rows adding 0 are left out.
fn insert_totals(
    db: &Db,
    mut args: Vec<Arg>,
    guard: &str,
    totals: &[(String, String, i64)],
    extra: &str,
) -> Result<Stmt> {
    if totals.is_empty() || totals.len() > TOTALS_PER_STATEMENT {
        return Err(crate::Error::Internal(format!("{} metric totals in one statement", totals.len())));
    }
    let rows: Vec<String> = totals
        .iter()
        .map(|(metric, label, value)| {
            args.push(Arg::from(metric.as_str()));
            args.push(Arg::from(label.as_str()));
            args.push(Arg::Int(*value));
            format!("(?{}, ?{}, ?{})", args.len() - 2, args.len() - 1, args.len())
        })
        .collect();
    db.stmt(
        &format!(
            "INSERT INTO metric_totals (metric, label, value) SELECT m, l, n FROM \
             (SELECT column1 AS m, column2 AS l, column3 AS n FROM (VALUES {}){extra}) \
             WHERE n <> 0 AND {guard} ON CONFLICT (metric, label) DO UPDATE SET value = value + excluded.value",
            rows.join(", ")
        ),
        &args,
    )
}

/// A run due for the archive: enough to load it and check it is still due.
#[derive(Debug, Clone, Deserialize)]
pub struct DueForArchive {
    pub run_id: String,
    pub client_id: String,
    pub completed_at: i64,
}

/// Runs of `kind` of `pass` that ended before its cut-off, oldest first (index `runs_ended`).
/// A pipeline run still holding a reservation is not due until the admission pass releases it.
pub async fn due(db: &Db, pass: &Pass, kind: RunKind, limit: u32) -> Result<(Vec<DueForArchive>, super::Meta)> {
    let held = if kind == RunKind::Pipeline {
        " AND NOT EXISTS (SELECT 1 FROM resource_allocations a WHERE a.run_id = runs.run_id AND a.status = 'held')"
    } else {
        ""
    };
    match pass {
        Pass::Client { client_id, ended_before } => {
            db.all(
                &format!(
                    "SELECT run_id, client_id, completed_at FROM runs WHERE completed_at IS NOT NULL \
                     AND completed_at < ?1 AND client_id = ?2 AND kind = {}{held} ORDER BY completed_at LIMIT ?3",
                    literal(kind.as_str())
                ),
                &[Arg::Int(ended_before.as_u64() as i64), Arg::from(client_id.as_str()), Arg::from(limit)],
            )
            .await
        }
        Pass::Others { except, ended_before } => {
            let mut args = vec![Arg::Int(ended_before.as_u64() as i64), Arg::from(limit)];
            let placeholders: Vec<String> = except
                .iter()
                .map(|client| {
                    args.push(Arg::from(client.as_str()));
                    format!("?{}", args.len())
                })
                .collect();
            let excluded = if except.is_empty() {
                String::new()
            } else {
                format!(" AND client_id NOT IN ({})", placeholders.join(", "))
            };
            db.all(
                &format!(
                    "SELECT run_id, client_id, completed_at FROM runs WHERE completed_at IS NOT NULL \
                     AND completed_at < ?1 AND kind = {}{held}{excluded} ORDER BY completed_at LIMIT ?2",
                    literal(kind.as_str())
                ),
                &args,
            )
            .await
        }
    }
}

/// A page of a client's archived runs, newest first, with the listing's filters
/// (`archived_runs_by_client`).
pub async fn page(db: &Db, filter: &RunFilter<'_>) -> Result<Vec<ArchivedRow>> {
    let (sql, args) = super::runs::page_query(&format!("SELECT {COLUMNS} FROM archived_runs"), filter);
    let (rows, _) = db.all(&sql, &args).await?;
    Ok(rows)
}
