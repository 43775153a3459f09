//! `run_inbox`: events delivered to runs for their wait steps, one per run and name.

use serde::Deserialize;

use super::{Arg, Db, Stmt};
use crate::Result;

/// One delivered event. `payload` is JSON text.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct InboxRow {
    pub name: String,
    pub payload: String,
    pub received_at: i64,
}

/// The events delivered to `run_id`.
pub async fn of_run(db: &Db, run_id: &str) -> Result<Vec<InboxRow>> {
    let (rows, _) = db
        .all("SELECT name, payload, received_at FROM run_inbox WHERE run_id = ?1 ORDER BY name", &[Arg::from(run_id)])
        .await?;
    Ok(rows)
}

/// Keeps an event for `run_id`; a second one of the same name is ignored (`changes` = 0).
pub fn insert(db: &Db, run_id: &str, row: &InboxRow) -> Result<Stmt> {
    db.stmt(
        "INSERT OR IGNORE INTO run_inbox (run_id, name, payload, received_at) VALUES (?1, ?2, ?3, ?4)",
        &[Arg::from(run_id), Arg::from(&row.name), Arg::from(&row.payload), Arg::Int(row.received_at)],
    )
}

/// Deletes a run's events, only while the run is still the version read (in the batch that
/// then deletes the run).
pub fn delete_of_run_if_version(db: &Db, run_id: &str, version: i64) -> Result<Stmt> {
    db.stmt(
        "DELETE FROM run_inbox WHERE run_id = ?1 \
         AND EXISTS (SELECT 1 FROM runs WHERE run_id = ?1 AND version = ?2 AND completed_at IS NOT NULL)",
        &[Arg::from(run_id), Arg::Int(version)],
    )
}
