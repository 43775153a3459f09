//! Acting on a page of a client's runs at once: the runs in D1 matching a filter (archived
//! runs have ended and are not changed in place, so they are never taken), each cancelled or
//! retried through the single-run paths ([`Engine::cancel`], [`Engine::retry_run`]) and so
//! guarded exactly as one is. A run those paths leave as it was is reported with core's reason;
//! no run fails the others.

use baton_core::bulk::{BulkAction, BulkQuery, Skipped};
use baton_core::ids::{PlanId, RunId, WebsiteId};
use baton_core::listing::{self, RunCursor};
use baton_core::quota::QuotaExceeded;
use baton_core::state::RunKind;
use baton_core::time::Millis;
use futures_util::StreamExt;

use super::cancel::CancelOutcome;
use super::retry::RetryOutcome;
use super::run::Engine;
use crate::d1::runs::{self, RunFilter};
use crate::{Error, Result};

/// Runs acted on at once: a page of 100 stays well within a Worker's limits (simultaneous
/// connections, subrequests in flight).
const CONCURRENCY: usize = 8;

/// What a bulk action did to a page of matching runs.
#[derive(Debug, Clone, Default)]
pub struct BulkReport {
    /// The runs acted on, newest first.
    pub acted: Vec<String>,
    /// The matching runs left as they were, with the reason, newest first.
    pub skipped: Vec<(String, Skipped)>,
    /// After the page's last run, when further runs may match.
    pub next: Option<RunCursor>,
}

impl Engine<'_> {
    /// Takes a page of `client_id`'s runs matching `query` that `action` applies to, and acts
    /// on each (at most [`CONCURRENCY`] at once).
    pub async fn bulk(&self, client_id: &str, action: BulkAction, query: &BulkQuery) -> Result<BulkReport> {
        let statuses = action.statuses(query.filter.status);
        if statuses.is_empty() {
            return Ok(BulkReport::default());
        }
        let ms = |m: Millis| m.as_u64().min(i64::MAX as u64) as i64;
        let filter = RunFilter {
            client_id,
            website_id: query.filter.website_id.as_ref().map(WebsiteId::as_str),
            status: None,
            plan_id: query.filter.plan_id.as_ref().map(PlanId::as_str),
            among: &statuses,
            created_from: query.filter.created_from.map(ms),
            created_before: query.filter.created_before.map(ms),
            after: query.after.as_ref().map(|c| (c.created_at.as_u64() as i64, c.run_id.as_str())),
            limit: query.limit + 1,
        };
        let rows = runs::candidates(&self.db, &filter).await?;
        let rows = rows
            .into_iter()
            .map(|row| {
                let run_id: RunId = row
                    .run_id
                    .parse()
                    .map_err(|e: baton_core::ids::IdError| Error::Storage(format!("run {}: {e}", row.run_id)))?;
                Ok(RunCursor { created_at: Millis::new(row.created_at.max(0) as u64), run_id })
            })
            .collect::<Result<Vec<_>>>()?;
        let (page, next) = listing::page(rows, query.limit, Clone::clone);
        let outcomes: Vec<(String, Option<Skipped>)> = futures_util::stream::iter(page)
            .map(|cursor| async move {
                let run_id = cursor.run_id.as_str().to_string();
                // Each run's work is counted to it, not to the request.
                let skipped = crate::meter::for_run(&run_id, self.act_on_one(action, &run_id)).await.err();
                (run_id, skipped)
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        let mut report = BulkReport { next, ..BulkReport::default() };
        for (run_id, skipped) in outcomes {
            match skipped {
                None => report.acted.push(run_id),
                Some(reason) => report.skipped.push((run_id, reason)),
            }
        }
        Ok(report)
    }

    /// Acts on one run as its single-run route would; why not, if it did not.
    async fn act_on_one(&self, action: BulkAction, run_id: &str) -> std::result::Result<(), Skipped> {
        let failed = |e: Error| match e {
            Error::Conflict(_) => Skipped::Changed,
            Error::Quota(QuotaExceeded::ActiveRuns { limit }) => Skipped::OverQuota { limit },
            other => Skipped::Failed(other.to_string()),
        };
        let loaded = self.load(run_id).await.map_err(failed)?.ok_or(Skipped::Gone)?;
        match action {
            BulkAction::Cancel => match self.cancel(loaded).await.map_err(failed)? {
                CancelOutcome::Cancelled { .. } => Ok(()),
                CancelOutcome::AlreadyEnded { status } => Err(Skipped::Ended(status)),
            },
            BulkAction::Retry => {
                if loaded.run.kind != RunKind::Diagnostic {
                    return Err(Skipped::Execution);
                }
                match self.retry_run(loaded).await.map_err(failed)? {
                    RetryOutcome::Retried { .. } => Ok(()),
                    RetryOutcome::Refused(refused) => Err(refused.into()),
                }
            }
        }
    }
}
