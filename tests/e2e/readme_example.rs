//! The README's example plan ("Together: a review that maps, waits and runs a child"), taken
//! from the README itself: a map over the SERP step's competitors, a wait for an approval, then
//! a child run of `quick-v1` handed the audits. It runs to completion.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_e2e::{cli, poll_until, repo_root, shared_stack, Stack};
use serde_json::{json, Value};

use crate::deadlines::{create_plan, wait_terminal_within};
use crate::runs::start_run;

/// The first JSON block after the README's heading `heading`.
fn readme_json(heading: &str) -> Value {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("reading README.md");
    let section = readme.split(heading).nth(1).unwrap_or_else(|| panic!("README.md has no {heading:?}"));
    let block = section.split("```json\n").nth(1).and_then(|b| b.split("\n```").next()).expect("a JSON block");
    serde_json::from_str(block).unwrap_or_else(|e| panic!("the README's example is not JSON ({e}):\n{block}"))
}

fn run_body(stack: &Stack, run_id: &str) -> Value {
    stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}")).json()
}

fn step(body: &Value, service: &str) -> Value {
    body["service_results"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["service"] == service))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn the_readme_plan_maps_waits_and_runs_a_child_to_completion() {
    let stack = shared_stack();
    let mut plan = readme_json("### Together: a review that maps, waits and runs a child");
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let plan_id = format!("competitor-review-{nanos:x}");
    plan["plan_id"] = json!(plan_id);
    create_plan(stack, &plan);
    let run_id =
        start_run(stack, &json!({"website_id": "site_review", "domain": "review.example", "plan_id": plan_id}));

    // The audits run (one item per competitor), then the run waits for its approval.
    let waiting = poll_until("the approval to be awaited", Duration::from_secs(30), || {
        let body = run_body(stack, &run_id);
        (step(&body, "approve")["status"] == "running").then_some(body)
    });
    let audit = step(&waiting, "audit");
    assert_eq!(audit["status"], "completed", "{audit}");
    let competitors = step(&waiting, "serp-intelligence")["output"]["top_competitors"].clone();
    let items = audit["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), competitors.as_array().map_or(0, Vec::len), "one item per competitor: {audit}");
    assert!(items.iter().all(|i| i["status"] == "completed"), "{audit}");
    assert_eq!(step(&waiting, "follow-up")["attempts"], 0, "the child waits for the approval");

    let signalled =
        cli::run(stack, stack.token(0), &["signal", &run_id, "approval", "--data", r#"{"approved": true}"#]);
    assert_eq!(signalled.code, 0, "{}", signalled.stderr);
    let ended = wait_terminal_within(stack, &run_id, Duration::from_secs(60));
    assert_eq!(ended["status"], "completed", "{ended}");

    let follow_up = step(&ended, "follow-up");
    assert_eq!(follow_up["status"], "completed", "{follow_up}");
    let child_id = follow_up["output"]["run_id"].as_str().expect("the child's run id").to_string();
    assert_eq!(follow_up["child_run_id"], json!(child_id));
    assert_eq!(follow_up["output"]["status"], "completed");
    let child = run_body(stack, &child_id);
    assert_eq!(child["status"], "completed", "{child}");
    assert_eq!(child["parent"]["run_id"], json!(run_id), "{child}");
    assert_eq!(child["parent"]["step"], "follow-up");
    let (rows, _) = stack.sql("SELECT plan_id, parameters FROM runs WHERE run_id = ?1", &[json!(child_id)]);
    assert_eq!(rows[0]["plan_id"], "quick-v1");
    let parameters: Value = serde_json::from_str(rows[0]["parameters"].as_str().unwrap_or("null")).unwrap_or_default();
    assert_eq!(parameters["audits"], audit["output"], "the child got the audited list: {parameters}");
}
