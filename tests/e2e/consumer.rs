//! The queue consumer through the real local queues: retries, dead letters, inputs by
//! reference, and duplicate deliveries.

use std::time::Duration;

use baton_e2e::{poll_until, shared_stack, Stack};
use serde_json::{json, Value};

use crate::runs::{start_run, step, wait_terminal};

/// Stores a custom plan for client 0 directly (the plans API is tested elsewhere).
pub(crate) fn insert_plan(stack: &Stack, plan: &Value) {
    let plan_id = plan["plan_id"].as_str().expect("plan_id");
    stack.sql(
        "INSERT OR REPLACE INTO custom_plans (plan_id, client_id, plan_json, created_at) VALUES (?1, ?2, ?3, 0)",
        &[json!(plan_id), json!(stack.client_id(0)), json!(plan.to_string())],
    );
}

#[test]
fn transient_failures_are_retried_and_then_succeed() {
    let stack = shared_stack();
    let run_id = start_run(
        stack,
        &json!({
            "website_id": "site_retry",
            "domain": "retry.example",
            "plan_id": "quick-v1",
            "parameters": {"sample_behaviour": {
                "technical-seo": {"fail_transient": 1},
                "serp-intelligence": {"rate_limit": 1},
                "vitals-monitor": {"reject": 1},
            }},
        }),
    );
    let body = wait_terminal(stack, &run_id);
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    for service in ["technical-seo", "serp-intelligence", "vitals-monitor"] {
        assert_eq!(step(&body, service)["status"], "completed", "{service}: {body}");
        assert_eq!(step(&body, service)["attempts"], 2, "{service}: {body}");
    }
}

#[test]
fn a_task_that_exhausts_the_queue_retries_is_dead_lettered_and_the_run_goes_on() {
    let stack = shared_stack();
    insert_plan(
        stack,
        &json!({
            "plan_id": "dlq-e2e",
            "name": "Dead letter test",
            "max_run_duration_ms": 120000,
            "services": [
                {"service": "technical-seo", "timeout_ms": 30000,
                 "retry": {"initial_interval_ms": 0, "max_interval_ms": 0, "max_attempts": 20}},
                {"service": "vitals-monitor", "timeout_ms": 30000},
            ],
        }),
    );
    let run_id = start_run(
        stack,
        &json!({
            "website_id": "site_dlq",
            "domain": "dlq.example",
            "plan_id": "dlq-e2e",
            "parameters": {"sample_behaviour": {"technical-seo": {"fail_transient": 100}}},
        }),
    );
    let body = wait_terminal(stack, &run_id);
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    let technical = step(&body, "technical-seo");
    assert_eq!(technical["status"], "failed", "{body}");
    let error = technical["error"].as_str().unwrap_or("");
    assert!(error.contains("dead-lettered") && error.contains("503"), "the last error is kept: {error}");
    // The first attempt runs in place, in the orchestrator; its retry is a task message, which
    // the queue delivers 1 + max_retries (5) times before dead-lettering it.
    assert_eq!(technical["attempts"], 7, "{body}");
    assert_eq!(step(&body, "vitals-monitor")["status"], "completed");
}

#[test]
fn an_input_over_64_kib_travels_by_reference() {
    let stack = shared_stack();
    let filler = "x".repeat(80 * 1024);
    let run_id = start_run(
        stack,
        &json!({
            "website_id": "site_big",
            "domain": "big.example",
            "plan_id": "quick-v1",
            "parameters": {"notes": filler},
        }),
    );
    let body = wait_terminal(stack, &run_id);
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    let (rows, _) = stack.sql("SELECT service, output FROM steps WHERE run_id = ?1", &[json!(run_id)]);
    for row in rows {
        let output: Value = serde_json::from_str(row["output"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
        assert_eq!(output["received_by_reference"], true, "{}: {output}", row["service"]);
    }
    let stored = stack.kv_get(&format!("input:{run_id}:technical-seo:1")).expect("the input stored in KV");
    assert!(stored.len() > 64 * 1024);
}

#[test]
fn a_duplicated_task_message_does_not_run_an_attempt_twice() {
    let stack = shared_stack();
    let run_id = start_run(
        stack,
        &json!({
            "website_id": "site_dup_task",
            "domain": "dup.example",
            "plan_id": "quick-v1",
            // 202 and never a callback: the attempt stays running, claimed by its first delivery.
            "parameters": {"sample_behaviour": {"technical-seo": {"never_answer": true}}},
        }),
    );
    let claimed_at = poll_until("technical-seo to be claimed", Duration::from_secs(10), || {
        let (rows, _) = stack.sql(
            "SELECT claimed_at FROM steps WHERE run_id = ?1 AND service = 'technical-seo' AND claimed_at IS NOT NULL",
            &[json!(run_id)],
        );
        rows.first().map(|r| r["claimed_at"].clone())
    });
    let message = json!({"v": 1, "run_id": run_id, "service": "technical-seo", "attempt": 1});
    let r = stack.admin_post("/__test/queues/tasks", &json!({"messages": [message.clone(), message]}));
    assert_eq!(r.status, 200, "{}", r.text());
    // Give the duplicates a chance to be (wrongly) acted on, observed through a marker run.
    let marker =
        start_run(stack, &json!({"website_id": "site_marker", "domain": "marker.example", "plan_id": "quick-v1"}));
    wait_terminal(stack, &marker);
    let (rows, _) = stack.sql(
        "SELECT attempts, claimed_at, status FROM steps WHERE run_id = ?1 AND service = 'technical-seo'",
        &[json!(run_id)],
    );
    assert_eq!(rows[0]["attempts"], 1, "{rows:?}");
    assert_eq!(rows[0]["claimed_at"], claimed_at, "{rows:?}");
    assert_eq!(rows[0]["status"], "running");
}

#[test]
fn a_duplicated_analysis_message_yields_exactly_one_diagnosis() {
    let stack = shared_stack();
    let run_id = start_run(
        stack,
        &json!({
            "website_id": "site_dup_analysis",
            "domain": "dupanalysis.example",
            "plan_id": "quick-v1",
            "parameters": {"sample_behaviour": {"vitals-monitor": {"never_answer": true}}},
        }),
    );
    // Two steps complete; the third never answers. Settle it by hand and claim the fan-in
    // the way the orchestrator would, then deliver the analysis message several times.
    poll_until("two steps to complete", Duration::from_secs(10), || {
        let (rows, _) =
            stack.sql("SELECT COUNT(*) AS n FROM steps WHERE run_id = ?1 AND status = 'completed'", &[json!(run_id)]);
        (rows[0]["n"] == 2).then_some(())
    });
    stack.sql(
        "UPDATE steps SET status = 'failed', error = 'test', finished_at = 1 WHERE run_id = ?1 AND service = 'vitals-monitor'",
        &[json!(run_id)],
    );
    stack.sql(
        "UPDATE runs SET status = 'aggregating', claimed_at = started_at, partial = 1, missing = '[\"vitals-monitor\"]' WHERE run_id = ?1",
        &[json!(run_id)],
    );
    let message = json!({"v": 1, "traceId": run_id, "partial": true, "missing": ["vitals-monitor"]});
    let r =
        stack.admin_post("/__test/queues/analysis", &json!({"messages": [message.clone(), message.clone(), message]}));
    assert_eq!(r.status, 200, "{}", r.text());
    let body = wait_terminal(stack, &run_id);
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    let (rows, _) = stack.sql(
        "SELECT type, COUNT(*) AS n FROM kbase_events WHERE run_id = ?1 GROUP BY type ORDER BY type",
        &[json!(run_id)],
    );
    assert_eq!(rows, vec![json!({"type": "diagnosis", "n": 1}), json!({"type": "run_status", "n": 2})]);
    assert_eq!(body["diagnosis"]["missing_services"], json!(["vitals-monitor"]));
}

#[test]
fn malformed_queue_messages_are_acknowledged_without_stopping_the_batch() {
    let stack = shared_stack();
    let r = stack.admin_post(
        "/__test/queues/tasks",
        &json!({"messages": [{"garbage": true}, "not even an object", {"v": 1, "run_id": "run_nope", "service": "x", "attempt": 1}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The consumer keeps working afterwards.
    let run_id = start_run(
        stack,
        &json!({"website_id": "site_after_poison", "domain": "poison.example", "plan_id": "quick-v1"}),
    );
    assert_eq!(wait_terminal(stack, &run_id)["summary"]["status"], "completed");
}

#[test]
fn an_analysis_that_keeps_failing_is_finalised_from_the_dead_letter_queue() {
    let fault = vec![("BATON_FAULT_INJECTION".to_string(), "analysis".to_string())];
    let stack = baton_e2e::Stack::start(baton_e2e::StackOptions {
        vars: fault.clone(),
        consumer_vars: fault,
        ..baton_e2e::StackOptions::default()
    });
    let run_id =
        start_run(&stack, &json!({"website_id": "site_adlq", "domain": "adlq.example", "plan_id": "quick-v1"}));
    let body = wait_terminal(&stack, &run_id);
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    let diagnosis = &body["diagnosis"];
    assert_eq!(diagnosis["synthesis"], "rules", "{diagnosis}");
    assert!(diagnosis["synthesis_error"].as_str().is_some_and(|e| e.contains("retries exhausted")), "{diagnosis}");
    let (rows, _) =
        stack.sql("SELECT COUNT(*) AS n FROM kbase_events WHERE run_id = ?1 AND type = 'diagnosis'", &[json!(run_id)]);
    assert_eq!(rows[0]["n"], 1);
}

#[test]
fn a_service_configured_by_base_url_is_called_over_http() {
    let service = baton_e2e::fake_service::FakeService::start();
    let stack = stack_calling_vitals_monitor_at(&service.base_url());
    let run_id =
        start_run(&stack, &json!({"website_id": "site_urls", "domain": "urls.example", "plan_id": "quick-v1"}));
    let body = wait_terminal(&stack, &run_id);
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    let paths: Vec<String> = service.received().into_iter().map(|(path, _)| path).collect();
    assert_eq!(paths, vec!["/api/handshake", "/api/process"], "vitals-monitor went to its base URL");
    let (rows, _) = stack.sql("SELECT service, output FROM steps WHERE run_id = ?1", &[json!(run_id)]);
    for row in rows {
        let output: Value = serde_json::from_str(row["output"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
        let by_url = output["served_by"] == "url";
        assert_eq!(by_url, row["service"] == "vitals-monitor", "{row}");
    }
}

#[test]
fn a_service_address_that_refuses_connections_is_a_transient_network_error_and_retried() {
    // Nothing listens on the discard port: the connection is refused.
    let stack = stack_calling_vitals_monitor_at("http://127.0.0.1:9");
    let run_id =
        start_run(&stack, &json!({"website_id": "site_refused", "domain": "refused.example", "plan_id": "quick-v1"}));
    let sql = "SELECT status, attempts, error, error_kind FROM steps WHERE run_id = ?1 AND service = 'vitals-monitor'";
    let row = poll_until("vitals-monitor's first attempt to fail", Duration::from_secs(20), || {
        let (rows, _) = stack.sql(sql, &[json!(run_id)]);
        rows.into_iter().next().filter(|row| row["error"].is_string())
    });
    assert_eq!(row["error_kind"], "transient", "{row}");
    assert_eq!(row["error"], "network error calling service vitals_monitor", "{row}");
    assert!(["retrying", "running", "pending"].contains(&row["status"].as_str().unwrap_or("")), "{row}");
}

/// A stack whose orchestrator and consumer call vitals-monitor at `base` (`SERVICE_URLS`).
fn stack_calling_vitals_monitor_at(base: &str) -> Stack {
    let urls = json!({ "vitals_monitor": base }).to_string();
    let vars = vec![("SERVICE_URLS".to_string(), urls)];
    Stack::start(baton_e2e::StackOptions {
        vars: vars.clone(),
        consumer_vars: vars,
        ..baton_e2e::StackOptions::default()
    })
}
