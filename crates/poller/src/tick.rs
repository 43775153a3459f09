//! One poller tick: select only due work through indexes, in bounded batches, and push each
//! run forward with the same engine the event-driven path uses.

use baton_core::lifecycle::Observer;
use baton_core::shard::Shard;
use baton_core::time::Millis;
use baton_edge::engine::{Dispatch, Engine, PollableStep};
use baton_edge::{bindings, kv::Kv, Result};
use serde::Serialize;
use serde_json::{json, Value};
use worker::Env;

/// What one tick did.
#[derive(Debug, Default, Serialize)]
pub struct TickCounts {
    pub runs_checked: u32,
    pub aggregated: u32,
    pub deferred: u32,
    pub failed: u32,
    pub steps_timed_out: u32,
    pub steps_skipped: u32,
    pub steps_dispatched: u32,
    pub analysis_resent: u32,
    pub progress_polled: u32,
    pub errors: u32,
    pub rows_read: u64,
}

/// The last tick's record (`orchestration:last_run`), if any and readable as JSON.
pub async fn last_run(env: &Env) -> Result<Option<Value>> {
    let text = Kv::from_env(env)?.get_text(bindings::kv_keys::LAST_RUN).await?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

/// When the last tick ran.
pub fn last_run_at(last_run: &Value) -> Option<Millis> {
    last_run["at"].as_u64().map(Millis::new)
}

/// The cron entry point: acts only if the polling interval has passed.
pub async fn cron(env: &Env) -> Result<Value> {
    let engine = Engine::for_shard(env, Shard::FIRST).await?;
    let now = engine.now();
    let last_at = match last_run(env).await {
        Ok(last) => last.as_ref().and_then(last_run_at),
        // KV trouble must not stop the safety net: act.
        Err(e) => {
            worker::console_warn!("poller: reading last_run failed ({e}); ticking anyway");
            None
        }
    };
    if !engine.config.poll_due(last_at, now) {
        // Between ticks, every cron firing still moves finished runs to the archive, so the
        // archive keeps up with POLLING_FREQUENCY_MINUTES' ticks far apart.
        let archive = archive_every_shard(&engine).await;
        return Ok(json!({ "ran": false, "reason": "polling interval not reached",
                          "last_run_at": last_at.map(Millis::as_u64), "archive": archive }));
    }
    tick(engine).await
}

/// The archive pass alone, on every shard: the counts summed.
async fn archive_every_shard(engine: &Engine<'_>) -> Value {
    let mut total = json!({});
    for shard in engine.shards().all() {
        let counts = match engine.on_shard(shard) {
            Ok(on_shard) => json!(on_shard.archive_due(on_shard.config.poller_batch_size).await),
            Err(e) => {
                worker::console_error!("poller: shard {shard} failed: {e}");
                json!({ "failed": 1 })
            }
        };
        add_numbers(&mut total, &counts);
    }
    worker::console_log!("{}", json!({ "event": "poller_archive", "archive": total }));
    total
}

/// `POST /admin/tick`: one tick now, whatever the interval.
pub async fn run_now(env: &Env) -> Result<Value> {
    tick(Engine::for_shard(env, Shard::FIRST).await?).await
}

/// One tick over every shard's database in turn (each bounded by `POLLER_BATCH_SIZE`): the
/// record sums their counts and keeps each shard's own under `shards`. A shard that fails is
/// counted in `errors` and the others still run.
async fn tick(engine: Engine<'_>) -> Result<Value> {
    let started = engine.now();
    let mut total = json!({});
    let mut each = Vec::new();
    for shard in engine.shards().all() {
        let outcome = match engine.on_shard(shard) {
            Ok(on_shard) => tick_shard(on_shard).await,
            Err(e) => Err(e),
        };
        let record = outcome.unwrap_or_else(|e| {
            worker::console_error!("poller: shard {shard} failed: {e}");
            json!({ "counts": { "errors": 1 } })
        });
        add_numbers(&mut total, &record);
        each.push(json!({ "shard": shard.index(), "record": record }));
    }
    let finished = engine.now();
    let mut last_run = json!({
        "at": started.as_u64(),
        "at_rfc3339": started.to_rfc3339(),
        "duration_ms": finished.since(started),
    });
    if let (Some(into), Some(from)) = (last_run.as_object_mut(), total.as_object()) {
        into.extend(from.clone());
        into.insert("shards".into(), Value::Array(each));
    }
    worker::console_log!("{}", json!({ "event": "poller_tick", "last_run": last_run }));
    if let Err(e) = Kv::from_env(engine.env())?.put_json(bindings::kv_keys::LAST_RUN, &last_run).await {
        worker::console_error!("poller: writing last_run failed: {e}");
    }
    Ok(json!({ "ran": true, "last_run": last_run }))
}

/// Adds `from` into `into`, field by field (objects recursively): numbers are summed, lists
/// joined, and a field `into` lacks or has as null is taken from `from`.
fn add_numbers(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                match into.get_mut(key) {
                    Some(existing) => add_numbers(existing, value),
                    None => {
                        into.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (into @ Value::Number(_), Value::Number(from)) => {
            let sum = match (into.as_u64(), from.as_u64()) {
                (Some(a), Some(b)) => json!(a + b),
                _ => json!(into.as_f64().unwrap_or(0.0) + from.as_f64().unwrap_or(0.0)),
            };
            *into = sum;
        }
        (Value::Array(into), Value::Array(from)) => into.extend(from.iter().cloned()),
        (into @ Value::Null, from) => *into = from.clone(),
        _ => {}
    }
}

/// Steps 1–6 of a tick on one shard's database: what it did.
async fn tick_shard(mut engine: Engine<'_>) -> Result<Value> {
    let now = engine.now().as_u64() as i64;
    let limit = engine.config.poller_batch_size;
    let mut counts = TickCounts::default();

    // 1. Runs whose due time passed: deadlines, deferred fan-ins, released claims, lost analyses;
    // 2. attempts past their own timeout, 3. retries whose delayed message was lost.
    let due = engine.due_work(now, limit).await?;
    for run in &due.runs {
        if run.aggregating {
            match baton_edge::meter::for_run(&run.run_id, engine.resend_analysis(run)).await {
                Ok(()) => counts.analysis_resent += 1,
                Err(e) => {
                    counts.errors += 1;
                    worker::console_error!("poller: run {}: resending analysis failed: {e}", run.run_id);
                }
            }
            continue;
        }
        advance(&mut engine, &run.run_id, &mut counts, Some(run.deadline_at)).await;
    }
    for run_id in &due.more_runs {
        advance(&mut engine, run_id, &mut counts, None).await;
    }
    // 4. Long-running steps whose service reports progress.
    for step in &due.pollable {
        match baton_edge::meter::for_run(&step.run_id, poll_progress(&engine, step)).await {
            Ok(()) => counts.progress_polled += 1,
            Err(e) => {
                counts.errors += 1;
                worker::console_warn!("poller: progress of {}/{}: {e}", step.run_id, step.service);
            }
        }
    }
    // 4. Pipeline executions: release ended reservations, expire, admit by priority.
    let admission = baton_edge::engine::admission::admit_queued(&engine, limit).await.unwrap_or_else(|e| {
        counts.errors += 1;
        worker::console_error!("poller: admission pass failed: {e}");
        Default::default()
    });
    // 5. Schedules: fire the due slots, each claimed once whatever ticks race.
    let schedules = engine.schedules().fire_due(limit).await.unwrap_or_else(|e| {
        counts.errors += 1;
        worker::console_error!("poller: schedules pass failed: {e}");
        Default::default()
    });
    // 6. Bounded history: runs whose retention passed move to the archive (R2).
    let archive = engine.archive_due(limit).await;
    counts.errors += archive.failed;
    counts.rows_read = due.rows_read + admission.rows_read + schedules.rows_read + archive.rows_read;
    Ok(json!({ "counts": counts, "admission": admission, "schedules": schedules, "archive": archive }))
}

/// Looks at a run; a run taken from the due index that is still waiting is looked at again
/// at its deadline (`due_deadline`), or in a minute.
async fn advance(engine: &mut Engine<'_>, run_id: &str, counts: &mut TickCounts, due_deadline: Option<i64>) {
    counts.runs_checked += 1;
    let outcome = baton_edge::meter::for_run(run_id, async {
        let Some(loaded) = engine.load(run_id).await? else { return Ok(()) };
        let report = engine.advance(&loaded, Observer::Poller, Dispatch::Queue).await?;
        counts.steps_timed_out += report.timed_out.len() as u32;
        counts.steps_skipped += report.skipped.len() as u32;
        counts.steps_dispatched += report.dispatched.len() as u32;
        counts.aggregated += u32::from(report.claimed.is_some());
        counts.failed += u32::from(report.failed);
        let settled = report.claimed.is_some() || report.finished.is_some();
        if let (Some(deadline), false) = (due_deadline, settled) {
            // Nothing left to do now: look again at the run's deadline.
            let next = deadline.max(engine.now().as_u64() as i64 + 60_000);
            engine.look_again_at(run_id, next).await?;
        }
        Ok::<(), baton_edge::Error>(())
    })
    .await;
    if let Err(e) = outcome {
        counts.errors += 1;
        worker::console_error!("poller: run {run_id}: {e}");
    }
}

/// Asks the service of an attempt that reports progress how it is going, as its own progress
/// timer would (the timers keep asking; this is the safety net for a lost one).
async fn poll_progress(engine: &Engine<'_>, step: &PollableStep) -> Result<()> {
    let Some(loaded) = engine.load(&step.run_id).await? else { return Ok(()) };
    let (Some(row), Some(spec)) = (loaded.step(&step.service), loaded.plan.step(&step.service)) else { return Ok(()) };
    let record = baton_edge::engine::record_of(row)?;
    let Some(expires) = record.expires_at(spec) else { return Ok(()) };
    if i64::from(record.attempts) != step.attempts {
        return Ok(());
    }
    engine.ask_progress(loaded, &step.service, record.attempts, expires, false).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_records_add_up() {
        let mut total = json!({});
        add_numbers(
            &mut total,
            &json!({"counts": {"errors": 1, "rows_read": 10}, "admission": {"admitted": [], "waiting": null}}),
        );
        add_numbers(
            &mut total,
            &json!({"counts": {"errors": 0, "rows_read": 5}, "admission": {"admitted": ["exec_1"], "waiting": "tokens"}, "archive": {"refused": "RETENTION_DAYS: x"}}),
        );
        assert_eq!(
            total,
            json!({"counts": {"errors": 1, "rows_read": 15}, "admission": {"admitted": ["exec_1"], "waiting": "tokens"},
                   "archive": {"refused": "RETENTION_DAYS: x"}})
        );
    }
}
