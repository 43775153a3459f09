//! Workflow semantics: trigger rules, failure thresholds, and retrying a finished run.

use std::time::Duration;

use baton_e2e::{now_ms, poll_until, shared_stack, Stack};
use serde_json::{json, Value};

use crate::runs::start_run;

fn create_plan(stack: &Stack, plan: &Value) {
    let r = stack.post_as(stack.token(0), "/api/orchestration/plans", plan);
    assert_eq!(r.status, 201, "{}", r.text());
}

fn wait_ended(stack: &Stack, run_id: &str, limit: Duration) -> Value {
    poll_until(&format!("run {run_id} to end"), limit, || {
        let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}"));
        let body = r.json();
        (body["terminal"] == true).then_some(body)
    })
}

fn step_status(body: &Value, service: &str) -> String {
    body["service_results"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["service"] == service))
        .and_then(|s| s["status"].as_str())
        .unwrap_or("")
        .to_string()
}

fn events_of(stack: &Stack, run_id: &str, kind: &str) -> usize {
    let (rows, _) = stack
        .sql("SELECT COUNT(*) AS n FROM kbase_events WHERE run_id = ?1 AND type = ?2", &[json!(run_id), json!(kind)]);
    rows[0]["n"].as_u64().unwrap_or(0) as usize
}

#[test]
fn an_all_done_step_runs_after_its_upstream_failed() {
    let stack = shared_stack();
    let plan_id = format!("all-done-{}", now_ms());
    create_plan(
        stack,
        &json!({"plan_id": plan_id, "name": "Report anyway", "max_run_duration_ms": 60_000, "services": [
            {"service": "technical-seo", "retry": {"max_attempts": 1}},
            {"service": "serp-intelligence"},
            {"service": "vitals-monitor", "depends_on": ["technical-seo"], "trigger_rule": "all_done"},
            {"service": "domain-authority", "depends_on": ["technical-seo"]},
        ]}),
    );
    let run_id = start_run(
        stack,
        &json!({"website_id": "site_rules", "domain": "rules.example", "plan_id": plan_id,
                "parameters": {"sample_behaviour": {"technical-seo": {"fail_permanent": true}}}}),
    );
    let body = wait_ended(stack, &run_id, Duration::from_secs(30));
    assert_eq!(step_status(&body, "technical-seo"), "failed", "{body}");
    assert_eq!(step_status(&body, "vitals-monitor"), "completed", "all_done ran after the failure: {body}");
    assert_eq!(step_status(&body, "domain-authority"), "skipped", "all_success could not hold: {body}");
    assert_eq!(body["summary"]["status"], "completed", "{body}");
}

#[test]
fn a_run_that_cannot_reach_its_threshold_fails_early_without_analysis() {
    let stack = shared_stack();
    let plan_id = format!("threshold-{}", now_ms());
    let never = json!({"never_answer": true});
    create_plan(
        stack,
        &json!({"plan_id": plan_id, "name": "Three of five", "max_run_duration_ms": 120_000, "min_completed": 3,
        "services": [
            {"service": "technical-seo", "retry": {"max_attempts": 1}},
            {"service": "serp-intelligence", "retry": {"max_attempts": 1}},
            {"service": "vitals-monitor", "retry": {"max_attempts": 1}},
            {"service": "domain-authority", "timeout_ms": 120_000},
            {"service": "competitive-intelligence", "timeout_ms": 120_000},
        ]}),
    );
    let started = now_ms();
    let run_id = start_run(
        stack,
        &json!({"website_id": "site_threshold", "domain": "threshold.example", "plan_id": plan_id,
                "parameters": {"sample_behaviour": {
                    "technical-seo": {"fail_permanent": true}, "serp-intelligence": {"fail_permanent": true},
                    "vitals-monitor": {"fail_permanent": true},
                    "domain-authority": never, "competitive-intelligence": never}}}),
    );
    let body = wait_ended(stack, &run_id, Duration::from_secs(30));
    assert!(now_ms() - started < 30_000, "ended long before its 120 s deadline");
    assert_eq!(body["summary"]["status"], "failed", "{body}");
    assert!(body["summary"]["error"].as_str().is_some_and(|e| e.contains("min_completed of 3")), "{body}");
    assert_eq!(step_status(&body, "domain-authority"), "cancelled", "{body}");
    assert_eq!(step_status(&body, "competitive-intelligence"), "cancelled", "{body}");
    assert_eq!(events_of(stack, &run_id, "diagnosis"), 0, "no analysis is spent on it");
}

#[test]
fn a_retried_run_completes_its_failed_step_and_keeps_both_diagnoses() {
    let stack = shared_stack();
    let plan_id = format!("retry-{}", now_ms());
    create_plan(
        stack,
        &json!({"plan_id": plan_id, "name": "Retry me", "max_run_duration_ms": 60_000, "services": [
            {"service": "technical-seo", "retry": {"max_attempts": 1}},
            {"service": "serp-intelligence"},
        ]}),
    );
    let run_id = start_run(
        stack,
        &json!({"website_id": "site_retry_run", "domain": "retry.example", "plan_id": plan_id,
                "parameters": {"sample_behaviour": {"technical-seo": {"fail_permanent_until": 1}}}}),
    );
    let path = format!("/api/orchestration/runs/{run_id}/retry");
    let first = wait_ended(stack, &run_id, Duration::from_secs(30));
    assert_eq!(step_status(&first, "technical-seo"), "failed", "{first}");
    let serp_output =
        stack.sql("SELECT output FROM steps WHERE run_id = ?1 AND service = 'serp-intelligence'", &[json!(run_id)]).0;

    let r = stack.post_as(stack.token(0), &path, &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["retried_steps"], json!(["technical-seo"]));
    assert_eq!(stack.post_as(stack.token(1), &path, &json!({})).status, 404, "another client's run");
    let second = wait_ended(stack, &run_id, Duration::from_secs(30));
    assert_eq!(second["summary"]["status"], "completed", "{second}");
    assert_eq!(step_status(&second, "technical-seo"), "completed", "{second}");
    let (attempts, _) =
        stack.sql("SELECT attempts FROM steps WHERE run_id = ?1 AND service = 'technical-seo'", &[json!(run_id)]);
    assert_eq!(attempts[0]["attempts"], 2, "a new attempt, numbered after the old one");
    let kept =
        stack.sql("SELECT output FROM steps WHERE run_id = ?1 AND service = 'serp-intelligence'", &[json!(run_id)]).0;
    assert_eq!(kept, serp_output, "completed outputs are kept");
    assert_eq!(events_of(stack, &run_id, "diagnosis"), 2, "both rounds' diagnoses stay in the history");

    // A finished run with nothing left to retry, and one in progress, are refused; a rerun is a new run.
    let r = stack.post_as(stack.token(0), &path, &json!({}));
    assert_eq!(r.status, 409, "{}", r.text());
    let r = stack.post_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}/rerun"), &json!({}));
    assert_eq!(r.status, 202, "{}", r.text());
    let again = r.json()["run_id"].as_str().expect("run_id").to_string();
    assert_ne!(again, run_id);
    let r = stack.post_as(stack.token(0), &format!("/api/orchestration/runs/{again}/retry"), &json!({}));
    assert!(r.status == 409 || r.status == 200, "{}", r.text());
    wait_ended(stack, &again, Duration::from_secs(30));
}

/// Each shard holds an equal share of a service's cap: one client's runs, all in its shard,
/// have two of a cap of two a shard.
#[test]
fn a_service_capped_at_two_a_shard_never_has_three_attempts_in_flight_under_twenty_runs() {
    let shards = baton_e2e::stack::local_d1_bindings(&baton_e2e::repo_root()).len();
    let cap = json!({"technical_seo": 2 * shards}).to_string();
    let stack = baton_e2e::Stack::start(baton_e2e::StackOptions {
        vars: vec![("SERVICE_CONCURRENCY".into(), cap.clone())],
        consumer_vars: vec![("SERVICE_CONCURRENCY".into(), cap.clone())],
        poller_vars: vec![("SERVICE_CONCURRENCY".into(), cap)],
        ..baton_e2e::StackOptions::default()
    });
    let body = json!({"website_id": "site_cap", "domain": "cap.example", "plan_id": "quick-v1",
                      "parameters": {"sample_behaviour": {"technical-seo": {"latency_ms": 300, "record_calls": true}}}});
    let runs: Vec<String> = (0..20).map(|_| start_run(&stack, &body)).collect();
    for run_id in &runs {
        let ended = wait_ended(&stack, run_id, Duration::from_secs(60));
        assert_eq!(step_status(&ended, "technical-seo"), "completed", "waiting for a slot never fails a step: {ended}");
    }
    let mut edges = Vec::new();
    for run_id in &runs {
        let call = stack.kv_get(&format!("sample:call:{run_id}:technical-seo:1")).expect("the call was recorded");
        let call: Value = serde_json::from_str(&call).expect("JSON");
        edges.push((call["start"].as_i64().expect("start"), 1));
        edges.push((call["end"].as_i64().expect("end"), -1));
    }
    // Ends before starts at the same instant: a slot given back can be taken at once.
    edges.sort();
    let (mut in_flight, mut most) = (0, 0);
    for (_, change) in edges {
        in_flight += change;
        most = most.max(in_flight);
    }
    assert!(most <= 2, "{most} calls of technical-seo were in flight at once");
    assert_eq!(most, 2, "the cap is used, not just respected");
    let (slots, _) = stack.sql("SELECT COUNT(*) AS n FROM service_slots", &[]);
    assert_eq!(slots[0]["n"], 0, "every slot was given back");
}
