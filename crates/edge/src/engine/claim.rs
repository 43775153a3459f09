//! Claiming attempts to run: a task message (or a hand-over) asks for attempt `n` of a step;
//! only the first delivery for that attempt claims it (`claimed_at IS NULL`), so a duplicate
//! never calls the service twice. A message redelivered while its step backs off dispatches
//! the next attempt (a guarded write keeps that to one) and claims it at once.

use baton_core::time::Millis;

use super::run::{Engine, Loaded};
use crate::Result;

/// What a task's claim came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptClaim {
    /// This invocation runs that attempt.
    Run(u32),
    /// Nothing to run (a duplicate, a stale attempt, an ended run): acknowledge it.
    Done,
    /// The step backs off, or another invocation holds the attempt: deliver the message
    /// again after this many seconds.
    RetryAfter(u32),
    /// Another invocation held the attempt and it has expired (that invocation died): look
    /// at the run.
    Expired,
}

impl Engine<'_> {
    /// Takes a slot of the service `service` calls, if that service has a concurrency cap
    /// (`SERVICE_CONCURRENCY`; with several shards, each holds its share of it): `false` means
    /// as many attempts as the cap allows are in
    /// flight, and this one must wait. A slot lasts at most until `expires` (the attempt's
    /// deadline), so a crash cannot leak one; the attempt's ending gives it back.
    pub(crate) async fn take_slot(
        &self,
        loaded: &Loaded,
        service: &str,
        attempt: u32,
        expires: Millis,
    ) -> Result<bool> {
        let Some(spec) = loaded.plan.step(service) else { return Ok(true) };
        let worker = spec.worker_key.as_str();
        let Some(cap) = crate::settings::concurrency_cap(self.env(), worker) else { return Ok(true) };
        // Each shard keeps its own slots: it holds its share of the cap.
        let cap = self.shards().share_of_cap(cap);
        let now = self.now().as_u64() as i64;
        let take = crate::d1::service_slots::take(
            &self.db,
            worker,
            &loaded.run.run_id,
            service,
            attempt,
            now,
            expires.as_u64() as i64,
            cap,
        )?;
        let metas = self.db.batch(vec![take]).await?;
        Ok(metas.first().is_some_and(|m| m.changes > 0))
    }
}

/// Logs `event` of attempt `attempt` of `service`.
pub(super) fn log_attempt(event: crate::log::Event, loaded: &Loaded, service: &str, attempt: u32) {
    let line = crate::log::Line {
        service: Some(service),
        attempt: Some(attempt),
        worker: loaded.plan.step(service).map(|spec| spec.worker_key.as_str()),
        ..crate::log::Line::run(&loaded.run.run_id)
    };
    crate::log::emit(event, &line);
}

/// Whole seconds from `now` until `at`, rounded up so a retry never comes before its backoff.
pub fn seconds_until(at: Millis, now: Millis) -> u32 {
    at.since(now).div_ceil(1000).min(u64::from(u32::MAX)) as u32
}
