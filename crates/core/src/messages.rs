//! The only shapes sent on queues. Each carries `v` (currently 1) so a consumer can tell a
//! message it does not understand from a malformed one; the one exception is the analysis
//! message in its original shape (`{"traceId": ...}` alone), read as version 1. Decoding never
//! panics: a bad body is a typed [`MessageError`], which the consumer records and acks (a
//! poison message).
//!
//! `baton-tasks` carries two kinds: [`TaskMessage`] (run an attempt) and [`TimerMessage`]
//! (look at a run when something about it falls due); [`TasksQueueMessage::decode`] tells
//! them apart by the `timer` field.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{RunId, ServiceSlug};
use crate::time::Millis;

/// The message version this crate writes and reads.
pub const MESSAGE_VERSION: u32 = 1;

/// Dispatch one attempt of one step (queue `baton-tasks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMessage {
    /// Always [`MESSAGE_VERSION`].
    pub v: u32,
    /// The run.
    pub run_id: RunId,
    /// The step.
    pub service: ServiceSlug,
    /// Which attempt this is (1-based); a consumer ignores a message for an attempt that is
    /// not the step's current one.
    pub attempt: u32,
}

impl TaskMessage {
    /// A version-1 task message.
    pub fn new(run_id: RunId, service: ServiceSlug, attempt: u32) -> Self {
        TaskMessage { v: MESSAGE_VERSION, run_id, service, attempt }
    }

    /// Decodes a queue body.
    pub fn decode(body: &Value) -> Result<Self, MessageError> {
        let message: TaskMessage = decode_versioned(MessageType::Task, body)?;
        if message.attempt == 0 {
            return Err(MessageError::InvalidField {
                message: MessageType::Task,
                field: "attempt",
                reason: "must be at least 1".into(),
            });
        }
        Ok(message)
    }

    /// Decodes a queue body given as text.
    pub fn decode_str(body: &str) -> Result<Self, MessageError> {
        TaskMessage::decode(&parse(MessageType::Task, body)?)
    }
}

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// The run's own deadline.
    RunDeadline,
    /// An attempt's deadline (its timeout, or its heartbeat timeout).
    AttemptDeadline,
    /// Time to ask a service how an attempt it accepted is going.
    Progress,
    /// Tell a service that the attempt it works on was cancelled (due at once).
    Cancelled,
}

impl TimerKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::RunDeadline => "run_deadline",
            TimerKind::AttemptDeadline => "attempt_deadline",
            TimerKind::Progress => "progress",
            TimerKind::Cancelled => "cancelled",
        }
    }
}

/// Look at a run when something about it falls due (queue `baton-tasks`, sent with a delay).
/// A timer that fires on a run or attempt that has moved on does nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerMessage {
    /// Always [`MESSAGE_VERSION`].
    pub v: u32,
    /// What it is for.
    pub timer: TimerKind,
    /// The run.
    pub run_id: RunId,
    /// The step, for attempt timers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSlug>,
    /// The attempt, for attempt timers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// When it is due (ms since the epoch).
    pub due_at: u64,
}

impl TimerMessage {
    /// A timer for the run's own deadline.
    pub fn run_deadline(run_id: RunId, due_at: Millis) -> Self {
        TimerMessage {
            v: MESSAGE_VERSION,
            timer: TimerKind::RunDeadline,
            run_id,
            service: None,
            attempt: None,
            due_at: due_at.as_u64(),
        }
    }

    /// A timer about attempt `attempt` of `service`.
    pub fn attempt(kind: TimerKind, run_id: RunId, service: ServiceSlug, attempt: u32, due_at: Millis) -> Self {
        TimerMessage {
            v: MESSAGE_VERSION,
            timer: kind,
            run_id,
            service: Some(service),
            attempt: Some(attempt),
            due_at: due_at.as_u64(),
        }
    }

    /// When it is due.
    pub fn due(&self) -> Millis {
        Millis::new(self.due_at)
    }

    /// The same timer, due at `at`.
    pub fn at(&self, at: Millis) -> Self {
        TimerMessage { due_at: at.as_u64(), ..self.clone() }
    }
}

/// A queue can hold a message for at most this long (Cloudflare Queues' `delaySeconds`
/// limit: 12 hours); a timer due later is sent for this long and sent again when it fires.
pub const MAX_DELAY_SECONDS: u32 = 12 * 60 * 60;

/// A timer fired this close to its due time waits out the rest in the consumer.
pub const TIMER_WAIT_LIMIT_MS: u64 = 2_000;

/// The delay to send a timer due at `due` with, at `now`: whole seconds rounded down (the
/// consumer waits out the fraction), at most [`MAX_DELAY_SECONDS`].
pub fn timer_delay_seconds(due: Millis, now: Millis) -> u32 {
    (due.since(now) / 1000).min(u64::from(MAX_DELAY_SECONDS)) as u32
}

/// What a fired timer should do at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerFiring {
    /// It is due: act.
    Act,
    /// It is due within [`TIMER_WAIT_LIMIT_MS`]: wait this many ms, then act.
    WaitThenAct(u64),
    /// It came early (a long timer): send it again.
    Rearm,
}

/// How a timer due at `due` that fires at `now` proceeds.
pub fn timer_firing(due: Millis, now: Millis) -> TimerFiring {
    match due.since(now) {
        0 => TimerFiring::Act,
        wait if wait <= TIMER_WAIT_LIMIT_MS => TimerFiring::WaitThenAct(wait),
        _ => TimerFiring::Rearm,
    }
}

/// The least time between two firings of a run's own timer.
pub const RUN_TIMER_MIN_GAP_MS: u64 = 1_000;

/// When a run's own timer (`run_deadline`) is due: at the run's deadline, or sooner just after
/// the first expiry among `unwatched` — attempts nothing else brings back if the invocation
/// running them dies (claimed and run in place, with no task message of their own). Such a look
/// is due a whole number of seconds from `now` (rounded up: it never waits out a fraction,
/// holding up the timers behind it), and never sooner than [`RUN_TIMER_MIN_GAP_MS`], so a look
/// that leaves the attempt running (its expiry moved) does not fire again at once.
pub fn run_timer_due(deadline: Millis, unwatched: impl IntoIterator<Item = Millis>, now: Millis) -> Millis {
    let look_at = |expiry: Millis| {
        let wait = expiry.since(now).max(RUN_TIMER_MIN_GAP_MS).div_ceil(1000) * 1000;
        now.saturating_add(wait)
    };
    unwatched.into_iter().map(look_at).fold(deadline, Millis::min)
}

/// How long to wait between two questions to a service about an attempt it accepted: a
/// quarter of its own estimate, between 1 and 10 s, and at most a third of the step's
/// heartbeat timeout, so that a missed heartbeat is noticed in time and one question that
/// comes late (a busy queue) does not by itself lose the window.
pub fn progress_poll_interval_ms(estimated_completion_ms: Option<u64>, heartbeat_timeout_ms: Option<u64>) -> u64 {
    let interval = (estimated_completion_ms.unwrap_or(4_000) / 4).clamp(1_000, 10_000);
    heartbeat_timeout_ms.map_or(interval, |h| interval.min((h / 3).max(250)))
}

/// A message on `baton-tasks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TasksQueueMessage {
    /// Run an attempt.
    Task(TaskMessage),
    /// Look at a run.
    Timer(TimerMessage),
}

impl TasksQueueMessage {
    /// Decodes a `baton-tasks` body: a timer if it has a `timer` field, else a task.
    pub fn decode(body: &Value) -> Result<Self, MessageError> {
        if body.get("timer").is_some() {
            return decode_versioned(MessageType::Timer, body).map(TasksQueueMessage::Timer);
        }
        TaskMessage::decode(body).map(TasksQueueMessage::Task)
    }
}

impl From<TaskMessage> for TasksQueueMessage {
    fn from(task: TaskMessage) -> Self {
        TasksQueueMessage::Task(task)
    }
}

impl From<TimerMessage> for TasksQueueMessage {
    fn from(timer: TimerMessage) -> Self {
        TasksQueueMessage::Timer(timer)
    }
}

/// Analyse a run whose fan-in was claimed (queue `llm-analysis`). `traceId` is the run id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisMessage {
    /// Always [`MESSAGE_VERSION`].
    pub v: u32,
    /// The run (`traceId` on the wire, as the poller's design names it).
    #[serde(rename = "traceId")]
    pub trace_id: RunId,
    /// Whether some steps did not complete (absent → false).
    #[serde(default)]
    pub partial: bool,
    /// The steps that did not complete (absent → empty).
    #[serde(default)]
    pub missing: Vec<ServiceSlug>,
}

impl AnalysisMessage {
    /// A version-1 analysis message.
    pub fn new(trace_id: RunId, partial: bool, missing: Vec<ServiceSlug>) -> Self {
        AnalysisMessage { v: MESSAGE_VERSION, trace_id, partial, missing }
    }

    /// Decodes a queue body. A body without `v` whose only field is `traceId` is the
    /// original shape of this message and reads as "analyse this run".
    pub fn decode(body: &Value) -> Result<Self, MessageError> {
        if let Value::Object(fields) = body {
            if !fields.contains_key("v") && fields.contains_key("traceId") {
                let mut versioned = fields.clone();
                versioned.insert("v".into(), Value::from(MESSAGE_VERSION));
                return decode_versioned(MessageType::Analysis, &Value::Object(versioned));
            }
        }
        decode_versioned(MessageType::Analysis, body)
    }

    /// Decodes a queue body given as text.
    pub fn decode_str(body: &str) -> Result<Self, MessageError> {
        AnalysisMessage::decode(&parse(MessageType::Analysis, body)?)
    }
}

/// Which message an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// [`TaskMessage`].
    Task,
    /// [`AnalysisMessage`].
    Analysis,
    /// [`TimerMessage`].
    Timer,
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MessageType::Task => "task message",
            MessageType::Analysis => "analysis message",
            MessageType::Timer => "timer message",
        })
    }
}

/// A queue body that is not a message this crate understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not JSON, not an object, or missing/mistyped fields.
    #[error("malformed {message}: {reason}")]
    Malformed {
        /// Which message.
        message: MessageType,
        /// What is wrong (the decoder's words).
        reason: String,
    },
    /// `v` missing or not a number.
    #[error("{message} has no numeric version field v")]
    MissingVersion {
        /// Which message.
        message: MessageType,
    },
    /// A version this crate does not read.
    #[error("{message} has version {found}, expected {MESSAGE_VERSION}")]
    UnsupportedVersion {
        /// Which message.
        message: MessageType,
        /// The version found.
        found: u64,
    },
    /// A field with an invalid value.
    #[error("{message}: {field} {reason}")]
    InvalidField {
        /// Which message.
        message: MessageType,
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn parse(message: MessageType, body: &str) -> Result<Value, MessageError> {
    serde_json::from_str(body).map_err(|e| MessageError::Malformed { message, reason: e.to_string() })
}

fn decode_versioned<T: DeserializeOwned>(message: MessageType, body: &Value) -> Result<T, MessageError> {
    let Value::Object(fields) = body else {
        return Err(MessageError::Malformed { message, reason: "not a JSON object".into() });
    };
    let version = fields.get("v").and_then(Value::as_u64).ok_or(MessageError::MissingVersion { message })?;
    if version != u64::from(MESSAGE_VERSION) {
        return Err(MessageError::UnsupportedVersion { message, found: version });
    }
    T::deserialize(body).map_err(|e| MessageError::Malformed { message, reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run_id() -> RunId {
        "run_1732350000000_a1b2c3d4e5f60718".parse().unwrap()
    }

    #[test]
    fn run_timer_is_due_at_the_deadline_or_the_first_unwatched_expiry() {
        let now = Millis::new(10_000);
        let deadline = Millis::new(300_000);
        assert_eq!(run_timer_due(deadline, [], now), deadline);
        let expiries = [Millis::new(70_000), Millis::new(65_000), Millis::new(400_000)];
        assert_eq!(run_timer_due(deadline, expiries, now), Millis::new(65_000));
        // A whole number of seconds from now, rounded up.
        assert_eq!(run_timer_due(deadline, [Millis::new(11_990)], now), Millis::new(12_000));
        assert_eq!(run_timer_due(deadline, [Millis::new(12_001)], now), Millis::new(13_000));
        // An expiry already past (or about to be) is looked at after the least gap.
        assert_eq!(run_timer_due(deadline, [Millis::new(9_000)], now), Millis::new(11_000));
        // Never later than the deadline, even one sooner than the gap.
        assert_eq!(run_timer_due(Millis::new(10_500), [Millis::new(9_000)], now), Millis::new(10_500));
    }

    #[test]
    fn task_message_wire_shape() {
        let message = TaskMessage::new(run_id(), "technical-seo".parse().unwrap(), 2);
        let json = serde_json::to_value(&message).unwrap();
        assert_eq!(
            json,
            json!({"v": 1, "run_id": "run_1732350000000_a1b2c3d4e5f60718", "service": "technical-seo", "attempt": 2})
        );
        assert_eq!(TaskMessage::decode(&json).unwrap(), message);
        assert_eq!(TaskMessage::decode_str(&json.to_string()).unwrap(), message);
    }

    #[test]
    fn analysis_message_uses_camel_case_trace_id_and_optional_fields() {
        let message = AnalysisMessage::new(run_id(), true, vec!["vitals-monitor".parse().unwrap()]);
        let json = serde_json::to_value(&message).unwrap();
        assert_eq!(
            json,
            json!({"v": 1, "traceId": "run_1732350000000_a1b2c3d4e5f60718", "partial": true, "missing": ["vitals-monitor"]})
        );
        let minimal =
            AnalysisMessage::decode(&json!({"v": 1, "traceId": "run_1732350000000_a1b2c3d4e5f60718"})).unwrap();
        assert_eq!(minimal, AnalysisMessage::new(run_id(), false, vec![]));
    }

    #[test]
    fn the_original_analysis_message_shape_is_accepted() {
        let seed = AnalysisMessage::decode(&json!({"traceId": "run_1732350000000_a1b2c3d4e5f60718"})).unwrap();
        assert_eq!(seed, AnalysisMessage::new(run_id(), false, vec![]));
        let error = AnalysisMessage::decode(&json!({"trace": "x"})).unwrap_err();
        assert_eq!(error, MessageError::MissingVersion { message: MessageType::Analysis });
    }

    #[test]
    fn timers_and_tasks_share_the_task_queue() {
        let timer = TimerMessage::attempt(
            TimerKind::AttemptDeadline,
            run_id(),
            "technical-seo".parse().unwrap(),
            2,
            Millis::new(1_732_350_012_345),
        );
        let json = serde_json::to_value(TasksQueueMessage::from(timer.clone())).unwrap();
        assert_eq!(
            json,
            json!({"v": 1, "timer": "attempt_deadline", "run_id": "run_1732350000000_a1b2c3d4e5f60718",
                   "service": "technical-seo", "attempt": 2, "due_at": 1_732_350_012_345u64})
        );
        assert_eq!(TasksQueueMessage::decode(&json).unwrap(), TasksQueueMessage::Timer(timer));
        let task = TaskMessage::new(run_id(), "technical-seo".parse().unwrap(), 1);
        let json = serde_json::to_value(TasksQueueMessage::from(task.clone())).unwrap();
        assert_eq!(TasksQueueMessage::decode(&json).unwrap(), TasksQueueMessage::Task(task));
        let bad = TasksQueueMessage::decode(&json!({"v": 1, "timer": "sometime", "run_id": "x"})).unwrap_err();
        assert!(matches!(bad, MessageError::Malformed { message: MessageType::Timer, .. }), "{bad:?}");
    }

    #[test]
    fn timers_are_sent_in_whole_seconds_and_wait_out_the_rest() {
        let now = Millis::new(1_000_000);
        assert_eq!(timer_delay_seconds(Millis::new(1_002_999), now), 2);
        assert_eq!(timer_delay_seconds(Millis::new(999_000), now), 0);
        assert_eq!(timer_delay_seconds(Millis::new(1_000_000 + 100_000_000), now), MAX_DELAY_SECONDS);
        assert_eq!(timer_firing(Millis::new(999_000), now), TimerFiring::Act);
        assert_eq!(timer_firing(Millis::new(1_000_999), now), TimerFiring::WaitThenAct(999));
        assert_eq!(timer_firing(Millis::new(1_003_000), now), TimerFiring::Rearm);
    }

    #[test]
    fn progress_is_asked_for_often_enough_to_see_a_heartbeat() {
        assert_eq!(progress_poll_interval_ms(None, None), 1_000);
        assert_eq!(progress_poll_interval_ms(Some(20_000), None), 5_000);
        assert_eq!(progress_poll_interval_ms(Some(600_000), None), 10_000);
        assert_eq!(progress_poll_interval_ms(Some(600_000), Some(4_000)), 1_333);
        assert_eq!(progress_poll_interval_ms(Some(600_000), Some(2_000)), 666);
        assert_eq!(progress_poll_interval_ms(Some(0), Some(100)), 250);
    }

    fn check_task(body: &str, expected: &str) {
        assert_eq!(TaskMessage::decode_str(body).unwrap_err().to_string(), expected, "{body}");
    }

    #[test]
    fn malformed_messages_give_typed_errors() {
        check_task("not json", "malformed task message: expected ident at line 1 column 2");
        check_task("[1]", "malformed task message: not a JSON object");
        check_task(r#"{"run_id": "x"}"#, "task message has no numeric version field v");
        check_task(r#"{"v": 2}"#, "task message has version 2, expected 1");
        check_task(r#"{"v": 1, "service": "a", "attempt": 1}"#, "malformed task message: missing field `run_id`");
        check_task(
            r#"{"v": 1, "run_id": "nope", "service": "a", "attempt": 1}"#,
            "malformed task message: invalid run id \"nope\": must look like run_{13-digit ms}_{16 hex}[_s{shard}] (or an execution id)",
        );
        check_task(
            r#"{"v": 1, "run_id": "run_1732350000000_a1b2c3d4e5f60718", "service": "a", "attempt": 0}"#,
            "task message: attempt must be at least 1",
        );
        let error = AnalysisMessage::decode(&json!({"v": 1, "traceId": 5})).unwrap_err();
        assert!(matches!(error, MessageError::Malformed { message: MessageType::Analysis, .. }), "{error:?}");
    }
}
