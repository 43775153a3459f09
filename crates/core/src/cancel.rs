//! Cancelling a run: every step that has not ended ends `cancelled` (and
//! [`crate::lifecycle::decide`] ends the run). A run that has already ended is refused, naming
//! its status.

use crate::plan::Plan;
use crate::retry::SplitMix64;
use crate::scheduler::records_by_position;
use crate::state::{self, RunEvent, RunOutcome, RunStatus, StepEvent, StepOutcome, StepRecord};
use crate::time::Millis;

/// Why a run cannot be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CancelRefused {
    /// It has already ended.
    #[error("the run has already ended: it is {status}")]
    AlreadyEnded {
        /// Its final status.
        status: RunStatus,
    },
}

/// What cancelling does.
#[derive(Debug, Clone, PartialEq)]
pub struct Cancellation {
    /// The steps that change (they were pending, running or retrying), now `cancelled`.
    pub cancelled: Vec<StepRecord>,
    /// Every step after the cancellation, in plan order.
    pub records: Vec<StepRecord>,
}

/// The steps of a run being cancelled at `now`: those not yet ended become `cancelled`.
pub fn cancel_steps(plan: &Plan, steps: &[StepRecord], now: Millis) -> Cancellation {
    // Cancelling draws no jitter; the source only satisfies `apply`'s signature.
    let mut rng = SplitMix64::new(0);
    let mut cancelled = Vec::new();
    let records = records_by_position(plan, steps)
        .into_iter()
        .zip(plan.steps())
        .map(|(record, spec)| match state::apply(&record, StepEvent::Cancelled, now, spec, &mut rng) {
            Ok(StepOutcome::Applied(next)) => {
                cancelled.push(next.clone());
                next
            }
            _ => record,
        })
        .collect();
    Cancellation { cancelled, records }
}

/// Cancels a run in `status` at `now`, or refuses if it has already ended.
pub fn cancel(
    status: RunStatus,
    plan: &Plan,
    steps: &[StepRecord],
    now: Millis,
) -> Result<Cancellation, CancelRefused> {
    match status.apply(RunEvent::Cancelled) {
        Ok(RunOutcome::Applied(_)) => Ok(cancel_steps(plan, steps, now)),
        Ok(RunOutcome::AlreadyTerminal) | Err(_) => Err(CancelRefused::AlreadyEnded { status }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{RunFinish, RunFinishedPayload};
    use crate::plan::builtin_plan;
    use crate::state::{StepStatus, CANCELLED_ERROR};

    fn records(statuses: [StepStatus; 5]) -> Vec<StepRecord> {
        builtin_plan("standard-v1")
            .unwrap()
            .service_slugs()
            .into_iter()
            .zip(statuses)
            .map(|(service, status)| StepRecord { status, attempts: 1, ..StepRecord::pending(service) })
            .collect()
    }

    #[test]
    fn unfinished_steps_are_cancelled_and_finished_ones_kept() {
        use StepStatus::*;
        let plan = builtin_plan("standard-v1").unwrap();
        let steps = records([Completed, Running, Retrying, Pending, Failed]);
        let c = cancel(RunStatus::Running, &plan, &steps, Millis::new(500)).unwrap();
        let statuses: Vec<StepStatus> = c.records.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [Completed, Cancelled, Cancelled, Cancelled, Failed]);
        assert_eq!(c.cancelled.len(), 3);
        assert!(c
            .cancelled
            .iter()
            .all(|r| r.error.as_deref() == Some(CANCELLED_ERROR) && r.finished_at == Some(Millis::new(500))));

        let finish = RunFinish {
            status: RunStatus::Cancelled,
            domain: "example.com".into(),
            started_at: Millis::new(100),
            completed_at: Millis::new(500),
            diagnosis_event_id: None,
            synthesis_error: None,
        };
        let payload = RunFinishedPayload::new(finish, &plan, &c.records);
        assert_eq!(payload.status, RunStatus::Cancelled);
        assert_eq!((payload.services_completed, payload.services_failed, payload.services_skipped), (1, 1, 3));
        assert_eq!(payload.duration_ms, 400);
    }

    #[test]
    fn every_non_terminal_run_can_be_cancelled_and_no_terminal_one() {
        let plan = builtin_plan("standard-v1").unwrap();
        for status in RunStatus::ALL {
            let outcome = cancel(status, &plan, &[], Millis::new(1));
            if status.is_terminal() {
                assert_eq!(outcome.unwrap_err(), CancelRefused::AlreadyEnded { status });
            } else {
                assert_eq!(outcome.unwrap().cancelled.len(), 5, "{status}");
            }
        }
        let refused = cancel(RunStatus::Completed, &plan, &[], Millis::new(1)).unwrap_err();
        assert_eq!(refused.to_string(), "the run has already ended: it is completed");
    }
}
