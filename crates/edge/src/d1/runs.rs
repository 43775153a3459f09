//! `runs`: one row per run (diagnostic runs and pipeline executions).

use baton_core::lifecycle::{self, ACTIVE, OPEN};
use baton_core::state::{RunKind, RunStatus};
use serde::{Deserialize, Serialize};

use super::{literal, Arg, Db, Meta, Stmt};
use crate::Result;

/// Every column of a run row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRow {
    pub run_id: String,
    pub kind: RunKind,
    pub client_id: String,
    pub website_id: String,
    pub domain: String,
    pub plan_id: String,
    pub plan_name: String,
    pub plan_json: String,
    pub parameters: String,
    pub idempotency_key: Option<String>,
    pub status: RunStatus,
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
    /// The run's version token (see [`gate`]).
    #[serde(default)]
    pub version: i64,
    /// The `service` its events carry, fixed when it starts (`ORCHESTRATOR_SERVICE_NAME`).
    #[serde(default)]
    pub events_service: Option<String>,
    /// The delegate that started it for its client (`API_DELEGATIONS`); `None` when the
    /// client started it itself.
    #[serde(default)]
    pub acted_by: Option<String>,
    /// How many times it was retried after it ended.
    #[serde(default)]
    pub retries: i64,
    /// The `traceparent` it was started with, if it joined its caller's trace (`None`: a
    /// trace of its own, derived from its id).
    #[serde(default)]
    pub traceparent: Option<String>,
    /// The caller's `tracestate`, passed on with the trace.
    #[serde(default)]
    pub tracestate: Option<String>,
    // The units the run used so far ([`RunRow::usage`]), added by `meter::flush`.
    #[serde(default)]
    pub usage_d1_round_trips: i64,
    #[serde(default)]
    pub usage_d1_statements: i64,
    #[serde(default)]
    pub usage_d1_rows_read: i64,
    #[serde(default)]
    pub usage_d1_rows_written: i64,
    #[serde(default)]
    pub usage_kv_reads: i64,
    #[serde(default)]
    pub usage_kv_writes: i64,
    #[serde(default)]
    pub usage_queue_messages: i64,
    #[serde(default)]
    pub usage_subrequests: i64,
    #[serde(default)]
    pub usage_r2_reads: i64,
    #[serde(default)]
    pub usage_r2_writes: i64,
    /// The run whose `run` step started this one (a child run), if any.
    #[serde(default)]
    pub parent_run_id: Option<String>,
    /// The parent's step that started it.
    #[serde(default)]
    pub parent_step: Option<String>,
    /// The parent step's attempt that started it.
    #[serde(default)]
    pub parent_attempt: Option<i64>,
    /// 0 for a run a client started; a child's is its parent's + 1.
    #[serde(default)]
    pub depth: i64,
}

impl RunRow {
    /// The units the run used, as recorded so far.
    pub fn usage(&self) -> baton_core::cost::Units {
        let n = |v: i64| v.max(0) as u64;
        baton_core::cost::Units::from_values([
            n(self.usage_d1_round_trips),
            n(self.usage_d1_statements),
            n(self.usage_d1_rows_read),
            n(self.usage_d1_rows_written),
            n(self.usage_kv_reads),
            n(self.usage_kv_writes),
            n(self.usage_queue_messages),
            n(self.usage_subrequests),
            n(self.usage_r2_reads),
            n(self.usage_r2_writes),
        ])
    }

    /// The run's place in its trace.
    pub fn trace(&self) -> baton_core::trace::RunTrace {
        baton_core::trace::RunTrace::of(&self.run_id, self.traceparent.as_deref(), self.tracestate.as_deref())
    }
}

const COLUMNS: &str = "run_id, kind, client_id, website_id, domain, plan_id, plan_name, plan_json, parameters, \
    idempotency_key, status, priority, created_at, started_at, deadline_at, due_at, claimed_at, completed_at, \
    partial, missing, diagnosis_event_id, synthesis_error, error, version, events_service, acted_by, retries, \
    traceparent, tracestate, parent_run_id, parent_step, parent_attempt, depth";

/// [`COLUMNS`] and the units the run used: what a read selects (a new run has none yet).
const SELECTED: &str = "run_id, kind, client_id, website_id, domain, plan_id, plan_name, plan_json, parameters, \
    idempotency_key, status, priority, created_at, started_at, deadline_at, due_at, claimed_at, completed_at, \
    partial, missing, diagnosis_event_id, synthesis_error, error, version, events_service, acted_by, retries, \
    traceparent, tracestate, usage_d1_round_trips, usage_d1_statements, usage_d1_rows_read, usage_d1_rows_written, \
    usage_kv_reads, usage_kv_writes, usage_queue_messages, usage_subrequests, usage_r2_reads, usage_r2_writes, \
    parent_run_id, parent_step, parent_attempt, depth";

/// Adds `usage` to run `run_id`'s units, and to `/metrics`' totals by its client and plan. A run
/// no longer in D1 (archived, deleted) takes nothing.
pub fn add_usage(db: &Db, run_id: &str, usage: &baton_core::cost::Units) -> Result<Vec<Stmt>> {
    let names = baton_core::cost::UNIT_NAMES;
    let values = usage.values();
    let set: Vec<String> =
        names.iter().enumerate().map(|(i, n)| format!("usage_{n} = usage_{n} + ?{}", i + 2)).collect();
    let mut args = vec![Arg::from(run_id)];
    args.extend(values.iter().map(|v| Arg::Int(*v as i64)));
    let update = db.stmt(&format!("UPDATE runs SET {} WHERE run_id = ?1", set.join(", ")), &args)?;
    let rows: Vec<String> =
        names.iter().zip(values).filter(|(_, v)| *v > 0).map(|(n, v)| format!("('{n}', {v})")).collect();
    if rows.is_empty() {
        return Ok(vec![update]);
    }
    let totals = db.stmt(
        &format!(
            "INSERT INTO metric_totals (metric, label, value) \
                 SELECT '{metric}', r.client_id || char(31) || r.plan_id || char(31) || u.column1, u.column2 \
                 FROM runs r, (VALUES {}) u WHERE r.run_id = ?1 \
                 ON CONFLICT (metric, label) DO UPDATE SET value = value + excluded.value",
            rows.join(", "),
            metric = baton_core::cost::UNITS_METRIC,
        ),
        &[Arg::from(run_id)],
    )?;
    Ok(vec![update, totals])
}

/// `'started', 'running'`: a list of core's statuses for an `IN (...)` guard. The texts are
/// core's constants, never input.
pub(crate) fn status_list(statuses: &[RunStatus]) -> String {
    statuses.iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ")
}

/// Inserts a run.
pub fn insert(db: &Db, r: &RunRow) -> Result<Stmt> {
    db.stmt(
        &format!(
            "INSERT INTO runs ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
             ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33)"
        ),
        &[
            Arg::from(&r.run_id),
            Arg::from(r.kind.as_str()),
            Arg::from(&r.client_id),
            Arg::from(&r.website_id),
            Arg::from(&r.domain),
            Arg::from(&r.plan_id),
            Arg::from(&r.plan_name),
            Arg::from(&r.plan_json),
            Arg::from(&r.parameters),
            Arg::from(r.idempotency_key.clone()),
            Arg::from(r.status.as_str()),
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
            Arg::Int(r.version),
            Arg::from(r.events_service.clone()),
            Arg::from(r.acted_by.clone()),
            Arg::Int(r.retries),
            Arg::from(r.traceparent.clone()),
            Arg::from(r.tracestate.clone()),
            Arg::from(r.parent_run_id.clone()),
            Arg::from(r.parent_step.clone()),
            Arg::from(r.parent_attempt),
            Arg::Int(r.depth),
        ],
    )
}

/// A run by id.
pub async fn get(db: &Db, run_id: &str) -> Result<Option<RunRow>> {
    db.first(&format!("SELECT {SELECTED} FROM runs WHERE run_id = ?1"), &[Arg::from(run_id)]).await
}

/// The run a client already started with this idempotency key, if any.
pub async fn by_idempotency_key(db: &Db, client_id: &str, kind: RunKind, key: &str) -> Result<Option<RunRow>> {
    db.first(
        &format!("SELECT {SELECTED} FROM runs WHERE client_id = ?1 AND kind = ?2 AND idempotency_key = ?3"),
        &[Arg::from(client_id), Arg::from(kind.as_str()), Arg::from(key)],
    )
    .await
}

/// A child of `parent_run_id`: its id, the step and attempt that started it, its status.
#[derive(Debug, Clone, Deserialize)]
pub struct ChildRow {
    pub run_id: String,
    pub parent_step: String,
    pub parent_attempt: i64,
    pub status: RunStatus,
}

/// The children of a run (through `idx_runs_parent`), newest first, at most `limit`; `open`:
/// only those not yet ended.
pub async fn children(db: &Db, parent_run_id: &str, open: bool, limit: u32) -> Result<Vec<ChildRow>> {
    let filter = if open { format!(" AND status IN ({})", status_list(OPEN)) } else { String::new() };
    let (rows, _) = db
        .all(
            &format!(
                "SELECT run_id, parent_step, parent_attempt, status FROM runs WHERE parent_run_id = ?1{filter} \
                 ORDER BY created_at DESC LIMIT ?2"
            ),
            &[Arg::from(parent_run_id), Arg::from(limit)],
        )
        .await?;
    Ok(rows)
}

/// Runs whose `due_at` has passed, earliest first: the poller's only way into `runs`
/// (an index range over active runs; finished runs have `due_at` NULL and are never read).
pub async fn due(db: &Db, now: i64, limit: u32) -> Result<(Vec<RunRow>, Meta)> {
    db.all(
        &format!("SELECT {SELECTED} FROM runs WHERE due_at <= ?1 ORDER BY due_at LIMIT ?2"),
        &[Arg::Int(now), Arg::from(limit)],
    )
    .await
}

/// The gate of a decision taken on a copy of the run read at version `read`: sets the
/// version to `token` only if it is still `read`. `changes` = 1 means no one changed the run
/// or its steps since that read, so every statement guarded by `version = token` in the
/// same batch applies to exactly the state the decision was taken on.
pub fn gate(db: &Db, run_id: &str, read: i64, token: i64) -> Result<Stmt> {
    db.stmt(
        "UPDATE runs SET version = ?3 WHERE run_id = ?1 AND version = ?2",
        &[Arg::from(run_id), Arg::Int(read), Arg::Int(token)],
    )
}

/// A fresh version after step writes made outside a won gate (a recorded result), so that
/// every copy read before them is known to be stale.
pub fn bump(db: &Db, run_id: &str, token: i64) -> Result<Stmt> {
    db.stmt("UPDATE runs SET version = ?2 WHERE run_id = ?1 AND version <> ?2", &[Arg::from(run_id), Arg::Int(token)])
}

/// `started → running` (the first dispatch), under the gate `token`.
pub fn mark_running(db: &Db, run_id: &str, token: i64) -> Result<Stmt> {
    db.stmt(
        &format!(
            "UPDATE runs SET status = {} WHERE run_id = ?1 AND status = {} AND version = ?2",
            literal(RunStatus::Running.as_str()),
            literal(RunStatus::Started.as_str())
        ),
        &[Arg::from(run_id), Arg::Int(token)],
    )
}

/// `started|running → paused` (a client's pause), under the gate `token`.
pub fn pause(db: &Db, run_id: &str, token: i64) -> Result<Stmt> {
    db.stmt(
        &format!(
            "UPDATE runs SET status = {} WHERE run_id = ?1 AND version = ?2 AND status IN ({})",
            literal(RunStatus::Paused.as_str()),
            status_list(ACTIVE)
        ),
        &[Arg::from(run_id), Arg::Int(token)],
    )
}

/// `paused → running` (a client's resume), under the gate `token`.
pub fn resume(db: &Db, run_id: &str, token: i64) -> Result<Stmt> {
    db.stmt(
        &format!(
            "UPDATE runs SET status = {} WHERE run_id = ?1 AND version = ?2 AND status IN ({})",
            literal(RunStatus::Running.as_str()),
            status_list(lifecycle::PAUSED)
        ),
        &[Arg::from(run_id), Arg::Int(token)],
    )
}

/// The fan-in claim, `started|running|paused → aggregating`, under the gate `token`: the decision
/// that every step has settled was taken on the run as it is, so exactly one caller (the one
/// whose gate won) sees `changes` = 1. Writes `run`'s claim columns (status, `claimed_at`,
/// `partial`, `missing`, and `due_at`: when the poller resends the analysis).
pub fn claim_fan_in(db: &Db, run: &RunRow, token: i64) -> Result<Stmt> {
    db.stmt(
        &format!(
            "UPDATE runs SET status = ?3, claimed_at = ?4, partial = ?5, missing = ?6, due_at = ?7 \
             WHERE run_id = ?1 AND version = ?2 AND status IN ({})",
            status_list(OPEN)
        ),
        &[
            Arg::from(&run.run_id),
            Arg::Int(token),
            Arg::from(run.status.as_str()),
            Arg::from(run.claimed_at),
            Arg::from(run.partial),
            Arg::from(run.missing.clone()),
            Arg::from(run.due_at),
        ],
    )
}

/// Gives a fan-in claim back (its analysis could not be sent): `aggregating → running`, due
/// now for the poller to claim again.
pub fn release_fan_in(db: &Db, run_id: &str, now: i64, token: i64) -> Result<Stmt> {
    db.stmt(
        &format!(
            "UPDATE runs SET status = {}, claimed_at = NULL, due_at = ?2, version = ?3 \
             WHERE run_id = ?1 AND status IN ({})",
            literal(RunStatus::Running.as_str()),
            status_list(lifecycle::CLAIMED)
        ),
        &[Arg::from(run_id), Arg::Int(now), Arg::Int(token)],
    )
}

/// How a run ends: the row as it ends (the columns [`finish`] writes), where from, under what.
#[derive(Debug, Clone)]
pub struct Ending<'a> {
    /// The run as it ends: its status, `completed_at`, `error`, `diagnosis_event_id`,
    /// `synthesis_error`, `due_at` and `version` (the events written with it are guarded by it).
    pub run: &'a RunRow,
    /// The statuses it may end from.
    pub from: &'a [RunStatus],
    /// The gate it is written under, if any.
    pub gate: Option<i64>,
}

/// Ends a run: only from one of `ending.from` (and under its gate, if any); `changes` = 1
/// means this caller ended it. An error already recorded is kept when the ending has none.
pub fn finish(db: &Db, ending: &Ending<'_>) -> Result<Stmt> {
    let run = ending.run;
    let mut args = vec![
        Arg::from(&run.run_id),
        Arg::from(run.status.as_str()),
        Arg::from(run.completed_at),
        Arg::from(run.error.clone()),
        Arg::from(run.diagnosis_event_id.clone()),
        Arg::from(run.synthesis_error.clone()),
        Arg::Int(run.version),
        Arg::from(run.due_at),
    ];
    let gated = match ending.gate {
        Some(gate) => {
            args.push(Arg::Int(gate));
            " AND version = ?9"
        }
        None => "",
    };
    db.stmt(
        &format!(
            "UPDATE runs SET status = ?2, completed_at = ?3, error = COALESCE(?4, error), diagnosis_event_id = ?5, \
             synthesis_error = ?6, due_at = ?8, version = ?7 WHERE run_id = ?1 AND status IN ({}){gated}",
            status_list(ending.from)
        ),
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

/// Sets when the poller must look at a run next, only while its status is one of `statuses`:
/// a look that finds a run still waiting must not move the analysis timeout of a run that a
/// racing report claimed meanwhile.
pub fn set_due_while(db: &Db, run_id: &str, due_at: i64, statuses: &[RunStatus]) -> Result<Stmt> {
    db.stmt(
        &format!(
            "UPDATE runs SET due_at = ?2 WHERE run_id = ?1 AND due_at IS NOT NULL AND status IN ({})",
            status_list(statuses)
        ),
        &[Arg::from(run_id), Arg::Int(due_at)],
    )
}

/// Brings the poller's next look at an active run forward to `at` (never pushes it back).
pub fn due_no_later_than(db: &Db, run_id: &str, at: i64) -> Result<Stmt> {
    db.stmt("UPDATE runs SET due_at = ?2 WHERE run_id = ?1 AND due_at > ?2", &[Arg::from(run_id), Arg::Int(at)])
}

/// `SELECT` of one run, for batching with other reads.
pub fn select(db: &Db, run_id: &str) -> Result<Stmt> {
    db.stmt(&format!("SELECT {SELECTED} FROM runs WHERE run_id = ?1"), &[Arg::from(run_id)])
}

/// Several runs by id (at most 100), in no particular order.
pub fn select_many(db: &Db, run_ids: &[&str]) -> Result<Stmt> {
    let (list, args) = super::id_list(run_ids)?;
    db.stmt(&format!("SELECT {SELECTED} FROM runs WHERE run_id IN ({list})"), &args)
}

/// Deletes several ended runs, each only as the version read (at most 100).
pub fn delete_many_if_versions(db: &Db, runs: &[(&str, i64)]) -> Result<Stmt> {
    let (guard, args) = super::ended_as_read(runs)?;
    db.stmt(&format!("DELETE FROM runs WHERE {guard}"), &args)
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
    pub status: RunStatus,
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
    pub plan_id: Option<&'a str>,
    /// Only runs in one of these statuses (core's constants); empty: any.
    pub among: &'a [RunStatus],
    /// Only runs created at this time or later.
    pub created_from: Option<i64>,
    /// Only runs created before this time.
    pub created_before: Option<i64>,
    /// Only runs after `(created_at, run_id)` in newest-first order.
    pub after: Option<(i64, &'a str)>,
    pub limit: u32,
}

/// A page of a client's runs, newest first (`created_at`, then `run_id`, descending), through
/// `runs_by_client`, `runs_by_website` or `runs_by_client_status`.
pub async fn page(db: &Db, filter: &RunFilter<'_>) -> Result<Vec<ListedRun>> {
    let select = "SELECT run_id, website_id, domain, plan_json, status, created_at, started_at, completed_at, \
         diagnosis_event_id, error FROM runs";
    let (sql, args) = page_query(select, filter);
    let (rows, _) = db.all(&sql, &args).await?;
    Ok(rows)
}

/// A run a bulk action may take: its place in the listing order.
#[derive(Debug, Clone, Deserialize)]
pub struct Candidate {
    pub run_id: String,
    pub created_at: i64,
}

/// A page of a client's runs in D1 matching `filter` (ids and creation times only), newest
/// first, as [`page`] orders them.
pub async fn candidates(db: &Db, filter: &RunFilter<'_>) -> Result<Vec<Candidate>> {
    let (sql, args) = page_query("SELECT run_id, created_at FROM runs", filter);
    let (rows, _) = db.all(&sql, &args).await?;
    Ok(rows)
}

/// `select` (a `SELECT ... FROM table` of a table with the run listing's columns) narrowed to
/// `filter`'s page, newest first, with its arguments: the query of both the runs and the
/// archived runs of a listing.
pub(crate) fn page_query(select: &str, filter: &RunFilter<'_>) -> (String, Vec<Arg>) {
    let mut args = vec![Arg::from(filter.client_id)];
    let mut sql = format!("{select} WHERE client_id = ?1");
    if let Some(website_id) = filter.website_id {
        args.push(Arg::from(website_id));
        sql.push_str(&format!(" AND website_id = ?{}", args.len()));
    }
    if let Some(status) = filter.status {
        args.push(Arg::from(status));
        sql.push_str(&format!(" AND status = ?{}", args.len()));
    }
    if let Some(plan_id) = filter.plan_id {
        args.push(Arg::from(plan_id));
        sql.push_str(&format!(" AND plan_id = ?{}", args.len()));
    }
    if !filter.among.is_empty() {
        sql.push_str(&format!(" AND status IN ({})", status_list(filter.among)));
    }
    if let Some(from) = filter.created_from {
        args.push(Arg::Int(from));
        sql.push_str(&format!(" AND created_at >= ?{}", args.len()));
    }
    if let Some(before) = filter.created_before {
        args.push(Arg::Int(before));
        sql.push_str(&format!(" AND created_at < ?{}", args.len()));
    }
    if let Some((created_at, run_id)) = filter.after {
        args.push(Arg::Int(created_at));
        args.push(Arg::from(run_id));
        sql.push_str(&format!(" AND (created_at, run_id) < (?{}, ?{})", args.len() - 1, args.len()));
    }
    args.push(Arg::from(filter.limit));
    sql.push_str(&format!(" ORDER BY created_at DESC, run_id DESC LIMIT ?{}", args.len()));
    (sql, args)
}

/// Counts a run `client_id` starts against its quota of runs in progress: the statement fails
/// (and with it the start's whole transaction) if the client already has `max` in progress.
pub fn count_started(db: &Db, client_id: &str, max: u32) -> Result<Stmt> {
    db.stmt(
        "INSERT INTO client_usage (client_id, active_runs, max_active) VALUES (?1, 1, ?2) \
         ON CONFLICT (client_id) DO UPDATE SET active_runs = active_runs + 1, max_active = ?2",
        &[Arg::from(client_id), Arg::from(max)],
    )
}

/// Counts a run of `client_id` that ends, only if the ending that carries `token` won.
pub fn count_ended(db: &Db, run_id: &str, client_id: &str, token: i64) -> Result<Stmt> {
    db.stmt(
        "UPDATE client_usage SET active_runs = active_runs - 1, max_active = MAX(max_active, active_runs - 1) \
         WHERE client_id = ?1 AND active_runs > 0 \
         AND EXISTS (SELECT 1 FROM runs WHERE run_id = ?2 AND version = ?3)",
        &[Arg::from(client_id), Arg::from(run_id), Arg::Int(token)],
    )
}

/// Whether a failed start was refused by the client's quota of runs in progress.
pub fn is_over_active_quota(error: &crate::Error) -> bool {
    error.to_string().contains("CHECK constraint failed")
}

/// Starts an ended run over (a retry), under the gate `token`: writes `run` as it restarts
/// (`running` again from its new `started_at`, its deadline and due time, its ending cleared,
/// its retries counted).
pub fn restart(db: &Db, run: &RunRow, token: i64) -> Result<Stmt> {
    db.stmt(
        &format!(
            "UPDATE runs SET status = ?3, started_at = ?4, deadline_at = ?5, due_at = ?6, claimed_at = ?7, \
             completed_at = ?8, partial = ?9, missing = ?10, diagnosis_event_id = ?11, synthesis_error = ?12, \
             error = ?13, retries = ?14 WHERE run_id = ?1 AND version = ?2 AND status IN ({})",
            status_list(lifecycle::ENDED)
        ),
        &[
            Arg::from(&run.run_id),
            Arg::Int(token),
            Arg::from(run.status.as_str()),
            Arg::Int(run.started_at),
            Arg::Int(run.deadline_at),
            Arg::from(run.due_at),
            Arg::from(run.claimed_at),
            Arg::from(run.completed_at),
            Arg::from(run.partial),
            Arg::from(run.missing.clone()),
            Arg::from(run.diagnosis_event_id.clone()),
            Arg::from(run.synthesis_error.clone()),
            Arg::from(run.error.clone()),
            Arg::Int(run.retries),
        ],
    )
}

/// Deletes an ended run's row, only if it is still the version read (a run retried or changed
/// meanwhile stays). Last in the batch that moves the run out of D1 (archived, or deleted by its
/// client): the statements before it are guarded by the same version.
pub fn delete_if_version(db: &Db, run_id: &str, version: i64) -> Result<Stmt> {
    db.stmt(
        "DELETE FROM runs WHERE run_id = ?1 AND version = ?2 AND completed_at IS NOT NULL",
        &[Arg::from(run_id), Arg::Int(version)],
    )
}
