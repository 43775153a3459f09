//! `runs`: one row per run (diagnostic runs and pipeline executions).

use serde::{Deserialize, Serialize};

use super::{Arg, Db, Meta, Stmt};
use crate::Result;

/// Every column of a run row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRow {
    pub run_id: String,
    pub kind: String,
    pub client_id: String,
    pub website_id: String,
    pub domain: String,
    pub plan_id: String,
    pub plan_name: String,
    pub plan_json: String,
    pub parameters: String,
    pub idempotency_key: Option<String>,
    pub status: String,
    pub priority: i64,
    pub created_at: i64,
    pub started_at: i64,
    pub deadline_at: i64,
    pub due_at: Option<i64>,
    pub claimed_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub partial: Option<i64>,
    pub missing: Option<String>,
    pub diagnosis_event_id: Option<String>,
    pub synthesis_error: Option<String>,
    pub error: Option<String>,
}

const COLUMNS: &str = "run_id, kind, client_id, website_id, domain, plan_id, plan_name, plan_json, parameters, \
    idempotency_key, status, priority, created_at, started_at, deadline_at, due_at, claimed_at, completed_at, \
    partial, missing, diagnosis_event_id, synthesis_error, error";

/// Inserts a run.
pub fn insert(db: &Db, r: &RunRow) -> Result<Stmt> {
    db.stmt(
        &format!(
            "INSERT INTO runs ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
             ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)"
        ),
        &[
            Arg::from(&r.run_id),
            Arg::from(&r.kind),
            Arg::from(&r.client_id),
            Arg::from(&r.website_id),
            Arg::from(&r.domain),
            Arg::from(&r.plan_id),
            Arg::from(&r.plan_name),
            Arg::from(&r.plan_json),
            Arg::from(&r.parameters),
            Arg::from(r.idempotency_key.clone()),
            Arg::from(&r.status),
            Arg::Int(r.priority),
            Arg::Int(r.created_at),
            Arg::Int(r.started_at),
            Arg::Int(r.deadline_at),
            Arg::from(r.due_at),
            Arg::from(r.claimed_at),
            Arg::from(r.completed_at),
            Arg::from(r.partial),
            Arg::from(r.missing.clone()),
            Arg::from(r.diagnosis_event_id.clone()),
            Arg::from(r.synthesis_error.clone()),
            Arg::from(r.error.clone()),
        ],
    )
}

/// A run by id.
pub async fn get(db: &Db, run_id: &str) -> Result<Option<RunRow>> {
    db.first(&format!("SELECT {COLUMNS} FROM runs WHERE run_id = ?1"), &[Arg::from(run_id)]).await
}

/// The run a client already started with this idempotency key, if any.
pub async fn by_idempotency_key(db: &Db, client_id: &str, kind: &str, key: &str) -> Result<Option<RunRow>> {
    db.first(
        &format!("SELECT {COLUMNS} FROM runs WHERE client_id = ?1 AND kind = ?2 AND idempotency_key = ?3"),
        &[Arg::from(client_id), Arg::from(kind), Arg::from(key)],
    )
    .await
}

/// Runs whose `due_at` has passed, earliest first: the poller's only way into `runs`
/// (an index range over active runs; finished runs have `due_at` NULL and are never read).
pub async fn due(db: &Db, now: i64, limit: u32) -> Result<(Vec<RunRow>, Meta)> {
    db.all(
        &format!("SELECT {COLUMNS} FROM runs WHERE due_at <= ?1 ORDER BY due_at LIMIT ?2"),
        &[Arg::Int(now), Arg::from(limit)],
    )
    .await
}

/// Moves a run from one of `from` to `to`, setting extra columns; `changes` = 1 means this
/// caller made the move (the claim pattern).
pub fn transition(db: &Db, run_id: &str, from: &[&str], to: &str, sets: &[(&str, Arg)]) -> Result<Stmt> {
    let mut args = vec![Arg::from(to), Arg::from(run_id)];
    let mut assignments = String::from("status = ?1");
    for (column, value) in sets {
        args.push(value.clone());
        assignments.push_str(&format!(", {column} = ?{}", args.len()));
    }
    let placeholders: Vec<String> = from
        .iter()
        .map(|status| {
            args.push(Arg::from(*status));
            format!("?{}", args.len())
        })
        .collect();
    db.stmt(
        &format!("UPDATE runs SET {assignments} WHERE run_id = ?2 AND status IN ({})", placeholders.join(", ")),
        &args,
    )
}

/// Sets when the poller must look at a run next (only while the run is active).
pub fn set_due(db: &Db, run_id: &str, due_at: i64) -> Result<Stmt> {
    db.stmt(
        "UPDATE runs SET due_at = ?2 WHERE run_id = ?1 AND due_at IS NOT NULL",
        &[Arg::from(run_id), Arg::Int(due_at)],
    )
}

/// Brings the poller's next look at an active run forward to `at` (never pushes it back).
pub fn due_no_later_than(db: &Db, run_id: &str, at: i64) -> Result<Stmt> {
    db.stmt("UPDATE runs SET due_at = ?2 WHERE run_id = ?1 AND due_at > ?2", &[Arg::from(run_id), Arg::Int(at)])
}

/// `SELECT` of one run, for batching with other reads.
pub fn select(db: &Db, run_id: &str) -> Result<Stmt> {
    db.stmt(&format!("SELECT {COLUMNS} FROM runs WHERE run_id = ?1"), &[Arg::from(run_id)])
}

/// The fan-in claim: `started|running → aggregating`, only while no step of the run can still
/// change (checked inside the same transaction, after this batch's step writes). Exactly one
/// caller sees `changes` = 1.
pub fn claim_fan_in(db: &Db, run_id: &str, now: i64, partial: bool, missing_json: &str, due_at: i64) -> Result<Stmt> {
    db.stmt(
        "UPDATE runs SET status = 'aggregating', claimed_at = ?2, partial = ?3, missing = ?4, due_at = ?5 \
         WHERE run_id = ?1 AND status IN ('started', 'running') AND NOT EXISTS \
         (SELECT 1 FROM steps WHERE steps.run_id = ?1 AND steps.status IN ('pending', 'running', 'retrying'))",
        &[Arg::from(run_id), Arg::Int(now), Arg::from(partial), Arg::from(missing_json), Arg::Int(due_at)],
    )
}

/// [`claim_fan_in`], made in the same transaction as the step write that settles the run, and
/// only if that step is as the writer wrote it (`(service, status, attempts)`): whoever's write
/// it is, the decision taken on it holds.
pub fn claim_fan_in_settled_by(
    db: &Db,
    run_id: &str,
    now: i64,
    partial: bool,
    missing_json: &str,
    due_at: i64,
    step: (&str, &str, i64),
) -> Result<Stmt> {
    let (service, status, attempts) = step;
    db.stmt(
        "UPDATE runs SET status = 'aggregating', claimed_at = ?2, partial = ?3, missing = ?4, due_at = ?5 \
         WHERE run_id = ?1 AND status IN ('started', 'running') AND NOT EXISTS \
         (SELECT 1 FROM steps WHERE steps.run_id = ?1 AND steps.status IN ('pending', 'running', 'retrying')) \
         AND EXISTS (SELECT 1 FROM steps WHERE steps.run_id = ?1 AND steps.service = ?6 AND steps.status = ?7 AND steps.attempts = ?8)",
        &[
            Arg::from(run_id),
            Arg::Int(now),
            Arg::from(partial),
            Arg::from(missing_json),
            Arg::Int(due_at),
            Arg::from(service),
            Arg::from(status),
            Arg::Int(attempts),
        ],
    )
}

/// Fails a run without analysis, under the same guard as the fan-in claim.
pub fn fail_if_settled(db: &Db, run_id: &str, now: i64, error: &str) -> Result<Stmt> {
    db.stmt(
        "UPDATE runs SET status = 'failed', completed_at = ?2, error = ?3, due_at = NULL \
         WHERE run_id = ?1 AND status IN ('started', 'running') AND NOT EXISTS \
         (SELECT 1 FROM steps WHERE steps.run_id = ?1 AND steps.status IN ('pending', 'running', 'retrying'))",
        &[Arg::from(run_id), Arg::Int(now), Arg::from(error)],
    )
}

/// Active runs and those overdue (`due_at` passed), counted through the `runs_due` index.
pub async fn count_active(db: &Db, now: i64) -> Result<(u64, u64)> {
    #[derive(Deserialize)]
    struct Counts {
        active: Option<i64>,
        overdue: Option<i64>,
    }
    let counts = db
        .first::<Counts>(
            "SELECT COUNT(*) AS active, SUM(CASE WHEN due_at <= ?1 THEN 1 ELSE 0 END) AS overdue \
             FROM runs WHERE due_at IS NOT NULL",
            &[Arg::Int(now)],
        )
        .await?;
    Ok(counts.map(|c| (c.active.unwrap_or(0) as u64, c.overdue.unwrap_or(0) as u64)).unwrap_or((0, 0)))
}

/// The columns a run listing needs: the plan (for step counts), not the parameters.
#[derive(Debug, Clone, Deserialize)]
pub struct ListedRun {
    pub run_id: String,
    pub website_id: String,
    pub domain: String,
    pub plan_json: String,
    pub status: String,
    pub created_at: i64,
    pub started_at: i64,
    pub completed_at: Option<i64>,
    pub diagnosis_event_id: Option<String>,
    pub error: Option<String>,
}

/// Which of a client's runs to list.
#[derive(Debug, Clone)]
pub struct RunFilter<'a> {
    pub client_id: &'a str,
    pub website_id: Option<&'a str>,
    pub status: Option<&'a str>,
    /// Only runs after `(created_at, run_id)` in newest-first order.
    pub after: Option<(i64, &'a str)>,
    pub limit: u32,
}

/// A page of a client's runs, newest first (`created_at`, then `run_id`, descending), through
/// `runs_by_client`, `runs_by_website` or `runs_by_client_status`.
pub async fn page(db: &Db, filter: &RunFilter<'_>) -> Result<Vec<ListedRun>> {
    let mut args = vec![Arg::from(filter.client_id)];
    let mut sql = String::from(
        "SELECT run_id, website_id, domain, plan_json, status, created_at, started_at, completed_at, \
         diagnosis_event_id, error FROM runs WHERE client_id = ?1",
    );
    if let Some(website_id) = filter.website_id {
        args.push(Arg::from(website_id));
        sql.push_str(&format!(" AND website_id = ?{}", args.len()));
    }
    if let Some(status) = filter.status {
        args.push(Arg::from(status));
        sql.push_str(&format!(" AND status = ?{}", args.len()));
    }
    if let Some((created_at, run_id)) = filter.after {
        args.push(Arg::Int(created_at));
        args.push(Arg::from(run_id));
        sql.push_str(&format!(" AND (created_at, run_id) < (?{}, ?{})", args.len() - 1, args.len()));
    }
    args.push(Arg::from(filter.limit));
    sql.push_str(&format!(" ORDER BY created_at DESC, run_id DESC LIMIT ?{}", args.len()));
    let (rows, _) = db.all(&sql, &args).await?;
    Ok(rows)
}
