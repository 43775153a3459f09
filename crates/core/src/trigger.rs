//! Trigger rules: when a step with dependencies runs, decided over its dependencies' statuses
//! (Airflow's vocabulary). `success` is `completed`; `failed` is `failed`, `timeout` or
//! `cancelled`; `skipped` is `skipped`; `done` is any of them.
//!
//! | rule | runs when | can no longer run when |
//! |---|---|---|
//! | `all_success` (default) | every dependency completed | one did not complete |
//! | `all_done` | every dependency is done | never |
//! | `all_failed` | every dependency failed | one completed or was skipped |
//! | `one_success` | one completed | all are done and none completed |
//! | `one_failed` | one failed | all are done and none failed |
//! | `none_failed` | all are done and none failed | one failed |
//! | `none_failed_min_one_success` | all are done, none failed, one completed | one failed, or all done and none completed |
//! | `none_skipped` | all are done and none was skipped | one was skipped |
//!
//! A step that can no longer run is skipped at once; a step without dependencies runs.

use crate::state::StepStatus;

/// The rule a step's dependencies are judged by (part of the step's specification).
pub use crate::plan::TriggerRule;

/// Whether a pending step may run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its rule holds: dispatch it.
    Ready,
    /// Its rule may still hold: wait for its dependencies.
    Wait,
    /// Its rule can no longer hold: skip it.
    Never,
}

fn failed(status: StepStatus) -> bool {
    matches!(status, StepStatus::Failed | StepStatus::Timeout | StepStatus::Cancelled)
}

/// The verdict of `rule` over the dependencies' statuses.
pub fn evaluate(rule: TriggerRule, dependencies: &[StepStatus]) -> Verdict {
    if dependencies.is_empty() {
        return Verdict::Ready;
    }
    let done = dependencies.iter().all(|s| s.is_terminal());
    let any = |f: &dyn Fn(StepStatus) -> bool| dependencies.iter().any(|s| f(*s));
    let succeeded = any(&|s| s == StepStatus::Completed);
    let any_failed = any(&|s| failed(s));
    let skipped = any(&|s| s == StepStatus::Skipped);
    let verdict = |ready: bool, never: bool| {
        if ready {
            Verdict::Ready
        } else if never {
            Verdict::Never
        } else {
            Verdict::Wait
        }
    };
    match rule {
        TriggerRule::AllSuccess => {
            let ended_otherwise = any(&|s| s.is_terminal() && s != StepStatus::Completed);
            verdict(done && !ended_otherwise, ended_otherwise)
        }
        TriggerRule::AllDone => verdict(done, false),
        TriggerRule::AllFailed => {
            let ended_otherwise = any(&|s| s.is_terminal() && !failed(s));
            verdict(done && !ended_otherwise, ended_otherwise)
        }
        TriggerRule::OneSuccess => verdict(succeeded, done && !succeeded),
        TriggerRule::OneFailed => verdict(any_failed, done && !any_failed),
        TriggerRule::NoneFailed => verdict(done && !any_failed, any_failed),
        TriggerRule::NoneFailedMinOneSuccess => {
            verdict(done && !any_failed && succeeded, any_failed || (done && !succeeded))
        }
        TriggerRule::NoneSkipped => verdict(done && !skipped, skipped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StepStatus::*;
    use TriggerRule::*;
    use Verdict::*;

    const RULES: [TriggerRule; 8] =
        [AllSuccess, AllDone, AllFailed, OneSuccess, OneFailed, NoneFailed, NoneFailedMinOneSuccess, NoneSkipped];

    /// Each row: dependency statuses, then the verdict of every rule in [`RULES`]' order.
    #[test]
    fn every_rule_over_every_kind_of_outcome() {
        let table: &[(&[StepStatus], [Verdict; 8])] = &[
            (&[Completed, Completed], [Ready, Ready, Never, Ready, Never, Ready, Ready, Ready]),
            (&[Completed, Failed], [Never, Ready, Never, Ready, Ready, Never, Never, Ready]),
            (&[Failed, Timeout], [Never, Ready, Ready, Never, Ready, Never, Never, Ready]),
            (&[Completed, Skipped], [Never, Ready, Never, Ready, Never, Ready, Ready, Never]),
            (&[Skipped, Skipped], [Never, Ready, Never, Never, Never, Ready, Never, Never]),
            (&[Cancelled], [Never, Ready, Ready, Never, Ready, Never, Never, Ready]),
            (&[Completed, Running], [Wait, Wait, Never, Ready, Wait, Wait, Wait, Wait]),
            (&[Failed, Pending], [Never, Wait, Wait, Wait, Ready, Never, Never, Wait]),
            (&[Skipped, Retrying], [Never, Wait, Never, Wait, Wait, Wait, Wait, Never]),
            (&[Pending, Running], [Wait, Wait, Wait, Wait, Wait, Wait, Wait, Wait]),
            (&[], [Ready; 8]),
        ];
        for (dependencies, expected) in table {
            for (rule, want) in RULES.iter().zip(expected) {
                assert_eq!(evaluate(*rule, dependencies), *want, "{rule:?} over {dependencies:?}");
            }
        }
    }

    #[test]
    fn rules_read_and_write_in_snake_case() {
        let rule: TriggerRule = serde_json::from_str("\"none_failed_min_one_success\"").unwrap();
        assert_eq!(rule, NoneFailedMinOneSuccess);
        assert_eq!(serde_json::to_string(&OneFailed).unwrap(), "\"one_failed\"");
        assert!(serde_json::from_str::<TriggerRule>("\"sometimes\"").is_err());
    }
}
