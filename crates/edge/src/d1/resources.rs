//! `resource_pools`, `resource_allocations`, `resource_stats`, `resource_usage`: what
//! executions reserve, and the history their estimates come from.
//!
//! A reservation is never a read-then-write: the admission claim checks every pool's room in
//! its own guarded statement (see [`super::executions::admit`]), and the statements here that
//! follow it in the same batch take effect only when that claim matched (they test the
//! admission token). A release takes effect once: it is guarded by the allocation being held.

use baton_core::execution::{Pool, UsageSample, UsageStat};
use baton_core::lifecycle;
use serde::Deserialize;

use super::{Arg, Db, Meta, Stmt};
use crate::Result;

/// Every pool.
pub async fn pools(db: &Db) -> Result<Vec<Pool>> {
    #[derive(Deserialize)]
    struct Row {
        resource: String,
        capacity: i64,
        in_use: i64,
    }
    let (rows, _) =
        db.all::<Row>("SELECT resource, capacity, in_use FROM resource_pools ORDER BY resource", &[]).await?;
    Ok(rows
        .into_iter()
        .map(|r| Pool { resource: r.resource, capacity: r.capacity.max(0) as u64, in_use: r.in_use.max(0) as u64 })
        .collect())
}

/// The running averages of these workers (at most 100 per statement).
pub async fn stats_of(db: &Db, workers: &[&str]) -> Result<Vec<UsageStat>> {
    #[derive(Deserialize)]
    struct Row {
        service: String,
        resource: String,
        samples: i64,
        total: i64,
    }
    let mut stats = Vec::new();
    for chunk in workers.chunks(100) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("?{i}")).collect();
        let args: Vec<Arg> = chunk.iter().map(|w| Arg::from(*w)).collect();
        let (rows, _) = db
            .all::<Row>(
                &format!(
                    "SELECT service, resource, samples, total FROM resource_stats WHERE service IN ({})",
                    placeholders.join(", ")
                ),
                &args,
            )
            .await?;
        stats.extend(rows.into_iter().map(|r| UsageStat {
            worker: r.service,
            resource: r.resource,
            samples: r.samples.max(0) as u64,
            total: r.total.max(0) as u64,
        }));
    }
    Ok(stats)
}

/// The reservation that follows an admission claim in the same batch: one held allocation
/// and one pool increment per resource, each only if execution `run_id` carries `token`.
pub fn reserve(
    db: &Db,
    run_id: &str,
    token: &str,
    demand: &[(String, u64)],
    now: i64,
    expires_at: i64,
) -> Result<Vec<Stmt>> {
    let admitted = "EXISTS (SELECT 1 FROM execution_queue WHERE run_id = ?1 AND admission_token = ?2)";
    let mut statements = Vec::new();
    for (resource, quantity) in demand {
        statements.push(db.stmt(
            &format!(
                "INSERT INTO resource_allocations (run_id, resource, quantity, status, created_at, expires_at) \
                 SELECT ?1, ?3, ?4, 'held', ?5, ?6 WHERE {admitted}"
            ),
            &[
                Arg::from(run_id),
                Arg::from(token),
                Arg::from(resource),
                Arg::from(*quantity),
                Arg::Int(now),
                Arg::Int(expires_at),
            ],
        )?);
        statements.push(db.stmt(
            &format!("UPDATE resource_pools SET in_use = in_use + ?4 WHERE resource = ?3 AND {admitted}"),
            &[Arg::from(run_id), Arg::from(token), Arg::from(resource), Arg::from(*quantity)],
        )?);
    }
    Ok(statements)
}

/// Runs holding a reservation they no longer need: their run ended (or never started and
/// the reservation expired), or the reservation expired (`resource_allocations_expiry`;
/// held reservations are few, bounded by the pools).
pub async fn releasable(db: &Db, now: i64, limit: u32) -> Result<(Vec<String>, Meta)> {
    #[derive(Deserialize)]
    struct Row {
        run_id: String,
    }
    let (rows, meta) = db
        .all::<Row>(
            &format!(
                "SELECT DISTINCT a.run_id FROM resource_allocations a LEFT JOIN runs r ON r.run_id = a.run_id \
                 WHERE a.status = 'held' AND (a.expires_at <= ?1 OR r.status IN ({})) LIMIT ?2",
                super::runs::status_list(lifecycle::ENDED)
            ),
            &[Arg::Int(now), Arg::from(limit)],
        )
        .await?;
    Ok((rows.into_iter().map(|r| r.run_id).collect(), meta))
}

/// Releases a run's reservation and adds what its steps used to history, once: every
/// statement is guarded by the allocation still being held, and the last one releases it.
pub fn release(db: &Db, run_id: &str, samples: &[UsageSample], now: i64) -> Result<Vec<Stmt>> {
    let held = "EXISTS (SELECT 1 FROM resource_allocations WHERE run_id = ?1 AND status = 'held')";
    let mut statements = Vec::new();
    for sample in samples {
        statements.push(db.stmt(
            &format!(
                "INSERT INTO resource_stats (service, resource, samples, total) SELECT ?2, ?3, 1, ?4 WHERE {held} \
                 ON CONFLICT (service, resource) DO UPDATE SET samples = samples + 1, total = total + excluded.total"
            ),
            &[Arg::from(run_id), Arg::from(&sample.worker), Arg::from(&sample.resource), Arg::from(sample.quantity)],
        )?);
        statements.push(db.stmt(
            &format!(
                "INSERT OR IGNORE INTO resource_usage (run_id, service, resource, quantity, recorded_at) \
                 SELECT ?1, ?2, ?3, ?4, ?5 WHERE {held}"
            ),
            &[
                Arg::from(run_id),
                Arg::from(&sample.service),
                Arg::from(&sample.resource),
                Arg::from(sample.quantity),
                Arg::Int(now),
            ],
        )?);
    }
    statements.push(db.stmt(
        "UPDATE resource_pools SET in_use = MAX(0, in_use - COALESCE((SELECT SUM(quantity) FROM resource_allocations a \
         WHERE a.run_id = ?1 AND a.resource = resource_pools.resource AND a.status = 'held'), 0)) \
         WHERE resource IN (SELECT resource FROM resource_allocations WHERE run_id = ?1 AND status = 'held')",
        &[Arg::from(run_id)],
    )?);
    statements.push(db.stmt(
        "UPDATE resource_allocations SET status = 'released' WHERE run_id = ?1 AND status = 'held'",
        &[Arg::from(run_id)],
    )?);
    Ok(statements)
}
