//! Bounded history: runs past their client's retention move to the archive (R2) and stay
//! readable through the API, the runs list, the UI's page and the CLI; a client deletes a run for good; the
//! history kept beside runs (settled webhook deliveries, schedule fires, dead letters) goes.

use std::time::Duration;

use baton_e2e::browser::Browser;
use baton_e2e::{cli, poll_until, Stack, StackOptions};
use serde_json::{json, Value};

use crate::runs::wait_terminal;

/// About 2 seconds.
const SHORT_RETENTION_DAYS: &str = "0.000025";

fn start(stack: &Stack, client: usize, site: &str) -> String {
    let body = json!({ "website_id": site, "domain": "archive.example", "plan_id": "quick-v1" });
    let r = stack.post_as(stack.token(client), "/api/orchestration/run", &body);
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["run_id"].as_str().expect("run_id").to_string()
}

fn detail(stack: &Stack, client: usize, run_id: &str) -> Value {
    let r = stack.get_as(stack.token(client), &format!("/api/orchestration/runs/{run_id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn events(stack: &Stack, run_id: &str) -> Value {
    let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}/events"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn listed(stack: &Stack, site: &str) -> Vec<Value> {
    let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs?website_id={site}&limit=2"));
    assert_eq!(r.status, 200, "{}", r.text());
    let mut page = r.json();
    let mut runs: Vec<Value> = page["runs"].as_array().cloned().unwrap_or_default();
    // Every page, through the cursor: archived and live runs page together.
    while let Some(cursor) = page["next_cursor"].as_str().map(str::to_string) {
        let r =
            stack.get_as(stack.token(0), &format!("/api/orchestration/runs?website_id={site}&limit=2&cursor={cursor}"));
        assert_eq!(r.status, 200, "{}", r.text());
        page = r.json();
        runs.extend(page["runs"].as_array().cloned().unwrap_or_default());
    }
    runs
}

fn delete(stack: &Stack, client: usize, run_id: &str) -> (u16, Value) {
    let auth = format!("Bearer {}", stack.token(client));
    let r =
        stack.send("DELETE", &format!("/api/orchestration/runs/{run_id}"), &[("Authorization", auth.as_str())], None);
    (r.status, r.json())
}

fn count(stack: &Stack, sql: &str, run_id: &str) -> i64 {
    stack.sql(sql, &[json!(run_id)]).0[0]["n"].as_i64().unwrap_or(-1)
}

/// The counters and histograms of `/metrics` (gauges of what runs now aside).
fn counters(stack: &Stack) -> Vec<String> {
    let r = stack.get_as(&stack.secrets().admin_token, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .filter(|l| {
            ["orchestrator_flow_runs_processed_total", "orchestrator_tasks_", "orchestrator_run_execution_seconds"]
                .iter()
                .any(|p| l.starts_with(p))
                || l.starts_with("orchestrator_fan_in_latency_seconds")
        })
        .map(str::to_string)
        .collect()
}

fn without_archived(mut body: Value) -> Value {
    body.as_object_mut().map(|o| o.remove("archived"));
    body
}

#[test]
fn runs_past_their_retention_are_archived_and_stay_readable_until_their_client_deletes_them() {
    let secrets = baton_e2e::stack::Secrets::load(&baton_e2e::repo_root());
    let keeper = secrets.api_tokens[1].1.clone();
    let options = StackOptions {
        poller_vars: vec![
            ("RETENTION_DAYS".into(), SHORT_RETENTION_DAYS.into()),
            ("RETENTION_DAYS_BY_CLIENT".into(), format!(r#"{{"{keeper}": 0}}"#)),
        ],
        ..StackOptions::default()
    };
    let stack = Stack::start(options);
    assert_eq!(stack.client_id(1), keeper);
    let site = "site_archive";

    // Three runs of client 0 and one of client 1 (whose retention keeps everything) end.
    let archived_ids: Vec<String> = (0..3).map(|_| start(&stack, 0, site)).collect();
    let kept_id = start(&stack, 1, "site_kept");
    // A pipeline execution of client 0: past its retention it leaves D1 with its run.
    let r = stack.post_as(
        stack.token(0),
        "/execute",
        &json!({ "template_name": "course_creation", "parameters": {"topic": "React", "targetAudience": "beginners"},
                 "client_id": stack.client_id(0) }),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let execution_id = r.json()["execution_id"].as_str().expect("execution_id").to_string();
    poll_until("the execution to end", Duration::from_secs(30), || {
        let r = stack.get_as(stack.token(0), &format!("/executions/{execution_id}"));
        assert_eq!(r.status, 200, "{}", r.text());
        (r.json()["terminal"] == true).then_some(())
    });
    for run_id in &archived_ids {
        wait_terminal(&stack, run_id);
    }
    let before: Vec<(Value, Value)> =
        archived_ids.iter().map(|id| (detail(&stack, 0, id), events(&stack, id))).collect();
    let listed_before = listed(&stack, site);
    assert_eq!(listed_before.len(), 3, "{listed_before:#?}");
    let shown_before = cli::run(&stack, stack.token(0), &["show", &archived_ids[0]]);
    assert_eq!(shown_before.code, 0, "{}", shown_before.stderr);
    let kept_detail = poll_until("client 1's run to end", Duration::from_secs(30), || {
        let body = detail(&stack, 1, &kept_id);
        (body["terminal"] == true).then_some(body)
    });
    let counted = counters(&stack);
    assert!(!counted.is_empty());

    // History kept beside runs, old enough to go: a settled webhook delivery with its attempt
    // log, a started schedule fire, a dead letter given up on; and a pending delivery, which stays.
    let old = baton_e2e::now_ms() as i64 - 60_000;
    for (id, status) in [("whd_prune_settled", "failed"), ("whd_prune_pending", "pending")] {
        stack.sql_on(
            1,
            "INSERT INTO webhook_deliveries (delivery_id, webhook_id, client_id, event, payload, status, created_at, updated_at) \
             VALUES (?1, 'wh_gone', 'alice', 'run.finished', '{}', ?2, ?3, ?3)",
            &[json!(id), json!(status), json!(old)],
        );
        stack.sql_on(
            1,
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, duration_ms) VALUES (?1, 1, ?2, 5)",
            &[json!(id), json!(old)],
        );
    }
    stack.sql_on(
        1,
        "INSERT INTO schedule_fires (schedule_id, slot, run_id, status, fired_at) VALUES ('sch_prune', 1, 'run_pruned', 'started', ?1)",
        &[json!(old)],
    );
    stack.sql_on(
        1,
        "INSERT INTO dead_letters (queue, message_id, body, error, failures, first_failed_at, last_failed_at, given_up_at) \
         VALUES ('baton-tasks-dlq', 'm_prune', '{}', 'x', 3, ?1, ?1, ?1)",
        &[json!(old)],
    );
    // An execution that failed without ever running.
    stack.sql_on(
        1,
        "INSERT INTO execution_queue (run_id, client_id, template_name, website_id, domain, plan_json, priority, \
         enqueued_at, deadline_at, status, last_error) \
         VALUES ('exec_0000000000001_000000000000', 'alice', 't', 's', 'd.example', '{}', 1, ?1, ?1, 'failed', 'x')",
        &[json!(old)],
    );

    // Ticks archive them once their retention has passed.
    poll_until("the three runs to be archived", Duration::from_secs(30), || {
        let r = stack.admin_post("/admin/poller/tick", &json!({}));
        assert_eq!(r.status, 200, "{}", r.text());
        let n = stack.sql("SELECT COUNT(*) AS n FROM archived_runs WHERE website_id = ?1", &[json!(site)]).0[0]["n"]
            .as_i64()
            .unwrap_or(0);
        (n == 3).then_some(())
    });
    for run_id in &archived_ids {
        for (table, sql) in [
            ("runs", "SELECT COUNT(*) AS n FROM runs WHERE run_id = ?1"),
            ("steps", "SELECT COUNT(*) AS n FROM steps WHERE run_id = ?1"),
            ("step_attempts", "SELECT COUNT(*) AS n FROM step_attempts WHERE run_id = ?1"),
            ("kbase_events", "SELECT COUNT(*) AS n FROM kbase_events WHERE run_id = ?1"),
        ] {
            assert_eq!(count(&stack, sql, run_id), 0, "{run_id} still has rows in {table}");
        }
        // What stays in D1 is the slim row: well under 650 bytes of values.
        let (rows, _) = stack.sql(
            "SELECT length(run_id) + length(client_id) + length(kind) + length(website_id) + length(domain) \
             + length(plan_id) + length(status) + 8 * 10 + COALESCE(length(diagnosis_event_id), 0) \
             + COALESCE(length(error), 0) AS bytes, object_bytes FROM archived_runs WHERE run_id = ?1",
            &[json!(run_id)],
        );
        assert!(rows[0]["bytes"].as_i64().is_some_and(|b| b < 400), "{rows:?}");
        assert!(rows[0]["object_bytes"].as_i64().is_some_and(|b| b > 200), "an object was written: {rows:?}");
    }
    assert_eq!(
        count(&stack, "SELECT COUNT(*) AS n FROM runs WHERE run_id = ?1", &kept_id),
        1,
        "client 1 keeps its runs"
    );
    // The execution went with its run (no archive for executions); so did the failed one.
    poll_until("the execution to leave D1", Duration::from_secs(30), || {
        stack.admin_post("/admin/poller/tick", &json!({}));
        let gone = count(&stack, "SELECT COUNT(*) AS n FROM runs WHERE run_id = ?1", &execution_id) == 0;
        gone.then_some(())
    });
    for sql in [
        "SELECT COUNT(*) AS n FROM execution_queue WHERE run_id = ?1",
        "SELECT COUNT(*) AS n FROM steps WHERE run_id = ?1",
        "SELECT COUNT(*) AS n FROM resource_allocations WHERE run_id = ?1",
        "SELECT COUNT(*) AS n FROM resource_usage WHERE run_id = ?1",
    ] {
        assert_eq!(count(&stack, sql, &execution_id), 0, "{sql}");
    }
    let r = stack.get_as(stack.token(0), &format!("/executions/{execution_id}"));
    assert_eq!(r.status, 404, "{}", r.text());
    // The history kept beside runs: settled rows went, the pending delivery stays.
    let left = |sql: &str, id: &str| stack.sql_on(1, sql, &[json!(id)])[0]["n"].as_i64().unwrap_or(-1);
    let deliveries = "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE delivery_id = ?1";
    let attempts = "SELECT COUNT(*) AS n FROM webhook_attempts WHERE delivery_id = ?1";
    assert_eq!((left(deliveries, "whd_prune_settled"), left(attempts, "whd_prune_settled")), (0, 0));
    assert_eq!((left(deliveries, "whd_prune_pending"), left(attempts, "whd_prune_pending")), (1, 1));
    assert_eq!(left("SELECT COUNT(*) AS n FROM schedule_fires WHERE schedule_id = ?1", "sch_prune"), 0);
    assert_eq!(left("SELECT COUNT(*) AS n FROM dead_letters WHERE message_id = ?1", "m_prune"), 0);
    assert_eq!(
        left("SELECT COUNT(*) AS n FROM execution_queue WHERE run_id = ?1", "exec_0000000000001_000000000000"),
        0,
        "an execution that failed without a run is pruned"
    );

    // Read back: the same answers, `archived: true`.
    for (run_id, (detail_before, events_before)) in archived_ids.iter().zip(&before) {
        let now = detail(&stack, 0, run_id);
        assert_eq!(now["archived"], true, "{now}");
        assert_eq!(detail_before["archived"], false);
        assert_eq!(without_archived(now.clone()), without_archived(detail_before.clone()), "{run_id}");
        assert_eq!(&events(&stack, run_id), events_before, "{run_id}");
    }
    assert_eq!(listed(&stack, site), listed_before, "the runs list shows archived runs as before");
    let shown = cli::run(&stack, stack.token(0), &["show", &archived_ids[0]]);
    assert_eq!((shown.code, &shown.stdout), (0, &shown_before.stdout), "{}", shown.stderr);
    let events_cli = cli::run(&stack, stack.token(0), &["events", &archived_ids[0]]);
    assert_eq!(events_cli.code, 0, "{}", events_cli.stderr);
    assert!(events_cli.stdout.contains("diagnosis"), "{}", events_cli.stdout);
    assert_eq!(counters(&stack), counted, "archiving changes no counter");
    // The UI's run page, in a real browser, shows the archived run, marked so.
    let browser = Browser::start();
    crate::ui::sign_in(&browser, &stack.base_url(), stack.token(0));
    browser.goto(&format!("{}/ui/runs/{}", stack.base_url(), archived_ids[1]));
    let shown = browser.wait_for(
        "the archived run's page",
        Duration::from_secs(10),
        "const facts = document.getElementById('run-facts'); \
         return document.getElementById('run-archived') && facts \
           ? { status: facts.dataset.status, bars: document.querySelectorAll('#timeline .bar[data-step]').length } : null",
        json!([]),
    );
    assert_eq!(shown["status"], "completed", "{shown}");
    let steps = before[1].0["service_results"].as_array().map_or(0, Vec::len);
    assert_eq!(shown["bars"], json!(steps), "every step on the timeline: {shown}");

    // Another client sees none of it; an archived run can be read, not changed.
    let r = stack.get_as(stack.token(1), &format!("/api/orchestration/runs/{}", archived_ids[0]));
    assert_eq!(r.status, 404, "{}", r.text());
    let r = stack.post_as(stack.token(0), &format!("/api/orchestration/runs/{}/retry", archived_ids[0]), &json!({}));
    assert_eq!(r.status, 409, "{}", r.text());
    let r = stack.post_as(stack.token(0), &format!("/api/orchestration/runs/{}/rerun", archived_ids[0]), &json!({}));
    assert_eq!(r.status, 202, "an archived run is rerun from its archive: {}", r.text());

    // An archived run whose object is gone answers 404 with its own code, never 500.
    stack.sql("UPDATE archived_runs SET created_at = created_at + 1 WHERE run_id = ?1", &[json!(archived_ids[2])]);
    let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{}", archived_ids[2]));
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "archive_missing", "{}", r.text());

    // Deleting for good: an archived run, then a live ended one; a running one is refused.
    let (status, body) = delete(&stack, 1, &archived_ids[0]);
    assert_eq!(status, 404, "another client's run: {body}");
    let (status, body) = delete(&stack, 0, &archived_ids[0]);
    assert_eq!((status, &body["deleted"]), (200, &json!(true)), "{body}");
    let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{}", archived_ids[0]));
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(listed(&stack, site).len(), 3 - 1 + 1, "the deleted run is gone, the rerun listed");
    let (status, body) = delete(&stack, 1, &kept_id);
    assert_eq!((status, &body["deleted"]), (200, &json!(true)), "{body}");
    assert_eq!(count(&stack, "SELECT COUNT(*) AS n FROM runs WHERE run_id = ?1", &kept_id), 0);
    assert_eq!(count(&stack, "SELECT COUNT(*) AS n FROM steps WHERE run_id = ?1", &kept_id), 0);
    assert_eq!(stack.kv_get(&format!("job:{kept_id}")), None, "its KV summary is deleted too");
    assert_eq!(kept_detail["terminal"], true);
    let body = json!({ "website_id": "site_slow", "domain": "slow.example", "plan_id": "quick-v1",
                       "parameters": { "sample_behaviour": { "vitals-monitor": { "never_answer": true } } } });
    let r = stack.post_as(stack.token(0), "/api/orchestration/run", &body);
    let running = r.json()["run_id"].as_str().expect("run_id").to_string();
    let (status, body) = delete(&stack, 0, &running);
    assert_eq!(status, 409, "a run in progress: {body}");
    assert_eq!(body["error"]["code"], "conflict", "{body}");
}

#[test]
fn an_invalid_retention_setting_archives_nothing_and_the_poller_says_which_variable() {
    let stack = Stack::start(StackOptions {
        poller_vars: vec![("RETENTION_DAYS".into(), "a month".into())],
        ..StackOptions::default()
    });
    let run_id = start(&stack, 0, "site_bad_retention");
    wait_terminal(&stack, &run_id);
    let r = stack.admin_post("/admin/poller/tick", &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let refused = r.json()["last_run"]["archive"]["refused"].as_str().unwrap_or("").to_string();
    assert!(refused.starts_with("RETENTION_DAYS:") && refused.contains("a month"), "{}", r.text());
    let health = stack.admin_get("/health");
    let poller = &health.json()["workers"]["poller"];
    let error = poller["retention_error"].as_str().unwrap_or("");
    assert!(error.starts_with("RETENTION_DAYS:"), "{poller}");
    assert_eq!(poller["status"], "degraded", "{poller}");
    assert_eq!(count(&stack, "SELECT COUNT(*) AS n FROM runs WHERE run_id = ?1", &run_id), 1, "nothing archived");
}
