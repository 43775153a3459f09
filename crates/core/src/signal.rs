//! Events delivered to a run for its wait steps (`POST /api/orchestration/runs/:run_id/events/:name`):
//! whether one is taken. An event is kept (once per run and name) if the run is still open,
//! one of its plan's wait steps waits for that name, and its payload holds the wait's `match`;
//! otherwise it is refused, naming why, and nothing is kept. The wait takes it when it is
//! waiting, or the moment it starts ([`crate::lifecycle::Event::Arrived`]).

use serde_json::Value;

use crate::lifecycle::OPEN;
use crate::plan::{is_event_name, Plan, StepSpec};
use crate::state::RunStatus;

/// Largest payload kept, in bytes of its JSON text.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Why an event is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventRefused {
    /// The name is not `[a-z0-9_.-]{1,64}`.
    #[error("event name {0:?} is not [a-z0-9_.-]{{1,64}}")]
    BadName(String),
    /// The run has ended, or every step has and its analysis has begun.
    #[error("the run is {0}: its steps no longer wait for events")]
    Closed(RunStatus),
    /// No wait step of the plan waits for it.
    #[error("no step of plan {plan} waits for event {event:?} (it waits for: {waits})")]
    NoWait {
        /// The plan.
        plan: String,
        /// The event.
        event: String,
        /// The events its waits wait for, comma-separated (`none` if it has no wait).
        waits: String,
    },
    /// The payload lacks a field of the wait's `match`, or holds another value.
    #[error("the payload does not match step {step}'s condition: {field} must be {expected}")]
    Mismatch {
        /// The wait step.
        step: String,
        /// The field.
        field: String,
        /// Its value in the condition, as JSON.
        expected: String,
    },
    /// The payload is larger than [`MAX_PAYLOAD_BYTES`].
    #[error("the payload is {0} bytes, at most {MAX_PAYLOAD_BYTES} allowed")]
    TooLarge(usize),
}

impl EventRefused {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            EventRefused::BadName(_) => "invalid_event",
            EventRefused::Closed(_) => "run_ended",
            EventRefused::NoWait { .. } => "no_such_wait",
            EventRefused::Mismatch { .. } => "payload_mismatch",
            EventRefused::TooLarge(_) => "payload_too_large",
        }
    }
}

/// The wait step that takes event `name` with `payload` on a run in `status` of `plan`, or
/// why the event is refused.
pub fn accept<'p>(
    plan: &'p Plan,
    status: RunStatus,
    name: &str,
    payload: &Value,
) -> Result<&'p StepSpec, EventRefused> {
    if !is_event_name(name) {
        return Err(EventRefused::BadName(name.chars().take(100).collect()));
    }
    if !OPEN.contains(&status) {
        return Err(EventRefused::Closed(status));
    }
    let Some(step) = plan.wait_for(name) else {
        let waits: Vec<&str> = plan.steps().iter().filter_map(|s| s.wait.as_ref()).map(|w| w.event.as_str()).collect();
        return Err(EventRefused::NoWait {
            plan: plan.plan_id().to_string(),
            event: name.to_string(),
            waits: if waits.is_empty() { "none".to_string() } else { waits.join(", ") },
        });
    };
    let size = payload.to_string().len();
    if size > MAX_PAYLOAD_BYTES {
        return Err(EventRefused::TooLarge(size));
    }
    if let Some((field, expected)) = step.wait.as_ref().and_then(|w| w.mismatch(payload)) {
        return Err(EventRefused::Mismatch {
            step: step.service.to_string(),
            field: field.to_string(),
            expected: expected.to_string(),
        });
    }
    Ok(step)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::{validate, PlanDraft, StepDraft};

    fn plan() -> Plan {
        let wait = StepDraft {
            kind: Some("wait".into()),
            event: Some("approval".into()),
            matches: json!({"approved": true}).as_object().cloned(),
            ..StepDraft::new("approve")
        };
        validate(&PlanDraft {
            plan_id: "p".into(),
            name: "P".into(),
            description: String::new(),
            max_run_duration_ms: 60_000,
            services: vec![StepDraft::new("a"), wait],
            min_completed: None,
        })
        .expect("valid")
    }

    #[test]
    fn an_event_is_taken_by_its_wait_or_refused_naming_why() {
        let p = plan();
        let ok = accept(&p, RunStatus::Running, "approval", &json!({"approved": true}));
        assert_eq!(ok.map(|s| s.service.as_str()), Ok("approve"));
        assert!(accept(&p, RunStatus::Paused, "approval", &json!({"approved": true})).is_ok());
        let code = |r: Result<&StepSpec, EventRefused>| r.err().map(|e| e.code());
        assert_eq!(code(accept(&p, RunStatus::Running, "Nope!", &json!(null))), Some("invalid_event"));
        assert_eq!(code(accept(&p, RunStatus::Completed, "approval", &json!({}))), Some("run_ended"));
        assert_eq!(code(accept(&p, RunStatus::Aggregating, "approval", &json!({}))), Some("run_ended"));
        let none = accept(&p, RunStatus::Running, "other", &json!({})).unwrap_err();
        assert_eq!(none.to_string(), "no step of plan p waits for event \"other\" (it waits for: approval)");
        let mismatch = accept(&p, RunStatus::Running, "approval", &json!({"approved": false})).unwrap_err();
        assert_eq!(mismatch.to_string(), "the payload does not match step approve's condition: approved must be true");
        let big = json!({"approved": true, "blob": "x".repeat(MAX_PAYLOAD_BYTES)});
        assert_eq!(code(accept(&p, RunStatus::Running, "approval", &big)), Some("payload_too_large"));
    }
}
