//! Claims of attempts: a task message (or a hand-over) asks for attempt `n` of a step, and
//! core decides what that comes to on the step as read ([`lifecycle::claim_attempt`]). Only
//! the first delivery for an attempt claims it (`claimed_at IS NULL`), so a duplicate never
//! calls the service twice; a message redelivered once its step's backoff ended dispatches the
//! next attempt (a compare-and-set keeps that to one) and claims it in the same write.

use baton_core::lifecycle::{self, AttemptClaim as Decided, RunState};
use baton_core::messages::TaskMessage;

use super::super::claim::{log_attempt, seconds_until, AttemptClaim};
use super::super::rows::row_with_record;
use super::super::run::{Engine, Loaded};
use super::Write;
use crate::{log, Result};

impl Engine<'_> {
    /// Claims the attempts `tasks` (all of one run) ask for and reads the run, in one
    /// transaction: a dispatched attempt's claim needs nothing read first. Only a message for a
    /// step that backs off (its next attempt is dispatched on the state read) costs a second
    /// transaction ([`claim_attempts`](Self::claim_attempts)).
    pub(crate) async fn claim_and_load(
        &self,
        run_id: &str,
        tasks: &[TaskMessage],
    ) -> Result<(Option<Loaded>, Vec<AttemptClaim>)> {
        let at = self.now().as_u64() as i64;
        let writes: Vec<Write> = tasks
            .iter()
            .map(|t| Write::ClaimAttempt { service: t.service.as_str().to_string(), attempt: i64::from(t.attempt), at })
            .collect();
        let statements = super::batch::statements(&self.db, run_id, &writes)?;
        let (loaded, changes) = self.load_after(run_id, statements).await?;
        let Some(loaded) = loaded else { return Ok((None, vec![AttemptClaim::Done; tasks.len()])) };
        let mut claims: Vec<AttemptClaim> = changes
            .iter()
            .zip(tasks)
            .map(|(c, t)| if *c > 0 { AttemptClaim::Run(t.attempt) } else { AttemptClaim::Done })
            .collect();
        for (claim, task) in claims.iter().zip(tasks) {
            if let AttemptClaim::Run(attempt) = claim {
                log_attempt(log::Event::StepClaimed, &loaded, task.service.as_str(), *attempt);
            }
        }
        // What the others come to, on the run as read after the claims: an attempt someone
        // else holds (if that invocation dies, this delivery is the attempt's timer: it comes
        // back at the attempt's expiry and looks), or a step that backs off.
        if !claims.contains(&AttemptClaim::Done) {
            return Ok((Some(loaded), claims)); // every attempt claimed: nothing to decide
        }
        let now = self.now();
        let records = loaded.records()?;
        let state = RunState {
            status: loaded.status()?,
            started_at: loaded.started_at(),
            plan: &loaded.plan,
            steps: &records,
            sizes: &[],
        };
        let mut backing_off = Vec::new();
        for (i, task) in tasks.iter().enumerate() {
            if claims[i] != AttemptClaim::Done {
                continue;
            }
            let service = task.service.as_str();
            let claimed = loaded.step(service).is_some_and(|row| row.claimed_at.is_some());
            let decided = lifecycle::claim_attempt(
                &state,
                service,
                task.attempt,
                claimed,
                false,
                loaded.deadline(),
                now,
                &mut *self.rng(),
            );
            claims[i] = match decided {
                Decided::HeldElsewhere(until) => AttemptClaim::RetryAfter(seconds_until(until, now)),
                Decided::Expired => AttemptClaim::Expired,
                Decided::NotYet(until) => AttemptClaim::RetryAfter(seconds_until(until, now)),
                Decided::Dispatch(_) => {
                    backing_off.push(i);
                    AttemptClaim::Done
                }
                Decided::Claim(_) | Decided::Held(_) | Decided::Nothing => AttemptClaim::Done,
            };
        }
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
    pub(crate) async fn claim_attempts(
        &self,
        loaded: Option<Loaded>,
        tasks: &[TaskMessage],
        handed_over: bool,
    ) -> Result<(Option<Loaded>, Vec<AttemptClaim>)> {
        let mut claims = vec![AttemptClaim::Done; tasks.len()];
        let Some(mut loaded) = loaded else { return Ok((None, claims)) };
        if !lifecycle::OPEN.contains(&loaded.status()?) {
            return Ok((None, claims)); // cancelled, aggregating or finished
        }
        let now = self.now();
        let at = now.as_u64() as i64;
        let records = loaded.records()?;
        let mut writes = Vec::new();
        let mut dispatched_any = false;
        // (task index, index of the write that decides, the claimed row, attempt)
        let mut pending = Vec::new();
        {
            let state = RunState {
                status: loaded.status()?,
                started_at: loaded.started_at(),
                plan: &loaded.plan,
                steps: &records,
                sizes: &[],
            };
            for (i, task) in tasks.iter().enumerate() {
                let service = task.service.as_str();
                let Some(row) = loaded.step(service) else { continue };
                let claimed = row.claimed_at.is_some();
                let decided = lifecycle::claim_attempt(
                    &state,
                    service,
                    task.attempt,
                    claimed,
                    handed_over,
                    loaded.deadline(),
                    now,
                    &mut *self.rng(),
                );
                match decided {
                    Decided::Held(attempt) => claims[i] = AttemptClaim::Run(attempt),
                    Decided::Claim(attempt) => {
                        let mut row = row.clone();
                        row.claimed_at = Some(at);
                        pending.push((i, writes.len(), row, attempt));
                        writes.push(Write::ClaimAttempt {
                            service: service.to_string(),
                            attempt: i64::from(attempt),
                            at,
                        });
                    }
                    Decided::Dispatch(write) => {
                        let mut claimed_row = row_with_record(row, &write.after);
                        claimed_row.claimed_at = Some(at);
                        pending.push((i, writes.len(), claimed_row.clone(), write.after.attempts));
                        writes.push(Write::Step {
                            read_status: row.status,
                            read_attempts: row.attempts,
                            row: Box::new(claimed_row),
                            claim: Some(at),
                            gate: None,
                        });
                        dispatched_any = true;
                    }
                    Decided::NotYet(until) => claims[i] = AttemptClaim::RetryAfter(seconds_until(until, now)),
                    // Someone else runs it, or that attempt is over.
                    Decided::HeldElsewhere(_) | Decided::Expired | Decided::Nothing => {}
                }
            }
        }
        if writes.is_empty() {
            return Ok((Some(loaded), claims));
        }
        if dispatched_any {
            writes.push(Write::Bump(self.token()));
        }
        let metas = self.write(&loaded.run.run_id, &writes).await?;
        for (i, decides, claimed, attempt) in pending {
            // A duplicate delivery (or a racing consumer) finds the attempt claimed: `changes` = 0.
            if metas.get(decides).is_some_and(|m| m.changes > 0) {
                if claimed.attempts > i64::from(tasks[i].attempt) {
                    // A retry dispatched by its own message.
                    log_attempt(log::Event::StepDispatched, &loaded, &claimed.service, attempt);
                }
                log_attempt(log::Event::StepClaimed, &loaded, &claimed.service, attempt);
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
    pub(crate) async fn release_attempt(
        &self,
        run_id: &str,
        service: &str,
        attempt: u32,
        claimed_at: i64,
    ) -> Result<()> {
        let release = Write::ReleaseAttempt { service: service.to_string(), attempt: i64::from(attempt), claimed_at };
        self.write(run_id, &[release]).await.map(|_| ())
    }
}
