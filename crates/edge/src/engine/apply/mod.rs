//! The one interpreter of core's decisions ([`baton_core::lifecycle`]). Every change to a run
//! — a service's report, a poller's look, a cancel — comes here:
//!
//! 1. core decides on the run as read ([`lifecycle::decide`]);
//! 2. one D1 batch writes the decision. Its first statement is the **gate**
//!    (`d1::runs::gate`): the run's version moves from the one read to a fresh token only if no
//!    one changed the run or its steps since. Every other statement but a report's own step
//!    write is guarded by that token, so the decision applies whole, to exactly the state it
//!    was taken on, or not at all. A report's step write stands on its own (a compare-and-set
//!    on the step as read) so a result is never lost to a race; it bumps the version for
//!    everyone else;
//! 3. a lost gate means a racing writer: the run is read again and decided again (the
//!    reports not yet written, then a look), at most [`MAX_ROUNDS`] times — after that the
//!    run is due within [`RESULT_RECHECK_MS`] and the poller carries on;
//! 4. then the effects of what was won: task messages (or, [`Dispatch::Inline`], the attempts
//!    handed back to the caller), the analysis message, the run's ending (one path for every
//!    ending: see [`super::finish`]).
//!
//! The fan-in is claimed exactly once: the claim is a gated statement, and a gate is won by
//! one writer per version of the run.

mod archive;
mod batch;
mod claims;
mod deliver;
pub(crate) mod maps;
mod marks;
mod rounds;
mod totals;
mod usage;

use std::collections::BTreeMap;

use baton_core::lifecycle::{self, Carry, Cause, Effect, Event, Observer, ReportOutcome, Rules, RunAction, RunState};
use baton_core::messages::{AnalysisMessage, TaskMessage, TasksQueueMessage, TimerKind, TimerMessage};
use baton_core::state::{RunStatus, StepStatus};
use baton_core::time::Millis;

pub(crate) use batch::{Fresh, Under, Write};
pub use deliver::Delivered;
pub use usage::record_usage;

use super::claim::seconds_until;
use super::rows::row_with_record;
use super::run::{
    names, AdvanceReport, Dispatch, Engine, FanInClaim, Loaded, RecordOutcome, Report, RESULT_RECHECK_MS,
    RETRY_GRACE_MS,
};
use crate::{faults, log, Result};

/// Rounds of read-and-decide-again when racing writers keep winning the gate.
pub const MAX_ROUNDS: usize = 4;

/// What a service reported, with what it sent.
#[derive(Debug, Clone)]
pub struct Reported {
    /// The step.
    pub service: String,
    /// The attempt (`None`: whichever is current).
    pub attempt: Option<u32>,
    /// The report and its payload.
    pub report: Report,
}

impl Engine<'_> {
    /// Records what a service reported for `service`'s attempt `attempt` (any attempt when
    /// `None`), then carries out what it makes due.
    pub async fn record(
        &self,
        run_id: &str,
        service: &str,
        attempt: Option<u32>,
        report: Report,
    ) -> Result<RecordOutcome> {
        crate::meter::attribute(run_id);
        let Some(loaded) = self.load(run_id).await? else { return Ok(RecordOutcome::NotFound) };
        self.record_loaded(loaded, service, attempt, report, Dispatch::Queue).await
    }

    /// [`record`](Self::record) on a run the caller has read (a stale copy only costs a round).
    pub async fn record_loaded(
        &self,
        loaded: Loaded,
        service: &str,
        attempt: Option<u32>,
        report: Report,
        dispatch: Dispatch,
    ) -> Result<RecordOutcome> {
        let reported = Reported { service: service.to_string(), attempt, report };
        let (mut outcomes, advance) =
            self.carry_out(loaded, vec![reported], Event::Look, Observer::EventDriven, dispatch).await?;
        Ok(match outcomes.pop() {
            Some(ReportOutcome::Recorded(step)) => RecordOutcome::Recorded { step, advance },
            Some(ReportOutcome::AlreadyTerminal) => RecordOutcome::AlreadyTerminal,
            Some(ReportOutcome::NotFound) | None => RecordOutcome::NotFound,
            Some(ReportOutcome::Stale) => RecordOutcome::Stale,
        })
    }

    /// Looks at a run now: attempt time-outs, the run's deadline, skips, ready steps, fan-in.
    pub async fn advance(&self, loaded: &Loaded, caller: Observer, dispatch: Dispatch) -> Result<AdvanceReport> {
        Ok(self.carry_out(loaded.clone(), Vec::new(), Event::Look, caller, dispatch).await?.1)
    }

    /// Decides on `loaded` with `reports` (then a look), writes the decision, acts on what it
    /// won; reads the run again and decides again while racing writers win the gate.
    pub(crate) async fn carry_out(
        &self,
        mut loaded: Loaded,
        reports: Vec<Reported>,
        then: Event,
        caller: Observer,
        dispatch: Dispatch,
    ) -> Result<(Vec<ReportOutcome>, AdvanceReport)> {
        let mut outcomes: Vec<Option<ReportOutcome>> = vec![None; reports.len()];
        let mut report = AdvanceReport::default();
        for _ in 0..MAX_ROUNDS {
            let mut open = Vec::new();
            let mut events = Vec::new();
            let undecided: Vec<usize> = (0..reports.len()).filter(|&i| outcomes[i].is_none()).collect();
            for i in undecided {
                match event_of(&reports[i]) {
                    Some(event) => {
                        open.push(i);
                        events.push(event);
                    }
                    None => outcomes[i] = Some(ReportOutcome::NotFound),
                }
            }
            events.push(then.clone());
            // Events delivered to the run, for its wait steps (read only for a plan with waits).
            let inbox = if loaded.plan.has_waits() {
                crate::d1::inbox::of_run(&self.db, &loaded.run.run_id).await?
            } else {
                Vec::new()
            };
            let arrived: Vec<(String, Report)> = inbox
                .iter()
                .filter_map(|row| {
                    let spec = loaded.plan.wait_for(&row.name)?;
                    let output = serde_json::from_str(&row.payload).unwrap_or(serde_json::Value::Null);
                    Some((
                        spec.service.as_str().to_string(),
                        Report::Succeeded { output, usage: None, duration_ms: None },
                    ))
                })
                .collect();
            events.extend(inbox.iter().map(|row| Event::Arrived { event: row.name.clone() }));
            let reported: Vec<(&str, &Report)> =
                open.iter().map(|&i| (reports[i].service.as_str(), &reports[i].report)).collect();
            let decision = self.decide(&loaded, &events, &reported, caller)?;
            for (&i, outcome) in open.iter().zip(&decision.reported) {
                if !matches!(outcome, ReportOutcome::Recorded(_)) {
                    outcomes[i] = Some(outcome.clone());
                }
            }
            if decision.is_empty() {
                report.after = Some(loaded);
                break;
            }
            let payloads: BTreeMap<&str, &Report> = open
                .iter()
                .zip(&decision.reported)
                .filter(|(_, o)| matches!(o, ReportOutcome::Recorded(_)))
                .map(|(&i, _)| (reports[i].service.as_str(), &reports[i].report))
                .chain(arrived.iter().map(|(service, report)| (service.as_str(), report)))
                .collect();
            let now = self.now();
            let effects = lifecycle::effects(&decision, &self.carry(now, dispatch));
            let batch =
                batch::decision_batch(&loaded, &decision, &effects, &payloads, &self.under(now), &mut self.fresh())?;
            let metas = self.write(&loaded.run.run_id, &batch.writes).await?;
            let won = |i: usize| metas.get(i).is_some_and(|m| m.changes > 0);
            log_writes(&loaded, &decision, &batch.steps, &won);
            for (&i, outcome) in open.iter().zip(&decision.reported) {
                let written = batch.steps.iter().any(|(at, service, cause)| {
                    *cause == Cause::Reported && won(*at) && outcome_service(outcome) == Some(service.as_str())
                });
                if written {
                    outcomes[i] = Some(outcome.clone());
                }
            }
            if !won(0) {
                // A racing writer changed the run first: read it again and decide again.
                match self.load(&loaded.run.run_id).await? {
                    Some(fresh) => loaded = fresh,
                    None => break,
                }
                continue;
            }
            self.report_decision(&decision, &mut report);
            let claimed = batch.claim.is_some_and(won);
            if let (true, RunAction::Claim { partial, .. }) = (claimed, &decision.run) {
                report.claimed = Some(if *partial { FanInClaim::Partial } else { FanInClaim::Complete });
                log::emit(log::Event::FanInClaimed, &log::Line::run(&loaded.run.run_id));
            }
            let ended = batch.ending.filter(|(at, ..)| won(*at)).map(|(_, ended, deliveries_at)| {
                let written = match &batch.writes[deliveries_at] {
                    Write::Deliveries { outbox, .. } => {
                        outbox.written(metas.get(deliveries_at).map_or(0, |m| m.changes))
                    }
                    _ => Vec::new(),
                };
                (ended, written)
            });
            self.act(batch.after, ended, &decision, &effects, dispatch, &mut report).await?;
            break;
        }
        let outcomes = outcomes.into_iter().map(|o| o.unwrap_or(ReportOutcome::Stale)).collect();
        Ok((outcomes, report))
    }

    /// Core's decision on `events`; `reported`: what the reports among them sent (a map
    /// step's list may be in one).
    fn decide(
        &self,
        loaded: &Loaded,
        events: &[Event],
        reported: &[(&str, &Report)],
        caller: Observer,
    ) -> Result<lifecycle::Decision> {
        let records = loaded.records()?;
        let sizes = if loaded.plan.has_maps() { maps::sizes(loaded, reported) } else { Vec::new() };
        let run = RunState {
            status: loaded.status()?,
            started_at: loaded.started_at(),
            plan: &loaded.plan,
            steps: &records,
            sizes: &sizes,
        };
        Ok(lifecycle::decide(&run, events, &self.rules(caller), &mut *self.rng()))
    }

    /// The rules core decides under, now.
    pub(super) fn rules(&self, caller: Observer) -> Rules {
        Rules {
            now: self.now(),
            fan_in: self.config.fan_in(),
            event_driven_fanin: self.config.event_driven_fanin,
            observer: caller,
            retry_grace_ms: RETRY_GRACE_MS,
        }
    }

    /// What carrying out a decision needs besides it, now.
    fn carry(&self, now: Millis, dispatch: Dispatch) -> Carry {
        // Resilience tests make the analysis fail: a fan-in then goes to the analysis queue.
        let dispatch = match dispatch {
            Dispatch::Inline { analysis: true } if faults::injected(self.env(), "analysis") => {
                Dispatch::Inline { analysis: false }
            }
            other => other,
        };
        Carry {
            now,
            dispatch,
            result_recheck_ms: RESULT_RECHECK_MS,
            analysis_timeout_ms: self.config.analysis_timeout_ms(),
        }
    }

    /// What a batch is built under, now.
    fn under(&self, now: Millis) -> Under {
        Under {
            now,
            capped: crate::settings::concurrency_caps(self.env()).into_keys().collect(),
            events_service: self.orchestrator_service_name(),
        }
    }

    /// Fresh tokens and ids from this event's sources.
    fn fresh(&self) -> EngineFresh<'_, '_> {
        EngineFresh(self)
    }

    /// Runs `writes` on `run_id`'s rows as one transaction.
    async fn write(&self, run_id: &str, writes: &[Write]) -> Result<Vec<crate::d1::Meta>> {
        self.db.batch(batch::statements(&self.db, run_id, writes)?).await
    }

    fn report_decision(&self, decision: &lifecycle::Decision, report: &mut AdvanceReport) {
        report.timed_out = names(decision.settled_as(StepStatus::Timeout));
        report.retrying = names(decision.settled_as(StepStatus::Retrying));
        report.skipped = names(decision.settled_as(StepStatus::Skipped));
        report.deferred = decision.run == RunAction::DeferFanIn;
        report.paused = decision.run == RunAction::Pause;
        report.resumed = decision.resume;
    }

    /// The effects of a won decision: dispatches, retries, cancel notices, the analysis, the
    /// ending's tail.
    async fn act(
        &self,
        after: Loaded,
        ended: Option<(Loaded, Vec<String>)>,
        decision: &lifecycle::Decision,
        effects: &[Effect],
        dispatch: Dispatch,
        report: &mut AdvanceReport,
    ) -> Result<()> {
        let run_id = after.run_id()?;
        let now = self.now();
        let claimed = report.claimed.is_some();
        report.cancelled = decision
            .writes
            .iter()
            .filter(|w| w.cause == Cause::Cancelled)
            .map(|w| w.after.service.as_str().to_string())
            .collect();
        let task = |service: &baton_core::ids::ServiceSlug, attempt: u32| {
            TaskMessage::new(run_id.clone(), service.clone(), attempt)
        };
        let mut sends: Vec<TaskMessage> = Vec::new();
        let mut messages: Vec<(TasksQueueMessage, u32)> = Vec::new();
        let mut notices: Vec<TimerMessage> = Vec::new();
        let mut analysis = None;
        let mut analysed_now = false;
        for effect in effects {
            match effect {
                Effect::Send { service, attempt } => sends.push(task(service, *attempt)),
                Effect::HandOver { service, attempt } => {
                    report.dispatched.push(service.as_str().to_string());
                    report.unsent_tasks.push(task(service, *attempt));
                }
                Effect::Retry { service, attempt, at } => {
                    messages.push((task(service, *attempt).into(), seconds_until(*at, now)));
                }
                Effect::TellCancelled { service, attempt } => {
                    notices.push(TimerMessage::attempt(
                        TimerKind::Cancelled,
                        run_id.clone(),
                        service.clone(),
                        *attempt,
                        now,
                    ));
                }
                Effect::AwaitEvent { service, attempt, until } => {
                    notices.push(TimerMessage::attempt(
                        TimerKind::AttemptDeadline,
                        run_id.clone(),
                        service.clone(),
                        *attempt,
                        *until,
                    ));
                }
                Effect::Analyse { partial, missing } => {
                    analysis = Some(AnalysisMessage::new(run_id.clone(), *partial, missing.clone()));
                }
                Effect::AnalyseNow(_) => analysed_now = true,
                Effect::ReleaseSlot { .. } | Effect::LookNoLaterThan(_) | Effect::AwaitAnalysis { .. } => {}
            }
        }
        let retries_only = sends.is_empty();
        messages.extend(sends.iter().cloned().map(|t| (t.into(), 0)));
        let sent = self.send_task_queue(&messages).await;
        match &sent {
            Ok(()) => report.dispatched.extend(sends.iter().map(|t| t.service.as_str().to_string())),
            Err(e) if !retries_only => {
                worker::console_error!("run {run_id}: dispatch send failed ({e}); leaving it to the poller");
                self.undo_dispatch(&after, decision).await?;
            }
            Err(e) => worker::console_error!("run {run_id}: retry messages not sent ({e}); the poller dispatches them"),
        }
        // The services of attempts in flight are told of a cancel by the consumer (which
        // reaches them), at once, through the task queue.
        if let Err(e) = self.send_timers(notices).await {
            worker::console_warn!(
                "run {run_id}: timers not sent ({e}); cancel notices are lost, the poller keeps waits' timeouts"
            );
        }
        if let Some((ended, deliveries)) = ended {
            if claimed && analysed_now {
                // The rule-based analysis was written with the claim.
                log::emit(log::Event::AnalysisStarted, &log::Line::run(&ended.run.run_id));
                log::emit(log::Event::AnalysisFinished, &log::Line::run(&ended.run.run_id));
            }
            let status = ended.status()?;
            report.finished = Some(status);
            report.failed = status == RunStatus::Failed;
            if matches!(dispatch, Dispatch::Inline { .. }) {
                // The caller tells whoever waits for the run first, then runs the tail.
                report.tail_pending = true;
                report.deliveries = deliveries;
            } else {
                self.after_ending(&ended, &deliveries).await;
            }
            report.after = Some(ended);
            return Ok(());
        }
        if let (true, Some(message)) = (claimed, analysis) {
            log::emit(log::Event::AnalysisStarted, &log::Line::run(&after.run.run_id));
            if !self.start_analysis(&after.run.run_id, &message).await? {
                report.claimed = None;
            }
        }
        report.after = Some(after);
        Ok(())
    }

    /// Sends task messages on the task queue.
    pub(crate) async fn send_tasks(&self, messages: &[TaskMessage]) -> Result<()> {
        let messages: Vec<(TasksQueueMessage, u32)> = messages.iter().cloned().map(|t| (t.into(), 0)).collect();
        self.send_task_queue(&messages).await
    }

    /// Sends messages (tasks, timers) on the task queue, each with its delay in seconds.
    pub(super) async fn send_task_queue(&self, messages: &[(TasksQueueMessage, u32)]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        if faults::injected(self.env(), "task-queue") {
            return Err(crate::Error::Queue("injected task-queue fault".into()));
        }
        crate::queues::send_all_delayed(&crate::queues::task_queue(self.env())?, messages).await
    }

    /// Sends an analysis message (e.g. one a [`Dispatch::Inline`] caller could not run).
    pub(crate) async fn send_analysis(&self, message: &AnalysisMessage) -> Result<()> {
        crate::queues::send(&crate::queues::analysis_queue(self.env())?, message).await
    }

    /// Puts the dispatched steps back as they were read and makes the run due now, so the
    /// poller dispatches them again: a failed send loses nothing.
    pub(super) async fn undo_dispatch(&self, after: &Loaded, decision: &lifecycle::Decision) -> Result<()> {
        let mut writes = Vec::new();
        for write in decision.writes.iter().filter(|w| w.cause == Cause::Dispatched) {
            let Some(row) = after.step(write.after.service.as_str()) else { continue };
            let before = row_with_record(row, &write.before);
            writes.push(Write::Step {
                read_status: row.status,
                read_attempts: row.attempts,
                row: Box::new(before),
                claim: None,
                gate: None,
            });
        }
        writes.push(Write::Due(self.now().as_u64() as i64));
        writes.push(Write::Bump(self.token()));
        self.write(&after.run.run_id, &writes).await?;
        Ok(())
    }

    /// Sends the analysis message of a fan-in claim this caller won; if it cannot be sent, the
    /// claim is given back and the run made due, so the poller claims again. Whether it was sent.
    pub(super) async fn start_analysis(&self, run_id: &str, message: &AnalysisMessage) -> Result<bool> {
        match self.send_analysis(message).await {
            Ok(()) => Ok(true),
            Err(e) => {
                worker::console_error!("run {run_id}: analysis send failed ({e}); releasing the fan-in claim");
                let at = self.now().as_u64() as i64;
                self.write(run_id, &[Write::ReleaseFanIn { at, token: self.token() }]).await?;
                Ok(false)
            }
        }
    }
}

/// Tokens and ids drawn from the engine's sources.
struct EngineFresh<'e, 'a>(&'e Engine<'a>);

impl Fresh for EngineFresh<'_, '_> {
    fn token(&mut self) -> i64 {
        self.0.token()
    }
}

/// One log line per step write that was won, by what it did to the step.
fn log_writes(
    loaded: &Loaded,
    decision: &lifecycle::Decision,
    writes: &[(usize, String, Cause)],
    won: &dyn Fn(usize) -> bool,
) {
    for (at, service, cause) in writes {
        if !won(*at) {
            continue;
        }
        let Some(write) = decision.writes.iter().find(|w| w.after.service.as_str() == service) else { continue };
        let after = &write.after;
        let event = match (cause, after.status) {
            (Cause::Dispatched | Cause::Awaited | Cause::Expanded, _) => log::Event::StepDispatched,
            (_, StepStatus::Completed) => log::Event::StepCompleted,
            (_, StepStatus::Failed) => log::Event::StepFailed,
            (_, StepStatus::Retrying) => log::Event::StepRetrying,
            (_, StepStatus::Timeout) => log::Event::StepTimedOut,
            (_, StepStatus::Skipped) => log::Event::StepSkipped,
            (_, StepStatus::Cancelled) => log::Event::StepCancelled,
            _ => continue,
        };
        let worker = loaded.plan.step(service).map(|spec| spec.worker_key.as_str());
        let attempt = Some(if matches!(cause, Cause::Dispatched | Cause::Awaited | Cause::Expanded) {
            after.attempts
        } else {
            write.before.attempts
        })
        .filter(|a| *a > 0);
        log::emit(
            event,
            &log::Line {
                run_id: &loaded.run.run_id,
                service: Some(service),
                attempt,
                worker,
                duration_ms: after.duration_ms().filter(|_| after.status.is_terminal()),
                error: after.error.as_deref().filter(|_| event != log::Event::StepDispatched),
            },
        );
    }
}

fn event_of(reported: &Reported) -> Option<Event> {
    let report = match &reported.report {
        Report::Succeeded { .. } => lifecycle::Report::Succeeded,
        Report::Failed(error) => lifecycle::Report::Failed(error.clone()),
    };
    // A name that is not a slug names no step of any plan.
    let service = reported.service.parse().ok()?;
    Some(Event::Reported { service, attempt: reported.attempt, report })
}

fn outcome_service(outcome: &ReportOutcome) -> Option<&str> {
    match outcome {
        ReportOutcome::Recorded(record) => Some(record.service.as_str()),
        _ => None,
    }
}
