//! Structured logs: one JSON line per lifecycle transition, one schema, written by the engine
//! where it acts (never by handlers):
//!
//! ```json
//! {"ts": "2026-11-30T16:00:00.000Z", "level": "info", "event": "step_completed",
//!  "run_id": "run_…", "service": "technical-seo", "attempt": 1, "worker": "technical_seo",
//!  "duration_ms": 412, "error": null}
//! ```
//!
//! `event` is one of [`Event`]'s names; `worker` is the worker key of the service the step
//! calls. Workers Logs (`[observability]`) index every field.

use baton_core::time::Millis;
use serde_json::json;

use crate::clock;

/// A lifecycle transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A run was started.
    RunStarted,
    /// An attempt was dispatched.
    StepDispatched,
    /// A consumer claimed an attempt to run it.
    StepClaimed,
    /// A step completed.
    StepCompleted,
    /// A step failed for good.
    StepFailed,
    /// An attempt failed or timed out and will be retried.
    StepRetrying,
    /// A step timed out for good.
    StepTimedOut,
    /// A step was skipped (a dependency did not complete).
    StepSkipped,
    /// A step was cancelled.
    StepCancelled,
    /// The fan-in was claimed.
    FanInClaimed,
    /// The analysis began.
    AnalysisStarted,
    /// The analysis was written.
    AnalysisFinished,
    /// A run ended.
    RunFinished,
    /// A timer fired.
    TimerFired,
    /// A message reached a dead-letter queue.
    DeadLettered,
}

impl Event {
    /// The `event` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::RunStarted => "run_started",
            Event::StepDispatched => "step_dispatched",
            Event::StepClaimed => "step_claimed",
            Event::StepCompleted => "step_completed",
            Event::StepFailed => "step_failed",
            Event::StepRetrying => "step_retrying",
            Event::StepTimedOut => "step_timed_out",
            Event::StepSkipped => "step_skipped",
            Event::StepCancelled => "step_cancelled",
            Event::FanInClaimed => "fan_in_claimed",
            Event::AnalysisStarted => "analysis_started",
            Event::AnalysisFinished => "analysis_finished",
            Event::RunFinished => "run_finished",
            Event::TimerFired => "timer_fired",
            Event::DeadLettered => "dead_lettered",
        }
    }

    fn level(self) -> &'static str {
        match self {
            Event::StepFailed | Event::StepTimedOut | Event::DeadLettered => "warn",
            _ => "info",
        }
    }
}

/// One line: the event and what it is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Line<'a> {
    /// The run.
    pub run_id: &'a str,
    /// The step, if it is about one.
    pub service: Option<&'a str>,
    /// The attempt, if it is about one.
    pub attempt: Option<u32>,
    /// The worker key of the step's service.
    pub worker: Option<&'a str>,
    /// How long what ended took.
    pub duration_ms: Option<u64>,
    /// Why it failed, or what ended it.
    pub error: Option<&'a str>,
}

impl<'a> Line<'a> {
    /// A line about a run.
    pub fn run(run_id: &'a str) -> Self {
        Line { run_id, ..Line::default() }
    }
}

/// Writes `line` as `event`.
pub fn emit(event: Event, line: &Line<'_>) {
    let text = json!({
        "ts": Millis::new(clock::now_ms()).to_rfc3339(),
        "level": event.level(),
        "event": event.as_str(),
        "run_id": line.run_id,
        "service": line.service,
        "attempt": line.attempt,
        "worker": line.worker,
        "duration_ms": line.duration_ms,
        "error": line.error,
    })
    .to_string();
    // One stream for every level, so the lines stay in order; `level` says which.
    worker::console_log!("{text}");
}
