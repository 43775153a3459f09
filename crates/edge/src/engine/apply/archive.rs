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
use crate::d1::{events, runs, steps};
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
    writes.push(Write::DeleteInbox { version });
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

    /// Moves several archived (diagnostic) runs out of D1 in one batch: each run's slim row,
    /// written only while the run is the version read (its `changes` says whether it moved),
    /// then, for all of them at once, their attempts, events, steps and runs, each deleted only
    /// while its run is the version read. For each, whether it moved.
    pub(in crate::engine) async fn write_archived_many(&self, runs: &[(&Loaded, ArchivedRow)]) -> Result<Vec<bool>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let mut statements = Vec::new();
        for (loaded, row) in runs {
            let slim = [Write::Archived { row: Box::new(row.clone()), version: loaded.run.version }];
            statements.extend(super::batch::statements(&self.db, &loaded.run.run_id, &slim)?);
        }
        let as_read: Vec<(&str, i64)> = runs.iter().map(|(l, _)| (l.run.run_id.as_str(), l.run.version)).collect();
        statements.extend(steps::delete_of_runs_if_versions(&self.db, &as_read)?);
        statements.push(events::delete_of_runs_if_versions(&self.db, &as_read)?);
        statements.push(runs::delete_many_if_versions(&self.db, &as_read)?);
        let metas = self.db.batch(statements).await?;
        Ok((0..runs.len()).map(|i| metas.get(i).is_some_and(|m| m.changes > 0)).collect())
    }

    /// Deletes an archived run's slim row (its object is deleted after).
    pub(in crate::engine) async fn write_archived_deleted(&self, run_id: &str) -> Result<bool> {
        let metas = self.write(run_id, &[Write::DeleteArchived]).await?;
        Ok(metas.first().is_some_and(|m| m.changes > 0))
    }
}
