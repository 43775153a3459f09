//! What the poller looks at: due work, selected only through indexes and bounded by the
//! batch size — runs whose `due_at` passed, attempts past their own timeout, retries whose
//! message is overdue, attempts whose service reports progress.

use std::collections::BTreeSet;

use baton_core::state::RunStatus;

use super::run::{Engine, RETRY_GRACE_MS};
use crate::d1::{runs, steps, Meta};
use crate::Result;

pub use crate::d1::steps::PollableStep;

/// A run whose `due_at` has passed.
#[derive(Debug, Clone)]
pub struct DueRun {
    /// The run.
    pub run_id: String,
    /// Claimed for analysis (its analysis is overdue: resend it), rather than active.
    pub aggregating: bool,
    /// Its claim: whether data is missing, and which steps.
    pub partial: bool,
    /// The steps that did not complete (claimed runs).
    pub missing: Vec<String>,
    /// Its own deadline.
    pub deadline_at: i64,
}

/// The poller's due work at one tick.
#[derive(Debug, Clone, Default)]
pub struct DueWork {
    /// Runs whose `due_at` passed, earliest first.
    pub runs: Vec<DueRun>,
    /// Other runs with an attempt past its timeout or a retry whose message is overdue.
    pub more_runs: Vec<String>,
    /// Running attempts whose service reports progress.
    pub pollable: Vec<PollableStep>,
    /// Rows the reads cost.
    pub rows_read: u64,
}

impl Engine<'_> {
    /// The due work at `now`, each kind at most `limit`.
    pub async fn due_work(&self, now: i64, limit: u32) -> Result<DueWork> {
        let mut meta = Meta::default();
        let (due, m) = runs::due(&self.db, now, limit).await?;
        meta += m;
        let (overdue, m) = steps::overdue(&self.db, now, limit).await?;
        meta += m;
        let (stale, m) = steps::stale_retries(&self.db, now, RETRY_GRACE_MS as i64, limit).await?;
        meta += m;
        let (pollable, m) = steps::pollable(&self.db, limit).await?;
        meta += m;
        let seen: BTreeSet<&str> = due.iter().map(|r| r.run_id.as_str()).collect();
        let more: BTreeSet<String> = overdue
            .into_iter()
            .map(|(run_id, _)| run_id)
            .chain(stale.into_iter().map(|s| s.run_id))
            .filter(|id| !seen.contains(id.as_str()))
            .collect();
        let runs = due
            .into_iter()
            .map(|run| DueRun {
                aggregating: run.status == RunStatus::Aggregating,
                partial: run.partial == Some(1),
                missing: run.missing.as_deref().and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default(),
                deadline_at: run.deadline_at,
                run_id: run.run_id,
            })
            .collect();
        Ok(DueWork { runs, more_runs: more.into_iter().collect(), pollable, rows_read: meta.rows_read })
    }

    /// Active runs and those overdue (`due_at` passed), for health.
    pub async fn count_active(&self, now: i64) -> Result<(u64, u64)> {
        runs::count_active(&self.db, now).await
    }
}
