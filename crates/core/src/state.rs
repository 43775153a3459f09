//! Run and step state machines: statuses, the flat step record (one `steps` row), and
//! transitions as pure functions.
//!
//! The rule for repeated deliveries: an event that would *end* work (a result, a timeout, a
//! skip, a cancel, a finalize) arriving for something already terminal is
//! [`StepOutcome::AlreadyTerminal`] / [`RunOutcome::AlreadyTerminal`] — a normal, idempotent case.
//! An event that would *restart* work (dispatch, claim) on a terminal state is an
//! [`IllegalTransition`].
//!
//! Step lifecycle:
//! ```text
//! pending ──Dispatched──▶ running ──Succeeded──▶ completed
//!    │                     │  ▲ ──Failed / AttemptTimedOut, retries left──▶ retrying
//!    │                     │  └────────────Dispatched (once next_attempt_at passed)──┘
//!    │                     ├──Failed, no retry──▶ failed
//!    │                     └──AttemptTimedOut, no retry / TimedOut──▶ timeout
//!    ├──Skipped (a dependency failed)──▶ skipped
//!    └──TimedOut (run deadline)──▶ timeout          any non-terminal ──Cancelled──▶ cancelled
//! ```

use serde::{Deserialize, Serialize};

pub use crate::failure::{ErrorKind, StepError};
use crate::ids::ServiceSlug;
use crate::plan::StepSpec;
use crate::retry::RandomSource;
use crate::time::Millis;

/// The error a step skipped because of its dependencies records (the seed's exact text).
pub const DEPENDENCIES_FAILED_ERROR: &str = "Dependencies failed or timed out";
/// The error a step cut off by the run's deadline records.
pub const RUN_DEADLINE_ERROR: &str = "Run deadline reached before the service finished";
/// The error a cancelled step records.
pub const CANCELLED_ERROR: &str = "Run cancelled";
/// Error messages are cut to this many characters, so one bad response cannot bloat a row.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 2000;

/// A status text that is not one of the statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct ParseStatusError {
    /// Which status: `run status`, `step status`, `execution queue status`,
    /// `webhook delivery status` or `schedule fire status`.
    pub what: &'static str,
    /// The text given.
    pub value: String,
}

/// What a run is: a diagnostic run of a plan (`POST /api/orchestration/run`, a schedule, a
/// rerun), or a pipeline run of a master template (`POST /execute`). Serialises lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// A plan run for a website, ending with a diagnosis.
    Diagnostic,
    /// A master template's stages, admitted from the execution queue.
    Pipeline,
}

impl RunKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Diagnostic => "diagnostic",
            RunKind::Pipeline => "pipeline",
        }
    }
}

/// A run's status. Serialises lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Created; no step dispatched yet.
    Started,
    /// At least one step dispatched.
    Running,
    /// Paused by a client: nothing new is dispatched (attempts in flight finish and are
    /// recorded; time-outs and the run's deadline still apply) until it is resumed.
    Paused,
    /// Fan-in claimed (`running → aggregating`); analysis in progress. Internal, non-terminal.
    Aggregating,
    /// Analysed before the deadline (possibly with partial data).
    Completed,
    /// Failed: no step completed, partial data disabled, or analysis impossible.
    Failed,
    /// Analysed after the deadline cut steps off.
    Timeout,
    /// Cancelled by a client.
    Cancelled,
}

impl RunStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Started,
        RunStatus::Running,
        RunStatus::Paused,
        RunStatus::Aggregating,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Timeout,
        RunStatus::Cancelled,
    ];

    /// The lowercase text (as stored in D1 and sent in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Started => "started",
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Aggregating => "aggregating",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Timeout => "timeout",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the run is over (it never changes again).
    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Timeout | RunStatus::Cancelled)
    }

    /// The status after `event`; see the module docs for the already-terminal rule.
    pub fn apply(self, event: RunEvent) -> Result<RunOutcome, IllegalTransition> {
        use RunStatus::*;
        let illegal = || IllegalTransition::Run { from: self, event: event.name() };
        if self.is_terminal() {
            return match event {
                RunEvent::Dispatched | RunEvent::Claimed | RunEvent::Paused | RunEvent::Resumed => Err(illegal()),
                RunEvent::Finalized { .. } | RunEvent::Failed | RunEvent::Cancelled => Ok(RunOutcome::AlreadyTerminal),
            };
        }
        let next = match (self, event) {
            (Started | Running, RunEvent::Dispatched) => Running,
            (Running | Paused, RunEvent::Claimed) => Aggregating,
            (Started | Running, RunEvent::Paused) => Paused,
            (Paused, RunEvent::Resumed) => Running,
            (Aggregating, RunEvent::Finalized { status }) => match status {
                Completed | Timeout | Failed => status,
                _ => return Err(IllegalTransition::NotFinal { status }),
            },
            (Started | Running | Paused | Aggregating, RunEvent::Failed) => Failed,
            (_, RunEvent::Cancelled) => Cancelled,
            _ => return Err(illegal()),
        };
        Ok(RunOutcome::Applied(next))
    }
}

/// Something that happens to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEvent {
    /// A step was dispatched (`started → running`; stays `running`).
    Dispatched,
    /// Fan-in claimed the run for analysis (`running → aggregating`).
    Claimed,
    /// Analysis finished; `status` is `completed`, `timeout` or `failed`.
    Finalized {
        /// The final status.
        status: RunStatus,
    },
    /// Fan-in decided the run failed (no analysis).
    Failed,
    /// A client cancelled the run.
    Cancelled,
    /// A client paused the run (`started|running → paused`).
    Paused,
    /// A client resumed the paused run (`paused → running`).
    Resumed,
}

impl RunEvent {
    /// The event's name, for errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            RunEvent::Dispatched => "dispatched",
            RunEvent::Claimed => "claimed",
            RunEvent::Finalized { .. } => "finalized",
            RunEvent::Failed => "failed",
            RunEvent::Cancelled => "cancelled",
            RunEvent::Paused => "paused",
            RunEvent::Resumed => "resumed",
        }
    }
}

/// The result of applying a run event.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The new status (may equal the old one: `running` + dispatched).
    Applied(RunStatus),
    /// The run had already ended; nothing changes.
    AlreadyTerminal,
}

/// A step's status. Serialises lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Waiting for dependencies or dispatch.
    Pending,
    /// An attempt is in flight.
    Running,
    /// Backing off; dispatchable again at `next_attempt_at`.
    Retrying,
    /// Done, with a result.
    Completed,
    /// Gave up after an error.
    Failed,
    /// Ran out of time (its own, or the run's).
    Timeout,
    /// Never ran: a dependency did not complete.
    Skipped,
    /// The run was cancelled.
    Cancelled,
}

impl StepStatus {
    /// Every status.
    pub const ALL: [StepStatus; 8] = [
        StepStatus::Pending,
        StepStatus::Running,
        StepStatus::Retrying,
        StepStatus::Completed,
        StepStatus::Failed,
        StepStatus::Timeout,
        StepStatus::Skipped,
        StepStatus::Cancelled,
    ];

    /// The lowercase text.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Retrying => "retrying",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Timeout => "timeout",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the step is over.
    pub fn is_terminal(self) -> bool {
        !matches!(self, StepStatus::Pending | StepStatus::Running | StepStatus::Retrying)
    }

    /// Terminal without a result: dependents can never run.
    pub fn is_missing(self) -> bool {
        self.is_terminal() && self != StepStatus::Completed
    }
}

/// `Display` and `FromStr` of a status enum from its `ALL` and `as_str`; an unknown text is a
/// [`ParseStatusError`] naming `$what`. Every status enum stored in D1 uses it.
macro_rules! status_text {
    ($name:ident, $what:expr) => {
        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::state::ParseStatusError;

            fn from_str(text: &str) -> ::std::result::Result<Self, Self::Err> {
                $name::ALL.into_iter().find(|status| status.as_str() == text).ok_or_else(|| {
                    $crate::state::ParseStatusError { what: $what, value: text.chars().take(100).collect() }
                })
            }
        }
    };
}
pub(crate) use status_text;

status_text!(RunStatus, "run status");
status_text!(StepStatus, "step status");

/// One step of one run, flat: the scheduling columns of a `steps` row (payload columns such
/// as output and usage are the edge's). Times are instants; `deadline_at` is the running
/// attempt's timeout, `next_attempt_at` the end of a backoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step.
    pub service: ServiceSlug,
    /// Its status.
    pub status: StepStatus,
    /// Attempts dispatched so far.
    pub attempts: u32,
    /// When the first attempt was dispatched.
    pub started_at: Option<Millis>,
    /// When it reached a terminal status.
    pub finished_at: Option<Millis>,
    /// When the running attempt times out.
    pub deadline_at: Option<Millis>,
    /// When a retrying step may be dispatched again.
    pub next_attempt_at: Option<Millis>,
    /// When the running attempt last sent a heartbeat (a progress answer saying it runs).
    pub heartbeat_at: Option<Millis>,
    /// Attempts made before the run was last retried: the retry policy counts from here.
    pub attempt_base: u32,
    /// The last error (or why it was skipped / timed out / cancelled).
    pub error: Option<String>,
    /// The last error's kind.
    pub error_kind: Option<ErrorKind>,
}

impl StepRecord {
    /// A step that has not started.
    pub fn pending(service: ServiceSlug) -> Self {
        StepRecord {
            service,
            status: StepStatus::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            deadline_at: None,
            next_attempt_at: None,
            heartbeat_at: None,
            attempt_base: 0,
            error: None,
            error_kind: None,
        }
    }

    /// When the running attempt times out: its own deadline, or earlier when the step asks
    /// for heartbeats and none came within `heartbeat_timeout_ms` (counted from the last
    /// heartbeat, else from the attempt's dispatch). `None` unless it runs.
    pub fn expires_at(&self, spec: &StepSpec) -> Option<Millis> {
        let deadline = self.deadline_at.filter(|_| self.status == StepStatus::Running)?;
        let Some(heartbeat_timeout) = spec.heartbeat_timeout_ms else { return Some(deadline) };
        let dispatched = Millis::new(deadline.as_u64().saturating_sub(spec.timeout_ms));
        let last_sign = self.heartbeat_at.map_or(dispatched, |at| at.max(dispatched));
        Some(deadline.min(last_sign.saturating_add(heartbeat_timeout)))
    }

    /// When anything waiting on the running attempt gives up (a call to its service, a
    /// question about its progress, its timer): its expiry, or the run's deadline if that
    /// comes first, so that no call made for a run outlasts the run. `None` unless it runs.
    pub fn gives_up_at(&self, spec: &StepSpec, run_deadline: Millis) -> Option<Millis> {
        self.expires_at(spec).map(|at| at.min(run_deadline))
    }

    /// From first dispatch to the end; `None` if it never ran or has not ended.
    pub fn duration_ms(&self) -> Option<u64> {
        match (self.started_at, self.finished_at) {
            (Some(started), Some(finished)) => Some(finished.since(started)),
            _ => None,
        }
    }

    fn finish(&mut self, status: StepStatus, now: Millis, error: Option<(ErrorKind, String)>) {
        self.status = status;
        self.finished_at = Some(now);
        self.deadline_at = None;
        self.next_attempt_at = None;
        self.record_error(error);
    }

    fn record_error(&mut self, error: Option<(ErrorKind, String)>) {
        match error {
            Some((kind, message)) => {
                self.error = Some(cut(&message));
                self.error_kind = Some(kind);
            }
            None => {
                self.error = None;
                self.error_kind = None;
            }
        }
    }
}

fn cut(message: &str) -> String {
    if message.chars().count() <= MAX_ERROR_MESSAGE_CHARS {
        message.to_string()
    } else {
        message.chars().take(MAX_ERROR_MESSAGE_CHARS - 1).chain(['…']).collect()
    }
}

/// Something that happens to a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEvent {
    /// An attempt was sent (increments `attempts`, sets `deadline_at`).
    Dispatched,
    /// The service reported a result.
    Succeeded,
    /// The attempt failed; retried per policy unless the kind is not retryable.
    Failed {
        /// What went wrong.
        error: StepError,
    },
    /// The running attempt passed its own `deadline_at`; retried like a transient error,
    /// else the step ends `timeout`.
    AttemptTimedOut,
    /// The run's deadline passed: the step ends `timeout`, no retry.
    TimedOut,
    /// A dependency did not complete; the step ends `skipped`.
    Skipped,
    /// The run was cancelled.
    Cancelled,
}

impl StepEvent {
    /// The event's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            StepEvent::Dispatched => "dispatched",
            StepEvent::Succeeded => "succeeded",
            StepEvent::Failed { .. } => "failed",
            StepEvent::AttemptTimedOut => "attempt_timed_out",
            StepEvent::TimedOut => "timed_out",
            StepEvent::Skipped => "skipped",
            StepEvent::Cancelled => "cancelled",
        }
    }
}

/// The result of applying a step event.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// The new record.
    Applied(StepRecord),
    /// The step had already ended; nothing changes (a duplicate or late delivery).
    AlreadyTerminal,
}

/// A transition the state machines do not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IllegalTransition {
    /// `event` makes no sense for a step in status `from`.
    #[error("step {service}: {event} is not allowed while {from}")]
    Step {
        /// The step.
        service: ServiceSlug,
        /// Its status.
        from: StepStatus,
        /// The event's name.
        event: &'static str,
    },
    /// A retrying step dispatched before its backoff ended.
    #[error("step {service}: retry is not due until {next_attempt_at} (now {now})")]
    RetryNotDue {
        /// The step.
        service: ServiceSlug,
        /// When it may be dispatched.
        next_attempt_at: Millis,
        /// The `now` given.
        now: Millis,
    },
    /// The record and the spec are different steps.
    #[error("step record {record} applied with the spec of {spec}")]
    SpecMismatch {
        /// The record's service.
        record: ServiceSlug,
        /// The spec's service.
        spec: ServiceSlug,
    },
    /// `event` makes no sense for a run in status `from`.
    #[error("run: {event} is not allowed while {from}")]
    Run {
        /// Its status.
        from: RunStatus,
        /// The event's name.
        event: &'static str,
    },
    /// `Finalized` with a status that is not `completed`, `timeout` or `failed`.
    #[error("run: {status} is not a final status")]
    NotFinal {
        /// The status given.
        status: RunStatus,
    },
}

/// Applies `event` to `step` at `now`. `spec` (the step's plan entry) supplies the attempt
/// timeout and retry policy; `rng` the backoff jitter.
pub fn apply(
    step: &StepRecord,
    event: StepEvent,
    now: Millis,
    spec: &StepSpec,
    rng: &mut dyn RandomSource,
) -> Result<StepOutcome, IllegalTransition> {
    use StepStatus::*;
    let item_of_map =
        spec.is_map() && crate::map::item_of(step.service.as_str()).is_some_and(|(s, _)| s == spec.service.as_str());
    if step.service != spec.service && !item_of_map {
        return Err(IllegalTransition::SpecMismatch { record: step.service.clone(), spec: spec.service.clone() });
    }
    let illegal = |event: &StepEvent| IllegalTransition::Step {
        service: step.service.clone(),
        from: step.status,
        event: event.name(),
    };
    if step.status.is_terminal() {
        return match event {
            StepEvent::Dispatched => Err(illegal(&event)),
            _ => Ok(StepOutcome::AlreadyTerminal),
        };
    }
    let mut next = step.clone();
    match (step.status, event) {
        (Pending, StepEvent::Dispatched) => start_attempt(&mut next, now, spec),
        (Retrying, StepEvent::Dispatched) => {
            if let Some(next_attempt_at) = step.next_attempt_at.filter(|at| now < *at) {
                return Err(IllegalTransition::RetryNotDue { service: step.service.clone(), next_attempt_at, now });
            }
            start_attempt(&mut next, now, spec);
        }
        // A late result of the previous attempt still counts while backing off.
        (Running | Retrying, StepEvent::Succeeded) => next.finish(Completed, now, None),
        // A run step whose child run timed out times out (its child ran to its deadline; a
        // retry would start the same work again).
        (Running, StepEvent::Failed { error }) if spec.is_run() && error.kind == ErrorKind::Timeout => {
            next.finish(Timeout, now, Some((error.kind, error.message)))
        }
        (Running, StepEvent::Failed { error }) => end_attempt(&mut next, error, Failed, now, spec, rng),
        // A failure that must not be retried ends a step even while it backs off (e.g. its
        // task message was dead-lettered); a retryable one changes nothing.
        (Retrying, StepEvent::Failed { error }) if !spec.retry.is_retryable(&error.kind) => {
            next.finish(Failed, now, Some((error.kind, error.message)))
        }
        (Running, StepEvent::AttemptTimedOut) => {
            let error = StepError::new(
                ErrorKind::Timeout,
                format!("attempt {} timed out after {} ms", step.attempts, spec.timeout_ms),
            );
            end_attempt(&mut next, error, Timeout, now, spec, rng);
        }
        (Pending | Running | Retrying, StepEvent::TimedOut) => {
            next.finish(Timeout, now, Some((ErrorKind::Timeout, RUN_DEADLINE_ERROR.to_string())))
        }
        (Pending, StepEvent::Skipped) => next.finish(
            Skipped,
            now,
            Some((ErrorKind::Custom("dependency_failed".into()), DEPENDENCIES_FAILED_ERROR.to_string())),
        ),
        (Pending | Running | Retrying, StepEvent::Cancelled) => {
            next.finish(Cancelled, now, Some((ErrorKind::Custom("cancelled".into()), CANCELLED_ERROR.to_string())))
        }
        (_, event) => return Err(illegal(&event)),
    }
    Ok(StepOutcome::Applied(next))
}

fn start_attempt(next: &mut StepRecord, now: Millis, spec: &StepSpec) {
    next.status = StepStatus::Running;
    next.attempts = next.attempts.saturating_add(1);
    next.started_at = next.started_at.or(Some(now));
    next.deadline_at = Some(now.saturating_add(spec.timeout_ms));
    next.next_attempt_at = None;
    next.heartbeat_at = None;
    next.record_error(None);
}

/// A failed attempt: back off if the policy allows another, else end in `exhausted`.
fn end_attempt(
    next: &mut StepRecord,
    error: StepError,
    exhausted: StepStatus,
    now: Millis,
    spec: &StepSpec,
    rng: &mut dyn RandomSource,
) {
    match spec.retry.delay_after(next.attempts.saturating_sub(next.attempt_base), &error.kind, rng) {
        Some(delay) => {
            next.status = StepStatus::Retrying;
            next.deadline_at = None;
            next.next_attempt_at = Some(now.saturating_add(delay));
            next.record_error(Some((error.kind, error.message)));
        }
        None => next.finish(exhausted, now, Some((error.kind, error.message))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::{RetryPolicy, SplitMix64};

    fn spec() -> StepSpec {
        StepSpec { timeout_ms: 1000, ..StepSpec::new("svc".parse().unwrap()) }
    }

    fn record(status: StepStatus, attempts: u32) -> StepRecord {
        StepRecord { status, attempts, ..StepRecord::pending("svc".parse().unwrap()) }
    }

    /// Applies `event` at t=100 and compares the outcome with `expected`:
    /// `Ok(Some(status))` applied, `Ok(None)` already terminal, `Err(())` illegal.
    fn check(from: StepRecord, event: StepEvent, expected: Result<Option<StepStatus>, ()>) {
        let outcome = apply(&from, event.clone(), Millis::new(100), &spec(), &mut SplitMix64::new(7));
        let got = match outcome {
            Ok(StepOutcome::Applied(next)) => Ok(Some(next.status)),
            Ok(StepOutcome::AlreadyTerminal) => Ok(None),
            Err(_) => Err(()),
        };
        assert_eq!(got, expected, "{:?} + {event:?}", from.status);
    }

    #[test]
    fn a_run_step_whose_child_timed_out_times_out_without_a_retry() {
        let child = crate::plan::ChildSpec {
            plan_id: "deep".parse().unwrap(),
            parameters: Default::default(),
            parameters_from: Default::default(),
        };
        let run = StepSpec { child: Some(child), ..spec() };
        let timed_out = StepError::new(ErrorKind::Timeout, "child run r1 ended timeout");
        let apply_to = |spec: &StepSpec| {
            let event = StepEvent::Failed { error: timed_out.clone() };
            match apply(&record(StepStatus::Running, 1), event, Millis::new(100), spec, &mut SplitMix64::new(7)) {
                Ok(StepOutcome::Applied(next)) => next.status,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(apply_to(&run), StepStatus::Timeout);
        assert_eq!(apply_to(&spec()), StepStatus::Retrying, "a service's reported timeout is retried as before");
    }

    #[test]
    fn step_transition_table() {
        use StepStatus::*;
        let transient = StepEvent::Failed { error: StepError::transient("503") };
        let permanent = StepEvent::Failed { error: StepError::permanent("400") };
        check(record(Pending, 0), StepEvent::Dispatched, Ok(Some(Running)));
        check(record(Pending, 0), StepEvent::Skipped, Ok(Some(Skipped)));
        check(record(Pending, 0), StepEvent::TimedOut, Ok(Some(Timeout)));
        check(record(Pending, 0), StepEvent::Cancelled, Ok(Some(Cancelled)));
        check(record(Pending, 0), StepEvent::Succeeded, Err(()));
        check(record(Pending, 0), transient.clone(), Err(()));
        check(record(Running, 1), StepEvent::Succeeded, Ok(Some(Completed)));
        check(record(Running, 1), transient.clone(), Ok(Some(Retrying)));
        check(record(Running, 3), transient.clone(), Ok(Some(Failed)));
        check(record(Running, 1), permanent.clone(), Ok(Some(Failed)));
        check(record(Running, 1), StepEvent::AttemptTimedOut, Ok(Some(Retrying)));
        check(record(Running, 3), StepEvent::AttemptTimedOut, Ok(Some(Timeout)));
        check(record(Running, 1), StepEvent::TimedOut, Ok(Some(Timeout)));
        check(record(Running, 1), StepEvent::Dispatched, Err(()));
        check(record(Running, 1), StepEvent::Skipped, Err(()));
        check(record(Retrying, 1), StepEvent::Dispatched, Ok(Some(Running)));
        check(record(Retrying, 1), StepEvent::Succeeded, Ok(Some(Completed)));
        check(record(Retrying, 1), transient.clone(), Err(()));
        check(record(Retrying, 1), permanent.clone(), Ok(Some(Failed)));
        check(record(Retrying, 1), StepEvent::TimedOut, Ok(Some(Timeout)));
        check(record(Retrying, 1), StepEvent::Cancelled, Ok(Some(Cancelled)));
        for terminal in [Completed, Failed, Timeout, Skipped, Cancelled] {
            check(record(terminal, 1), StepEvent::Dispatched, Err(()));
            check(record(terminal, 1), StepEvent::Succeeded, Ok(None));
            check(record(terminal, 1), permanent.clone(), Ok(None));
            check(record(terminal, 1), StepEvent::TimedOut, Ok(None));
            check(record(terminal, 1), StepEvent::Cancelled, Ok(None));
        }
    }

    fn applied(outcome: Result<StepOutcome, IllegalTransition>) -> StepRecord {
        match outcome {
            Ok(StepOutcome::Applied(next)) => next,
            other => panic!("expected Applied, got {other:?}"),
        }
    }

    #[test]
    fn dispatch_counts_attempts_and_sets_the_attempt_deadline() {
        let mut rng = SplitMix64::new(1);
        let running =
            applied(apply(&record(StepStatus::Pending, 0), StepEvent::Dispatched, Millis::new(10), &spec(), &mut rng));
        assert_eq!(
            (running.attempts, running.started_at, running.deadline_at),
            (1, Some(Millis::new(10)), Some(Millis::new(1010)))
        );
        let retrying = applied(apply(
            &running,
            StepEvent::Failed { error: StepError::transient("503 Service Unavailable") },
            Millis::new(20),
            &spec(),
            &mut rng,
        ));
        let due = retrying.next_attempt_at.unwrap();
        assert!(due >= Millis::new(20) && due <= Millis::new(1020), "full jitter within the first cap: {due:?}");
        assert_eq!(retrying.error.as_deref(), Some("503 Service Unavailable"));
        assert_eq!(retrying.deadline_at, None);
        let again = applied(apply(&retrying, StepEvent::Dispatched, due, &spec(), &mut rng));
        assert_eq!((again.attempts, again.started_at, again.error.clone()), (2, Some(Millis::new(10)), None));
        let done = applied(apply(&again, StepEvent::Succeeded, Millis::new(5000), &spec(), &mut rng));
        assert_eq!(done.duration_ms(), Some(4990));
        assert_eq!(done.finished_at, Some(Millis::new(5000)));
    }

    #[test]
    fn an_attempt_expires_at_its_deadline_or_when_its_heartbeats_stop() {
        let heartbeat = StepSpec { timeout_ms: 10_000, heartbeat_timeout_ms: Some(2_000), ..spec() };
        let dispatched = applied(apply(
            &record(StepStatus::Pending, 0),
            StepEvent::Dispatched,
            Millis::new(1_000),
            &heartbeat,
            &mut SplitMix64::new(7),
        ));
        assert_eq!(dispatched.expires_at(&spec()), Some(Millis::new(11_000)), "no heartbeats asked for");
        assert_eq!(dispatched.expires_at(&heartbeat), Some(Millis::new(3_000)), "none yet: from dispatch");
        let beating = StepRecord { heartbeat_at: Some(Millis::new(5_000)), ..dispatched.clone() };
        assert_eq!(beating.expires_at(&heartbeat), Some(Millis::new(7_000)));
        let late = StepRecord { heartbeat_at: Some(Millis::new(9_500)), ..dispatched.clone() };
        assert_eq!(late.expires_at(&heartbeat), Some(Millis::new(11_000)), "never past the attempt's deadline");
        let retried = applied(apply(
            &StepRecord { status: StepStatus::Retrying, ..late },
            StepEvent::Dispatched,
            Millis::new(20_000),
            &heartbeat,
            &mut SplitMix64::new(7),
        ));
        assert_eq!(retried.heartbeat_at, None, "a new attempt starts without heartbeats");
        assert_eq!(record(StepStatus::Retrying, 1).expires_at(&heartbeat), None);
    }

    #[test]
    fn an_attempt_is_given_up_on_at_its_expiry_or_the_runs_deadline_whichever_comes_first() {
        let dispatched = StepRecord { deadline_at: Some(Millis::new(11_000)), ..record(StepStatus::Running, 2) };
        assert_eq!(dispatched.gives_up_at(&spec(), Millis::new(8_000)), Some(Millis::new(8_000)), "the run ends first");
        assert_eq!(
            dispatched.gives_up_at(&spec(), Millis::new(20_000)),
            Some(Millis::new(11_000)),
            "the attempt first"
        );
        assert_eq!(record(StepStatus::Retrying, 1).gives_up_at(&spec(), Millis::new(8_000)), None, "nothing runs");
    }

    #[test]
    fn early_retry_dispatch_is_refused() {
        let retrying = StepRecord { next_attempt_at: Some(Millis::new(500)), ..record(StepStatus::Retrying, 1) };
        let error =
            apply(&retrying, StepEvent::Dispatched, Millis::new(499), &spec(), &mut SplitMix64::new(1)).unwrap_err();
        assert!(matches!(error, IllegalTransition::RetryNotDue { .. }), "{error:?}");
    }

    #[test]
    fn skipped_step_records_the_seed_error_text() {
        let skipped = applied(apply(
            &record(StepStatus::Pending, 0),
            StepEvent::Skipped,
            Millis::new(1),
            &spec(),
            &mut SplitMix64::new(1),
        ));
        assert_eq!(skipped.error.as_deref(), Some("Dependencies failed or timed out"));
        assert_eq!(skipped.duration_ms(), None);
    }

    #[test]
    fn listed_error_kinds_fail_without_retry() {
        let spec = StepSpec {
            retry: RetryPolicy { non_retryable_error_kinds: vec!["rate_limited".into()], ..RetryPolicy::default() },
            ..spec()
        };
        let failed = applied(apply(
            &record(StepStatus::Running, 1),
            StepEvent::Failed { error: StepError::new(ErrorKind::RateLimited, "429") },
            Millis::new(1),
            &spec,
            &mut SplitMix64::new(1),
        ));
        assert_eq!((failed.status, failed.error_kind), (StepStatus::Failed, Some(ErrorKind::RateLimited)));
    }

    #[test]
    fn long_error_messages_are_cut() {
        let failed = applied(apply(
            &record(StepStatus::Running, 1),
            StepEvent::Failed { error: StepError::permanent("x".repeat(5000)) },
            Millis::new(1),
            &spec(),
            &mut SplitMix64::new(1),
        ));
        assert_eq!(failed.error.unwrap().chars().count(), MAX_ERROR_MESSAGE_CHARS);
    }

    #[test]
    fn mismatched_spec_is_refused() {
        let other = StepRecord::pending("other".parse().unwrap());
        let error = apply(&other, StepEvent::Dispatched, Millis::new(1), &spec(), &mut SplitMix64::new(1)).unwrap_err();
        assert!(matches!(error, IllegalTransition::SpecMismatch { .. }));
    }

    fn check_run(from: RunStatus, event: RunEvent, expected: Result<Option<RunStatus>, ()>) {
        let got = match from.apply(event) {
            Ok(RunOutcome::Applied(status)) => Ok(Some(status)),
            Ok(RunOutcome::AlreadyTerminal) => Ok(None),
            Err(_) => Err(()),
        };
        assert_eq!(got, expected, "{from:?} + {event:?}");
    }

    #[test]
    fn run_transition_table() {
        use RunStatus::*;
        let finalize = |status| RunEvent::Finalized { status };
        check_run(Started, RunEvent::Dispatched, Ok(Some(Running)));
        check_run(Running, RunEvent::Dispatched, Ok(Some(Running)));
        check_run(Started, RunEvent::Claimed, Err(()));
        check_run(Running, RunEvent::Claimed, Ok(Some(Aggregating)));
        check_run(Aggregating, RunEvent::Claimed, Err(()));
        check_run(Aggregating, RunEvent::Dispatched, Err(()));
        check_run(Aggregating, finalize(Completed), Ok(Some(Completed)));
        check_run(Aggregating, finalize(Timeout), Ok(Some(Timeout)));
        check_run(Aggregating, finalize(Failed), Ok(Some(Failed)));
        check_run(Aggregating, finalize(Running), Err(()));
        check_run(Running, finalize(Completed), Err(()));
        check_run(Started, RunEvent::Failed, Ok(Some(Failed)));
        check_run(Running, RunEvent::Failed, Ok(Some(Failed)));
        check_run(Aggregating, RunEvent::Failed, Ok(Some(Failed)));
        for from in [Started, Running, Paused, Aggregating] {
            check_run(from, RunEvent::Cancelled, Ok(Some(Cancelled)));
        }
        check_run(Started, RunEvent::Paused, Ok(Some(Paused)));
        check_run(Running, RunEvent::Paused, Ok(Some(Paused)));
        check_run(Paused, RunEvent::Paused, Err(()));
        check_run(Aggregating, RunEvent::Paused, Err(()));
        check_run(Paused, RunEvent::Resumed, Ok(Some(Running)));
        check_run(Running, RunEvent::Resumed, Err(()));
        check_run(Paused, RunEvent::Dispatched, Err(()));
        check_run(Paused, RunEvent::Claimed, Ok(Some(Aggregating)));
        check_run(Paused, RunEvent::Failed, Ok(Some(Failed)));
        for terminal in [Completed, Failed, Timeout, Cancelled] {
            check_run(terminal, RunEvent::Paused, Err(()));
            check_run(terminal, RunEvent::Resumed, Err(()));
            check_run(terminal, RunEvent::Dispatched, Err(()));
            check_run(terminal, RunEvent::Claimed, Err(()));
            check_run(terminal, finalize(Completed), Ok(None));
            check_run(terminal, RunEvent::Failed, Ok(None));
            check_run(terminal, RunEvent::Cancelled, Ok(None));
        }
    }

    #[test]
    fn statuses_round_trip_through_text() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>(), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for status in StepStatus::ALL {
            assert_eq!(status.as_str().parse::<StepStatus>(), Ok(status));
            assert_eq!(serde_json::from_value::<StepStatus>(status.as_str().into()).unwrap(), status);
        }
        assert_eq!(
            "Running".parse::<RunStatus>(),
            Err(ParseStatusError { what: "run status", value: "Running".into() })
        );
        assert_eq!("done".parse::<StepStatus>().unwrap_err().to_string(), "unknown step status \"done\"");
    }

    #[test]
    fn error_kinds_keep_unknown_texts() {
        for kind in ["transient", "permanent", "rate_limited", "rejected", "timeout", "quota_exceeded"] {
            assert_eq!(ErrorKind::from(kind).as_str(), kind);
        }
        assert_eq!(ErrorKind::from("quota_exceeded"), ErrorKind::Custom("quota_exceeded".into()));
        let json = serde_json::to_string(&StepError::permanent("no key")).unwrap();
        assert_eq!(json, r#"{"kind":"permanent","message":"no key"}"#);
    }
}
