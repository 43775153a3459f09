//! The fan-in decision: wait, aggregate what completed, or fail. One pure function serves
//! both the event-driven path (a result just arrived) and the cron poller (safety net).
//!
//! [`decide`] first settles the step records at `now` and returns those changes to persist:
//! - a running attempt past its own `deadline_at` gets `AttemptTimedOut` (retried per policy,
//!   else `timeout`);
//! - a pending step whose trigger rule can no longer hold is `skipped`;
//! - at the run's deadline every other non-terminal step ends `timeout` (or `skipped` if one of
//!   its dependencies did not complete).
//!
//! Then, on the settled records: fewer steps can still complete than the plan's
//! `min_completed` (above 1) → `Fail` at once; while some step is not terminal →
//! [`FanInDecision::Wait`]. Once all are: no step completed → `Fail`; some missing and partial
//! data disabled → `Fail`; otherwise → `Aggregate` (synthesis runs on what completed).
//!
//! Only `started`/`running` runs are decided; any other status answers `Wait` with no updates,
//! because someone already claimed the run (`running → aggregating`) or it is over. That is
//! what makes a second `Aggregate` impossible once the claim is recorded.

use std::fmt;

use crate::ids::ServiceSlug;
use crate::plan::Plan;
use crate::retry::RandomSource;
use crate::scheduler::records_by_position;
use crate::state::{apply, RunStatus, StepEvent, StepOutcome, StepRecord, StepStatus};
use crate::time::{Millis, MINUTE_MS};
use crate::trigger;

/// The configuration fan-in needs (see [`crate::config::Config::fan_in`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanInConfig {
    /// Aggregate runs where some steps did not complete (`ENABLE_PARTIAL_DATA`).
    pub enable_partial_data: bool,
    /// Longest any run may take, whatever its plan says (`JOB_TIMEOUT_MINUTES`).
    pub job_timeout_ms: u64,
}

impl Default for FanInConfig {
    fn default() -> Self {
        FanInConfig { enable_partial_data: true, job_timeout_ms: 30 * MINUTE_MS }
    }
}

/// What fan-in needs to know about the run itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunView {
    /// Its current status.
    pub status: RunStatus,
    /// When it started.
    pub started_at: Millis,
}

/// The run's deadline: `started_at + min(plan.max_run_duration_ms, config.job_timeout_ms)`.
pub fn run_deadline(plan: &Plan, started_at: Millis, config: &FanInConfig) -> Millis {
    started_at.saturating_add(plan.max_run_duration_ms().min(config.job_timeout_ms))
}

/// Why a run fails without analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// Every step ended without a result.
    NoStepCompleted,
    /// Fewer steps than the plan's `min_completed` can still complete.
    BelowThreshold {
        /// The plan's `min_completed`.
        required: u32,
        /// The most that could still complete.
        reachable: u32,
    },
    /// Some steps did not complete and `ENABLE_PARTIAL_DATA` is off.
    IncompleteWithoutPartialData {
        /// The steps that did not complete, in plan order.
        missing: Vec<ServiceSlug>,
    },
}

impl fmt::Display for FailReason {
    /// The text recorded as the run's `error`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::NoStepCompleted => f.write_str("No service completed successfully"),
            FailReason::BelowThreshold { required, reachable } => write!(
                f,
                "At most {reachable} service(s) can still complete, fewer than the plan's min_completed of {required}"
            ),
            FailReason::IncompleteWithoutPartialData { missing } => {
                let names: Vec<&str> = missing.iter().map(ServiceSlug::as_str).collect();
                write!(
                    f,
                    "Partial data is disabled and {} service(s) did not complete: {}",
                    names.len(),
                    names.join(", ")
                )
            }
        }
    }
}

/// Exactly one of: wait, aggregate, fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanInDecision {
    /// Some step may still complete; look again later.
    Wait,
    /// Claim the run (`running → aggregating`) and send it to analysis.
    Aggregate {
        /// Whether some steps did not complete.
        partial: bool,
        /// The steps that did not complete (failed, timeout, skipped, cancelled), in plan order.
        missing: Vec<ServiceSlug>,
        /// The run's deadline passed with data missing: the run ends `timeout`, not `completed`.
        deadline_reached: bool,
    },
    /// Fail the run without analysis.
    Fail {
        /// Why.
        reason: FailReason,
    },
}

impl FanInDecision {
    /// The status the run ends with once this decision is carried out: `completed` or
    /// `timeout` after analysis, `failed`; `None` for `Wait`.
    pub fn final_status(&self) -> Option<RunStatus> {
        match self {
            FanInDecision::Wait => None,
            FanInDecision::Aggregate { deadline_reached: true, .. } => Some(RunStatus::Timeout),
            FanInDecision::Aggregate { .. } => Some(RunStatus::Completed),
            FanInDecision::Fail { .. } => Some(RunStatus::Failed),
        }
    }
}

/// The step changes to persist, and the decision made on the records after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanIn {
    /// New records of the steps that changed, in plan order. Persist each guarded by its old
    /// status, before acting on `decision`.
    pub step_updates: Vec<StepRecord>,
    /// What to do with the run.
    pub decision: FanInDecision,
}

impl FanIn {
    fn services_with(&self, status: StepStatus) -> Vec<&ServiceSlug> {
        self.step_updates.iter().filter(|r| r.status == status).map(|r| &r.service).collect()
    }

    /// Steps this decision timed out.
    pub fn timed_out(&self) -> Vec<&ServiceSlug> {
        self.services_with(StepStatus::Timeout)
    }

    /// Steps this decision skipped.
    pub fn skipped(&self) -> Vec<&ServiceSlug> {
        self.services_with(StepStatus::Skipped)
    }

    /// Steps whose timed-out attempt will be retried.
    pub fn retrying(&self) -> Vec<&ServiceSlug> {
        self.services_with(StepStatus::Retrying)
    }
}

/// Settles the step records at `now` and decides the run's fate. `rng` draws the backoff of
/// timed-out attempts that are retried.
pub fn decide(
    plan: &Plan,
    run: &RunView,
    steps: &[StepRecord],
    now: Millis,
    config: &FanInConfig,
    rng: &mut dyn RandomSource,
) -> FanIn {
    if !matches!(run.status, RunStatus::Started | RunStatus::Running | RunStatus::Paused) {
        return FanIn { step_updates: Vec::new(), decision: FanInDecision::Wait };
    }
    let at_deadline = now >= run_deadline(plan, run.started_at, config);
    let mut records = records_by_position(plan, steps);
    let mut changed = vec![false; records.len()];
    let mut transition = |records: &mut [StepRecord], position: usize, event: StepEvent, rng: &mut dyn RandomSource| {
        // Every event here is legal for the status it is applied to, so an error cannot occur.
        if let Ok(StepOutcome::Applied(next)) = apply(&records[position], event, now, &plan.steps()[position], rng) {
            records[position] = next;
            changed[position] = true;
        }
    };

    if !at_deadline {
        for position in 0..records.len() {
            let record = &records[position];
            if record.expires_at(&plan.steps()[position]).is_some_and(|at| at <= now) {
                transition(&mut records, position, StepEvent::AttemptTimedOut, rng);
            }
        }
    }
    // Dependencies first, so a dependency timed out here skips its dependents in the same pass.
    for &position in plan.topological_order() {
        let status = records[position].status;
        if status.is_terminal() {
            continue;
        }
        let dependencies: Vec<StepStatus> =
            plan.dependency_positions(position).iter().map(|&dep| records[dep].status).collect();
        let never = trigger::evaluate(plan.steps()[position].trigger_rule, &dependencies) == trigger::Verdict::Never;
        if status == StepStatus::Pending && never {
            transition(&mut records, position, StepEvent::Skipped, rng);
        } else if at_deadline {
            transition(&mut records, position, StepEvent::TimedOut, rng);
        }
    }

    let required = plan.min_completed();
    let completed = records.iter().filter(|r| r.status == StepStatus::Completed).count() as u32;
    let open = records.iter().filter(|r| !r.status.is_terminal()).count() as u32;
    let decision = if required > 1 && completed + open < required {
        // The threshold can no longer be reached: stop now, spend no analysis on it.
        FanInDecision::Fail { reason: FailReason::BelowThreshold { required, reachable: completed + open } }
    } else if records.iter().all(|r| r.status.is_terminal()) {
        let missing: Vec<ServiceSlug> =
            records.iter().filter(|r| r.status != StepStatus::Completed).map(|r| r.service.clone()).collect();
        if missing.len() == records.len() {
            FanInDecision::Fail { reason: FailReason::NoStepCompleted }
        } else if !missing.is_empty() && !config.enable_partial_data {
            FanInDecision::Fail { reason: FailReason::IncompleteWithoutPartialData { missing } }
        } else {
            let partial = !missing.is_empty();
            FanInDecision::Aggregate { partial, missing, deadline_reached: at_deadline && partial }
        }
    } else {
        FanInDecision::Wait
    };
    let step_updates = records.into_iter().zip(changed).filter(|(_, changed)| *changed).map(|(r, _)| r).collect();
    FanIn { step_updates, decision }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::builtin_plan;
    use crate::retry::SplitMix64;

    const START: Millis = Millis::new(1_000_000);

    fn rec(service: &str, status: StepStatus) -> StepRecord {
        StepRecord { status, ..StepRecord::pending(service.parse().unwrap()) }
    }

    fn running(service: &str, deadline_at: u64, attempts: u32) -> StepRecord {
        StepRecord { attempts, deadline_at: Some(Millis::new(deadline_at)), ..rec(service, StepStatus::Running) }
    }

    fn quick(statuses: [StepStatus; 3]) -> Vec<StepRecord> {
        ["serp-intelligence", "technical-seo", "vitals-monitor"]
            .iter()
            .zip(statuses)
            .map(|(s, st)| rec(s, st))
            .collect()
    }

    fn run_decide(plan_id: &str, steps: &[StepRecord], elapsed: u64, config: FanInConfig) -> FanIn {
        let plan = builtin_plan(plan_id).unwrap();
        let run = RunView { status: RunStatus::Running, started_at: START };
        decide(&plan, &run, steps, START.saturating_add(elapsed), &config, &mut SplitMix64::new(3))
    }

    fn slugs(list: &[&str]) -> Vec<ServiceSlug> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn check(steps: &[StepRecord], elapsed: u64, config: FanInConfig, expected: FanInDecision) {
        assert_eq!(run_decide("quick-v1", steps, elapsed, config).decision, expected, "steps {steps:?}");
    }

    #[test]
    fn decision_table() {
        use StepStatus::*;
        let on = FanInConfig::default();
        let off = FanInConfig { enable_partial_data: false, ..on };
        check(&quick([Completed, Running, Pending]), 1000, on, FanInDecision::Wait);
        check(
            &quick([Completed, Completed, Completed]),
            1000,
            on,
            FanInDecision::Aggregate { partial: false, missing: vec![], deadline_reached: false },
        );
        check(
            &quick([Completed, Failed, Completed]),
            1000,
            on,
            FanInDecision::Aggregate { partial: true, missing: slugs(&["technical-seo"]), deadline_reached: false },
        );
        check(
            &quick([Failed, Timeout, Skipped]),
            1000,
            on,
            FanInDecision::Fail { reason: FailReason::NoStepCompleted },
        );
        check(
            &quick([Completed, Failed, Completed]),
            1000,
            off,
            FanInDecision::Fail {
                reason: FailReason::IncompleteWithoutPartialData { missing: slugs(&["technical-seo"]) },
            },
        );
        check(
            &quick([Completed, Completed, Completed]),
            1000,
            off,
            FanInDecision::Aggregate { partial: false, missing: vec![], deadline_reached: false },
        );
    }

    #[test]
    fn at_the_deadline_running_steps_time_out_and_synthesis_still_runs() {
        use StepStatus::*;
        let steps = quick([Completed, Running, Retrying]);
        let fan_in = run_decide("quick-v1", &steps, 120_000, FanInConfig::default());
        assert_eq!(fan_in.timed_out(), [&slugs(&["technical-seo"])[0], &slugs(&["vitals-monitor"])[0]]);
        assert_eq!(
            fan_in.decision,
            FanInDecision::Aggregate {
                partial: true,
                missing: slugs(&["technical-seo", "vitals-monitor"]),
                deadline_reached: true
            }
        );
        assert_eq!(fan_in.decision.final_status(), Some(RunStatus::Timeout));
        assert!(fan_in.step_updates.iter().all(|r| r.error.as_deref() == Some(crate::state::RUN_DEADLINE_ERROR)));
    }

    #[test]
    fn at_the_deadline_pending_dependents_of_unfinished_steps_are_skipped() {
        use StepStatus::*;
        let standard = vec![
            rec("serp-intelligence", Running),
            rec("technical-seo", Completed),
            rec("domain-authority", Completed),
            rec("competitive-intelligence", Pending),
            rec("vitals-monitor", Completed),
        ];
        let fan_in = run_decide("standard-v1", &standard, 300_000, FanInConfig::default());
        assert_eq!(fan_in.timed_out(), [&slugs(&["serp-intelligence"])[0]]);
        assert_eq!(fan_in.skipped(), [&slugs(&["competitive-intelligence"])[0]]);
        assert_eq!(fan_in.decision.final_status(), Some(RunStatus::Timeout));
    }

    #[test]
    fn pending_step_whose_dependencies_are_done_times_out_at_the_deadline() {
        use StepStatus::*;
        let mut standard: Vec<StepRecord> = builtin_plan("standard-v1")
            .unwrap()
            .service_slugs()
            .into_iter()
            .map(|s| StepRecord { status: Completed, ..StepRecord::pending(s) })
            .collect();
        standard[3].status = Pending;
        let fan_in = run_decide("standard-v1", &standard, 300_000, FanInConfig::default());
        assert_eq!(fan_in.timed_out(), [&slugs(&["competitive-intelligence"])[0]]);
    }

    #[test]
    fn failed_dependency_skips_its_dependent_before_the_deadline_and_aggregates() {
        use StepStatus::*;
        let standard = vec![
            rec("serp-intelligence", Failed),
            rec("technical-seo", Completed),
            rec("domain-authority", Completed),
            rec("competitive-intelligence", Pending),
            rec("vitals-monitor", Completed),
        ];
        let fan_in = run_decide("standard-v1", &standard, 10_000, FanInConfig::default());
        assert_eq!(fan_in.skipped(), [&slugs(&["competitive-intelligence"])[0]]);
        assert_eq!(
            fan_in.decision,
            FanInDecision::Aggregate {
                partial: true,
                missing: slugs(&["serp-intelligence", "competitive-intelligence"]),
                deadline_reached: false
            }
        );
        assert_eq!(fan_in.decision.final_status(), Some(RunStatus::Completed));
    }

    #[test]
    fn job_timeout_shortens_the_plan_deadline() {
        use StepStatus::*;
        let config = FanInConfig { job_timeout_ms: 60_000, ..FanInConfig::default() };
        let fan_in = run_decide("quick-v1", &quick([Completed, Running, Running]), 60_000, config);
        assert_eq!(fan_in.timed_out().len(), 2);
        let plan = builtin_plan("quick-v1").unwrap();
        assert_eq!(run_deadline(&plan, START, &config), START.saturating_add(60_000));
        assert_eq!(run_deadline(&plan, START, &FanInConfig::default()), START.saturating_add(120_000));
    }

    #[test]
    fn attempt_past_its_own_deadline_is_retried_or_timed_out() {
        use StepStatus::*;
        let deadline = START.as_u64() + 60_000;
        let steps = vec![
            running("serp-intelligence", deadline, 1),
            running("technical-seo", deadline, 3),
            rec("vitals-monitor", Completed),
        ];
        let fan_in = run_decide("quick-v1", &steps, 60_000, FanInConfig::default());
        assert_eq!(fan_in.retrying(), [&slugs(&["serp-intelligence"])[0]]);
        assert_eq!(fan_in.timed_out(), [&slugs(&["technical-seo"])[0]]);
        assert_eq!(fan_in.decision, FanInDecision::Wait);
        let early = run_decide("quick-v1", &steps, 59_999, FanInConfig::default());
        assert!(early.step_updates.is_empty());
    }

    #[test]
    fn claimed_or_finished_runs_are_never_decided_again() {
        let plan = builtin_plan("quick-v1").unwrap();
        let steps = quick([StepStatus::Completed; 3]);
        for status in
            [RunStatus::Aggregating, RunStatus::Completed, RunStatus::Failed, RunStatus::Timeout, RunStatus::Cancelled]
        {
            let run = RunView { status, started_at: START };
            let fan_in = decide(&plan, &run, &steps, START, &FanInConfig::default(), &mut SplitMix64::new(1));
            assert_eq!(fan_in, FanIn { step_updates: vec![], decision: FanInDecision::Wait }, "{status:?}");
        }
    }

    #[test]
    fn fail_reasons_read_well() {
        assert_eq!(FailReason::NoStepCompleted.to_string(), "No service completed successfully");
        let reason = FailReason::IncompleteWithoutPartialData { missing: slugs(&["a", "b"]) };
        assert_eq!(reason.to_string(), "Partial data is disabled and 2 service(s) did not complete: a, b");
    }
}
