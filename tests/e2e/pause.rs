//! Pausing and resuming runs: a paused run records what is in flight, dispatches nothing new
//! (not a dependent made ready, not a retry whose backoff ended, not by the poller), still
//! ends at its deadline and can be cancelled; a resume dispatches what became ready in the
//! same write. Pauses racing results; the CLI and the run page's actions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_e2e::browser::{self, Browser};
use baton_e2e::{cli, now_ms, poll_until, shared_stack, Stack};
use serde_json::{json, Value};

use crate::deadlines::{create_plan, wait_terminal_within};
use crate::runs::start_run;

/// How long after its backoff the poller takes a retry's message for lost
/// (`RETRY_GRACE_MS`): a poller tick later than that would dispatch it, were the run not paused.
const RETRY_GRACE_MS: u64 = 10_000;

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{nanos:x}")
}

/// `a` (technical-seo) then `b` (serp-intelligence, after `a`), and `c` (vitals-monitor) on its
/// own, retried after one second: a plan whose second wave and retries a pause can hold.
fn two_wave_plan(stack: &Stack, plan_id: &str, max_run_duration_ms: u64) {
    let timeout = max_run_duration_ms.min(20_000);
    create_plan(
        stack,
        &json!({
            "planId": plan_id, "name": "Two waves", "maxRunDurationMs": max_run_duration_ms,
            "services": [
                {"service": "technical-seo", "timeoutMs": timeout},
                {"service": "serp-intelligence", "dependsOn": ["technical-seo"], "timeoutMs": timeout},
                {"service": "vitals-monitor", "timeoutMs": timeout,
                 "retry": {"maxAttempts": 3, "initialIntervalMs": 1_000, "maxIntervalMs": 1_000}},
            ],
        }),
    );
}

fn hold(stack: &Stack, client: usize, run_id: &str, action: &str) -> (u16, Value) {
    let r = stack.post_as(stack.token(client), &format!("/api/orchestration/runs/{run_id}/{action}"), &json!({}));
    (r.status, serde_json::from_str(&r.text()).unwrap_or(Value::Null))
}

fn step(stack: &Stack, run_id: &str, service: &str) -> Value {
    let (rows, _) = stack.sql(
        "SELECT status, attempts, next_attempt_at FROM steps WHERE run_id = ?1 AND service = ?2",
        &[json!(run_id), json!(service)],
    );
    rows.into_iter().next().unwrap_or(Value::Null)
}

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or_else(|| panic!("not an integer: {value}"))
}

/// The times of the run's `run_status` events with `status`, oldest first.
fn status_events(stack: &Stack, run_id: &str, status: &str) -> Vec<i64> {
    let (rows, _) = stack.sql(
        "SELECT created_at FROM kbase_events WHERE run_id = ?1 AND type = 'run_status' \
         AND json_extract(payload, '$.status') = ?2 ORDER BY created_at",
        &[json!(run_id), json!(status)],
    );
    rows.iter().map(|r| int(&r["created_at"])).collect()
}

/// When each attempt of the run was first dispatched: the ended attempts' claims and the
/// steps' current attempts' starts (`step_attempts.started_at` is the claim; a step's
/// `started_at` its first dispatch).
fn attempt_starts(stack: &Stack, run_id: &str) -> Vec<(String, i64, i64)> {
    let (rows, _) = stack.sql(
        "SELECT service, attempt, started_at FROM step_attempts WHERE run_id = ?1 AND started_at IS NOT NULL",
        &[json!(run_id)],
    );
    rows.iter()
        .map(|r| (r["service"].as_str().unwrap_or("").to_string(), int(&r["attempt"]), int(&r["started_at"])))
        .collect()
}

#[test]
fn a_paused_run_records_what_is_in_flight_dispatches_nothing_and_resumes_where_it_stood() {
    let stack = shared_stack();
    let plan_id = unique("pause-waves");
    two_wave_plan(stack, &plan_id, 120_000);
    let run_id = start_run(
        stack,
        &json!({"website_id": "site_pause", "domain": "pause.example", "plan_id": plan_id,
                "parameters": {"sample_behaviour": {"technical-seo": {"latency_ms": 2_500},
                                                     "vitals-monitor": {"fail_transient": 1}}}}),
    );
    let (status, body) = hold(stack, 0, &run_id, "pause");
    assert_eq!(status, 200, "{body}");
    assert_eq!((&body["status"], &body["changed"]), (&json!("paused"), &json!(true)), "{body}");
    let (status, again) = hold(stack, 0, &run_id, "pause");
    assert_eq!((status, &again["changed"]), (200, &json!(false)), "pausing twice changes nothing: {again}");
    let (status, _) = hold(stack, 1, &run_id, "pause");
    assert_eq!(status, 404, "another client's run does not exist for them");

    // What was in flight finishes and is recorded; nothing new starts: not the dependent made
    // ready, not the retry whose backoff ends, not the poller taking the retry's message for lost.
    let retry_due = poll_until("wave one to settle while paused", Duration::from_secs(20), || {
        let (a, c) = (step(stack, &run_id, "technical-seo"), step(stack, &run_id, "vitals-monitor"));
        (a["status"] == "completed" && c["status"] == "retrying").then(|| int(&c["next_attempt_at"]) as u64)
    });
    poll_until("the retry's message to count as lost", Duration::from_secs(30), || {
        (now_ms() > retry_due + RETRY_GRACE_MS).then_some(())
    });
    let tick = stack.cron_tick();
    assert_eq!(tick.status, 200, "{}", tick.text());
    let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}"));
    let run = r.json();
    assert_eq!(run["status"], "paused", "{run}");
    assert_eq!(step(stack, &run_id, "serp-intelligence")["attempts"], 0, "the dependent waits for the resume");
    assert_eq!(step(stack, &run_id, "vitals-monitor")["attempts"], 1, "the retry waits for the resume");
    let listed = stack.get_as(stack.token(0), "/api/orchestration/runs?status=paused&website_id=site_pause").json();
    let ids: Vec<&str> = listed["runs"].as_array().into_iter().flatten().filter_map(|r| r["runId"].as_str()).collect();
    assert!(ids.contains(&run_id.as_str()), "listed as paused: {ids:?}");

    let (status, resumed) = hold(stack, 0, &run_id, "resume");
    assert_eq!(status, 200, "{resumed}");
    assert_eq!((&resumed["status"], &resumed["changed"]), (&json!("running"), &json!(true)), "{resumed}");
    let mut dispatched: Vec<&str> =
        resumed["dispatched"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    dispatched.sort_unstable();
    assert_eq!(dispatched, ["serp-intelligence", "vitals-monitor"], "{resumed}");
    let (status, again) = hold(stack, 0, &run_id, "resume");
    assert!(status == 200 && again["changed"] == false || status == 409, "{status} {again}");

    let ended = wait_terminal_within(stack, &run_id, Duration::from_secs(30));
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(step(stack, &run_id, "vitals-monitor")["attempts"], 2);
    let (paused, resumed) = (status_events(stack, &run_id, "paused"), status_events(stack, &run_id, "running"));
    assert_eq!((paused.len(), resumed.len()), (1, 1), "one pause and one resume event");
    for (service, attempt, started) in attempt_starts(stack, &run_id) {
        assert!(
            started < paused[0] || started >= resumed[0],
            "{service} attempt {attempt} started at {started}, while the run was paused ({} to {})",
            paused[0],
            resumed[0]
        );
    }
    for (status, what) in
        [(hold(stack, 0, &run_id, "pause").0, "pause"), (hold(stack, 0, &run_id, "resume").0, "resume")]
    {
        assert_eq!(status, 409, "an ended run cannot {what}");
    }
}

#[test]
fn pauses_racing_results_start_nothing_while_paused_and_every_run_ends_once() {
    let stack = shared_stack();
    let plan_id = unique("pause-race");
    two_wave_plan(stack, &plan_id, 120_000);
    // Each run is paused as soon as it starts; its first wave's results land around the pause,
    // some before it (the dependent may then be dispatched first), some after.
    let (runs, answers): (Vec<String>, Vec<(u16, Value)>) = (0..8)
        .map(|i| {
            let run_id = start_run(
                stack,
                &json!({"website_id": "site_pause_race", "domain": "pause-race.example", "plan_id": plan_id,
                        "parameters": {"sample_behaviour": {"*": {"latency_ms": i * 15}}}}),
            );
            let answer = hold(stack, 0, &run_id, "pause");
            (run_id, answer)
        })
        .unzip();
    for ((run_id, (status, body)), i) in runs.iter().zip(&answers).zip(0..) {
        // A run may have ended (409) or be analysed (409) before its pause arrived.
        assert!(*status == 200 || *status == 409, "run {i}: {status} {body}");
        if *status == 200 {
            poll_until("wave one to settle", Duration::from_secs(20), || {
                let a = step(stack, run_id, "technical-seo");
                (a["status"] == "completed").then_some(())
            });
            let (status, body) = hold(stack, 0, run_id, "resume");
            assert_eq!(status, 200, "{body}");
        }
    }
    for run_id in &runs {
        let ended = wait_terminal_within(stack, run_id, Duration::from_secs(30));
        assert_eq!(ended["status"], "completed", "{ended}");
        let (finishes, _) = stack.sql(
            "SELECT COUNT(*) AS n FROM kbase_events WHERE run_id = ?1 AND type = 'run_status' \
             AND json_extract(payload, '$.status') = 'completed'",
            &[json!(run_id)],
        );
        assert_eq!(finishes[0]["n"], 1, "run {run_id} ended once");
        let (paused, resumed) = (status_events(stack, run_id, "paused"), status_events(stack, run_id, "running"));
        assert_eq!(paused.len(), resumed.len(), "every pause that took was resumed");
        if let (Some(p), Some(r)) = (paused.first(), resumed.first()) {
            for (service, attempt, started) in attempt_starts(stack, run_id) {
                assert!(started < *p || started >= *r, "{service}#{attempt} started at {started}, paused {p}..{r}");
            }
        }
    }
    assert!(answers.iter().any(|(s, _)| *s == 200), "at least one pause took: {answers:?}");
}

#[test]
fn a_paused_run_still_ends_at_its_deadline_and_can_be_cancelled() {
    let stack = shared_stack();
    let plan_id = unique("pause-deadline");
    two_wave_plan(stack, &plan_id, 6_000);
    let held = start_run(
        stack,
        &json!({"website_id": "site_pause_deadline", "domain": "pause-deadline.example", "plan_id": plan_id,
                "parameters": {"sample_behaviour": {"technical-seo": {"latency_ms": 1_500}}}}),
    );
    assert_eq!(hold(stack, 0, &held, "pause").0, 200);
    let ended = wait_terminal_within(stack, &held, Duration::from_secs(20));
    assert_eq!(ended["status"], "timeout", "the deadline keeps running while paused: {ended}");
    let (rows, _) = stack.sql("SELECT completed_at - deadline_at AS late FROM runs WHERE run_id = ?1", &[json!(held)]);
    assert!(int(&rows[0]["late"]) <= 2_000, "ended {} ms after its deadline", rows[0]["late"]);
    let dependent = step(stack, &held, "serp-intelligence");
    assert_eq!((&dependent["status"], &dependent["attempts"]), (&json!("timeout"), &json!(0)), "{dependent}");
    assert_eq!(step(stack, &held, "technical-seo")["status"], "completed", "what was in flight was recorded");

    let cancelled = start_run(
        stack,
        &json!({"website_id": "site_pause_deadline", "domain": "pause-deadline.example", "plan_id": plan_id,
                "parameters": {"sample_behaviour": {"technical-seo": {"latency_ms": 1_500}}}}),
    );
    assert_eq!(hold(stack, 0, &cancelled, "pause").0, 200);
    // A bulk cancel of the site's paused runs takes it (the first one has ended by now).
    let filter = json!({"filter": {"status": "paused", "website_id": "site_pause_deadline"}});
    let r = stack.post_as(stack.token(0), "/api/orchestration/runs/cancel", &filter);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["run_ids"], json!([cancelled]), "{}", r.text());
    let body = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{cancelled}")).json();
    assert_eq!(body["status"], "cancelled", "{body}");
    let (status, body) = hold(stack, 0, &cancelled, "cancel");
    assert_eq!(status, 409, "{body}");
    let (status, body) = hold(stack, 0, &cancelled, "resume");
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("cancelled"), "names the status: {body}");
    let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{cancelled}/pause"));
    assert_eq!(r.status, 405, "{}", r.text());
}

#[test]
fn the_cli_and_the_run_page_pause_and_resume_a_run() {
    let stack = shared_stack();
    let plan_id = unique("pause-actions");
    two_wave_plan(stack, &plan_id, 120_000);
    let body = json!({"website_id": "site_pause_actions", "domain": "pause-actions.example", "plan_id": plan_id,
                      "parameters": {"sample_behaviour": {"technical-seo": {"latency_ms": 4_000}}}});
    let run_id = start_run(stack, &body);
    let token = stack.token(0);
    let paused = cli::run(stack, token, &["pause", &run_id]);
    assert_eq!(paused.code, 0, "{}", paused.stderr);
    assert_eq!(paused.stdout, format!("run {run_id} paused\n"));
    poll_until("wave one to settle", Duration::from_secs(20), || {
        (step(stack, &run_id, "technical-seo")["status"] == "completed").then_some(())
    });
    let resumed = cli::run(stack, token, &["resume", &run_id]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(resumed.stdout, format!("run {run_id} running; dispatched serp-intelligence\n"));
    let twice = cli::run(stack, token, &["resume", &run_id]);
    assert!(twice.stdout.ends_with("nothing changed\n") || twice.code == 3, "{} {}", twice.stdout, twice.stderr);

    if !browser::available() {
        eprintln!("chromium is not installed: the run page's actions are not checked");
        return;
    }
    let browser = Browser::start();
    crate::ui::sign_in(&browser, &stack.base_url(), token);
    let run_id = start_run(stack, &body);
    browser.goto(&format!("{}/ui/runs/{run_id}", stack.base_url()));
    let click = |id: &str| {
        browser.wait_for(
            &format!("the {id} button"),
            Duration::from_secs(10),
            "const b = document.getElementById(arguments[0]); if (!b || b.disabled) return false; b.click(); return true",
            json!([id]),
        );
    };
    click("run-pause");
    let shown = browser.wait_for(
        "the run shown paused",
        Duration::from_secs(10),
        "const f = document.getElementById('run-facts'); const n = document.getElementById('run-action-note'); \
         return f && f.dataset.status === 'paused' && document.getElementById('run-paused') && n \
           && document.getElementById('run-resume') ? n.textContent : false",
        json!([]),
    );
    assert_eq!(shown, json!("Paused: the run is paused."));
    let api = stack.get_as(token, &format!("/api/orchestration/runs/{run_id}")).json();
    assert_eq!(api["status"], "paused", "{api}");
    poll_until("wave one to settle", Duration::from_secs(20), || {
        (step(stack, &run_id, "technical-seo")["status"] == "completed").then_some(())
    });
    click("run-resume");
    let shown = browser.wait_for(
        "the resume's note",
        Duration::from_secs(10),
        "const n = document.getElementById('run-action-note'); \
         return n && n.textContent.startsWith('Resumed') ? n.textContent : false",
        json!([]),
    );
    assert_eq!(shown, json!("Resumed: the run is running. Dispatched serp-intelligence."));
    browser.wait_for(
        "the run to complete on the page",
        Duration::from_secs(30),
        "const f = document.getElementById('run-facts'); return f && f.dataset.status === 'completed' \
           && document.getElementById('run-actions') === null",
        json!([]),
    );
}
