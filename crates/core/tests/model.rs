//! The run protocol, model-checked.
//!
//! A model of one run, explored exhaustively (breadth first, by `stateright`) within small
//! bounds, over core's real decision functions: every decision the model takes is
//! [`lifecycle::decide`] (with what it calls: `state::apply`, `fanin::decide`,
//! `scheduler::schedule`, `cancel::cancel`, the retry policy through a fixed
//! [`RandomSource`]), [`lifecycle::claim_attempt`] for what a task message comes to (a claim,
//! or the next attempt of a step that backs off), [`lifecycle::analysed`], and
//! `messages::run_timer_due`. Nothing of those is copied here.
//!
//! What the model adds is what the edge does with a decision, written to mirror its SQL guards:
//!
//! - **Storage** ([`Db`]): the run row (status, `version`, `claimed_at`, `partial`, `due_at`)
//!   and the step rows (core's `StepRecord` and `claimed_at`). One action applies one D1 batch,
//!   atomically.
//! - **A decision's batch** ([`RunModel::write`], `edge::engine::apply::batch::decision_batch`):
//!   the gate (`d1::runs::gate`: the version moves to a fresh token only if it is the one
//!   read), every step write a compare-and-set on the status and attempts it was read with
//!   (`d1::steps::compare_and_set`), guarded by the gate's token unless it is a report's own
//!   write; `due_no_later_than` and `bump` around a report; `mark_running`;
//!   `claim_fan_in` (`version = token AND status IN ACTIVE`); the ending
//!   (`d1::runs::finish`: `status IN from`, under the gate when there is one, a fresh version).
//!   A lost gate reads the run again and decides again, at most [`MAX_ROUNDS`] times
//!   (`Engine::carry_out`).
//! - **Actors**, each an invocation that reads the run when it starts (and again after a lost
//!   gate) and writes its decision as a later action, so that others interleave in between:
//!   the orchestrator's result callback (`Engine::record`, queue mode), the consumer's task
//!   message (`Engine::claim_and_load`: `claim_start`, or a retry dispatched by its own message
//!   as in `claim_attempts`), an attempt run in place and its report (`attempts::RunCell`,
//!   inline mode: what it dispatches is claimed in the same write and run here, a fan-in it
//!   wins is analysed and ended in the same batch), a service answering later by callback
//!   (202), the run's own timer (`Engine::on_timer`, re-armed by `run_timer_due` when it fired
//!   before the deadline), the poller's tick (`engine::due_work`: due runs, overdue attempts,
//!   lost retries; `resend_analysis`; `look_again_at`), the analysis consumer
//!   (`Engine::finalize` → `finish_analysed`), a client's cancel (`Engine::cancel`), and a
//!   client's pause and resume (`Engine::pause`, `Engine::resume`: the status written under the
//!   gate, `paused` only from `started|running`, back to `running` before anything the
//!   resume's look dispatches).
//! - **Faults**: a message delivered twice; a task, timer, callback or analysis delivered
//!   late (any time after it is due); an invocation that dies after its batch and before the
//!   messages it implies (they are lost; a task message it had not acknowledged comes back);
//!   an invocation that dies while its service works; time passing attempt deadlines and the
//!   run's deadline.
//!
//! Properties ([`RunModel::properties`]): at most one fan-in claim, exactly one for a run that
//! ends `completed` or `timeout`; at most one finish, exactly one once the run has ended; a
//! terminal step never changes; no attempt is dispatched, run or ended twice, and no step
//! makes more attempts than its policy allows; nothing is dispatched and no fan-in claimed
//! before the deadline while the run is paused; and once the run's deadline has passed and
//! nothing is left in flight, the run has ended (paused or not).
//!
//! Bounds ([`Bounds`]): a plan of two steps, `b` after `a`; two attempts per step, attempts of
//! a minute, a run of two; at most two invocations deciding at once; one duplicate delivery,
//! one crash, one cancel, each where a check asks for it. Time moves in ticks of a minute
//! (the poller's period): sub-minute delays (backoffs, a timer's wait of its fraction,
//! `RESULT_RECHECK_MS`) land within a tick, the poller's cron fires as each tick starts, and an
//! invocation finishes the decision it started within its tick (a service's call may last
//! longer). A timer delivered before it is due is re-armed and changes nothing, so it is not
//! generated; a retry that a task message dispatches is read and written in one action (its
//! write is a compare-and-set on what was read); the attempts of one invocation each keep the
//! copy of the run they started from (a `RunCell` shares one, kept current: ours are staler,
//! so they lose more gates). Not modelled: failed queue sends (`undo_dispatch`,
//! `release_fan_in`), heartbeats, progress questions and attempt timers, concurrency slots,
//! retries of an ended run, KV, webhooks, executions, the SQL text itself, timing under load.

// Helpers outside `#[test]` functions panic as the failure report, as in the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hash::{Hash, Hasher};
use std::time::Instant;

use baton_core::config::Config;
use baton_core::fanin::run_deadline;
use baton_core::lifecycle::{
    self, AttemptClaim, Cause, Event, Finish, Observer, Report, ReportOutcome, Rules, RunAction, RunState,
};
use baton_core::messages::run_timer_due;
use baton_core::plan::{validate, Plan, PlanDraft, StepDraft};
use baton_core::retry::{RandomSource, RetryPolicy};
use baton_core::state::{RunStatus, StepError, StepRecord, StepStatus};
use baton_core::time::Millis;
use stateright::{Checker, HasDiscoveries, Model, Property};

/// One tick of the model's clock: the poller's period. Everything shorter happens within one.
const TICK_MS: u64 = 60_000;
/// When the run starts.
const T0: Millis = Millis::new(1_800_000_000_000);
/// `edge::engine::apply::MAX_ROUNDS`: decisions taken again after a lost gate.
const MAX_ROUNDS: u8 = 4;
/// `edge::engine::run::RESULT_RECHECK_MS`: a recorded result makes the run due this soon.
const RESULT_RECHECK_MS: u64 = 15_000;
/// `edge::engine::run::RETRY_GRACE_MS`: a retry's message counts as lost this long after its backoff.
const RETRY_GRACE_MS: u64 = 10_000;
/// The poller's `look_again_at`: a due run still waiting is looked at again no sooner than this.
const LOOK_AGAIN_MS: u64 = 60_000;

/// The model's bounds and the guards it runs with.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// `(step, dependencies)`, in plan order.
    pub steps: Vec<(&'static str, Vec<&'static str>)>,
    /// Attempts per step (the retry policy's `max_attempts`).
    pub max_attempts: u32,
    /// The run's duration, in ticks.
    pub run_ticks: u64,
    /// Ticks explored past the deadline.
    pub ticks_after_deadline: u64,
    /// Messages that may be delivered twice.
    pub duplicates: u8,
    /// Invocations that may die between a batch and its messages, or while a service works.
    pub crashes: u8,
    /// Cancels a client may send.
    pub cancels: u8,
    /// Pauses a client may send, each followed by at most one resume.
    pub pauses: u8,
    /// Whether a service may answer later by callback (202), besides answering the call.
    pub callbacks: bool,
    /// Whether the first wave may also run in place (a second initial state).
    pub in_place_start: bool,
    /// Invocations in the middle of a decision at once (between their read and their write).
    pub invocations: usize,
    /// Guards removed, to show that the checker notices (a seeded bug).
    pub without: Vec<Guard>,
}

/// A guard of the edge's SQL that a seeded bug removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The run's version: the gate always wins, and nothing compares the version.
    RunVersion,
    /// The fan-in claim's `status IN ('started', 'running')`.
    ClaimStatus,
    /// The poller's `look_again_at` (`set_due_while`): only while the run is active.
    LookAgainStatus,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            steps: vec![("a", vec![]), ("b", vec!["a"])],
            max_attempts: 2,
            run_ticks: 2,
            ticks_after_deadline: 1,
            duplicates: 0,
            crashes: 0,
            cancels: 0,
            pauses: 0,
            callbacks: false,
            in_place_start: false,
            invocations: 2,
            without: Vec::new(),
        }
    }
}

/// Backoffs drawn at their cap: a retry is never due before the next tick's poller.
struct FullBackoff;

impl RandomSource for FullBackoff {
    fn next_u64(&mut self) -> u64 {
        u64::MAX
    }
}

/// The run row's columns the protocol reads and writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Run {
    status: RunStatus,
    version: u32,
    claimed_at: Option<Millis>,
    partial: bool,
    due_at: Option<Millis>,
}

/// A step row: core's record and the attempt's claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    record: StepRecord,
    claimed_at: Option<Millis>,
}

impl Hash for Row {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let r = &self.record;
        (r.status, r.attempts, r.started_at, r.finished_at, r.deadline_at, r.next_attempt_at).hash(h);
        (r.heartbeat_at, r.attempt_base, &r.error, r.error_kind.as_ref().map(|k| k.as_str())).hash(h);
        self.claimed_at.hash(h);
    }
}

/// The in-memory D1: one run and its steps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Db {
    run: Run,
    steps: Vec<Row>,
}

impl Db {
    fn records(&self) -> Vec<StepRecord> {
        self.steps.iter().map(|row| row.record.clone()).collect()
    }
}

/// What a service answers for an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Answer {
    Succeeded,
    /// A transient failure (retried per the policy).
    Failed,
}

/// A message on a queue, or a service's callback on its way.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// `TaskMessage` on `baton-tasks`: run attempt `attempt` of `step`.
    Task { step: usize, attempt: u32 },
    /// A service's signed result callback to the orchestrator.
    Callback { step: usize, attempt: u32, answer: Answer },
    /// The run's own `run_deadline` timer.
    RunTimer { due: Millis },
    /// `AnalysisMessage` on `llm-analysis`.
    Analysis,
}

/// An attempt a service works on, claimed by an invocation that holds a copy of the run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Call {
    step: usize,
    attempt: u32,
    copy: Db,
    /// The task message it came from, not acknowledged while it runs (`None`: run in place).
    message: Option<Msg>,
}

/// What an invocation in the middle of a decision is doing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Job {
    /// A report (`Engine::record`; `inline`: a `RunCell`'s, in the invocation that ran it).
    Record { step: usize, attempt: u32, answer: Answer, inline: bool, message: Option<Msg>, pending: bool },
    /// A look: the poller (`poller`, and `due`: it came from the due index), a timer
    /// (`rearm`: it fired before the deadline), or an expired attempt found by a task message.
    Look { poller: bool, due: bool, inline: bool, rearm: bool },
    /// A client's cancel.
    Cancel,
    /// A client's pause.
    Pause,
    /// A client's resume.
    Resume,
    /// The analysis consumer.
    Finalize,
}

/// An invocation: its job, the copy of the run it decides on, its round.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Worker {
    job: Job,
    copy: Db,
    round: u8,
    /// Its report was recorded as `retrying` (so its task message is delivered again).
    retrying: bool,
}

/// What the properties look at, beside the storage.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Ghost {
    claims: u8,
    finishes: u8,
    terminal_step_changed: bool,
    /// Per step and attempt number: dispatches, runs (claims to call the service), endings.
    dispatched: Vec<Vec<u8>>,
    runs: Vec<Vec<u8>>,
    ended: Vec<Vec<u8>>,
    gate_lost: bool,
    /// A step was dispatched, or the fan-in claimed before the deadline, while the run was paused.
    started_while_paused: bool,
    /// The run was paused at some point, and resumed.
    paused: bool,
    resumed: bool,
}

/// One state of the system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    now: Millis,
    polled: bool,
    db: Db,
    next_token: u32,
    /// Messages in flight, sorted (a multiset).
    bag: Vec<Msg>,
    calls: Vec<Call>,
    workers: Vec<Worker>,
    duplicates: u8,
    crashes: u8,
    cancels: u8,
    pauses: u8,
    resumes: u8,
    ghost: Ghost,
}

/// Something that happens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A minute passes (after the poller's tick of this one).
    Tick,
    /// The poller's tick.
    Poll,
    /// A message is delivered; `twice`: it stays to be delivered again.
    Deliver { msg: Msg, twice: bool },
    /// A service answers the call; `callback`: later, by callback (202 now).
    Answer { call: usize, answer: Answer, callback: bool },
    /// The invocation running a call dies.
    Die { call: usize },
    /// An invocation writes its decision; `crash`: it dies right after the batch.
    Write { worker: usize, crash: bool },
    /// A client cancels the run.
    Cancel,
    /// A client pauses the run.
    Pause,
    /// A client resumes the run.
    Resume,
}

/// The model: a plan, the configuration, the bounds.
pub struct RunModel {
    plan: Plan,
    config: Config,
    bounds: Bounds,
    deadline: Millis,
    horizon: Millis,
}

/// What a batch won.
#[derive(Default)]
struct Won {
    gate: bool,
    report: bool,
    claim: bool,
    ending: bool,
}

impl RunModel {
    pub fn new(bounds: Bounds) -> Self {
        let retry = RetryPolicy { max_attempts: bounds.max_attempts, ..RetryPolicy::default() };
        let draft = PlanDraft {
            plan_id: "model".into(),
            name: "Model".into(),
            description: String::new(),
            max_run_duration_ms: bounds.run_ticks * TICK_MS,
            services: bounds
                .steps
                .iter()
                .map(|(service, deps)| StepDraft {
                    depends_on: deps.iter().map(|d| d.to_string()).collect(),
                    timeout_ms: Some(TICK_MS),
                    retry: Some(retry.clone()),
                    ..StepDraft::new(*service)
                })
                .collect(),
            min_completed: None,
        };
        let plan = validate(&draft).expect("a valid plan");
        // The analysis is resent after a minute (`ANALYSIS_TIMEOUT_SECONDS`; default two).
        let config = Config { analysis_timeout_seconds: 60, ..Config::default() };
        let deadline = run_deadline(&plan, T0, &config.fan_in());
        let horizon = deadline.saturating_add(bounds.ticks_after_deadline * TICK_MS);
        RunModel { plan, config, bounds, deadline, horizon }
    }

    fn without(&self, guard: Guard) -> bool {
        self.bounds.without.contains(&guard)
    }

    fn rules(&self, now: Millis, poller: bool) -> Rules {
        Rules {
            now,
            fan_in: self.config.fan_in(),
            event_driven_fanin: self.config.event_driven_fanin,
            observer: if poller { Observer::Poller } else { Observer::EventDriven },
            retry_grace_ms: RETRY_GRACE_MS,
        }
    }

    fn decide(&self, copy: &Db, events: &[Event], now: Millis, poller: bool) -> lifecycle::Decision {
        let records = copy.records();
        let run = RunState { status: copy.run.status, started_at: T0, plan: &self.plan, steps: &records, sizes: &[] };
        lifecycle::decide(&run, events, &self.rules(now, poller), &mut FullBackoff)
    }

    fn slots(&self) -> usize {
        self.bounds.max_attempts as usize + 2
    }

    /// The run as the start writes it (`Engine::start_with`): the first wave dispatched, as
    /// task messages with the run's timer at its deadline, or claimed in the insert and run in
    /// place with the run's timer at the first attempt's expiry.
    fn start(&self, in_place: bool) -> State {
        let pending: Vec<StepRecord> =
            self.plan.steps().iter().map(|s| StepRecord::pending(s.service.clone())).collect();
        let run =
            RunState { status: RunStatus::Started, started_at: T0, plan: &self.plan, steps: &pending, sizes: &[] };
        let first = lifecycle::decide(&run, &[Event::Look], &self.rules(T0, false), &mut FullBackoff);
        assert_eq!(first.run, RunAction::Start);
        let claim = in_place.then_some(T0);
        let steps = first
            .steps
            .iter()
            .map(|r| Row { record: r.clone(), claimed_at: claim.filter(|_| r.status == StepStatus::Running) })
            .collect();
        let db = Db {
            run: Run {
                status: RunStatus::Running,
                version: 0,
                claimed_at: None,
                partial: false,
                due_at: Some(self.deadline),
            },
            steps,
        };
        let n = self.plan.steps().len();
        let mut ghost = Ghost {
            dispatched: vec![vec![0; self.slots()]; n],
            runs: vec![vec![0; self.slots()]; n],
            ended: vec![vec![0; self.slots()]; n],
            ..Ghost::default()
        };
        let mut bag = Vec::new();
        let mut calls = Vec::new();
        for record in first.dispatched() {
            let step = self.plan.position(record.service.as_str()).unwrap();
            ghost.dispatched[step][record.attempts as usize] += 1;
            if in_place {
                ghost.runs[step][record.attempts as usize] += 1;
                calls.push(Call { step, attempt: record.attempts, copy: db.clone(), message: None });
            } else {
                bag.push(Msg::Task { step, attempt: record.attempts });
            }
        }
        let due = if in_place {
            // Armed a second in (`attempts::RUN_TIMER_AFTER`), at the first unwatched expiry.
            let expiries = self.unwatched(&db);
            run_timer_due(self.deadline, expiries, T0.saturating_add(1_000))
        } else {
            self.deadline
        };
        bag.push(Msg::RunTimer { due });
        bag.sort();
        State {
            now: T0,
            polled: false,
            db,
            next_token: 1,
            bag,
            calls,
            workers: Vec::new(),
            duplicates: self.bounds.duplicates,
            crashes: self.bounds.crashes,
            cancels: self.bounds.cancels,
            pauses: self.bounds.pauses,
            resumes: 0,
            ghost,
        }
    }

    /// Expiries of running attempts claimed by an invocation (`Engine::run_deadline_timer`).
    fn unwatched(&self, db: &Db) -> Vec<Millis> {
        db.steps
            .iter()
            .zip(self.plan.steps())
            .filter(|(row, _)| row.record.status == StepStatus::Running && row.claimed_at.is_some())
            .filter_map(|(row, spec)| row.record.expires_at(spec))
            .collect()
    }

    fn token(state: &mut State) -> u32 {
        let token = state.next_token;
        state.next_token += 1;
        token
    }

    /// Writes a step's new record if it is still as read (`d1::steps::compare_and_set`);
    /// `gate`: only while the run carries that version; `claim`: the writer claims the attempt.
    fn compare_and_set(
        &self,
        state: &mut State,
        position: usize,
        before: &StepRecord,
        after: &StepRecord,
        claim: Option<Millis>,
        gate: Option<u32>,
    ) -> bool {
        let row = &state.db.steps[position];
        let gated = gate.is_none_or(|token| self.without(Guard::RunVersion) || state.db.run.version == token);
        if row.record.status != before.status || row.record.attempts != before.attempts || !gated {
            return false;
        }
        let ghost = &mut state.ghost;
        if row.record.status.is_terminal() && row.record != *after {
            ghost.terminal_step_changed = true;
        }
        let (was, now) = (&row.record, after);
        if was.status == StepStatus::Running && !(now.status == StepStatus::Running && now.attempts == was.attempts) {
            bump(&mut ghost.ended[position], was.attempts);
        }
        if now.attempts > was.attempts {
            bump(&mut ghost.dispatched[position], now.attempts);
            ghost.started_while_paused |= state.db.run.status == RunStatus::Paused;
        }
        if claim.is_some() {
            bump(&mut ghost.runs[position], now.attempts);
        }
        // `claimed_at = CASE WHEN claim IS NOT NULL THEN claim WHEN attempts = new THEN claimed_at ELSE NULL`
        let claimed_at = claim.or(if was.attempts == now.attempts { row.claimed_at } else { None });
        state.db.steps[position] = Row { record: after.clone(), claimed_at };
        true
    }

    /// Ends the run (`d1::runs::finish`): only from `finish.from`, under `gate` if any.
    fn finish(&self, state: &mut State, finish: &Finish, gate: Option<u32>) -> bool {
        let run = &state.db.run;
        let gated = gate.is_none_or(|token| self.without(Guard::RunVersion) || run.version == token);
        if !finish.from.contains(&run.status) || !gated {
            return false;
        }
        let token = Self::token(state);
        let run = &mut state.db.run;
        run.status = finish.status;
        run.due_at = None;
        run.version = token;
        state.ghost.finishes += 1;
        true
    }

    /// One round of `Engine::carry_out` by `worker` (whose copy has been read): decide, write
    /// the batch, act on what was won (unless `crash`).
    fn write(&self, state: &mut State, index: usize, crash: bool) {
        let mut worker = state.workers.remove(index);
        let copy = worker.copy.clone();
        let now = state.now;
        if let Job::Finalize = worker.job {
            // `Engine::finalize`: a run that is not claimed is left alone.
            let partial = copy.run.partial;
            let claimed_at = copy.run.claimed_at.unwrap_or(Millis::new(0));
            if let Some(finish) = lifecycle::analysed(copy.run.status, partial, claimed_at, self.deadline) {
                self.finish(state, &finish, None);
            }
            return;
        }
        if let (Job::Look { poller: false, inline: false, .. }, false) =
            (&worker.job, lifecycle::OPEN.contains(&copy.run.status))
        {
            return; // `on_timer`: the run has moved on
        }
        let (poller, inline) = match worker.job {
            Job::Record { inline, .. } => (false, inline),
            Job::Look { poller, inline, .. } => (poller, inline),
            _ => (false, false),
        };
        let mut events = Vec::new();
        if let Job::Record { step, attempt, answer, pending: true, .. } = &worker.job {
            let report = match answer {
                Answer::Succeeded => Report::Succeeded,
                Answer::Failed => Report::Failed(StepError::transient("503 Service Unavailable")),
            };
            let service = self.plan.steps()[*step].service.clone();
            events.push(Event::Reported { service, attempt: Some(*attempt), report });
        }
        events.push(match worker.job {
            Job::Cancel => Event::Cancel,
            Job::Pause => Event::Pause,
            Job::Resume => Event::Resume,
            _ => Event::Look,
        });
        let decision = self.decide(&copy, &events, now, poller);
        let mut recorded = None;
        if let Job::Record { pending, .. } = &mut worker.job {
            if *pending {
                match &decision.reported[0] {
                    ReportOutcome::Recorded(record) => recorded = Some(record.clone()),
                    _ => *pending = false,
                }
            }
        }
        if decision.is_empty() {
            self.done(state, worker, &copy, Won::default());
            return;
        }

        // The batch (`Engine::batch_of`), atomically.
        let token = Self::token(state);
        let mut won =
            Won { gate: self.without(Guard::RunVersion) || state.db.run.version == copy.run.version, ..Won::default() };
        if won.gate {
            state.db.run.version = token;
        }
        let gate_holds = |state: &State| self.without(Guard::RunVersion) || state.db.run.version == token;
        let mut after = copy.clone();
        after.run.version = token;
        if decision.resume {
            // `paused → running` under the gate, before the steps the resume dispatches.
            after.run.status = RunStatus::Running;
            if state.db.run.status == RunStatus::Paused && gate_holds(state) {
                state.db.run.status = RunStatus::Running;
                state.ghost.resumed = true;
            }
        }
        for write in &decision.writes {
            let position = self.plan.position(write.after.service.as_str()).unwrap();
            let claim = (inline && write.cause == Cause::Dispatched).then_some(now);
            let gate = (write.cause != Cause::Reported).then_some(token);
            let applied = self.compare_and_set(state, position, &write.before, &write.after, claim, gate);
            if applied && write.cause == Cause::Reported {
                won.report = true;
            }
            let row = &copy.steps[position];
            let claimed_at = claim.or(if row.record.attempts == write.after.attempts { row.claimed_at } else { None });
            after.steps[position] = Row { record: write.after.clone(), claimed_at };
        }
        let reported = decision.writes.iter().any(|w| w.cause == Cause::Reported);
        if reported {
            // `due_no_later_than`: never on a NULL `due_at`.
            let recheck = now.saturating_add(RESULT_RECHECK_MS);
            if let Some(due) = &mut state.db.run.due_at {
                *due = (*due).min(recheck);
            }
        }
        match &decision.run {
            RunAction::Keep => {}
            RunAction::Start => {
                after.run.status = RunStatus::Running;
                if state.db.run.status == RunStatus::Started && gate_holds(state) {
                    state.db.run.status = RunStatus::Running;
                }
            }
            RunAction::DeferFanIn => {
                if state.db.run.due_at.is_some() {
                    state.db.run.due_at = Some(now);
                }
            }
            RunAction::Claim { partial, then, .. } => {
                let status_ok = self.without(Guard::ClaimStatus) || lifecycle::OPEN.contains(&state.db.run.status);
                if gate_holds(state) && status_ok {
                    state.ghost.started_while_paused |= state.db.run.status == RunStatus::Paused && now < self.deadline;
                    let run = &mut state.db.run;
                    run.status = RunStatus::Aggregating;
                    run.claimed_at = Some(now);
                    run.partial = *partial;
                    run.due_at = Some(now.saturating_add(self.config.analysis_timeout_ms()));
                    state.ghost.claims += 1;
                    won.claim = true;
                }
                after.run = Run {
                    status: RunStatus::Aggregating,
                    claimed_at: Some(now),
                    partial: *partial,
                    ..after.run.clone()
                };
                if inline {
                    // No LLM configured: the rule-based analysis ends the run in this batch.
                    let finish = Finish { status: *then, from: lifecycle::CLAIMED, error: None };
                    won.ending = self.finish(state, &finish, Some(token));
                    after.run.status = *then;
                    after.run.due_at = None;
                }
            }
            RunAction::Finish(finish) => {
                won.ending = self.finish(state, finish, Some(token));
                after.run.status = finish.status;
                after.run.due_at = None;
            }
            RunAction::Pause => {
                after.run.status = RunStatus::Paused;
                if lifecycle::ACTIVE.contains(&state.db.run.status) && gate_holds(state) {
                    state.db.run.status = RunStatus::Paused;
                    state.ghost.paused = true;
                    state.resumes += 1;
                }
            }
        }
        if reported && state.db.run.version != token {
            // `bump`: every copy read before the report's write is stale.
            state.db.run.version = token;
        }
        if let (Some(record), true) = (&recorded, won.report) {
            if let Job::Record { pending, .. } = &mut worker.job {
                *pending = false;
            }
            worker.retrying = record.status == StepStatus::Retrying;
        }

        if !won.gate {
            state.ghost.gate_lost = true;
            if crash {
                self.die(state, worker);
            } else if worker.round + 1 < MAX_ROUNDS {
                state.workers.push(Worker { round: worker.round + 1, copy: state.db.clone(), ..worker });
            } else {
                self.done(state, worker, &copy, won);
            }
            return;
        }
        if crash {
            self.die(state, worker);
            return;
        }
        // `Engine::act`: what the won decision implies.
        for record in decision.dispatched() {
            let step = self.plan.position(record.service.as_str()).unwrap();
            if inline {
                state.calls.push(Call { step, attempt: record.attempts, copy: after.clone(), message: None });
            } else {
                state.bag.push(Msg::Task { step, attempt: record.attempts });
            }
        }
        for write in &decision.writes {
            if write.after.status == StepStatus::Retrying && !(inline && write.cause == Cause::Reported) {
                let step = self.plan.position(write.after.service.as_str()).unwrap();
                state.bag.push(Msg::Task { step, attempt: write.after.attempts });
            }
        }
        if won.claim && !inline {
            state.bag.push(Msg::Analysis);
        }
        self.done(state, worker, &after, won);
    }

    /// The invocation dies: a task message it had not acknowledged comes back.
    fn die(&self, state: &mut State, worker: Worker) {
        if let Job::Record { message: Some(message), .. } = worker.job {
            state.bag.push(message);
        }
        state.crashes -= 1;
        state.bag.sort();
    }

    /// The end of a carry-out: the task message's disposition, the poller's next look, the
    /// run's next timer.
    fn done(&self, state: &mut State, worker: Worker, after: &Db, won: Won) {
        let now = state.now;
        match worker.job {
            Job::Record { step, attempt, message, inline: true, .. } if worker.retrying => {
                // `Disposition::RetryAfter` (a task message), or `queue_what_remains` (in place).
                state.bag.push(message.unwrap_or(Msg::Task { step, attempt }));
            }
            // `look_again_at(max(deadline, now + 1 min))`: `set_due_while`, only while the run is
            // active (a racing report may have claimed it meanwhile).
            Job::Look { due: true, .. }
                if !(won.claim || won.ending)
                    && state.db.run.due_at.is_some()
                    && (self.without(Guard::LookAgainStatus) || lifecycle::OPEN.contains(&state.db.run.status)) =>
            {
                state.db.run.due_at = Some(self.deadline.max(now.saturating_add(LOOK_AGAIN_MS)));
            }
            Job::Look { rearm: true, .. } if !won.ending => {
                let due = run_timer_due(self.deadline, self.unwatched(after), now);
                state.bag.push(Msg::RunTimer { due });
            }
            _ => {}
        }
        state.bag.sort();
    }

    /// A task message reaches the consumer (`Engine::claim_and_load`).
    fn deliver_task(&self, state: &mut State, msg: Msg) -> bool {
        let Msg::Task { step, attempt } = msg else { unreachable!() };
        let now = state.now;
        let row = state.db.steps[step].clone();
        let records = state.db.records();
        let run =
            RunState { status: state.db.run.status, started_at: T0, plan: &self.plan, steps: &records, sizes: &[] };
        let service = self.plan.steps()[step].service.as_str();
        let claimed = row.claimed_at.is_some();
        // `claim_and_load` / `claim_attempts`: core decides what the message comes to.
        match lifecycle::claim_attempt(&run, service, attempt, claimed, false, self.deadline, now, &mut FullBackoff) {
            AttemptClaim::Claim(attempt) => {
                // `claim_start` won: this invocation calls the service.
                state.db.steps[step].claimed_at = Some(now);
                bump(&mut state.ghost.runs[step], attempt);
                state.calls.push(Call { step, attempt, copy: state.db.clone(), message: Some(msg) });
                true
            }
            // Held by another invocation: come back at its expiry, then look.
            AttemptClaim::HeldElsewhere(_) | AttemptClaim::NotYet(_) => false,
            AttemptClaim::Expired => {
                let job = Job::Look { poller: false, due: false, inline: true, rearm: false };
                state.workers.push(Worker { job, copy: state.db.clone(), round: 0, retrying: false });
                true
            }
            AttemptClaim::Dispatch(write) => {
                // The message of a step that backs off dispatches its next attempt.
                if self.compare_and_set(state, step, &write.before, &write.after, Some(now), None) {
                    let token = Self::token(state);
                    state.db.run.version = token;
                    let mut copy = state.db.clone();
                    copy.run.version = u32::MAX; // not known exactly: the next decision reads again
                    state.calls.push(Call { step, attempt: write.after.attempts, copy, message: Some(msg) });
                }
                true
            }
            AttemptClaim::Held(_) | AttemptClaim::Nothing => true, // a duplicate or stale message: acknowledged
        }
    }
    fn deliver(&self, state: &mut State, msg: Msg) -> bool {
        match msg {
            Msg::Task { .. } => self.deliver_task(state, msg),
            Msg::Callback { step, attempt, answer } => {
                let job = Job::Record { step, attempt, answer, inline: false, message: None, pending: true };
                state.workers.push(Worker { job, copy: state.db.clone(), round: 0, retrying: false });
                true
            }
            Msg::RunTimer { due } => {
                if due > state.now {
                    return false; // early: re-armed
                }
                // `on_timer`: a run that is no longer active is left alone (checked on the read).
                let job = Job::Look { poller: false, due: false, inline: false, rearm: due < self.deadline };
                state.workers.push(Worker { job, copy: state.db.clone(), round: 0, retrying: false });
                true
            }
            Msg::Analysis => {
                state.workers.push(Worker { job: Job::Finalize, copy: state.db.clone(), round: 0, retrying: false });
                true
            }
        }
    }

    /// Nothing is in flight and nothing more would happen before time moves on.
    fn quiescent(&self, state: &State) -> bool {
        state.workers.is_empty()
            && state.calls.is_empty()
            && state.polled
            && state.bag.iter().all(|msg| {
                let mut probe = state.clone();
                !self.deliver(&mut probe, msg.clone())
            })
    }

    /// One line of the trace: the state after an action.
    pub fn describe(&self, state: &State) -> String {
        let steps: Vec<String> = state
            .db
            .steps
            .iter()
            .zip(self.plan.steps())
            .map(|(row, spec)| {
                let claimed = if row.claimed_at.is_some() { "*" } else { "" };
                format!("{}={}#{}{claimed}", spec.service, row.record.status, row.record.attempts)
            })
            .collect();
        let name = |step: usize| self.plan.steps()[step].service.as_str();
        let queue: Vec<String> = state
            .bag
            .iter()
            .map(|msg| match msg {
                Msg::Task { step, attempt } => format!("task {}#{attempt}", name(*step)),
                Msg::Callback { step, attempt, answer } => format!("callback {}#{attempt} {answer:?}", name(*step)),
                Msg::RunTimer { due } => format!("timer t+{}m", due.since(T0) / TICK_MS),
                Msg::Analysis => "analysis".to_string(),
            })
            .collect();
        let calls: Vec<String> = state.calls.iter().map(|c| format!("{}#{}", name(c.step), c.attempt)).collect();
        let workers: Vec<String> = state
            .workers
            .iter()
            .map(|w| match &w.job {
                Job::Record { step, attempt, answer, inline, .. } => {
                    let how = if *inline { "in place" } else { "callback" };
                    format!("record {}#{attempt} {answer:?} ({how})", name(*step))
                }
                Job::Look { poller: true, .. } => "poller look".to_string(),
                Job::Look { inline: true, .. } => "look (expired attempt)".to_string(),
                Job::Look { .. } => "timer look".to_string(),
                Job::Cancel => "cancel".to_string(),
                Job::Pause => "pause".to_string(),
                Job::Resume => "resume".to_string(),
                Job::Finalize => "analysis".to_string(),
            })
            .collect();
        format!(
            "t+{}m run={} [{}] claims={} finishes={} | queue [{}] | calls [{}] | deciding [{}]",
            state.now.since(T0) / TICK_MS,
            state.db.run.status,
            steps.join(" "),
            state.ghost.claims,
            state.ghost.finishes,
            queue.join(", "),
            calls.join(", "),
            workers.join(", "),
        )
    }
}

/// The state with its version tokens renumbered in order of appearance and its calls and
/// workers in a fixed order: tokens are only ever compared for equality (a fresh one differs
/// from all), and invocations are interchangeable, so states that differ only there are one.
fn canonical(state: &mut State) {
    let hash = |value: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        value(&mut h);
        h.finish()
    };
    state.calls.sort_by_cached_key(|c| hash(&|h| c.hash(h)));
    state.workers.sort_by_cached_key(|w| hash(&|h| w.hash(h)));
    let mut seen: Vec<u32> = Vec::new();
    let mut renumber = |version: &mut u32| {
        if *version == u32::MAX {
            return;
        }
        let at = seen.iter().position(|v| v == version).unwrap_or_else(|| {
            seen.push(*version);
            seen.len() - 1
        });
        *version = at as u32;
    };
    renumber(&mut state.db.run.version);
    for call in &mut state.calls {
        renumber(&mut call.copy.run.version);
    }
    for worker in &mut state.workers {
        renumber(&mut worker.copy.run.version);
    }
    state.next_token = seen.len() as u32;
}

fn bump(counts: &mut [u8], attempt: u32) {
    if let Some(count) = counts.get_mut(attempt as usize) {
        *count = count.saturating_add(1);
    }
}

impl Model for RunModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let mut states = vec![self.start(false)];
        if self.bounds.in_place_start {
            states.push(self.start(true));
        }
        states
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        // Invocations in the middle of a decision, at most `invocations` at once.
        let room = state.workers.len() < self.bounds.invocations;
        if !state.polled {
            // The poller's cron fires as the minute starts.
            actions.push(Action::Poll);
            return;
        }
        if state.now < self.horizon && state.workers.is_empty() && !state.db.run.status.is_terminal() {
            // An invocation reads, decides and writes within a minute.
            actions.push(Action::Tick);
        }
        let mut last = None;
        for msg in state.bag.iter().filter(|_| room) {
            if last == Some(msg) {
                continue;
            }
            last = Some(msg);
            actions.push(Action::Deliver { msg: msg.clone(), twice: false });
            if state.duplicates > 0 {
                actions.push(Action::Deliver { msg: msg.clone(), twice: true });
            }
        }
        for call in 0..state.calls.len() {
            for answer in [Answer::Succeeded, Answer::Failed] {
                if room {
                    actions.push(Action::Answer { call, answer, callback: false });
                }
                if self.bounds.callbacks {
                    actions.push(Action::Answer { call, answer, callback: true });
                }
            }
            if state.crashes > 0 {
                actions.push(Action::Die { call });
            }
        }
        for (index, worker) in state.workers.iter().enumerate() {
            actions.push(Action::Write { worker: index, crash: false });
            if state.crashes > 0 && worker.job != Job::Finalize {
                actions.push(Action::Write { worker: index, crash: true });
            }
        }
        if state.cancels > 0 && room {
            actions.push(Action::Cancel);
        }
        if state.pauses > 0 && room {
            actions.push(Action::Pause);
        }
        if state.resumes > 0 && room {
            actions.push(Action::Resume);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Tick => {
                state.now = state.now.saturating_add(TICK_MS);
                state.polled = false;
            }
            Action::Poll => {
                // `engine::due_work`, then the poller's `tick`.
                state.polled = true;
                let now = state.now;
                let run = &state.db.run;
                let due = run.due_at.is_some_and(|at| at <= now);
                let more = state.db.steps.iter().zip(self.plan.steps()).any(|(row, spec)| {
                    let r = &row.record;
                    (r.status == StepStatus::Running && r.deadline_at.is_some_and(|at| at <= now))
                        || (r.status == StepStatus::Retrying
                            && r.next_attempt_at.is_some_and(|at| at.saturating_add(RETRY_GRACE_MS) <= now))
                        || (r.status == StepStatus::Running && r.expires_at(spec).is_some_and(|at| at <= now))
                });
                if due && run.status == RunStatus::Aggregating {
                    // `resend_analysis`.
                    state.bag.push(Msg::Analysis);
                    state.bag.sort();
                    state.db.run.due_at = Some(now.saturating_add(self.config.analysis_timeout_ms()));
                } else if due || more {
                    let job = Job::Look { poller: true, due, inline: false, rearm: false };
                    state.workers.push(Worker { job, copy: state.db.clone(), round: 0, retrying: false });
                }
            }
            Action::Deliver { msg, twice } => {
                let at = state.bag.iter().position(|m| *m == msg)?;
                if twice {
                    state.duplicates -= 1;
                } else {
                    state.bag.remove(at);
                }
                if !self.deliver(&mut state, msg) {
                    return None; // early or held: delivered again later, nothing changed
                }
                state.bag.sort();
            }
            Action::Answer { call, answer, callback } => {
                let call = state.calls.remove(call);
                if callback {
                    // 202 now: the consumer acknowledges its message; the result comes later.
                    state.bag.push(Msg::Callback { step: call.step, attempt: call.attempt, answer });
                    state.bag.sort();
                } else {
                    let job = Job::Record {
                        step: call.step,
                        attempt: call.attempt,
                        answer,
                        inline: true,
                        message: call.message,
                        pending: true,
                    };
                    state.workers.push(Worker { job, copy: call.copy, round: 0, retrying: false });
                }
            }
            Action::Die { call } => {
                let call = state.calls.remove(call);
                if let Some(message) = call.message {
                    state.bag.push(message);
                    state.bag.sort();
                }
                state.crashes -= 1;
            }
            Action::Write { worker, crash } => self.write(&mut state, worker, crash),
            Action::Cancel => {
                state.cancels -= 1;
                state.workers.push(Worker { job: Job::Cancel, copy: state.db.clone(), round: 0, retrying: false });
            }
            Action::Pause => {
                state.pauses -= 1;
                state.workers.push(Worker { job: Job::Pause, copy: state.db.clone(), round: 0, retrying: false });
            }
            Action::Resume => {
                state.resumes -= 1;
                state.workers.push(Worker { job: Job::Resume, copy: state.db.clone(), round: 0, retrying: false });
            }
        }
        canonical(&mut state);
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always("at most one fan-in claim", |_: &RunModel, s: &State| s.ghost.claims <= 1),
            Property::always("an analysed run was claimed exactly once", |_: &RunModel, s: &State| {
                !matches!(s.db.run.status, RunStatus::Completed | RunStatus::Timeout) || s.ghost.claims == 1
            }),
            Property::always("at most one finish", |_: &RunModel, s: &State| s.ghost.finishes <= 1),
            Property::always("an ended run has exactly one finish", |_: &RunModel, s: &State| {
                !s.db.run.status.is_terminal() || s.ghost.finishes == 1
            }),
            Property::always("a terminal step never changes", |_: &RunModel, s: &State| !s.ghost.terminal_step_changed),
            Property::always("no attempt is dispatched, run or ended twice", |_: &RunModel, s: &State| {
                let g = &s.ghost;
                [&g.dispatched, &g.runs, &g.ended].iter().all(|counts| counts.iter().flatten().all(|c| *c <= 1))
            }),
            Property::always("no step makes more attempts than its policy allows", |m: &RunModel, s: &State| {
                s.db.steps.iter().all(|row| row.record.attempts <= row.record.attempt_base + m.bounds.max_attempts)
            }),
            Property::always("a run past its deadline with nothing in flight has ended", |m: &RunModel, s: &State| {
                s.now < m.horizon || s.db.run.status.is_terminal() || !m.quiescent(s)
            }),
            Property::sometimes("a run completes", |_: &RunModel, s: &State| s.db.run.status == RunStatus::Completed),
            Property::sometimes("a run times out", |_: &RunModel, s: &State| s.db.run.status == RunStatus::Timeout),
            Property::sometimes("a run fails", |_: &RunModel, s: &State| s.db.run.status == RunStatus::Failed),
            Property::sometimes("a second attempt runs", |_: &RunModel, s: &State| {
                s.ghost.runs.iter().any(|c| c.get(2) == Some(&1))
            }),
            Property::sometimes("a gate is lost", |_: &RunModel, s: &State| s.ghost.gate_lost),
        ];
        properties.push(Property::always(
            "a paused run dispatches nothing and claims no fan-in before its deadline",
            |_: &RunModel, s: &State| !s.ghost.started_while_paused,
        ));
        if self.bounds.pauses > 0 {
            properties.push(Property::sometimes("a run ends while paused", |_: &RunModel, s: &State| {
                s.db.run.status.is_terminal() && s.ghost.paused && !s.ghost.resumed
            }));
            properties.push(Property::sometimes("a resumed run completes", |_: &RunModel, s: &State| {
                s.db.run.status == RunStatus::Completed && s.ghost.resumed
            }));
        }
        if self.bounds.cancels > 0 {
            properties.push(Property::sometimes("a run is cancelled", |_: &RunModel, s: &State| {
                s.db.run.status == RunStatus::Cancelled
            }));
        }
        properties
    }
}

/// Explores the model to the end; the checker, its state count and how long it took.
fn explore(bounds: Bounds, threads: usize) -> (impl Checker<RunModel>, f64) {
    let started = Instant::now();
    let checker = RunModel::new(bounds).checker().threads(threads).spawn_bfs().join();
    (checker, started.elapsed().as_secs_f64())
}

/// The trace of a discovery: each action and the state it leads to.
fn trace(checker: &impl Checker<RunModel>, name: &'static str) -> Option<String> {
    let path = checker.discovery(name)?;
    let model = checker.model();
    let mut lines = Vec::new();
    for (state, action) in path.into_vec() {
        match action {
            Some(action) => lines.push(format!("  {action:?}\n      -> {}", model.describe_next(&state, &action))),
            None => lines.push(format!("  (end) {}", model.describe(&state))),
        }
    }
    Some(lines.join("\n"))
}

impl RunModel {
    fn describe_next(&self, state: &State, action: &Action) -> String {
        self.next_state(state, action.clone()).map_or_else(|| "(no change)".into(), |next| self.describe(&next))
    }
}

/// Checks `bounds` exhaustively and prints what it explored.
fn check(name: &str, bounds: Bounds) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2);
    let (checker, seconds) = explore(bounds, threads);
    println!(
        "{name}: {} states ({} unique), depth {}, {seconds:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth()
    );
    for property in checker.model().properties() {
        if property.expectation == stateright::Expectation::Always {
            if let Some(trace) = trace(&checker, property.name) {
                println!("{name}: counterexample to \"{}\":\n{trace}", property.name);
            }
        }
    }
    checker.assert_properties();
}

/// Results of one attempt reported twice, by the call and by a callback, concurrently; every
/// message (task, callback, timer, analysis) delivered twice or late.
#[test]
fn duplicate_and_late_deliveries_change_nothing() {
    check("duplicates", Bounds { duplicates: 1, callbacks: true, ..Bounds::default() });
}

/// A client's cancel racing results, looks and the fan-in.
#[test]
fn a_cancel_racing_results_ends_the_run_once() {
    check("cancel", Bounds { cancels: 1, callbacks: true, ..Bounds::default() });
}

/// A client's pause and resume racing results, retries, looks and the fan-in: nothing is
/// dispatched while the run is paused, a resume picks up what became ready, and a run paused
/// past its deadline still ends.
#[test]
fn a_pause_racing_results_starts_nothing_until_resumed() {
    check("pause", Bounds { pauses: 1, callbacks: true, ..Bounds::default() });
}

/// An invocation that dies after its batch (its messages lost) or while its service works
/// (its task message comes back); a first wave run in place (the run's timer early, at the
/// attempt's expiry); every message delivered twice or late.
#[test]
fn a_crash_loses_nothing_that_the_timers_and_the_poller_do_not_recover() {
    check("crashes", Bounds { crashes: 1, duplicates: 1, in_place_start: true, ..Bounds::default() });
}

/// The seeded bug: without the run's version (the gate) and the claim's status list, two
/// looks taken on the same copy both claim the fan-in.
#[test]
fn the_checker_finds_a_double_fan_in_when_the_version_guard_is_dropped() {
    let bounds = Bounds { without: vec![Guard::RunVersion, Guard::ClaimStatus], ..Bounds::default() };
    // One thread, breadth first, stopping at the first double claim: a shortest trace.
    let name = "at most one fan-in claim";
    let checker = RunModel::new(bounds).checker().finish_when(HasDiscoveries::AnyOf([name].into())).spawn_bfs().join();
    let trace = trace(&checker, name).expect("a double fan-in claim");
    println!("counterexample, a second fan-in claim:\n{trace}");
}

/// Bounds that reach a report claiming the fan-in while a poller's look that will not claim it
/// is under way: a three-minute run with result callbacks.
fn look_again_bounds(without: Vec<Guard>) -> Bounds {
    Bounds { run_ticks: 3, callbacks: true, without, ..Bounds::default() }
}

/// Explores [`look_again_bounds`] breadth first, `depth` actions deep, for a claimed run whose
/// next look (its analysis resend) is set past the analysis timeout; the trace if one exists.
fn postponed_analysis(without: Vec<Guard>, depth: usize) -> Option<String> {
    let name = "a claimed run is due again within the analysis timeout";
    let due_again = |m: &WithProperty, s: &State| {
        let run = &s.db.run;
        let limit = s.now.saturating_add(m.model.config.analysis_timeout_ms());
        run.status != RunStatus::Aggregating || run.due_at.is_some_and(|due| due <= limit)
    };
    let model = RunModel::new(look_again_bounds(without));
    let checker = WithProperty { model, property: Property::always(name, due_again) }
        .checker()
        .target_max_depth(depth)
        .finish_when(HasDiscoveries::AnyOf([name].into()))
        .spawn_bfs()
        .join();
    let path = checker.discovery(name)?;
    let model = &checker.model().model;
    let lines: Vec<String> = path
        .into_vec()
        .into_iter()
        .filter_map(|(state, action)| action.map(|a| format!("  {a:?}\n      -> {}", model.describe_next(&state, &a))))
        .collect();
    Some(lines.join("\n"))
}

/// Actions deep enough for the race: the shortest trace without the guard is well inside it.
const LOOK_AGAIN_DEPTH: usize = 24;

/// A poller's look that did not itself claim or end the run sets the run's next look
/// (`look_again_at`) only while the run is active: a report that claimed the fan-in meanwhile
/// keeps its analysis timeout, so an analysis message lost with its sender is resent then,
/// not at the run's deadline.
#[test]
fn a_pollers_look_never_postpones_a_claimed_runs_analysis() {
    if let Some(trace) = postponed_analysis(Vec::new(), LOOK_AGAIN_DEPTH) {
        panic!("a claimed run due only at its deadline:\n{trace}");
    }
}

#[test]
fn the_checker_finds_a_postponed_analysis_when_the_look_again_guard_is_dropped() {
    let trace = postponed_analysis(vec![Guard::LookAgainStatus], LOOK_AGAIN_DEPTH).expect("a postponed analysis");
    println!("counterexample, a claimed run due only at its deadline:\n{trace}");
}

/// [`RunModel`] with one property of its own.
struct WithProperty {
    model: RunModel,
    property: Property<WithProperty>,
}

impl Model for WithProperty {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        self.model.init_states()
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        self.model.actions(state, actions)
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        self.model.next_state(last, action)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![self.property.clone()]
    }
}

/// Every fault at once, and a longer run (a retried step and its dependent both fit before
/// the deadline): tens of millions of states, far past a minute.
/// `cargo test -p baton-core --test model -- --ignored`.
#[test]
#[ignore]
fn every_fault_at_once() {
    let bounds = Bounds {
        run_ticks: 3,
        ticks_after_deadline: 1,
        duplicates: 1,
        crashes: 1,
        cancels: 1,
        callbacks: true,
        in_place_start: true,
        ..Bounds::default()
    };
    check("every fault", bounds);
}
