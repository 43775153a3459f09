//! Which steps to dispatch and which to skip, given a plan and its step records.
//!
//! A step is ready when it is `pending` and its trigger rule holds over its dependencies
//! ([`crate::trigger`]; by default every dependency `completed`), or `retrying` and its
//! backoff has ended. A pending step whose rule can no longer hold is skipped (with
//! [`DEPENDENCIES_FAILED_ERROR`](crate::state::DEPENDENCIES_FAILED_ERROR)), and its pending
//! dependents are judged as if it were skipped already — all in the same decision.

use std::collections::BTreeMap;

use crate::ids::ServiceSlug;
use crate::plan::Plan;
use crate::state::{StepRecord, StepStatus};
use crate::time::Millis;
use crate::trigger::{self, Verdict};

/// What to do now, as data. Both lists are in plan order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Steps to dispatch (apply `Dispatched`, send a task message).
    pub dispatch: Vec<ServiceSlug>,
    /// Steps to skip (apply `Skipped`).
    pub skip: Vec<ServiceSlug>,
}

impl Schedule {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.dispatch.is_empty() && self.skip.is_empty()
    }
}

/// The record of each plan step, by position. A step without a record is `pending`; records
/// of services not in the plan are ignored.
pub fn records_by_position(plan: &Plan, steps: &[StepRecord]) -> Vec<StepRecord> {
    let by_service: BTreeMap<&str, &StepRecord> = steps.iter().map(|s| (s.service.as_str(), s)).collect();
    plan.steps()
        .iter()
        .map(|spec| match by_service.get(spec.service.as_str()) {
            Some(record) => (*record).clone(),
            None => StepRecord::pending(spec.service.clone()),
        })
        .collect()
}

/// By position: whether the step is pending yet can never run, because its trigger rule can
/// no longer hold over its dependencies (a step that can never run counts as skipped for its
/// own dependents).
pub fn blocked_positions(plan: &Plan, statuses: &[StepStatus]) -> Vec<bool> {
    verdicts(plan, statuses).into_iter().map(|v| v == Some(Verdict::Never)).collect()
}

/// By position: the trigger verdict of each pending step (`None` for the others), judged in
/// dependency order so that a step that can never run counts as skipped for its dependents.
pub fn verdicts(plan: &Plan, statuses: &[StepStatus]) -> Vec<Option<Verdict>> {
    let mut seen = statuses.to_vec();
    let mut verdicts = vec![None; statuses.len()];
    for &position in plan.topological_order() {
        if statuses[position] != StepStatus::Pending {
            continue;
        }
        let dependencies: Vec<StepStatus> = plan.dependency_positions(position).iter().map(|&d| seen[d]).collect();
        let verdict = trigger::evaluate(plan.steps()[position].trigger_rule, &dependencies);
        if verdict == Verdict::Never {
            seen[position] = StepStatus::Skipped;
        }
        verdicts[position] = Some(verdict);
    }
    verdicts
}

/// Steps to dispatch and to skip at `now`.
pub fn schedule(plan: &Plan, steps: &[StepRecord], now: Millis) -> Schedule {
    let records = records_by_position(plan, steps);
    let statuses: Vec<StepStatus> = records.iter().map(|r| r.status).collect();
    let verdicts = verdicts(plan, &statuses);
    let mut decision = Schedule::default();
    for (position, record) in records.iter().enumerate() {
        let ready = match record.status {
            StepStatus::Pending => verdicts[position] == Some(Verdict::Ready),
            StepStatus::Retrying => record.next_attempt_at.is_none_or(|at| at <= now),
            _ => false,
        };
        if ready {
            decision.dispatch.push(record.service.clone());
        } else if verdicts[position] == Some(Verdict::Never) {
            decision.skip.push(record.service.clone());
        }
    }
    decision
}

/// Each step with its wave (1 = no dependencies; else 1 + the highest wave of its
/// dependencies), in plan order.
pub fn waves(plan: &Plan) -> Vec<(ServiceSlug, u32)> {
    plan.steps().iter().zip(plan.waves()).map(|(step, &wave)| (step.service.clone(), wave)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{builtin_plan, test_plan};

    fn plan(steps: &[(&str, &[&str])]) -> Plan {
        test_plan(steps)
    }

    fn rec(service: &str, status: StepStatus) -> StepRecord {
        StepRecord { status, ..StepRecord::pending(service.parse().unwrap()) }
    }

    fn check(plan: &Plan, steps: &[StepRecord], now: u64, dispatch: &[&str], skip: &[&str]) {
        let got = schedule(plan, steps, Millis::new(now));
        let names = |list: &[ServiceSlug]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            (names(&got.dispatch), names(&got.skip)),
            (dispatch.iter().map(ToString::to_string).collect(), skip.iter().map(ToString::to_string).collect()),
            "steps {steps:?}"
        );
    }

    #[test]
    fn first_wave_is_everything_without_dependencies() {
        let standard = builtin_plan("standard-v1").unwrap();
        check(&standard, &[], 0, &["serp-intelligence", "technical-seo", "domain-authority", "vitals-monitor"], &[]);
    }

    #[test]
    fn dependent_waits_for_its_dependency_to_complete() {
        use StepStatus::*;
        let standard = builtin_plan("standard-v1").unwrap();
        let mut steps = vec![
            rec("serp-intelligence", Running),
            rec("technical-seo", Running),
            rec("domain-authority", Running),
            rec("vitals-monitor", Running),
        ];
        check(&standard, &steps, 0, &[], &[]);
        steps[0].status = Completed;
        check(&standard, &steps, 0, &["competitive-intelligence"], &[]);
    }

    #[test]
    fn failed_dependency_skips_dependents_transitively() {
        use StepStatus::*;
        let p = plan(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &[])]);
        for missing in [Failed, Timeout, Skipped, Cancelled] {
            check(&p, &[rec("a", missing), rec("d", Completed)], 0, &[], &["b", "c"]);
        }
        check(&p, &[rec("a", Running)], 0, &["d"], &[]);
    }

    #[test]
    fn one_failed_dependency_among_many_is_enough_to_skip() {
        use StepStatus::*;
        let p = plan(&[("a", &[]), ("b", &[]), ("c", &["a", "b"])]);
        check(&p, &[rec("a", Completed), rec("b", Failed)], 0, &[], &["c"]);
        check(&p, &[rec("a", Completed), rec("b", Running)], 0, &[], &[]);
    }

    #[test]
    fn retrying_step_is_ready_once_its_backoff_ends() {
        let p = plan(&[("a", &[])]);
        let retrying = StepRecord { next_attempt_at: Some(Millis::new(50)), ..rec("a", StepStatus::Retrying) };
        check(&p, std::slice::from_ref(&retrying), 49, &[], &[]);
        check(&p, &[retrying], 50, &["a"], &[]);
    }

    #[test]
    fn waves_for_display() {
        let standard = builtin_plan("standard-v1").unwrap();
        let waves: Vec<(String, u32)> = waves(&standard).into_iter().map(|(s, w)| (s.to_string(), w)).collect();
        assert_eq!(waves[3], ("competitive-intelligence".to_string(), 2));
        assert!(waves.iter().filter(|(s, _)| s != "competitive-intelligence").all(|(_, w)| *w == 1));
    }
}
