//! What a run counts in `GET /metrics` once it has ended: added to `metric_totals` in the
//! batch that ends it, taken back in the batch that retries it (core's
//! [`metrics::ending_totals`] and [`metrics::restart_totals`]), each statement guarded by the
//! version that batch gives the run, so only a batch that stands counts.

use baton_core::metrics::{Leaving, Total};

use super::super::run::Loaded;
use super::Write;
use crate::d1::archive::TOTALS_PER_STATEMENT;
use crate::d1::views::AttemptRow;

fn ms(v: i64) -> u64 {
    v.max(0) as u64
}

/// The attempts a consumer ran, from a run's attempt history: `(started_at, ended_at)`.
pub(crate) fn ran(history: &[AttemptRow]) -> Vec<(u64, u64)> {
    history.iter().filter_map(|a| a.started_at.map(|started| (ms(started), ms(a.ended_at)))).collect()
}

/// `count` on `run`'s rows with the attempts `ran`.
pub(crate) fn of_run(run: &Loaded, ran: &[(u64, u64)], count: fn(&Leaving<'_>) -> Vec<Total>) -> Vec<Total> {
    let steps: Vec<(&str, baton_core::state::StepStatus, u64, Option<u64>)> =
        run.steps.iter().map(|s| (s.service.as_str(), s.status, ms(s.attempts), s.finished_at.map(ms))).collect();
    count(&Leaving {
        status: run.run.status,
        started_at: ms(run.run.started_at),
        completed_at: run.run.completed_at.map(ms),
        claimed_at: run.run.claimed_at.map(ms),
        steps: &steps,
        attempts: ran,
    })
}

/// The writes of `totals`, each applied only while the run carries `version`; with
/// `attempts`, the first also adds the run's ended attempts as its batch leaves them.
pub(crate) fn writes(totals: &[Total], version: i64, attempts: bool) -> Vec<Write> {
    totals
        .chunks(TOTALS_PER_STATEMENT)
        .enumerate()
        .map(|(i, chunk)| Write::Totals { totals: chunk.to_vec(), version, attempts: attempts && i == 0 })
        .collect()
}
