//! Child runs: a step of kind `run` starts a run of another plan for the same client, website
//! and domain, and ends with the child's outcome. The child's output feeds the parent's
//! dependent steps; a failed child fails the step (the trigger rules decide the rest); a
//! cancelled parent cancels its child; a cancel racing a child's completion ends each parent
//! once and leaves no child open. Both runs link to each other in the API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_e2e::browser::{self, Browser};
use baton_e2e::{poll_until, shared_stack, Stack};
use serde_json::{json, Value};

use crate::deadlines::{create_plan, wait_terminal_within};
use crate::runs::start_run;

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{nanos:x}")
}

/// A child plan: one step, `bitware-content-granulator` (its output echoes the run's `topic`).
fn child_plan(stack: &Stack, plan_id: &str) {
    create_plan(
        stack,
        &json!({
            "plan_id": plan_id, "name": "Child", "max_run_duration_ms": 60_000,
            "services": [{"service": "bitware-content-granulator", "timeout_ms": 30_000, "retry": {"max_attempts": 1}}],
        }),
    );
}

/// A run step starting `child` with the granulator behaving as `behaviour`.
fn run_step(child: &str, behaviour: Value) -> Value {
    json!({"service": "audit", "kind": "run", "plan_id": child,
           "parameters": {"sample_behaviour": {"bitware-content-granulator": behaviour}}})
}

fn step(body: &Value, service: &str) -> Value {
    body["service_results"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["service"] == service))
        .cloned()
        .unwrap_or(Value::Null)
}

fn run_body(stack: &Stack, run_id: &str) -> Value {
    let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn start(stack: &Stack, plan_id: &str, parameters: Value) -> String {
    start_run(
        stack,
        &json!({"website_id": "site_children", "domain": "children.example", "plan_id": plan_id,
                "parameters": parameters}),
    )
}

/// The child `audit` started, once it has started.
fn child_of(stack: &Stack, parent: &str) -> String {
    poll_until(&format!("the child of {parent}"), Duration::from_secs(30), || {
        step(&run_body(stack, parent), "audit")["child_run_id"].as_str().map(str::to_string)
    })
}

/// The statuses of every child `parent` started, from D1.
fn children(stack: &Stack, parent: &str) -> Vec<(String, String)> {
    let (rows, _) =
        stack.sql("SELECT run_id, status FROM runs WHERE parent_run_id = ?1 ORDER BY run_id", &[json!(parent)]);
    rows.iter()
        .map(|r| (r["run_id"].as_str().unwrap_or("").to_string(), r["status"].as_str().unwrap_or("").to_string()))
        .collect()
}

#[test]
fn a_run_step_starts_a_child_whose_outcome_feeds_the_dependent_step_and_the_runs_link_both_ways() {
    let stack = shared_stack();
    let (child, parent) = (unique("child-ok"), unique("parent-ok"));
    child_plan(stack, &child);
    let mut audit_step = run_step(&child, json!({"latency_ms": 200}));
    audit_step["depends_on"] = json!(["serp-intelligence"]);
    audit_step["parameters_from"] = json!({"topic": "serp-intelligence.top_competitors.0"});
    create_plan(
        stack,
        &json!({
            "plan_id": parent, "name": "Parent", "max_run_duration_ms": 90_000,
            "services": [
                {"service": "serp-intelligence", "timeout_ms": 20_000},
                audit_step,
                {"service": "technical-seo", "depends_on": ["audit"], "timeout_ms": 20_000},
            ],
        }),
    );
    let run_id = start(stack, &parent, json!({"sample_behaviour": {"technical-seo": {"record_calls": true}}}));

    let ended = wait_terminal_within(stack, &run_id, Duration::from_secs(60));
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["parent"], Value::Null, "a run a client started has no parent");
    let audit = step(&ended, "audit");
    assert_eq!((&audit["status"], &audit["attempts"]), (&json!("completed"), &json!(1)), "{audit}");
    let child_id = audit["child_run_id"].as_str().expect("the step names its child").to_string();
    assert_eq!(audit["output"]["run_id"], child_id.as_str(), "{audit}");
    assert_eq!(audit["output"]["status"], "completed");
    assert_eq!(audit["output"]["summary"]["servicesCompleted"], 1, "{audit}");
    assert!(audit["output"]["diagnosis"].is_object(), "the child's diagnosis: {audit}");

    let child_run = run_body(stack, &child_id);
    assert_eq!(child_run["status"], "completed", "{child_run}");
    assert_eq!(child_run["parent"], json!({"run_id": run_id, "step": "audit"}));
    assert_eq!(child_run["client_id"], ended["client_id"]);
    assert_eq!(child_run["trace_id"], ended["trace_id"], "the child joins its parent's trace");
    assert_eq!(child_run["summary"]["domain"], "children.example");
    let granulated = step(&child_run, "bitware-content-granulator");
    assert_eq!(granulated["output"]["topic"], "children-rival.com", "parameters_from fed the child: {granulated}");

    let call = stack.kv_get(&format!("sample:call:{run_id}:technical-seo:1")).expect("the dependent's call");
    let call: Value = serde_json::from_str(&call).expect("json");
    assert_eq!(call["upstream"]["audit"]["run_id"], child_id.as_str(), "the child's output is upstream: {call}");
    assert_eq!(step(&ended, "technical-seo")["status"], "completed");

    if browser::available() {
        let browser = Browser::start();
        crate::ui::sign_in(&browser, &stack.base_url(), stack.token(0));
        browser.goto(&format!("{}/ui/runs/{run_id}", stack.base_url()));
        let to_child = browser.wait_for(
            "the parent's link to its child",
            Duration::from_secs(10),
            "const a = document.querySelector(\"#steps [data-child-run] a\"); return a ? a.getAttribute('href') : false",
            json!([]),
        );
        assert_eq!(to_child, json!(format!("/ui/runs/{child_id}")));
        browser.goto(&format!("{}/ui/runs/{child_id}", stack.base_url()));
        let to_parent = browser.wait_for(
            "the child's link to its parent",
            Duration::from_secs(10),
            "const a = document.querySelector('#run-parent a'); return a ? a.getAttribute('href') : false",
            json!([]),
        );
        assert_eq!(to_parent, json!(format!("/ui/runs/{run_id}")));
    }
}

#[test]
fn a_plan_that_runs_itself_stops_at_the_child_depth_quota_and_each_level_fails() {
    let stack = shared_stack();
    let plan_id = unique("recursive");
    create_plan(
        stack,
        &json!({"plan_id": plan_id, "name": "Recursive", "max_run_duration_ms": 90_000,
                "services": [{"service": "audit", "kind": "run", "plan_id": plan_id}]}),
    );
    let run_id = start(stack, &plan_id, json!({}));
    let ended = wait_terminal_within(stack, &run_id, Duration::from_secs(60));
    assert_eq!(ended["status"], "failed", "{ended}");
    // Depths 1, 2 and 3 start (QUOTAS' default max_child_depth is 3); the deepest's step fails.
    let mut chain = vec![run_id.clone()];
    let mut run = ended;
    while let Some(child) = step(&run, "audit")["child_run_id"].as_str().map(str::to_string) {
        run = wait_terminal_within(stack, &child, Duration::from_secs(30));
        assert_eq!(run["parent"]["run_id"], chain.last().map(String::as_str).unwrap_or(""), "{run}");
        assert_eq!(run["status"], "failed", "{run}");
        chain.push(child);
    }
    assert_eq!(chain.len(), 4, "the run and three levels of children: {chain:?}");
    let deepest = step(&run, "audit");
    assert_eq!((&deepest["status"], &deepest["attempts"]), (&json!("failed"), &json!(1)), "{deepest}");
    let error = deepest["error"].as_str().unwrap_or("");
    assert!(error.contains("max_child_depth") && error.contains("depth 4"), "{error}");
    let (rows, _) = stack.sql("SELECT MAX(depth) AS d FROM runs WHERE plan_id = ?1", &[json!(plan_id)]);
    assert_eq!(rows[0]["d"], 3);
}

#[test]
fn a_child_that_fails_fails_its_run_step_and_the_trigger_rules_decide_the_rest() {
    let stack = shared_stack();
    let (child, parent) = (unique("child-fail"), unique("parent-fail"));
    child_plan(stack, &child);
    create_plan(
        stack,
        &json!({
            "plan_id": parent, "name": "Parent", "max_run_duration_ms": 90_000,
            "services": [
                run_step(&child, json!({"fail_permanent": "no such topic"})),
                {"service": "technical-seo", "depends_on": ["audit"], "timeout_ms": 20_000},
                {"service": "domain-authority", "depends_on": ["audit"], "trigger_rule": "all_done",
                 "timeout_ms": 20_000},
            ],
        }),
    );
    let run_id = start(stack, &parent, json!({}));
    let ended = wait_terminal_within(stack, &run_id, Duration::from_secs(60));
    let audit = step(&ended, "audit");
    assert_eq!((&audit["status"], &audit["attempts"]), (&json!("failed"), &json!(1)), "not retried: {audit}");
    let child_id = audit["child_run_id"].as_str().expect("the child").to_string();
    let error = audit["error"].as_str().unwrap_or("");
    assert!(error.contains(&child_id) && error.contains("ended failed"), "{error}");
    assert_eq!(run_body(stack, &child_id)["status"], "failed");
    assert_eq!(step(&ended, "technical-seo")["status"], "skipped", "all_success: {ended}");
    assert_eq!(step(&ended, "domain-authority")["status"], "completed", "all_done: {ended}");
    assert_eq!(ended["status"], "completed", "one step completed: {ended}");
}

#[test]
fn cancelling_a_parent_cancels_its_running_child() {
    let stack = shared_stack();
    let (child, parent) = (unique("child-open"), unique("parent-cancel"));
    child_plan(stack, &child);
    create_plan(
        stack,
        &json!({"plan_id": parent, "name": "Parent", "max_run_duration_ms": 90_000,
                "services": [run_step(&child, json!({"never_answer": true}))]}),
    );
    let run_id = start(stack, &parent, json!({}));
    let child_id = child_of(stack, &run_id);
    poll_until("the child's step to run", Duration::from_secs(20), || {
        (step(&run_body(stack, &child_id), "bitware-content-granulator")["status"] == "running").then_some(())
    });
    let r = stack.post_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}/cancel"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let ended = wait_terminal_within(stack, &child_id, Duration::from_secs(15));
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert_eq!(step(&ended, "bitware-content-granulator")["status"], "cancelled");
    let parent_run = run_body(stack, &run_id);
    assert_eq!(
        (&parent_run["status"], &step(&parent_run, "audit")["status"]),
        (&json!("cancelled"), &json!("cancelled"))
    );
}

#[test]
fn a_cancel_racing_a_childs_completion_ends_each_parent_once_and_leaves_no_child_open() {
    let stack = shared_stack();
    let (child, parent) = (unique("child-race"), unique("parent-race"));
    child_plan(stack, &child);
    create_plan(
        stack,
        &json!({"plan_id": parent, "name": "Parent", "max_run_duration_ms": 90_000,
                "services": [run_step(&child, json!({"latency_ms": 400}))]}),
    );
    let parents: Vec<String> = (0..8).map(|_| start(stack, &parent, json!({}))).collect();
    let threads: Vec<_> = parents
        .iter()
        .enumerate()
        .map(|(i, run_id)| {
            let run_id = run_id.clone();
            std::thread::spawn(move || {
                let stack = shared_stack();
                let child_id = child_of(stack, &run_id);
                poll_until("the child's step to run", Duration::from_secs(20), || {
                    let status = step(&run_body(stack, &child_id), "bitware-content-granulator")["status"].clone();
                    (status != "pending").then_some(())
                });
                // Spread the cancels from before the child's 400 ms of work ends to well after it.
                std::thread::sleep(Duration::from_millis(150 * i as u64));
                let r = stack.post_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}/cancel"), &json!({}));
                assert!(r.status == 200 || r.status == 409, "{}", r.text());
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a cancelling thread");
    }
    let mut outcomes = Vec::new();
    for run_id in &parents {
        let ended = wait_terminal_within(stack, run_id, Duration::from_secs(30));
        let status = ended["status"].as_str().unwrap_or("").to_string();
        assert!(status == "cancelled" || status == "completed", "{ended}");
        let (rows, _) = stack.sql(
            "SELECT COUNT(*) AS n FROM kbase_events WHERE run_id = ?1 AND dedupe_key LIKE ?2",
            &[json!(run_id), json!(format!("run:{run_id}:finish%"))],
        );
        assert_eq!(rows[0]["n"], 1, "{run_id} ended once");
        let family = poll_until(&format!("the children of {run_id} to end"), Duration::from_secs(30), || {
            let family = children(stack, run_id);
            family
                .iter()
                .all(|(_, s)| ["completed", "failed", "timeout", "cancelled"].contains(&s.as_str()))
                .then_some(family)
        });
        assert_eq!(family.len(), 1, "one child per parent: {family:?}");
        if status == "completed" {
            assert_eq!(family[0].1, "completed", "a completed parent's child completed: {family:?}");
        }
        outcomes.push(status);
    }
    eprintln!("parents ended: {outcomes:?}");
}

/// A child whose deadline passes with part of its work done ends `timeout` (one that has
/// done none ends `failed`).
#[test]
fn a_child_that_times_out_times_its_run_step_out() {
    let stack = shared_stack();
    let (child, parent) = (unique("child-slow"), unique("parent-slow"));
    create_plan(
        stack,
        &json!({"plan_id": child, "name": "Slow child", "max_run_duration_ms": 3_000,
                "services": [{"service": "technical-seo", "timeout_ms": 3_000},
                             {"service": "bitware-content-granulator", "timeout_ms": 3_000}]}),
    );
    create_plan(
        stack,
        &json!({"plan_id": parent, "name": "Parent", "max_run_duration_ms": 60_000,
                "services": [run_step(&child, json!({"never_answer": true}))]}),
    );
    let run_id = start(stack, &parent, json!({}));
    let ended = wait_terminal_within(stack, &run_id, Duration::from_secs(30));
    let audit = step(&ended, "audit");
    assert_eq!((&audit["status"], &audit["attempts"]), (&json!("timeout"), &json!(1)), "not retried: {audit}");
    let child_id = audit["child_run_id"].as_str().expect("the child").to_string();
    assert_eq!(run_body(stack, &child_id)["status"], "timeout");
    assert!(audit["error"].as_str().unwrap_or("").contains("timed out"), "{audit}");
    assert_eq!(ended["status"], "failed", "no step completed: {ended}");
}

#[test]
fn a_bad_run_step_is_refused_naming_its_field_and_an_unknown_plan_fails_the_step_naming_it() {
    let stack = shared_stack();
    let refused = |step: Value| -> Vec<String> {
        let plan = json!({"plan_id": unique("bad-run"), "name": "Bad", "max_run_duration_ms": 60_000,
                          "services": [{"service": "a"}, step]});
        let r = stack.post_as(stack.token(0), "/api/orchestration/plans", &plan);
        assert_eq!(r.status, 400, "{}", r.text());
        let body = r.json();
        body["error"]["details"]["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["field"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(refused(json!({"service": "audit", "kind": "run"})), ["services[1].plan_id"]);
    assert_eq!(
        refused(json!({"service": "audit", "kind": "run", "plan_id": "p", "worker_key": "technical-seo"})),
        ["services[1].worker_key"]
    );
    assert_eq!(
        refused(json!({"service": "audit", "kind": "run", "plan_id": "p", "parameters_from": {"x": "a.y"}})),
        ["services[1].parameters_from.x"],
        "a source must be one of depends_on"
    );
    assert_eq!(refused(json!({"service": "audit", "plan_id": "p"})), ["services[1].plan_id"]);

    let parent = unique("parent-nowhere");
    create_plan(
        stack,
        &json!({"plan_id": parent, "name": "Parent", "max_run_duration_ms": 60_000,
                "services": [{"service": "audit", "kind": "run", "plan_id": "no-such-plan"}]}),
    );
    let run_id = start(stack, &parent, json!({}));
    let ended = wait_terminal_within(stack, &run_id, Duration::from_secs(30));
    let audit = step(&ended, "audit");
    assert_eq!((&audit["status"], &audit["attempts"]), (&json!("failed"), &json!(1)), "permanent: {audit}");
    assert!(audit["error"].as_str().unwrap_or("").contains("\"no-such-plan\""), "{audit}");
    assert_eq!(audit["child_run_id"], Value::Null, "no child started");
}
