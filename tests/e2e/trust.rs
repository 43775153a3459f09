//! Trust boundaries: signatures bound to the run, step and attempt they authorise, a key per
//! service, hand-overs that trust nothing but ids, worker keys that stay path segments, a
//! public health that tells nothing, and quotas per client.

use std::time::Duration;

use baton_e2e::{now_ms, poll_until, result_headers, shared_stack, Stack, StackOptions};
use serde_json::{json, Value};

use crate::runs::start_run;

/// A run whose services accept and never answer: it stays running, ready to be reported on.
fn waiting_run(stack: &Stack, site: &str) -> String {
    let run_id = start_run(
        stack,
        &json!({"website_id": site, "domain": "trust.example", "plan_id": "quick-v1",
                "parameters": {"sample_behaviour": {"*": {"never_answer": true}}}}),
    );
    poll_until("the first wave accepted", Duration::from_secs(10), || {
        let (rows, _) = stack.sql(
            "SELECT 1 FROM steps WHERE run_id = ?1 AND service = 'technical-seo' AND progress IS NOT NULL",
            &[json!(run_id)],
        );
        (!rows.is_empty()).then_some(())
    });
    run_id
}

/// Posts a result for `service` of `run_id` at `path_run` (the run the request is sent to),
/// signed for `signed_run`/`signed_service`/`signed_attempt` with `key`.
#[allow(clippy::too_many_arguments)]
fn report(
    stack: &Stack,
    key: &str,
    signed_run: &str,
    signed_service: &str,
    signed_attempt: u32,
    path_run: &str,
    path_service: &str,
    body: &str,
) -> (u16, Value) {
    let signed = result_headers(key, signed_run, signed_service, signed_attempt, body.as_bytes(), now_ms());
    let headers: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r =
        stack.send("POST", &format!("/api/jobs/{path_run}/results/{path_service}"), &headers, Some(body.as_bytes()));
    (r.status, r.json())
}

#[test]
fn a_result_signature_holds_only_for_its_run_step_and_attempt_and_its_service_key() {
    let stack = shared_stack();
    let a = waiting_run(stack, "site_trust_a");
    let b = waiting_run(stack, "site_trust_b");
    let key = stack.secrets().key_for("technical_seo");
    assert_ne!(key, stack.secrets().worker_secret, "technical-seo has its own key here");
    let body = json!({"status": "completed", "attempt": 1, "output": {"from": "technical-seo"}}).to_string();

    let (status, answer) = report(stack, &key, &a, "technical-seo", 1, &b, "technical-seo", &body);
    assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("unauthorized")), "replayed to another run");
    let (status, _) = report(stack, &key, &a, "technical-seo", 1, &a, "serp-intelligence", &body);
    assert_eq!(status, 401, "replayed to another step");
    // The same signature sent as a report on attempt 2.
    let mut signed = result_headers(&key, &a, "technical-seo", 1, body.as_bytes(), now_ms());
    for (name, value) in signed.iter_mut() {
        if *name == baton_core::signature::ATTEMPT_HEADER {
            *value = "2".into();
        }
    }
    let headers: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = stack.send("POST", &format!("/api/jobs/{a}/results/technical-seo"), &headers, Some(body.as_bytes()));
    assert_eq!(r.status, 401, "replayed for another attempt: {}", r.text());
    // Without its attempt header: the answer names the header, not a mismatch.
    signed.retain(|(name, _)| *name != baton_core::signature::ATTEMPT_HEADER);
    let headers: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = stack.send("POST", &format!("/api/jobs/{a}/results/technical-seo"), &headers, Some(body.as_bytes()));
    assert_eq!(r.status, 401, "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("missing header X-Baton-Attempt"), "the message names the header: {message}");
    let vitals_key = stack.secrets().key_for("vitals_monitor");
    let (status, _) = report(stack, &vitals_key, &a, "technical-seo", 1, &a, "technical-seo", &body);
    assert_eq!(status, 401, "signed with another service's key");
    let (status, _) =
        report(stack, &stack.secrets().worker_secret.clone(), &a, "technical-seo", 1, &a, "technical-seo", &body);
    assert_eq!(status, 401, "a service with its own key no longer takes the shared secret");

    let (status, answer) = report(stack, &key, &a, "technical-seo", 1, &a, "technical-seo", &body);
    assert_eq!((status, answer["result"].as_str()), (200, Some("recorded")), "{answer}");
    let (status, answer) = report(stack, &key, &a, "technical-seo", 1, &a, "technical-seo", &body);
    assert_eq!((status, answer["result"].as_str()), (200, Some("already_recorded")), "a replay is a no-op: {answer}");
    let (rows, _) = stack.sql(
        "SELECT run_id, status FROM steps WHERE service = 'technical-seo' AND run_id IN (?1, ?2) ORDER BY run_id = ?1 DESC",
        &[json!(a), json!(b)],
    );
    assert_eq!((rows[0]["status"].as_str(), rows[1]["status"].as_str()), (Some("completed"), Some("running")));

    // During a rotation both of a service's keys are accepted.
    let previous = stack.secrets().service_keys["vitals_monitor"][1].clone();
    let body = json!({"status": "completed", "attempt": 1, "output": {}}).to_string();
    let (status, answer) = report(stack, &previous, &b, "vitals-monitor", 1, &b, "vitals-monitor", &body);
    assert_eq!((status, answer["result"].as_str()), (200, Some("recorded")), "{answer}");
}

#[test]
fn a_hand_over_trusts_only_ids_and_the_run_as_d1_has_it() {
    let stack = shared_stack();
    let run_id = waiting_run(stack, "site_trust_drive");
    let (before, _) =
        stack.sql("SELECT service, status, attempts FROM steps WHERE run_id = ?1 ORDER BY service", &[json!(run_id)]);
    // A hand-over that brings its own plan and parameters and names a step the run does not have.
    let forged = json!({
        "run_id": run_id,
        "tasks": [{"v": 1, "run_id": run_id, "service": "evil-step", "attempt": 1}],
        "run": {"plan_json": "{\"services\": [{\"service\": \"evil-step\", \"worker_key\": \"elsewhere\"}]}"},
        "parameters": {"sample_behaviour": {"*": {"fail_permanent": true}}},
    });
    let r = stack.admin_post("/__test/drive", &forged);
    assert_eq!(r.json()["status"], 200, "{}", r.text());
    let (after, _) =
        stack.sql("SELECT service, status, attempts FROM steps WHERE run_id = ?1 ORDER BY service", &[json!(run_id)]);
    assert_eq!(before, after, "nothing the run's plan in D1 does not have was done");
    // Tasks of another run than the one handed over are refused.
    let mixed = json!({"run_id": run_id, "tasks": [{"v": 1, "run_id": "run_1795000000000_0123456789abcdef", "service": "technical-seo", "attempt": 1}]});
    let r = stack.admin_post("/__test/drive", &mixed);
    assert_eq!(r.json()["status"], 400, "{}", r.text());
}

#[test]
fn worker_keys_that_are_not_configured_service_names_are_refused() {
    let stack = shared_stack();
    for bad in ["..", "/x", "a/b", "elsewhere"] {
        let plan = json!({"plan_id": format!("wk-{}", now_ms()), "name": "Worker keys", "max_run_duration_ms": 60_000,
                          "services": [{"service": "a", "worker_key": bad}]});
        let r = stack.post_as(stack.token(0), "/api/orchestration/plans", &plan);
        assert_eq!(r.status, 400, "worker_key {bad:?}: {}", r.text());
        let body = r.json();
        let fields: Vec<&str> = body["error"]["details"]["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["field"].as_str())
            .collect();
        assert!(fields.contains(&"services[0].worker_key"), "worker_key {bad:?}: {body}");
    }
}

#[test]
fn each_client_quota_answers_as_documented_and_other_clients_are_unaffected() {
    let stack = Stack::start(StackOptions {
        vars: vec![(
            "QUOTAS".into(),
            json!({"bob": {"active_runs": 1, "custom_plans": 1, "queued_executions": 0, "max_priority": "normal"}})
                .to_string(),
        )],
        ..StackOptions::default()
    });
    let (alice, bob) = (stack.token(0).to_string(), stack.token(1).to_string());
    let waiting = json!({"website_id": "site_quota", "domain": "quota.example", "plan_id": "quick-v1",
                         "parameters": {"sample_behaviour": {"*": {"never_answer": true}}}});
    let first = stack.post_as(&bob, "/api/orchestration/run", &waiting);
    assert_eq!(first.status, 202, "{}", first.text());
    let over = stack.post_as(&bob, "/api/orchestration/run", &waiting);
    assert_eq!(over.status, 429, "{}", over.text());
    assert_eq!(over.header("Retry-After"), Some("30"));
    assert_eq!(over.json()["error"]["details"]["quota"], "active_runs");
    assert_eq!(stack.post_as(&alice, "/api/orchestration/run", &waiting).status, 202, "alice is unaffected");
    // Once bob's run ends, he may start another.
    let run_id = first.json()["run_id"].as_str().expect("run_id").to_string();
    let r = stack.post_as(&bob, &format!("/api/orchestration/runs/{run_id}/cancel"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(stack.post_as(&bob, "/api/orchestration/run", &waiting).status, 202, "the quota clears");

    let plan = |id: &str| json!({"plan_id": id, "name": "Q", "max_run_duration_ms": 60_000, "services": [{"service": "technical-seo"}]});
    assert_eq!(stack.post_as(&bob, "/api/orchestration/plans", &plan("q1")).status, 201);
    let r = stack.post_as(&bob, "/api/orchestration/plans", &plan("q2"));
    assert_eq!((r.status, r.json()["error"]["details"]["quota"].as_str()), (403, Some("custom_plans")), "{}", r.text());
    assert_eq!(stack.post_as(&alice, "/api/orchestration/plans", &plan("q2")).status, 201, "alice is unaffected");

    let execute = |priority: &str| json!({"template_name": "course_creation", "parameters": {"topic": "Q"}, "priority": priority});
    let r = stack.post_as(&bob, "/execute", &execute("critical"));
    assert_eq!((r.status, r.json()["error"]["details"]["quota"].as_str()), (403, Some("max_priority")), "{}", r.text());
    let r = stack.post_as(&bob, "/execute", &execute("normal"));
    assert_eq!(
        (r.status, r.json()["error"]["details"]["quota"].as_str()),
        (429, Some("queued_executions")),
        "{}",
        r.text()
    );
    assert_eq!(stack.post_as(&alice, "/execute", &execute("critical")).status, 202, "alice is unaffected");
}
