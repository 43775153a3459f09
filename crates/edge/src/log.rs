//! Structured logs: one JSON line per lifecycle transition, one schema, written by the engine
//! where it acts (never by handlers):
//!
//! ```json
//! {"ts": "2026-11-30T16:00:00.000Z", "level": "info", "event": "step_completed",
//!  "run_id": "run_…", "service": "technical-seo", "attempt": 1, "worker": "technical_seo",
//!  "duration_ms": 412, "error": null,
//!  "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}
//! ```
//!
//! `trace_id` is the run's W3C trace id and `span_id` the span the line is about (the
//! attempt's, the step's, the fan-in's, the analysis's or the run's), the same ids the run's
//! calls carry in `traceparent` ([`baton_core::trace`]), so a service's own logs join Baton's.
//!
//! `event` is one of [`Event`]'s names; `worker` is the worker key of the service the step
//! calls. Workers Logs (`[observability]`) index every field.
//!
//! `LOG_LEVEL` ([`configure`]) sets the least level written: `info` by default, which leaves
//! out the `debug` lines (an attempt dispatched or claimed, the fan-in claimed, the analysis
//! started or written, a timer fired: each followed by a line that says how it went, a step's
//! or the run's); `debug` writes every transition.
//!
//! While a client waits for a run's answer, the run's lines are held ([`hold`]) and written,
//! in order and with the times they happened, once the answer has left: writing a line costs
//! the invocation's one thread time the answer would otherwise wait for. The platform collects
//! an invocation's lines when it ends, so holding them changes nothing that is collected.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};

use baton_core::time::Millis;
use baton_core::trace::{self, RunTrace, SpanId, SpanOf, TraceId};
use serde_json::json;
use worker::Env;

use crate::clock;

/// A line's level, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

impl Level {
    /// The `level` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// A level by name (`debug`, `info`, `warn`, `error`).
    pub fn parse(text: &str) -> Option<Level> {
        [Level::Debug, Level::Info, Level::Warn, Level::Error].into_iter().find(|l| l.as_str() == text.trim())
    }
}

/// The least level written, for this isolate.
static THRESHOLD: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Reads `LOG_LEVEL` (default `info`; an unknown name is reported once and ignored).
pub fn configure(env: &Env) {
    let level = match crate::settings::log_level(env) {
        None => Level::Info,
        Some(text) => Level::parse(&text).unwrap_or_else(|| {
            worker::console_error!("LOG_LEVEL {text:?} is not one of debug, info, warn, error; using info");
            Level::Info
        }),
    };
    THRESHOLD.store(level as u8, Ordering::Relaxed);
}

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

    /// Its level: `warn` for what failed for good, `debug` for what a later line follows up.
    pub fn level(self) -> Level {
        match self {
            Event::StepFailed | Event::StepTimedOut | Event::DeadLettered => Level::Warn,
            Event::StepDispatched
            | Event::StepClaimed
            | Event::FanInClaimed
            | Event::AnalysisStarted
            | Event::AnalysisFinished
            | Event::TimerFired => Level::Debug,
            _ => Level::Info,
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

/// A line kept until its run's hold ends: what it says, and when it happened.
struct Kept {
    event: Event,
    at: Millis,
    service: Option<String>,
    attempt: Option<u32>,
    worker: Option<String>,
    duration_ms: Option<u64>,
    error: Option<String>,
}

/// A run's hold: how many holders it has, and the lines kept meanwhile.
#[derive(Default)]
struct Held {
    holders: usize,
    lines: Vec<Kept>,
}

thread_local! {
    /// Held runs, by run id.
    static HELD: RefCell<HashMap<String, Held>> = RefCell::new(HashMap::new());
    /// The traces of runs logged or read in this isolate, by run id: a run that joined its
    /// caller's trace has it noted when read; any other run's is derived from its id once.
    static JOINED: RefCell<HashMap<String, TraceId>> = RefCell::new(HashMap::new());
}

/// Most joined traces remembered per isolate (the oldest are forgotten all at once).
const JOINED_KEPT: usize = 4096;

/// Notes the trace of a run read in this isolate, for its lines' `trace_id`.
pub fn note_trace(trace: &RunTrace) {
    if trace.parent.is_none() {
        return;
    }
    remember(&trace.run_id, trace.trace_id);
}

fn remember(run_id: &str, trace_id: TraceId) {
    JOINED.with(|joined| {
        let mut joined = joined.borrow_mut();
        if joined.len() >= JOINED_KEPT {
            joined.clear();
        }
        joined.insert(run_id.to_string(), trace_id);
    });
}

/// The trace id and span id of `line` (about `event`).
fn trace_of(event: Event, line: &Line<'_>) -> (TraceId, SpanId) {
    let trace_id = JOINED.with(|joined| joined.borrow().get(line.run_id).copied()).unwrap_or_else(|| {
        let derived = trace::trace_of_run(line.run_id);
        remember(line.run_id, derived);
        derived
    });
    let span = match (line.service, line.attempt, event) {
        (Some(service), Some(attempt), _) => SpanOf::Attempt(service, attempt),
        (Some(service), None, _) => SpanOf::Step(service),
        (None, _, Event::FanInClaimed) => SpanOf::FanIn,
        (None, _, Event::AnalysisStarted | Event::AnalysisFinished) => SpanOf::Analysis,
        _ => SpanOf::Run,
    };
    (trace_id, span.id(trace_id, line.run_id))
}

/// Holds `run_id`'s lines until the returned guard, and every other guard of that run, is
/// dropped; they are written then, in order.
#[must_use = "the lines are held only while the guard lives"]
pub fn hold(run_id: &str) -> Hold {
    HELD.with(|held| held.borrow_mut().entry(run_id.to_string()).or_default().holders += 1);
    Hold { run_id: run_id.to_string() }
}

/// A run's lines are held while this lives ([`hold`]).
pub struct Hold {
    run_id: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let released = HELD.with(|held| {
            let mut held = held.borrow_mut();
            let entry = held.get_mut(&self.run_id)?;
            entry.holders -= 1;
            match entry.holders {
                0 => held.remove(&self.run_id).map(|entry| entry.lines),
                _ => None,
            }
        });
        for kept in released.into_iter().flatten() {
            let line = Line {
                run_id: &self.run_id,
                service: kept.service.as_deref(),
                attempt: kept.attempt,
                worker: kept.worker.as_deref(),
                duration_ms: kept.duration_ms,
                error: kept.error.as_deref(),
            };
            write(kept.event, kept.at, &line);
        }
    }
}

/// Writes `line` as `event` (or keeps it while its run is held).
pub fn emit(event: Event, line: &Line<'_>) {
    if (event.level() as u8) < THRESHOLD.load(Ordering::Relaxed) {
        return;
    }
    keep_or_write(event, Millis::new(clock::now_ms()), line);
}

/// Keeps `line` if its run is held, else writes it.
fn keep_or_write(event: Event, at: Millis, line: &Line<'_>) {
    let kept = HELD.with(|held| match held.borrow_mut().get_mut(line.run_id) {
        Some(entry) => {
            entry.lines.push(Kept {
                event,
                at,
                service: line.service.map(str::to_string),
                attempt: line.attempt,
                worker: line.worker.map(str::to_string),
                duration_ms: line.duration_ms,
                error: line.error.map(str::to_string),
            });
            true
        }
        None => false,
    });
    if !kept {
        write(event, at, line);
    }
}

fn write(event: Event, at: Millis, line: &Line<'_>) {
    let (trace_id, span_id) = trace_of(event, line);
    let text = json!({
        "ts": at.to_rfc3339(),
        "level": event.level().as_str(),
        "event": event.as_str(),
        "run_id": line.run_id,
        "service": line.service,
        "attempt": line.attempt,
        "worker": line.worker,
        "duration_ms": line.duration_ms,
        "error": line.error,
        "trace_id": trace_id.to_string(),
        "span_id": span_id.to_string(),
    })
    .to_string();
    sink(&text);
}

/// One stream for every level, so the lines stay in order; `level` says which.
#[cfg(not(test))]
fn sink(text: &str) {
    worker::console_log!("{text}");
}

#[cfg(test)]
thread_local! {
    static WRITTEN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
fn sink(text: &str) {
    WRITTEN.with(|written| written.borrow_mut().push(text.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written() -> Vec<serde_json::Value> {
        WRITTEN.with(|w| w.borrow_mut().drain(..).map(|t| serde_json::from_str(&t).unwrap()).collect())
    }

    #[test]
    fn a_held_runs_lines_are_written_in_order_with_their_own_times_when_its_last_hold_ends() {
        let step = |run_id, service| Line { service: Some(service), attempt: Some(1), ..Line::run(run_id) };
        let first = hold("run_a");
        let second = hold("run_a");
        keep_or_write(Event::RunStarted, Millis::new(1_000), &Line::run("run_a"));
        keep_or_write(Event::StepCompleted, Millis::new(1_005), &step("run_b", "seo"));
        keep_or_write(Event::StepCompleted, Millis::new(1_009), &step("run_a", "serp"));
        let now: Vec<_> = written();
        assert_eq!(now.len(), 1, "another run's line is written at once");
        assert_eq!(now[0]["run_id"], "run_b");
        drop(first);
        assert!(written().is_empty(), "held while one hold lives");
        drop(second);
        let later = written();
        let events: Vec<_> = later.iter().map(|l| (l["event"].clone(), l["ts"].clone())).collect();
        assert_eq!(
            events,
            [
                (serde_json::json!("run_started"), serde_json::json!("1970-01-01T00:00:01.000Z")),
                (serde_json::json!("step_completed"), serde_json::json!("1970-01-01T00:00:01.009Z")),
            ]
        );
        assert_eq!(later[1]["service"], "serp");
        let own = trace::trace_of_run("run_a");
        assert_eq!(later[0]["trace_id"], own.to_string());
        assert_eq!(later[0]["span_id"], SpanOf::Run.id(own, "run_a").to_string());
        assert_eq!(later[1]["span_id"], SpanOf::Attempt("serp", 1).id(own, "run_a").to_string());
        keep_or_write(Event::RunFinished, Millis::new(1_020), &Line::run("run_a"));
        assert_eq!(written().len(), 1, "no longer held");
    }

    #[test]
    fn a_run_that_joined_a_trace_logs_with_its_callers_trace_id() {
        let joined = RunTrace::of("run_j", Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), None);
        note_trace(&joined);
        keep_or_write(Event::FanInClaimed, Millis::new(1), &Line::run("run_j"));
        let line = written().remove(0);
        assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(line["span_id"], joined.span(SpanOf::FanIn).to_string());
    }

    #[test]
    fn levels_parse_by_name_and_order_least_first() {
        assert_eq!(Level::parse("debug"), Some(Level::Debug));
        assert_eq!(Level::parse(" warn "), Some(Level::Warn));
        assert_eq!(Level::parse("verbose"), None);
        assert!(Level::Debug < Level::Info && Level::Info < Level::Warn && Level::Warn < Level::Error);
    }

    #[test]
    fn what_a_later_line_follows_up_is_debug_and_what_failed_for_good_is_warn() {
        for event in [
            Event::StepDispatched,
            Event::StepClaimed,
            Event::FanInClaimed,
            Event::AnalysisStarted,
            Event::AnalysisFinished,
            Event::TimerFired,
        ] {
            assert_eq!(event.level(), Level::Debug, "{}", event.as_str());
        }
        for event in
            [Event::RunStarted, Event::StepCompleted, Event::StepRetrying, Event::StepSkipped, Event::RunFinished]
        {
            assert_eq!(event.level(), Level::Info, "{}", event.as_str());
        }
        for event in [Event::StepFailed, Event::StepTimedOut, Event::DeadLettered] {
            assert_eq!(event.level(), Level::Warn, "{}", event.as_str());
        }
    }
}
