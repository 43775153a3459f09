//! Listing a client's runs: one query for the page of runs in D1 and one for archived runs
//! (their slim rows), merged newest first; one for the scheduling columns of the live runs'
//! steps (no query per run), summaries computed by core (an archived run's kept in its row).

use std::collections::BTreeMap;

use baton_core::ids::{EventId, PlanId, RunId, WebsiteId};
use baton_core::listing::{self, RunCursor, RunListQuery};
use baton_core::plan::Plan;
use baton_core::state::{RunStatus, StepRecord};
use baton_core::summary::{RunFacts, RunSummary};
use baton_core::time::Millis;

use super::archive::summary_of_archived;
use super::rows::record_of;
use super::run::Engine;
use crate::d1::archive::{self, ArchivedRow};
use crate::d1::runs::{self, ListedRun, RunFilter};
use crate::d1::steps;
use crate::{Error, Result};

/// A run of a page: in D1, or archived.
enum Listed {
    Live(Box<ListedRun>),
    Archived(Box<ArchivedRow>),
}

impl Engine<'_> {
    /// A page of `client_id`'s runs matching `query`, newest first, and the cursor of the next page.
    pub async fn list_runs(
        &self,
        client_id: &str,
        query: &RunListQuery,
    ) -> Result<(Vec<RunSummary>, Option<RunCursor>)> {
        let filter = RunFilter {
            client_id,
            website_id: query.website_id.as_ref().map(WebsiteId::as_str),
            status: query.status.map(RunStatus::as_str),
            plan_id: query.plan_id.as_ref().map(PlanId::as_str),
            among: &[],
            created_from: None,
            created_before: None,
            after: query.after.as_ref().map(|c| (c.created_at.as_u64() as i64, c.run_id.as_str())),
            limit: query.limit + 1,
        };
        let rows = runs::page(&self.db, &filter).await?;
        // Archived runs list with the others (their slim rows, the same order and filters).
        let archived = archive::page(&self.db, &filter).await?;
        let corrupt = |run: &str, e: String| Error::Storage(format!("run {run}: {e}"));
        let cursor = |run_id: &str, created_at: i64| -> Result<RunCursor> {
            let run_id: RunId = run_id.parse().map_err(|e: baton_core::ids::IdError| corrupt(run_id, e.to_string()))?;
            Ok(RunCursor { created_at: Millis::new(created_at.max(0) as u64), run_id })
        };
        let mut keyed: Vec<(RunCursor, Listed)> = rows
            .into_iter()
            .map(|row| Ok((cursor(&row.run_id, row.created_at)?, Listed::Live(Box::new(row)))))
            .chain(
                archived
                    .into_iter()
                    .map(|row| Ok((cursor(&row.run_id, row.created_at)?, Listed::Archived(Box::new(row))))),
            )
            .collect::<Result<_>>()?;
        // Newest first, as each query returned its own.
        keyed.sort_by(|(a, _), (b, _)| (b.created_at, b.run_id.as_str()).cmp(&(a.created_at, a.run_id.as_str())));
        keyed.truncate(query.limit as usize + 1);
        let (page, next) = listing::page(keyed, query.limit, |(cursor, _)| cursor.clone());

        let ids: Vec<&str> = page
            .iter()
            .filter_map(|(_, row)| match row {
                Listed::Live(row) => Some(row.run_id.as_str()),
                Listed::Archived(_) => None,
            })
            .collect();
        let mut records: BTreeMap<String, Vec<StepRecord>> = BTreeMap::new();
        for step in steps::scheduling_of_runs(&self.db, &ids).await? {
            records.entry(step.run_id.clone()).or_default().push(record_of(&step)?);
        }
        let summaries = page
            .into_iter()
            .map(|(cursor, row)| {
                let row = match row {
                    Listed::Live(row) => row,
                    Listed::Archived(row) => return summary_of_archived(&row),
                };
                let plan: Plan =
                    serde_json::from_str(&row.plan_json).map_err(|e| corrupt(&row.run_id, e.to_string()))?;
                let facts = RunFacts {
                    run_id: cursor.run_id,
                    website_id: row
                        .website_id
                        .parse()
                        .map_err(|e: baton_core::ids::IdError| corrupt(&row.run_id, e.to_string()))?,
                    domain: row.domain.clone(),
                    plan_id: plan.plan_id().clone(),
                    status: row.status,
                    started_at: Millis::new(row.started_at.max(0) as u64),
                    completed_at: row.completed_at.map(|c| Millis::new(c.max(0) as u64)),
                    diagnosis_event_id: match &row.diagnosis_event_id {
                        Some(id) => Some(id.parse::<EventId>().map_err(|e| corrupt(&row.run_id, e.to_string()))?),
                        None => None,
                    },
                    error: row.error.clone(),
                };
                let steps = records.remove(&row.run_id).unwrap_or_default();
                Ok(RunSummary::new(facts, &plan, &steps))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((summaries, next))
    }
}
