//! Map steps: a step with `for_each` runs once per element of a list in an upstream step's
//! output, each element an item with its own attempts, at most `max_parallel` at a time; its
//! output is the items' outputs in order, which its dependents receive. `min_completed`
//! decides whether failed items fail the step; a missing list fails it naming the path; a
//! cancel ends every item. The run page shows the items.

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

/// `serp-intelligence` (its output lists three `top_competitors`), then `audit` calling
/// `competitive-intelligence` once per competitor (`map` holds the map's own fields), then
/// `domain-authority` after `audit`.
fn map_plan(stack: &Stack, plan_id: &str, for_each: &str, map: Value) {
    let mut audit = json!({
        "service": "audit", "workerKey": "competitive-intelligence", "dependsOn": ["serp-intelligence"],
        "forEach": for_each, "timeoutMs": 20_000,
        "retry": {"max_attempts": 3, "initial_interval_ms": 200, "max_interval_ms": 200},
    });
    for (key, value) in map.as_object().cloned().unwrap_or_default() {
        audit[key] = value;
    }
    create_plan(
        stack,
        &json!({
            "planId": plan_id, "name": "Map", "maxRunDurationMs": 60_000,
            "services": [
                {"service": "serp-intelligence", "timeoutMs": 20_000},
                audit,
                {"service": "domain-authority", "dependsOn": ["audit"], "timeoutMs": 20_000},
            ],
        }),
    );
}

fn start(stack: &Stack, plan_id: &str, audit_behaviour: Value) -> String {
    start_run(
        stack,
        &json!({"website_id": "site_maps", "domain": "maps.example", "plan_id": plan_id,
                "parameters": {"sample_behaviour": {"competitive-intelligence": audit_behaviour}}}),
    )
}

fn step(body: &Value, service: &str) -> Value {
    body["service_results"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["service"] == service))
        .cloned()
        .unwrap_or(Value::Null)
}

fn items(body: &Value) -> Vec<Value> {
    step(body, "audit")["items"].as_array().cloned().unwrap_or_default()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

#[test]
fn a_map_step_runs_each_element_at_most_max_parallel_at_once_and_its_dependent_gets_the_list_in_order() {
    let stack = shared_stack();
    let plan_id = unique("map-all");
    map_plan(stack, &plan_id, "serp-intelligence.top_competitors", json!({"maxParallel": 2}));
    let run_id = start(stack, &plan_id, json!({"latency_ms": 1_500}));
    let ended = wait_terminal_within(stack, &run_id, Duration::from_secs(40));
    assert_eq!(ended["status"], "completed", "{ended}");

    let competitors = step(&ended, "serp-intelligence")["output"]["top_competitors"].clone();
    let items = items(&ended);
    assert_eq!(items.len(), 3, "one item per competitor: {ended}");
    for (index, item) in items.iter().enumerate() {
        assert_eq!(item["service"], format!("audit.{index}"));
        assert_eq!((&item["status"], &item["attempts"]), (&json!("completed"), &json!(1)), "{item}");
        assert_eq!(item["output"]["item"], competitors[index], "item {index} worked on its own element");
        assert_eq!(item["output"]["index"], index);
    }
    let audit = step(&ended, "audit");
    assert_eq!(audit["for_each"], "serp-intelligence.top_competitors");
    let outputs: Vec<Value> = items.iter().map(|i| i["output"].clone()).collect();
    assert_eq!(audit["output"], Value::Array(outputs), "the map's output is its items' outputs, in order");

    // Never more than two at once: each item starts while at most one other runs.
    for item in &items {
        let at = text(&item["started_at"]);
        let running =
            items.iter().filter(|other| text(&other["started_at"]) <= at && at < text(&other["finished_at"])).count();
        assert!(running <= 2, "{running} items ran at {at}: {items:?}");
    }
    let last_start = items.iter().map(|i| text(&i["started_at"])).max().unwrap_or_default();
    let first_end = items.iter().map(|i| text(&i["finished_at"])).min().unwrap_or_default();
    assert!(last_start >= first_end, "the third item waited for a free place");
    let dependent = step(&ended, "domain-authority");
    assert_eq!(dependent["status"], "completed", "{dependent}");
    assert!(text(&dependent["started_at"]) >= text(&audit["finished_at"]), "the dependent ran after every item");
    let (rows, _) =
        stack.sql("SELECT COUNT(*) AS n FROM steps WHERE run_id = ?1 AND service LIKE 'audit.%'", &[json!(run_id)]);
    assert_eq!(rows[0]["n"], 3, "one row per item");

    let shown = cli::run(stack, stack.token(0), &["show", &run_id]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    for index in 0..3 {
        assert!(shown.stdout.contains(&format!("audit.{index}")), "the CLI lists the items: {}", shown.stdout);
    }
    if browser::available() {
        let browser = Browser::start();
        crate::ui::sign_in(&browser, &stack.base_url(), stack.token(0));
        browser.goto(&format!("{}/ui/runs/{run_id}", stack.base_url()));
        let shown = browser.wait_for(
            "the map step's items",
            Duration::from_secs(10),
            "const rows = document.querySelectorAll(\"#steps tr[data-item-of='audit']\"); \
             const line = document.querySelector(\"#steps [data-for-each]\"); \
             return rows.length === 3 && line ? line.textContent : false",
            json!([]),
        );
        assert_eq!(shown, "for each of serp-intelligence.top_competitors: 3 of 3 items completed");
    }
}

#[test]
fn items_retry_on_their_own_and_min_completed_decides_whether_failed_items_fail_the_map() {
    let stack = shared_stack();
    // Every item's first attempt fails transiently (retried on its own); item 1 is refused.
    let behaviour = json!({"fail_transient": 1, "fail_items": [1]});

    let half = unique("map-half");
    map_plan(stack, &half, "serp-intelligence.top_competitors", json!({"minCompleted": 0.5}));
    let run_id = start(stack, &half, behaviour.clone());
    let ended = wait_terminal_within(stack, &run_id, Duration::from_secs(40));
    assert_eq!(ended["status"], "completed", "{ended}");
    let listed = items(&ended);
    let summary: Vec<(String, i64)> =
        listed.iter().map(|i| (text(&i["status"]).to_string(), i["attempts"].as_i64().unwrap_or(-1))).collect();
    assert_eq!(
        summary,
        [("completed".to_string(), 2), ("failed".to_string(), 1), ("completed".to_string(), 2)],
        "each item retried by itself: {listed:?}"
    );
    assert!(text(&listed[1]["error"]).contains("item 1 refused"), "{}", listed[1]);
    let audit = step(&ended, "audit");
    assert_eq!(audit["status"], "completed", "2 of 3 is at least half: {audit}");
    assert_eq!(audit["output"][1], Value::Null, "a failed item's place holds null");
    assert_eq!(audit["output"][2]["index"], 2);
    assert_eq!(step(&ended, "domain-authority")["status"], "completed");

    let all = unique("map-all-needed");
    map_plan(stack, &all, "serp-intelligence.top_competitors", json!({}));
    let run_id = start(stack, &all, behaviour);
    let ended = wait_terminal_within(stack, &run_id, Duration::from_secs(40));
    let audit = step(&ended, "audit");
    assert_eq!(audit["status"], "failed", "{audit}");
    // It fails as soon as 3 can no longer complete: when item 1 is refused.
    assert!(text(&audit["error"]).ends_with(" of 3 items completed, 3 needed (min_completed)"), "{audit}");
    assert_eq!(step(&ended, "domain-authority")["status"], "skipped");
    let open =
        items(&ended).iter().filter(|i| ["pending", "running", "retrying"].contains(&text(&i["status"]))).count();
    assert_eq!(open, 0, "no item is left open when its map fails: {ended}");
}

#[test]
fn a_missing_list_fails_the_map_naming_it_a_bad_plan_names_its_field_and_a_cancel_ends_every_item() {
    let stack = shared_stack();
    let bad = json!({
        "planId": unique("map-bad"), "name": "Bad", "maxRunDurationMs": 60_000,
        "services": [
            {"service": "serp-intelligence"},
            {"service": "domain-authority"},
            {"service": "audit", "dependsOn": ["serp-intelligence"], "forEach": "domain-authority.links",
             "maxParallel": 0},
        ],
    });
    let r = stack.post_as(stack.token(0), "/api/orchestration/plans", &bad);
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    let fields: Vec<&str> =
        body["error"]["details"]["problems"].as_array().into_iter().flatten().map(|d| text(&d["field"])).collect();
    assert_eq!(fields, ["services[2].for_each", "services[2].max_parallel"], "{body}");

    let missing = unique("map-missing");
    map_plan(stack, &missing, "serp-intelligence.pages", json!({}));
    let run_id = start(stack, &missing, json!({}));
    let ended = wait_terminal_within(stack, &run_id, Duration::from_secs(30));
    let audit = step(&ended, "audit");
    assert_eq!(audit["status"], "failed", "{audit}");
    assert_eq!(text(&audit["error"]), "for_each serp-intelligence.pages: the output has no serp-intelligence.pages");
    assert!(items(&ended).is_empty(), "no list, no items");

    let slow = unique("map-cancel");
    map_plan(stack, &slow, "serp-intelligence.top_competitors", json!({"maxParallel": 1}));
    let run_id = start(stack, &slow, json!({"latency_ms": 20_000}));
    poll_until("the first item to run", Duration::from_secs(20), || {
        let body = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}")).json();
        (items(&body).first().is_some_and(|i| i["status"] == "running")).then_some(())
    });
    let r = stack.post_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}/cancel"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let ended = wait_terminal_within(stack, &run_id, Duration::from_secs(20));
    assert_eq!(ended["status"], "cancelled");
    let statuses: Vec<(String, i64)> =
        items(&ended).iter().map(|i| (text(&i["status"]).to_string(), i["attempts"].as_i64().unwrap_or(-1))).collect();
    assert_eq!(
        statuses,
        [("cancelled".to_string(), 1), ("cancelled".to_string(), 0), ("cancelled".to_string(), 0)],
        "the running item is cancelled, the others never start"
    );
}

#[test]
fn items_ending_together_in_many_runs_end_each_map_once_and_start_each_dependent_once() {
    let stack = shared_stack();
    let plan_id = unique("map-race");
    // Every item at once, answering at once (in half the runs by signed callbacks on the
    // items' own slugs): their results race to end the map.
    map_plan(stack, &plan_id, "serp-intelligence.top_competitors", json!({"maxParallel": 3}));
    let runs: Vec<String> = (0..8).map(|i| start(stack, &plan_id, json!({"async": i % 2 == 1}))).collect();
    for run_id in &runs {
        let ended = wait_terminal_within(stack, run_id, Duration::from_secs(40));
        assert_eq!(ended["status"], "completed", "{ended}");
        let attempts: Vec<Value> = items(&ended).iter().map(|i| i["attempts"].clone()).collect();
        assert_eq!(attempts, [json!(1), json!(1), json!(1)], "each item ran once: {ended}");
        assert_eq!(step(&ended, "audit")["output"].as_array().map(Vec::len), Some(3), "{ended}");
        let dependent = step(&ended, "domain-authority");
        assert_eq!((&dependent["status"], &dependent["attempts"]), (&json!("completed"), &json!(1)), "{dependent}");
    }
    let (rows, _) = stack.sql(
        "SELECT COUNT(*) AS n FROM step_attempts WHERE service = 'domain-authority' AND run_id IN \
         (SELECT run_id FROM runs WHERE plan_id = ?1)",
        &[json!(plan_id)],
    );
    assert_eq!(rows[0]["n"], 8, "one attempt of each dependent, in all");
}
