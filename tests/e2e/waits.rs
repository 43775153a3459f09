//! Wait steps: a step that waits for an event delivered to its run
//! (`POST /api/orchestration/runs/:run_id/events/:name`) instead of calling a service. An
//! event that arrives before its wait starts is kept and taken when the wait starts; a second
//! delivery is `already_delivered`; an event racing the wait's start is taken exactly once; a
//! payload that does not match is refused; a wait whose event never comes times out on time.
//! The CLI's `signal`, and the run page showing what a step waits for.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_e2e::browser::{self, Browser};
use baton_e2e::{cli, poll_until, shared_stack, Stack};
use serde_json::{json, Value};

use crate::deadlines::{create_plan, wait_terminal_within};
use crate::runs::start_run;

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{nanos:x}")
}

/// `technical-seo`, then `approve` (waits for `approval` with `approved: true`, up to
/// `wait_ms`), then `serp-intelligence`.
fn approval_plan(stack: &Stack, plan_id: &str, wait_ms: u64) {
    create_plan(
        stack,
        &json!({
            "planId": plan_id, "name": "Approval", "maxRunDurationMs": 60_000,
            "services": [
                {"service": "technical-seo", "timeoutMs": 20_000},
                {"service": "approve", "kind": "wait", "event": "approval", "match": {"approved": true},
                 "timeoutMs": wait_ms, "dependsOn": ["technical-seo"]},
                {"service": "serp-intelligence", "dependsOn": ["approve"], "timeoutMs": 20_000},
            ],
        }),
    );
}

fn deliver(stack: &Stack, client: usize, run_id: &str, name: &str, payload: &Value) -> (u16, Value) {
    let r = stack.post_as(stack.token(client), &format!("/api/orchestration/runs/{run_id}/events/{name}"), payload);
    (r.status, serde_json::from_str(&r.text()).unwrap_or(Value::Null))
}

fn step(body: &Value, service: &str) -> Value {
    body["service_results"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["service"] == service))
        .cloned()
        .unwrap_or(Value::Null)
}

fn run_body(stack: &Stack, run_id: &str) -> Value {
    stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}")).json()
}

fn start(stack: &Stack, plan_id: &str, latency_ms: u64) -> String {
    start_run(
        stack,
        &json!({"website_id": "site_waits", "domain": "waits.example", "plan_id": plan_id,
                "parameters": {"sample_behaviour": {"technical-seo": {"latency_ms": latency_ms}}}}),
    )
}

#[test]
fn an_event_delivered_before_its_wait_starts_is_taken_when_it_starts_and_a_second_is_already_delivered() {
    let stack = shared_stack();
    let plan_id = unique("wait-early");
    approval_plan(stack, &plan_id, 20_000);
    let run_id = start(stack, &plan_id, 2_000);
    let payload = json!({"approved": true, "by": "ana"});
    let (status, body) = deliver(stack, 0, &run_id, "approval", &payload);
    assert_eq!(status, 200, "{body}");
    assert_eq!((&body["status"], &body["step"]), (&json!("delivered"), &json!("approve")), "{body}");
    assert_eq!(body["step_status"], "pending", "the wait has not started: the event waits for it");
    let (status, again) = deliver(stack, 0, &run_id, "approval", &json!({"approved": true, "by": "bob"}));
    assert_eq!((status, &again["status"]), (200, &json!("already_delivered")), "{again}");

    let ended = wait_terminal_within(stack, &run_id, Duration::from_secs(30));
    assert_eq!(ended["status"], "completed", "{ended}");
    let approve = step(&ended, "approve");
    assert_eq!((&approve["status"], &approve["attempts"]), (&json!("completed"), &json!(1)), "{approve}");
    assert_eq!(approve["output"], payload, "the first delivery's payload is the step's output");
    assert_eq!(approve["waits_for"], "approval");
    assert_eq!(step(&ended, "serp-intelligence")["status"], "completed");
    assert_eq!(step(&ended, "technical-seo")["waits_for"], Value::Null);
    let (rows, _) = stack.sql("SELECT COUNT(*) AS n FROM run_inbox WHERE run_id = ?1", &[json!(run_id)]);
    assert_eq!(rows[0]["n"], 1, "one event kept per name");
    let (status, late) = deliver(stack, 0, &run_id, "approval", &payload);
    assert_eq!(status, 409, "an ended run takes no event: {late}");
}

#[test]
fn a_waiting_step_takes_its_event_when_it_comes_and_a_payload_that_does_not_match_is_refused() {
    let stack = shared_stack();
    let plan_id = unique("wait-live");
    approval_plan(stack, &plan_id, 30_000);
    let browser = browser::available().then(|| {
        let browser = Browser::start();
        crate::ui::sign_in(&browser, &stack.base_url(), stack.token(0));
        browser
    });
    let run_id = start(stack, &plan_id, 0);
    poll_until("the wait to start", Duration::from_secs(20), || {
        (step(&run_body(stack, &run_id), "approve")["status"] == "running").then_some(())
    });
    if let Some(browser) = &browser {
        browser.goto(&format!("{}/ui/runs/{run_id}", stack.base_url()));
        let shown = browser.wait_for(
            "the waiting step",
            Duration::from_secs(10),
            "const w = document.querySelector(\"#steps [data-waits-for='approval']\"); return w ? w.textContent : false",
            json!([]),
        );
        assert!(shown.as_str().unwrap_or("").starts_with("waiting for event approval"), "{shown}");
    }
    let body = run_body(stack, &run_id);
    assert_eq!(step(&body, "serp-intelligence")["attempts"], 0, "its dependent waits with it");

    let (status, refused) = deliver(stack, 0, &run_id, "approval", &json!({"approved": false}));
    assert_eq!(status, 409, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("approved must be true"), "names the field: {refused}");
    let (status, refused) = deliver(stack, 0, &run_id, "other", &json!({}));
    assert_eq!(status, 404, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap_or("").contains("approval"), "names what it waits for");
    let (status, refused) = deliver(stack, 0, &run_id, "Bad%20Name", &json!({}));
    assert_eq!((status, &refused["error"]["code"]), (400, &json!("invalid_event")), "{refused}");
    assert_eq!(deliver(stack, 1, &run_id, "approval", &json!({"approved": true})).0, 404, "another client's run");
    let (rows, _) = stack.sql("SELECT COUNT(*) AS n FROM run_inbox WHERE run_id = ?1", &[json!(run_id)]);
    assert_eq!(rows[0]["n"], 0, "nothing refused is kept");

    let signalled =
        cli::run(stack, stack.token(0), &["signal", &run_id, "approval", "--data", r#"{"approved": true}"#]);
    assert_eq!(signalled.code, 0, "{}", signalled.stderr);
    assert_eq!(signalled.stdout, format!("event approval delivered to run {run_id}: step approve is completed\n"));
    let ended = wait_terminal_within(stack, &run_id, Duration::from_secs(30));
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(step(&ended, "approve")["output"], json!({"approved": true}));
    if let Some(browser) = &browser {
        browser.wait_for(
            "the run completed on the page",
            Duration::from_secs(20),
            "const f = document.getElementById('run-facts'); return f && f.dataset.status === 'completed' \
               && document.querySelector(\"#steps [data-waits-for='approval']\").textContent === 'waits for event approval'",
            json!([]),
        );
    }
}

#[test]
fn a_wait_whose_event_never_comes_times_out_on_time_and_its_dependent_is_skipped() {
    let stack = shared_stack();
    let plan_id = unique("wait-timeout");
    approval_plan(stack, &plan_id, 3_000);
    let run_id = start(stack, &plan_id, 0);
    let ended = wait_terminal_within(stack, &run_id, Duration::from_secs(30));
    let approve = step(&ended, "approve");
    assert_eq!(approve["status"], "timeout", "{ended}");
    assert_eq!(step(&ended, "serp-intelligence")["status"], "skipped", "{ended}");
    let (rows, _) = stack.sql(
        "SELECT finished_at - started_at AS took FROM steps WHERE run_id = ?1 AND service = 'approve'",
        &[json!(run_id)],
    );
    let took = rows[0]["took"].as_i64().unwrap_or(0);
    assert!((3_000..=5_000).contains(&took), "the wait ended {took} ms after it started, its timeout is 3 s");
}

#[test]
fn events_racing_their_waits_start_are_taken_exactly_once() {
    let stack = shared_stack();
    let plan_id = unique("wait-race");
    approval_plan(stack, &plan_id, 30_000);
    // Each event is sent as its run starts; the wait starts when technical-seo answers, a few
    // milliseconds either side of the delivery.
    let runs: Vec<(String, Value)> = (0..8)
        .map(|i| {
            let run_id = start(stack, &plan_id, i * 10);
            let payload = json!({"approved": true, "n": i});
            let (status, body) = deliver(stack, 0, &run_id, "approval", &payload);
            assert_eq!((status, &body["status"]), (200, &json!("delivered")), "{body}");
            (run_id, payload)
        })
        .collect();
    for (run_id, payload) in &runs {
        let ended = wait_terminal_within(stack, run_id, Duration::from_secs(30));
        assert_eq!(ended["status"], "completed", "{ended}");
        let approve = step(&ended, "approve");
        assert_eq!((&approve["attempts"], &approve["output"]), (&json!(1), payload), "{approve}");
        let dependent = step(&ended, "serp-intelligence");
        assert_eq!((&dependent["status"], &dependent["attempts"]), (&json!("completed"), &json!(1)), "{dependent}");
    }
}

/// `headers` of an event delivery signed with `key` at `at_ms` (no API token).
fn signed_event(key: &str, run_id: &str, name: &str, body: &[u8], at_ms: u64) -> Vec<(&'static str, String)> {
    use baton_core::signature::{headers, Purpose, Signed};
    let path = format!("/api/orchestration/runs/{run_id}/events/{name}");
    let request = Signed { purpose: Purpose::Event, method: "POST", path: &path, attempt: None, body, trace: None };
    let mut out = headers(key, &request, baton_core::time::Millis::new(at_ms));
    out.push(("Content-Type", "application/json".to_string()));
    out
}

#[test]
fn a_sender_without_a_token_delivers_an_event_signed_with_a_key_of_the_runs_client() {
    let stack = shared_stack();
    let plan_id = unique("wait-signed");
    approval_plan(stack, &plan_id, 30_000);
    let run_id = start(stack, &plan_id, 0);
    poll_until("the wait to start", Duration::from_secs(20), || {
        (step(&run_body(stack, &run_id), "approve")["status"] == "running").then_some(())
    });
    let path = format!("/api/orchestration/runs/{run_id}/events/approval");
    let send = |headers: &[(&'static str, String)], body: &[u8]| {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = stack.send("POST", &path, &headers, Some(body));
        (r.status, r.text())
    };
    let body = br#"{"approved": true, "by": "approval-tool"}"#;
    let now = baton_e2e::now_ms();

    // Refused, keeping nothing: another client's key, a body other than the one signed, a
    // signature for another event, and no signature and no token at all.
    let (status, text) = send(&signed_event("dev-event-key-bob", &run_id, "approval", body, now), body);
    assert_eq!(status, 401, "{text}");
    let signed = signed_event("dev-event-key-alice", &run_id, "approval", body, now);
    let (status, text) = send(&signed, br#"{"approved": true, "by": "someone else"}"#);
    assert_eq!(status, 401, "{text}");
    let (status, text) = send(&signed_event("dev-event-key-alice", &run_id, "other", body, now), body);
    assert_eq!(status, 401, "{text}");
    let (status, text) = send(&[("Content-Type", "application/json".to_string())], body);
    assert_eq!(status, 401, "{text}");
    let (rows, _) = stack.sql("SELECT COUNT(*) AS n FROM run_inbox WHERE run_id = ?1", &[json!(run_id)]);
    assert_eq!(rows[0]["n"], 0, "nothing refused is kept");

    let (status, text) = send(&signed, body);
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(answer["status"], "delivered", "{answer}");
    let (status, again) = send(&signed, body);
    assert_eq!(status, 200, "{again}");
    assert!(again.contains("already_delivered"), "a replay within the window is a second delivery: {again}");
    let ended = wait_terminal_within(stack, &run_id, Duration::from_secs(30));
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(step(&ended, "approve")["output"], json!({"approved": true, "by": "approval-tool"}));
}
