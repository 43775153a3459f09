//! `schedules` and `schedule_fires`: a client's schedules, and the slots they fired.

use baton_core::schedule::FireStatus;
use serde::{Deserialize, Serialize};

use super::{literal, Arg, Db, Meta, Stmt};
use crate::Result;

/// Every column of a schedule row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScheduleRow {
    pub schedule_id: String,
    pub client_id: String,
    pub name: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub interval_seconds: Option<i64>,
    pub missed: String,
    pub website_id: String,
    pub domain: String,
    pub plan_id: String,
    pub parameters: String,
    pub paused: i64,
    pub next_slot: Option<i64>,
    pub fire_token: Option<i64>,
    pub last_slot: Option<i64>,
    pub last_run_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "schedule_id, client_id, name, cron, timezone, interval_seconds, missed, website_id, domain, \
    plan_id, parameters, paused, next_slot, fire_token, last_slot, last_run_id, last_error, created_at, updated_at";

/// A fired slot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FireRow {
    pub schedule_id: String,
    pub slot: i64,
    pub run_id: String,
    pub status: FireStatus,
    pub error: Option<String>,
    pub fired_at: i64,
}

/// Inserts a schedule.
pub async fn insert(db: &Db, s: &ScheduleRow) -> Result<Meta> {
    db.run(
        &format!(
            "INSERT INTO schedules ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
             ?15, ?16, ?17, ?18, ?19)"
        ),
        &[
            Arg::from(&s.schedule_id),
            Arg::from(&s.client_id),
            Arg::from(s.name.clone()),
            Arg::from(s.cron.clone()),
            Arg::from(s.timezone.clone()),
            Arg::from(s.interval_seconds),
            Arg::from(&s.missed),
            Arg::from(&s.website_id),
            Arg::from(&s.domain),
            Arg::from(&s.plan_id),
            Arg::from(&s.parameters),
            Arg::Int(s.paused),
            Arg::from(s.next_slot),
            Arg::from(s.fire_token),
            Arg::from(s.last_slot),
            Arg::from(s.last_run_id.clone()),
            Arg::from(s.last_error.clone()),
            Arg::Int(s.created_at),
            Arg::Int(s.updated_at),
        ],
    )
    .await
}

/// One of `client_id`'s schedules.
pub async fn get(db: &Db, client_id: &str, schedule_id: &str) -> Result<Option<ScheduleRow>> {
    db.first(
        &format!("SELECT {COLUMNS} FROM schedules WHERE schedule_id = ?1 AND client_id = ?2"),
        &[Arg::from(schedule_id), Arg::from(client_id)],
    )
    .await
}

/// A page of `client_id`'s schedules, oldest first, after `after` (a schedule id).
pub async fn page(db: &Db, client_id: &str, after: Option<&str>, limit: u32) -> Result<Vec<ScheduleRow>> {
    let (rows, _) = db
        .all(
            &format!(
                "SELECT {COLUMNS} FROM schedules WHERE client_id = ?1 AND schedule_id > ?2 \
                 ORDER BY schedule_id LIMIT ?3"
            ),
            &[Arg::from(client_id), Arg::from(after.unwrap_or("")), Arg::from(limit)],
        )
        .await?;
    Ok(rows)
}

/// A schedule, whoever's it is (for the poller).
pub async fn by_id(db: &Db, schedule_id: &str) -> Result<Option<ScheduleRow>> {
    db.first(&format!("SELECT {COLUMNS} FROM schedules WHERE schedule_id = ?1"), &[Arg::from(schedule_id)]).await
}

/// Rewrites what a client may change (timing, target, pause), if the schedule is
/// `client_id`'s; with `reset_next`, also the next slot (a new timing, or a resume), else the
/// next slot stays whatever a tick made it. `changes` = 0: no such schedule.
pub async fn update(db: &Db, s: &ScheduleRow, reset_next: bool) -> Result<Meta> {
    db.run(
        "UPDATE schedules SET name = ?3, cron = ?4, timezone = ?5, interval_seconds = ?6, missed = ?7, \
         website_id = ?8, domain = ?9, plan_id = ?10, parameters = ?11, paused = ?12, \
         next_slot = CASE WHEN ?15 = 1 THEN ?13 ELSE next_slot END, \
         updated_at = ?14 WHERE schedule_id = ?1 AND client_id = ?2",
        &[
            Arg::from(&s.schedule_id),
            Arg::from(&s.client_id),
            Arg::from(s.name.clone()),
            Arg::from(s.cron.clone()),
            Arg::from(s.timezone.clone()),
            Arg::from(s.interval_seconds),
            Arg::from(&s.missed),
            Arg::from(&s.website_id),
            Arg::from(&s.domain),
            Arg::from(&s.plan_id),
            Arg::from(&s.parameters),
            Arg::Int(s.paused),
            Arg::from(s.next_slot),
            Arg::Int(s.updated_at),
            Arg::from(reset_next),
        ],
    )
    .await
}

/// Deletes one of `client_id`'s schedules (its fired slots stay, naming their runs).
pub async fn delete(db: &Db, client_id: &str, schedule_id: &str) -> Result<Meta> {
    db.run(
        "DELETE FROM schedules WHERE schedule_id = ?1 AND client_id = ?2",
        &[Arg::from(schedule_id), Arg::from(client_id)],
    )
    .await
}

/// Active schedules whose next slot is at or before `now`, through `schedules_due`.
pub async fn due(db: &Db, now: i64, limit: u32) -> Result<(Vec<ScheduleRow>, Meta)> {
    db.all(
        &format!(
            "SELECT {COLUMNS} FROM schedules WHERE paused = 0 AND next_slot IS NOT NULL AND next_slot <= ?1 \
             ORDER BY next_slot LIMIT ?2"
        ),
        &[Arg::Int(now), Arg::from(limit)],
    )
    .await
}

/// The claim of a slot, two statements in one batch. The first moves `next_slot` from the
/// value read (`read`) to `next` and stamps the claimer's `token`, only if the schedule is
/// still active and no one moved it: exactly one of racing ticks sees `changes` = 1. The
/// second records the fired slot (`fire`, its run id chosen beforehand) as `claimed`, only if
/// the schedule carries that token, so it is written by the winner alone; the slot's primary
/// key refuses a second row for the same slot whatever else races. `fire` = `None`: the slots
/// were skipped, only `next_slot` moves.
pub fn claim(
    db: &Db,
    schedule_id: &str,
    read: i64,
    next: Option<i64>,
    token: i64,
    fire: Option<&FireRow>,
) -> Result<Vec<Stmt>> {
    let mut statements = vec![db.stmt(
        "UPDATE schedules SET next_slot = ?3, fire_token = ?4, last_slot = COALESCE(?5, last_slot), \
         last_run_id = COALESCE(?6, last_run_id) \
         WHERE schedule_id = ?1 AND next_slot = ?2 AND paused = 0",
        &[
            Arg::from(schedule_id),
            Arg::Int(read),
            Arg::from(next),
            Arg::Int(token),
            Arg::from(fire.map(|f| f.slot)),
            Arg::from(fire.map(|f| f.run_id.clone())),
        ],
    )?];
    if let Some(f) = fire {
        statements.push(db.stmt(
            "INSERT OR IGNORE INTO schedule_fires (schedule_id, slot, run_id, status, fired_at) \
             SELECT ?1, ?2, ?3, ?6, ?4 FROM schedules WHERE schedule_id = ?1 AND fire_token = ?5",
            &[
                Arg::from(schedule_id),
                Arg::Int(f.slot),
                Arg::from(&f.run_id),
                Arg::Int(f.fired_at),
                Arg::Int(token),
                Arg::from(FireStatus::Claimed.as_str()),
            ],
        )?);
    }
    Ok(statements)
}

/// Marks a fired slot as started, or failed with `error` (and the schedule's `last_error`).
pub async fn settle_fire(db: &Db, fire: &FireRow, error: Option<&str>) -> Result<()> {
    let status = if error.is_some() { FireStatus::Failed } else { FireStatus::Started };
    db.batch(vec![
        db.stmt(
            "UPDATE schedule_fires SET status = ?3, error = ?4 WHERE schedule_id = ?1 AND slot = ?2",
            &[Arg::from(&fire.schedule_id), Arg::Int(fire.slot), Arg::from(status.as_str()), Arg::from(error)],
        )?,
        db.stmt(
            "UPDATE schedules SET last_error = ?2 WHERE schedule_id = ?1",
            &[Arg::from(&fire.schedule_id), Arg::from(error)],
        )?,
    ])
    .await?;
    Ok(())
}

/// Fired slots still `claimed` since before `before`: their run may not have started (the
/// tick that claimed them stopped), through `schedule_fires_claimed`.
pub async fn stranded(db: &Db, before: i64, limit: u32) -> Result<Vec<FireRow>> {
    let (rows, _) = db
        .all(
            &format!(
                "SELECT schedule_id, slot, run_id, status, error, fired_at FROM schedule_fires \
                 WHERE status = {} AND fired_at < ?1 ORDER BY fired_at LIMIT ?2",
                literal(FireStatus::Claimed.as_str())
            ),
            &[Arg::Int(before), Arg::from(limit)],
        )
        .await?;
    Ok(rows)
}

/// The fired slot that started `run_id`, if a schedule started it.
pub async fn fire_of_run(db: &Db, run_id: &str) -> Result<Option<FireRow>> {
    db.first(
        "SELECT schedule_id, slot, run_id, status, error, fired_at FROM schedule_fires WHERE run_id = ?1",
        &[Arg::from(run_id)],
    )
    .await
}

/// Deletes up to `limit` fires that started or failed before `before` (index
/// `schedule_fires_settled`); a fire still claimed stays.
pub fn prune_settled(db: &Db, before: i64, limit: u32) -> Result<Stmt> {
    db.stmt(
        &format!(
            "DELETE FROM schedule_fires WHERE rowid IN (SELECT rowid FROM schedule_fires \
             WHERE status <> {} AND fired_at < ?1 ORDER BY fired_at LIMIT ?2)",
            literal(FireStatus::Claimed.as_str())
        ),
        &[Arg::Int(before), Arg::from(limit)],
    )
}
