//! A run leaving D1: archived once its retention passed (its object already stands in R2), or
//! deleted for good by its client. One batch, every statement guarded by the run's version as
//! read, the run's own row last: the slim row (archived), its attempts, events and steps, then
//! the run. What it counts in `/metrics` was added to the totals when it ended ([`super::totals`])
//! and stays there. A run that changed meanwhile (retried) stays whole; a crash before the batch
//! leaves the run in D1 (and its object in R2, written again by the next pass).

use baton_core::state::RunKind;

use super::super::run::{Engine, Loaded};
use super::Write;
use crate::d1::archive::ArchivedRow;
use crate::Result;

/// The writes that move `loaded` out of D1 (`archived`: its slim row, when it is archived).
/// A pipeline run leaves with its execution row, its released reservations and its usage.
pub(crate) fn leaving(loaded: &Loaded, archived: Option<ArchivedRow>) -> Vec<Write> {
    let version = loaded.run.version;
    let mut writes = Vec::new();
    if let Some(row) = archived {
        writes.push(Write::Archived { row: Box::new(row), version });
    }
    if loaded.run.kind == RunKind::Pipeline {
        writes.push(Write::DeleteExecution { version });
        writes.push(Write::DeleteAllocations { version });
        writes.push(Write::DeleteUsage { version });
    }
    writes.push(Write::DeleteAttempts { version });
    writes.push(Write::DeleteEvents { version });
    writes.push(Write::DeleteSteps { version });
    writes.push(Write::DeleteRun { version });
    writes
}

impl Engine<'_> {
    /// Moves the ended run `loaded` out of D1: archived (`archived`: its slim row; its object
    /// stands in R2), or deleted for good. Whether this call moved it (`false`: it changed
    /// since it was read, or is gone already).
    pub(in crate::engine) async fn write_leaving(
        &self,
        loaded: &Loaded,
        archived: Option<ArchivedRow>,
    ) -> Result<bool> {
        let writes = leaving(loaded, archived);
        let metas = self.write(&loaded.run.run_id, &writes).await?;
        Ok(metas.last().is_some_and(|m| m.changes > 0))
    }

    /// Moves several archived runs out of D1 in one batch (each its slim row and its deletes,
    /// every statement guarded by its own run's version): for each, whether it moved.
    pub(in crate::engine) async fn write_archived_many(&self, runs: &[(&Loaded, ArchivedRow)]) -> Result<Vec<bool>> {
        let mut statements = Vec::new();
        let mut ends = Vec::new();
        for (loaded, row) in runs {
            let writes = leaving(loaded, Some(row.clone()));
            statements.extend(super::batch::statements(&self.db, &loaded.run.run_id, &writes)?);
            ends.push(statements.len() - 1);
        }
        let metas = self.db.batch(statements).await?;
        Ok(ends.iter().map(|i| metas.get(*i).is_some_and(|m| m.changes > 0)).collect())
    }

    /// Deletes an archived run's slim row (its object is deleted after).
    pub(in crate::engine) async fn write_archived_deleted(&self, run_id: &str) -> Result<bool> {
        let metas = self.write(run_id, &[Write::DeleteArchived]).await?;
        Ok(metas.first().is_some_and(|m| m.changes > 0))
    }
}
