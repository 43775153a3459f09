//! Resilience: concurrent results racing on one run, and a crash (SIGKILL) of the whole
//! stack in the middle of 100 runs. Duplicate queue deliveries are in `consumer.rs`; 1000
//! concurrent runs are W2 of the benchmark (`make bench`).

use std::sync::Barrier;
use std::time::{Duration, Instant};

use baton_e2e::{now_ms, poll_until, result_headers, shared_stack, Stack, StackOptions};
use serde_json::{json, Value};

use crate::consumer::insert_plan;
use crate::runs::{start_run, wait_terminal};

/// Counts of the run's events by type.
fn event_counts(stack: &Stack, run_id: &str) -> Value {
    let (rows, _) = stack.sql(
        "SELECT type, COUNT(*) AS n FROM kbase_events WHERE run_id = ?1 GROUP BY type ORDER BY type",
        &[json!(run_id)],
    );
    Value::Array(rows)
}

#[test]
fn fifty_concurrent_callbacks_on_the_last_steps_make_one_analysis_and_one_diagnosis() {
    let stack = shared_stack();
    let run_id = start_run(
        stack,
        &json!({
            "website_id": "site_race",
            "domain": "race.example",
            "plan_id": "quick-v1",
            // The last two steps are accepted (202) and never answer: their results come
            // only from the callbacks below.
            "parameters": {"sample_behaviour": {
                "serp-intelligence": {"never_answer": true},
                "vitals-monitor": {"never_answer": true},
            }},
        }),
    );
    poll_until("technical-seo done and the last two steps claimed", Duration::from_secs(15), || {
        let (rows, _) = stack.sql(
            "SELECT SUM(status = 'completed') AS done, SUM(status = 'running' AND claimed_at IS NOT NULL) AS claimed \
             FROM steps WHERE run_id = ?1",
            &[json!(run_id)],
        );
        (rows[0]["done"] == 1 && rows[0]["claimed"] == 2).then_some(())
    });

    let secrets = stack.secrets().clone();
    let callers = 50;
    let barrier = Barrier::new(callers);
    let answers: Vec<(String, usize, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..callers)
            .map(|i| {
                let (barrier, secrets, run_id) = (&barrier, &secrets, &run_id);
                scope.spawn(move || {
                    let (service, worker) = if i % 2 == 0 {
                        ("serp-intelligence", "serp_intelligence")
                    } else {
                        ("vitals-monitor", "vitals_monitor")
                    };
                    let body = json!({"status": "completed", "attempt": 1, "output": {"caller": i}}).to_string();
                    let signed =
                        result_headers(&secrets.key_for(worker), run_id, service, 1, body.as_bytes(), now_ms());
                    let path = format!("/api/jobs/{run_id}/results/{service}");
                    let headers: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    barrier.wait();
                    let r = stack.send("POST", &path, &headers, Some(body.as_bytes()));
                    assert_eq!(r.status, 200, "callback {i}: {}", r.text());
                    (service.to_string(), i, r.json())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a callback thread panicked")).collect()
    });

    // Each step took exactly one result; every other callback was told it came too late.
    let recorded: Vec<&(String, usize, Value)> = answers.iter().filter(|(_, _, a)| a["result"] == "recorded").collect();
    let services: Vec<&str> = recorded.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(recorded.len(), 2, "one recorded result per step: {answers:?}");
    assert!(services.contains(&"serp-intelligence") && services.contains(&"vitals-monitor"), "{services:?}");
    for (_, i, answer) in &answers {
        assert!(
            ["recorded", "already_recorded", "stale"].contains(&answer["result"].as_str().unwrap_or("")),
            "callback {i}: {answer}"
        );
    }
    // At most one caller says it won the fan-in claim. (A caller whose report came too late
    // may still be the one whose look claims it; its answer says `already_recorded` and carries
    // no advance.) That the claim happened exactly once is the one diagnosis below.
    let claims = answers.iter().filter(|(_, _, a)| !a["advance"]["claimed"].is_null()).count();
    assert!(claims <= 1, "{answers:?}");

    let body = wait_terminal(stack, &run_id);
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    assert_eq!(body["partial"], false, "{body}");
    assert_eq!(
        event_counts(stack, &run_id),
        json!([{"type": "diagnosis", "n": 1}, {"type": "run_status", "n": 2}]),
        "one diagnosis, one start and one finish event"
    );
    // The stored output is the winning callback's.
    for (service, i, _) in recorded {
        let (rows, _) = stack.sql(
            "SELECT output, attempts FROM steps WHERE run_id = ?1 AND service = ?2",
            &[json!(run_id), json!(service)],
        );
        let output: Value = serde_json::from_str(rows[0]["output"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
        assert_eq!(output["caller"], *i, "{service}: {rows:?}");
        assert_eq!(rows[0]["attempts"], 1, "{service}: {rows:?}");
    }
}

const CRASH_RUNS: usize = 100;
const TERMINAL: &str = "('completed','failed','timeout','cancelled')";

fn terminal_runs(stack: &Stack, website_id: &str) -> usize {
    let (rows, _) = stack.sql(
        &format!("SELECT COUNT(*) AS n FROM runs WHERE website_id = ?1 AND status IN {TERMINAL}"),
        &[json!(website_id)],
    );
    rows[0]["n"].as_u64().unwrap_or(0) as usize
}

#[test]
fn a_stack_killed_mid_way_through_100_runs_finishes_every_run_after_a_restart() {
    let persist_dir = std::env::temp_dir().join(format!("baton-e2e-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&persist_dir);
    let options = StackOptions { persist_dir: Some(persist_dir.clone()), ..StackOptions::default() };
    let mut stack = Stack::start(options.clone());
    let website = "site_crash";
    // Short step timeouts and analysis timeout so that what the crash interrupts is due for
    // the poller within seconds (the defaults are a minute and two).
    insert_plan(
        &stack,
        &json!({
            "plan_id": "crash-e2e",
            "name": "Crash test (standard-v1 shape)",
            "max_run_duration_ms": 300000,
            "services": [
                {"service": "technical-seo", "timeout_ms": 3000, "retry": {"initial_interval_ms": 100, "max_attempts": 5}},
                {"service": "serp-intelligence", "timeout_ms": 3000, "retry": {"initial_interval_ms": 100, "max_attempts": 5}},
                {"service": "vitals-monitor", "timeout_ms": 3000, "retry": {"initial_interval_ms": 100, "max_attempts": 5}},
                {"service": "domain-authority", "timeout_ms": 3000, "retry": {"initial_interval_ms": 100, "max_attempts": 5}},
                {"service": "competitive-intelligence", "depends_on": ["serp-intelligence"], "timeout_ms": 3000,
                 "retry": {"initial_interval_ms": 100, "max_attempts": 5}},
            ],
        }),
    );
    stack.kv_put("orchestration:config", r#"{"ANALYSIS_TIMEOUT_SECONDS": 3}"#);

    // 100 runs from 10 clients; each step takes 100 ms of service work.
    let run_ids: Vec<String> = std::thread::scope(|scope| {
        let stack = &stack;
        let handles: Vec<_> = (0..10)
            .map(|t| {
                scope.spawn(move || {
                    (0..CRASH_RUNS / 10)
                        .map(|i| {
                            start_run(
                                stack,
                                &json!({
                                    "website_id": website,
                                    "domain": format!("crash{t}-{i}.example"),
                                    "plan_id": "crash-e2e",
                                    "parameters": {"sample_behaviour": {"*": {"latency_ms": 100}}},
                                }),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a client thread panicked")).collect()
    });
    assert_eq!(run_ids.len(), CRASH_RUNS);

    // Kill everything (no handler finishes) as soon as some runs are done.
    let done_at_kill = poll_until("the first runs to finish", Duration::from_secs(60), || {
        let done = terminal_runs(&stack, website);
        (done >= 5).then_some(done)
    });
    stack.kill();
    assert!(done_at_kill < CRASH_RUNS, "the kill came after every run had finished ({done_at_kill})");

    let mut stack = Stack::start(options);
    // The poller (ticked here as its cron would) re-dispatches or times out what was in flight.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let tick = stack.admin_post("/admin/poller/tick", &json!({}));
        assert_eq!(tick.status, 200, "{}", tick.text());
        if terminal_runs(&stack, website) == CRASH_RUNS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {CRASH_RUNS} runs finished within 120 s of the restart",
            terminal_runs(&stack, website)
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // Every run completed with one diagnosis and one finish event; nothing is left open.
    let (rows, _) = stack.sql(
        "SELECT r.run_id, r.status, r.due_at, \
           (SELECT COUNT(*) FROM kbase_events e WHERE e.run_id = r.run_id AND e.type = 'diagnosis') AS diagnoses, \
           (SELECT COUNT(*) FROM kbase_events e WHERE e.run_id = r.run_id AND e.type = 'run_status') AS lifecycle, \
           (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.run_id AND s.status NOT IN ('completed','failed','skipped','timeout','cancelled')) AS open_steps \
         FROM runs r WHERE r.website_id = ?1",
        &[json!(website)],
    );
    assert_eq!(rows.len(), CRASH_RUNS);
    for row in &rows {
        assert_eq!(row["status"], "completed", "{row}");
        assert_eq!(row["diagnoses"], 1, "{row}");
        assert_eq!(row["lifecycle"], 2, "start and finish: {row}");
        assert_eq!(row["open_steps"], 0, "{row}");
        assert!(row["due_at"].is_null(), "a finished run is no longer due: {row}");
    }
    let (retried, _) = stack.sql(
        "SELECT COUNT(*) AS n FROM steps s JOIN runs r ON r.run_id = s.run_id WHERE r.website_id = ?1 AND s.attempts > 1",
        &[json!(website)],
    );
    eprintln!(
        "crash test: {done_at_kill} of {CRASH_RUNS} runs had finished at the kill; {} steps needed another attempt",
        retried[0]["n"]
    );
    stack.stop();
    drop(stack);
    let _ = std::fs::remove_dir_all(&persist_dir);
}

#[test]
fn a_waiting_client_s_run_does_not_need_the_task_queue_and_a_failed_send_is_left_to_the_poller() {
    // The orchestrator cannot send task messages at all, and runs only a waiting client's
    // attempts in place.
    let stack = Stack::start(StackOptions {
        vars: vec![("BATON_FAULT_INJECTION".into(), "task-queue".into()), ("IN_PLACE_SECONDS".into(), "0".into())],
        ..StackOptions::default()
    });
    // `?wait`: the first wave is handed to the consumer directly, and the run ends.
    let r = stack.post_as(
        stack.token(0),
        "/api/orchestration/run?wait=30",
        &json!({"website_id": "site_handover", "domain": "handover.example", "plan_id": "standard-v1"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["summary"]["servicesCompleted"], 5, "{body}");

    // Without `?wait` the first wave's send fails: the wave is put back and the run made due.
    let run_id =
        start_run(&stack, &json!({"website_id": "site_unsent", "domain": "unsent.example", "plan_id": "quick-v1"}));
    let (rows, _) = stack.sql(
        "SELECT r.due_at <= r.created_at + 1000 AS due_now, \
           (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.run_id AND s.status = 'pending' AND s.attempts = 0) AS pending \
         FROM runs r WHERE r.run_id = ?1",
        &[json!(run_id)],
    );
    assert_eq!(rows[0], json!({"due_now": 1, "pending": 3}), "nothing dispatched, the run due at once");
    // The poller (whose sends work) dispatches it on its next tick.
    let tick = stack.admin_post("/admin/poller/tick", &json!({}));
    assert_eq!(tick.status, 200, "{}", tick.text());
    assert_eq!(tick.json()["last_run"]["counts"]["steps_dispatched"], 3, "{}", tick.text());
    assert_eq!(wait_terminal(&stack, &run_id)["summary"]["status"], "completed");
}
