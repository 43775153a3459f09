//! `kbase_events`: lifecycle events, the diagnosis, service results.

use serde::{Deserialize, Serialize};

use super::{Arg, Db, Stmt};
use crate::Result;

/// One event row. `payload` is JSON text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventRow {
    pub id: String,
    pub website_id: String,
    pub run_id: String,
    pub service: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub payload: String,
    pub created_at: i64,
    /// Events that must exist at most once per run carry a key (`run:{id}:finish`, ...).
    pub dedupe_key: Option<String>,
}

/// The event's columns as arguments `?1`..`?8`, in table order.
fn event_args(e: &EventRow) -> Vec<Arg> {
    vec![
        Arg::from(&e.id),
        Arg::from(&e.website_id),
        Arg::from(&e.run_id),
        Arg::from(&e.service),
        Arg::from(&e.kind),
        Arg::from(&e.payload),
        Arg::Int(e.created_at),
        Arg::from(e.dedupe_key.clone()),
    ]
}

/// Inserts an event; a second event with the same `dedupe_key` is ignored (`changes` = 0).
pub fn insert(db: &Db, e: &EventRow) -> Result<Stmt> {
    db.stmt(
        "INSERT OR IGNORE INTO kbase_events (id, website_id, run_id, service, type, payload, created_at, dedupe_key) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        &event_args(e),
    )
}

/// A run's events, oldest first.
pub async fn of_run(db: &Db, run_id: &str) -> Result<Vec<EventRow>> {
    let (rows, _) = db.all::<EventRow>(EVENTS_OF_RUN, &[Arg::from(run_id)]).await?;
    Ok(rows)
}

const EVENTS_OF_RUN: &str = "SELECT id, website_id, run_id, service, type, payload, created_at, dedupe_key \
     FROM kbase_events WHERE run_id = ?1 ORDER BY created_at, id";

/// The events of several runs (at most 100), each run's in the order [`of_run`] gives.
pub fn of_runs_stmt(db: &Db, run_ids: &[&str]) -> Result<Stmt> {
    let (list, args) = super::id_list(run_ids)?;
    db.stmt(
        &format!(
            "SELECT id, website_id, run_id, service, type, payload, created_at, dedupe_key              FROM kbase_events WHERE run_id IN ({list}) ORDER BY run_id, created_at, id"
        ),
        &args,
    )
}

/// Deletes the events of several ended runs, each only as the version read (at most 100).
pub fn delete_of_runs_if_versions(db: &Db, runs: &[(&str, i64)]) -> Result<Stmt> {
    let (guard, args) = super::ended_as_read(runs)?;
    db.stmt(&format!("DELETE FROM kbase_events WHERE {guard}"), &args)
}

/// [`of_run`] as a statement, to batch with others.
pub fn of_run_stmt(db: &Db, run_id: &str) -> Result<Stmt> {
    db.stmt(EVENTS_OF_RUN, &[Arg::from(run_id)])
}

/// The event with this dedupe key, if written.
pub async fn by_dedupe_key(db: &Db, key: &str) -> Result<Option<EventRow>> {
    db.first::<EventRow>(
        "SELECT id, website_id, run_id, service, type, payload, created_at, dedupe_key \
         FROM kbase_events WHERE dedupe_key = ?1",
        &[Arg::from(key)],
    )
    .await
}

/// Inserts an event only if the run's version is `token`: written in the same batch as the
/// change that sets that version (a run's ending), so only the caller whose change went in
/// writes its events.
pub fn insert_if_run_version(db: &Db, e: &EventRow, token: i64) -> Result<Stmt> {
    db.stmt(
        "INSERT OR IGNORE INTO kbase_events (id, website_id, run_id, service, type, payload, created_at, dedupe_key) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ?3 AND version = ?9)",
        &[event_args(e), vec![Arg::Int(token)]].concat(),
    )
}

/// Deletes a run's events, only while the run is still the version read (in the batch that
/// then deletes the run).
pub fn delete_of_run_if_version(db: &Db, run_id: &str, version: i64) -> Result<Stmt> {
    db.stmt(
        "DELETE FROM kbase_events WHERE run_id = ?1 \
         AND EXISTS (SELECT 1 FROM runs WHERE run_id = ?1 AND version = ?2 AND completed_at IS NOT NULL)",
        &[Arg::from(run_id), Arg::Int(version)],
    )
}
