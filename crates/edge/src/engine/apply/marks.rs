//! The writes that follow a decision taken elsewhere: the analysed ending
//! ([`lifecycle::analysed`]), when the poller looks next, an attempt's progress notes and
//! heartbeats.

use baton_core::lifecycle;
use baton_core::messages::AnalysisMessage;
use baton_core::synthesis::Diagnosis;
use baton_core::time::Millis;

use super::super::due::DueRun;
use super::super::run::{Engine, Loaded};
use super::{batch, Write};
use crate::{log, Error, Result};

impl Engine<'_> {
    /// Ends a claimed run with its diagnosis (the analysis queue's path). The status is
    /// core's ([`lifecycle::analysed`]). Whether this call ended it: `false` if it was not
    /// claimed (already ended, or never claimed) or another delivery ended it first.
    pub(crate) async fn finish_analysed(&self, loaded: &Loaded, diagnosis: Diagnosis) -> Result<bool> {
        let claimed_at = Millis::new(loaded.run.claimed_at.unwrap_or(0).max(0) as u64);
        let partial = loaded.run.partial == Some(1);
        let Some(finish) = lifecycle::analysed(loaded.status()?, partial, claimed_at, loaded.deadline()) else {
            return Ok(false);
        };
        let under = self.under(self.now());
        let (writes, ended) = batch::ending(loaded, &finish, Some(diagnosis), None, &under, &mut self.fresh())?;
        let metas = self.write(&loaded.run.run_id, &writes).await?;
        let won = metas.first().is_some_and(|m| m.changes > 0);
        if won {
            log::emit(log::Event::AnalysisFinished, &log::Line::run(&ended.run.run_id));
            let last = writes.len() - 1;
            let deliveries = match &writes[last] {
                Write::Deliveries { outbox, .. } => outbox.written(metas.get(last).map_or(0, |m| m.changes)),
                _ => Vec::new(),
            };
            self.after_ending(&ended, &deliveries).await;
        }
        Ok(won)
    }

    /// Sets when the poller looks at an active run next (a run claimed or ended meanwhile keeps
    /// its own due time).
    pub async fn look_again_at(&self, run_id: &str, at: i64) -> Result<()> {
        self.write(run_id, &[Write::DueWhile { at, statuses: lifecycle::OPEN }]).await.map(|_| ())
    }

    /// Sends a claimed run's analysis again (its message was lost or its consumer died), and
    /// looks again after the analysis timeout (only while the run is still claimed).
    pub async fn resend_analysis(&self, run: &DueRun) -> Result<()> {
        let run_id = run.run_id.parse().map_err(|e| Error::Storage(format!("run id {}: {e}", run.run_id)))?;
        let missing = run.missing.iter().filter_map(|m| m.parse().ok()).collect();
        self.send_analysis(&AnalysisMessage::new(run_id, run.partial, missing)).await?;
        let at = self.now().saturating_add(self.config.analysis_timeout_ms()).as_u64() as i64;
        self.write(&run.run_id, &[Write::DueWhile { at, statuses: lifecycle::CLAIMED }]).await.map(|_| ())
    }

    /// Notes that the running attempt `attempt` of `service` reports progress: the poller asks
    /// its service (`worker`) every `interval_ms`.
    pub(in crate::engine) async fn note_progress_pollable(
        &self,
        run_id: &str,
        service: &str,
        worker: &str,
        attempt: u32,
        interval_ms: u64,
    ) -> Result<()> {
        let at = self.now().as_u64() as i64;
        let note = Write::ProgressPollable {
            service: service.to_string(),
            worker: worker.to_string(),
            attempt,
            at,
            interval_ms,
        };
        self.write(run_id, &[note]).await.map(|_| ())
    }

    /// Records a heartbeat of the running attempt `attempt` of `service` with what its service
    /// said (`progress`, JSON): its expiry moves, so every copy read before is made stale.
    pub(in crate::engine) async fn note_heartbeat(
        &self,
        run_id: &str,
        service: &str,
        attempt: u32,
        progress: String,
    ) -> Result<()> {
        let at = self.now().as_u64() as i64;
        let heartbeat = Write::Heartbeat { service: service.to_string(), attempt: i64::from(attempt), progress, at };
        self.write(run_id, &[heartbeat, Write::Bump(self.token())]).await.map(|_| ())
    }
}
