//! What a run cost: the units Baton's workers used for it, counted where each call is made,
//! attributed to the run, recorded with it and priced.

use std::collections::BTreeMap;
use std::time::Duration;

use baton_e2e::{poll_until, shared_stack, Stack};
use serde_json::{json, Value};

fn unique(prefix: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{nanos:x}")
}

/// `/metrics`' `orchestrator_run_units_total` for `plan` of alice's, by unit.
fn metric_units(stack: &Stack, plan: &str) -> BTreeMap<String, u64> {
    let r = stack.get_as(&stack.secrets().admin_token, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let prefix = format!("orchestrator_run_units_total{{client=\"alice\",plan=\"{plan}\",unit=\"");
    r.text()
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| rest.split_once("\"} "))
        .map(|(unit, n)| (unit.to_string(), n.parse().expect("a count")))
        .collect()
}

/// Starts a run of `plan` for alice; its id.
fn ended_run(stack: &Stack, plan: &str, parameters: Value) -> String {
    let body =
        json!({"website_id": unique("cost-site"), "domain": "cost.example", "plan_id": plan, "parameters": parameters});
    let r = stack.post_as(stack.token(0), "/api/orchestration/run", &body);
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["run_id"].as_str().expect("run_id").to_string()
}

/// The cost of run `run_id` once it has ended and every piece of its work has recorded its
/// units (the KV snapshot, the ending's last write, is in; then the cost no longer changes).
fn settled_cost(stack: &Stack, run_id: &str) -> Value {
    let mut last = Value::Null;
    let mut same = 0;
    poll_until(&format!("run {run_id} to end with its units recorded"), Duration::from_secs(30), || {
        let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}"));
        let body = r.json();
        let cost = body["cost"].clone();
        same = if cost == last && body["terminal"] == true && cost["units"]["kv_writes"].as_u64() > Some(0) {
            same + 1
        } else {
            0
        };
        last = cost.clone();
        (same >= 3).then_some(cost)
    })
}

fn units(cost: &Value) -> BTreeMap<String, u64> {
    serde_json::from_value(cost["units"].clone()).expect("units")
}

#[test]
fn a_runs_units_are_counted_to_it_alone_priced_and_summed_by_client_and_plan() {
    let stack = shared_stack();
    let plan = unique("cost-plan");
    let r = stack.post_as(
        stack.token(0),
        "/api/orchestration/plans",
        &json!({"plan_id": plan, "name": "Two waves", "max_run_duration_ms": 60_000, "services": [
            {"service": "technical-seo"}, {"service": "serp-intelligence", "depends_on": ["technical-seo"]}]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    // Two runs of a known plan at once: each is counted what it used, whatever the other did
    // meanwhile in the same isolates.
    let runs = [ended_run(stack, &plan, json!({})), ended_run(stack, &plan, json!({}))];
    let costs: Vec<Value> = runs.iter().map(|run_id| settled_cost(stack, run_id)).collect();
    for cost in &costs {
        let u = units(cost);
        // Two waves run in place: the start's transaction, each wave's claim and result
        // (the second ends the run); a handshake and a process call per step; the config's
        // KV read and the run's KV snapshot; nothing queued, nothing in R2.
        let exact: BTreeMap<&str, u64> = [
            ("d1_round_trips", 4),
            ("d1_statements", 21),
            ("kv_reads", 1),
            ("kv_writes", 1),
            ("queue_messages", 0),
            ("subrequests", 4),
            ("r2_reads", 0),
            ("r2_writes", 0),
        ]
        .into();
        for (unit, n) in &exact {
            assert_eq!(u.get(*unit), Some(n), "{unit} of {cost}");
        }
        assert!(u["d1_rows_read"] > 0 && u["d1_rows_written"] > 0, "{cost}");
        // Priced at the default COST_PRICES.
        let prices = baton_core::cost::UnitPrices::default();
        let expected =
            prices.cost_usd(&baton_core::cost::Units::from_values(baton_core::cost::UNIT_NAMES.map(|name| u[name])));
        assert!((cost["usd"].as_f64().unwrap_or(-1.0) - expected).abs() < 1e-12, "{cost}: {expected}");
    }

    // A retried step: its second attempt goes through the task queue and the consumer, whose
    // work is the run's too.
    let retried = ended_run(stack, &plan, json!({"sample_behaviour": {"technical-seo": {"fail_transient": 1}}}));
    let retried_cost = settled_cost(stack, &retried);
    let u = units(&retried_cost);
    assert_eq!(
        (u["subrequests"], u["queue_messages"]),
        (6, 2),
        "a third call pair, the retry's message and its wake-up: {retried_cost}"
    );
    assert!(u["d1_round_trips"] > 4, "{retried_cost}");

    // `/metrics` sums them by client and plan, exactly.
    let mut summed: BTreeMap<String, u64> = BTreeMap::new();
    for cost in costs.iter().chain([&retried_cost]) {
        for (unit, n) in units(cost) {
            *summed.entry(unit).or_default() += n;
        }
    }
    summed.retain(|_, n| *n > 0);
    assert_eq!(metric_units(stack, &plan), summed);

    // The CLI shows it.
    let shown = baton_e2e::cli::run(stack, stack.token(0), &["show", &runs[0]]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let line = format!("  cost ${:.6}: ", costs[0]["usd"].as_f64().unwrap_or(0.0));
    assert!(shown.stdout.contains(&line) && shown.stdout.contains(" 4 subrequests"), "{}", shown.stdout);
}
