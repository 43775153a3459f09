//! Deadlines kept to the second on the platform's timers (no poller tick is ever sent here,
//! and the polling interval is 5 minutes), bounded calls to services, the progress protocol
//! with heartbeats, cancels that reach services, and the seeds' literal contracts.

use std::time::Duration;

use baton_e2e::{now_ms, poll_until, result_headers, shared_stack, Stack, StackOptions};
use serde_json::{json, Value};

use crate::runs::start_run;

/// Creates a plan through the API (in the camelCase a client of the seeds writes).
pub(crate) fn create_plan(stack: &Stack, plan: &Value) {
    let r = stack.post_as(stack.token(0), "/api/orchestration/plans", plan);
    assert!(r.status == 201 || r.status == 409, "{}", r.text());
}

/// Polls the run until it is terminal (at most `limit`), and returns its GET body.
pub(crate) fn wait_terminal_within(stack: &Stack, run_id: &str, limit: Duration) -> Value {
    poll_until(&format!("run {run_id} to end"), limit, || {
        let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}"));
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        (body["terminal"] == true).then_some(body)
    })
}

/// The step rows of a run, by service.
fn step(stack: &Stack, run_id: &str, service: &str) -> Value {
    let (rows, _) = stack.sql(
        "SELECT status, attempts, started_at, finished_at, error_kind, output, heartbeat_at FROM steps \
         WHERE run_id = ?1 AND service = ?2",
        &[json!(run_id), json!(service)],
    );
    rows.into_iter().next().unwrap_or(Value::Null)
}

fn run_row(stack: &Stack, run_id: &str) -> Value {
    let (rows, _) = stack.sql(
        "SELECT status, started_at, deadline_at, completed_at, missing FROM runs WHERE run_id = ?1",
        &[json!(run_id)],
    );
    rows.into_iter().next().unwrap_or(Value::Null)
}

/// The last lines of the stack's output, for a failure message.
fn log_tail(stack: &Stack) -> String {
    let log = stack.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(150)..].join("\n")
}

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or_else(|| panic!("not an integer: {value}"))
}

#[test]
fn a_run_whose_service_never_answers_ends_timeout_within_two_seconds_of_its_deadline() {
    let stack = shared_stack();
    create_plan(
        stack,
        &json!({
            "planId": "deadline-20s", "name": "Twenty seconds", "maxRunDurationMs": 20_000,
            "services": [
                {"service": "technical-seo", "timeoutMs": 20_000},
                {"service": "serp-intelligence"},
                {"service": "vitals-monitor"},
            ],
        }),
    );
    let run_id = start_run(
        stack,
        &json!({"website_id": "site_deadline", "domain": "deadline.example", "plan_id": "deadline-20s",
                "parameters": {"sample_behaviour": {"technical-seo": {"never_answer": true}}}}),
    );
    let body = wait_terminal_within(stack, &run_id, Duration::from_secs(30));
    let run = run_row(stack, &run_id);
    assert_eq!(run["status"], "timeout", "{body}");
    let overshoot = int(&run["completed_at"]) - int(&run["deadline_at"]);
    assert!(int(&run["deadline_at"]) - int(&run["started_at"]) == 20_000, "{run}");
    assert!(overshoot <= 2_000, "ended {overshoot} ms after its deadline: {run}");
    assert_eq!(step(stack, &run_id, "technical-seo")["status"], "timeout");
    assert_eq!(step(stack, &run_id, "serp-intelligence")["status"], "completed");
    assert_eq!(step(stack, &run_id, "vitals-monitor")["status"], "completed");
    let (diagnoses, _) =
        stack.sql("SELECT payload FROM kbase_events WHERE run_id = ?1 AND type = 'diagnosis'", &[json!(run_id)]);
    assert_eq!(diagnoses.len(), 1, "{diagnoses:?}");
    let payload: Value = serde_json::from_str(diagnoses[0]["payload"].as_str().unwrap_or("{}")).unwrap_or_default();
    assert!(payload.to_string().contains("technical-seo"), "the diagnosis names the missing service: {payload}");
}

#[test]
fn a_retried_held_open_attempt_is_cut_at_the_runs_deadline() {
    // The first attempt times out at 6 s and its retry starts at about 7 s: allowed its own 6 s,
    // it would end the run 5 s late. Every call made for the run is bounded by its deadline.
    // On a stack of its own: its held calls keep an invocation of the local queue's one
    // consumer busy, which would delay other tests' timers.
    let own = Stack::start(StackOptions::default());
    let stack = &own;
    create_plan(
        stack,
        &json!({
            "planId": "held-past-deadline", "name": "Held past the deadline", "maxRunDurationMs": 8_000,
            "services": [
                {"service": "technical-seo", "timeoutMs": 6_000,
                 "retry": {"maxAttempts": 3, "initialIntervalMs": 500, "maxIntervalMs": 500}},
                {"service": "serp-intelligence"},
            ],
        }),
    );
    let run_id = start_run(
        stack,
        &json!({"website_id": "site_held_deadline", "domain": "held-deadline.example", "plan_id": "held-past-deadline",
                "parameters": {"sample_behaviour": {"technical-seo": {"hold_open": true}}}}),
    );
    let body = wait_terminal_within(stack, &run_id, Duration::from_secs(20));
    let run = run_row(stack, &run_id);
    assert_eq!(run["status"], "timeout", "{body}");
    let overshoot = int(&run["completed_at"]) - int(&run["deadline_at"]);
    assert!(overshoot <= 1_000, "ended {overshoot} ms after its deadline: {run}\n{}", log_tail(stack));
    let held = step(stack, &run_id, "technical-seo");
    assert_eq!(held["status"], "timeout", "{held}");
    assert_eq!(held["attempts"], 2, "timed out once, then cut by the run's deadline: {held}");
    assert_eq!(step(stack, &run_id, "serp-intelligence")["status"], "completed");
}

#[test]
fn a_held_open_connection_times_the_attempt_out_and_it_is_retried_within_its_budget() {
    let stack = shared_stack();
    create_plan(
        stack,
        &json!({
            "planId": "held-open", "name": "Held open", "maxRunDurationMs": 60_000,
            "services": [
                {"service": "technical-seo", "timeoutMs": 3_000,
                 "retry": {"maxAttempts": 2, "initialIntervalMs": 100, "maxIntervalMs": 100}},
                {"service": "serp-intelligence"},
            ],
        }),
    );
    let run_id = start_run(
        stack,
        &json!({"website_id": "site_held", "domain": "held.example", "plan_id": "held-open",
                "parameters": {"sample_behaviour": {"technical-seo": {"hold_open": true}}}}),
    );
    let body = wait_terminal_within(stack, &run_id, Duration::from_secs(20));
    let held = step(stack, &run_id, "technical-seo");
    assert_eq!(held["status"], "timeout", "{body}");
    assert_eq!(held["attempts"], 2, "timed out, retried once, timed out again: {held}");
    assert_eq!(held["error_kind"], "timeout", "{held}");
    let took = int(&held["finished_at"]) - int(&held["started_at"]);
    // Two attempts of 3 s, a backoff of at most 1 s (whole-second queue delay), and slack.
    assert!((6_000..=8_500).contains(&took), "the step took {took} ms: {held}");
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    assert_eq!(body["summary"]["servicesTimeout"], 1, "{body}");
}

#[test]
fn a_stage_that_reports_only_through_progress_completes_with_its_output_as_a_deliverable() {
    // A stack of its own: its heartbeats come from progress timers on the local queue's one
    // consumer, which other tests' held calls can keep busy past the wait below.
    let own = Stack::start(StackOptions::default());
    let stack = &own;
    let body = json!({
        "template_name": "course_creation",
        "parameters": {"topic": "Rust", "sample_behaviour": {"*": {"progress_only": true, "latency_ms": 2_500}}},
        "client_id": stack.client_id(0),
        "request_id": format!("progress-{}", now_ms()),
    });
    let r = stack.post_as(stack.token(0), "/execute", &body);
    assert_eq!(r.status, 202, "{}", r.text());
    let execution_id = r.json()["execution_id"].as_str().expect("execution_id").to_string();
    // Asked while it runs: the attempt records heartbeats.
    poll_until("a heartbeat of the running stage", Duration::from_secs(15), || {
        let (rows, _) = stack
            .sql("SELECT heartbeat_at FROM steps WHERE run_id = ?1 AND status = 'running'", &[json!(execution_id)]);
        rows.first().and_then(|r| r["heartbeat_at"].as_i64()).map(|_| ())
    });
    let done = poll_until("the execution to finish", Duration::from_secs(30), || {
        let r = stack.get_as(stack.token(0), &format!("/executions/{execution_id}"));
        let body = r.json();
        (body["terminal"] == true).then_some(body)
    });
    assert_eq!(done["status"], "completed", "{done}");
    let deliverables = done["deliverables"].as_array().expect("deliverables");
    assert_eq!(deliverables.len(), 1, "{done}");
    assert_eq!(deliverables[0]["content"]["topic"], "Rust", "{done}");

    // The same, with the output fetched from the service's result endpoint.
    let run_id = start_run(
        stack,
        &json!({"website_id": "site_fetch", "domain": "fetch.example", "plan_id": "quick-v1",
                "parameters": {"sample_behaviour": {"technical-seo":
                    {"progress_only": true, "result_by_fetch": true, "latency_ms": 1_000}}}}),
    );
    let body = wait_terminal_within(stack, &run_id, Duration::from_secs(30));
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    let fetched = step(stack, &run_id, "technical-seo");
    assert_eq!(fetched["status"], "completed", "{fetched}");
    let output: Value = serde_json::from_str(fetched["output"].as_str().unwrap_or("null")).unwrap_or_default();
    assert!(output.is_object() && output != json!({}), "the fetched output is recorded: {output}");
}

#[test]
fn an_attempt_whose_heartbeats_stop_times_out_long_before_its_own_timeout() {
    // A stack of its own: the heartbeat window (2 s) is shorter than the time other tests'
    // timers can hold the local queue's one consumer, which takes one batch at a time.
    let own = Stack::start(StackOptions::default());
    let stack = &own;
    create_plan(
        stack,
        &json!({
            "planId": "heartbeats", "name": "Heartbeats", "maxRunDurationMs": 60_000,
            "services": [
                {"service": "technical-seo", "timeoutMs": 40_000, "heartbeatTimeoutMs": 2_000,
                 "retry": {"maxAttempts": 1}},
                {"service": "serp-intelligence"},
            ],
        }),
    );
    let run_id = start_run(
        stack,
        &json!({"website_id": "site_heartbeat", "domain": "heartbeat.example", "plan_id": "heartbeats",
                "parameters": {"sample_behaviour": {"technical-seo": {"heartbeat_then_silent_ms": 3_000}}}}),
    );
    let body = wait_terminal_within(stack, &run_id, Duration::from_secs(20));
    let silent = step(stack, &run_id, "technical-seo");
    assert_eq!(silent["status"], "timeout", "{body}");
    assert!(silent["heartbeat_at"].is_i64(), "heartbeats were recorded: {silent}\n{}", log_tail(stack));
    let took = int(&silent["finished_at"]) - int(&silent["started_at"]);
    let after_last_beat = int(&silent["finished_at"]) - int(&silent["heartbeat_at"]);
    assert!((3_000..=8_000).contains(&took), "timed out {took} ms after dispatch: {silent}");
    assert!((2_000..=3_500).contains(&after_last_beat), "{after_last_beat} ms after the last heartbeat: {silent}");
}

#[test]
fn a_cancel_reaches_the_service_in_flight_and_a_late_result_changes_nothing() {
    let stack = shared_stack();
    let run_id = start_run(
        stack,
        &json!({"website_id": "site_tell", "domain": "tell.example", "plan_id": "quick-v1",
                "parameters": {"sample_behaviour": {"technical-seo": {"never_answer": true}}}}),
    );
    poll_until("technical-seo accepted", Duration::from_secs(10), || {
        let (rows, _) = stack.sql(
            "SELECT 1 FROM steps WHERE run_id = ?1 AND service = 'technical-seo' AND progress IS NOT NULL",
            &[json!(run_id)],
        );
        (!rows.is_empty()).then_some(())
    });
    let r = stack.post_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}/cancel"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let told = poll_until("the service told of the cancel", Duration::from_secs(10), || {
        stack.kv_get(&format!("sample:cancelled:{run_id}:technical-seo"))
    });
    let told: Value = serde_json::from_str(&told).expect("JSON");
    assert_eq!(told["request"]["attempt"], 1, "{told}");
    assert_eq!(told["request"]["stageId"], format!("{run_id}:technical-seo"), "{told}");

    let late = json!({"status": "completed", "attempt": 1, "output": {"late": true}}).to_string();
    let key = stack.secrets().key_for("technical_seo");
    let signed = result_headers(&key, &run_id, "technical-seo", 1, late.as_bytes(), now_ms());
    let headers: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = stack.send("POST", &format!("/api/jobs/{run_id}/results/technical-seo"), &headers, Some(late.as_bytes()));
    assert_eq!(r.status, 200, "a late result is acknowledged: {}", r.text());
    assert_eq!(step(stack, &run_id, "technical-seo")["status"], "cancelled");
    assert_eq!(step(stack, &run_id, "technical-seo")["output"], Value::Null);
    assert_eq!(run_row(stack, &run_id)["status"], "cancelled");
}

#[test]
fn the_original_analysis_message_and_a_custom_event_service_name_are_honoured_by_every_worker() {
    let stack = Stack::start(StackOptions {
        vars: vec![("ORCHESTRATOR_SERVICE_NAME".into(), "hermes".into())],
        ..StackOptions::default()
    });
    let run_id =
        start_run(&stack, &json!({"website_id": "site_hermes", "domain": "hermes.example", "plan_id": "quick-v1"}));
    wait_terminal_within(&stack, &run_id, Duration::from_secs(30));
    // Put the run back in analysis, then ask for it in the original message shape.
    stack.sql(
        "UPDATE runs SET status = 'aggregating', completed_at = NULL, diagnosis_event_id = NULL, \
         version = version + 1 WHERE run_id = ?1",
        &[json!(run_id)],
    );
    stack.sql("DELETE FROM kbase_events WHERE run_id = ?1 AND type != 'run_status'", &[json!(run_id)]);
    let r = stack.admin_post("/__test/queues/analysis", &json!({"messages": [{"traceId": run_id}]}));
    assert!(r.status < 300, "{}", r.text());
    poll_until("the run analysed again", Duration::from_secs(15), || {
        (run_row(&stack, &run_id)["status"] == "completed").then_some(())
    });
    let (services, _) = stack.sql("SELECT DISTINCT service FROM kbase_events WHERE run_id = ?1", &[json!(run_id)]);
    assert_eq!(services, vec![json!({"service": "hermes"})], "every event of the run carries the name");
}
