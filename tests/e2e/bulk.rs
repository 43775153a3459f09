//! Bulk cancel and retry (`POST /api/orchestration/runs/cancel`, `.../runs/retry`): only the
//! caller's runs matching the filter, a page at a time, each through the single-run paths; the
//! runs left as they were are reported with the reason. The CLI's bulk `cancel` and `retry`.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_e2e::{cli, poll_until, shared_stack, Stack};
use serde_json::{json, Value};

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{nanos:x}")
}

/// Starts a run as `client` (a `quick-v1` run unless `plan` says otherwise) whose steps never
/// answer, so it stays in progress until cancelled.
fn start_stuck(stack: &Stack, client: usize, site: &str, plan: &str) -> String {
    start(stack, client, site, plan, json!({"*": {"never_answer": true}}))
}

fn start(stack: &Stack, client: usize, site: &str, plan: &str, behaviour: Value) -> String {
    let body = json!({"website_id": site, "domain": "bulk.example", "plan_id": plan,
                      "parameters": {"sample_behaviour": behaviour}});
    let r = stack.post_as(stack.token(client), "/api/orchestration/run", &body);
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["run_id"].as_str().expect("run_id").to_string()
}

fn status_of(stack: &Stack, client: usize, run_id: &str) -> String {
    let r = stack.get_as(stack.token(client), &format!("/api/orchestration/runs/{run_id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["status"].as_str().unwrap_or_default().to_string()
}

fn wait_ended(stack: &Stack, client: usize, run_id: &str) -> String {
    poll_until(&format!("run {run_id} to end"), Duration::from_secs(30), || {
        let status = status_of(stack, client, run_id);
        ["completed", "failed", "timeout", "cancelled"].contains(&status.as_str()).then_some(status)
    })
}

fn bulk(stack: &Stack, client: usize, action: &str, body: &Value) -> Value {
    let r = stack.post_as(stack.token(client), &format!("/api/orchestration/runs/{action}"), body);
    assert_eq!(r.status, 200, "{body}: {}", r.text());
    r.json()
}

fn ids(value: &Value) -> BTreeSet<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
}

fn skipped_ids(answer: &Value) -> BTreeSet<String> {
    answer["skipped"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["run_id"].as_str().map(str::to_string))
        .collect()
}

/// Ends runs a test left in progress.
fn cancel_all(stack: &Stack, client: usize, runs: &[&String]) {
    for run_id in runs {
        stack.post_as(stack.token(client), &format!("/api/orchestration/runs/{run_id}/cancel"), &json!({}));
    }
}

#[test]
fn bulk_cancel_ends_only_the_callers_runs_that_match() {
    let stack = shared_stack();
    let (site, other_site) = (unique("bulk-site"), unique("bulk-other"));
    let matching: Vec<String> = (0..3).map(|_| start_stuck(stack, 0, &site, "quick-v1")).collect();
    let other_plan = start_stuck(stack, 0, &site, "standard-v1");
    let other_site_run = start_stuck(stack, 0, &other_site, "quick-v1");
    let other_client = start_stuck(stack, 1, &site, "quick-v1");

    let answer = bulk(stack, 0, "cancel", &json!({"filter": {"website_id": site, "plan_id": "quick-v1"}}));
    assert_eq!(answer["action"], "cancel");
    assert_eq!(answer["acted"], 3, "{answer}");
    assert_eq!(ids(&answer["run_ids"]), matching.iter().cloned().collect::<BTreeSet<_>>(), "{answer}");
    assert_eq!(answer["skipped"], json!([]), "{answer}");
    assert_eq!(answer["next_cursor"], Value::Null, "{answer}");
    let listed: Vec<String> =
        answer["run_ids"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();
    let mut newest_first = matching.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first, "newest first");
    for run_id in &matching {
        assert_eq!(status_of(stack, 0, run_id), "cancelled", "{run_id}");
    }
    for (client, run_id) in [(0, &other_plan), (0, &other_site_run), (1, &other_client)] {
        let status = status_of(stack, client, run_id);
        assert!(["started", "running"].contains(&status.as_str()), "{run_id} untouched: {status}");
    }

    // Again: nothing in progress matches any more (cancel takes runs in progress only).
    let again = bulk(stack, 0, "cancel", &json!({"filter": {"website_id": site, "plan_id": "quick-v1"}}));
    assert_eq!((again["acted"].as_u64(), again["skipped"].as_array().map(Vec::len)), (Some(0), Some(0)), "{again}");
    // A status cancel does not apply to matches nothing.
    let done = bulk(stack, 0, "cancel", &json!({"filter": {"website_id": site, "status": "cancelled"}}));
    assert_eq!(done["acted"], 0, "{done}");

    // The other client's own bulk cancel takes its run only.
    let theirs = bulk(stack, 1, "cancel", &json!({"filter": {"website_id": site}}));
    assert_eq!(ids(&theirs["run_ids"]), BTreeSet::from([other_client.clone()]), "{theirs}");
    cancel_all(stack, 0, &[&other_plan, &other_site_run]);
}

#[test]
fn the_cursor_continues_where_a_page_ended_and_no_run_is_taken_twice() {
    let stack = shared_stack();
    let site = unique("bulk-pages");
    let started: BTreeSet<String> = (0..5).map(|_| start_stuck(stack, 0, &site, "quick-v1")).collect();

    // Steps may still be handed over: a run is `started` until then.
    poll_until("every run to be running", Duration::from_secs(15), || {
        let listed = stack.get_as(stack.token(0), &format!("/api/orchestration/runs?website_id={site}&status=running"));
        (listed.json()["runs"].as_array().map(Vec::len) == Some(5)).then_some(())
    });
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut body = json!({"filter": {"website_id": site, "status": "running"}, "limit": 2});
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let answer = bulk(stack, 0, "cancel", &body);
        pages += 1;
        assert_eq!(answer["skipped"], json!([]), "{answer}");
        let page: Vec<String> =
            answer["run_ids"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();
        assert!(page.len() <= 2, "{answer}");
        seen.extend(page);
        cursor = answer["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
        assert!(pages < 5, "the pages end: {answer}");
    }
    assert_eq!(pages, 3, "5 runs by 2");
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), started, "every matching run once");
    for run_id in &started {
        assert_eq!(status_of(stack, 0, run_id), "cancelled");
    }
}

#[test]
fn bad_bulk_requests_are_refused_naming_the_field() {
    let stack = shared_stack();
    let refused = |body: Value| {
        let r = stack.post_as(stack.token(0), "/api/orchestration/runs/cancel", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let answer = r.json();
        (answer["error"]["code"].as_str().unwrap_or_default().to_string(), answer["error"]["details"].clone(), answer)
    };
    let (code, details, answer) = refused(json!({"limit": 5}));
    assert_eq!((code.as_str(), &details["field"]), ("missing_field", &json!("filter")), "{answer}");
    for body in [json!({"filter": {}}), json!({"filter": {}, "limit": 5})] {
        let (code, details, answer) = refused(body.clone());
        assert_eq!((code.as_str(), &details["field"]), ("invalid_request", &json!("filter")), "{body}: {answer}");
        assert_eq!(details["problems"][0]["code"], "empty_filter", "{answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("\"all\": true")), "{answer}");
    }
    for (body, field) in [
        (json!({"filter": {"plan_id": "Not A Plan"}}), "filter.plan_id"),
        (json!({"filter": {"website_id": "a/b"}}), "filter.website_id"),
        (json!({"filter": {"created_after": "yesterday"}}), "filter.created_after"),
        (json!({"filter": {"created_before": "2026-13-40T00:00:00Z"}}), "filter.created_before"),
        (json!({"filter": {"all": true}, "limit": 101}), "limit"),
        (json!({"filter": {"all": true}, "cursor": "nope"}), "cursor"),
    ] {
        let (code, details, answer) = refused(body.clone());
        assert_eq!((code.as_str(), &details["field"]), ("invalid_request", &json!(field)), "{body}: {answer}");
    }
    for (body, code, path) in [
        (json!({"filter": {"status": "done"}}), "invalid_field", "filter.status"),
        (json!({"filter": {"plan_id": null}}), "invalid_field", "filter.plan_id"),
        (json!({"filter": {"all": true}, "force": true}), "unknown_field", "force"),
        (json!({"filter": {"site": "x"}}), "unknown_field", "filter.site"),
    ] {
        let (got, details, answer) = refused(body.clone());
        let at = details.get("path").unwrap_or(&details["field"]).clone();
        assert_eq!((got.as_str(), at), (code, json!(path)), "{body}: {answer}");
    }
    // Only POST; a token is required.
    for method in ["GET", "DELETE"] {
        for action in ["cancel", "retry"] {
            let r = stack.send(
                method,
                &format!("/api/orchestration/runs/{action}"),
                &[("Authorization", &format!("Bearer {}", stack.token(0)))],
                None,
            );
            assert_eq!(r.status, 405, "{method} {action}: {}", r.text());
            assert_eq!(r.header("allow"), Some("POST"), "{method} {action}");
        }
    }
    let r = stack.send("POST", "/api/orchestration/runs/retry", &[], Some(br#"{"filter": {"all": true}}"#));
    assert_eq!(r.status, 401, "{}", r.text());
}

#[test]
fn bulk_retry_brings_failed_runs_back_and_skips_runs_with_nothing_to_retry() {
    let stack = shared_stack();
    let site = unique("bulk-retry");
    let failing: Vec<String> =
        (0..2).map(|_| start(stack, 0, &site, "quick-v1", json!({"*": {"fail_permanent_until": 1}}))).collect();
    let fine = start(stack, 0, &site, "quick-v1", json!({}));
    let stuck = start_stuck(stack, 0, &site, "quick-v1");
    for run_id in &failing {
        assert_eq!(wait_ended(stack, 0, run_id), "failed", "{run_id}");
    }
    assert_eq!(wait_ended(stack, 0, &fine), "completed");

    let answer = bulk(stack, 0, "retry", &json!({"filter": {"website_id": site}}));
    assert_eq!(answer["action"], "retry");
    assert_eq!(ids(&answer["run_ids"]), failing.iter().cloned().collect::<BTreeSet<_>>(), "{answer}");
    assert_eq!(answer["acted"], 2, "{answer}");
    let skipped = answer["skipped"].as_array().cloned().unwrap_or_default();
    assert_eq!(skipped.len(), 1, "the run in progress is not taken by retry: {answer}");
    assert_eq!(skipped[0]["run_id"], fine.as_str(), "{answer}");
    assert_eq!(skipped[0]["code"], "nothing_to_retry", "{answer}");
    assert!(skipped[0]["reason"].as_str().is_some_and(|r| r.contains("nothing to retry")), "{answer}");
    for run_id in &failing {
        assert_eq!(wait_ended(stack, 0, run_id), "completed", "retried in place: {run_id}");
    }
    assert!(["started", "running"].contains(&status_of(stack, 0, &stuck).as_str()), "untouched");

    // By status: nothing failed is left.
    let again = bulk(stack, 0, "retry", &json!({"filter": {"website_id": site, "status": "failed"}}));
    assert_eq!((again["acted"].as_u64(), again["skipped"].as_array().map(Vec::len)), (Some(0), Some(0)), "{again}");
    // A time range that ends before the runs began matches none of them.
    let before =
        bulk(stack, 0, "retry", &json!({"filter": {"website_id": site, "created_before": "2020-01-01T00:00:00Z"}}));
    assert_eq!((before["acted"].as_u64(), before["skipped"].as_array().map(Vec::len)), (Some(0), Some(0)), "{before}");
    cancel_all(stack, 0, &[&stuck]);
}

#[test]
fn a_bulk_cancel_racing_runs_that_finish_accounts_for_every_run_once() {
    let stack = shared_stack();
    let site = unique("bulk-race");
    // Runs ending at staggered times around the bulk request.
    let runs: Vec<String> =
        (0..16).map(|i| start(stack, 0, &site, "quick-v1", json!({"*": {"latency_ms": 150 * (i % 8)}}))).collect();
    // The request comes once the first runs have ended and while the others still run.
    poll_until("a first run to complete", Duration::from_secs(15), || {
        let listed =
            stack.get_as(stack.token(0), &format!("/api/orchestration/runs?website_id={site}&status=completed"));
        (listed.json()["runs"].as_array().is_some_and(|r| !r.is_empty())).then_some(())
    });
    let answer = bulk(stack, 0, "cancel", &json!({"filter": {"website_id": site}, "limit": 100}));
    let (cancelled, skipped) = (ids(&answer["run_ids"]), skipped_ids(&answer));
    assert_eq!(answer["acted"].as_u64(), Some(cancelled.len() as u64), "{answer}");
    assert!(cancelled.is_disjoint(&skipped), "never both: {answer}");
    for reason in answer["skipped"].as_array().into_iter().flatten() {
        assert!(["already_ended", "gone"].contains(&reason["code"].as_str().unwrap_or_default()), "{answer}");
    }
    for run_id in &runs {
        let status = wait_ended(stack, 0, run_id);
        if cancelled.contains(run_id) {
            assert_eq!(status, "cancelled", "{run_id} was cancelled by the request: {answer}");
        } else {
            // Skipped, or ended before it was listed: it ended on its own.
            assert_ne!(status, "cancelled", "{run_id} reported as left alone: {answer}");
        }
    }
    let known: BTreeSet<String> = runs.iter().cloned().collect();
    assert!(cancelled.union(&skipped).all(|r| known.contains(r)), "only this site's runs: {answer}");
    println!(
        "race: {} cancelled, {} skipped, {} ended before",
        cancelled.len(),
        skipped.len(),
        runs.len() - cancelled.len() - skipped.len()
    );
}

#[test]
fn the_cli_cancels_and_retries_by_filter_following_every_page() {
    let stack = shared_stack();
    let token = stack.token(0);
    let site = unique("bulk-cli");
    let stuck: BTreeSet<String> = (0..3).map(|_| start_stuck(stack, 0, &site, "quick-v1")).collect();

    let empty = cli::run(stack, token, &["cancel"]);
    assert_eq!(empty.code, 2, "stdout:\n{}\nstderr:\n{}", empty.stdout, empty.stderr);
    assert!(empty.stderr.contains("needs a run id or a filter"), "{}", empty.stderr);
    let bad = cli::run(stack, token, &["cancel", "--site", &site, "--since", "yesterday"]);
    assert_eq!(bad.code, 3, "{}", bad.stderr);
    assert!(bad.stderr.contains("filter.created_after"), "{}", bad.stderr);

    let one_page = cli::run(stack, token, &["cancel", "--site", &site, "--plan", "quick-v1", "--limit", "2"]);
    assert_eq!(one_page.code, 0, "stdout:\n{}\nstderr:\n{}", one_page.stdout, one_page.stderr);
    assert!(one_page.stdout.contains("cancelled 2 runs, 0 skipped"), "{}", one_page.stdout);
    assert!(one_page.stdout.contains("--cursor "), "{}", one_page.stdout);

    let rest = cli::run(stack, token, &["--json", "cancel", "--site", &site, "--limit", "1", "--all-pages"]);
    assert_eq!(rest.code, 0, "stdout:\n{}\nstderr:\n{}", rest.stdout, rest.stderr);
    let total = rest.json();
    assert_eq!((total["acted"].as_u64(), &total["next_cursor"]), (Some(1), &Value::Null), "{total}");
    for run_id in &stuck {
        assert_eq!(status_of(stack, 0, run_id), "cancelled");
    }

    // Retry every cancelled run of the site (in pages of one), then cancel them again.
    let retried =
        cli::run(stack, token, &["retry", "--site", &site, "--status", "cancelled", "--limit", "1", "--all-pages"]);
    assert_eq!(retried.code, 0, "stdout:\n{}\nstderr:\n{}", retried.stdout, retried.stderr);
    assert!(retried.stdout.contains("retried 3 runs, 0 skipped"), "{}", retried.stdout);
    for run_id in &stuck {
        assert!(retried.stdout.contains(&format!("retried {run_id}")), "{}", retried.stdout);
        assert!(["started", "running"].contains(&status_of(stack, 0, run_id).as_str()));
    }
    let again = cli::run(stack, token, &["cancel", "--site", &site, "--all-pages"]);
    assert!(again.stdout.contains("cancelled 3 runs"), "{}", again.stdout);
}
