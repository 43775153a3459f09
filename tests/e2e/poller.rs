//! The cron fan-in poller: the safety net for everything the event-driven path misses.
//! These tests change the global runtime config (`orchestration:config`), so they share a
//! stack of their own and take turns on it.

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use baton_e2e::{poll_until, Stack, StackOptions};
use serde_json::{json, Value};

use crate::runs::{start_run, wait_terminal};

pub(crate) fn poller_stack() -> (&'static Stack, MutexGuard<'static, ()>) {
    static STACK: OnceLock<Stack> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let stack = STACK.get_or_init(|| Stack::start(StackOptions::default()));
    stack.kv_put("orchestration:config", "{}");
    (stack, turn)
}

fn now_ms() -> i64 {
    baton_e2e::now_ms() as i64
}

fn tick(stack: &Stack) -> Value {
    let r = stack.admin_post("/admin/poller/tick", &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn count_events(stack: &Stack, run_id: &str, kind: &str) -> i64 {
    let (rows, _) = stack
        .sql("SELECT COUNT(*) AS n FROM kbase_events WHERE run_id = ?1 AND type = ?2", &[json!(run_id), json!(kind)]);
    rows[0]["n"].as_i64().unwrap_or(-1)
}

/// Waits until every step of the run has ended, and returns the run's status then.
fn wait_steps_settled(stack: &Stack, run_id: &str) -> String {
    poll_until("every step to end", Duration::from_secs(15), || {
        let (rows, _) = stack.sql(
            "SELECT r.status, (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.run_id \
             AND s.status IN ('pending', 'running', 'retrying')) AS open FROM runs r WHERE r.run_id = ?1",
            &[json!(run_id)],
        );
        (rows[0]["open"] == 0).then(|| rows[0]["status"].as_str().unwrap_or("").to_string())
    })
}

/// A run whose last step never answers, then moved back in time past its deadline.
fn overdue_run(stack: &Stack, site: &str) -> String {
    let run_id = start_run(
        stack,
        &json!({
            "website_id": site,
            "domain": "late.example",
            "plan_id": "quick-v1",
            "parameters": {"sample_behaviour": {"vitals-monitor": {"never_answer": true}}},
        }),
    );
    poll_until("two steps to complete", Duration::from_secs(15), || {
        let (rows, _) =
            stack.sql("SELECT COUNT(*) AS n FROM steps WHERE run_id = ?1 AND status = 'completed'", &[json!(run_id)]);
        (rows[0]["n"] == 2).then_some(())
    });
    // quick-v1 may take 2 minutes: pretend it started 10 minutes ago.
    let past = now_ms() - 10 * 60 * 1000;
    stack.sql(
        "UPDATE runs SET started_at = ?2, deadline_at = ?2 + 120000, due_at = ?2 + 120000 WHERE run_id = ?1",
        &[json!(run_id), json!(past)],
    );
    run_id
}

#[test]
fn with_event_driven_fan_in_off_the_next_tick_aggregates_a_finished_job_exactly_once() {
    let (stack, _turn) = poller_stack();
    stack.kv_put("orchestration:config", r#"{"EVENT_DRIVEN_FANIN": false}"#);
    let run_id = start_run(stack, &json!({"website_id": "site_cron", "domain": "cron.example", "plan_id": "quick-v1"}));
    assert_eq!(wait_steps_settled(stack, &run_id), "running", "nothing aggregated it yet");
    assert_eq!(count_events(stack, &run_id, "diagnosis"), 0);

    let first = tick(stack);
    assert_eq!(first["last_run"]["counts"]["aggregated"], 1, "{first}");
    let body = wait_terminal(stack, &run_id);
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    let second = tick(stack);
    assert_eq!(second["last_run"]["counts"]["aggregated"], 0, "{second}");
    assert_eq!(count_events(stack, &run_id, "diagnosis"), 1);
    // The tick left its heartbeat in KV.
    let last_run: Value =
        serde_json::from_str(&stack.kv_get("orchestration:last_run").unwrap_or_default()).unwrap_or(Value::Null);
    assert!(last_run["at"].as_i64().is_some(), "{last_run}");
}

#[test]
fn two_racing_ticks_send_exactly_one_analysis() {
    let (stack, _turn) = poller_stack();
    stack.kv_put("orchestration:config", r#"{"EVENT_DRIVEN_FANIN": false}"#);
    let run_id = start_run(stack, &json!({"website_id": "site_race", "domain": "race.example", "plan_id": "quick-v1"}));
    wait_steps_settled(stack, &run_id);
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| tick(stack));
        let b = scope.spawn(|| tick(stack));
        (a.join().unwrap_or(Value::Null), b.join().unwrap_or(Value::Null))
    });
    let aggregated = a["last_run"]["counts"]["aggregated"].as_i64().unwrap_or(0)
        + b["last_run"]["counts"]["aggregated"].as_i64().unwrap_or(0);
    assert_eq!(aggregated, 1, "{a} {b}");
    assert_eq!(wait_terminal(stack, &run_id)["summary"]["status"], "completed");
    assert_eq!(count_events(stack, &run_id, "diagnosis"), 1);
}

#[test]
fn a_job_past_its_deadline_is_aggregated_with_partial_data_and_its_missing_services() {
    let (stack, _turn) = poller_stack();
    let run_id = overdue_run(stack, "site_timeout");
    let t = tick(stack);
    assert_eq!(t["last_run"]["counts"]["aggregated"], 1, "{t}");
    let body = wait_terminal(stack, &run_id);
    assert_eq!(body["summary"]["status"], "timeout", "{body}");
    assert_eq!(body["partial"], true);
    assert_eq!(body["summary"]["servicesCompleted"], 2);
    assert_eq!(body["summary"]["servicesTimeout"], 1);
    assert_eq!(body["diagnosis"]["missing_services"], json!(["vitals-monitor"]));
    let (rows, _) = stack.sql("SELECT partial, missing FROM runs WHERE run_id = ?1", &[json!(run_id)]);
    assert_eq!(rows[0]["missing"], "[\"vitals-monitor\"]");
}

#[test]
fn with_partial_data_off_a_job_incomplete_at_its_deadline_fails_with_the_reason() {
    let (stack, _turn) = poller_stack();
    stack.kv_put("orchestration:config", r#"{"ENABLE_PARTIAL_DATA": false}"#);
    let run_id = overdue_run(stack, "site_nopartial");
    let t = tick(stack);
    assert_eq!(t["last_run"]["counts"]["failed"], 1, "{t}");
    let body = wait_terminal(stack, &run_id);
    assert_eq!(body["summary"]["status"], "failed", "{body}");
    let error = body["summary"]["error"].as_str().unwrap_or("");
    assert!(error.contains("Partial data is disabled") && error.contains("vitals-monitor"), "{error}");
    assert_eq!(count_events(stack, &run_id, "diagnosis"), 0);
    let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}/events"));
    let events = r.json()["events"].as_array().cloned().unwrap_or_default();
    let finish = events.iter().find(|e| e["payload"]["status"] == "failed").expect("a finish event");
    assert_eq!(finish["payload"]["services_timeout"], 1);
}

#[test]
fn a_malformed_config_override_is_ignored_shown_in_health_and_does_not_stop_the_tick() {
    let (stack, _turn) = poller_stack();
    stack.kv_put("orchestration:config", "{not json");
    let t = tick(stack);
    assert_eq!(t["ran"], true, "{t}");
    let r = stack.admin_get("/health");
    let poller = &r.json()["workers"]["poller"];
    assert!(poller["rejected_override"].as_str().is_some_and(|s| !s.is_empty()), "{poller}");
    assert_eq!(poller["config"]["POLLING_FREQUENCY_MINUTES"], 5, "the env default stays in force");
    stack.kv_put("orchestration:config", r#"{"POLLING_FREQUENCY_MINUTES": "often"}"#);
    let r = stack.admin_get("/health");
    let rejected = r.json()["workers"]["poller"]["rejected_override"].as_str().unwrap_or("").to_string();
    assert!(
        rejected.contains("POLLING_FREQUENCY_MINUTES") && rejected.contains("often"),
        "names key and value: {rejected}"
    );
}

#[test]
fn health_turns_degraded_when_ticks_stop() {
    let (stack, _turn) = poller_stack();
    tick(stack);
    let r = stack.admin_get("/health");
    assert_eq!(r.json()["workers"]["poller"]["status"], "ok", "{}", r.text());
    // The last tick was 16 minutes ago: more than 3 × the 5-minute frequency.
    let old = now_ms() - 16 * 60 * 1000;
    stack.kv_put("orchestration:last_run", &json!({"at": old, "duration_ms": 1, "counts": {}}).to_string());
    let r = stack.admin_get("/health");
    assert_eq!(r.json()["workers"]["poller"]["status"], "degraded", "{}", r.text());
    assert_eq!(r.json()["workers"]["poller"]["http_status"], 503, "{}", r.text());
}

#[test]
fn the_cron_path_honours_the_polling_frequency() {
    let (stack, _turn) = poller_stack();
    tick(stack);
    let r = stack.cron_tick();
    assert_eq!(r.json()["ran"], false, "a tick just ran; the 5-minute interval has not passed: {}", r.text());
    stack.kv_put("orchestration:last_run", &json!({"at": now_ms() - 6 * 60 * 1000}).to_string());
    let r = stack.cron_tick();
    assert_eq!(r.json()["ran"], true, "{}", r.text());
}

#[test]
fn a_tick_reads_rows_in_proportion_to_active_jobs_not_history() {
    let (stack, _turn) = poller_stack();
    // 10 000 runs that finished in the last hour: history within its retention (runs past it
    // are the archive's work, not history a tick must not read).
    let hour_ago = now_ms() - 3_600_000;
    stack.sql(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) \
         INSERT INTO runs (run_id, kind, client_id, website_id, domain, plan_id, plan_name, plan_json, status, \
         created_at, started_at, deadline_at, completed_at) \
         SELECT printf('run_0000000000001_%016x', i), 'diagnostic', 'history', 'site_history', 'old.example', \
         'quick-v1', 'Quick', '{}', 'completed', ?1 + i, ?1 + i, ?1 + i + 1000, ?1 + i + 10 FROM n",
        &[json!(hour_ago)],
    );
    let t = tick(stack);
    let rows_read = t["last_run"]["counts"]["rows_read"].as_i64().unwrap_or(i64::MAX);
    assert!(rows_read < 200, "a tick read {rows_read} rows with 10 000 finished runs in history: {t}");
}

#[test]
fn a_long_running_step_that_reports_progress_is_polled_and_recorded() {
    let (stack, _turn) = poller_stack();
    let run_id = start_run(
        stack,
        &json!({
            "website_id": "site_progress",
            "domain": "progress.example",
            "plan_id": "quick-v1",
            "parameters": {"sample_behaviour": {"technical-seo": {"never_answer": true}}},
        }),
    );
    poll_until("technical-seo to be accepted asynchronously", Duration::from_secs(10), || {
        let (rows, _) = stack.sql(
            "SELECT progress FROM steps WHERE run_id = ?1 AND service = 'technical-seo' AND progress IS NOT NULL",
            &[json!(run_id)],
        );
        rows.first().cloned()
    });
    let t = tick(stack);
    assert!(t["last_run"]["counts"]["progress_polled"].as_i64().unwrap_or(0) >= 1, "{t}");
    let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}"));
    let body = r.json();
    let step =
        body["service_results"].as_array().and_then(|a| a.iter().find(|s| s["service"] == "technical-seo")).cloned();
    let progress = step.map(|s| s["progress"].clone()).unwrap_or(Value::Null);
    let fraction = progress["progress"].as_f64().unwrap_or(-1.0);
    assert!((0.0..=1.0).contains(&fraction), "{progress}");
    assert_eq!(progress["status"], "running");
    // Settle the run so later ticks on this stack count only their own work.
    stack.sql("UPDATE steps SET status = 'cancelled' WHERE run_id = ?1 AND status = 'running'", &[json!(run_id)]);
    stack.sql("UPDATE runs SET status = 'cancelled', due_at = NULL WHERE run_id = ?1", &[json!(run_id)]);
}

#[test]
fn a_kv_failure_does_not_stop_the_tick() {
    // A stack whose poller sees every KV call fail: no config override, no heartbeat.
    let stack = Stack::start(StackOptions {
        poller_vars: vec![("BATON_FAULT_INJECTION".into(), "kv".into())],
        ..StackOptions::default()
    });
    let run_id = overdue_run(&stack, "site_kv_down");
    let t = tick(&stack);
    assert_eq!(t["ran"], true, "{t}");
    assert_eq!(t["last_run"]["counts"]["aggregated"], 1, "the due job is still aggregated: {t}");
    assert_eq!(wait_terminal(&stack, &run_id)["summary"]["status"], "timeout");
    let cron = stack.cron_tick();
    assert_eq!(cron.json()["ran"], true, "without a readable last_run the cron path acts: {}", cron.text());
    let health = stack.admin_get("/health");
    let poller = &health.json()["workers"]["poller"];
    assert_eq!(poller["status"], "degraded", "{poller}");
    assert!(poller["rejected_override"].as_str().is_some_and(|r| r.contains("injected fault")), "{poller}");
}

#[test]
fn progress_is_polled_where_the_service_was_reached_its_base_url() {
    let service = baton_e2e::fake_service::FakeService::start_long_running();
    let urls = json!({"vitals_monitor": service.base_url()}).to_string();
    let vars = vec![("SERVICE_URLS".to_string(), urls)];
    let stack = Stack::start(StackOptions {
        vars: vars.clone(),
        consumer_vars: vars.clone(),
        poller_vars: vars,
        ..StackOptions::default()
    });
    let run_id = start_run(
        &stack,
        &json!({"website_id": "site_progress_url", "domain": "progress-url.example", "plan_id": "quick-v1"}),
    );
    poll_until("vitals-monitor to be accepted by its base URL", Duration::from_secs(15), || {
        let (rows, _) = stack.sql(
            "SELECT progress FROM steps WHERE run_id = ?1 AND service = 'vitals-monitor' AND progress IS NOT NULL",
            &[json!(run_id)],
        );
        rows.first().cloned()
    });
    let t = tick(&stack);
    assert_eq!(t["last_run"]["counts"]["progress_polled"], 1, "{t}");
    assert_eq!(t["last_run"]["counts"]["errors"], 0, "{t}");
    let paths: Vec<String> = service.received().into_iter().map(|(path, _)| path).collect();
    assert_eq!(
        paths,
        vec!["/api/handshake".to_string(), "/api/process".to_string(), format!("/api/progress/{run_id}")],
        "the poller asked the service's base URL, not the binding"
    );
    let (rows, _) =
        stack.sql("SELECT progress FROM steps WHERE run_id = ?1 AND service = 'vitals-monitor'", &[json!(run_id)]);
    let progress: Value = serde_json::from_str(rows[0]["progress"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    assert_eq!(
        (progress["progress"].as_f64(), &progress["status"], &progress["worker"]),
        (Some(0.25), &json!("running"), &json!("vitals_monitor")),
        "{progress}"
    );
}
