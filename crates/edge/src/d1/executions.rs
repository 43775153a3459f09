//! `execution_queue`: every pipeline execution from acceptance to start (or failure).

use baton_core::execution::QueueStatus;
use serde::{Deserialize, Serialize};

use super::{literal, Arg, Db, Meta, Stmt};
use crate::Result;

/// Every column of an execution row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExecutionRow {
    pub run_id: String,
    pub client_id: String,
    pub request_id: Option<String>,
    pub template_name: String,
    pub website_id: String,
    pub domain: String,
    pub plan_json: String,
    pub parameters: String,
    pub priority: i64,
    pub enqueued_at: i64,
    pub deadline_at: i64,
    pub status: QueueStatus,
    pub attempts: i64,
    pub admitted_at: Option<i64>,
    pub admission_token: Option<String>,
    pub last_error: Option<String>,
    /// The delegate that submitted it for its client (`API_DELEGATIONS`); `None` when the
    /// client submitted it itself.
    #[serde(default)]
    pub acted_by: Option<String>,
    /// The `traceparent` it was submitted with, which its run joins.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// The caller's `tracestate`.
    #[serde(default)]
    pub tracestate: Option<String>,
}

const COLUMNS: &str = "run_id, client_id, request_id, template_name, website_id, domain, plan_json, parameters, \
    priority, enqueued_at, deadline_at, status, attempts, admitted_at, admission_token, last_error, acted_by, \
    traceparent, tracestate";

/// Inserts an execution. Fails on a second row with the same `(client_id, request_id)`.
pub fn insert(db: &Db, e: &ExecutionRow) -> Result<Stmt> {
    db.stmt(
        &format!("INSERT INTO execution_queue ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"),
        &[
            Arg::from(&e.run_id),
            Arg::from(&e.client_id),
            Arg::from(e.request_id.clone()),
            Arg::from(&e.template_name),
            Arg::from(&e.website_id),
            Arg::from(&e.domain),
            Arg::from(&e.plan_json),
            Arg::from(&e.parameters),
            Arg::Int(e.priority),
            Arg::Int(e.enqueued_at),
            Arg::Int(e.deadline_at),
            Arg::from(e.status.as_str()),
            Arg::Int(e.attempts),
            Arg::from(e.admitted_at),
            Arg::from(e.admission_token.clone()),
            Arg::from(e.last_error.clone()),
            Arg::from(e.acted_by.clone()),
            Arg::from(e.traceparent.clone()),
            Arg::from(e.tracestate.clone()),
        ],
    )
}

/// An execution by id.
pub async fn get(db: &Db, run_id: &str) -> Result<Option<ExecutionRow>> {
    db.first(&format!("SELECT {COLUMNS} FROM execution_queue WHERE run_id = ?1"), &[Arg::from(run_id)]).await
}

/// The execution a client already requested with this request id.
pub async fn by_request(db: &Db, client_id: &str, request_id: &str) -> Result<Option<ExecutionRow>> {
    db.first(
        &format!("SELECT {COLUMNS} FROM execution_queue WHERE client_id = ?1 AND request_id = ?2"),
        &[Arg::from(client_id), Arg::from(request_id)],
    )
    .await
}

/// Waiting executions in admission order: priority, then age (`execution_queue_order`).
pub async fn queued_in_order(db: &Db, limit: u32) -> Result<(Vec<ExecutionRow>, Meta)> {
    db.all(
        &format!(
            "SELECT {COLUMNS} FROM execution_queue WHERE status = {} \
             ORDER BY priority DESC, enqueued_at, run_id LIMIT ?1",
            literal(QueueStatus::Queued.as_str())
        ),
        &[Arg::from(limit)],
    )
    .await
}

/// Executions admitted at or before `before` whose run was never started.
pub async fn unstarted(db: &Db, before: i64, limit: u32) -> Result<(Vec<ExecutionRow>, Meta)> {
    db.all(
        &format!(
            "SELECT {COLUMNS} FROM execution_queue WHERE status = {} AND admitted_at <= ?1 \
             ORDER BY admitted_at LIMIT ?2",
            literal(QueueStatus::Admitted.as_str())
        ),
        &[Arg::Int(before), Arg::from(limit)],
    )
    .await
}

/// Waiting executions whose deadline passed, with why they waited last.
pub async fn expired(db: &Db, now: i64, limit: u32) -> Result<(Vec<ExecutionRow>, Meta)> {
    db.all(
        &format!(
            "SELECT {COLUMNS} FROM execution_queue WHERE status = {} AND deadline_at <= ?1 LIMIT ?2",
            literal(QueueStatus::Queued.as_str())
        ),
        &[Arg::Int(now), Arg::from(limit)],
    )
    .await
}

/// The admission claim: `queued → admitted` only while every pool has room for `demand`
/// (checked in the same statement). `changes` = 1 means this caller admitted it; the rest of
/// its batch recognises the admission by `token`.
pub fn admit(db: &Db, run_id: &str, now: i64, token: &str, demand: &[(String, u64)]) -> Result<Stmt> {
    let mut args = vec![Arg::from(run_id), Arg::Int(now), Arg::from(token)];
    let mut over_capacity = Vec::new();
    for (resource, quantity) in demand {
        args.push(Arg::from(resource));
        args.push(Arg::from(*quantity));
        over_capacity.push(format!("(resource = ?{} AND in_use + ?{} > capacity)", args.len() - 1, args.len()));
    }
    let room = if over_capacity.is_empty() {
        String::new()
    } else {
        format!(" AND NOT EXISTS (SELECT 1 FROM resource_pools WHERE {})", over_capacity.join(" OR "))
    };
    db.stmt(
        &format!(
            "UPDATE execution_queue SET status = {}, admitted_at = ?2, admission_token = ?3, \
             attempts = attempts + 1, last_error = NULL WHERE run_id = ?1 AND status = {}{room}",
            literal(QueueStatus::Admitted.as_str()),
            literal(QueueStatus::Queued.as_str())
        ),
        &args,
    )
}

/// Records why a waiting execution was not admitted this time.
pub fn note_wait(db: &Db, run_id: &str, reason: &str) -> Result<Stmt> {
    db.stmt(
        &format!(
            "UPDATE execution_queue SET attempts = attempts + 1, last_error = ?2 WHERE run_id = ?1 AND status = {}",
            literal(QueueStatus::Queued.as_str())
        ),
        &[Arg::from(run_id), Arg::from(reason)],
    )
}

/// Moves an execution from `from` to `failed` with `error`.
pub fn fail(db: &Db, run_id: &str, from: QueueStatus, error: &str) -> Result<Stmt> {
    db.stmt(
        &format!(
            "UPDATE execution_queue SET status = {}, last_error = ?3 WHERE run_id = ?1 AND status = ?2",
            literal(QueueStatus::Failed.as_str())
        ),
        &[Arg::from(run_id), Arg::from(from.as_str()), Arg::from(error)],
    )
}

/// `admitted → started`: its run exists.
pub fn mark_started(db: &Db, run_id: &str) -> Result<Stmt> {
    db.stmt(
        &format!(
            "UPDATE execution_queue SET status = {}, last_error = NULL WHERE run_id = ?1 AND status = {}",
            literal(QueueStatus::Started.as_str()),
            literal(QueueStatus::Admitted.as_str())
        ),
        &[Arg::from(run_id)],
    )
}

/// How many of a client's executions wait for admission.
pub async fn count_queued_of_client(db: &Db, client_id: &str) -> Result<u64> {
    #[derive(serde::Deserialize)]
    struct Count {
        n: u64,
    }
    let row = db
        .first::<Count>(
            &format!(
                "SELECT COUNT(*) AS n FROM execution_queue WHERE client_id = ?1 AND status = {}",
                literal(QueueStatus::Queued.as_str())
            ),
            &[Arg::from(client_id)],
        )
        .await?;
    Ok(row.map_or(0, |c| c.n))
}

/// The guard of an ended pipeline run's deletes: the run is still the version read.
const ENDED_AT_VERSION: &str =
    "EXISTS (SELECT 1 FROM runs WHERE run_id = ?1 AND version = ?2 AND completed_at IS NOT NULL)";

/// Deletes an ended pipeline run's execution row, if the run is still the version read.
pub fn delete_of_run_if_version(db: &Db, run_id: &str, version: i64) -> Result<Stmt> {
    db.stmt(
        &format!("DELETE FROM execution_queue WHERE run_id = ?1 AND {ENDED_AT_VERSION}"),
        &[Arg::from(run_id), Arg::Int(version)],
    )
}

/// Deletes an ended pipeline run's released reservations and its usage samples, if the run is
/// still the version read (what it used stays in `resource_stats`).
pub fn delete_resources_if_version(db: &Db, run_id: &str, version: i64) -> Result<[Stmt; 2]> {
    let args = [Arg::from(run_id), Arg::Int(version)];
    Ok([
        db.stmt(
            &format!(
                "DELETE FROM resource_allocations WHERE run_id = ?1 AND status = 'released' AND {ENDED_AT_VERSION}"
            ),
            &args,
        )?,
        db.stmt(&format!("DELETE FROM resource_usage WHERE run_id = ?1 AND {ENDED_AT_VERSION}"), &args)?,
    ])
}

/// Deletes up to `limit` executions that failed before `before` without a run (never admitted,
/// or never started): they hold nothing.
pub fn prune_failed(db: &Db, before: i64, limit: u32) -> Result<Stmt> {
    db.stmt(
        &format!(
            "DELETE FROM execution_queue WHERE run_id IN (SELECT q.run_id FROM execution_queue q \
             WHERE q.status = {} AND q.enqueued_at < ?1 \
             AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = q.run_id) ORDER BY q.enqueued_at LIMIT ?2)",
            literal(QueueStatus::Failed.as_str())
        ),
        &[Arg::Int(before), Arg::from(limit)],
    )
}
