//! Pipeline executions (`POST /execute`): what an execution needs reserved (estimated from
//! history), whether pools can hold it now, later or never, its deadline in the queue, the
//! completion estimate, what a finished execution adds to history, and its costs.
//!
//! Admission is strict priority order: the queue's head (highest priority, then oldest) is
//! admitted or everything waits, so a backlog drains by priority then age and a large
//! execution is never starved by smaller ones behind it. An execution that can never fit
//! (it needs more than a pool's whole capacity) fails at once instead of blocking the queue.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::plan::Plan;
use crate::request::Priority;
use crate::state::{status_text, RunStatus, StepStatus};
use crate::time::{Millis, MINUTE_MS};

/// Tokens (the services' `usage.tokens`), estimated per step from history.
pub const TOKENS: &str = "tokens";
/// Executions running at once: each needs one.
pub const CONCURRENT_EXECUTIONS: &str = "concurrent_executions";
/// Step durations, kept in history for the completion estimate (no pool limits it).
pub const DURATION_MS: &str = "duration_ms";
/// A step's token estimate when its worker has no history.
pub const DEFAULT_STEP_TOKENS: u64 = 1_000;
/// A stage's duration estimate when its worker has no history.
pub const DEFAULT_STAGE_MS: u64 = 30_000;
/// A reservation is released at the latest this long after its run's deadline (the run's
/// analysis may still be running; normally it is released as soon as the run ends).
pub const RESERVATION_SLACK_MS: u64 = 10 * MINUTE_MS;

/// A running average from history: `total / samples` of `resource` per step of `worker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageStat {
    /// The worker (a step's `worker_key`).
    pub worker: String,
    /// The resource, e.g. [`TOKENS`].
    pub resource: String,
    /// Steps measured.
    pub samples: u64,
    /// Sum of what they used.
    pub total: u64,
}

fn average(stats: &[UsageStat], worker: &str, resource: &str) -> Option<u64> {
    stats.iter().find(|s| s.worker == worker && s.resource == resource && s.samples > 0).map(|s| s.total / s.samples)
}

/// What an execution needs reserved, by resource.
pub type Demand = BTreeMap<String, u64>;

/// The demand of a plan: one [`CONCURRENT_EXECUTIONS`] slot and, for [`TOKENS`], each step's
/// average from its worker's history ([`DEFAULT_STEP_TOKENS`] without history).
pub fn estimate_demand(plan: &Plan, stats: &[UsageStat]) -> Demand {
    let tokens = plan
        .steps()
        .iter()
        .map(|step| average(stats, step.worker_key.as_str(), TOKENS).unwrap_or(DEFAULT_STEP_TOKENS))
        .fold(0u64, u64::saturating_add);
    Demand::from([(CONCURRENT_EXECUTIONS.to_string(), 1), (TOKENS.to_string(), tokens)])
}

/// How long the plan should take once admitted: per wave, its slowest step's average
/// duration ([`DEFAULT_STAGE_MS`] without history, at most the step's timeout), summed, at
/// most the plan's duration.
pub fn estimated_completion_ms(plan: &Plan, stats: &[UsageStat]) -> u64 {
    let mut slowest_per_wave: BTreeMap<u32, u64> = BTreeMap::new();
    for (step, wave) in plan.steps().iter().zip(plan.waves()) {
        let estimate =
            average(stats, step.worker_key.as_str(), DURATION_MS).unwrap_or(DEFAULT_STAGE_MS).min(step.timeout_ms);
        let slowest = slowest_per_wave.entry(*wave).or_default();
        *slowest = (*slowest).max(estimate);
    }
    slowest_per_wave.values().fold(0u64, |sum, ms| sum.saturating_add(*ms)).min(plan.max_run_duration_ms())
}

/// A resource pool: a counter with a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// The resource.
    pub resource: String,
    /// Most that may be reserved at once.
    pub capacity: u64,
    /// Reserved now.
    pub in_use: u64,
}

/// Whether an execution can be admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Every pool has room: reserve and start.
    Admit,
    /// A pool is too full now; the execution waits (and so does everything behind it).
    Wait {
        /// Which pool, how much is needed and free.
        reason: String,
    },
    /// The demand exceeds a pool's whole capacity: it can never be admitted.
    Never {
        /// Which pool and by how much.
        reason: String,
    },
}

/// Whether `demand` fits the pools. A resource without a pool is not limited.
pub fn assess(demand: &Demand, pools: &[Pool]) -> Admission {
    let mut wait = None;
    for (resource, &quantity) in demand {
        let Some(pool) = pools.iter().find(|p| &p.resource == resource) else { continue };
        if quantity > pool.capacity {
            return Admission::Never {
                reason: format!(
                    "needs {quantity} {resource}, more than the pool's whole capacity of {}",
                    pool.capacity
                ),
            };
        }
        if wait.is_none() && pool.in_use.saturating_add(quantity) > pool.capacity {
            wait = Some(format!(
                "waiting for {resource}: needs {quantity}, {} of {} free",
                pool.capacity.saturating_sub(pool.in_use),
                pool.capacity
            ));
        }
    }
    match wait {
        Some(reason) => Admission::Wait { reason },
        None => Admission::Admit,
    }
}

/// Books `demand` into the pools (after a reservation was won), so later decisions of the
/// same pass see it.
pub fn book(pools: &mut [Pool], demand: &Demand) {
    for pool in pools.iter_mut() {
        if let Some(quantity) = demand.get(&pool.resource) {
            pool.in_use = pool.in_use.saturating_add(*quantity);
        }
    }
}

/// The latest an execution enqueued at `enqueued_at` may be admitted; after it, it fails.
pub fn queue_deadline(enqueued_at: Millis, job_timeout_ms: u64) -> Millis {
    enqueued_at.saturating_add(job_timeout_ms)
}

/// The latest a reservation for a run due by `run_deadline` is held.
pub fn reservation_expiry(run_deadline: Millis) -> Millis {
    run_deadline.saturating_add(RESERVATION_SLACK_MS)
}

/// Why an execution that is not the queue's head waits (only the head is tried).
pub const QUEUED_BEHIND: &str = "queued behind executions of higher priority or older";

/// The message of an execution that was not admitted by its queue `deadline`, with why it
/// last waited.
pub fn expired_error(deadline: Millis, last_reason: Option<&str>) -> String {
    format!("not admitted by its deadline {}: {}", deadline.to_rfc3339(), last_reason.unwrap_or(QUEUED_BEHIND))
}

/// The priority stored as `rank` (unknown ranks read as normal).
pub fn priority_of_rank(rank: i64) -> Priority {
    [Priority::Low, Priority::Normal, Priority::High, Priority::Critical]
        .into_iter()
        .find(|p| p.rank() == rank)
        .unwrap_or_default()
}

/// Where an execution is in the queue: `execution_queue.status`. Serialises lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueStatus {
    /// Waiting for resources.
    Queued,
    /// Resources reserved; its run is being started.
    Admitted,
    /// Its run exists.
    Started,
    /// Never admitted (deadline passed, or it can never fit) or could not start.
    Failed,
}

impl QueueStatus {
    /// Every status, in queue order.
    pub const ALL: [QueueStatus; 4] =
        [QueueStatus::Queued, QueueStatus::Admitted, QueueStatus::Started, QueueStatus::Failed];

    /// The lowercase text (as stored in D1 and sent in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            QueueStatus::Queued => "queued",
            QueueStatus::Admitted => "admitted",
            QueueStatus::Started => "started",
            QueueStatus::Failed => "failed",
        }
    }
}

status_text!(QueueStatus, "execution queue status");

/// The execution's status as clients see it: its run's status once the run exists,
/// `starting` while admitted (or marked started) without a run, else its queue status
/// (`queued`, `failed`).
pub fn client_status(queue_status: QueueStatus, run_status: Option<RunStatus>) -> String {
    match (queue_status, run_status) {
        (_, Some(status)) => status.as_str().to_string(),
        (QueueStatus::Admitted | QueueStatus::Started, None) => "starting".to_string(),
        (status, None) => status.as_str().to_string(),
    }
}

/// Why an execution waits (or failed): the reason the last admission pass gave, or, for a
/// queued execution without one, that it waits behind others (only the head is tried).
pub fn waiting_reason(queue_status: QueueStatus, last_error: Option<&str>) -> Option<String> {
    match (queue_status, last_error) {
        (_, Some(reason)) => Some(reason.to_string()),
        (QueueStatus::Queued, None) => Some(QUEUED_BEHIND.to_string()),
        _ => None,
    }
}

/// One step as history sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepUsage<'a> {
    /// The step's slug.
    pub service: &'a str,
    /// Its status.
    pub status: StepStatus,
    /// What the service reported using (`{"tokens": 412}`), if anything.
    pub usage: Option<Value>,
    /// How long it took.
    pub duration_ms: Option<u64>,
}

/// One measurement a finished step adds to history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSample {
    /// The step's slug.
    pub service: String,
    /// Its worker (history is kept per worker).
    pub worker: String,
    /// [`TOKENS`] or [`DURATION_MS`].
    pub resource: String,
    /// How much.
    pub quantity: u64,
}

/// What a finished execution adds to history: each completed step's tokens and duration.
pub fn usage_samples(plan: &Plan, steps: &[StepUsage<'_>]) -> Vec<UsageSample> {
    let mut samples = Vec::new();
    for step in steps.iter().filter(|s| s.status == StepStatus::Completed) {
        let Some(spec) = plan.step(step.service) else { continue };
        let sample = |resource: &str, quantity: u64| UsageSample {
            service: step.service.to_string(),
            worker: spec.worker_key.as_str().to_string(),
            resource: resource.to_string(),
            quantity,
        };
        if let Some(tokens) = step.usage.as_ref().and_then(|u| u.get(TOKENS)).and_then(Value::as_u64) {
            samples.push(sample(TOKENS, tokens));
        }
        if let Some(duration) = step.duration_ms {
            samples.push(sample(DURATION_MS, duration));
        }
    }
    samples
}

/// The sum of each numeric field over usage objects (`[{"tokens": 3}, {"tokens": 4}]` →
/// `{"tokens": 7}`); other fields and non-objects are ignored.
pub fn usage_totals<'a>(usages: impl IntoIterator<Item = &'a Value>) -> Map<String, Value> {
    let mut integers: BTreeMap<String, u64> = BTreeMap::new();
    let mut reals: BTreeMap<String, f64> = BTreeMap::new();
    for usage in usages {
        let Some(fields) = usage.as_object() else { continue };
        for (name, value) in fields {
            if let Some(n) = value.as_u64() {
                let sum = integers.entry(name.clone()).or_default();
                *sum = sum.saturating_add(n);
            } else if let Some(x) = value.as_f64() {
                *reals.entry(name.clone()).or_default() += x;
            }
        }
    }
    let mut totals = Map::new();
    for (name, sum) in integers {
        let value = match reals.remove(&name) {
            Some(x) => Number::from_f64(x + sum as f64).map(Value::Number).unwrap_or(Value::Null),
            None => Value::from(sum),
        };
        totals.insert(name, value);
    }
    for (name, x) in reals {
        totals.insert(name, Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null));
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{validate, PlanDraft, StepDraft};
    use crate::state::ParseStatusError;
    use serde_json::json;

    fn plan() -> Plan {
        let step = |s: &str, deps: &[&str]| StepDraft {
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            timeout_ms: Some(60_000),
            ..StepDraft::new(s)
        };
        validate(&PlanDraft {
            plan_id: "tpl-x".into(),
            name: "x".into(),
            description: String::new(),
            max_run_duration_ms: 600_000,
            services: vec![step("a", &[]), step("b", &[]), step("c", &["a", "b"])],
            min_completed: None,
        })
        .unwrap()
    }

    fn stat(worker: &str, resource: &str, samples: u64, total: u64) -> UsageStat {
        UsageStat { worker: worker.into(), resource: resource.into(), samples, total }
    }

    fn pool(resource: &str, capacity: u64, in_use: u64) -> Pool {
        Pool { resource: resource.into(), capacity, in_use }
    }

    #[test]
    fn demand_uses_history_and_defaults() {
        let demand = estimate_demand(&plan(), &[stat("a", TOKENS, 4, 2_000), stat("b", TOKENS, 0, 0)]);
        assert_eq!(demand[TOKENS], 500 + 1_000 + 1_000);
        assert_eq!(demand[CONCURRENT_EXECUTIONS], 1);
    }

    #[test]
    fn completion_estimate_sums_the_slowest_step_per_wave() {
        assert_eq!(estimated_completion_ms(&plan(), &[]), 60_000);
        let stats =
            [stat("a", DURATION_MS, 2, 10_000), stat("b", DURATION_MS, 1, 90_000), stat("c", DURATION_MS, 1, 2_000)];
        // Wave 1: max(5 s, 90 s capped at the 60 s timeout); wave 2: 2 s.
        assert_eq!(estimated_completion_ms(&plan(), &stats), 62_000);
    }

    #[test]
    fn assess_admits_waits_or_refuses() {
        let demand = Demand::from([(TOKENS.into(), 3_000), (CONCURRENT_EXECUTIONS.into(), 1), ("gpu".into(), 9)]);
        assert_eq!(
            assess(&demand, &[pool(TOKENS, 10_000, 7_000), pool(CONCURRENT_EXECUTIONS, 2, 1)]),
            Admission::Admit
        );
        assert_eq!(
            assess(&demand, &[pool(TOKENS, 10_000, 7_001)]),
            Admission::Wait { reason: "waiting for tokens: needs 3000, 2999 of 10000 free".into() }
        );
        assert_eq!(
            assess(&demand, &[pool(CONCURRENT_EXECUTIONS, 0, 0), pool(TOKENS, 10_000, 10_000)]),
            Admission::Never {
                reason: "needs 1 concurrent_executions, more than the pool's whole capacity of 0".into()
            }
        );
        let mut pools = vec![pool(TOKENS, 10_000, 0), pool(CONCURRENT_EXECUTIONS, 1, 0)];
        book(&mut pools, &demand);
        assert_eq!((pools[0].in_use, pools[1].in_use), (3_000, 1));
        assert!(matches!(assess(&demand, &pools), Admission::Wait { .. }));
    }

    #[test]
    fn history_takes_completed_steps_only() {
        let steps = [
            StepUsage {
                service: "a",
                status: StepStatus::Completed,
                usage: Some(json!({"tokens": 40})),
                duration_ms: Some(7),
            },
            StepUsage {
                service: "b",
                status: StepStatus::Failed,
                usage: Some(json!({"tokens": 99})),
                duration_ms: Some(9),
            },
            StepUsage { service: "c", status: StepStatus::Completed, usage: None, duration_ms: None },
        ];
        let got: Vec<(String, String, u64)> =
            usage_samples(&plan(), &steps).into_iter().map(|s| (s.worker, s.resource, s.quantity)).collect();
        assert_eq!(got, [("a".to_string(), TOKENS.to_string(), 40), ("a".to_string(), DURATION_MS.to_string(), 7)]);
    }

    #[test]
    fn usage_totals_sum_numeric_fields() {
        let usages =
            [json!({"tokens": 3, "cost_usd": 0.5, "model": "x"}), json!({"tokens": 4, "cost_usd": 0.25}), json!(null)];
        assert_eq!(Value::Object(usage_totals(&usages)), json!({"tokens": 7, "cost_usd": 0.75}));
        assert_eq!(usage_totals(&[]).len(), 0);
    }

    #[test]
    fn deadlines_and_ranks() {
        assert_eq!(queue_deadline(Millis::new(1_000), 30 * MINUTE_MS), Millis::new(1_801_000));
        assert_eq!(reservation_expiry(Millis::new(0)), Millis::new(600_000));
        assert_eq!(priority_of_rank(3), Priority::Critical);
        assert_eq!(priority_of_rank(42), Priority::Normal);
        assert_eq!(
            expired_error(Millis::new(0), Some("waiting")),
            "not admitted by its deadline 1970-01-01T00:00:00.000Z: waiting"
        );
        assert!(expired_error(Millis::new(0), None).ends_with(QUEUED_BEHIND));
    }

    #[test]
    fn clients_see_the_run_status_once_there_is_a_run() {
        let check = |queue: QueueStatus, run: Option<RunStatus>, expected: &str| {
            assert_eq!(client_status(queue, run), expected, "{queue} / {run:?}");
        };
        check(QueueStatus::Queued, None, "queued");
        check(QueueStatus::Admitted, None, "starting");
        check(QueueStatus::Started, None, "starting");
        check(QueueStatus::Failed, None, "failed");
        check(QueueStatus::Started, Some(RunStatus::Running), "running");
        check(QueueStatus::Admitted, Some(RunStatus::Completed), "completed");
        check(QueueStatus::Started, Some(RunStatus::Aggregating), "aggregating");
    }

    #[test]
    fn a_queued_execution_without_a_reason_waits_behind_others() {
        let check = |queue: QueueStatus, last_error: Option<&str>, expected: Option<&str>| {
            assert_eq!(waiting_reason(queue, last_error).as_deref(), expected, "{queue} / {last_error:?}");
        };
        check(QueueStatus::Queued, None, Some(QUEUED_BEHIND));
        check(QueueStatus::Queued, Some("pool full"), Some("pool full"));
        check(QueueStatus::Failed, Some("never fits"), Some("never fits"));
        check(QueueStatus::Started, None, None);
        check(QueueStatus::Admitted, None, None);
    }

    #[test]
    fn queue_statuses_round_trip_through_text() {
        let texts: Vec<&str> = QueueStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(texts, ["queued", "admitted", "started", "failed"]);
        for status in QueueStatus::ALL {
            assert_eq!(status.as_str().parse::<QueueStatus>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
            assert_eq!(serde_json::from_value::<QueueStatus>(status.as_str().into()).unwrap(), status);
        }
        assert_eq!(
            "Queued".parse::<QueueStatus>(),
            Err(ParseStatusError { what: "execution queue status", value: "Queued".into() })
        );
        assert_eq!(
            "starting".parse::<QueueStatus>().unwrap_err().to_string(),
            "unknown execution queue status \"starting\""
        );
        assert!(serde_json::from_value::<QueueStatus>("starting".into()).is_err());
    }
}
