//! The run summary (the API's camelCase shape), step counts, and confidence.
//!
//! Counting: `cancelled` steps count as **skipped** (neither ran to a result nor failed on
//! their own). Steps still `pending`/`running`/`retrying` are in no bucket, so the counts add
//! up to `servicesTotal` exactly when every step is terminal — always true once a run ends.

use serde::{Deserialize, Serialize};

use crate::ids::{EventId, PlanId, RunId, ServiceSlug, WebsiteId};
use crate::plan::Plan;
use crate::scheduler::records_by_position;
use crate::state::{RunStatus, StepRecord, StepStatus};
use crate::time::{rfc3339, rfc3339_option, Millis};

/// Confidence weight of a required step.
pub const REQUIRED_WEIGHT: f64 = 1.0;
/// Confidence weight of an optional step.
pub const OPTIONAL_WEIGHT: f64 = 0.5;

/// How many of a plan's steps ended which way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepCounts {
    /// `completed`.
    pub completed: u32,
    /// `failed`.
    pub failed: u32,
    /// `timeout`.
    pub timeout: u32,
    /// `skipped` and `cancelled`.
    pub skipped: u32,
    /// `pending`, `running`, `retrying` (not part of the summary's buckets).
    pub in_progress: u32,
    /// All steps of the plan.
    pub total: u32,
}

impl StepCounts {
    /// Counts the plan's steps; a step without a record is pending.
    pub fn of(plan: &Plan, steps: &[StepRecord]) -> Self {
        let mut counts = StepCounts::default();
        for record in records_by_position(plan, steps) {
            let bucket = match record.status {
                StepStatus::Completed => &mut counts.completed,
                StepStatus::Failed => &mut counts.failed,
                StepStatus::Timeout => &mut counts.timeout,
                StepStatus::Skipped | StepStatus::Cancelled => &mut counts.skipped,
                StepStatus::Pending | StepStatus::Running | StepStatus::Retrying => &mut counts.in_progress,
            };
            *bucket += 1;
            counts.total += 1;
        }
        counts
    }
}

/// The facts about a run that do not come from its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFacts {
    /// The run.
    pub run_id: RunId,
    /// The website.
    pub website_id: WebsiteId,
    /// The domain diagnosed.
    pub domain: String,
    /// The plan.
    pub plan_id: PlanId,
    /// Its status.
    pub status: RunStatus,
    /// When it started.
    pub started_at: Millis,
    /// When it ended (`None` while in progress).
    pub completed_at: Option<Millis>,
    /// The diagnosis event, once written.
    pub diagnosis_event_id: Option<EventId>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The run summary, exactly as the API returns it (camelCase, RFC 3339 times, `null` when absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The run.
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub run_id: RunId,
    /// The website.
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub website_id: WebsiteId,
    /// The domain.
    pub domain: String,
    /// The plan.
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub plan_id: PlanId,
    /// Run status.
    pub status: RunStatus,
    /// Start.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String", extend("format" = "date-time")))]
    pub started_at: Millis,
    /// End, or `null`.
    #[serde(with = "rfc3339_option")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>", extend("format" = "date-time")))]
    pub completed_at: Option<Millis>,
    /// End minus start, or `null` while in progress.
    pub duration_ms: Option<u64>,
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
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub diagnosis_event_id: Option<EventId>,
    /// Why the run failed, or `null`.
    pub error: Option<String>,
}

impl RunSummary {
    /// The summary of a run from its facts and its plan's step records.
    pub fn new(facts: RunFacts, plan: &Plan, steps: &[StepRecord]) -> Self {
        let counts = StepCounts::of(plan, steps);
        RunSummary {
            duration_ms: facts.completed_at.map(|end| end.since(facts.started_at)),
            run_id: facts.run_id,
            website_id: facts.website_id,
            domain: facts.domain,
            plan_id: facts.plan_id,
            status: facts.status,
            started_at: facts.started_at,
            completed_at: facts.completed_at,
            services_completed: counts.completed,
            services_failed: counts.failed,
            services_timeout: counts.timeout,
            services_skipped: counts.skipped,
            services_total: counts.total,
            diagnosis_event_id: facts.diagnosis_event_id,
            error: facts.error,
        }
    }

    /// Whether the four buckets add up to the total (true once every step is terminal).
    pub fn counts_add_up(&self) -> bool {
        self.services_completed + self.services_failed + self.services_timeout + self.services_skipped
            == self.services_total
    }
}

/// The steps that did not complete (failed, timeout, skipped, cancelled), in plan order —
/// the diagnosis's `missing_services`.
pub fn missing_services(plan: &Plan, steps: &[StepRecord]) -> Vec<ServiceSlug> {
    records_by_position(plan, steps).into_iter().filter(|r| r.status.is_missing()).map(|r| r.service).collect()
}

/// How much of the plan's weight completed, 0–1 rounded to 2 decimals: required steps weigh
/// [`REQUIRED_WEIGHT`], optional ones [`OPTIONAL_WEIGHT`].
pub fn confidence(plan: &Plan, steps: &[StepRecord]) -> f64 {
    let records = records_by_position(plan, steps);
    let weight = |required: bool| if required { REQUIRED_WEIGHT } else { OPTIONAL_WEIGHT };
    let (mut done, mut total) = (0.0, 0.0);
    for (spec, record) in plan.steps().iter().zip(&records) {
        total += weight(spec.required);
        if record.status == StepStatus::Completed {
            done += weight(spec.required);
        }
    }
    if total <= 0.0 {
        return 0.0;
    }
    ((done / total).clamp(0.0, 1.0) * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{builtin_plan, validate, PlanDraft, StepDraft};

    fn standard_records(statuses: [StepStatus; 5]) -> Vec<StepRecord> {
        builtin_plan("standard-v1")
            .unwrap()
            .service_slugs()
            .into_iter()
            .zip(statuses)
            .map(|(service, status)| StepRecord { status, ..StepRecord::pending(service) })
            .collect()
    }

    #[test]
    fn summary_serialises_exactly_like_the_seed() {
        use StepStatus::*;
        let plan = builtin_plan("standard-v1").unwrap();
        let steps = standard_records([Completed, Completed, Failed, Completed, Completed]);
        let run_id: RunId = "run_1737972000000_0123456789abcdef".parse().unwrap();
        let event: EventId = "evt_1737972150000_0123456789abcdef".parse().unwrap();
        let summary = RunSummary::new(
            RunFacts {
                run_id,
                website_id: "site_123".parse().unwrap(),
                domain: "example.com".into(),
                plan_id: "standard-v1".parse().unwrap(),
                status: RunStatus::Completed,
                started_at: Millis::new(1_737_972_000_000),
                completed_at: Some(Millis::new(1_737_972_150_000)),
                diagnosis_event_id: Some(event),
                error: None,
            },
            &plan,
            &steps,
        );
        let expected = serde_json::json!({
            "runId": "run_1737972000000_0123456789abcdef",
            "websiteId": "site_123",
            "domain": "example.com",
            "planId": "standard-v1",
            "status": "completed",
            "startedAt": "2025-01-27T10:00:00.000Z",
            "completedAt": "2025-01-27T10:02:30.000Z",
            "durationMs": 150000,
            "servicesCompleted": 4,
            "servicesFailed": 1,
            "servicesTimeout": 0,
            "servicesSkipped": 0,
            "servicesTotal": 5,
            "diagnosisEventId": "evt_1737972150000_0123456789abcdef",
            "error": null
        });
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json, expected);
        assert_eq!(serde_json::from_value::<RunSummary>(json).unwrap(), summary);
        assert!(summary.counts_add_up());
    }

    #[test]
    fn cancelled_counts_as_skipped_and_in_progress_is_apart() {
        use StepStatus::*;
        let plan = builtin_plan("standard-v1").unwrap();
        let counts = StepCounts::of(&plan, &standard_records([Completed, Cancelled, Skipped, Timeout, Running]));
        assert_eq!(counts, StepCounts { completed: 1, failed: 0, timeout: 1, skipped: 2, in_progress: 1, total: 5 });
        assert_eq!(StepCounts::of(&plan, &[]).in_progress, 5);
    }

    #[test]
    fn missing_services_in_plan_order() {
        use StepStatus::*;
        let plan = builtin_plan("standard-v1").unwrap();
        let missing = missing_services(&plan, &standard_records([Failed, Completed, Timeout, Skipped, Running]));
        let names: Vec<&str> = missing.iter().map(ServiceSlug::as_str).collect();
        assert_eq!(names, ["serp-intelligence", "domain-authority", "competitive-intelligence"]);
    }

    fn check_confidence(required: [bool; 3], completed: [bool; 3], expected: f64) {
        let plan = validate(&PlanDraft {
            plan_id: "p".into(),
            name: "P".into(),
            description: String::new(),
            max_run_duration_ms: 60_000,
            services: ["a", "b", "c"]
                .iter()
                .zip(required)
                .map(|(s, required)| StepDraft { required, ..StepDraft::new(*s) })
                .collect(),
            min_completed: None,
        })
        .unwrap();
        let steps: Vec<StepRecord> = plan
            .service_slugs()
            .into_iter()
            .zip(completed)
            .map(|(s, done)| StepRecord {
                status: if done { StepStatus::Completed } else { StepStatus::Failed },
                ..StepRecord::pending(s)
            })
            .collect();
        assert_eq!(confidence(&plan, &steps), expected, "required {required:?} completed {completed:?}");
    }

    #[test]
    fn confidence_is_weighted_by_required() {
        check_confidence([true; 3], [true; 3], 1.0);
        check_confidence([true; 3], [true, true, false], 0.67);
        check_confidence([true, true, false], [true, true, false], 0.8);
        check_confidence([true, true, false], [false, true, true], 0.6);
        check_confidence([true; 3], [false; 3], 0.0);
    }
}
