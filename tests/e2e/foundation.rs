//! The stack comes up, every worker reaches its bindings, and the poller ticks.

use std::time::Duration;

use baton_e2e::{poll_until, shared_stack};
use serde_json::{json, Value};

#[test]
fn health_names_each_worker_and_the_bindings_it_reached_for_the_operator_only() {
    let stack = shared_stack();
    let public = stack.get("/health");
    assert_eq!(
        (public.status, public.json()),
        (200, json!({"status": "ok"})),
        "the public health says only its status"
    );
    let as_client = stack.get_as(stack.token(0), "/health");
    assert_eq!(as_client.json(), json!({"status": "ok"}), "a client token is not the admin's");
    let r = stack.admin_get("/health");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["worker"], "orchestrator");
    let bindings: Vec<(&str, bool)> = body["bindings"]
        .as_array()
        .expect("bindings array")
        .iter()
        .map(|b| (b["binding"].as_str().unwrap_or(""), b["ok"].as_bool().unwrap_or(false)))
        .collect();
    for name in ["DB_0", "DB_1", "KV", "TASK_QUEUE", "LLM_ANALYSIS_QUEUE", "POLLER", "CONSUMER", "KAM"] {
        assert!(bindings.contains(&(name, true)), "orchestrator binding {name} not ok: {body}");
    }
    for worker in ["poller", "consumer", "sample-services"] {
        assert_eq!(body["workers"][worker]["worker"], worker, "{worker} health not reached: {body}");
    }
    let consumer_bindings = body["workers"]["consumer"]["bindings"].as_array().expect("consumer bindings");
    assert!(consumer_bindings.iter().all(|b| b["ok"] == true), "{body}");
}

#[test]
fn a_cron_tick_of_the_poller_records_last_run_in_kv() {
    let stack = shared_stack();
    let before = stack.kv_get("orchestration:last_run");
    let r = stack.cron_tick();
    assert_eq!(r.status, 200, "{}", r.text());
    let last: Value = poll_until("orchestration:last_run to change", Duration::from_secs(10), || {
        let now = stack.kv_get("orchestration:last_run");
        (now.is_some() && now != before).then(|| serde_json::from_str(&now.unwrap_or_default()).unwrap_or(Value::Null))
    });
    assert!(last["at"].as_u64().is_some(), "last_run has a timestamp: {last}");
}

#[test]
fn unknown_routes_and_wrong_methods_get_json_errors() {
    let stack = shared_stack();
    let r = stack.get("/no/such/route");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    assert_eq!(r.json()["success"], false);
    let r = stack.send("DELETE", "/health", &[], None);
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
}

#[test]
fn admin_routes_refuse_missing_and_wrong_tokens() {
    let stack = shared_stack();
    let r = stack.send("POST", "/admin/poller/tick", &[], None);
    assert_eq!(r.status, 401, "{}", r.text());
    let r = stack.post_as("not-the-admin-token", "/admin/poller/tick", &json!({}));
    assert_eq!(r.status, 401, "{}", r.text());
    let r = stack.post_as(stack.token(0), "/__test/sql", &json!({"sql": "SELECT 1"}));
    assert_eq!(r.status, 401, "a client token is not an admin token: {}", r.text());
}
