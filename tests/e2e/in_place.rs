//! A run's attempts run in place, in the orchestrator that accepted the run, for as long as it
//! may go on after its answer (`IN_PLACE_SECONDS`, here 1 s): an attempt that outlasts that is
//! left to its service and its deadline, and a first wave whose invocation dies is looked at
//! when its attempts expire, by the run's own timer (no poller tick in these tests).

use std::sync::OnceLock;
use std::time::Duration;

use baton_e2e::{Stack, StackOptions};
use serde_json::{json, Value};

use crate::deadlines::{create_plan, wait_terminal_within};
use crate::runs::start_run;

fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        Stack::start(StackOptions { vars: vec![("IN_PLACE_SECONDS".into(), "1".into())], ..StackOptions::default() })
    })
}

fn steps(stack: &Stack, run_id: &str) -> Vec<Value> {
    let (rows, _) = stack.sql(
        "SELECT service, status, attempts, started_at, finished_at FROM steps WHERE run_id = ?1 ORDER BY position",
        &[json!(run_id)],
    );
    rows
}

#[test]
fn an_attempt_that_outlasts_the_orchestrator_s_time_is_left_to_its_deadline_and_retried() {
    let stack = stack();
    create_plan(
        stack,
        &json!({
            "planId": "in-place-slow", "name": "Slow in place", "maxRunDurationMs": 60_000,
            "services": [
                {"service": "technical-seo", "timeoutMs": 4_000,
                 "retry": {"maxAttempts": 2, "initialIntervalMs": 100, "maxIntervalMs": 100}},
            ],
        }),
    );
    // The service answers after 2 s: the orchestrator lets go of the call after 1 s, as if the
    // service had accepted it; at the attempt's deadline (4 s) it is retried, from the queue.
    let run_id = start_run(
        stack,
        &json!({"website_id": "site_in_place", "domain": "slow.example", "plan_id": "in-place-slow",
                "parameters": {"sample_behaviour": {"technical-seo": {"latency_ms": 2_000}}}}),
    );
    let body = wait_terminal_within(stack, &run_id, Duration::from_secs(20));
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    let step = &steps(stack, &run_id)[0];
    assert_eq!(step["status"], "completed", "{step}");
    assert_eq!(step["attempts"], 2, "the first attempt timed out at its deadline: {step}");
    let took = step["finished_at"].as_i64().unwrap_or(0) - step["started_at"].as_i64().unwrap_or(0);
    // 4 s to the first attempt's deadline, at most 1 s to the retry, 2 s of work, and slack.
    assert!((6_000..=9_500).contains(&took), "the step took {took} ms: {step}");
    let history = &body["service_results"][0]["attempt_history"];
    assert_eq!(history[0]["outcome"], "retrying", "{history}");
    assert_eq!(history[0]["error_kind"], "timeout", "{history}");
}

#[test]
fn a_first_wave_whose_invocation_dies_is_retried_when_its_attempts_expire() {
    let stack = Stack::start(StackOptions {
        vars: vec![("BATON_FAULT_INJECTION".into(), "in-place".into())],
        ..StackOptions::default()
    });
    create_plan(
        &stack,
        &json!({
            "planId": "in-place-lost", "name": "Lost in place", "maxRunDurationMs": 120_000,
            "services": [
                {"service": "technical-seo", "timeoutMs": 2_000, "retry": {"initialIntervalMs": 100, "maxIntervalMs": 100}},
                {"service": "serp-intelligence", "timeoutMs": 3_000, "retry": {"initialIntervalMs": 100, "maxIntervalMs": 100}},
                {"service": "competitive-intelligence", "depends_on": ["serp-intelligence"]},
            ],
        }),
    );
    // The first wave is claimed in the run's insert, then dropped two seconds later (the fault:
    // an invocation that dies). The run had not ended a second in, so its own timer was sent,
    // due when the first attempt expires: nothing else brings the wave back before the run's
    // deadline (2 minutes) or a poller tick (none here).
    let run_id =
        start_run(&stack, &json!({"website_id": "site_lost", "domain": "lost.example", "plan_id": "in-place-lost"}));
    let body = wait_terminal_within(&stack, &run_id, Duration::from_secs(20));
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    let rows = steps(&stack, &run_id);
    for row in &rows[..2] {
        assert_eq!(row["status"], "completed", "{row}");
        assert_eq!(row["attempts"], 2, "lost, then retried once it expired: {row}");
    }
    assert_eq!(rows[2]["attempts"], 1, "{:?}", rows[2]);
    let took = body["summary"]["durationMs"].as_i64().unwrap_or(i64::MAX);
    // Looked at 2 s in (the first expiry) and again at 3 s (the next), each retried at once.
    assert!(took <= 6_000, "the run took {took} ms: {body}");
}
