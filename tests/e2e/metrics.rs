//! `GET /metrics`: the Prometheus text format, parsed by a real parser, with the values a
//! known set of runs must produce on a stack of its own.

use std::time::Duration;

use baton_e2e::{poll_until, Stack, StackOptions};
use prometheus_parse::{Sample, Scrape, Value as Metric};
use serde_json::{json, Value};

fn start_run(stack: &Stack, body: &Value) -> String {
    let r = stack.post_as(stack.token(0), "/api/orchestration/run", body);
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["run_id"].as_str().expect("run_id").to_string()
}

fn wait_terminal(stack: &Stack, run_id: &str) -> Value {
    poll_until(&format!("run {run_id} to end"), Duration::from_secs(60), || {
        let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}"));
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        (body["terminal"] == true).then_some(body)
    })
}

pub(crate) fn scrape(stack: &Stack) -> Scrape {
    let r = stack.get_as(&stack.secrets().admin_token, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = r.text();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap_or_else(|e| panic!("unparsable metrics: {e}\n{text}"))
}

fn find<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> &'a Sample {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {:#?}", scrape.samples))
}

pub(crate) fn number(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match &find(scrape, name, labels).value {
        Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => *v,
        other => panic!("{name} is not a number: {other:?}"),
    }
}

/// A histogram's `(le, cumulative count)` buckets.
fn buckets(scrape: &Scrape, name: &str) -> Vec<(f64, f64)> {
    match &find(scrape, name, &[]).value {
        Metric::Histogram(b) => b.iter().map(|c| (c.less_than, c.count)).collect(),
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

fn step_count(runs: &[&Value], status: &str) -> f64 {
    runs.iter()
        .flat_map(|r| r["service_results"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["status"] == status)
        .count() as f64
}

#[test]
fn metrics_count_runs_tasks_retries_and_latencies_from_the_database() {
    let mut stack = Stack::start(StackOptions::default());
    assert_eq!(stack.get("/metrics").status, 401);
    assert_eq!(stack.get_as(stack.token(0), "/metrics").status, 401, "a client token is not the operator's");

    let empty = scrape(&stack);
    assert_eq!(number(&empty, "orchestrator_flow_runs_processed_total", &[("status", "completed")]), 0.0);
    // Every shard has its own pools (seeded by the migrations): /metrics sums them.
    let shards = baton_e2e::stack::local_d1_bindings(&baton_e2e::repo_root()).len() as f64;
    assert_eq!(number(&empty, "orchestrator_admission_pool_capacity", &[("resource", "tokens")]), 1_000_000.0 * shards);

    // Three runs: one clean, one with a retry and a failed step, one cancelled.
    let clean = start_run(&stack, &json!({"website_id": "metrics", "domain": "m.example", "plan_id": "quick-v1"}));
    let bumpy = start_run(
        &stack,
        &json!({"website_id": "metrics", "domain": "m.example", "parameters": {"sample_behaviour": {
            "technical-seo": {"fail_transient": 1}, "domain-authority": {"fail_permanent": true}}}}),
    );
    let stuck = start_run(
        &stack,
        &json!({"website_id": "metrics", "domain": "m.example", "plan_id": "quick-v1",
                "parameters": {"sample_behaviour": {"*": {"never_answer": true}}}}),
    );
    let clean = wait_terminal(&stack, &clean);
    let bumpy = wait_terminal(&stack, &bumpy);
    poll_until("the stuck run's steps to be dispatched", Duration::from_secs(30), || {
        let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{stuck}"));
        (r.json()["status"] == "running").then_some(())
    });
    let r = stack.post_as(stack.token(0), &format!("/api/orchestration/runs/{stuck}/cancel"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let stuck = wait_terminal(&stack, &stuck);
    let runs = [&clean, &bumpy, &stuck];
    assert_eq!(
        runs.iter().map(|r| r["status"].as_str().unwrap_or("")).collect::<Vec<_>>(),
        ["completed", "completed", "cancelled"]
    );

    let m = scrape(&stack);
    let runs_with = |status| number(&m, "orchestrator_flow_runs_processed_total", &[("status", status)]);
    assert_eq!(
        [runs_with("completed"), runs_with("cancelled"), runs_with("failed"), runs_with("timeout")],
        [2.0, 1.0, 0.0, 0.0]
    );
    assert_eq!(number(&m, "orchestrator_active_runs", &[]), 0.0);

    let attempts: f64 = runs
        .iter()
        .flat_map(|r| r["service_results"].as_array().cloned().unwrap_or_default())
        .map(|s| s["attempts"].as_f64().unwrap_or(0.0))
        .sum();
    assert_eq!(number(&m, "orchestrator_tasks_scheduled_total", &[]), attempts);
    for status in ["completed", "failed", "cancelled", "skipped", "timeout"] {
        assert_eq!(
            number(&m, "orchestrator_tasks_completed_total", &[("status", status)]),
            step_count(&runs, status),
            "steps {status}"
        );
    }
    assert_eq!(number(&m, "orchestrator_tasks_completed_total", &[("status", "failed")]), 1.0);
    assert_eq!(number(&m, "orchestrator_retry_attempts_total", &[("service", "technical-seo")]), 1.0);
    assert!(!m
        .samples
        .iter()
        .any(|s| s.metric == "orchestrator_retry_attempts_total" && s.labels.get("service") != Some("technical-seo")));

    // Histograms: cumulative buckets ending in +Inf with the count; a sum in seconds.
    let run_buckets = buckets(&m, "orchestrator_run_execution_seconds");
    assert_eq!(run_buckets.last(), Some(&(f64::INFINITY, 3.0)), "{run_buckets:?}");
    assert!(run_buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{run_buckets:?}");
    let durations: f64 = runs.iter().map(|r| r["summary"]["durationMs"].as_f64().unwrap_or(0.0)).sum::<f64>() / 1000.0;
    let sum = number(&m, "orchestrator_run_execution_seconds_sum", &[]);
    assert!((sum - durations).abs() < 0.01, "sum {sum} vs the runs' durations {durations}");
    assert_eq!(number(&m, "orchestrator_run_execution_seconds_count", &[]), 3.0);
    // The two completed runs were fanned in; the cancelled one never was.
    assert_eq!(buckets(&m, "orchestrator_fan_in_latency_seconds").last(), Some(&(f64::INFINITY, 2.0)));
    let task = buckets(&m, "orchestrator_task_execution_seconds");
    assert!(
        task.last().is_some_and(|(_, n)| *n >= attempts - 3.0),
        "the cancelled run's attempts never ended: {task:?}"
    );

    // Admission: nothing waits, nothing is reserved.
    assert_eq!(number(&m, "orchestrator_execution_queue", &[("status", "queued")]), 0.0);
    assert_eq!(number(&m, "orchestrator_admission_pool_in_use", &[("resource", "concurrent_executions")]), 0.0);

    // A restart of the stack (same D1) shows the same counters: nothing is counted in memory.
    stack.stop();
    let again =
        Stack::start(StackOptions { persist_dir: Some(stack.persist_dir().to_path_buf()), ..StackOptions::default() });
    let after = scrape(&again);
    assert_eq!(number(&after, "orchestrator_flow_runs_processed_total", &[("status", "completed")]), 2.0);
    assert_eq!(number(&after, "orchestrator_tasks_scheduled_total", &[]), attempts);
}

/// What a scan of every row counts, by the statements `/metrics` ran before it kept totals:
/// `(series, value)` for every counter and histogram line of the scrape.
fn scanned(stack: &Stack) -> Vec<(String, f64)> {
    let rows = |sql: &str| stack.sql(sql, &[]).0;
    let n = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let mut out = Vec::new();
    for r in rows("SELECT status, COUNT(*) AS n FROM runs WHERE completed_at IS NOT NULL GROUP BY status") {
        out.push((format!("orchestrator_flow_runs_processed_total{{status={}}}", r["status"]), n(&r, "n")));
    }
    let steps = rows("SELECT status, COUNT(*) AS n, SUM(attempts) AS a FROM steps GROUP BY status");
    for r in &steps {
        if !["pending", "running", "retrying"].contains(&r["status"].as_str().unwrap_or("")) {
            out.push((format!("orchestrator_tasks_completed_total{{status={}}}", r["status"]), n(r, "n")));
        }
    }
    out.push(("orchestrator_tasks_scheduled_total".into(), steps.iter().map(|r| n(r, "a")).sum()));
    for r in rows("SELECT service, SUM(attempts - 1) AS n FROM steps WHERE attempts > 1 GROUP BY service") {
        out.push((format!("orchestrator_retry_attempts_total{{service={}}}", r["service"]), n(&r, "n")));
    }
    for (name, source) in [
        (
            "orchestrator_run_execution_seconds",
            "SELECT completed_at - started_at AS v FROM runs WHERE completed_at IS NOT NULL",
        ),
        (
            "orchestrator_fan_in_latency_seconds",
            "SELECT MAX(0, r.claimed_at - MAX(s.finished_at)) AS v FROM runs r JOIN steps s ON s.run_id = r.run_id \
             WHERE r.claimed_at IS NOT NULL AND s.finished_at IS NOT NULL GROUP BY r.run_id",
        ),
        (
            "orchestrator_task_execution_seconds",
            "SELECT MAX(0, ended_at - started_at) AS v FROM step_attempts WHERE started_at IS NOT NULL",
        ),
    ] {
        let r = &rows(&format!("SELECT COUNT(*) AS n, COALESCE(SUM(v), 0) AS s FROM ({source})"))[0];
        out.push((format!("{name}_count"), n(r, "n")));
        out.push((format!("{name}_sum"), n(r, "s") / 1000.0));
    }
    out
}

/// The same series as [`scanned`], read from a scrape.
fn scraped(m: &Scrape, like: &[(String, f64)]) -> Vec<(String, f64)> {
    like.iter()
        .map(|(series, _)| {
            let (name, label) = match series.split_once('{') {
                Some((name, rest)) => {
                    let (k, v) = rest.trim_end_matches('}').split_once('=').expect("one label");
                    (name, Some((k, v.trim_matches('"'))))
                }
                None => (series.as_str(), None),
            };
            let value = match label {
                Some(label) => number(m, name, &[label]),
                None => number(m, name, &[]),
            };
            (series.clone(), value)
        })
        .collect()
}

fn rows_read_by_a_scrape(stack: &Stack) -> u64 {
    let auth = format!("Bearer {}", stack.secrets().admin_token);
    let meter = || {
        let r = stack.send("GET", "/__test/meter?reset=true", &[("Authorization", auth.as_str())], None);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["orchestrator"]["d1_rows_read"].as_u64().expect("rows read")
    };
    meter();
    scrape(stack);
    meter()
}

fn totals_keys(stack: &Stack) -> u64 {
    stack.sql("SELECT COUNT(*) AS n FROM metric_totals", &[]).0[0]["n"].as_u64().unwrap_or(0)
}

/// The counter and histogram lines of a scrape that the backfill migration (0014) counts: the
/// gauges of what runs now aside, and the runs' units, counted only from their introduction.
fn counter_lines(stack: &Stack) -> Vec<String> {
    let r = stack.get_as(&stack.secrets().admin_token, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("active") && !l.contains("_queue") && !l.contains("pool"))
        .filter(|l| !l.starts_with("orchestrator_run_units_total") && !l.starts_with("orchestrator_run_cost_usd_total"))
        .map(str::to_string)
        .collect()
}

#[test]
fn counters_kept_as_runs_end_and_are_retried_match_a_scan_of_every_row_and_a_scrape_reads_no_history() {
    // The consumer and the poller answer `/__test/meter` too.
    let hooks = vec![("BATON_TEST_HOOKS".to_string(), "true".to_string())];
    let stack =
        Stack::start(StackOptions { consumer_vars: hooks.clone(), poller_vars: hooks, ..StackOptions::default() });
    let site = json!({"website_id": "metrics-kept", "domain": "k.example", "plan_id": "quick-v1"});
    let with = |behaviour: Value| {
        let mut body = site.clone();
        body["parameters"] = json!({"sample_behaviour": behaviour});
        body
    };
    // A clean run, one with a retried attempt, and one whose every step fails once: it fails,
    // is retried, and completes in its second round.
    let clean = start_run(&stack, &site);
    let bumpy = start_run(&stack, &with(json!({"*": {"fail_transient": 1}})));
    let failing = start_run(&stack, &with(json!({"*": {"fail_permanent_until": 1}})));
    wait_terminal(&stack, &clean);
    wait_terminal(&stack, &bumpy);
    assert_eq!(wait_terminal(&stack, &failing)["status"], "failed");
    let expected = scanned(&stack);
    assert_eq!(scraped(&scrape(&stack), &expected), expected, "after a failed run");

    let r = stack.post_as(stack.token(0), &format!("/api/orchestration/runs/{failing}/retry"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(wait_terminal(&stack, &failing)["status"], "completed");
    let expected = scanned(&stack);
    assert!(
        expected.contains(&("orchestrator_flow_runs_processed_total{status=\"completed\"}".into(), 3.0)),
        "{expected:?}"
    );
    assert_eq!(scraped(&scrape(&stack), &expected), expected, "after the retry");
    let m = scrape(&stack);
    assert_eq!(number(&m, "orchestrator_flow_runs_processed_total", &[("status", "failed")]), 0.0);
    assert_eq!(number(&m, "orchestrator_active_runs", &[]), 0.0);

    // The migration that counts runs ended before the totals were kept gives the same numbers.
    let counted = counter_lines(&stack);
    stack.sql("DELETE FROM metric_totals", &[]);
    let backfill =
        std::fs::read_to_string(baton_e2e::repo_root().join("migrations/0014_metric_totals_of_ended_runs.sql"))
            .expect("the migration");
    let code: String = backfill.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    for statement in code.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        stack.sql(statement, &[]);
    }
    assert_eq!(counter_lines(&stack), counted, "the backfill counts as the endings did");

    // More finished runs: a scrape reads the totals (a few more keys at most), not their rows.
    let (before, keys_before) = (rows_read_by_a_scrape(&stack), totals_keys(&stack));
    let more: Vec<String> = (0..4).map(|_| start_run(&stack, &with(json!({"*": {"fail_transient": 1}})))).collect();
    for run_id in &more {
        wait_terminal(&stack, run_id);
    }
    let (after, keys_after) = (rows_read_by_a_scrape(&stack), totals_keys(&stack));
    assert!(
        after <= before + (keys_after - keys_before),
        "rows read {before} -> {after} (totals keys {keys_before} -> {keys_after})"
    );
    let expected = scanned(&stack);
    assert_eq!(scraped(&scrape(&stack), &expected), expected, "after more runs");
}

#[test]
fn an_archive_pass_that_cannot_write_to_r2_counts_the_failure_and_keeps_the_run() {
    let stack = Stack::start(StackOptions {
        poller_vars: vec![
            ("RETENTION_DAYS".into(), "0.000025".into()), // about 2 seconds
            ("BATON_FAULT_INJECTION".into(), "r2".into()),
        ],
        ..StackOptions::default()
    });
    assert_eq!(number(&scrape(&stack), "orchestrator_archive_failures_total", &[]), 0.0);
    let run_id = start_run(&stack, &json!({"website_id": "metrics-r2", "domain": "r2.example", "plan_id": "quick-v1"}));
    wait_terminal(&stack, &run_id);
    std::thread::sleep(Duration::from_secs(3));
    let r = stack.admin_post("/admin/poller/tick", &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["last_run"]["archive"]["failed"].as_u64().unwrap_or(0) >= 1, "{}", r.text());
    assert!(number(&scrape(&stack), "orchestrator_archive_failures_total", &[]) >= 1.0);
    let kept = stack.sql("SELECT COUNT(*) AS n FROM runs WHERE run_id = ?1", &[json!(run_id)]).0;
    assert_eq!(kept[0]["n"], 1, "the run stays in D1");
}
