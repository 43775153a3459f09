//! Cancelling a run: the run moves to `cancelled` (guarded: only from a status that has not
//! ended), its unfinished steps too (each compare-and-set on the state read), and the finish
//! event is written once every step has settled — all in one batch. A step that changed
//! under us (a result arrived, a retry was dispatched) loses its compare-and-set; the steps
//! are then read again and cancelled in a further round.

use baton_core::cancel::{self, CancelRefused};
use baton_core::state::RunStatus;

use super::rows::row_with_record;
use super::run::{Engine, Loaded};
use crate::d1::events as event_rows;
use crate::d1::{runs, steps, Arg};
use crate::{Error, Result};

/// Rounds of step cancellation before giving up on stragglers (each round is one batch).
const MAX_ROUNDS: usize = 4;

/// What cancelling did.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// The run is now cancelled; `cancelled_steps` are the steps this call cancelled.
    Cancelled { loaded: Box<Loaded>, cancelled_steps: Vec<String> },
    /// The run had already ended (possibly just now, by another writer).
    AlreadyEnded { status: RunStatus },
}

impl Engine<'_> {
    /// Cancels `loaded`'s run (see the module docs).
    pub async fn cancel(&self, loaded: Loaded) -> Result<CancelOutcome> {
        let now = self.now();
        let now_ms = now.as_u64() as i64;
        let run_id = loaded.run.run_id.clone();
        let mut cancellation = match cancel::cancel(loaded.status()?, &loaded.plan, &loaded.records()?, now) {
            Ok(cancellation) => cancellation,
            Err(CancelRefused::AlreadyEnded { status }) => return Ok(CancelOutcome::AlreadyEnded { status }),
        };
        let mut current = loaded;
        let mut cancelled_steps = Vec::new();
        for round in 0..MAX_ROUNDS {
            let mut statements = Vec::new();
            if round == 0 {
                statements.push(runs::transition(
                    &self.db,
                    &run_id,
                    &["started", "running", "aggregating"],
                    RunStatus::Cancelled.as_str(),
                    &[("completed_at", Arg::Int(now_ms)), ("due_at", Arg::Null)],
                )?);
            }
            let mut attempted = Vec::new();
            for record in &cancellation.cancelled {
                let Some(row) = current.step(record.service.as_str()) else { continue };
                statements.push(steps::compare_and_set(
                    &self.db,
                    &row.status,
                    row.attempts,
                    &row_with_record(row, record),
                )?);
                attempted.push(record.service.as_str().to_string());
            }
            let completed_at =
                current.run.completed_at.map(|c| baton_core::time::Millis::new(c.max(0) as u64)).unwrap_or(now);
            let payload = cancel::finish_payload(
                &current.plan,
                &cancellation.records,
                &current.run.domain,
                current.started_at(),
                completed_at,
            );
            let event = self.finish_event_row(&current, &payload, now)?;
            statements.push(event_rows::insert_if_run_settled(&self.db, &event, RunStatus::Cancelled.as_str())?);

            let metas = self.db.batch(statements).await?;
            let step_metas = if round == 0 {
                if metas.first().is_none_or(|m| m.changes == 0) {
                    // It ended (or was cancelled) between our read and our write.
                    let status = match self.load(&run_id).await? {
                        Some(fresh) => fresh.status()?,
                        None => return Err(Error::NotFound { what: format!("run {run_id}") }),
                    };
                    return Ok(CancelOutcome::AlreadyEnded { status });
                }
                &metas[1..]
            } else {
                &metas[..]
            };
            let mut all_won = true;
            for (service, meta) in attempted.iter().zip(step_metas) {
                if meta.changes == 1 {
                    cancelled_steps.push(service.clone());
                } else {
                    all_won = false;
                }
            }
            let event_written = metas.last().is_some_and(|m| m.changes == 1);
            current = self.load(&run_id).await?.ok_or_else(|| Error::NotFound { what: format!("run {run_id}") })?;
            if event_written || all_won {
                break;
            }
            if round + 1 == MAX_ROUNDS {
                worker::console_error!(
                    "run {run_id}: cancelled, but steps kept changing; its finish event is not written"
                );
                break;
            }
            cancellation = cancel::cancel_steps(&current.plan, &current.records()?, now);
        }
        self.write_snapshot(&current).await;
        Ok(CancelOutcome::Cancelled { loaded: Box::new(current), cancelled_steps })
    }
}
