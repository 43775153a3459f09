//! Run lifecycle events written to the knowledge base (`kbase_events`): the start and finish
//! payloads (snake_case, RFC 3339 times), their envelope, and their dedupe keys.

use serde::{Deserialize, Serialize};

use crate::ids::{EventId, PlanId, RunId, ServiceSlug, WebsiteId};
use crate::plan::Plan;
use crate::scheduler::records_by_position;
use crate::state::{RunStatus, StepRecord, StepStatus};
use crate::summary::StepCounts;
use crate::time::{rfc3339, Millis};

/// The `type` of lifecycle events.
pub const RUN_STATUS_EVENT_TYPE: &str = "run_status";
/// The `service` that writes lifecycle events (the orchestrator's name in the seed's queries).
pub const ORCHESTRATOR_SERVICE: &str = "orchestrator";

/// Dedupe key of a run's start event: written once however often the start is retried.
pub fn start_dedupe_key(run_id: &RunId) -> String {
    format!("run:{run_id}:start")
}

/// Dedupe key of a run's finish event in its `round` (0, then one more per retry of the run).
pub fn finish_dedupe_key(run_id: &RunId, round: u32) -> String {
    match round {
        0 => format!("run:{run_id}:finish"),
        n => format!("run:{run_id}:finish:{n}"),
    }
}

/// Dedupe key of a run's diagnosis event in its `round`.
pub fn diagnosis_dedupe_key(run_id: &RunId, round: u32) -> String {
    match round {
        0 => format!("run:{run_id}:diagnosis"),
        n => format!("run:{run_id}:diagnosis:{n}"),
    }
}

/// A knowledge-base event: `{website_id, run_id, service, type, payload}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleEvent<P> {
    /// The website.
    pub website_id: WebsiteId,
    /// The run.
    pub run_id: RunId,
    /// Who wrote it ([`ORCHESTRATOR_SERVICE`]).
    pub service: String,
    /// [`RUN_STATUS_EVENT_TYPE`].
    #[serde(rename = "type")]
    pub event_type: String,
    /// The payload.
    pub payload: P,
}

impl<P> LifecycleEvent<P> {
    /// A `run_status` event from the orchestrator.
    pub fn run_status(website_id: WebsiteId, run_id: RunId, payload: P) -> Self {
        LifecycleEvent {
            website_id,
            run_id,
            service: ORCHESTRATOR_SERVICE.to_string(),
            event_type: RUN_STATUS_EVENT_TYPE.to_string(),
            payload,
        }
    }
}

/// The payload of a run's start event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStartedPayload {
    /// Always `started`.
    pub status: RunStatus,
    /// The plan.
    pub plan_id: PlanId,
    /// The plan's name.
    pub plan_name: String,
    /// The domain.
    pub domain: String,
    /// Start.
    #[serde(with = "rfc3339")]
    pub started_at: Millis,
    /// The run's deadline.
    #[serde(with = "rfc3339")]
    pub timeout_at: Millis,
    /// The plan's steps, in plan order.
    pub services_planned: Vec<ServiceSlug>,
    /// The delegate that started the run for its client (see [`crate::delegation`]); absent
    /// when the client started it itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acted_by: Option<String>,
}

impl RunStartedPayload {
    /// The start event of a run of `plan` on `domain`, started at `started_at`, due by
    /// `timeout_at` (see [`crate::fanin::run_deadline`]).
    pub fn new(plan: &Plan, domain: &str, started_at: Millis, timeout_at: Millis) -> Self {
        RunStartedPayload {
            status: RunStatus::Started,
            plan_id: plan.plan_id().clone(),
            plan_name: plan.name().to_string(),
            domain: domain.to_string(),
            started_at,
            timeout_at,
            services_planned: plan.service_slugs(),
            acted_by: None,
        }
    }

    /// The same payload, naming the delegate that started the run for its client.
    pub fn with_acted_by(self, delegate: Option<String>) -> Self {
        RunStartedPayload { acted_by: delegate, ..self }
    }
}

/// One step's line in the finish event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceResult {
    /// The step.
    pub service: ServiceSlug,
    /// Its status.
    pub status: StepStatus,
    /// First dispatch to end, or `null` if it never ran.
    pub duration_ms: Option<u64>,
    /// Its error, or `null`.
    pub error: Option<String>,
}

/// The facts of a finished run that do not come from its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFinish {
    /// Final status.
    pub status: RunStatus,
    /// The domain.
    pub domain: String,
    /// Start.
    pub started_at: Millis,
    /// End.
    pub completed_at: Millis,
    /// The diagnosis event, if one was written.
    pub diagnosis_event_id: Option<EventId>,
    /// Why synthesis failed, if it did.
    pub synthesis_error: Option<String>,
}

/// The payload of a run's finish event. Counts follow [`StepCounts`] (cancelled → skipped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFinishedPayload {
    /// Final status.
    pub status: RunStatus,
    /// The plan.
    pub plan_id: PlanId,
    /// The domain.
    pub domain: String,
    /// Start.
    #[serde(with = "rfc3339")]
    pub started_at: Millis,
    /// End.
    #[serde(with = "rfc3339")]
    pub completed_at: Millis,
    /// End minus start.
    pub duration_ms: u64,
    /// Steps completed.
    pub services_completed: u32,
    /// Steps failed.
    pub services_failed: u32,
    /// Steps timed out.
    pub services_timeout: u32,
    /// Steps skipped or cancelled.
    pub services_skipped: u32,
    /// All steps.
    pub services_total: u32,
    /// The diagnosis event, or `null`.
    pub diagnosis_event_id: Option<EventId>,
    /// Why synthesis failed, or `null`.
    pub synthesis_error: Option<String>,
    /// Each step, in plan order.
    pub service_results: Vec<ServiceResult>,
}

impl RunFinishedPayload {
    /// The finish event of a run of `plan` whose steps ended as `steps`.
    pub fn new(finish: RunFinish, plan: &Plan, steps: &[StepRecord]) -> Self {
        let counts = StepCounts::of(plan, steps);
        RunFinishedPayload {
            status: finish.status,
            plan_id: plan.plan_id().clone(),
            domain: finish.domain,
            started_at: finish.started_at,
            completed_at: finish.completed_at,
            duration_ms: finish.completed_at.since(finish.started_at),
            services_completed: counts.completed,
            services_failed: counts.failed,
            services_timeout: counts.timeout,
            services_skipped: counts.skipped,
            services_total: counts.total,
            diagnosis_event_id: finish.diagnosis_event_id,
            synthesis_error: finish.synthesis_error,
            service_results: records_by_position(plan, steps)
                .into_iter()
                .map(|r| ServiceResult {
                    duration_ms: r.duration_ms(),
                    service: r.service,
                    status: r.status,
                    error: r.error,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::builtin_plan;

    const START: u64 = 1_737_972_000_000;

    #[test]
    fn start_event_matches_the_seed() {
        let plan = builtin_plan("standard-v1").unwrap();
        let payload = RunStartedPayload::new(&plan, "example.com", Millis::new(START), Millis::new(START + 300_000));
        let event = LifecycleEvent::run_status(
            "site_123".parse().unwrap(),
            "run_1737972000000_0123456789abcdef".parse().unwrap(),
            payload,
        );
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::json!({
                "website_id": "site_123",
                "run_id": "run_1737972000000_0123456789abcdef",
                "service": "orchestrator",
                "type": "run_status",
                "payload": {
                    "status": "started",
                    "plan_id": "standard-v1",
                    "plan_name": "Standard Diagnostic Run",
                    "domain": "example.com",
                    "started_at": "2025-01-27T10:00:00.000Z",
                    "timeout_at": "2025-01-27T10:05:00.000Z",
                    "services_planned": [
                        "serp-intelligence", "technical-seo", "domain-authority",
                        "competitive-intelligence", "vitals-monitor"
                    ]
                }
            })
        );
    }

    fn finished(service: &str, status: StepStatus, duration: u64, error: Option<&str>) -> StepRecord {
        StepRecord {
            status,
            attempts: 1,
            started_at: Some(Millis::new(START)),
            finished_at: Some(Millis::new(START + duration)),
            error: error.map(str::to_string),
            ..StepRecord::pending(service.parse().unwrap())
        }
    }

    #[test]
    fn finish_event_matches_the_seed() {
        let plan = builtin_plan("standard-v1").unwrap();
        let steps = vec![
            finished("serp-intelligence", StepStatus::Completed, 45_000, None),
            finished("technical-seo", StepStatus::Completed, 72_000, None),
            finished("domain-authority", StepStatus::Failed, 5000, Some("Worker config invalid: No API key found")),
            finished("competitive-intelligence", StepStatus::Completed, 38_000, None),
            finished("vitals-monitor", StepStatus::Completed, 51_000, None),
        ];
        let payload = RunFinishedPayload::new(
            RunFinish {
                status: RunStatus::Completed,
                domain: "example.com".into(),
                started_at: Millis::new(START),
                completed_at: Millis::new(START + 150_000),
                diagnosis_event_id: Some("evt_1737972150000_0123456789abcdef".parse().unwrap()),
                synthesis_error: None,
            },
            &plan,
            &steps,
        );
        let json = serde_json::to_value(&payload).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "status": "completed",
                "plan_id": "standard-v1",
                "domain": "example.com",
                "started_at": "2025-01-27T10:00:00.000Z",
                "completed_at": "2025-01-27T10:02:30.000Z",
                "duration_ms": 150000,
                "services_completed": 4,
                "services_failed": 1,
                "services_timeout": 0,
                "services_skipped": 0,
                "services_total": 5,
                "diagnosis_event_id": "evt_1737972150000_0123456789abcdef",
                "synthesis_error": null,
                "service_results": [
                    {"service": "serp-intelligence", "status": "completed", "duration_ms": 45000, "error": null},
                    {"service": "technical-seo", "status": "completed", "duration_ms": 72000, "error": null},
                    {"service": "domain-authority", "status": "failed", "duration_ms": 5000,
                     "error": "Worker config invalid: No API key found"},
                    {"service": "competitive-intelligence", "status": "completed", "duration_ms": 38000, "error": null},
                    {"service": "vitals-monitor", "status": "completed", "duration_ms": 51000, "error": null}
                ]
            })
        );
        assert_eq!(serde_json::from_value::<RunFinishedPayload>(json).unwrap(), payload);
    }

    #[test]
    fn dedupe_keys_are_per_run_and_kind() {
        let run: RunId = "run_1737972000000_0123456789abcdef".parse().unwrap();
        assert_eq!(start_dedupe_key(&run), "run:run_1737972000000_0123456789abcdef:start");
        assert_eq!(finish_dedupe_key(&run, 0), "run:run_1737972000000_0123456789abcdef:finish");
        assert_eq!(diagnosis_dedupe_key(&run, 0), "run:run_1737972000000_0123456789abcdef:diagnosis");
        assert_eq!(finish_dedupe_key(&run, 2), "run:run_1737972000000_0123456789abcdef:finish:2");
    }
}
