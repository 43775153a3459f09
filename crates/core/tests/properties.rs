//! Property tests: random valid DAGs driven to their end under random outcomes, plus plan
//! validation, retry, ids and time invariants.

// The driver and generators are helpers outside `#[test]` functions; a panic there is the
// failure report, as in the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use baton_core::cancel::cancel_steps;
use baton_core::fanin::{decide, run_deadline, FailReason, FanInConfig, FanInDecision, RunView};
use baton_core::ids::{EventId, ExecutionId, RunId};
use baton_core::plan::{validate, Plan, PlanDraft, StepDraft, Threshold};
use baton_core::retry::{RandomSource, RetryPolicy, SplitMix64};
use baton_core::scheduler::schedule;
use baton_core::state::{
    apply, ErrorKind, RunEvent, RunOutcome, RunStatus, StepError, StepEvent, StepOutcome, StepRecord, StepStatus,
};
use baton_core::summary::{RunFacts, RunSummary};
use baton_core::time::{Millis, MAX_RFC3339_MS};
use baton_core::trigger::{evaluate, TriggerRule, Verdict};
use proptest::prelude::*;

const START: Millis = Millis::new(1_737_972_000_000);

/// Every trigger rule; the default four times as likely in generated plans.
const RULES: [TriggerRule; 11] = [
    TriggerRule::AllSuccess,
    TriggerRule::AllSuccess,
    TriggerRule::AllSuccess,
    TriggerRule::AllSuccess,
    TriggerRule::AllDone,
    TriggerRule::AllFailed,
    TriggerRule::OneSuccess,
    TriggerRule::OneFailed,
    TriggerRule::NoneFailed,
    TriggerRule::NoneFailedMinOneSuccess,
    TriggerRule::NoneSkipped,
];

/// What a service does on one attempt.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Succeed {
        after_ms: u64,
    },
    FailTransient {
        after_ms: u64,
    },
    FailPermanent {
        after_ms: u64,
    },
    /// Never answers: the attempt's own timeout (or the run's deadline) ends it.
    Hang,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        6 => (0u64..12_000).prop_map(|after_ms| Outcome::Succeed { after_ms }),
        2 => (0u64..12_000).prop_map(|after_ms| Outcome::FailTransient { after_ms }),
        1 => (0u64..12_000).prop_map(|after_ms| Outcome::FailPermanent { after_ms }),
        1 => Just(Outcome::Hang),
    ]
}

#[derive(Debug, Clone)]
struct Scenario {
    plan: Plan,
    /// Per step (plan order), the outcome of attempts 1, 2, 3.
    scripts: Vec<[Outcome; 3]>,
    config: FanInConfig,
    seed: u64,
    /// Deliver each result twice (a duplicate callback / redelivered message).
    duplicate_results: bool,
    /// A client pauses the run at this round of the drive, and resumes it at the second
    /// (never, if `None`).
    pause: Option<(usize, Option<usize>)>,
}

/// A random valid plan: step `i` of a hidden topological order may depend on any earlier one;
/// the plan lists the steps in a shuffled order.
fn plan_strategy() -> impl Strategy<Value = Plan> {
    (1usize..=8)
        .prop_flat_map(|n| {
            (
                prop::collection::vec(any::<u8>(), n),
                Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                prop::collection::vec(any::<bool>(), n),
                prop::collection::vec(2_000u64..20_000, n),
                20_000u64..120_000,
                1u32..=3,
                0u64..3_000,
                prop::collection::vec(0usize..RULES.len(), n),
                1u32..=n as u32,
            )
        })
        .prop_map(|(masks, order, required, timeouts, max_run, attempts, initial, rules, min_completed)| {
            let services = order
                .iter()
                .map(|&i| StepDraft {
                    depends_on: (0..i).filter(|j| masks[i] & (1 << j) != 0).map(|j| format!("s{j}")).collect(),
                    required: required[i],
                    trigger_rule: Some(RULES[rules[i]]),
                    timeout_ms: Some(timeouts[i]),
                    retry: Some(RetryPolicy {
                        initial_interval_ms: initial,
                        max_interval_ms: initial * 4,
                        max_attempts: attempts,
                        ..RetryPolicy::default()
                    }),
                    ..StepDraft::new(format!("s{i}"))
                })
                .collect();
            validate(&PlanDraft {
                plan_id: "random".into(),
                name: "Random".into(),
                description: String::new(),
                max_run_duration_ms: max_run,
                services,
                min_completed: Some(Threshold::Count(min_completed)),
            })
            .expect("generated plans are valid")
        })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    plan_strategy().prop_flat_map(|plan| {
        let n = plan.steps().len();
        (
            Just(plan),
            prop::collection::vec([outcome(), outcome(), outcome()], n),
            prop::bool::weighted(0.75),
            10_000u64..150_000,
            any::<u64>(),
            any::<bool>(),
            prop::option::weighted(0.5, (0usize..6, prop::option::weighted(0.7, 1usize..6))),
        )
            .prop_map(
                |(plan, scripts, enable_partial_data, job_timeout_ms, seed, duplicate_results, pause)| Scenario {
                    plan,
                    scripts,
                    config: FanInConfig { enable_partial_data, job_timeout_ms },
                    seed,
                    duplicate_results,
                    pause: pause.map(|(at, resume)| (at, resume.map(|r| at + r))),
                },
            )
    })
}

/// When an attempt's scripted outcome reaches the workers (never, if it hangs).
fn arrival(script: Outcome, now: Millis) -> Millis {
    match script {
        Outcome::Succeed { after_ms } | Outcome::FailTransient { after_ms } | Outcome::FailPermanent { after_ms } => {
            now.saturating_add(after_ms)
        }
        Outcome::Hang => Millis::new(u64::MAX),
    }
}

/// The next moment something can happen: a result arrives, an attempt or a backoff ends, or
/// the run's deadline; at least a millisecond after `now`.
fn next_moment(
    now: Millis,
    deadline: Millis,
    in_flight: &BTreeMap<usize, (u32, Outcome, Millis)>,
    steps: &[StepRecord],
    paused: bool,
) -> Millis {
    // A moment already passed changes nothing more (e.g. a backoff that ended while the run
    // is paused): the next one after it counts.
    let mut next = deadline;
    for (_, _, at) in in_flight.values() {
        next = next.min(*at);
    }
    for record in steps {
        for at in [record.deadline_at, record.next_attempt_at].into_iter().flatten() {
            next = next.min(at);
        }
    }
    if next > now {
        next
    } else {
        let later = in_flight
            .values()
            .map(|(_, _, at)| *at)
            .chain(steps.iter().flat_map(|r| [r.deadline_at, r.next_attempt_at]).flatten())
            .filter(|at| *at > now)
            .fold(deadline, |a, b| a.min(b));
        if paused {
            later.max(now.saturating_add(1))
        } else {
            now.saturating_add(1)
        }
    }
}

/// What the simulated workers observed while driving a run.
struct Trace {
    run: RunStatus,
    steps: Vec<StepRecord>,
    terminal_decisions: usize,
    completed_at: Millis,
}

/// Drives one run the way the workers do: deliver due results, schedule, fan in, act on the
/// decision (claim, then finalize), advance the clock to the next thing that can happen.
fn drive(s: &Scenario) -> Result<Trace, TestCaseError> {
    let plan = &s.plan;
    let mut rng = SplitMix64::new(s.seed);
    let mut steps: Vec<StepRecord> = plan.service_slugs().into_iter().map(StepRecord::pending).collect();
    let mut run = RunStatus::Started;
    let mut now = START;
    let deadline = run_deadline(plan, START, &s.config);
    let mut dispatched: BTreeSet<(usize, u32)> = BTreeSet::new();
    // position → (attempt, outcome, when the result arrives)
    let mut in_flight: BTreeMap<usize, (u32, Outcome, Millis)> = BTreeMap::new();
    let mut terminal_decisions = 0;
    let mut completed_at = None;

    for _ in 0..10_000 {
        // 1. Results that are due.
        let due: Vec<usize> = in_flight.iter().filter(|(_, (_, _, at))| *at <= now).map(|(p, _)| *p).collect();
        for position in due {
            let Some((attempt, outcome, _)) = in_flight.remove(&position) else { continue };
            let event = match outcome {
                Outcome::Succeed { .. } => StepEvent::Succeeded,
                Outcome::FailTransient { .. } => StepEvent::Failed { error: StepError::transient("503") },
                Outcome::FailPermanent { .. } => StepEvent::Failed { error: StepError::permanent("400") },
                Outcome::Hang => continue,
            };
            let deliveries = if s.duplicate_results { 2 } else { 1 };
            for _ in 0..deliveries {
                let record = &steps[position];
                // A consumer drops results of attempts that are no longer current.
                let current = record.attempts == attempt && record.status == StepStatus::Running;
                if !current && !record.status.is_terminal() {
                    continue;
                }
                match apply(record, event.clone(), now, &plan.steps()[position], &mut rng) {
                    Ok(StepOutcome::Applied(next)) => steps[position] = next,
                    Ok(StepOutcome::AlreadyTerminal) => prop_assert!(record.status.is_terminal()),
                    Err(e) => return Err(TestCaseError::fail(format!("result rejected: {e}"))),
                }
            }
        }

        // 2. Schedule (only while the run can still make progress).
        if matches!(run, RunStatus::Started | RunStatus::Running) {
            let decision = schedule(plan, &steps, now);
            for service in &decision.skip {
                let position = plan.position(service.as_str()).expect("planned");
                match apply(&steps[position], StepEvent::Skipped, now, &plan.steps()[position], &mut rng) {
                    Ok(StepOutcome::Applied(next)) => steps[position] = next,
                    other => return Err(TestCaseError::fail(format!("skip of {service} refused: {other:?}"))),
                }
            }
            for service in &decision.dispatch {
                let position = plan.position(service.as_str()).expect("planned");
                if steps[position].status == StepStatus::Pending {
                    let dependencies: Vec<StepStatus> =
                        plan.dependency_positions(position).iter().map(|&d| steps[d].status).collect();
                    let verdict = evaluate(plan.steps()[position].trigger_rule, &dependencies);
                    prop_assert_eq!(verdict, Verdict::Ready, "{} dispatched over {:?}", service, dependencies);
                }
                let next = match apply(&steps[position], StepEvent::Dispatched, now, &plan.steps()[position], &mut rng)
                {
                    Ok(StepOutcome::Applied(next)) => next,
                    other => return Err(TestCaseError::fail(format!("dispatch of {service} refused: {other:?}"))),
                };
                prop_assert!(
                    dispatched.insert((position, next.attempts)),
                    "{} attempt {} dispatched twice",
                    service,
                    next.attempts
                );
                let script = s.scripts[position][(next.attempts as usize - 1).min(2)];
                in_flight.insert(position, (next.attempts, script, arrival(script, now)));
                steps[position] = next;
                match run.apply(RunEvent::Dispatched) {
                    Ok(RunOutcome::Applied(status)) => run = status,
                    other => return Err(TestCaseError::fail(format!("run refused dispatch: {other:?}"))),
                }
            }
        }

        // 3. Fan in.
        let fan_in = decide(plan, &RunView { status: run, started_at: START }, &steps, now, &s.config, &mut rng);
        for update in fan_in.step_updates {
            let position = plan.position(update.service.as_str()).expect("planned");
            prop_assert!(!steps[position].status.is_terminal(), "fan-in changed terminal step {}", update.service);
            steps[position] = update;
        }
        match &fan_in.decision {
            FanInDecision::Wait => {}
            FanInDecision::Aggregate { .. } | FanInDecision::Fail { .. } => {
                terminal_decisions += 1;
                let early =
                    matches!(&fan_in.decision, FanInDecision::Fail { reason: FailReason::BelowThreshold { .. } });
                prop_assert!(early || steps.iter().all(|r| r.status.is_terminal()), "decided with steps in flight");
                if early {
                    // The engine cancels what still runs when a run fails early.
                    steps = cancel_steps(plan, &steps, now).records;
                }
                let claimed = match fan_in.decision {
                    FanInDecision::Aggregate { .. } => run.apply(RunEvent::Claimed),
                    _ => run.apply(RunEvent::Failed),
                };
                run = match claimed {
                    Ok(RunOutcome::Applied(status)) => status,
                    other => return Err(TestCaseError::fail(format!("run refused the decision: {other:?}"))),
                };
                // The decision must stay final: deciding again yields nothing.
                let again = decide(plan, &RunView { status: run, started_at: START }, &steps, now, &s.config, &mut rng);
                prop_assert_eq!(again.decision, FanInDecision::Wait);
                prop_assert!(again.step_updates.is_empty());
                if run == RunStatus::Aggregating {
                    let status = fan_in.decision.final_status().expect("aggregate has a final status");
                    run = match run.apply(RunEvent::Finalized { status }) {
                        Ok(RunOutcome::Applied(status)) => status,
                        other => return Err(TestCaseError::fail(format!("finalize refused: {other:?}"))),
                    };
                }
                completed_at = Some(now);
            }
        }
        if run.is_terminal() {
            break;
        }

        // 4. Advance the clock to the next thing that can happen.
        prop_assert!(now <= deadline, "the clock passed the run deadline without ending the run");
        now = next_moment(now, deadline, &in_flight, &steps, false);
    }

    prop_assert!(run.is_terminal(), "run never ended: {:?}", run);
    Ok(Trace { run, steps, terminal_decisions, completed_at: completed_at.unwrap_or(now) })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_run_ends_with_exactly_one_decision_and_consistent_counts(s in scenario()) {
        let trace = drive(&s)?;
        prop_assert_eq!(trace.terminal_decisions, 1);
        prop_assert!(matches!(trace.run, RunStatus::Completed | RunStatus::Timeout | RunStatus::Failed));
        prop_assert!(trace.steps.iter().all(|r| r.status.is_terminal()));
        let any_completed = trace.steps.iter().any(|r| r.status == StepStatus::Completed);
        if !any_completed {
            prop_assert_eq!(trace.run, RunStatus::Failed);
        }
        let completed = trace.steps.iter().filter(|r| r.status == StepStatus::Completed).count() as u32;
        if trace.run == RunStatus::Failed && any_completed && completed >= s.plan.min_completed() {
            prop_assert!(!s.config.enable_partial_data, "failed with data while partial data is enabled");
        }
        if completed < s.plan.min_completed() {
            prop_assert_eq!(trace.run, RunStatus::Failed, "below the plan's threshold");
        }
        // Dependents of a step that did not complete never ran.
        for (position, record) in trace.steps.iter().enumerate() {
            if record.status == StepStatus::Skipped {
                prop_assert_eq!(record.attempts, 0);
            }
            if record.attempts > 0 {
                let dependencies: Vec<StepStatus> =
                    s.plan.dependency_positions(position).iter().map(|&d| trace.steps[d].status).collect();
                prop_assert_eq!(evaluate(s.plan.steps()[position].trigger_rule, &dependencies), Verdict::Ready);
            }
            prop_assert!(record.attempts <= s.plan.steps()[position].retry.max_attempts);
        }
        let summary = RunSummary::new(
            RunFacts {
                run_id: RunId::from_parts(START, [7; 8]),
                website_id: "site".parse().unwrap(),
                domain: "example.com".into(),
                plan_id: s.plan.plan_id().clone(),
                status: trace.run,
                started_at: START,
                completed_at: Some(trace.completed_at),
                diagnosis_event_id: None,
                error: None,
            },
            &s.plan,
            &trace.steps,
        );
        prop_assert!(summary.counts_add_up());
        prop_assert_eq!(summary.services_total as usize, s.plan.steps().len());
    }

    #[test]
    fn validation_accepts_exactly_the_acyclic_graphs(
        n in 1usize..=7,
        edges in prop::collection::vec((0usize..7, 0usize..7), 0..14),
    ) {
        let edges: BTreeSet<(usize, usize)> = edges.into_iter().filter(|(a, b)| a < &n && b < &n && a != b).collect();
        let draft = PlanDraft {
            plan_id: "g".into(),
            name: "G".into(),
            description: String::new(),
            max_run_duration_ms: 60_000,
            services: (0..n)
                .map(|i| StepDraft {
                    depends_on: edges.iter().filter(|(a, _)| *a == i).map(|(_, b)| format!("n{b}")).collect(),
                    ..StepDraft::new(format!("n{i}"))
                })
                .collect(),
            min_completed: None,
        };
        // Kahn's algorithm decides acyclicity independently.
        let mut placed = vec![false; n];
        loop {
            let ready: Vec<usize> = (0..n).filter(|&i| !placed[i] && edges.iter().all(|&(a, b)| a != i || placed[b])).collect();
            if ready.is_empty() { break; }
            for i in ready { placed[i] = true; }
        }
        let acyclic = placed.iter().all(|p| *p);
        match validate(&draft) {
            Ok(plan) => {
                prop_assert!(acyclic);
                let order = plan.topological_order();
                for &(a, b) in &edges {
                    let pa = order.iter().position(|&x| x == a).unwrap();
                    let pb = order.iter().position(|&x| x == b).unwrap();
                    prop_assert!(pb < pa, "dependency n{} after n{}", b, a);
                    prop_assert!(plan.waves()[a] > plan.waves()[b]);
                }
            }
            Err(problems) => {
                prop_assert!(!acyclic);
                prop_assert!(problems.0.iter().all(|p| p.code() == "dependency_cycle"));
                for problem in &problems.0 {
                    let baton_core::plan::PlanProblem::DependencyCycle { path, .. } = problem else { unreachable!() };
                    prop_assert_eq!(path.first(), path.last());
                    for pair in path.windows(2) {
                        let a: usize = pair[0][1..].parse().unwrap();
                        let b: usize = pair[1][1..].parse().unwrap();
                        prop_assert!(edges.contains(&(a, b)), "{} -> {} is not an edge", pair[0], pair[1]);
                    }
                }
            }
        }
    }

    #[test]
    fn retry_delays_stay_within_the_cap(
        initial in 0u64..10_000,
        extra in 0u64..100_000,
        coefficient in 1.0f64..4.0,
        max_attempts in 1u32..=20,
        attempt in 1u32..=25,
        seed in any::<u64>(),
    ) {
        let policy = RetryPolicy {
            initial_interval_ms: initial,
            backoff_coefficient: coefficient,
            max_interval_ms: initial + extra,
            max_attempts,
            ..RetryPolicy::default()
        };
        prop_assert_eq!(policy.validate(), Ok(()));
        let first = policy.next_delay(attempt, &mut SplitMix64::new(seed));
        let second = policy.next_delay(attempt, &mut SplitMix64::new(seed));
        prop_assert_eq!(first, second, "same seed, same delay");
        match first {
            None => prop_assert!(attempt >= max_attempts),
            Some(delay) => {
                prop_assert!(attempt < max_attempts);
                prop_assert!(delay <= policy.backoff_cap_ms(attempt));
                prop_assert!(delay <= policy.max_interval_ms);
            }
        }
        prop_assert_eq!(policy.delay_after(attempt, &ErrorKind::Permanent, &mut SplitMix64::new(seed)), None);
    }

    #[test]
    fn seeded_sources_repeat(seed in any::<u64>()) {
        let mut a = SplitMix64::new(seed);
        let mut b = SplitMix64::from_bytes(seed.to_le_bytes());
        for _ in 0..16 {
            prop_assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn generated_ids_round_trip(ms in 0u64..10_000_000_000_000, random in any::<[u8; 8]>()) {
        let run = RunId::from_parts(Millis::new(ms), random);
        prop_assert_eq!(run.as_str().parse::<RunId>().unwrap(), run.clone());
        let exec = ExecutionId::from_parts(Millis::new(ms), [random[0], random[1], random[2], random[3], random[4], random[5]]);
        prop_assert_eq!(exec.as_str().parse::<ExecutionId>().unwrap(), exec);
        let event = EventId::from_parts(Millis::new(ms), random);
        prop_assert_eq!(event.as_str().parse::<EventId>().unwrap().timestamp(), Millis::new(ms));
    }

    #[test]
    fn ids_made_in_a_shard_name_it_and_keep_their_time(
        ms in 0u64..10_000_000_000_000,
        random in any::<[u8; 8]>(),
        index in 0u32..baton_core::shard::MAX_SHARDS,
    ) {
        let shard = baton_core::shard::Shard::new(index);
        let run = RunId::in_shard(Millis::new(ms), random, shard);
        let parsed = run.as_str().parse::<RunId>().unwrap();
        prop_assert_eq!((parsed.shard(), parsed.timestamp()), (shard, Millis::new(ms)));
        let exec = ExecutionId::in_shard(Millis::new(ms), [random[0], random[1], random[2], random[3], random[4], random[5]], shard);
        prop_assert_eq!(RunId::from_execution(&exec.as_str().parse::<ExecutionId>().unwrap()).shard(), shard);
    }

    #[test]
    fn every_client_has_one_shard_of_the_deployment(client in "[a-z0-9_-]{1,40}", count in 1u32..=baton_core::shard::MAX_SHARDS) {
        let shards = baton_core::shard::Shards::parse(Some(&count.to_string()), None).unwrap();
        let shard = shards.of_client(&client);
        prop_assert!(shards.contains(shard));
        prop_assert_eq!(shard, shards.of_client(&client));
    }

    #[test]
    fn rfc3339_round_trips(ms in 0u64..=MAX_RFC3339_MS) {
        let text = Millis::new(ms).to_rfc3339();
        prop_assert!(text.ends_with('Z') && text.len() == 24, "{}", text);
        prop_assert_eq!(Millis::parse_rfc3339(&text), Ok(Millis::new(ms)));
    }
}

/// Drives one run through `lifecycle::decide` alone, as the engine does: each round delivers
/// the results that are due (sometimes twice) and looks at the run; the decision's writes are
/// applied as compare-and-sets on the records read, its run action carried out.
fn drive_lifecycle(s: &Scenario) -> Result<(RunStatus, Vec<StepRecord>, usize), TestCaseError> {
    use baton_core::lifecycle::{self, Cause, Event, Observer, Report, Rules, RunAction, RunState};
    let plan = &s.plan;
    let mut rng = SplitMix64::new(s.seed);
    let mut steps: Vec<StepRecord> = plan.service_slugs().into_iter().map(StepRecord::pending).collect();
    let mut run = RunStatus::Started;
    let mut now = START;
    let deadline = run_deadline(plan, START, &s.config);
    let mut dispatched: BTreeSet<(usize, u32)> = BTreeSet::new();
    let mut in_flight: BTreeMap<usize, (u32, Outcome, Millis)> = BTreeMap::new();
    let mut endings = 0;
    for round in 0..10_000 {
        let mut events = Vec::new();
        let client = match s.pause {
            Some((at, _)) if at == round => Some(Event::Pause),
            Some((_, Some(at))) if at == round => Some(Event::Resume),
            _ => None,
        };
        // A client's pause or resume is decided alone, as the engine does.
        let due: Vec<usize> = match client {
            Some(_) => Vec::new(),
            None => in_flight.iter().filter(|(_, (_, _, at))| *at <= now).map(|(p, _)| *p).collect(),
        };
        for position in due {
            let Some((attempt, outcome, _)) = in_flight.remove(&position) else { continue };
            let report = match outcome {
                Outcome::Succeed { .. } => Report::Succeeded,
                Outcome::FailTransient { .. } => Report::Failed(StepError::transient("503")),
                Outcome::FailPermanent { .. } => Report::Failed(StepError::permanent("400")),
                Outcome::Hang => continue,
            };
            let event =
                Event::Reported { service: plan.steps()[position].service.clone(), attempt: Some(attempt), report };
            if s.duplicate_results {
                events.push(event.clone());
            }
            events.push(event);
        }
        events.push(client.unwrap_or(Event::Look));
        // The poller's rules: a retry is dispatched once its backoff ends (its message arrives).
        let rules =
            Rules { now, fan_in: s.config, event_driven_fanin: true, observer: Observer::Poller, retry_grace_ms: 0 };
        let state = RunState { status: run, started_at: START, plan, steps: &steps, sizes: &[] };
        let decision = lifecycle::decide(&state, &events, &rules, &mut rng);
        if decision.resume {
            prop_assert_eq!(run, RunStatus::Paused, "resumed a run that was not paused");
            run = RunStatus::Running;
        }
        let paused = run == RunStatus::Paused;
        prop_assert!(!paused || decision.dispatched().next().is_none(), "a paused run dispatched");
        for write in &decision.writes {
            let position = plan.position(write.after.service.as_str()).expect("planned");
            prop_assert_eq!(&write.before, &steps[position], "a write not based on the record read");
            prop_assert!(!write.before.status.is_terminal(), "a terminal step was written");
            if write.cause == Cause::Dispatched {
                // Its rule holds, possibly by a report in this same decision.
                if write.before.status == StepStatus::Pending {
                    let dependencies: Vec<StepStatus> =
                        plan.dependency_positions(position).iter().map(|&d| decision.steps[d].status).collect();
                    let verdict = evaluate(plan.steps()[position].trigger_rule, &dependencies);
                    prop_assert_eq!(verdict, Verdict::Ready, "dispatched over {:?}", dependencies);
                }
                prop_assert!(dispatched.insert((position, write.after.attempts)), "an attempt dispatched twice");
                let script = s.scripts[position][(write.after.attempts as usize - 1).min(2)];
                in_flight.insert(position, (write.after.attempts, script, arrival(script, now)));
            }
        }
        prop_assert_eq!(&decision.steps.len(), &steps.len());
        steps = decision.steps.clone();
        match &decision.run {
            RunAction::Keep | RunAction::DeferFanIn => {}
            RunAction::Start => run = RunStatus::Running,
            RunAction::Pause => {
                prop_assert!(lifecycle::ACTIVE.contains(&run), "paused from {:?}", run);
                run = RunStatus::Paused;
            }
            RunAction::Claim { partial, then, .. } => {
                prop_assert!(!paused || now >= deadline, "a paused run claimed before its deadline");
                endings += 1;
                prop_assert!(steps.iter().all(|r| r.status.is_terminal()), "claimed with steps in flight");
                let finish = lifecycle::analysed(RunStatus::Aggregating, *partial, now, deadline).expect("claimed");
                prop_assert_eq!(finish.status, *then, "the status decided at the claim holds after the analysis");
                run = finish.status;
            }
            RunAction::Finish(finish) => {
                endings += 1;
                prop_assert!(finish.from.contains(&run));
                run = finish.status;
            }
        }
        if run.is_terminal() {
            let again = lifecycle::decide(
                &RunState { status: run, started_at: START, plan, steps: &steps, sizes: &[] },
                &[Event::Look],
                &rules,
                &mut rng,
            );
            prop_assert!(again.is_empty(), "an ended run was decided on again");
            break;
        }
        now = next_moment(now, deadline, &in_flight, &steps, run == RunStatus::Paused);
    }
    prop_assert!(run.is_terminal(), "run never ended: {:?}", run);
    Ok((run, steps, endings))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_lifecycle_decision_ends_every_run_once_with_writes_on_what_was_read(s in scenario()) {
        let (run, steps, endings) = drive_lifecycle(&s)?;
        prop_assert_eq!(endings, 1);
        prop_assert!(matches!(run, RunStatus::Completed | RunStatus::Timeout | RunStatus::Failed));
        prop_assert!(steps.iter().all(|r| r.status.is_terminal()));
        if !steps.iter().any(|r| r.status == StepStatus::Completed) {
            prop_assert_eq!(run, RunStatus::Failed);
        }
        let completed = steps.iter().filter(|r| r.status == StepStatus::Completed).count() as u32;
        if completed < s.plan.min_completed() {
            prop_assert_eq!(run, RunStatus::Failed, "below the plan's threshold");
        }
        for (position, record) in steps.iter().enumerate() {
            let dependencies: Vec<StepStatus> =
                s.plan.dependency_positions(position).iter().map(|&d| steps[d].status).collect();
            let verdict = evaluate(s.plan.steps()[position].trigger_rule, &dependencies);
            // A step ran iff its rule held: it ran only on a rule that held, it was skipped
            // only on one that could not, and one that held ran unless the run was cut short.
            if record.attempts > 0 {
                prop_assert_eq!(verdict, Verdict::Ready, "{:?} ran over {:?}", record.service, dependencies);
            }
            if record.status == StepStatus::Skipped {
                prop_assert_eq!(verdict, Verdict::Never, "{:?} skipped over {:?}", record.service, dependencies);
            }
            if verdict == Verdict::Ready && run != RunStatus::Failed && record.status != StepStatus::Timeout {
                prop_assert!(record.attempts > 0, "{:?} held over {:?} but never ran", record.service, dependencies);
            }
            prop_assert!(record.attempts <= s.plan.steps()[position].retry.max_attempts);
        }
    }
}

/// `a`, then `approve` (a wait for `approval`, up to `wait_ms`), then `b`.
fn wait_plan(wait_ms: u64) -> Plan {
    let step = |service: &str, deps: &[&str]| StepDraft {
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        timeout_ms: Some(30_000),
        ..StepDraft::new(service)
    };
    let wait = StepDraft {
        kind: Some("wait".into()),
        event: Some("approval".into()),
        timeout_ms: Some(wait_ms),
        ..StepDraft::new("approve")
    };
    let wait = StepDraft { depends_on: vec!["a".into()], ..wait };
    validate(&PlanDraft {
        plan_id: "waits".into(),
        name: "Waits".into(),
        description: String::new(),
        max_run_duration_ms: 120_000,
        services: vec![step("a", &[]), wait, step("b", &["approve"])],
        min_completed: None,
    })
    .expect("a valid plan")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A wait's event, delivered at any moment (before the wait starts, while it waits, after
    /// it timed out, or never; once or twice, as every later decision sees it again): the wait
    /// completes exactly when the event came before its timeout, at the later of its start and
    /// the event, once; its dependent runs only after it completed; the run ends once.
    #[test]
    fn a_wait_takes_its_event_once_whenever_it_arrives_and_times_out_without_it(
        a_ms in 0u64..20_000,
        wait_ms in 1_000u64..30_000,
        arrival in prop::option::of(0u64..60_000),
        twice in any::<bool>(),
    ) {
        use baton_core::lifecycle::{self, Cause, Event, Observer, Report, Rules, RunAction, RunState};
        let plan = wait_plan(wait_ms);
        let config = FanInConfig::default();
        let mut rng = SplitMix64::new(1);
        let mut steps: Vec<StepRecord> = plan.service_slugs().into_iter().map(StepRecord::pending).collect();
        let mut run = RunStatus::Started;
        let mut now = START;
        let (a_done, arrives) = (START.saturating_add(a_ms), arrival.map(|ms| START.saturating_add(ms)));
        let mut b_done: Option<Millis> = None;
        let (mut completions, mut endings) = (0, 0);
        for _ in 0..200 {
            let mut events = Vec::new();
            let running = |s: &[StepRecord], name: &str| s.iter().any(|r| r.service.as_str() == name && r.status == StepStatus::Running);
            if now >= a_done && running(&steps, "a") {
                events.push(Event::Reported { service: "a".parse().unwrap(), attempt: Some(1), report: Report::Succeeded });
            }
            if b_done.is_some_and(|at| now >= at) && running(&steps, "b") {
                events.push(Event::Reported { service: "b".parse().unwrap(), attempt: Some(1), report: Report::Succeeded });
            }
            if arrives.is_some_and(|at| now >= at) {
                events.push(Event::Arrived { event: "approval".into() });
                if twice {
                    events.push(Event::Arrived { event: "approval".into() });
                }
            }
            events.push(Event::Look);
            let rules = Rules { now, fan_in: config, event_driven_fanin: true, observer: Observer::Poller, retry_grace_ms: 0 };
            let state = RunState { status: run, started_at: START, plan: &plan, steps: &steps, sizes: &[] };
            let decision = lifecycle::decide(&state, &events, &rules, &mut rng);
            for write in &decision.writes {
                let service = write.after.service.as_str();
                if service == "approve" && write.cause == Cause::Arrived {
                    completions += 1;
                }
                if service == "b" && write.cause == Cause::Dispatched {
                    let approve = decision.steps.iter().find(|r| r.service.as_str() == "approve").unwrap();
                    prop_assert_eq!(approve.status, StepStatus::Completed, "b dispatched before the wait completed");
                    b_done = Some(now.saturating_add(1_000));
                }
                prop_assert!(!(service == "approve" && write.cause == Cause::Dispatched), "a wait is never sent");
            }
            steps = decision.steps.clone();
            match &decision.run {
                RunAction::Start => run = RunStatus::Running,
                RunAction::Claim { partial, .. } => {
                    endings += 1;
                    run = lifecycle::analysed(RunStatus::Aggregating, *partial, now, run_deadline(&plan, START, &config))
                        .expect("claimed")
                        .status;
                }
                RunAction::Finish(finish) => {
                    endings += 1;
                    run = finish.status;
                }
                _ => {}
            }
            if run.is_terminal() {
                break;
            }
            // The next moment anything can happen.
            let mut next = [Some(a_done), arrives, b_done]
                .into_iter()
                .flatten()
                .chain(steps.iter().filter_map(|r| r.deadline_at))
                .filter(|at| *at > now)
                .fold(run_deadline(&plan, START, &config), |a, b| a.min(b));
            if next <= now {
                next = now.saturating_add(1);
            }
            now = next;
        }
        prop_assert!(run.is_terminal(), "the run never ended: {:?}", steps);
        prop_assert_eq!(endings, 1);
        let approve = steps.iter().find(|r| r.service.as_str() == "approve").unwrap();
        let waited_from = a_done;
        let in_time = arrives.is_some_and(|at| at <= waited_from.saturating_add(wait_ms));
        if in_time {
            prop_assert_eq!(approve.status, StepStatus::Completed);
            prop_assert_eq!(completions, 1);
            prop_assert_eq!(approve.finished_at, Some(waited_from.max(arrives.unwrap())));
        } else {
            prop_assert_eq!(approve.status, StepStatus::Timeout);
            prop_assert_eq!(completions, 0);
            prop_assert_eq!(steps.iter().find(|r| r.service.as_str() == "b").map(|r| r.status), Some(StepStatus::Skipped));
        }
    }
}

/// `a`, then `m` mapping over `a`'s output (`max_parallel`, `min_completed`), then `b`.
fn map_plan(max_parallel: u32, min_completed: Option<u32>) -> Plan {
    let step = |service: &str, deps: &[&str]| StepDraft {
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        timeout_ms: Some(30_000),
        ..StepDraft::new(service)
    };
    let map = StepDraft {
        for_each: Some("a".into()),
        max_items: Some(8),
        max_parallel: Some(max_parallel),
        min_completed: min_completed.map(Threshold::Count),
        ..step("m", &["a"])
    };
    validate(&PlanDraft {
        plan_id: "maps".into(),
        name: "Maps".into(),
        description: String::new(),
        max_run_duration_ms: 600_000,
        services: vec![step("a", &[]), map, step("b", &["m"])],
        min_completed: None,
    })
    .expect("a valid plan")
}

/// How one item of the map behaves: its service's latency, whether it refuses the item
/// (permanently) and whether its first attempt fails transiently.
#[derive(Debug, Clone)]
struct ItemScript {
    latency_ms: u64,
    refused: bool,
    flaky: bool,
}

fn item_script() -> impl Strategy<Value = ItemScript> {
    (100u64..5_000, prop::bool::weighted(0.25), any::<bool>()).prop_map(|(latency_ms, refused, flaky)| ItemScript {
        latency_ms,
        refused,
        flaky,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A map over any list (empty too), whatever its items do (slow, refused, failing once):
    /// never more than `max_parallel` of its items run or back off at once; each item is
    /// created once, and ends once; the map step is never sent; it completes exactly when
    /// `min_completed` of its items completed (else it fails, and its dependent is skipped);
    /// its dependent runs only after it completed; while the run is paused no item starts;
    /// the run ends once.
    #[test]
    fn a_map_runs_its_items_at_most_max_parallel_at_once_and_ends_by_min_completed(
        items in prop::collection::vec(item_script(), 0..8),
        max_parallel in 1u32..4,
        min_completed in prop::option::of(1u32..9),
        pause in prop::option::of((0u64..20_000, 1u64..20_000)),
    ) {
        use baton_core::lifecycle::{self, Cause, Event, Observer, Report, Rules, RunAction, RunState};
        use baton_core::state::{ErrorKind, StepError};
        let min_completed = min_completed.map(|m| m.min(8));
        let plan = map_plan(max_parallel, min_completed);
        let config = FanInConfig::default();
        let mut rng = SplitMix64::new(3);
        let mut steps: Vec<StepRecord> = plan.service_slugs().into_iter().map(StepRecord::pending).collect();
        let mut run = RunStatus::Started;
        let mut now = START;
        let a_done = START.saturating_add(1_000);
        let sizes = [("m".parse().unwrap(), Ok(items.len() as u32))];
        // item index → (attempt, when it answers)
        let mut answers: BTreeMap<u32, (u32, Millis)> = BTreeMap::new();
        let mut created = BTreeSet::new();
        let mut b_done: Option<Millis> = None;
        let mut endings = 0;
        let (pause_at, resume_at) = match pause {
            Some((at, length)) => (Some(START.saturating_add(at)), Some(START.saturating_add(at + length))),
            None => (None, None),
        };
        let (mut paused, mut resumed) = (false, false);
        for _ in 0..500 {
            let mut events = Vec::new();
            if pause_at.is_some_and(|at| now >= at) && !paused {
                paused = true;
                events.push(Event::Pause);
            } else if resume_at.is_some_and(|at| now >= at) && paused && !resumed {
                resumed = true;
                events.push(Event::Resume);
            }
            let running = |s: &[StepRecord], name: &str| s.iter().any(|r| r.service.as_str() == name && r.status == StepStatus::Running);
            if now >= a_done && running(&steps, "a") {
                events.push(Event::Reported { service: "a".parse().unwrap(), attempt: Some(1), report: Report::Succeeded });
            }
            if b_done.is_some_and(|at| now >= at) && running(&steps, "b") {
                events.push(Event::Reported { service: "b".parse().unwrap(), attempt: Some(1), report: Report::Succeeded });
            }
            for (&index, &(attempt, at)) in &answers {
                let service = format!("m.{index}");
                if now < at || !running(&steps, &service) {
                    continue;
                }
                let script = &items[index as usize];
                let report = if script.refused {
                    Report::Failed(StepError::new(ErrorKind::Permanent, "refused"))
                } else if script.flaky && attempt == 1 {
                    Report::Failed(StepError::new(ErrorKind::Transient, "503"))
                } else {
                    Report::Succeeded
                };
                events.push(Event::Reported { service: service.parse().unwrap(), attempt: Some(attempt), report });
            }
            events.push(Event::Look);
            let rules = Rules { now, fan_in: config, event_driven_fanin: true, observer: Observer::Poller, retry_grace_ms: 0 };
            let state = RunState { status: run, started_at: START, plan: &plan, steps: &steps, sizes: &sizes };
            let decision = lifecycle::decide(&state, &events, &rules, &mut rng);
            for item in &decision.created {
                prop_assert!(created.insert(item.service.clone()), "{} created twice", item.service);
            }
            for write in &decision.writes {
                let service = write.after.service.as_str();
                prop_assert!(!(service == "m" && write.cause == Cause::Dispatched), "a map step is never sent");
                if let Some(index) = service.strip_prefix("m.").and_then(|i| i.parse::<u32>().ok()) {
                    prop_assert!(!write.before.status.is_terminal(), "{} ended twice", service);
                    if write.cause == Cause::Dispatched {
                        prop_assert!(run != RunStatus::Paused || decision.resume, "{} started while paused", service);
                        let latency = items[index as usize].latency_ms;
                        answers.insert(index, (write.after.attempts, now.saturating_add(latency)));
                    }
                }
                if service == "b" && write.cause == Cause::Dispatched {
                    let m = decision.steps.iter().find(|r| r.service.as_str() == "m").unwrap();
                    prop_assert_eq!(m.status, StepStatus::Completed, "b dispatched before the map completed");
                    b_done = Some(now.saturating_add(1_000));
                }
            }
            let in_flight = decision
                .steps
                .iter()
                .filter(|r| r.service.as_str().starts_with("m."))
                .filter(|r| matches!(r.status, StepStatus::Running | StepStatus::Retrying))
                .count() as u32;
            prop_assert!(in_flight <= max_parallel, "{} items in flight, at most {}", in_flight, max_parallel);
            steps = decision.steps.clone();
            if decision.resume {
                run = RunStatus::Running;
            }
            match &decision.run {
                RunAction::Start => run = RunStatus::Running,
                RunAction::Pause => run = RunStatus::Paused,
                RunAction::Claim { partial, .. } => {
                    endings += 1;
                    run = lifecycle::analysed(RunStatus::Aggregating, *partial, now, run_deadline(&plan, START, &config))
                        .expect("claimed")
                        .status;
                }
                RunAction::Finish(finish) => {
                    endings += 1;
                    run = finish.status;
                }
                _ => {}
            }
            if run.is_terminal() {
                break;
            }
            let mut next = [Some(a_done), b_done, pause_at, resume_at]
                .into_iter()
                .flatten()
                .chain(answers.values().map(|(_, at)| *at))
                .chain(steps.iter().filter_map(|r| r.deadline_at))
                .chain(steps.iter().filter_map(|r| r.next_attempt_at))
                .filter(|at| *at > now)
                .fold(run_deadline(&plan, START, &config), |a, b| a.min(b));
            if next <= now {
                next = now.saturating_add(1);
            }
            now = next;
        }
        prop_assert!(run.is_terminal(), "the run never ended: {:?}", steps);
        prop_assert_eq!(endings, 1);
        prop_assert_eq!(created.len(), items.len(), "one item per element");
        let status = |name: &str| steps.iter().find(|r| r.service.as_str() == name).map(|r| r.status);
        let completed = items.iter().filter(|i| !i.refused).count() as u32;
        let needed = min_completed.map_or(items.len() as u32, |m| m.min(items.len() as u32));
        for index in 0..items.len() {
            let item = status(&format!("m.{index}")).expect("the item");
            prop_assert!(item.is_terminal(), "item {} left {:?}", index, item);
        }
        if completed >= needed {
            prop_assert_eq!(status("m"), Some(StepStatus::Completed));
            prop_assert_eq!(status("b"), Some(StepStatus::Completed));
            for (index, script) in items.iter().enumerate() {
                let expected = if script.refused { StepStatus::Failed } else { StepStatus::Completed };
                prop_assert_eq!(status(&format!("m.{index}")), Some(expected));
            }
        } else {
            prop_assert_eq!(status("m"), Some(StepStatus::Failed));
            prop_assert_eq!(status("b"), Some(StepStatus::Skipped));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A run step's child, ending any way, ends the step's attempt once and for good: a
    /// completed child completes it (its dependent runs), a timed-out child times it out, a
    /// failed or cancelled one fails it — never retried, whatever the step's retry policy —
    /// and a child of an earlier attempt changes nothing.
    #[test]
    fn a_child_runs_ending_ends_its_run_step_once_and_is_never_retried(
        child in prop::sample::select(vec![RunStatus::Completed, RunStatus::Failed, RunStatus::Timeout, RunStatus::Cancelled]),
        max_attempts in 1u32..5,
        attempt in 1u32..4,
        stale in any::<bool>(),
    ) {
        use baton_core::lifecycle::{self, Event, Observer, Report, Rules, RunState};
        use baton_core::plan::ChildSpec;
        let step = |service: &str, deps: &[&str]| StepDraft {
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..StepDraft::new(service)
        };
        let run_step = StepDraft {
            kind: Some("run".into()),
            plan_id: Some("quick-v1".into()),
            retry: Some(RetryPolicy { max_attempts, ..RetryPolicy::default() }),
            ..step("r", &[])
        };
        let plan = validate(&PlanDraft {
            plan_id: "children".into(),
            name: "Children".into(),
            description: String::new(),
            max_run_duration_ms: 600_000,
            services: vec![run_step, step("b", &["r"])],
            min_completed: None,
        })
        .expect("a valid plan");
        let attempt = attempt.min(max_attempts);
        let running = StepRecord {
            status: StepStatus::Running,
            attempts: attempt,
            started_at: Some(START),
            deadline_at: Some(START.saturating_add(600_000)),
            ..StepRecord::pending("r".parse().unwrap())
        };
        let steps = vec![running.clone(), StepRecord::pending("b".parse().unwrap())];
        let report = match ChildSpec::failure_of(child, "run_child", None) {
            None => Report::Succeeded,
            Some(error) => Report::Failed(error),
        };
        let reported_on = if stale { attempt + 1 } else { attempt };
        let events = [Event::Reported { service: "r".parse().unwrap(), attempt: Some(reported_on), report }];
        let rules = Rules {
            now: START.saturating_add(1_000),
            fan_in: FanInConfig::default(),
            event_driven_fanin: true,
            observer: Observer::EventDriven,
            retry_grace_ms: 0,
        };
        let state = RunState { status: RunStatus::Running, started_at: START, plan: &plan, steps: &steps, sizes: &[] };
        let decision = lifecycle::decide(&state, &events, &rules, &mut SplitMix64::new(5));
        let after = |name: &str| decision.steps.iter().find(|r| r.service.as_str() == name).unwrap().clone();
        if stale {
            prop_assert_eq!(after("r"), running, "a child of another attempt changes nothing");
            return Ok(());
        }
        let expected = match child {
            RunStatus::Completed => StepStatus::Completed,
            RunStatus::Timeout => StepStatus::Timeout,
            _ => StepStatus::Failed,
        };
        prop_assert_eq!(after("r").status, expected);
        let b = after("b").status;
        if expected == StepStatus::Completed {
            prop_assert_eq!(b, StepStatus::Running, "its dependent runs in the same decision");
        } else {
            prop_assert_eq!(b, StepStatus::Skipped);
        }
    }
}
