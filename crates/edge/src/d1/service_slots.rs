//! `service_slots`: the attempts in flight of services with a concurrency cap.

use baton_core::state::StepStatus;

use super::{literal, Arg, Db, Stmt};
use crate::Result;

/// Takes a slot of `worker` for an attempt, only while fewer than `cap` unexpired slots are
/// taken (`changes` = 1: taken).
#[allow(clippy::too_many_arguments)]
pub fn take(
    db: &Db,
    worker: &str,
    run_id: &str,
    service: &str,
    attempt: u32,
    now: i64,
    expires_at: i64,
    cap: u32,
) -> Result<Stmt> {
    db.stmt(
        "INSERT OR IGNORE INTO service_slots (run_id, service, attempt, worker, taken_at, expires_at) \
         SELECT ?2, ?3, ?4, ?1, ?5, ?6 \
         WHERE (SELECT COUNT(*) FROM service_slots WHERE worker = ?1 AND expires_at > ?5) < ?7",
        &[
            Arg::from(worker),
            Arg::from(run_id),
            Arg::from(service),
            Arg::from(attempt),
            Arg::Int(now),
            Arg::Int(expires_at),
            Arg::from(cap),
        ],
    )
}

/// Gives back the slot of an attempt once that attempt has ended in `steps` (so a write that
/// lost its race gives back nothing). Nothing if it holds none.
pub fn release(db: &Db, run_id: &str, service: &str, attempt: u32) -> Result<Stmt> {
    db.stmt(
        &format!(
            "DELETE FROM service_slots WHERE run_id = ?1 AND service = ?2 AND attempt = ?3 \
         AND NOT EXISTS (SELECT 1 FROM steps WHERE run_id = ?1 AND service = ?2 AND status = {} \
         AND attempts = ?3)",
            literal(StepStatus::Running.as_str())
        ),
        &[Arg::from(run_id), Arg::from(service), Arg::from(attempt)],
    )
}
