//! Every change to a run, decided in one place. [`decide`] takes the run as read and what
//! happened to it — services' reports, a look at the run now (a poller tick, a timer, the
//! moment after a report), a client's cancel — and returns what to do, as data: the step
//! writes (each a compare-and-set on the record it was read as), the steps dispatched among
//! them, and what happens to the run itself ([`RunAction`]). [`analysed`] decides how a
//! claimed run ends once its analysis is written. The engine (`baton_edge::engine`) is the
//! one interpreter of these decisions; nothing else changes a run.
//!
//! ```text
//!  reports ─▶ state::apply ─┐
//!                           ├─▶ fanin::decide (attempt time-outs, run deadline, skips)
//!  look / after a report ───┘        │ Wait ─▶ scheduler::schedule ─▶ dispatch, skip
//!                                    │ Aggregate ─▶ Claim (or DeferFanIn: the poller claims)
//!                                    └ Fail ─▶ Finish(failed)
//!  map steps: a ready one is expanded into its items (`audit.0`, `audit.1`, ...), which are
//!  dispatched at most `max_parallel` at a time, time out and retry as steps do; the map step
//!  ends when they have (`items`)
//!  cancel ─▶ every open step cancelled ─▶ Finish(cancelled)
//!  pause  ─▶ Pause (started|running → paused): no look
//!  resume ─▶ paused → running, then a look (backoffs that ended while paused dispatched now)
//! ```
//!
//! A paused run is still looked at: reports are recorded, attempts time out, a step whose
//! threshold is out of reach fails the run, and its deadline keeps running (at the deadline it
//! is claimed and analysed with what it has, as any run). It only starts nothing new: no
//! dispatch, no skip, no fan-in claim before its deadline.
//!
//! Repeated events are normal: a report for a step that has ended is
//! [`ReportOutcome::AlreadyTerminal`], one for another attempt is [`ReportOutcome::Stale`], and
//! a decision on a run that is no longer active changes nothing.

use crate::cancel;
use crate::fanin::{self, FanInConfig, FanInDecision, RunView};
use crate::ids::ServiceSlug;
use crate::plan::Plan;
use crate::retry::RandomSource;
use crate::scheduler::{records_by_position, schedule};
use crate::state::{apply, RunStatus, StepError, StepEvent, StepOutcome, StepRecord, StepStatus};
use crate::time::Millis;

mod items;
use items::Items;

/// A run as read: its status, when it started, its plan, its steps.
#[derive(Debug, Clone, Copy)]
pub struct RunState<'a> {
    /// The run's status.
    pub status: RunStatus,
    /// When it started.
    pub started_at: Millis,
    /// Its plan.
    pub plan: &'a Plan,
    /// Its step records (any order; steps without a record are pending), its map steps'
    /// items among them.
    pub steps: &'a [StepRecord],
    /// For each map step that is ready, how many items its list has, or why it has none
    /// ([`crate::map::size`] over its upstream step's output): what the engine read.
    pub sizes: &'a [(ServiceSlug, Result<u32, String>)],
}

/// What a service reported on an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// It produced a result.
    Succeeded,
    /// It failed.
    Failed(StepError),
}

/// Something that happened to a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A service reported on attempt `attempt` of `service` (`None`: whichever attempt is
    /// current). The run is looked at afterwards.
    Reported {
        /// The step.
        service: ServiceSlug,
        /// The attempt reported on.
        attempt: Option<u32>,
        /// What it reported.
        report: Report,
    },
    /// Look at the run now: attempt time-outs, the run's deadline, skips, ready steps, fan-in.
    Look,
    /// A client cancels the run.
    Cancel,
    /// A client pauses the run: nothing new is dispatched until it is resumed.
    Pause,
    /// A client resumes the paused run; it is looked at at once.
    Resume,
    /// An event was delivered to the run: the wait step waiting for it completes (now, or the
    /// moment it starts). The run is looked at afterwards.
    Arrived {
        /// The event's name.
        event: String,
    },
}

/// Who is looking at the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observer {
    /// A worker right after a change (a report, a start).
    EventDriven,
    /// The poller: it also claims fan-in when event-driven fan-in is off, and dispatches a
    /// retry whose own message is overdue (lost).
    Poller,
}

/// The rules a decision is taken under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Now.
    pub now: Millis,
    /// Partial data and the job timeout.
    pub fan_in: FanInConfig,
    /// Whether a worker claims the fan-in the moment the last step settles
    /// (`EVENT_DRIVEN_FANIN`); otherwise the poller does.
    pub event_driven_fanin: bool,
    /// Who looks.
    pub observer: Observer,
    /// How long after its backoff a retry's own message counts as lost.
    pub retry_grace_ms: u64,
}

/// What became of one reported event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Recorded: the step's new record.
    Recorded(StepRecord),
    /// The step had already ended: a duplicate or late report, acknowledged and ignored.
    AlreadyTerminal,
    /// The report is for another attempt, or for a step that is not running.
    Stale,
    /// The plan has no such step.
    NotFound,
}

/// Why a step is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A service's report.
    Reported,
    /// A new attempt is dispatched.
    Dispatched,
    /// An attempt or the run timed out, or the step was skipped.
    Settled,
    /// The run was cancelled.
    Cancelled,
    /// A wait step starts waiting for its event (no service is called).
    Awaited,
    /// A wait step's event arrived: it completes, with the event's payload as its output.
    Arrived,
    /// A map step starts: its items are created (no service is called for the step itself).
    Expanded,
}

/// One step write: `after` replaces `before` only if the step is still as it was read
/// (same status and attempt count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepWrite {
    /// The record as read.
    pub before: StepRecord,
    /// The record to write.
    pub after: StepRecord,
    /// Why.
    pub cause: Cause,
}

/// How a run ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// Its final status.
    pub status: RunStatus,
    /// The statuses it may end from (the guard of the write).
    pub from: &'static [RunStatus],
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// What happens to the run itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAction {
    /// Nothing.
    Keep,
    /// Its first step is dispatched: `started → running`.
    Start,
    /// Fan-in is due but left to the poller (event-driven fan-in is off): make the run due now.
    DeferFanIn,
    /// Claim it for analysis (`running → aggregating`); after the analysis it ends `then`.
    Claim {
        /// Whether some steps did not complete.
        partial: bool,
        /// The steps that did not complete, in plan order.
        missing: Vec<ServiceSlug>,
        /// The status it ends with once analysed (`completed`, or `timeout` when its deadline
        /// cut steps off).
        then: RunStatus,
    },
    /// End it now, without analysis.
    Finish(Finish),
    /// Pause it: `started|running → paused`.
    Pause,
}

/// What to do, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// One outcome per [`Event::Reported`], in order.
    pub reported: Vec<ReportOutcome>,
    /// Step writes: map items first (by step and index), then the plan's steps in plan order.
    pub writes: Vec<StepWrite>,
    /// Map items this decision creates: their rows are inserted, `pending`, before the writes.
    pub created: Vec<StepRecord>,
    /// What happens to the run.
    pub run: RunAction,
    /// Every step after the writes, in plan order, then the map items.
    pub steps: Vec<StepRecord>,
    /// The paused run is resumed (`paused → running`), before [`Decision::run`] is carried out.
    pub resume: bool,
    /// The plan's wait and map steps: no service is called for them (a map's items are called).
    pub uncalled: Vec<ServiceSlug>,
}

impl Decision {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.run == RunAction::Keep && !self.resume
    }

    /// The steps this decision dispatches (a new attempt each), in plan order.
    pub fn dispatched(&self) -> impl Iterator<Item = &StepRecord> {
        self.writes.iter().filter(|w| w.cause == Cause::Dispatched).map(|w| &w.after)
    }

    /// The steps this decision ends with `status` without a report (time-outs, skips).
    pub fn settled_as(&self, status: StepStatus) -> impl Iterator<Item = &ServiceSlug> {
        self.writes
            .iter()
            .filter(move |w| w.cause == Cause::Settled && w.after.status == status)
            .map(|w| &w.after.service)
    }
}

/// Statuses a run dispatches in (and can be paused from).
pub const ACTIVE: &[RunStatus] = &[RunStatus::Started, RunStatus::Running];
/// Statuses a run is looked at in (reports, time-outs, its deadline) and can be failed or
/// claimed from: the active ones and `paused`.
pub const OPEN: &[RunStatus] = &[RunStatus::Started, RunStatus::Running, RunStatus::Paused];
/// The status a run is resumed from.
pub const PAUSED: &[RunStatus] = &[RunStatus::Paused];
/// Statuses a run can be cancelled from.
pub const UNFINISHED: &[RunStatus] =
    &[RunStatus::Started, RunStatus::Running, RunStatus::Paused, RunStatus::Aggregating];
/// The status an analysed run is finished from.
pub const CLAIMED: &[RunStatus] = &[RunStatus::Aggregating];
/// Statuses of a run that has ended: a retry starts from one, and what an ended run held
/// (its resource reservations) is released.
pub const ENDED: &[RunStatus] = &[RunStatus::Completed, RunStatus::Failed, RunStatus::Timeout, RunStatus::Cancelled];
/// Step statuses that can still change.
pub const OPEN_STEPS: &[StepStatus] = &[StepStatus::Pending, StepStatus::Running, StepStatus::Retrying];

/// Decides what `events` do to `run` under `rules`. `rng` draws retry backoffs.
pub fn decide(run: &RunState<'_>, events: &[Event], rules: &Rules, rng: &mut dyn RandomSource) -> Decision {
    let plan = run.plan;
    let original = records_by_position(plan, run.steps);
    let mut records = original.clone();
    let mut causes: Vec<Option<Cause>> = vec![None; records.len()];
    let mut items = Items::of(plan, run.steps);
    let mut reported = Vec::new();
    let mut look = false;
    let mut cancel = false;
    let mut pause = false;
    let mut resume = false;
    for event in events {
        match event {
            Event::Reported { service, attempt, report } => {
                let outcome = match items.record_report(plan, service, *attempt, report, rules.now, rng) {
                    Some(outcome) => {
                        look |= matches!(outcome, ReportOutcome::Recorded(_));
                        outcome
                    }
                    None => record_report(plan, &mut records, service, *attempt, report, rules.now, rng),
                };
                if let (ReportOutcome::Recorded(_), Some(position)) = (&outcome, plan.position(service.as_str())) {
                    causes[position] = Some(Cause::Reported);
                    look = true;
                }
                reported.push(outcome);
            }
            Event::Look => look = true,
            Event::Cancel => cancel = true,
            Event::Pause => pause = true,
            Event::Resume => resume = true,
            Event::Arrived { .. } => look = true,
        }
    }
    let arrived: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Arrived { event } => Some(event.as_str()),
            _ => None,
        })
        .collect();
    complete_arrived(plan, &mut records, &mut causes, &arrived, rules.now, rng);
    let cancellation = if cancel { cancel::cancel(run.status, plan, &records, rules.now).ok() } else { None };
    // A resumed run is looked at as running: what is ready is dispatched in the same write.
    let resumed = resume && !cancel && run.status == RunStatus::Paused;
    let status = if resumed { RunStatus::Running } else { run.status };
    let action = if let Some(cancellation) = cancellation {
        take_cancellation(plan, cancellation, &mut records, &mut causes);
        items.cancel(plan, rules.now);
        RunAction::Finish(Finish { status: RunStatus::Cancelled, from: UNFINISHED, error: None })
    } else if pause && ACTIVE.contains(&run.status) {
        RunAction::Pause
    } else if (look || resumed) && OPEN.contains(&status) {
        let state = RunState { status, ..*run };
        let mut action = look_at(&state, &mut records, &mut causes, &mut items, rules, resumed, rng);
        // A wait started here whose event had arrived completes at once, and so does a map
        // over an empty list; what that makes ready is looked at again, in the same decision.
        while matches!(action, RunAction::Keep | RunAction::Start)
            && (complete_arrived(plan, &mut records, &mut causes, &arrived, rules.now, rng)
                | items.end_maps(plan, &mut records, &mut causes, rules.now, rng)
                | items.take_ended())
        {
            let again = look_at(&state, &mut records, &mut causes, &mut items, rules, resumed, rng);
            action = if again == RunAction::Keep { action } else { again };
        }
        action
    } else {
        RunAction::Keep
    };
    let items = items.finish();
    let mut writes = items.writes;
    writes.extend(
        original.into_iter().zip(records.iter()).zip(causes).filter(|((before, after), _)| before != *after).map(
            |((before, after), cause)| StepWrite {
                before,
                after: after.clone(),
                cause: cause.unwrap_or(Cause::Settled),
            },
        ),
    );
    let resume = resumed && !matches!(action, RunAction::Finish(_));
    let uncalled = plan.steps().iter().filter(|s| s.is_wait() || s.is_map()).map(|s| s.service.clone()).collect();
    records.extend(items.records);
    Decision { reported, writes, created: items.created, run: action, steps: records, resume, uncalled }
}

/// How a claimed run (`aggregating`) ends once its analysis is written; `None` if it is not
/// claimed (already finished, or never claimed). A run claimed at or after its deadline
/// with data missing ends `timeout`, otherwise `completed`.
pub fn analysed(status: RunStatus, partial: bool, claimed_at: Millis, deadline_at: Millis) -> Option<Finish> {
    (status == RunStatus::Aggregating).then(|| Finish {
        status: if partial && claimed_at >= deadline_at { RunStatus::Timeout } else { RunStatus::Completed },
        from: CLAIMED,
        error: None,
    })
}

/// Why a run cannot be retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryRefused {
    /// It has not ended.
    #[error("the run is {0}: only a run that has ended can be retried")]
    InProgress(RunStatus),
    /// Every step completed.
    #[error("every step of the run completed: nothing to retry")]
    NothingToRetry,
}

/// Retrying an ended run: its steps that did not complete (failed, timed out, skipped,
/// cancelled) start over as `pending`, with a fresh retry budget and their attempt numbers
/// going on (so a late report of an old attempt stays stale); completed steps keep their
/// outputs. The run goes back to `running`, and a look then dispatches what is ready, by the
/// plan's rules, and settles the rest.
pub fn retry(status: RunStatus, plan: &Plan, steps: &[StepRecord]) -> Result<Vec<StepWrite>, RetryRefused> {
    if !status.is_terminal() {
        return Err(RetryRefused::InProgress(status));
    }
    let records = records_by_position(plan, steps);
    // The items of a map step that starts over start over too, but for those that completed.
    let items = steps.iter().filter(|item| {
        crate::map::item_of(item.service.as_str())
            .and_then(|(step, _)| plan.position(step))
            .is_some_and(|position| plan.steps()[position].is_map() && records[position].status.is_missing())
    });
    let writes: Vec<StepWrite> = items
        .cloned()
        .chain(records.iter().cloned())
        .filter(|r| r.status.is_terminal() && r.status != StepStatus::Completed)
        .map(|before| {
            let after = StepRecord {
                status: StepStatus::Pending,
                finished_at: None,
                deadline_at: None,
                next_attempt_at: None,
                heartbeat_at: None,
                attempt_base: before.attempts,
                error: None,
                error_kind: None,
                ..before.clone()
            };
            StepWrite { before, after, cause: Cause::Dispatched }
        })
        .collect();
    if writes.is_empty() {
        return Err(RetryRefused::NothingToRetry);
    }
    Ok(writes)
}

/// Who carries out what a decision makes ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Newly dispatched steps and a won analysis go on their queues.
    Queue,
    /// The caller runs them in this invocation (saving a queue hop each): the attempts it
    /// dispatches are claimed in the write that dispatches them and handed back
    /// ([`Effect::HandOver`]). Whatever the caller does not finish it must send; if the
    /// invocation dies, the steps' deadlines and the analysis timeout bring the poller.
    Inline {
        /// The caller also analyses a fan-in it wins: by the rules, in the claim's own write
        /// ([`Effect::AnalyseNow`]).
        analysis: bool,
    },
}

/// What carrying out a decision needs besides the decision: now, who carries it out, and the
/// engine's timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carry {
    /// Now.
    pub now: Millis,
    /// Who runs what is dispatched.
    pub dispatch: Dispatch,
    /// A recorded report makes the run due for the poller this long after it, at the latest.
    pub result_recheck_ms: u64,
    /// How long a fan-in claim waits for its analysis before the poller sends it again.
    pub analysis_timeout_ms: u64,
}

/// An effect of a decision besides its row writes, as data. The engine turns each into a
/// statement of the decision's batch or a message sent once the batch is won; it decides none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send the task message of attempt `attempt` of `service` now. If it cannot be sent, the
    /// dispatch is undone (the step is put back as read) and the run made due.
    Send {
        /// The step.
        service: ServiceSlug,
        /// The attempt dispatched.
        attempt: u32,
    },
    /// The caller runs attempt `attempt` of `service` ([`Dispatch::Inline`]): it is claimed in
    /// the write that dispatches it, and its message is handed back unsent.
    HandOver {
        /// The step.
        service: ServiceSlug,
        /// The attempt dispatched.
        attempt: u32,
    },
    /// Send a retry's own task message, delayed until its backoff ends (`at`). If it cannot be
    /// sent, the poller dispatches the step once the message is overdue.
    Retry {
        /// The step.
        service: ServiceSlug,
        /// Its attempt count (the next attempt is dispatched by the message).
        attempt: u32,
        /// When its backoff ends.
        at: Millis,
    },
    /// A wait step started waiting: look at the run when its wait times out (`until`), so the
    /// timeout is kept to the second.
    AwaitEvent {
        /// The step.
        service: ServiceSlug,
        /// Its attempt (always 1).
        attempt: u32,
        /// When the wait times out.
        until: Millis,
    },
    /// Tell the service of an attempt in flight that the run was cancelled (best effort).
    TellCancelled {
        /// The step.
        service: ServiceSlug,
        /// The attempt that was running.
        attempt: u32,
    },
    /// Give back the concurrency slot the ended attempt held, if its service has a cap.
    ReleaseSlot {
        /// The step.
        service: ServiceSlug,
        /// The attempt that ended.
        attempt: u32,
    },
    /// A report was recorded: make the run due for the poller no later than `at`, so that if
    /// this worker dies before acting on it, the poller carries on.
    LookNoLaterThan(Millis),
    /// The fan-in claim waits for its analysis until `resend_at` (the claim's due time).
    AwaitAnalysis {
        /// When the poller sends the analysis again if the run is still claimed.
        resend_at: Millis,
    },
    /// Send the analysis message of a won fan-in claim. If it cannot be sent, the claim is
    /// given back and the run made due, so the poller claims it again.
    Analyse {
        /// Whether some steps did not complete.
        partial: bool,
        /// The steps that did not complete.
        missing: Vec<ServiceSlug>,
    },
    /// Analyse a won fan-in claim by the rules in the claim's own write: the run ends as
    /// `finish` in the same batch.
    AnalyseNow(Finish),
}

/// The effects of `decision` carried out under `carry`, in the order they are carried out:
/// the batch's (slot releases, the recheck, the analysis' due time, an analysis in the
/// batch), then the messages (dispatches or hand-overs, retries, cancel notices, the
/// analysis).
pub fn effects(decision: &Decision, carry: &Carry) -> Vec<Effect> {
    let inline = matches!(carry.dispatch, Dispatch::Inline { .. });
    let mut effects = Vec::new();
    let called = |w: &&StepWrite| !decision.uncalled.contains(&w.after.service);
    for write in decision.writes.iter().filter(called) {
        if write.before.status == StepStatus::Running && write.after.status != StepStatus::Running {
            effects.push(Effect::ReleaseSlot { service: write.after.service.clone(), attempt: write.before.attempts });
        }
    }
    if decision.writes.iter().any(|w| w.cause == Cause::Reported) {
        effects.push(Effect::LookNoLaterThan(carry.now.saturating_add(carry.result_recheck_ms)));
    }
    if let RunAction::Claim { then, .. } = &decision.run {
        effects.push(Effect::AwaitAnalysis { resend_at: carry.now.saturating_add(carry.analysis_timeout_ms) });
        if carry.dispatch == (Dispatch::Inline { analysis: true }) {
            effects.push(Effect::AnalyseNow(Finish { status: *then, from: CLAIMED, error: None }));
        }
    }
    for record in decision.dispatched() {
        let (service, attempt) = (record.service.clone(), record.attempts);
        effects.push(if inline { Effect::HandOver { service, attempt } } else { Effect::Send { service, attempt } });
    }
    // A retry travels as its own task message, delayed by its backoff; an inline caller
    // re-queues the messages of the attempts it reported on itself.
    for write in &decision.writes {
        if write.after.status == StepStatus::Retrying && !(inline && write.cause == Cause::Reported) {
            let at = write.after.next_attempt_at.unwrap_or(carry.now);
            effects.push(Effect::Retry { service: write.after.service.clone(), attempt: write.after.attempts, at });
        }
    }
    for write in decision.writes.iter().filter(|w| w.cause == Cause::Awaited) {
        if let Some(until) = write.after.deadline_at {
            effects.push(Effect::AwaitEvent {
                service: write.after.service.clone(),
                attempt: write.after.attempts,
                until,
            });
        }
    }
    for write in decision.writes.iter().filter(called) {
        if write.cause == Cause::Cancelled && write.before.status == StepStatus::Running {
            let (service, attempt) = (write.after.service.clone(), write.before.attempts);
            effects.push(Effect::TellCancelled { service, attempt });
        }
    }
    if let RunAction::Claim { partial, missing, .. } = &decision.run {
        if carry.dispatch != (Dispatch::Inline { analysis: true }) {
            effects.push(Effect::Analyse { partial: *partial, missing: missing.clone() });
        }
    }
    effects
}

/// What a task message for attempt `attempt` of a step comes to, decided on the step as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptClaim {
    /// Claim the running attempt (a guarded write: the first delivery wins it).
    Claim(u32),
    /// The caller holds it already: it was claimed in the write that dispatched it.
    Held(u32),
    /// The step backs off and its backoff has ended: dispatch its next attempt and claim it
    /// in the same write (guarded by the step as read, so one delivery does).
    Dispatch(Box<StepWrite>),
    /// Another invocation holds the attempt: come back when it gives up (`at`) and look.
    HeldElsewhere(Millis),
    /// Another invocation held the attempt and it has given up (that invocation died): look
    /// at the run now.
    Expired,
    /// The step backs off until `at`: come back then.
    NotYet(Millis),
    /// Nothing to run (a duplicate, a stale attempt, a run that is not active): acknowledge.
    Nothing,
}

/// How a run's task message for attempt `attempt` of `service` is claimed. `claimed`: the
/// step row's attempt is claimed by some invocation; `handed_over`: the caller is the one
/// that dispatched it in place ([`Dispatch::Inline`]); `run_deadline`: the run's deadline as
/// stored (no wait outlasts it).
#[allow(clippy::too_many_arguments)]
pub fn claim_attempt(
    run: &RunState<'_>,
    service: &str,
    attempt: u32,
    claimed: bool,
    handed_over: bool,
    run_deadline: Millis,
    now: Millis,
    rng: &mut dyn RandomSource,
) -> AttemptClaim {
    if !OPEN.contains(&run.status) {
        return AttemptClaim::Nothing; // cancelled, claimed for analysis or ended
    }
    let (Some(spec), Some(record)) = (run.plan.step(service), run.steps.iter().find(|r| r.service.as_str() == service))
    else {
        return AttemptClaim::Nothing;
    };
    if spec.is_wait() || spec.service == service && spec.is_map() {
        return AttemptClaim::Nothing; // no service to call: a wait or a map step has no task message
    }
    match record.status {
        StepStatus::Running if record.attempts == attempt && claimed && handed_over => AttemptClaim::Held(attempt),
        StepStatus::Running if record.attempts == attempt && !claimed => AttemptClaim::Claim(attempt),
        StepStatus::Running if record.attempts == attempt => match record.gives_up_at(spec, run_deadline) {
            Some(at) if at > now => AttemptClaim::HeldElsewhere(at),
            Some(_) => AttemptClaim::Expired,
            None => AttemptClaim::Nothing,
        },
        // A paused run dispatches nothing: its resume dispatches a step whose backoff ended.
        StepStatus::Retrying if run.status == RunStatus::Paused => AttemptClaim::Nothing,
        // A retried message keeps its body (the first attempt's number), so while the step
        // backs off any delivery of it may dispatch the next attempt.
        StepStatus::Retrying if attempt <= record.attempts => {
            match apply(record, StepEvent::Dispatched, now, spec, rng) {
                Ok(StepOutcome::Applied(next)) => AttemptClaim::Dispatch(Box::new(StepWrite {
                    before: record.clone(),
                    after: next,
                    cause: Cause::Dispatched,
                })),
                Err(crate::state::IllegalTransition::RetryNotDue { next_attempt_at, .. }) => {
                    AttemptClaim::NotYet(next_attempt_at)
                }
                _ => AttemptClaim::Nothing,
            }
        }
        _ => AttemptClaim::Nothing, // stale: that attempt is over
    }
}

/// A retried run's new round: its steps that start over, and the run itself back to
/// `running` from now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// The steps that start over ([`retry`]).
    pub writes: Vec<StepWrite>,
    /// When the round starts (now).
    pub started_at: Millis,
    /// The round's deadline.
    pub deadline_at: Millis,
    /// The round's number (1 for the first retry).
    pub round: u32,
}

/// Retrying an ended run that has been retried `retries` times ([`retry`]): the steps that
/// start over, and the new round with its own deadline counted from `now`.
pub fn restart(
    status: RunStatus,
    plan: &Plan,
    steps: &[StepRecord],
    retries: u32,
    now: Millis,
    fan_in: &FanInConfig,
) -> Result<Restart, RetryRefused> {
    let writes = retry(status, plan, steps)?;
    Ok(Restart { writes, started_at: now, deadline_at: fanin::run_deadline(plan, now, fan_in), round: retries + 1 })
}

fn record_report(
    plan: &Plan,
    records: &mut [StepRecord],
    service: &ServiceSlug,
    attempt: Option<u32>,
    report: &Report,
    now: Millis,
    rng: &mut dyn RandomSource,
) -> ReportOutcome {
    let Some(position) = plan.position(service.as_str()) else { return ReportOutcome::NotFound };
    let record = &records[position];
    if record.status.is_terminal() {
        return ReportOutcome::AlreadyTerminal;
    }
    if attempt.is_some_and(|a| a != record.attempts) {
        return ReportOutcome::Stale;
    }
    let event = match report {
        Report::Succeeded => StepEvent::Succeeded,
        Report::Failed(error) => StepEvent::Failed { error: error.clone() },
    };
    match apply(record, event, now, &plan.steps()[position], rng) {
        Ok(StepOutcome::Applied(next)) => {
            records[position] = next.clone();
            ReportOutcome::Recorded(next)
        }
        Ok(StepOutcome::AlreadyTerminal) => ReportOutcome::AlreadyTerminal,
        // E.g. a result for a step that was never dispatched.
        Err(_) => ReportOutcome::Stale,
    }
}

/// Time-outs and skips (fan-in's settling), then either the fan-in decision or the ready
/// steps. A paused run starts nothing: no dispatch, and no fan-in claim before its deadline.
/// `resumed`: the run was paused until this decision, so a step whose backoff ended meanwhile
/// (its own message found the run paused) is dispatched now.
#[allow(clippy::too_many_arguments)]
fn look_at(
    run: &RunState<'_>,
    records: &mut [StepRecord],
    causes: &mut [Option<Cause>],
    items: &mut Items,
    rules: &Rules,
    resumed: bool,
    rng: &mut dyn RandomSource,
) -> RunAction {
    let plan = run.plan;
    items.settle(plan, rules.now, rng);
    items.end_maps(plan, records, causes, rules.now, rng);
    let view = RunView { status: run.status, started_at: run.started_at };
    let fan_in = fanin::decide(plan, &view, records, rules.now, &rules.fan_in, rng);
    for update in fan_in.step_updates {
        if let Some(position) = plan.position(update.service.as_str()) {
            records[position] = update;
            causes[position].get_or_insert(Cause::Settled);
        }
    }
    items.end_with_maps(plan, records, rules.now);
    let then = fan_in.decision.final_status();
    let paused = run.status == RunStatus::Paused;
    match fan_in.decision {
        FanInDecision::Wait if paused => RunAction::Keep,
        FanInDecision::Wait => dispatch_ready(run, records, causes, items, rules, resumed, rng),
        FanInDecision::Aggregate { .. }
            if paused && rules.now < fanin::run_deadline(plan, run.started_at, &rules.fan_in) =>
        {
            RunAction::Keep
        }
        FanInDecision::Aggregate { partial, missing, .. } => {
            if rules.observer == Observer::Poller || rules.event_driven_fanin {
                RunAction::Claim { partial, missing, then: then.unwrap_or(RunStatus::Completed) }
            } else {
                RunAction::DeferFanIn
            }
        }
        FanInDecision::Fail { reason } => {
            // A run that fails early (its threshold out of reach) cancels what still runs.
            take_cancellation(plan, cancel::cancel_steps(plan, records, rules.now), records, causes);
            items.cancel(plan, rules.now);
            RunAction::Finish(Finish { status: RunStatus::Failed, from: OPEN, error: Some(reason.to_string()) })
        }
    }
}

/// Completes each waiting step whose event is in `arrived` (the payload is the edge's to
/// write); whether any did.
fn complete_arrived(
    plan: &Plan,
    records: &mut [StepRecord],
    causes: &mut [Option<Cause>],
    arrived: &[&str],
    now: Millis,
    rng: &mut dyn RandomSource,
) -> bool {
    let mut completed = false;
    for (position, spec) in plan.steps().iter().enumerate() {
        let Some(wait) = &spec.wait else { continue };
        if records[position].status != StepStatus::Running || !arrived.contains(&wait.event.as_str()) {
            continue;
        }
        if let Ok(StepOutcome::Applied(next)) = apply(&records[position], StepEvent::Succeeded, now, spec, rng) {
            records[position] = next;
            causes[position] = Some(Cause::Arrived);
            completed = true;
        }
    }
    completed
}

/// Takes the steps a cancellation ends into `records`, each with its cause.
fn take_cancellation(
    plan: &Plan,
    cancellation: cancel::Cancellation,
    records: &mut [StepRecord],
    causes: &mut [Option<Cause>],
) {
    for step in &cancellation.cancelled {
        if let Some(position) = plan.position(step.service.as_str()) {
            causes[position] = Some(Cause::Cancelled);
        }
    }
    records.clone_from_slice(&cancellation.records);
}

fn dispatch_ready(
    run: &RunState<'_>,
    records: &mut [StepRecord],
    causes: &mut [Option<Cause>],
    items: &mut Items,
    rules: &Rules,
    resumed: bool,
    rng: &mut dyn RandomSource,
) -> RunAction {
    let plan = run.plan;
    let ready = schedule(plan, records, rules.now);
    let mut dispatched = false;
    for service in ready.skip.iter().chain(&ready.dispatch) {
        let Some(position) = plan.position(service.as_str()) else { continue };
        let record = &records[position];
        // A backing-off step comes back through its own task message (a queue retry with
        // delay). Only the poller dispatches it, and only once that message is overdue (lost);
        // or a resume, once its backoff has ended (its message found the run paused).
        let overdue = record.next_attempt_at.is_none_or(|at| at.saturating_add(rules.retry_grace_ms) <= rules.now);
        let ended = record.next_attempt_at.is_none_or(|at| at <= rules.now);
        let lost = (rules.observer == Observer::Poller && overdue) || (resumed && ended);
        if record.status == StepStatus::Retrying && !lost {
            continue;
        }
        let dispatch = ready.dispatch.contains(service);
        let spec = &plan.steps()[position];
        if dispatch && spec.is_map() {
            let size = run.sizes.iter().find(|(s, _)| s == service).map(|(_, size)| size);
            if let Some((next, cause)) = items.expand(spec, position, record, size, rules.now, rng) {
                records[position] = next;
                causes[position] = Some(cause);
                dispatched = true;
            }
            continue;
        }
        let event = if dispatch { StepEvent::Dispatched } else { StepEvent::Skipped };
        if let Ok(StepOutcome::Applied(next)) = apply(record, event, rules.now, spec, rng) {
            records[position] = next;
            let started = if spec.is_wait() { Cause::Awaited } else { Cause::Dispatched };
            causes[position] = Some(if dispatch { started } else { Cause::Settled });
            dispatched |= dispatch;
        }
    }
    dispatched |= items.dispatch(plan, records, rules, resumed, rng);
    if dispatched && run.status == RunStatus::Started {
        RunAction::Start
    } else {
        RunAction::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{test_plan, validate, PlanDraft, StepDraft, Threshold};
    use crate::retry::SplitMix64;
    use crate::state::ErrorKind;
    use crate::trigger::TriggerRule;

    const NOW: Millis = Millis::new(1_800_000_000_000);

    fn plan(steps: &[(&str, &[&str])]) -> Plan {
        test_plan(steps)
    }

    fn slug(s: &str) -> ServiceSlug {
        s.parse().expect("a slug")
    }

    fn rules(observer: Observer) -> Rules {
        Rules { now: NOW, fan_in: FanInConfig::default(), event_driven_fanin: true, observer, retry_grace_ms: 10_000 }
    }

    fn running(service: &str) -> StepRecord {
        StepRecord {
            status: StepStatus::Running,
            attempts: 1,
            started_at: Some(NOW),
            deadline_at: Some(NOW.saturating_add(60_000)),
            ..StepRecord::pending(slug(service))
        }
    }

    fn failed_record(service: &str) -> StepRecord {
        StepRecord { status: StepStatus::Failed, finished_at: Some(NOW), ..running(service) }
    }

    fn completed(service: &str) -> StepRecord {
        StepRecord { status: StepStatus::Completed, finished_at: Some(NOW), ..running(service) }
    }

    fn decide_on(
        plan: &Plan,
        status: RunStatus,
        steps: &[StepRecord],
        events: &[Event],
        observer: Observer,
    ) -> Decision {
        let run = RunState { status, started_at: NOW, plan, steps, sizes: &[] };
        decide(&run, events, &rules(observer), &mut SplitMix64::new(7))
    }

    fn succeeded(service: &str) -> Event {
        Event::Reported { service: slug(service), attempt: Some(1), report: Report::Succeeded }
    }

    #[test]
    fn the_status_sets_the_sql_guards_use_agree_with_the_statuses_themselves() {
        for status in RunStatus::ALL {
            assert_eq!(ENDED.contains(&status), status.is_terminal(), "{status:?}");
            assert_eq!(UNFINISHED.contains(&status), !status.is_terminal(), "{status:?}");
            assert_eq!(CLAIMED.contains(&status), status == RunStatus::Aggregating, "{status:?}");
            assert!(!ACTIVE.contains(&status) || OPEN.contains(&status), "{status:?}");
            assert!(!OPEN.contains(&status) || UNFINISHED.contains(&status), "{status:?}");
            assert_eq!(PAUSED.contains(&status), status == RunStatus::Paused, "{status:?}");
        }
        for status in StepStatus::ALL {
            assert_eq!(OPEN_STEPS.contains(&status), !status.is_terminal(), "{status:?}");
        }
    }

    #[test]
    fn a_look_at_a_new_run_dispatches_its_first_wave_and_starts_it() {
        let p = plan(&[("a", &[]), ("b", &[]), ("c", &["a"])]);
        let d = decide_on(&p, RunStatus::Started, &[], &[Event::Look], Observer::EventDriven);
        let dispatched: Vec<&str> = d.dispatched().map(|r| r.service.as_str()).collect();
        assert_eq!(dispatched, ["a", "b"]);
        assert_eq!(d.run, RunAction::Start);
    }

    #[test]
    fn a_result_that_completes_a_dependency_dispatches_its_dependent_in_the_same_decision() {
        let p = plan(&[("a", &[]), ("b", &[]), ("c", &["a"])]);
        let d =
            decide_on(&p, RunStatus::Running, &[running("a"), running("b")], &[succeeded("a")], Observer::EventDriven);
        assert!(matches!(d.reported[..], [ReportOutcome::Recorded(ref r)] if r.status == StepStatus::Completed));
        let dispatched: Vec<&str> = d.dispatched().map(|r| r.service.as_str()).collect();
        assert_eq!(dispatched, ["c"]);
        assert_eq!(d.writes.len(), 2, "the result and the dispatch");
        assert_eq!(d.run, RunAction::Keep);
    }

    fn failed(service: &str) -> Event {
        let error = StepError::new(ErrorKind::Permanent, "boom");
        Event::Reported { service: slug(service), attempt: Some(1), report: Report::Failed(error) }
    }

    fn with_rules(steps: &[(&str, &[&str], TriggerRule)], min_completed: Option<Threshold>) -> Plan {
        let draft = PlanDraft {
            plan_id: "p".into(),
            name: "P".into(),
            description: String::new(),
            max_run_duration_ms: 600_000,
            services: steps
                .iter()
                .map(|(service, deps, rule)| StepDraft {
                    depends_on: deps.iter().map(|d| d.to_string()).collect(),
                    trigger_rule: Some(*rule),
                    ..StepDraft::new(*service)
                })
                .collect(),
            min_completed,
        };
        validate(&draft).expect("a valid plan")
    }

    #[test]
    fn an_all_done_step_runs_after_its_upstream_failed_and_an_all_success_one_is_skipped_at_once() {
        let p = with_rules(
            &[
                ("a", &[], TriggerRule::AllSuccess),
                ("b", &[], TriggerRule::AllSuccess),
                ("report", &["a"], TriggerRule::AllDone),
                ("strict", &["a"], TriggerRule::AllSuccess),
            ],
            None,
        );
        let d = decide_on(&p, RunStatus::Running, &[running("a"), running("b")], &[failed("a")], Observer::EventDriven);
        let dispatched: Vec<&str> = d.dispatched().map(|r| r.service.as_str()).collect();
        assert_eq!(dispatched, ["report"]);
        let skipped: Vec<&str> = d.settled_as(StepStatus::Skipped).map(ServiceSlug::as_str).collect();
        assert_eq!(skipped, ["strict"], "skipped while b still runs: the run's deadline is not awaited");
    }

    #[test]
    fn a_run_that_can_no_longer_reach_its_threshold_fails_at_once_and_cancels_what_runs() {
        let steps: Vec<(&str, &[&str], TriggerRule)> =
            ["a", "b", "c", "d", "e"].iter().map(|s| (*s, &[][..], TriggerRule::AllSuccess)).collect();
        let p = with_rules(&steps, Some(Threshold::Count(3)));
        let records = [failed_record("a"), failed_record("b"), running("c"), running("d"), running("e")];
        let d = decide_on(&p, RunStatus::Running, &records, &[Event::Look], Observer::EventDriven);
        assert_eq!(d.run, RunAction::Keep, "3 of 5 can still complete");
        let d = decide_on(&p, RunStatus::Running, &records, &[failed("c")], Observer::EventDriven);
        match &d.run {
            RunAction::Finish(finish) => {
                assert_eq!(finish.status, RunStatus::Failed);
                assert!(finish.error.as_deref().is_some_and(|e| e.contains("min_completed of 3")), "{finish:?}");
            }
            other => panic!("{other:?}"),
        }
        let cancelled: Vec<&str> =
            d.writes.iter().filter(|w| w.cause == Cause::Cancelled).map(|w| w.after.service.as_str()).collect();
        assert_eq!(cancelled, ["d", "e"]);
        let ratio = with_rules(&steps, Some(Threshold::Ratio(0.6)));
        assert_eq!(ratio.min_completed(), 3);
    }

    #[test]
    fn a_retried_run_starts_over_what_did_not_complete_with_a_fresh_budget() {
        let p = plan(&[("a", &[]), ("b", &[]), ("c", &["b"])]);
        let skipped =
            StepRecord { status: StepStatus::Skipped, finished_at: Some(NOW), ..StepRecord::pending(slug("c")) };
        let failed_b = StepRecord { attempts: 3, ..failed_record("b") };
        let steps = [completed("a"), failed_b, skipped];
        assert_eq!(retry(RunStatus::Running, &p, &steps), Err(RetryRefused::InProgress(RunStatus::Running)));
        let writes = retry(RunStatus::Failed, &p, &steps).unwrap();
        let reset: Vec<(&str, StepStatus, u32, u32)> = writes
            .iter()
            .map(|w| (w.after.service.as_str(), w.after.status, w.after.attempts, w.after.attempt_base))
            .collect();
        assert_eq!(reset, [("b", StepStatus::Pending, 3, 3), ("c", StepStatus::Pending, 0, 0)]);
        let done = [completed("a"), completed("b"), completed("c")];
        assert_eq!(retry(RunStatus::Completed, &p, &done), Err(RetryRefused::NothingToRetry));
        // The retried step gets its whole budget again.
        let again = decide_on(
            &p,
            RunStatus::Running,
            &[completed("a"), writes[0].after.clone(), writes[1].after.clone()],
            &[Event::Look],
            Observer::EventDriven,
        );
        let dispatched: Vec<(&str, u32)> = again.dispatched().map(|r| (r.service.as_str(), r.attempts)).collect();
        assert_eq!(dispatched, [("b", 4)]);
    }

    #[test]
    fn the_last_result_claims_the_fan_in() {
        let p = plan(&[("a", &[]), ("b", &[])]);
        let d = decide_on(
            &p,
            RunStatus::Running,
            &[completed("a"), running("b")],
            &[succeeded("b")],
            Observer::EventDriven,
        );
        assert_eq!(d.run, RunAction::Claim { partial: false, missing: vec![], then: RunStatus::Completed });
    }

    #[test]
    fn without_event_driven_fan_in_a_worker_defers_and_the_poller_claims() {
        let p = plan(&[("a", &[])]);
        let run =
            RunState { status: RunStatus::Running, started_at: NOW, plan: &p, steps: &[running("a")], sizes: &[] };
        let off = Rules { event_driven_fanin: false, ..rules(Observer::EventDriven) };
        let d = decide(&run, &[succeeded("a")], &off, &mut SplitMix64::new(1));
        assert_eq!(d.run, RunAction::DeferFanIn);
        let steps = [completed("a")];
        let run = RunState { steps: &steps, ..run };
        let poller = Rules { observer: Observer::Poller, ..off };
        let d = decide(&run, &[Event::Look], &poller, &mut SplitMix64::new(1));
        assert!(matches!(d.run, RunAction::Claim { .. }));
    }

    #[test]
    fn a_permanent_failure_of_every_step_fails_the_run_and_skips_dependents() {
        let p = plan(&[("a", &[]), ("b", &["a"])]);
        let failed = Event::Reported {
            service: slug("a"),
            attempt: Some(1),
            report: Report::Failed(StepError::new(ErrorKind::Permanent, "no")),
        };
        let d = decide_on(&p, RunStatus::Running, &[running("a")], &[failed], Observer::EventDriven);
        assert_eq!(d.settled_as(StepStatus::Skipped).map(ServiceSlug::as_str).collect::<Vec<_>>(), ["b"]);
        assert!(matches!(&d.run, RunAction::Finish(f) if f.status == RunStatus::Failed && f.from == OPEN));
    }

    #[test]
    fn repeated_and_stale_reports_change_nothing() {
        let p = plan(&[("a", &[]), ("b", &[])]);
        let steps = [completed("a"), running("b")];
        let late = Event::Reported { service: slug("b"), attempt: Some(2), report: Report::Succeeded };
        let unknown = Event::Reported { service: slug("zzz"), attempt: None, report: Report::Succeeded };
        let d = decide_on(&p, RunStatus::Running, &steps, &[succeeded("a"), late, unknown], Observer::EventDriven);
        assert_eq!(d.reported, [ReportOutcome::AlreadyTerminal, ReportOutcome::Stale, ReportOutcome::NotFound]);
        assert!(d.is_empty());
    }

    #[test]
    fn two_reports_in_one_decision_settle_the_run_once() {
        let p = plan(&[("a", &[]), ("b", &[])]);
        let d = decide_on(
            &p,
            RunStatus::Running,
            &[running("a"), running("b")],
            &[succeeded("a"), succeeded("b"), succeeded("b")],
            Observer::EventDriven,
        );
        assert!(matches!(d.reported[2], ReportOutcome::AlreadyTerminal));
        assert_eq!(d.writes.len(), 2);
        assert!(d
            .writes
            .iter()
            .all(|w| w.cause == Cause::Reported && !w.before.status.is_terminal() && w.after.status.is_terminal()));
        assert!(matches!(d.run, RunAction::Claim { partial: false, .. }));
    }

    #[test]
    fn cancel_ends_every_open_step_and_the_run_but_not_a_finished_run() {
        let p = plan(&[("a", &[]), ("b", &["a"])]);
        let d =
            decide_on(&p, RunStatus::Running, &[completed("a"), running("b")], &[Event::Cancel], Observer::EventDriven);
        assert_eq!(d.writes.len(), 1);
        assert_eq!((d.writes[0].after.status, d.writes[0].cause), (StepStatus::Cancelled, Cause::Cancelled));
        assert!(matches!(&d.run, RunAction::Finish(f) if f.status == RunStatus::Cancelled));
        let d =
            decide_on(&p, RunStatus::Completed, &[completed("a"), completed("b")], &[Event::Cancel], Observer::Poller);
        assert!(d.is_empty());
    }

    #[test]
    fn nothing_is_decided_for_a_run_that_is_not_active() {
        let p = plan(&[("a", &[])]);
        let d = decide_on(&p, RunStatus::Aggregating, &[completed("a")], &[Event::Look], Observer::Poller);
        assert!(d.is_empty());
    }

    #[test]
    fn an_analysed_run_ends_timeout_only_when_claimed_at_its_deadline_with_data_missing() {
        let at = Millis::new(1_000);
        let f = |status, partial, claimed| analysed(status, partial, Millis::new(claimed), at).map(|f| f.status);
        assert_eq!(f(RunStatus::Aggregating, true, 1_000), Some(RunStatus::Timeout));
        assert_eq!(f(RunStatus::Aggregating, true, 999), Some(RunStatus::Completed));
        assert_eq!(f(RunStatus::Aggregating, false, 2_000), Some(RunStatus::Completed));
        assert_eq!(f(RunStatus::Completed, false, 2_000), None);
    }

    fn carry(dispatch: Dispatch) -> Carry {
        Carry { now: NOW, dispatch, result_recheck_ms: 15_000, analysis_timeout_ms: 30_000 }
    }

    #[test]
    fn a_decisions_effects_follow_who_runs_what_it_dispatches() {
        let p = plan(&[("a", &[]), ("b", &[]), ("c", &["a"])]);
        let d =
            decide_on(&p, RunStatus::Running, &[running("a"), running("b")], &[succeeded("a")], Observer::EventDriven);
        let queued = effects(&d, &carry(Dispatch::Queue));
        assert_eq!(
            queued,
            [
                Effect::ReleaseSlot { service: slug("a"), attempt: 1 },
                Effect::LookNoLaterThan(NOW.saturating_add(15_000)),
                Effect::Send { service: slug("c"), attempt: 1 },
            ]
        );
        let inline = effects(&d, &carry(Dispatch::Inline { analysis: false }));
        assert!(inline.contains(&Effect::HandOver { service: slug("c"), attempt: 1 }));
        assert!(!inline.iter().any(|e| matches!(e, Effect::Send { .. })));
    }

    #[test]
    fn a_retry_travels_as_its_own_delayed_message_unless_the_inline_caller_reported_it() {
        let p = plan(&[("a", &[])]);
        let transient = Event::Reported {
            service: slug("a"),
            attempt: Some(1),
            report: Report::Failed(StepError::new(ErrorKind::Transient, "busy")),
        };
        let d = decide_on(&p, RunStatus::Running, &[running("a")], &[transient], Observer::EventDriven);
        let retrying = d.writes[0].after.clone();
        assert_eq!(retrying.status, StepStatus::Retrying);
        let at = retrying.next_attempt_at.expect("a backoff");
        assert!(effects(&d, &carry(Dispatch::Queue)).contains(&Effect::Retry { service: slug("a"), attempt: 1, at }));
        let inline = effects(&d, &carry(Dispatch::Inline { analysis: false }));
        assert!(!inline.iter().any(|e| matches!(e, Effect::Retry { .. })), "the inline caller re-queues its own");
    }

    #[test]
    fn a_won_fan_in_is_analysed_by_message_or_in_its_own_batch() {
        let p = plan(&[("a", &[])]);
        let d = decide_on(&p, RunStatus::Running, &[running("a")], &[succeeded("a")], Observer::EventDriven);
        let resend = Effect::AwaitAnalysis { resend_at: NOW.saturating_add(30_000) };
        let queued = effects(&d, &carry(Dispatch::Queue));
        assert!(queued.contains(&resend));
        assert!(queued.contains(&Effect::Analyse { partial: false, missing: vec![] }));
        let now = effects(&d, &carry(Dispatch::Inline { analysis: true }));
        let finish = Finish { status: RunStatus::Completed, from: CLAIMED, error: None };
        assert!(now.contains(&Effect::AnalyseNow(finish)));
        assert!(!now.iter().any(|e| matches!(e, Effect::Analyse { .. })));
    }

    #[test]
    fn a_run_step_is_dispatched_like_a_service_step_ends_with_its_childs_report_and_hears_a_cancel() {
        let draft = PlanDraft {
            plan_id: "parent".into(),
            name: "Parent".into(),
            description: String::new(),
            max_run_duration_ms: 60_000,
            services: vec![
                StepDraft {
                    kind: Some(crate::plan::RUN_KIND.into()),
                    plan_id: Some("child".into()),
                    ..StepDraft::new("audit")
                },
                StepDraft { depends_on: vec!["audit".into()], ..StepDraft::new("b") },
            ],
            min_completed: None,
        };
        let p = validate(&draft).expect("a valid plan");
        let d = decide_on(&p, RunStatus::Started, &[], &[Event::Look], Observer::EventDriven);
        assert_eq!(d.dispatched().map(|r| r.service.as_str()).collect::<Vec<_>>(), ["audit"]);
        let sent = effects(&d, &carry(Dispatch::Queue));
        assert!(sent.contains(&Effect::Send { service: slug("audit"), attempt: 1 }), "a task message: {sent:?}");
        let audit = StepRecord { deadline_at: Some(NOW.saturating_add(60_000)), ..running("audit") };
        let d = decide_on(
            &p,
            RunStatus::Running,
            std::slice::from_ref(&audit),
            &[succeeded("audit")],
            Observer::EventDriven,
        );
        assert_eq!(d.dispatched().map(|r| r.service.as_str()).collect::<Vec<_>>(), ["b"], "the child's output feeds b");
        let stale = Event::Reported { service: slug("audit"), attempt: Some(2), report: Report::Succeeded };
        let d = decide_on(&p, RunStatus::Running, std::slice::from_ref(&audit), &[stale], Observer::EventDriven);
        assert_eq!(d.reported, [ReportOutcome::Stale], "a report of another attempt's child is a no-op");
        let d = decide_on(&p, RunStatus::Running, &[audit], &[Event::Cancel], Observer::EventDriven);
        let told = effects(&d, &carry(Dispatch::Queue));
        assert!(told.contains(&Effect::TellCancelled { service: slug("audit"), attempt: 1 }), "{told:?}");
    }

    #[test]
    fn a_cancel_tells_the_services_of_attempts_in_flight() {
        let p = plan(&[("a", &[]), ("b", &["a"])]);
        let d = decide_on(&p, RunStatus::Running, &[running("a")], &[Event::Cancel], Observer::EventDriven);
        let e = effects(&d, &carry(Dispatch::Queue));
        assert!(e.contains(&Effect::TellCancelled { service: slug("a"), attempt: 1 }));
        assert!(!e.iter().any(|e| matches!(e, Effect::TellCancelled { service, .. } if service.as_str() == "b")));
    }

    #[test]
    fn a_task_message_claims_its_attempt_once_and_dispatches_a_backed_off_step_when_due() {
        let p = plan(&[("a", &[])]);
        let deadline = NOW.saturating_add(600_000);
        let claim = |steps: &[StepRecord], attempt, claimed, handed_over, now| {
            let run = RunState { status: RunStatus::Running, started_at: NOW, plan: &p, steps, sizes: &[] };
            claim_attempt(&run, "a", attempt, claimed, handed_over, deadline, now, &mut SplitMix64::new(3))
        };
        let a = [running("a")];
        assert_eq!(claim(&a, 1, false, false, NOW), AttemptClaim::Claim(1));
        assert_eq!(claim(&a, 1, true, true, NOW), AttemptClaim::Held(1));
        let expires = a[0].deadline_at.expect("a deadline");
        assert_eq!(claim(&a, 1, true, false, NOW), AttemptClaim::HeldElsewhere(expires));
        assert_eq!(claim(&a, 1, true, false, expires), AttemptClaim::Expired);
        assert_eq!(claim(&a, 2, false, false, NOW), AttemptClaim::Nothing, "another attempt's message");
        let backing_off = [StepRecord {
            status: StepStatus::Retrying,
            next_attempt_at: Some(NOW.saturating_add(2_000)),
            deadline_at: None,
            ..running("a")
        }];
        assert_eq!(claim(&backing_off, 1, false, false, NOW), AttemptClaim::NotYet(NOW.saturating_add(2_000)));
        match claim(&backing_off, 1, false, false, NOW.saturating_add(2_000)) {
            AttemptClaim::Dispatch(write) => {
                assert_eq!((write.after.status, write.after.attempts), (StepStatus::Running, 2));
                assert_eq!(write.before, backing_off[0]);
            }
            other => panic!("{other:?}"),
        }
        let run = RunState { status: RunStatus::Aggregating, started_at: NOW, plan: &p, steps: &a, sizes: &[] };
        let none = claim_attempt(&run, "a", 1, false, false, deadline, NOW, &mut SplitMix64::new(3));
        assert_eq!(none, AttemptClaim::Nothing, "a run that is not active runs nothing");
    }

    /// `approve` (a wait for `approval`) after `a`, then `b` after `approve`.
    fn wait_plan() -> Plan {
        let step = |service: &str, deps: &[&str]| StepDraft {
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..StepDraft::new(service)
        };
        let wait = StepDraft {
            kind: Some("wait".into()),
            event: Some("approval".into()),
            timeout_ms: Some(60_000),
            ..step("approve", &["a"])
        };
        validate(&PlanDraft {
            plan_id: "w".into(),
            name: "W".into(),
            description: String::new(),
            max_run_duration_ms: 600_000,
            services: vec![step("a", &[]), wait, step("b", &["approve"])],
            min_completed: None,
        })
        .expect("a valid plan")
    }

    fn arrived(event: &str) -> Event {
        Event::Arrived { event: event.into() }
    }

    #[test]
    fn a_wait_starts_without_a_message_and_its_event_completes_it_and_runs_its_dependents() {
        let p = wait_plan();
        let d = decide_on(&p, RunStatus::Running, &[running("a")], &[succeeded("a")], Observer::EventDriven);
        let approve = d.writes.iter().find(|w| w.after.service.as_str() == "approve").expect("the wait starts");
        assert_eq!((approve.cause, approve.after.status), (Cause::Awaited, StepStatus::Running));
        assert_eq!(d.dispatched().count(), 0, "no service is called for a wait");
        let until = approve.after.deadline_at.expect("its timeout");
        assert_eq!(until, NOW.saturating_add(60_000));
        let e = effects(&d, &carry(Dispatch::Queue));
        assert!(e.contains(&Effect::AwaitEvent { service: slug("approve"), attempt: 1, until }), "{e:?}");
        assert!(!e.iter().any(|e| matches!(e, Effect::Send { .. } | Effect::HandOver { .. })), "{e:?}");

        let waiting = [completed("a"), approve.after.clone()];
        let d = decide_on(&p, RunStatus::Running, &waiting, &[arrived("approval"), Event::Look], Observer::EventDriven);
        let completed_wait = &d.writes[0];
        assert_eq!((completed_wait.cause, completed_wait.after.status), (Cause::Arrived, StepStatus::Completed));
        let dispatched: Vec<&str> = d.dispatched().map(|r| r.service.as_str()).collect();
        assert_eq!(dispatched, ["b"], "its dependent runs in the same decision");
        let e = effects(&d, &carry(Dispatch::Queue));
        assert!(!e.iter().any(|e| matches!(e, Effect::ReleaseSlot { service, .. } if service.as_str() == "approve")));
    }

    #[test]
    fn an_event_that_arrives_before_its_wait_is_consumed_when_the_wait_starts() {
        let p = wait_plan();
        // Arrived while `a` still runs: nothing changes for the wait yet.
        let d = decide_on(&p, RunStatus::Running, &[running("a")], &[arrived("approval")], Observer::EventDriven);
        assert!(d.is_empty(), "{d:?}");
        // `a` completes: the wait starts and completes in the same write, and `b` is dispatched.
        let d = decide_on(
            &p,
            RunStatus::Running,
            &[running("a")],
            &[succeeded("a"), arrived("approval"), Event::Look],
            Observer::EventDriven,
        );
        let approve = d.writes.iter().find(|w| w.after.service.as_str() == "approve").expect("written");
        assert_eq!((approve.before.status, approve.after.status), (StepStatus::Pending, StepStatus::Completed));
        assert_eq!(approve.cause, Cause::Arrived);
        assert_eq!(d.dispatched().map(|r| r.service.as_str()).collect::<Vec<_>>(), ["b"]);
        assert!(!effects(&d, &carry(Dispatch::Queue)).iter().any(|e| matches!(e, Effect::AwaitEvent { .. })));
        // Another event, or the same one again on a completed wait, changes nothing.
        let done = [completed("a"), completed("approve"), running("b")];
        let d = decide_on(&p, RunStatus::Running, &done, &[arrived("approval"), arrived("other")], Observer::Poller);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn a_wait_whose_event_never_comes_times_out_and_the_trigger_rules_decide_the_rest() {
        let p = wait_plan();
        let waiting = StepRecord {
            status: StepStatus::Running,
            attempts: 1,
            started_at: Some(NOW),
            deadline_at: Some(NOW.saturating_add(60_000)),
            ..StepRecord::pending(slug("approve"))
        };
        let later = Rules { now: NOW.saturating_add(60_000), ..rules(Observer::Poller) };
        let steps = [completed("a"), waiting];
        let run = RunState { status: RunStatus::Running, started_at: NOW, plan: &p, steps: &steps, sizes: &[] };
        let d = decide(&run, &[Event::Look], &later, &mut SplitMix64::new(7));
        let status = |s: &str| d.steps.iter().find(|r| r.service.as_str() == s).map(|r| r.status);
        assert_eq!((status("approve"), status("b")), (Some(StepStatus::Timeout), Some(StepStatus::Skipped)));
        assert!(matches!(d.run, RunAction::Claim { partial: true, .. }), "{d:?}");
    }

    #[test]
    fn a_pause_writes_only_the_status_and_only_from_an_active_run() {
        let p = plan(&[("a", &[]), ("b", &["a"])]);
        let d = decide_on(&p, RunStatus::Running, &[running("a")], &[Event::Pause], Observer::EventDriven);
        assert_eq!((d.run.clone(), d.writes.len(), d.resume), (RunAction::Pause, 0, false));
        for status in [RunStatus::Paused, RunStatus::Aggregating, RunStatus::Completed, RunStatus::Cancelled] {
            let d = decide_on(&p, status, &[running("a")], &[Event::Pause], Observer::EventDriven);
            assert!(d.is_empty(), "{status:?}");
        }
    }

    #[test]
    fn a_paused_run_records_results_but_dispatches_nothing_and_claims_nothing_before_its_deadline() {
        let p = plan(&[("a", &[]), ("b", &["a"]), ("c", &[])]);
        let d = decide_on(&p, RunStatus::Paused, &[running("a"), running("c")], &[succeeded("a")], Observer::Poller);
        assert_eq!(d.writes.len(), 1, "only the result: {d:?}");
        assert_eq!(d.writes[0].after.status, StepStatus::Completed);
        assert_eq!((d.run.clone(), d.dispatched().count()), (RunAction::Keep, 0));
        // Every step ended while paused: the fan-in waits for the resume, or the deadline.
        let ended = [completed("a"), completed("b"), completed("c")];
        let d = decide_on(&p, RunStatus::Paused, &ended, &[Event::Look], Observer::Poller);
        assert!(d.is_empty(), "{d:?}");
        let at_deadline = Rules { now: NOW.saturating_add(p.max_run_duration_ms()), ..rules(Observer::Poller) };
        let steps = [running("a"), completed("c")];
        let run = RunState { status: RunStatus::Paused, started_at: NOW, plan: &p, steps: &steps, sizes: &[] };
        let d = decide(&run, &[Event::Look], &at_deadline, &mut SplitMix64::new(7));
        assert!(matches!(&d.run, RunAction::Claim { then: RunStatus::Timeout, .. }), "{d:?}");
    }

    #[test]
    fn a_resume_runs_again_and_dispatches_what_became_ready_and_backoffs_that_ended() {
        let p = plan(&[("a", &[]), ("b", &["a"]), ("c", &[])]);
        let backed_off = StepRecord {
            status: StepStatus::Retrying,
            next_attempt_at: Some(NOW.saturating_sub(1_000)),
            deadline_at: None,
            ..running("c")
        };
        let steps = [completed("a"), backed_off];
        let d = decide_on(&p, RunStatus::Paused, &steps, &[Event::Resume], Observer::EventDriven);
        assert!(d.resume);
        let dispatched: Vec<(&str, u32)> = d.dispatched().map(|r| (r.service.as_str(), r.attempts)).collect();
        assert_eq!(dispatched, [("b", 1), ("c", 2)]);
        assert_eq!(d.run, RunAction::Keep);
        // Resuming a run that is not paused changes nothing.
        let d = decide_on(&p, RunStatus::Running, &steps, &[Event::Resume], Observer::EventDriven);
        assert!(d.is_empty(), "{d:?}");
        // A resume whose look ends the run claims it (from `paused`, in the same write).
        let ended = [completed("a"), completed("b"), completed("c")];
        let d = decide_on(&p, RunStatus::Paused, &ended, &[Event::Resume], Observer::EventDriven);
        assert!(d.resume && matches!(d.run, RunAction::Claim { then: RunStatus::Completed, .. }), "{d:?}");
    }

    #[test]
    fn a_paused_runs_task_messages_run_attempts_in_flight_but_no_new_attempt() {
        let p = plan(&[("a", &[])]);
        let deadline = NOW.saturating_add(600_000);
        let backing_off = [StepRecord {
            status: StepStatus::Retrying,
            next_attempt_at: Some(NOW),
            deadline_at: None,
            ..running("a")
        }];
        for (steps, expected) in [(&[running("a")], AttemptClaim::Claim(1)), (&backing_off, AttemptClaim::Nothing)] {
            let run = RunState { status: RunStatus::Paused, started_at: NOW, plan: &p, steps, sizes: &[] };
            let claim = claim_attempt(&run, "a", 1, false, false, deadline, NOW, &mut SplitMix64::new(3));
            assert_eq!(claim, expected);
        }
    }

    /// `crawl`, then `audit` over `crawl.pages` (at most 2 at a time, `min` of them needed),
    /// then `report` after `audit`.
    fn map_plan(min_completed: Option<Threshold>) -> Plan {
        let step = |service: &str, deps: &[&str]| StepDraft {
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..StepDraft::new(service)
        };
        let audit = StepDraft {
            for_each: Some("crawl.pages".into()),
            max_parallel: Some(2),
            min_completed,
            timeout_ms: Some(10_000),
            ..step("audit", &["crawl"])
        };
        validate(&PlanDraft {
            plan_id: "m".into(),
            name: "M".into(),
            description: String::new(),
            max_run_duration_ms: 600_000,
            services: vec![step("crawl", &[]), audit, step("report", &["audit"])],
            min_completed: None,
        })
        .expect("a valid plan")
    }

    fn decide_sized(p: &Plan, steps: &[StepRecord], events: &[Event], size: Result<u32, String>) -> Decision {
        let sizes = [(slug("audit"), size)];
        let run = RunState { status: RunStatus::Running, started_at: NOW, plan: p, steps, sizes: &sizes };
        decide(&run, events, &rules(Observer::EventDriven), &mut SplitMix64::new(7))
    }

    fn status_of(decision: &Decision, service: &str) -> StepStatus {
        decision.steps.iter().find(|s| s.service.as_str() == service).map_or(StepStatus::Pending, |s| s.status)
    }

    /// Carries a decision's step records forward (what its writes leave behind).
    fn after(decision: &Decision) -> Vec<StepRecord> {
        decision.steps.clone()
    }

    fn sent(decision: &Decision) -> Vec<String> {
        effects(decision, &carry(Dispatch::Queue))
            .into_iter()
            .filter_map(|e| match e {
                Effect::Send { service, .. } => Some(service.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_ready_map_step_creates_its_items_and_dispatches_max_parallel_of_them_calling_nothing_itself() {
        let p = map_plan(None);
        let d = decide_sized(&p, &[running("crawl")], &[succeeded("crawl")], Ok(3));
        assert_eq!(status_of(&d, "audit"), StepStatus::Running);
        let created: Vec<&str> = d.created.iter().map(|r| r.service.as_str()).collect();
        assert_eq!(created, ["audit.0", "audit.1", "audit.2"]);
        assert_eq!(sent(&d), ["audit.0", "audit.1"], "the map step itself is never sent");
        let map = d.writes.iter().find(|w| w.after.service.as_str() == "audit").expect("the map step is written");
        assert_eq!(map.cause, Cause::Expanded);
        assert_eq!(map.after.deadline_at, None, "the run's deadline bounds the map step, its items their own");
        assert_eq!(status_of(&d, "audit.2"), StepStatus::Pending);

        // Item 0 completes: item 2 takes its place; the map runs on.
        let steps = after(&d);
        let item = |i: u32| Event::Reported {
            service: slug(&format!("audit.{i}")),
            attempt: Some(1),
            report: Report::Succeeded,
        };
        let d = decide_sized(&p, &steps, &[item(0)], Ok(3));
        assert_eq!(sent(&d), ["audit.2"]);
        assert_eq!(status_of(&d, "audit"), StepStatus::Running);
        assert!(d.created.is_empty(), "items are created once");

        // The last two: the map completes and its dependent is dispatched in the same decision.
        let d = decide_sized(&p, &after(&d), &[item(1), item(2)], Ok(3));
        assert_eq!(status_of(&d, "audit"), StepStatus::Completed);
        assert_eq!(sent(&d), ["report"]);
        let claim = claim_attempt(
            &RunState { status: RunStatus::Running, started_at: NOW, plan: &p, steps: &after(&d), sizes: &[] },
            "audit",
            1,
            false,
            false,
            NOW.saturating_add(600_000),
            NOW,
            &mut SplitMix64::new(1),
        );
        assert_eq!(claim, AttemptClaim::Nothing, "a map step has no task message");
    }

    #[test]
    fn an_items_attempt_is_claimed_timed_out_and_retried_as_a_steps_is() {
        let p = map_plan(None);
        let d = decide_sized(&p, &[running("crawl")], &[succeeded("crawl")], Ok(1));
        let steps = after(&d);
        let run = RunState { status: RunStatus::Running, started_at: NOW, plan: &p, steps: &steps, sizes: &[] };
        let deadline = NOW.saturating_add(600_000);
        let claim = claim_attempt(&run, "audit.0", 1, false, false, deadline, NOW, &mut SplitMix64::new(1));
        assert_eq!(claim, AttemptClaim::Claim(1));
        let later = Rules { now: NOW.saturating_add(10_001), ..rules(Observer::Poller) };
        let d = decide(&run, &[Event::Look], &later, &mut SplitMix64::new(7));
        assert_eq!(status_of(&d, "audit.0"), StepStatus::Retrying, "its own timeout, retried by the step's policy");
        assert_eq!(status_of(&d, "audit"), StepStatus::Running);
    }

    #[test]
    fn a_map_needs_its_min_completed_and_fails_as_soon_as_it_is_out_of_reach() {
        let failed_item = |i: u32| Event::Reported {
            service: slug(&format!("audit.{i}")),
            attempt: Some(1),
            report: Report::Failed(StepError::new(ErrorKind::Permanent, "404")),
        };
        let ok_item = |i: u32| Event::Reported {
            service: slug(&format!("audit.{i}")),
            attempt: Some(1),
            report: Report::Succeeded,
        };

        // Every item needed (the default): one failure fails the map, cancels the item still
        // running, and skips the dependent.
        let p = map_plan(None);
        let d = decide_sized(&p, &[running("crawl")], &[succeeded("crawl")], Ok(3));
        let d = decide_sized(&p, &after(&d), &[failed_item(0)], Ok(3));
        assert_eq!(status_of(&d, "audit"), StepStatus::Failed);
        assert_eq!(status_of(&d, "audit.1"), StepStatus::Cancelled);
        assert_eq!(status_of(&d, "audit.2"), StepStatus::Cancelled, "a pending item never runs");
        assert_eq!(status_of(&d, "report"), StepStatus::Skipped);
        let told: Vec<String> = effects(&d, &carry(Dispatch::Queue))
            .into_iter()
            .filter_map(|e| match e {
                Effect::TellCancelled { service, .. } => Some(service.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(told, ["audit.1"], "only the running item's service is told");
        let failed = d.steps.iter().find(|s| s.service.as_str() == "audit").unwrap();
        assert_eq!(failed.error.as_deref(), Some("0 of 3 items completed, 3 needed (min_completed)"));

        // Half needed: one failure of two is enough to complete.
        let p = map_plan(Some(Threshold::Ratio(0.5)));
        let d = decide_sized(&p, &[running("crawl")], &[succeeded("crawl")], Ok(2));
        let d = decide_sized(&p, &after(&d), &[failed_item(0), ok_item(1)], Ok(2));
        assert_eq!(status_of(&d, "audit"), StepStatus::Completed);
        assert_eq!(sent(&d), ["report"]);
    }

    #[test]
    fn a_map_over_an_empty_list_completes_at_once_and_one_without_a_list_fails() {
        let p = map_plan(None);
        let d = decide_sized(&p, &[running("crawl")], &[succeeded("crawl")], Ok(0));
        assert_eq!(status_of(&d, "audit"), StepStatus::Completed);
        assert_eq!(sent(&d), ["report"], "its dependent runs in the same decision");

        let why = "for_each crawl.pages: not a list but a number".to_string();
        let d = decide_sized(&p, &[running("crawl")], &[succeeded("crawl")], Err(why.clone()));
        assert_eq!(status_of(&d, "audit"), StepStatus::Failed);
        assert_eq!(d.steps.iter().find(|s| s.service.as_str() == "audit").unwrap().error, Some(why));
        assert_eq!(status_of(&d, "report"), StepStatus::Skipped);
    }

    #[test]
    fn a_cancel_or_the_runs_deadline_ends_every_open_item() {
        let p = map_plan(None);
        let d = decide_sized(&p, &[running("crawl")], &[succeeded("crawl")], Ok(3));
        let steps = after(&d);
        let cancelled = decide_sized(&p, &steps, &[Event::Cancel], Ok(3));
        for item in ["audit.0", "audit.1", "audit.2"] {
            assert_eq!(status_of(&cancelled, item), StepStatus::Cancelled, "{item}");
        }
        let run = RunState { status: RunStatus::Running, started_at: NOW, plan: &p, steps: &steps, sizes: &[] };
        let late = Rules { now: NOW.saturating_add(600_000), ..rules(Observer::Poller) };
        let d = decide(&run, &[Event::Look], &late, &mut SplitMix64::new(7));
        assert_eq!(status_of(&d, "audit"), StepStatus::Timeout);
        assert_eq!(status_of(&d, "audit.0"), StepStatus::Timeout);
        assert_eq!(status_of(&d, "audit.2"), StepStatus::Timeout);
        assert!(matches!(d.run, RunAction::Claim { .. }), "{:?}", d.run);
    }

    #[test]
    fn a_retried_run_restarts_the_items_that_did_not_complete_and_keeps_the_others() {
        let p = map_plan(None);
        let d = decide_sized(&p, &[running("crawl")], &[succeeded("crawl")], Ok(2));
        let ok = Event::Reported { service: slug("audit.0"), attempt: Some(1), report: Report::Succeeded };
        let bad = Event::Reported {
            service: slug("audit.1"),
            attempt: Some(1),
            report: Report::Failed(StepError::new(ErrorKind::Permanent, "no")),
        };
        let d = decide_sized(&p, &after(&d), &[ok, bad], Ok(2));
        assert_eq!(status_of(&d, "audit"), StepStatus::Failed);
        let writes = retry(RunStatus::Failed, &p, &after(&d)).expect("something to retry");
        let restarted: Vec<&str> = writes.iter().map(|w| w.after.service.as_str()).collect();
        assert_eq!(restarted, ["audit.1", "audit", "report"]);
        let mut steps = after(&d);
        for write in &writes {
            let slot = steps.iter_mut().find(|s| s.service == write.after.service).unwrap();
            *slot = write.after.clone();
        }
        let d = decide_sized(&p, &steps, &[Event::Look], Ok(2));
        assert!(d.created.is_empty(), "the items are there already");
        assert_eq!(sent(&d), ["audit.1"], "only the item that failed runs again");
        assert_eq!(status_of(&d, "audit.0"), StepStatus::Completed);
    }
}
