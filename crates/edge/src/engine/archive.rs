//! Bounded history: runs that ended longer ago than their client's retention move to the
//! archive (R2), and stay readable there.
//!
//! The poller's archive pass ([`Engine::archive_due`]), per run: read it whole (run, steps,
//! attempts, events), write its object to R2 and read its size back, then one D1 batch keeps a
//! slim row and deletes the rest ([`super::apply`]). A crash between the two leaves the run in
//! both places: the next pass writes the object again and completes it. A run is never deleted
//! without its object standing. An R2 failure deletes nothing; the run is tried on a later
//! tick, and the failure is logged and counted.
//!
//! Reading ([`Engine::run_record`]): D1 first, then the slim row and its object, so the API,
//! the UI and the CLI show an archived run as they show any other (`archived: true`).

use std::collections::BTreeMap;

use baton_core::events::diagnosis_dedupe_key;
use baton_core::metrics::ARCHIVE_FAILURES;
use baton_core::retention::{archive_key, Pass, Retention};
use baton_core::state::RunKind;
use baton_core::summary::RunSummary;
use baton_core::time::Millis;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::run::{summary_of, Engine, Loaded};
use super::views::Attempt;
use crate::archive::{compress, decompress, Archive};
use crate::concurrency::join_all;
use crate::d1::archive::{self as rows, ArchivedRow, DueForArchive};
use crate::d1::events::{self, EventRow};
use crate::d1::runs::RunRow;
use crate::d1::steps::StepRow;
use crate::d1::views::{self, AttemptRow};
use crate::{faults, Error, Result};

/// The format of an archive object.
const FORMAT: u32 = 1;

/// One archived run: everything its API answer, its events and its page show.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchivedRun {
    /// [`FORMAT`].
    pub format: u32,
    /// Its row.
    pub run: RunRow,
    /// Its steps, in plan order (outputs included).
    pub steps: Vec<StepRow>,
    /// Its ended attempts.
    pub attempts: Vec<AttemptRow>,
    /// Its events, oldest first (the diagnosis among them).
    pub events: Vec<EventRow>,
}

/// A run as its API answer shows it, wherever it is kept.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The run, its plan and steps.
    pub loaded: Loaded,
    /// Its attempts by step.
    pub attempts: BTreeMap<String, Vec<Attempt>>,
    /// Its diagnosis, once written.
    pub diagnosis: Option<Value>,
    /// Whether it is read from the archive.
    pub archived: bool,
}

/// Where a run is kept.
#[derive(Debug, Clone)]
pub enum Kept {
    /// In D1 (it runs, or ended within its retention).
    Live(Box<Loaded>),
    /// In the archive: its slim row.
    Archived(Box<ArchivedRow>),
}

impl Kept {
    /// The client the run is for.
    pub fn client_id(&self) -> &str {
        match self {
            Kept::Live(loaded) => &loaded.run.client_id,
            Kept::Archived(row) => &row.client_id,
        }
    }
}

/// What an archive pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArchiveCounts {
    /// Runs archived.
    pub archived: u32,
    /// Bytes written to R2 (compressed).
    pub bytes: u64,
    /// Runs that could not be archived this time (tried again on a later tick).
    pub failed: u32,
    /// Why nothing is archived, when a setting is invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Rows the selection read.
    pub rows_read: u64,
    /// Rows of the history kept beside runs deleted (settled webhook deliveries and their
    /// attempts, settled schedule fires, dead letters given up on, executions that failed
    /// without a run).
    pub pruned: u64,
    /// Pipeline executions (their runs) deleted past their retention.
    pub executions_pruned: u64,
}

/// Runs archived together: one D1 read for the group, their R2 writes at once, one D1 batch.
pub const ARCHIVE_GROUP: usize = 50;
/// Groups archived at once.
pub const ARCHIVE_GROUPS_AT_ONCE: usize = 2;
/// Most rounds of `POLLER_BATCH_SIZE` runs one tick archives (per shard) while a backlog lasts:
/// with the default batch, 500 R2 writes and about 50 D1 queries, well within one
/// invocation's limits.
pub const ARCHIVE_MAX_ROUNDS: u32 = 5;
/// How long one tick keeps starting rounds (per shard), in ms.
pub const ARCHIVE_BUDGET_MS: u64 = 10_000;

impl Engine<'_> {
    /// Archives the runs whose retention has passed, oldest ending first: rounds of up to
    /// `limit`, while rounds come back full, for at most [`ARCHIVE_MAX_ROUNDS`] rounds and
    /// [`ARCHIVE_BUDGET_MS`]; then prunes the history kept beside runs and executions.
    pub async fn archive_due(&self, limit: u32) -> ArchiveCounts {
        let mut counts = ArchiveCounts::default();
        let retention = match crate::settings::retention(self.env()) {
            Ok(retention) => retention,
            Err(e) => {
                worker::console_error!("archive: {e}; nothing is archived until it is fixed");
                counts.refused = Some(e.to_string());
                return counts;
            }
        };
        if !retention.archives() {
            return counts;
        }
        let archive = match Archive::from_env(self.env()) {
            Ok(archive) => archive,
            Err(e) => {
                worker::console_error!("archive: {e}; nothing is archived");
                counts.refused = Some(e.to_string());
                return counts;
            }
        };
        let now = self.now();
        if let Some(ms) = retention.default_ms() {
            match self.prune_history(now.as_u64().saturating_sub(ms) as i64, limit).await {
                Ok(pruned) => counts.pruned = pruned,
                Err(e) => {
                    counts.failed += 1;
                    worker::console_error!("archive: pruning history failed: {e}");
                }
            }
        }
        // Rounds of at most `limit` runs, in groups of ARCHIVE_GROUP, while rounds come back
        // full and clean and the tick's time for it lasts.
        let started = self.now();
        for _ in 0..ARCHIVE_MAX_ROUNDS {
            let (archived, failed) = (counts.archived, counts.failed);
            let full = self.archive_round(&archive, &retention, now, limit, &mut counts).await;
            // A round that failed anywhere (R2 down?) or archived nothing ends the pass.
            let clean = counts.archived > archived && counts.failed == failed;
            if !full || !clean || self.now().since(started) >= ARCHIVE_BUDGET_MS {
                break;
            }
        }
        // Pipeline executions past their retention leave D1 without an archive: the run with
        // its execution row, reservations and usage (`GET /executions/:id` answers 404 after).
        let mut left = limit;
        for pass in retention.passes(now) {
            if left == 0 {
                break;
            }
            let Some(due) = self.due(&pass, RunKind::Pipeline, left, &mut counts).await else { continue };
            for run in due {
                left = left.saturating_sub(1);
                match self.prune_execution(&retention, &run.run_id, now).await {
                    Ok(true) => counts.executions_pruned += 1,
                    Ok(false) => {}
                    Err(e) => {
                        counts.failed += 1;
                        worker::console_error!("archive: execution {}: {e}; kept, tried again later", run.run_id);
                    }
                }
            }
        }
        counts
    }

    /// Up to `limit` runs of `kind` due in `pass` (their rows read counted); `None` when the
    /// selection failed (counted and logged).
    async fn due(
        &self,
        pass: &Pass,
        kind: RunKind,
        limit: u32,
        counts: &mut ArchiveCounts,
    ) -> Option<Vec<DueForArchive>> {
        match rows::due(&self.db, pass, kind, limit).await {
            Ok((due, meta)) => {
                counts.rows_read += meta.rows_read;
                Some(due)
            }
            Err(e) => {
                worker::console_error!("archive: selecting {} runs due failed: {e}", kind.as_str());
                counts.failed += 1;
                None
            }
        }
    }

    /// One round: up to `limit` runs due, over the retention's passes, archived
    /// in groups of [`ARCHIVE_GROUP`]. Whether it found `limit` runs due (more may wait).
    async fn archive_round(
        &self,
        archive: &Archive,
        retention: &Retention,
        now: Millis,
        limit: u32,
        counts: &mut ArchiveCounts,
    ) -> bool {
        let mut left = limit;
        for pass in retention.passes(now) {
            if left == 0 {
                break;
            }
            let Some(due) = self.due(&pass, RunKind::Diagnostic, left, counts).await else { continue };
            left = left.saturating_sub(due.len() as u32);
            // Groups go in pairs: one group's D1 and R2 work overlaps the other's encoding.
            for pair in due.chunks(ARCHIVE_GROUP * ARCHIVE_GROUPS_AT_ONCE) {
                let groups = pair.chunks(ARCHIVE_GROUP).map(|group| async move {
                    let run_ids: Vec<&str> = group.iter().map(|run| run.run_id.as_str()).collect();
                    let mut counted = ArchiveCounts::default();
                    let outcome = self.archive_group(archive, retention, &run_ids, now, &mut counted).await;
                    if let Err(e) = outcome {
                        counted.failed += 1;
                        worker::console_error!(
                            "archive: runs {}: {e}; kept in D1, tried again later",
                            run_ids.join(", ")
                        );
                    }
                    counted
                });
                for counted in join_all(groups).await {
                    counts.archived += counted.archived;
                    counts.bytes += counted.bytes;
                    counts.failed += counted.failed;
                }
            }
        }
        left == 0
    }

    /// Deletes an ended pipeline run past its retention, with its execution: whether this call
    /// deleted it.
    async fn prune_execution(&self, retention: &Retention, run_id: &str, now: Millis) -> Result<bool> {
        let Some(loaded) = self.load(run_id).await? else { return Ok(false) };
        let completed_at = loaded.run.completed_at.map(|c| Millis::new(c.max(0) as u64));
        if loaded.run.kind != RunKind::Pipeline
            || !retention.due(&loaded.run.client_id, loaded.run.status, completed_at, now)
        {
            return Ok(false);
        }
        self.write_leaving(&loaded, None).await
    }

    /// Deletes up to `limit` rows of each kind of history kept beside runs that settled before
    /// `before`, in one batch: how many.
    async fn prune_history(&self, before: i64, limit: u32) -> Result<u64> {
        let mut statements = crate::d1::webhooks::prune_settled(&self.db, before, limit)?;
        statements.push(crate::d1::schedules::prune_settled(&self.db, before, limit)?);
        statements.push(crate::d1::dead_letters::prune_given_up(&self.db, before, limit)?);
        statements.push(crate::d1::executions::prune_failed(&self.db, before, limit)?);
        Ok(self.db.batch(statements).await?.iter().map(|m| m.changes).sum())
    }

    /// Archives a group of runs if they are still due: one D1 read for all of them, their
    /// objects written to R2 at once, each checked, then one D1 batch for those written (each
    /// run's statements guarded by its own version). Counts what it archived and what failed.
    async fn archive_group(
        &self,
        archive: &Archive,
        retention: &Retention,
        run_ids: &[&str],
        now: Millis,
        counts: &mut ArchiveCounts,
    ) -> Result<()> {
        let mut due = Vec::new();
        for (loaded, attempts, events) in self.read_group(run_ids).await? {
            let completed_at = loaded.run.completed_at.map(|c| Millis::new(c.max(0) as u64));
            // A pipeline execution's run is not archived (it leaves with its execution).
            let diagnostic = loaded.run.kind == RunKind::Diagnostic;
            if !diagnostic || !retention.due(&loaded.run.client_id, loaded.run.status, completed_at, now) {
                continue;
            }
            let run_id = loaded.run.run_id.clone();
            let document =
                ArchivedRun { format: FORMAT, run: loaded.run.clone(), steps: loaded.steps.clone(), attempts, events };
            let bytes = compress(&document)?;
            let key = key_of(&loaded.run.client_id, loaded.run.created_at, &run_id);
            due.push((loaded, key, bytes));
        }
        let puts = due.iter_mut().map(|(_, key, bytes)| {
            let bytes = std::mem::take(bytes);
            let key = key.clone();
            async move {
                if faults::injected(self.env(), "r2") {
                    Err(Error::Storage(format!("R2 put {key}: injected r2 fault")))
                } else {
                    archive.put_verified(&key, bytes).await
                }
            }
        });
        let puts = join_all(puts).await;
        let mut written = Vec::new();
        for ((loaded, _, _), put) in due.iter().zip(puts) {
            match put {
                Ok(size) => {
                    let row = slim_row(&loaded.run, &summary_of(loaded)?, now, size);
                    written.push((loaded, row, size));
                }
                Err(e) => {
                    counts.failed += 1;
                    self.count_archive_failure(&loaded.run.run_id).await;
                    worker::console_error!("archive: run {}: {e}; kept in D1, tried again later", loaded.run.run_id);
                }
            }
        }
        if written.is_empty() {
            return Ok(());
        }
        let rows: Vec<(&Loaded, ArchivedRow)> = written.iter().map(|(loaded, row, _)| (*loaded, row.clone())).collect();
        let moved = self.write_archived_many(&rows).await?;
        for ((_, _, size), moved) in written.iter().zip(moved) {
            if moved {
                counts.archived += 1;
                counts.bytes += size;
            }
        }
        Ok(())
    }

    /// Reads a group of runs whole (each with its steps, attempts and events) in one round
    /// trip of four statements; runs not found are left out.
    async fn read_group(&self, run_ids: &[&str]) -> Result<Vec<(Loaded, Vec<AttemptRow>, Vec<EventRow>)>> {
        let results = self
            .db
            .batch_results(vec![
                crate::d1::runs::select_many(&self.db, run_ids)?,
                crate::d1::steps::select_of_runs(&self.db, run_ids)?,
                views::attempts_of_runs_stmt(&self.db, run_ids)?,
                events::of_runs_stmt(&self.db, run_ids)?,
            ])
            .await?;
        let mut steps: BTreeMap<String, Vec<StepRow>> = BTreeMap::new();
        for step in results.rows::<StepRow>(1)? {
            steps.entry(step.run_id.clone()).or_default().push(step);
        }
        let mut attempts: BTreeMap<String, Vec<AttemptRow>> = BTreeMap::new();
        for mut attempt in results.rows::<AttemptRow>(2)? {
            let run_id = attempt.run_id.take().unwrap_or_default();
            attempts.entry(run_id).or_default().push(attempt);
        }
        let mut events: BTreeMap<String, Vec<EventRow>> = BTreeMap::new();
        for event in results.rows::<EventRow>(3)? {
            events.entry(event.run_id.clone()).or_default().push(event);
        }
        results
            .rows::<RunRow>(0)?
            .into_iter()
            .map(|run| {
                let id = run.run_id.clone();
                let loaded = Loaded::from_rows(run, steps.remove(&id).unwrap_or_default())?;
                Ok((loaded, attempts.remove(&id).unwrap_or_default(), events.remove(&id).unwrap_or_default()))
            })
            .collect()
    }

    /// Counts a failed write or check of `run_id`'s object in `/metrics`
    /// (`orchestrator_archive_failures_total`). Best effort: a failure to count is logged.
    async fn count_archive_failure(&self, run_id: &str) {
        let counted = match rows::add_totals(&self.db, &[(ARCHIVE_FAILURES.to_string(), String::new(), 1)]) {
            Ok(statement) => self.db.batch(vec![statement]).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = counted {
            worker::console_error!("archive: run {run_id}: its R2 failure is not counted: {e}");
        }
    }

    /// Where `run_id` is kept, if anywhere.
    pub async fn kept(&self, run_id: &str) -> Result<Option<Kept>> {
        if let Some(loaded) = self.load(run_id).await? {
            return Ok(Some(Kept::Live(Box::new(loaded))));
        }
        Ok(rows::get(&self.db, run_id).await?.map(|row| Kept::Archived(Box::new(row))))
    }

    /// The archived run of a slim row, read from R2. A missing object is
    /// [`Error::ArchiveMissing`].
    pub async fn read_archived(&self, row: &ArchivedRow) -> Result<ArchivedRun> {
        let key = key_of(&row.client_id, row.created_at, &row.run_id);
        let bytes = Archive::from_env(self.env())?
            .get(&key)
            .await?
            .ok_or_else(|| Error::ArchiveMissing { run_id: row.run_id.clone() })?;
        decompress(&bytes)
    }

    /// A run as its API answer shows it, from D1 or from the archive.
    pub async fn run_record(&self, kept: Kept) -> Result<RunRecord> {
        match kept {
            Kept::Live(loaded) => {
                let attempts = self.attempts_of(&loaded).await?;
                let diagnosis = self.diagnosis_of(&loaded).await?;
                Ok(RunRecord { loaded: *loaded, attempts, diagnosis, archived: false })
            }
            Kept::Archived(row) => {
                let run = self.read_archived(&row).await?;
                let loaded = Loaded::from_rows(run.run, run.steps)?;
                let mut attempts: BTreeMap<String, Vec<Attempt>> = BTreeMap::new();
                for a in run.attempts {
                    attempts.entry(a.service.clone()).or_default().push(Attempt::from(a));
                }
                let key = diagnosis_dedupe_key(&loaded.run_id()?, loaded.run.retries.max(0) as u32);
                let diagnosis = run
                    .events
                    .iter()
                    .find(|e| e.dedupe_key.as_deref() == Some(key.as_str()))
                    .and_then(|e| serde_json::from_str(&e.payload).ok())
                    .filter(|_| loaded.run.diagnosis_event_id.is_some());
                Ok(RunRecord { loaded, attempts, diagnosis, archived: true })
            }
        }
    }

    /// A run's events, from D1 or from the archive, oldest first.
    pub async fn events_kept(&self, kept: &Kept) -> Result<Vec<baton_api::runs::RunEvent>> {
        match kept {
            Kept::Live(loaded) => self.run_events(&loaded.run.run_id).await,
            Kept::Archived(row) => {
                Ok(self.read_archived(row).await?.events.into_iter().map(super::events::run_event).collect())
            }
        }
    }

    /// Deletes an ended run for good: its rows in D1 (what it counted stays in the metric totals),
    /// its slim row and its archive object, its KV summary. `false`: it changed meanwhile (try
    /// again). A run that has not ended is refused by the caller.
    pub async fn delete_run(&self, kept: &Kept) -> Result<bool> {
        let (run_id, client_id, created_at) = match kept {
            Kept::Live(loaded) => {
                if !self.write_leaving(loaded, None).await? {
                    return Ok(false);
                }
                (loaded.run.run_id.clone(), loaded.run.client_id.clone(), loaded.run.created_at)
            }
            Kept::Archived(row) => {
                self.write_archived_deleted(&row.run_id).await?;
                (row.run_id.clone(), row.client_id.clone(), row.created_at)
            }
        };
        // An object of a live run exists when a pass wrote it and crashed before its batch.
        let key = key_of(&client_id, created_at, &run_id);
        match Archive::from_env(self.env()) {
            Ok(archive) => {
                if let Err(e) = archive.delete(&key).await {
                    worker::console_error!("run {run_id}: deleted from D1, but its archive object stays: {e}");
                }
            }
            Err(e) => worker::console_warn!("run {run_id}: {e}"),
        }
        if let Err(e) = crate::kv::Kv::from_env(self.env())?.delete(&crate::bindings::kv_keys::job(&run_id)).await {
            worker::console_warn!("run {run_id}: its KV summary stays: {e}");
        }
        Ok(true)
    }
}

fn key_of(client_id: &str, created_at: i64, run_id: &str) -> String {
    archive_key(client_id, Millis::new(created_at.max(0) as u64), run_id)
}

/// The slim row an archived run keeps in D1.
fn slim_row(run: &RunRow, summary: &RunSummary, now: Millis, bytes: u64) -> ArchivedRow {
    ArchivedRow {
        run_id: run.run_id.clone(),
        client_id: run.client_id.clone(),
        kind: run.kind,
        website_id: run.website_id.clone(),
        domain: run.domain.clone(),
        plan_id: run.plan_id.clone(),
        status: run.status,
        created_at: run.created_at,
        started_at: run.started_at,
        completed_at: run.completed_at,
        services_completed: i64::from(summary.services_completed),
        services_failed: i64::from(summary.services_failed),
        services_timeout: i64::from(summary.services_timeout),
        services_skipped: i64::from(summary.services_skipped),
        services_total: i64::from(summary.services_total),
        diagnosis_event_id: run.diagnosis_event_id.clone(),
        error: run.error.clone(),
        archived_at: now.as_u64() as i64,
        object_bytes: bytes as i64,
    }
}

/// The summary an archived run's slim row keeps (the runs list shows it).
pub fn summary_of_archived(row: &ArchivedRow) -> Result<RunSummary> {
    let corrupt = |what: &str, e: String| Error::Storage(format!("archived run {}: {what}: {e}", row.run_id));
    let started_at = Millis::new(row.started_at.max(0) as u64);
    let completed_at = row.completed_at.map(|c| Millis::new(c.max(0) as u64));
    Ok(RunSummary {
        run_id: row.run_id.parse().map_err(|e: baton_core::ids::IdError| corrupt("run_id", e.to_string()))?,
        website_id: row
            .website_id
            .parse()
            .map_err(|e: baton_core::ids::IdError| corrupt("website_id", e.to_string()))?,
        domain: row.domain.clone(),
        plan_id: row.plan_id.parse().map_err(|e: baton_core::ids::IdError| corrupt("plan_id", e.to_string()))?,
        status: row.status,
        started_at,
        completed_at,
        duration_ms: completed_at.map(|c| c.since(started_at)),
        services_completed: row.services_completed.max(0) as u32,
        services_failed: row.services_failed.max(0) as u32,
        services_timeout: row.services_timeout.max(0) as u32,
        services_skipped: row.services_skipped.max(0) as u32,
        services_total: row.services_total.max(0) as u32,
        diagnosis_event_id: match &row.diagnosis_event_id {
            Some(id) => {
                Some(id.parse().map_err(|e: baton_core::ids::IdError| corrupt("diagnosis_event_id", e.to_string()))?)
            }
            None => None,
        },
        error: row.error.clone(),
    })
}
