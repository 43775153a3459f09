//! Admission of pipeline executions: one pass releases what ended runs held, starts again
//! what was admitted but not started, fails what waited past its deadline, then admits the
//! queue's head — highest priority, then oldest — for as long as the pools have room.
//!
//! `POST /execute` runs a pass right after queueing; every poller tick runs one too, so a
//! queued execution is admitted (or fails with a reason) without anyone asking again.
//! Passes may overlap: every change is a guarded statement (an admission claim checks pool
//! room in the same statement; a release happens once), so two passes never admit one
//! execution twice or overbook a pool.

use baton_core::execution::{self, Admission, QueueStatus, StepUsage};
use baton_core::fanin;
use baton_core::ids::RunId;
use baton_core::plan::Plan;
use baton_core::state::RunKind;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Engine, NewRun};
use crate::d1::executions::{self, ExecutionRow};
use crate::d1::{resources, runs, Meta};
use crate::{clock, Error, Result};

/// An admitted execution whose run is still missing this long after admission is started again.
pub const START_GRACE_MS: i64 = 30_000;

/// What one pass did.
#[derive(Debug, Default, Serialize)]
pub struct AdmissionReport {
    /// Reservations released (their run ended, or they expired).
    pub released: u32,
    /// Admitted executions whose start was completed by this pass.
    pub restarted: u32,
    /// Executions that waited past their deadline, now failed.
    pub expired: u32,
    /// Executions admitted and started by this pass, in admission order.
    pub admitted: Vec<String>,
    /// Executions that can never be admitted (or have an unreadable plan), now failed.
    pub refused: u32,
    /// Why the queue's head waits, if it does.
    pub waiting: Option<String>,
    /// Failures (logged; the next pass tries again).
    pub errors: u32,
    /// D1 rows read by the pass's queries.
    pub rows_read: u64,
}

/// One admission pass over at most `limit` rows of each kind.
pub async fn admit_queued(engine: &Engine<'_>, limit: u32) -> Result<AdmissionReport> {
    let mut report = AdmissionReport::default();
    let mut meta = Meta::default();
    release_ended(engine, limit, &mut report, &mut meta).await?;
    start_unstarted(engine, limit, &mut report, &mut meta).await?;
    expire_waiting(engine, limit, &mut report, &mut meta).await?;
    admit_head(engine, limit, &mut report, &mut meta).await?;
    report.rows_read = meta.rows_read;
    Ok(report)
}

async fn release_ended(engine: &Engine<'_>, limit: u32, report: &mut AdmissionReport, meta: &mut Meta) -> Result<()> {
    let now = engine.now().as_u64() as i64;
    let (run_ids, m) = resources::releasable(&engine.db, now, limit).await?;
    *meta += m;
    for run_id in run_ids {
        let outcome = async {
            let samples = match engine.load(&run_id).await? {
                Some(loaded) => {
                    let usages: Vec<StepUsage<'_>> = loaded
                        .steps
                        .iter()
                        .map(|s| StepUsage {
                            service: &s.service,
                            status: s.status,
                            usage: s.usage.as_deref().and_then(|u| serde_json::from_str(u).ok()),
                            duration_ms: s.duration_ms.map(|d| d.max(0) as u64),
                        })
                        .collect();
                    execution::usage_samples(&loaded.plan, &usages)
                }
                None => Vec::new(),
            };
            engine.db.batch(resources::release(&engine.db, &run_id, &samples, now)?).await
        }
        .await;
        match outcome {
            Ok(_) => report.released += 1,
            Err(e) => {
                report.errors += 1;
                worker::console_error!("admission: releasing {run_id}: {e}");
            }
        }
    }
    Ok(())
}

async fn start_unstarted(engine: &Engine<'_>, limit: u32, report: &mut AdmissionReport, meta: &mut Meta) -> Result<()> {
    let before = engine.now().as_u64() as i64 - START_GRACE_MS;
    let (rows, m) = executions::unstarted(&engine.db, before, limit).await?;
    *meta += m;
    let now = engine.now().as_u64() as i64;
    for row in rows {
        match start(engine, &row).await {
            Ok(()) => report.restarted += 1,
            Err(e) => {
                report.errors += 1;
                worker::console_error!("admission: starting {} again: {e}", row.run_id);
                if row.deadline_at <= now {
                    // Still failing past its deadline: give up (its reservation expires with it).
                    let error = format!("admitted but could not be started: {e}");
                    engine
                        .db
                        .batch(vec![executions::fail(&engine.db, &row.run_id, QueueStatus::Admitted, &error)?])
                        .await?;
                }
            }
        }
    }
    Ok(())
}

async fn expire_waiting(engine: &Engine<'_>, limit: u32, report: &mut AdmissionReport, meta: &mut Meta) -> Result<()> {
    let now = engine.now().as_u64() as i64;
    let (rows, m) = executions::expired(&engine.db, now, limit).await?;
    *meta += m;
    let mut statements = Vec::new();
    for row in &rows {
        let deadline = baton_core::time::Millis::new(row.deadline_at.max(0) as u64);
        let error = execution::expired_error(deadline, row.last_error.as_deref());
        statements.push(executions::fail(&engine.db, &row.run_id, QueueStatus::Queued, &error)?);
    }
    let metas = engine.db.batch(statements).await?;
    report.expired += metas.iter().filter(|m| m.changes > 0).count() as u32;
    Ok(())
}

/// Queued rows are read this many at a time: admission usually stops at the head, so a
/// long backlog is not read (plans and parameters) on every pass.
const HEAD_CHUNK: u32 = 10;

/// What happened to one chunk of the queue's head.
enum Head {
    /// Every row of the chunk left the queue (admitted or failed): read the next chunk.
    Drained,
    /// The head waits (or another pass is admitting it), or the queue is empty: stop.
    Stop,
}

async fn admit_head(engine: &Engine<'_>, limit: u32, report: &mut AdmissionReport, meta: &mut Meta) -> Result<()> {
    let mut pools: Option<Vec<execution::Pool>> = None;
    let mut processed = 0;
    while processed < limit {
        let chunk = HEAD_CHUNK.min(limit - processed);
        let (queued, m) = executions::queued_in_order(&engine.db, chunk).await?;
        *meta += m;
        if queued.is_empty() {
            break;
        }
        processed += queued.len() as u32;
        let full = queued.len() as u32 == chunk;
        let pools = match &mut pools {
            Some(pools) => pools,
            None => pools.insert(resources::pools(&engine.db).await?),
        };
        match admit_chunk(engine, queued, pools, report).await? {
            Head::Drained if full => continue,
            _ => break,
        }
    }
    Ok(())
}

async fn admit_chunk(
    engine: &Engine<'_>,
    queued: Vec<ExecutionRow>,
    pools: &mut [execution::Pool],
    report: &mut AdmissionReport,
) -> Result<Head> {
    let fail = |row: &ExecutionRow, error: &str| executions::fail(&engine.db, &row.run_id, QueueStatus::Queued, error);
    let now = engine.now();
    let mut candidates: Vec<(ExecutionRow, Plan)> = Vec::new();
    for row in queued {
        if row.deadline_at <= now.as_u64() as i64 {
            let deadline = baton_core::time::Millis::new(row.deadline_at.max(0) as u64);
            engine.db.batch(vec![fail(&row, &execution::expired_error(deadline, row.last_error.as_deref()))?]).await?;
            report.expired += 1;
            continue;
        }
        match serde_json::from_str::<Plan>(&row.plan_json) {
            Ok(plan) => candidates.push((row, plan)),
            Err(e) => {
                engine.db.batch(vec![fail(&row, &format!("its compiled plan is unreadable: {e}"))?]).await?;
                report.refused += 1;
            }
        }
    }
    let mut workers: Vec<&str> =
        candidates.iter().flat_map(|(_, p)| p.steps().iter().map(|s| s.worker_key.as_str())).collect();
    workers.sort_unstable();
    workers.dedup();
    let stats = resources::stats_of(&engine.db, &workers).await?;

    for (row, plan) in &candidates {
        let demand = execution::estimate_demand(plan, &stats);
        match execution::assess(&demand, pools) {
            Admission::Never { reason } => {
                engine.db.batch(vec![fail(row, &reason)?]).await?;
                report.refused += 1;
            }
            Admission::Wait { reason } => {
                engine.db.batch(vec![executions::note_wait(&engine.db, &row.run_id, &reason)?]).await?;
                report.waiting = Some(reason);
                return Ok(Head::Stop); // strict order: nothing overtakes the head
            }
            Admission::Admit => {
                let demand: Vec<(String, u64)> = demand.into_iter().collect();
                let token = hex::encode(clock::random_bytes::<8>()?);
                let run_deadline = fanin::run_deadline(plan, now, &engine.config.fan_in());
                let expires_at = execution::reservation_expiry(run_deadline).as_u64() as i64;
                let now_ms = now.as_u64() as i64;
                let mut statements = vec![executions::admit(&engine.db, &row.run_id, now_ms, &token, &demand)?];
                statements.extend(resources::reserve(&engine.db, &row.run_id, &token, &demand, now_ms, expires_at)?);
                let won = engine.db.batch(statements).await?.first().is_some_and(|m| m.changes == 1);
                if !won {
                    return Ok(Head::Stop); // another pass got there first, or the pools filled: it carries on
                }
                execution::book(pools, &demand.iter().cloned().collect());
                match start(engine, row).await {
                    Ok(()) => report.admitted.push(row.run_id.clone()),
                    Err(e) => {
                        // Reserved and admitted: a later pass completes the start.
                        report.errors += 1;
                        worker::console_error!("admission: starting {}: {e}", row.run_id);
                    }
                }
            }
        }
    }
    Ok(Head::Drained)
}

/// Starts the run of an admitted execution (idempotent: a run that already exists counts).
async fn start(engine: &Engine<'_>, row: &ExecutionRow) -> Result<()> {
    if runs::get(&engine.db, &row.run_id).await?.is_none() {
        let corrupt = |what: &str, e: String| Error::Storage(format!("execution {}: {what}: {e}", row.run_id));
        let run_id: RunId = row.run_id.parse().map_err(|e: baton_core::ids::IdError| corrupt("id", e.to_string()))?;
        let plan: Plan = serde_json::from_str(&row.plan_json).map_err(|e| corrupt("plan", e.to_string()))?;
        let parameters = serde_json::from_str::<Value>(&row.parameters).unwrap_or_else(|_| Value::Object(Map::new()));
        engine
            .start_run(NewRun {
                run_id,
                kind: RunKind::Pipeline,
                client_id: row.client_id.clone(),
                website_id: row.website_id.clone(),
                domain: row.domain.clone(),
                plan,
                parameters,
                idempotency_key: row.request_id.clone(),
                priority: row.priority,
                acted_by: row.acted_by.clone(),
                trace: row
                    .traceparent
                    .as_deref()
                    .and_then(|tp| baton_core::trace::parse(tp, row.tracestate.as_deref()).ok()),
                parent: None,
            })
            .await?;
    }
    engine.db.batch(vec![executions::mark_started(&engine.db, &row.run_id)?]).await?;
    Ok(())
}
