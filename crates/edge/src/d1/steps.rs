//! `steps`: one row per step (service) of a run.

use baton_core::state::StepStatus;
use serde::{Deserialize, Serialize};

use super::{literal, Arg, Db, Stmt};
use crate::Result;

/// Every column of a step row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRow {
    pub run_id: String,
    pub service: String,
    pub position: i64,
    pub wave: i64,
    pub status: StepStatus,
    pub attempts: i64,
    pub started_at: Option<i64>,
    pub claimed_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub deadline_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    pub error_kind: Option<String>,
    pub output: Option<String>,
    pub usage: Option<String>,
    pub progress: Option<String>,
    #[serde(default)]
    pub heartbeat_at: Option<i64>,
    #[serde(default)]
    pub attempt_base: i64,
}

impl StepRow {
    /// A step that has not started: `pending`, no attempt, nothing recorded.
    pub fn pending(run_id: &str, service: &str, position: i64, wave: i64) -> StepRow {
        StepRow {
            run_id: run_id.to_string(),
            service: service.to_string(),
            position,
            wave,
            status: StepStatus::Pending,
            attempts: 0,
            started_at: None,
            claimed_at: None,
            finished_at: None,
            deadline_at: None,
            next_attempt_at: None,
            duration_ms: None,
            error: None,
            error_kind: None,
            output: None,
            usage: None,
            progress: None,
            heartbeat_at: None,
            attempt_base: 0,
        }
    }
}

const COLUMNS: &str =
    "run_id, service, position, wave, status, attempts, started_at, claimed_at, finished_at, deadline_at, \
    next_attempt_at, duration_ms, error, error_kind, output, usage, progress, heartbeat_at, attempt_base";

/// Columns of a step row, as bound by [`insert_group`].
const COLUMN_COUNT: usize = 19;
/// Step rows one insert holds: D1 binds at most 100 parameters per statement, so a run's
/// steps take one statement per five steps instead of one per step.
pub const ROWS_PER_INSERT: usize = 100 / COLUMN_COUNT;

/// Inserts a group of a run's steps (at most [`ROWS_PER_INSERT`]) in one statement.
pub fn insert_group(db: &Db, rows: &[StepRow]) -> Result<Stmt> {
    if rows.len() > ROWS_PER_INSERT {
        return Err(crate::Error::Internal(format!(
            "{} step rows in one insert (at most {ROWS_PER_INSERT})",
            rows.len()
        )));
    }
    let values: Vec<String> = (0..rows.len())
        .map(|r| {
            let params: Vec<String> = (1..=COLUMN_COUNT).map(|c| format!("?{}", r * COLUMN_COUNT + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let args: Vec<Arg> = rows.iter().flat_map(row_args).collect();
    db.stmt(&format!("INSERT INTO steps ({COLUMNS}) VALUES {}", values.join(", ")), &args)
}

fn row_args(s: &StepRow) -> [Arg; COLUMN_COUNT] {
    [
        Arg::from(&s.run_id),
        Arg::from(&s.service),
        Arg::Int(s.position),
        Arg::Int(s.wave),
        Arg::from(s.status.as_str()),
        Arg::Int(s.attempts),
        Arg::from(s.started_at),
        Arg::from(s.claimed_at),
        Arg::from(s.finished_at),
        Arg::from(s.deadline_at),
        Arg::from(s.next_attempt_at),
        Arg::from(s.duration_ms),
        Arg::from(s.error.clone()),
        Arg::from(s.error_kind.clone()),
        Arg::from(s.output.clone()),
        Arg::from(s.usage.clone()),
        Arg::from(s.progress.clone()),
        Arg::from(s.heartbeat_at),
        Arg::Int(s.attempt_base),
    ]
}

/// Creates items `0..count` of map step `step` (at its `position` and `wave`), `pending`, but
/// for those that exist already (a retried run keeps its items), only under the run's gate
/// `token`: one statement for any number of items.
pub fn insert_items(
    db: &Db,
    run_id: &str,
    step: &str,
    position: i64,
    wave: i64,
    count: u32,
    token: i64,
) -> Result<Stmt> {
    db.stmt(
        "WITH RECURSIVE idx(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM idx WHERE i + 1 < ?5) \
         INSERT OR IGNORE INTO steps (run_id, service, position, wave, status, attempts, attempt_base) \
         SELECT ?1, ?2 || '.' || i, ?3, ?4, 'pending', 0, 0 FROM idx \
         WHERE ?5 > 0 AND EXISTS (SELECT 1 FROM runs WHERE runs.run_id = ?1 AND runs.version = ?6)",
        &[
            Arg::from(run_id),
            Arg::from(step),
            Arg::Int(position),
            Arg::Int(wave),
            Arg::Int(i64::from(count)),
            Arg::Int(token),
        ],
    )
}

/// A run's steps in plan order.
pub async fn of_run(db: &Db, run_id: &str) -> Result<Vec<StepRow>> {
    let (rows, _) = db
        .all(&format!("SELECT {COLUMNS} FROM steps WHERE run_id = ?1 ORDER BY position"), &[Arg::from(run_id)])
        .await?;
    Ok(rows)
}

/// Writes a step's new state only if it is still in the state it was read in
/// (same status and attempt count): compare-and-set, so of two racing writers exactly one
/// wins (`changes` = 1) and the other learns it lost. A new attempt clears `claimed_at`
/// unless `claim` claims it for the writer. With `gate`, only under that gate of the run
/// ([`super::runs::gate`]).
pub fn compare_and_set(
    db: &Db,
    expected_status: StepStatus,
    expected_attempts: i64,
    new: &StepRow,
    claim: Option<i64>,
    gate: Option<i64>,
) -> Result<Stmt> {
    let mut args = vec![
        Arg::from(&new.run_id),
        Arg::from(&new.service),
        Arg::from(new.status.as_str()),
        Arg::Int(new.attempts),
        Arg::from(new.started_at),
        Arg::from(new.finished_at),
        Arg::from(new.deadline_at),
        Arg::from(new.next_attempt_at),
        Arg::from(new.duration_ms),
        Arg::from(new.error.clone()),
        Arg::from(new.error_kind.clone()),
        Arg::from(new.output.clone()),
        Arg::from(new.usage.clone()),
        Arg::from(new.progress.clone()),
        Arg::from(expected_status.as_str()),
        Arg::Int(expected_attempts),
        Arg::from(claim),
        Arg::from(new.heartbeat_at),
        Arg::Int(new.attempt_base),
    ];
    let gated = match gate {
        Some(token) => {
            args.push(Arg::Int(token));
            " AND EXISTS (SELECT 1 FROM runs WHERE runs.run_id = ?1 AND runs.version = ?20)"
        }
        None => "",
    };
    db.stmt(
        &format!(
            "UPDATE steps SET status = ?3, attempts = ?4, started_at = ?5, finished_at = ?6, deadline_at = ?7, \
             next_attempt_at = ?8, duration_ms = ?9, error = ?10, error_kind = ?11, output = ?12, usage = ?13, \
             progress = ?14, heartbeat_at = ?18, attempt_base = ?19, claimed_at = CASE WHEN ?17 IS NOT NULL THEN ?17 WHEN attempts = ?4 THEN claimed_at \
             ELSE NULL END WHERE run_id = ?1 AND service = ?2 AND status = ?15 AND attempts = ?16{gated}"
        ),
        &args,
    )
}

/// A consumer claims the execution of a dispatched attempt: only the first delivery of a
/// task message for that attempt wins (`changes` = 1); duplicates see 0 and do nothing.
pub fn claim_start(db: &Db, run_id: &str, service: &str, attempt: i64, now: i64) -> Result<Stmt> {
    db.stmt(
        &format!(
            "UPDATE steps SET claimed_at = ?4 WHERE run_id = ?1 AND service = ?2 AND status = {} \
         AND attempts = ?3 AND claimed_at IS NULL",
            literal(StepStatus::Running.as_str())
        ),
        &[Arg::from(run_id), Arg::from(service), Arg::Int(attempt), Arg::Int(now)],
    )
}

/// Gives up this caller's claim on a running attempt (it could not run it), so that the
/// attempt's task message can claim it.
pub fn release_claim(db: &Db, run_id: &str, service: &str, attempt: i64, claimed_at: i64) -> Result<Stmt> {
    db.stmt(
        &format!(
            "UPDATE steps SET claimed_at = NULL WHERE run_id = ?1 AND service = ?2 AND status = {} \
         AND attempts = ?3 AND claimed_at = ?4",
            literal(StepStatus::Running.as_str())
        ),
        &[Arg::from(run_id), Arg::from(service), Arg::Int(attempt), Arg::Int(claimed_at)],
    )
}

/// Running attempts past their timeout, earliest first (partial index `steps_running_deadline`).
pub async fn overdue(db: &Db, now: i64, limit: u32) -> Result<(Vec<(String, String)>, super::Meta)> {
    #[derive(Deserialize)]
    struct Key {
        run_id: String,
        service: String,
    }
    let (rows, meta) = db
        .all::<Key>(
            &format!(
                "SELECT run_id, service FROM steps WHERE status = {} AND deadline_at <= ?1 ORDER BY deadline_at \
                 LIMIT ?2",
                literal(StepStatus::Running.as_str())
            ),
            &[Arg::Int(now), Arg::from(limit)],
        )
        .await?;
    Ok((rows.into_iter().map(|k| (k.run_id, k.service)).collect(), meta))
}

/// Retries whose backoff elapsed more than `grace_ms` ago (their delayed message was lost).
pub async fn stale_retries(db: &Db, now: i64, grace_ms: i64, limit: u32) -> Result<(Vec<StepRow>, super::Meta)> {
    db.all(
        &format!(
            "SELECT {COLUMNS} FROM steps WHERE status = {} AND next_attempt_at <= ?1 \
             ORDER BY next_attempt_at LIMIT ?2",
            literal(StepStatus::Retrying.as_str())
        ),
        &[Arg::Int(now - grace_ms), Arg::from(limit)],
    )
    .await
}

/// `SELECT` of a run's steps in plan order, for batching with other statements.
pub fn select_of_run(db: &Db, run_id: &str) -> Result<Stmt> {
    db.stmt(&format!("SELECT {COLUMNS} FROM steps WHERE run_id = ?1 ORDER BY position"), &[Arg::from(run_id)])
}

/// The steps of several runs (at most 100), by run and position.
pub fn select_of_runs(db: &Db, run_ids: &[&str]) -> Result<Stmt> {
    let (list, args) = super::id_list(run_ids)?;
    db.stmt(&format!("SELECT {COLUMNS} FROM steps WHERE run_id IN ({list}) ORDER BY run_id, position"), &args)
}

/// Deletes the steps and the attempts' history of several ended runs, each only as the version
/// read (in the batch that then deletes the runs; at most 100).
pub fn delete_of_runs_if_versions(db: &Db, runs: &[(&str, i64)]) -> Result<Vec<Stmt>> {
    let (guard, args) = super::ended_as_read(runs)?;
    Ok(vec![
        db.stmt(&format!("DELETE FROM step_attempts WHERE {guard}"), &args)?,
        db.stmt(&format!("DELETE FROM steps WHERE {guard}"), &args)?,
    ])
}

/// The scheduling columns of the steps of several runs (payload columns read as NULL), at
/// most 100 runs per statement (D1's bound-parameter limit).
pub async fn scheduling_of_runs(db: &Db, run_ids: &[&str]) -> Result<Vec<StepRow>> {
    let mut rows = Vec::new();
    for chunk in run_ids.chunks(100) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("?{i}")).collect();
        let args: Vec<Arg> = chunk.iter().map(|id| Arg::from(*id)).collect();
        let (mut part, _) = db
            .all::<StepRow>(
                &format!(
                    "SELECT run_id, service, position, wave, status, attempts, started_at, claimed_at, finished_at, \
                     deadline_at, next_attempt_at, duration_ms, error, error_kind, NULL AS output, NULL AS usage, \
                     NULL AS progress, heartbeat_at, attempt_base FROM steps WHERE run_id IN ({}) ORDER BY run_id, position",
                    placeholders.join(", ")
                ),
                &args,
            )
            .await?;
        rows.append(&mut part);
    }
    Ok(rows)
}

/// Marks a running attempt whose service accepted the work asynchronously and reports
/// progress: it is asked every `interval_ms` (`progress` JSON, `{"pollable": true, ...}`).
pub fn mark_progress_pollable(
    db: &Db,
    run_id: &str,
    service: &str,
    worker: &str,
    attempt: u32,
    now: i64,
    interval_ms: u64,
) -> Result<Stmt> {
    db.stmt(
        &format!(
            "UPDATE steps SET progress = json_object('pollable', json('true'), 'accepted_at', ?4, 'worker', ?5, \
         'interval_ms', ?6) WHERE run_id = ?1 AND service = ?2 AND status = {} AND attempts = ?3",
            literal(StepStatus::Running.as_str())
        ),
        &[
            Arg::from(run_id),
            Arg::from(service),
            Arg::from(attempt),
            Arg::Int(now),
            Arg::from(worker),
            Arg::Int(interval_ms as i64),
        ],
    )
}

/// Running attempts that report progress, least recently polled first (partial index
/// `steps_progress`).
pub async fn pollable(db: &Db, limit: u32) -> Result<(Vec<PollableStep>, super::Meta)> {
    db.all::<PollableStep>(
        &format!(
            "SELECT run_id, service, attempts, json_extract(progress, '$.worker') AS worker FROM steps \
         WHERE status = {} AND progress IS NOT NULL ORDER BY deadline_at LIMIT ?1",
            literal(StepStatus::Running.as_str())
        ),
        &[Arg::from(limit)],
    )
    .await
}

/// A running attempt whose service reports progress.
#[derive(Debug, Clone, Deserialize)]
pub struct PollableStep {
    /// The run.
    pub run_id: String,
    /// The step.
    pub service: String,
    /// Its current attempt.
    pub attempts: i64,
    /// The worker key its service is reached by (absent in rows marked before it was kept).
    pub worker: Option<String>,
}

/// Records a heartbeat of a running attempt with what the service said (only while that
/// attempt still runs).
pub fn record_heartbeat(
    db: &Db,
    run_id: &str,
    service: &str,
    attempts: i64,
    progress_json: &str,
    now: i64,
) -> Result<Stmt> {
    db.stmt(
        &format!(
            "UPDATE steps SET progress = ?4, heartbeat_at = ?5 WHERE run_id = ?1 AND service = ?2 \
         AND status = {} AND attempts = ?3",
            literal(StepStatus::Running.as_str())
        ),
        &[Arg::from(run_id), Arg::from(service), Arg::Int(attempts), Arg::from(progress_json), Arg::Int(now)],
    )
}

const RUN_AS_READ: &str = "EXISTS (SELECT 1 FROM runs WHERE run_id = ?1 AND version = ?2 AND completed_at IS NOT NULL)";

/// Deletes a run's attempts' history (`step_attempts`), only while the run is still the ended
/// version read (in the batch that then deletes the run).
pub fn delete_attempts_if_version(db: &Db, run_id: &str, version: i64) -> Result<Stmt> {
    db.stmt(
        &format!("DELETE FROM step_attempts WHERE run_id = ?1 AND {RUN_AS_READ}"),
        &[Arg::from(run_id), Arg::Int(version)],
    )
}

/// Deletes a run's steps, only while the run is still the ended version read (in the batch
/// that then deletes the run).
pub fn delete_of_run_if_version(db: &Db, run_id: &str, version: i64) -> Result<Stmt> {
    db.stmt(&format!("DELETE FROM steps WHERE run_id = ?1 AND {RUN_AS_READ}"), &[Arg::from(run_id), Arg::Int(version)])
}
