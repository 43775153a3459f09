//! Claiming attempts to run: a task message (or a hand-over) asks for attempt `n` of a step;
//! only the first delivery for that attempt claims it (`claimed_at IS NULL`), so a duplicate
//! never calls the service twice. A message redelivered while its step backs off dispatches
//! the next attempt (a guarded write keeps that to one) and claims it at once.

use baton_core::messages::TaskMessage;
use baton_core::state::{self, StepEvent, StepOutcome, StepStatus};
use baton_core::time::Millis;

use super::rows::{record_of, row_with_record};
use super::run::{Engine, Loaded};
use crate::d1::{runs, steps};
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
    /// Claims the attempts `tasks` (all of one run) ask for and reads the run, in one
    /// transaction: a dispatched attempt's claim needs nothing read first. Only a message for a
    /// step that backs off (its next attempt is dispatched on the state read) costs a second
    /// transaction ([`claim_attempts`](Self::claim_attempts)).
    pub async fn claim_and_load(
        &self,
        run_id: &str,
        tasks: &[TaskMessage],
    ) -> Result<(Option<Loaded>, Vec<AttemptClaim>)> {
        let at = self.now().as_u64() as i64;
        let claims = tasks
            .iter()
            .map(|t| steps::claim_start(&self.db, run_id, t.service.as_str(), i64::from(t.attempt), at))
            .collect::<Result<Vec<_>>>()?;
        let (loaded, changes) = self.load_after(run_id, claims).await?;
        let Some(loaded) = loaded else { return Ok((None, vec![AttemptClaim::Done; tasks.len()])) };
        let mut claims: Vec<AttemptClaim> = changes
            .iter()
            .zip(tasks)
            .map(|(c, t)| if *c > 0 { AttemptClaim::Run(t.attempt) } else { AttemptClaim::Done })
            .collect();
        for (claim, task) in claims.iter().zip(tasks) {
            if let AttemptClaim::Run(attempt) = claim {
                log_claim(&loaded, task.service.as_str(), *attempt);
            }
        }
        // An attempt someone else holds: if that invocation dies, this delivery is the
        // attempt's timer — it comes back at the attempt's expiry and looks.
        let now = self.now();
        for (claim, task) in claims.iter_mut().zip(tasks) {
            let (Some(row), Some(spec)) = (loaded.step(task.service.as_str()), loaded.plan.step(task.service.as_str()))
            else {
                continue;
            };
            if *claim != AttemptClaim::Done || row.claimed_at.is_none() || row.attempts != i64::from(task.attempt) {
                continue;
            }
            if let Some(expires) = record_of(row)?.gives_up_at(spec, loaded.deadline()) {
                *claim = if expires > now {
                    AttemptClaim::RetryAfter(seconds_until(expires, now))
                } else {
                    AttemptClaim::Expired
                };
            }
        }
        let backing_off: Vec<usize> = (0..tasks.len())
            .filter(|&i| claims[i] == AttemptClaim::Done)
            .filter(|&i| loaded.step(tasks[i].service.as_str()).is_some_and(|row| row.status == StepStatus::Retrying))
            .collect();
        if backing_off.is_empty() {
            return Ok((Some(loaded), claims));
        }
        let retried: Vec<TaskMessage> = backing_off.iter().map(|&i| tasks[i].clone()).collect();
        let (after, retry_claims) = self.claim_attempts(Some(loaded), &retried, false).await?;
        for (&i, claim) in backing_off.iter().zip(retry_claims) {
            claims[i] = claim;
        }
        Ok((after, claims))
    }

    /// Claims the attempts `tasks` (all of one run) ask for, in one transaction, on the run as
    /// read (`loaded`). Returns the run as it stands after the claims (`None`: no such run
    /// or it is not active) and one claim per task.
    /// `handed_over`: `loaded` is a hand-over's run, whose first wave the orchestrator claimed
    /// for this invocation in its insert; those attempts need no claim of their own.
    pub async fn claim_attempts(
        &self,
        loaded: Option<Loaded>,
        tasks: &[TaskMessage],
        handed_over: bool,
    ) -> Result<(Option<Loaded>, Vec<AttemptClaim>)> {
        let mut claims = vec![AttemptClaim::Done; tasks.len()];
        let Some(mut loaded) = loaded else { return Ok((None, claims)) };
        if !matches!(loaded.status()?, baton_core::state::RunStatus::Started | baton_core::state::RunStatus::Running) {
            return Ok((None, claims)); // cancelled, aggregating or finished
        }
        let now = self.now();
        let at = now.as_u64() as i64;
        let run_id = loaded.run.run_id.clone();
        let mut statements = Vec::new();
        let mut dispatched_any = false;
        // (task index, index of the statement that decides, the claimed row, attempt)
        let mut pending = Vec::new();
        for (i, task) in tasks.iter().enumerate() {
            let service = task.service.as_str();
            let (Some(row), Some(spec)) = (loaded.step(service), loaded.plan.step(service)) else { continue };
            let record = record_of(row)?;
            // A retried message keeps its body (the first attempt's number), so while the step
            // backs off any delivery of it may dispatch the next attempt.
            match record.status {
                StepStatus::Running if record.attempts == task.attempt && handed_over && row.claimed_at.is_some() => {
                    claims[i] = AttemptClaim::Run(task.attempt);
                }
                StepStatus::Running if record.attempts == task.attempt => {
                    let mut claimed = row.clone();
                    claimed.claimed_at = Some(at);
                    pending.push((i, statements.len(), claimed, task.attempt));
                    statements.push(steps::claim_start(&self.db, &run_id, service, row.attempts, at)?);
                }
                StepStatus::Retrying if task.attempt <= record.attempts => {
                    let next = match state::apply(&record, StepEvent::Dispatched, now, spec, &mut *self.rng()) {
                        Ok(StepOutcome::Applied(next)) => next,
                        Err(state::IllegalTransition::RetryNotDue { next_attempt_at, .. }) => {
                            claims[i] = AttemptClaim::RetryAfter(seconds_until(next_attempt_at, now));
                            continue;
                        }
                        _ => continue,
                    };
                    let mut claimed = row_with_record(row, &next);
                    claimed.claimed_at = Some(at);
                    pending.push((i, statements.len(), claimed.clone(), next.attempts));
                    statements.push(steps::compare_and_set(
                        &self.db,
                        row.status,
                        row.attempts,
                        &claimed,
                        Some(at),
                        None,
                    )?);
                    dispatched_any = true;
                }
                _ => {} // stale: that attempt is over, or someone else runs it
            }
        }
        if statements.is_empty() {
            return Ok((Some(loaded), claims));
        }
        if dispatched_any {
            statements.push(runs::bump(&self.db, &run_id, self.token())?);
        }
        let metas = self.db.batch(statements).await?;
        for (i, decides, claimed, attempt) in pending {
            // A duplicate delivery (or a racing consumer) finds the attempt claimed: `changes` = 0.
            if metas.get(decides).is_some_and(|m| m.changes > 0) {
                if claimed.attempts > i64::from(tasks[i].attempt) {
                    // A retry dispatched by its own message.
                    log_attempt(crate::log::Event::StepDispatched, &loaded, &claimed.service, attempt);
                }
                log_claim(&loaded, &claimed.service, attempt);
                loaded.replace_step(claimed);
                claims[i] = AttemptClaim::Run(attempt);
            }
        }
        if dispatched_any {
            // The version moved, maybe past other writers' changes too: the next decision on
            // this copy loses its gate and reads the run again.
            loaded.run.version = -1;
        }
        Ok((Some(loaded), claims))
    }

    /// Gives up a claim on a running attempt this invocation could not run, so that the
    /// attempt's message can claim it again instead of waiting for its deadline.
    pub async fn release_attempt(&self, run_id: &str, service: &str, attempt: u32, claimed_at: i64) -> Result<()> {
        let release = steps::release_claim(&self.db, run_id, service, i64::from(attempt), claimed_at)?;
        self.db.batch(vec![release]).await.map(|_| ())
    }
}

impl Engine<'_> {
    /// Takes a slot of the service `service` calls, if that service has a concurrency cap
    /// (`SERVICE_CONCURRENCY`): `false` means as many attempts as the cap allows are in
    /// flight, and this one must wait. A slot lasts at most until `expires` (the attempt's
    /// deadline), so a crash cannot leak one; the attempt's ending gives it back.
    pub async fn take_slot(&self, loaded: &Loaded, service: &str, attempt: u32, expires: Millis) -> Result<bool> {
        let Some(spec) = loaded.plan.step(service) else { return Ok(true) };
        let worker = spec.worker_key.as_str();
        let Some(cap) = crate::settings::concurrency_cap(self.env(), worker) else { return Ok(true) };
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

fn log_claim(loaded: &Loaded, service: &str, attempt: u32) {
    log_attempt(crate::log::Event::StepClaimed, loaded, service, attempt);
}

fn log_attempt(event: crate::log::Event, loaded: &Loaded, service: &str, attempt: u32) {
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
