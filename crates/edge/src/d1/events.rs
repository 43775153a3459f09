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
    let (rows, _) = db
        .all::<EventRow>(
            "SELECT id, website_id, run_id, service, type, payload, created_at, dedupe_key \
             FROM kbase_events WHERE run_id = ?1 ORDER BY created_at, id",
            &[Arg::from(run_id)],
        )
        .await?;
    Ok(rows)
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

/// Inserts an event only if the run now has this status and this diagnosis: used in the
/// finalisation batch so only the delivery that finalised the run writes its events.
pub fn insert_if_run_status(db: &Db, e: &EventRow, run_status: &str, diagnosis_event_id: &str) -> Result<Stmt> {
    db.stmt(
        "INSERT OR IGNORE INTO kbase_events (id, website_id, run_id, service, type, payload, created_at, dedupe_key) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE EXISTS \
         (SELECT 1 FROM runs WHERE run_id = ?3 AND status = ?9 AND diagnosis_event_id = ?10)",
        &[event_args(e), vec![Arg::from(run_status), Arg::from(diagnosis_event_id)]].concat(),
    )
}

/// Inserts an event only if the run is now in `run_status` and none of its steps can still
/// change: the finish event of a cancelled run is written once its steps are all settled.
pub fn insert_if_run_settled(db: &Db, e: &EventRow, run_status: &str) -> Result<Stmt> {
    db.stmt(
        "INSERT OR IGNORE INTO kbase_events (id, website_id, run_id, service, type, payload, created_at, dedupe_key) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 \
         WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ?3 AND status = ?9) \
         AND NOT EXISTS (SELECT 1 FROM steps WHERE run_id = ?3 AND status IN ('pending', 'running', 'retrying'))",
        &[event_args(e), vec![Arg::from(run_status)]].concat(),
    )
}
