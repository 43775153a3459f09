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

use std::collections::BTreeMap;

use baton_core::lifecycle::{self, Cause, Event, Observer, ReportOutcome, Rules, RunAction, RunState};
use baton_core::messages::{AnalysisMessage, TaskMessage, TasksQueueMessage, TimerKind, TimerMessage};
use baton_core::state::{RunStatus, StepStatus};
use baton_core::time::Millis;
use serde_json::Value;

use super::claim::seconds_until;
use super::rows::row_with_record;
use super::run::{
    missing_json, names, AdvanceReport, Dispatch, Engine, FanInClaim, Loaded, RecordOutcome, Report, RESULT_RECHECK_MS,
    RETRY_GRACE_MS,
};
use super::webhooks::Outbox;
use crate::d1::runs;
use crate::d1::steps;
use crate::d1::Stmt;
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

/// A batch built from a decision: its statements and what each write's `changes` means.
struct Batch {
    statements: Vec<Stmt>,
    /// (index of the write's statement, its step, why it is written)
    writes: Vec<(usize, String, Cause)>,
    /// Index of the claim statement, if any.
    claim: Option<usize>,
    /// The ending written with it: (index of the statement, the run as it ends, the index of
    /// its deliveries' insert and their candidate ids).
    ending: Option<(usize, Loaded, usize, Outbox)>,
    /// The run as the batch leaves it if its gate is won.
    after: Loaded,
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
    pub async fn carry_out(
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
            let decision = self.decide(&loaded, &events, caller)?;
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
                .collect();
            let now = self.now();
            let batch = self.batch_of(&loaded, &decision, &payloads, dispatch, now)?;
            let metas = self.db.batch(batch.statements).await?;
            let won = |i: usize| metas.get(i).is_some_and(|m| m.changes > 0);
            log_writes(&loaded, &decision, &batch.writes, &won);
            for (&i, outcome) in open.iter().zip(&decision.reported) {
                let written = batch.writes.iter().any(|(at, service, cause)| {
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
            let ended = batch.ending.filter(|(at, ..)| won(*at)).map(|(_, ended, outbox_at, outbox)| {
                (ended, outbox.written(metas.get(outbox_at).map_or(0, |m| m.changes)))
            });
            self.act(batch.after, ended, &decision, claimed, dispatch, &mut report).await?;
            break;
        }
        let outcomes = outcomes.into_iter().map(|o| o.unwrap_or(ReportOutcome::Stale)).collect();
        Ok((outcomes, report))
    }

    fn decide(&self, loaded: &Loaded, events: &[Event], caller: Observer) -> Result<lifecycle::Decision> {
        let records = loaded.records()?;
        let run =
            RunState { status: loaded.status()?, started_at: loaded.started_at(), plan: &loaded.plan, steps: &records };
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

    /// The statements of a decision: the gate, the step writes, the run's action, the ending.
    fn batch_of(
        &self,
        loaded: &Loaded,
        decision: &lifecycle::Decision,
        payloads: &BTreeMap<&str, &Report>,
        dispatch: Dispatch,
        now: Millis,
    ) -> Result<Batch> {
        let db = &self.db;
        let run_id = loaded.run.run_id.as_str();
        let at = now.as_u64() as i64;
        let token = self.token();
        let inline = matches!(dispatch, Dispatch::Inline { .. });
        let mut batch = Batch {
            statements: vec![runs::gate(db, run_id, loaded.run.version, token)?],
            writes: Vec::new(),
            claim: None,
            ending: None,
            after: loaded.clone(),
        };
        let after = &mut batch.after;
        after.run.version = token;
        let caps = crate::settings::concurrency_caps(self.env());
        for write in &decision.writes {
            let Some(row) = loaded.step(write.after.service.as_str()) else { continue };
            let mut new_row = row_with_record(row, &write.after);
            // The step's duration stays Baton's own measure (first dispatch to its end), as its
            // attempts' are: a service's `duration_ms` may leave out queueing and transport.
            if let Some(Report::Succeeded { output, usage, .. }) = payloads.get(row.service.as_str()) {
                new_row.output = Some(output.to_string());
                new_row.usage = usage.as_ref().map(Value::to_string);
            }
            // An inline caller claims what it dispatches in the same write: it runs them.
            let claim = (inline && write.cause == Cause::Dispatched).then_some(at);
            new_row.claimed_at = claim.or(if new_row.attempts == row.attempts { row.claimed_at } else { None });
            let gate = (write.cause != Cause::Reported).then_some(token);
            batch.writes.push((batch.statements.len(), new_row.service.clone(), write.cause));
            batch.statements.push(steps::compare_and_set(db, row.status, row.attempts, &new_row, claim, gate)?);
            // An attempt that ends gives back its service's slot, if it holds one.
            let ends_attempt = write.before.status == StepStatus::Running && write.after.status != StepStatus::Running;
            let capped =
                || loaded.plan.step(&new_row.service).is_some_and(|s| caps.contains_key(s.worker_key.as_str()));
            if ends_attempt && capped() {
                batch.statements.push(crate::d1::service_slots::release(
                    db,
                    run_id,
                    &new_row.service,
                    write.before.attempts,
                )?);
            }
            after.replace_step(new_row);
        }
        let reported = decision.writes.iter().any(|w| w.cause == Cause::Reported);
        if reported {
            // If this worker dies before acting on the result, the poller carries on soon.
            let recheck = now.saturating_add(RESULT_RECHECK_MS).as_u64() as i64;
            batch.statements.push(runs::due_no_later_than(db, run_id, recheck)?);
        }
        match &decision.run {
            RunAction::Keep => {}
            RunAction::Start => {
                after.run.status = RunStatus::Running;
                batch.statements.push(runs::mark_running(db, run_id, token)?);
            }
            RunAction::DeferFanIn => batch.statements.push(runs::set_due(db, run_id, at)?),
            RunAction::Claim { partial, missing, then } => {
                let due = now.saturating_add(self.config.analysis_timeout_ms()).as_u64() as i64;
                batch.claim = Some(batch.statements.len());
                let missing_text = missing_json(missing);
                batch.statements.push(runs::claim_fan_in(db, run_id, token, at, *partial, &missing_text, due)?);
                after.mark_fan_in_claimed(now, *partial, missing);
                if dispatch == (Dispatch::Inline { analysis: true }) && !faults::injected(self.env(), "analysis") {
                    // The rule-based analysis is pure: the run ends in this same batch.
                    let finish = lifecycle::Finish { status: *then, from: lifecycle::CLAIMED, error: None };
                    let diagnosis = super::finish::rule_based_diagnosis(after, None);
                    let (statements, ended, outbox) = self.ending(after, &finish, Some(diagnosis), Some(token), now)?;
                    let at = batch.statements.len();
                    batch.ending = Some((at, ended, at + statements.len() - 1, outbox));
                    batch.statements.extend(statements);
                }
            }
            RunAction::Finish(finish) => {
                let (statements, ended, outbox) = self.ending(after, finish, None, Some(token), now)?;
                let at = batch.statements.len();
                batch.ending = Some((at, ended, at + statements.len() - 1, outbox));
                batch.statements.extend(statements);
            }
        }
        if reported {
            // Outside a won gate, the report's write still tells every other copy it is stale.
            batch.statements.push(runs::bump(db, run_id, token)?);
        }
        Ok(batch)
    }

    fn report_decision(&self, decision: &lifecycle::Decision, report: &mut AdvanceReport) {
        report.timed_out = names(decision.settled_as(StepStatus::Timeout));
        report.retrying = names(decision.settled_as(StepStatus::Retrying));
        report.skipped = names(decision.settled_as(StepStatus::Skipped));
        report.deferred = decision.run == RunAction::DeferFanIn;
    }

    /// The effects of a won decision: dispatches, the analysis, the ending's tail.
    async fn act(
        &self,
        after: Loaded,
        ended: Option<(Loaded, Vec<String>)>,
        decision: &lifecycle::Decision,
        claimed: bool,
        dispatch: Dispatch,
        report: &mut AdvanceReport,
    ) -> Result<()> {
        let run_id = after.run_id()?;
        let tasks: Vec<TaskMessage> =
            decision.dispatched().map(|r| TaskMessage::new(run_id.clone(), r.service.clone(), r.attempts)).collect();
        let dispatched: Vec<String> = tasks.iter().map(|t| t.service.as_str().to_string()).collect();
        let inline = matches!(dispatch, Dispatch::Inline { .. });
        report.cancelled = decision
            .writes
            .iter()
            .filter(|w| w.cause == Cause::Cancelled)
            .map(|w| w.after.service.as_str().to_string())
            .collect();
        // Every retry travels as its own task message, delayed by its backoff; an inline
        // caller re-queues the messages of the attempts it reported on itself.
        let now = self.now();
        let retries: Vec<(TasksQueueMessage, u32)> = decision
            .writes
            .iter()
            .filter(|w| w.after.status == StepStatus::Retrying && !(inline && w.cause == Cause::Reported))
            .map(|w| {
                let task = TaskMessage::new(run_id.clone(), w.after.service.clone(), w.after.attempts);
                let delay = w.after.next_attempt_at.map_or(0, |at| seconds_until(at, now));
                (task.into(), delay)
            })
            .collect();
        let mut messages = retries;
        if !inline {
            messages.extend(tasks.iter().cloned().map(|t| (t.into(), 0)));
        }
        let sent = self.send_task_queue(&messages).await;
        let only_retries = tasks.is_empty() || inline;
        match dispatch {
            Dispatch::Inline { .. } => {
                report.dispatched = dispatched;
                report.unsent_tasks = tasks;
            }
            Dispatch::Queue if tasks.is_empty() => {}
            Dispatch::Queue => match &sent {
                Ok(()) => report.dispatched = dispatched,
                Err(e) => {
                    worker::console_error!("run {run_id}: dispatch send failed ({e}); leaving it to the poller");
                    self.undo_dispatch(&after, decision).await?;
                }
            },
        }
        if let (Err(e), true) = (&sent, only_retries) {
            worker::console_error!("run {run_id}: retry messages not sent ({e}); the poller dispatches them");
        }
        // The services of attempts in flight are told of a cancel by the consumer (which
        // reaches them), at once, through the task queue.
        let notices: Vec<TimerMessage> = decision
            .writes
            .iter()
            .filter(|w| w.cause == Cause::Cancelled && w.before.status == StepStatus::Running)
            .map(|w| {
                TimerMessage::attempt(
                    TimerKind::Cancelled,
                    run_id.clone(),
                    w.after.service.clone(),
                    w.before.attempts,
                    now,
                )
            })
            .collect();
        if let Err(e) = self.send_timers(notices).await {
            worker::console_warn!("run {run_id}: cancel notices not sent ({e}); the services are not told");
        }
        if let Some((ended, deliveries)) = ended {
            if claimed {
                // The rule-based analysis was written with the claim.
                log::emit(log::Event::AnalysisStarted, &log::Line::run(&ended.run.run_id));
                log::emit(log::Event::AnalysisFinished, &log::Line::run(&ended.run.run_id));
            }
            let status = ended.status()?;
            report.finished = Some(status);
            report.failed = status == RunStatus::Failed;
            if matches!(dispatch, Dispatch::Inline { .. }) {
                report.tail_pending = true;
                report.deliveries = deliveries;
            } else {
                self.after_ending(&ended, &deliveries).await;
            }
            report.after = Some(ended);
            return Ok(());
        }
        if let (true, RunAction::Claim { partial, missing, .. }) = (claimed, &decision.run) {
            log::emit(log::Event::AnalysisStarted, &log::Line::run(&after.run.run_id));
            let message = AnalysisMessage::new(run_id, *partial, missing.clone());
            if dispatch == (Dispatch::Inline { analysis: true }) {
                report.unsent_analysis = Some(message);
            } else if !self.start_analysis(&after.run.run_id, &message).await? {
                report.claimed = None;
            }
        }
        report.after = Some(after);
        Ok(())
    }

    /// Sends task messages on the task queue.
    pub async fn send_tasks(&self, messages: &[TaskMessage]) -> Result<()> {
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
    pub async fn send_analysis(&self, message: &AnalysisMessage) -> Result<()> {
        crate::queues::send(&crate::queues::analysis_queue(self.env())?, message).await
    }

    /// Puts the dispatched steps back as they were read and makes the run due now, so the
    /// poller dispatches them again: a failed send loses nothing.
    pub(super) async fn undo_dispatch(&self, after: &Loaded, decision: &lifecycle::Decision) -> Result<()> {
        let mut statements = Vec::new();
        for write in decision.writes.iter().filter(|w| w.cause == Cause::Dispatched) {
            let Some(row) = after.step(write.after.service.as_str()) else { continue };
            let before = row_with_record(row, &write.before);
            statements.push(steps::compare_and_set(&self.db, row.status, row.attempts, &before, None, None)?);
        }
        statements.push(runs::set_due(&self.db, &after.run.run_id, self.now().as_u64() as i64)?);
        statements.push(runs::bump(&self.db, &after.run.run_id, self.token())?);
        self.db.batch(statements).await?;
        Ok(())
    }

    /// Sends the analysis message of a fan-in claim this caller won; if it cannot be sent, the
    /// claim is given back and the run made due, so the poller claims again. Whether it was sent.
    pub(super) async fn start_analysis(&self, run_id: &str, message: &AnalysisMessage) -> Result<bool> {
        match self.send_analysis(message).await {
            Ok(()) => Ok(true),
            Err(e) => {
                worker::console_error!("run {run_id}: analysis send failed ({e}); releasing the fan-in claim");
                let now = self.now().as_u64() as i64;
                self.db.batch(vec![runs::release_fan_in(&self.db, run_id, now, self.token())?]).await?;
                Ok(false)
            }
        }
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
            (Cause::Dispatched, _) => log::Event::StepDispatched,
            (_, StepStatus::Completed) => log::Event::StepCompleted,
            (_, StepStatus::Failed) => log::Event::StepFailed,
            (_, StepStatus::Retrying) => log::Event::StepRetrying,
            (_, StepStatus::Timeout) => log::Event::StepTimedOut,
            (_, StepStatus::Skipped) => log::Event::StepSkipped,
            (_, StepStatus::Cancelled) => log::Event::StepCancelled,
            _ => continue,
        };
        let worker = loaded.plan.step(service).map(|spec| spec.worker_key.as_str());
        let attempt =
            Some(if *cause == Cause::Dispatched { after.attempts } else { write.before.attempts }).filter(|a| *a > 0);
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
