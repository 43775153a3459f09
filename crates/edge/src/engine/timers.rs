//! Deadlines kept on the platform's own timers: a [`TimerMessage`] on `baton-tasks`, sent with
//! `delaySeconds`, makes the consumer look at a run when something about it falls due.
//!
//! | timer              | sent                                             | on firing                                  |
//! |--------------------|--------------------------------------------------|--------------------------------------------|
//! | `run_deadline`     | when the run starts (run in place: once it has gone a second without ending); due at its deadline, or sooner at the expiry of an attempt run in place | look at the run (times out what still runs); if it was early, send the next |
//! | `attempt_deadline` | when a service accepts (202) without progress answers | look, if that attempt still runs and is due |
//! | `progress`         | when a service that reports progress accepts     | ask it; record the result, failure or heartbeat; send the next |
//! | `cancelled`        | when a cancel ends an attempt in flight (due at once) | tell its service (`POST /api/cancel/{executionId}`, bounded, best effort) |
//!
//! A retry needs no timer: its own task message is sent with the backoff as its delay. An
//! attempt a consumer is calling is bounded by the call's own time limit; if that consumer
//! dies, its task message comes back, finds the attempt claimed, and waits for the attempt's
//! expiry (a delayed retry of the message) to look at it. A timer is sent
//! in whole seconds rounded down and waits out the fraction when it fires, so it acts within a
//! few milliseconds of being due; one that fires on a run or attempt that has moved on does
//! nothing. The poller stays the safety net for a lost timer.

use std::time::Duration;

use baton_core::lifecycle::{self, Observer};
use baton_core::messages::{
    progress_poll_interval_ms, run_timer_due, timer_delay_seconds, timer_firing, TasksQueueMessage, TimerFiring,
    TimerKind, TimerMessage,
};
use baton_core::progress::{self, Verdict};
use baton_core::state::{StepError, StepStatus};
use baton_core::time::Millis;
use baton_core::trace::SpanOf;
use serde_json::{json, Value};
use worker::Method;

use super::rows::record_of;
use super::run::{Dispatch, Engine, Loaded, Report};
use crate::services::{endpoint, Call};
use crate::{Error, Result};

/// The longest one progress question may take.
const PROGRESS_CALL_LIMIT: Duration = Duration::from_secs(10);

/// The longest telling a service that its work was cancelled may take.
pub const CANCEL_CALL_LIMIT: Duration = Duration::from_secs(2);

/// What a fired timer came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerOutcome {
    /// It looked at the run (it was due).
    Acted,
    /// The run or attempt had moved on.
    MovedOn,
    /// It came early and was sent again.
    Rearmed,
}

impl TimerOutcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TimerOutcome::Acted => "acted",
            TimerOutcome::MovedOn => "moved_on",
            TimerOutcome::Rearmed => "rearmed",
        }
    }
}

impl Engine<'_> {
    /// The delays to send `timers` with, now.
    pub(super) fn with_delays(&self, timers: Vec<TimerMessage>) -> Vec<(TasksQueueMessage, u32)> {
        let now = self.now();
        timers.into_iter().map(|t| (timer_delay_seconds(t.due(), now), t)).map(|(d, t)| (t.into(), d)).collect()
    }

    /// Sends timers on the task queue.
    pub(crate) async fn send_timers(&self, timers: Vec<TimerMessage>) -> Result<()> {
        if timers.is_empty() {
            return Ok(());
        }
        let messages = self.with_delays(timers);
        crate::queues::send_all_delayed(&crate::queues::task_queue(self.env())?, &messages).await
    }

    /// The run's own timer: at its deadline, or sooner at the expiry of an attempt claimed
    /// here and run in place ([`run_timer_due`]), so that if this invocation dies the attempt
    /// is looked at when it expires, as a consumer's redelivered task message would.
    pub(crate) fn run_deadline_timer(&self, loaded: &Loaded) -> Result<TimerMessage> {
        let deadline = loaded.deadline();
        let mut unwatched = Vec::new();
        for row in loaded.steps.iter().filter(|row| row.status == StepStatus::Running && row.claimed_at.is_some()) {
            let Some(spec) = loaded.plan.step(&row.service) else { continue };
            unwatched.extend(record_of(row)?.expires_at(spec));
        }
        Ok(TimerMessage::run_deadline(loaded.run_id()?, run_timer_due(deadline, unwatched, self.now())))
    }

    /// A service accepted attempt `attempt` of `service` (202) and will report later: if it
    /// reports progress, it is asked at intervals (the first question after
    /// `estimated_completion_ms` / 4, bounded), otherwise a timer waits for the attempt's
    /// expiry.
    pub(crate) async fn accepted(
        &self,
        loaded: &Loaded,
        service: &str,
        worker: &str,
        attempt: u32,
        progress: Option<Option<u64>>,
    ) -> Result<()> {
        let run_id = loaded.run_id()?;
        let (Some(row), Some(spec)) = (loaded.step(service), loaded.plan.step(service)) else { return Ok(()) };
        let record = record_of(row)?;
        let Some(expires) = record.gives_up_at(spec, loaded.deadline()) else { return Ok(()) };
        let timer = match progress {
            Some(estimated) => {
                let interval = progress_poll_interval_ms(estimated, spec.heartbeat_timeout_ms);
                self.note_progress_pollable(run_id.as_str(), service, worker, attempt, interval).await?;
                let at = self.now().saturating_add(interval).min(expires);
                TimerMessage::attempt(TimerKind::Progress, run_id, record.service, attempt, at)
            }
            None => TimerMessage::attempt(TimerKind::AttemptDeadline, run_id, record.service, attempt, expires),
        };
        self.send_timers(vec![timer]).await
    }

    /// Carries out a fired timer. What it is about is read first: a timer on a run or an
    /// attempt that has moved on is done at once, without waiting out its fraction.
    pub async fn on_timer(&self, timer: &TimerMessage) -> Result<TimerOutcome> {
        if timer_firing(timer.due(), self.now()) == TimerFiring::Rearm {
            self.send_timers(vec![timer.clone()]).await?;
            return Ok(TimerOutcome::Rearmed);
        }
        let Some(loaded) = self.load(timer.run_id.as_str()).await? else { return Ok(TimerOutcome::MovedOn) };
        if let (TimerKind::Cancelled, Some(service), Some(attempt)) = (timer.timer, &timer.service, timer.attempt) {
            self.tell_cancelled(&loaded, &[(service.as_str().to_string(), attempt)]).await;
            return Ok(TimerOutcome::Acted);
        }
        if !lifecycle::OPEN.contains(&loaded.status()?) {
            return Ok(TimerOutcome::MovedOn);
        }
        let attempt = match &timer.service {
            None => None,
            Some(service) => {
                let (Some(row), Some(spec)) = (loaded.step(service.as_str()), loaded.plan.step(service.as_str()))
                else {
                    return Ok(TimerOutcome::MovedOn);
                };
                let record = record_of(row)?;
                if record.status != StepStatus::Running || Some(record.attempts) != timer.attempt {
                    return Ok(TimerOutcome::MovedOn);
                }
                let Some(expires) = record.gives_up_at(spec, loaded.deadline()) else {
                    return Ok(TimerOutcome::MovedOn);
                };
                Some((service.as_str().to_string(), record.attempts, expires))
            }
        };
        if let TimerFiring::WaitThenAct(ms) = timer_firing(timer.due(), self.now()) {
            worker::Delay::from(Duration::from_millis(ms)).await;
        }
        let Some((service, number, expires)) = attempt else {
            let report = self.advance(&loaded, Observer::EventDriven, Dispatch::Queue).await?;
            // Fired before the deadline (an attempt run in place expired): the next look.
            if report.finished.is_none() && timer.due().as_u64() < loaded.run.deadline_at.max(0) as u64 {
                let after = report.after.as_ref().unwrap_or(&loaded);
                self.send_timers(vec![self.run_deadline_timer(after)?]).await?;
            }
            return Ok(TimerOutcome::Acted);
        };
        if timer.timer == TimerKind::Progress {
            return self.ask_progress(loaded, &service, number, expires, true).await;
        }
        if expires > self.now() {
            // A heartbeat moved the expiry: wait for the new one.
            self.send_timers(vec![timer.at(expires)]).await?;
            return Ok(TimerOutcome::Rearmed);
        }
        self.advance(&loaded, Observer::EventDriven, Dispatch::Queue).await?;
        Ok(TimerOutcome::Acted)
    }

    /// Asks the service of a running attempt how it is going, and records what it says: the
    /// result (fetched from `/api/result/{executionId}` when not inline), a failure, or a
    /// heartbeat. Past the attempt's expiry the run is looked at (the attempt times out).
    /// `chain`: send the next question's timer (the poller, a safety net, does not).
    pub async fn ask_progress(
        &self,
        loaded: Loaded,
        service: &str,
        attempt: u32,
        expires: Millis,
        chain: bool,
    ) -> Result<TimerOutcome> {
        let row = loaded.step(service).ok_or_else(|| Error::Internal(format!("no step {service}")))?;
        let spec = loaded.plan.step(service).ok_or_else(|| Error::Internal(format!("no step {service}")))?;
        let noted: Value = row.progress.as_deref().and_then(|p| serde_json::from_str(p).ok()).unwrap_or(Value::Null);
        let worker = noted["worker"].as_str().unwrap_or(spec.worker_key.as_str()).to_string();
        let interval = noted["interval_ms"].as_u64().unwrap_or_else(|| progress_poll_interval_ms(None, None));
        let run_id = loaded.run.run_id.clone();
        let endpoint = endpoint(self.env(), &worker);
        let limit = Duration::from_millis(expires.since(self.now()).max(1)).min(PROGRESS_CALL_LIMIT);
        let path = format!("/api/progress/{run_id}");
        let trace = loaded.run.trace();
        let asked = Call::get(&path, attempt, &trace, SpanOf::Call(service, attempt, "progress"));
        let verdict = match endpoint.call(self.env(), asked, limit).await {
            Ok(answer) => {
                let body = serde_json::from_str(&answer.body).unwrap_or(Value::String(answer.body.clone()));
                progress::read(answer.status, &body)
            }
            Err(e) => Verdict::NoSign(e.to_string()),
        };
        let report = match verdict {
            Verdict::Completed { output: Some(output), usage } => {
                Some(Report::Succeeded { output, usage, duration_ms: None })
            }
            Verdict::Completed { output: None, usage } => {
                let limit = Duration::from_millis(expires.since(self.now()).max(1)).min(PROGRESS_CALL_LIMIT);
                let path = format!("/api/result/{run_id}");
                let fetch = Call::get(&path, attempt, &trace, SpanOf::Call(service, attempt, "result"));
                match endpoint.call(self.env(), fetch, limit).await {
                    Ok(answer) if (200..300).contains(&answer.status) => {
                        let body: Value = serde_json::from_str(&answer.body).unwrap_or(Value::String(answer.body));
                        let output = body.get("output").cloned().unwrap_or(body);
                        Some(Report::Succeeded { output, usage, duration_ms: None })
                    }
                    Ok(answer) => Some(Report::Failed(StepError::new(
                        baton_core::state::ErrorKind::Transient,
                        format!("result: {} from the service", answer.status),
                    ))),
                    Err(e) => {
                        Some(Report::Failed(StepError::new(baton_core::state::ErrorKind::Transient, e.to_string())))
                    }
                }
            }
            Verdict::Failed(error) => Some(Report::Failed(error)),
            Verdict::Running { progress } => {
                let now = self.now().as_u64() as i64;
                let noted = json!({
                    "pollable": true, "worker": worker, "interval_ms": interval, "polled_at": now,
                    "progress": progress, "status": "running",
                });
                self.note_heartbeat(&run_id, service, attempt, noted.to_string()).await?;
                None
            }
            Verdict::NoSign(why) => {
                worker::console_warn!("run {run_id}: progress of {service} attempt {attempt}: {why}");
                None
            }
        };
        if let Some(report) = report {
            self.record_loaded(loaded, service, Some(attempt), report, Dispatch::Queue).await?;
            return Ok(TimerOutcome::Acted);
        }
        let fresh = self.load(&run_id).await?;
        let Some(fresh) = fresh else { return Ok(TimerOutcome::MovedOn) };
        let (Some(row), Some(spec)) = (fresh.step(service), fresh.plan.step(service)) else {
            return Ok(TimerOutcome::MovedOn);
        };
        let record = record_of(row)?;
        if record.status != StepStatus::Running || record.attempts != attempt {
            return Ok(TimerOutcome::MovedOn);
        }
        let Some(expires) = record.gives_up_at(spec, fresh.deadline()) else { return Ok(TimerOutcome::MovedOn) };
        let now = self.now();
        if expires <= now {
            self.advance(&fresh, Observer::EventDriven, Dispatch::Queue).await?;
            return Ok(TimerOutcome::Acted);
        }
        if chain {
            let next = now.saturating_add(interval).min(expires);
            let timer = TimerMessage::attempt(TimerKind::Progress, fresh.run_id()?, record.service, attempt, next);
            self.send_timers(vec![timer]).await?;
        }
        Ok(TimerOutcome::Acted)
    }

    /// Tells the services of attempts a cancel ended that their work is no longer wanted
    /// (`POST /api/cancel/{executionId}`), concurrently, each bounded; best effort.
    async fn tell_cancelled(&self, loaded: &Loaded, cancelled: &[(String, u32)]) {
        let run_id = loaded.run.run_id.as_str();
        let trace = loaded.run.trace();
        let trace = &trace;
        // A run step's "service" is its child run: cancel it.
        let children = cancelled.iter().filter(|(service, _)| loaded.plan.step(service).is_some_and(|s| s.is_run()));
        for (service, attempt) in children {
            self.cancel_child_of(loaded, service, *attempt).await;
        }
        let calls = cancelled.iter().filter_map(|(service, attempt)| {
            let spec = loaded.plan.step(service).filter(|s| !s.is_run())?;
            let worker = spec.worker_key.as_str().to_string();
            let body = json!({ "executionId": run_id, "stageId": format!("{run_id}:{service}"), "attempt": attempt });
            Some(async move {
                let path = format!("/api/cancel/{run_id}");
                let body = body.to_string();
                let call = Call {
                    method: Method::Post,
                    path: &path,
                    attempt: Some(*attempt),
                    body: Some(&body),
                    trace,
                    span: SpanOf::Call(service, *attempt, "cancel"),
                };
                let answer = endpoint(self.env(), &worker).call(self.env(), call, CANCEL_CALL_LIMIT).await;
                if let Err(e) = answer {
                    worker::console_warn!("run {run_id}: telling {service} of the cancel failed: {e}");
                }
            })
        });
        crate::concurrency::join_all(calls).await;
    }
}
