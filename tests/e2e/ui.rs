//! The web UI (`/ui`) in a real browser: headless chromium over WebDriver.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_e2e::browser::{self, Browser};
use baton_e2e::{poll_until, shared_stack, Stack};
use serde_json::{json, Value};

/// The steps of the built-in `standard-v1` plan.
const STANDARD_STEPS: [&str; 5] =
    ["serp-intelligence", "technical-seo", "domain-authority", "competitive-intelligence", "vitals-monitor"];

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{nanos:x}")
}

fn start_run(stack: &Stack, client: usize, body: &Value) -> String {
    let r = stack.post_as(stack.token(client), "/api/orchestration/run", body);
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["run_id"].as_str().expect("run_id").to_string()
}

/// Signs the browser in with `token` through the page's own form.
pub(crate) fn sign_in(browser: &Browser, base: &str, token: &str) {
    browser.goto(&format!("{base}/ui/runs"));
    browser.eval("sessionStorage.clear(); return true", json!([]));
    browser.goto(&format!("{base}/ui/runs"));
    browser.wait_for(
        "the token form",
        Duration::from_secs(10),
        "return document.getElementById('token-form') !== null",
        json!([]),
    );
    browser.eval(
        "const input = document.getElementById('token'); input.value = arguments[0]; \
         document.getElementById('token-form').requestSubmit(); return true",
        json!([token]),
    );
    browser.wait_for(
        "the runs table",
        Duration::from_secs(10),
        "return document.getElementById('runs') !== null",
        json!([]),
    );
}

/// Each step bar of the timeline: service → status.
const BARS: &str = "const bars = {}; document.querySelectorAll('#timeline .bar[data-step]')\
    .forEach(b => { bars[b.dataset.step] = b.dataset.status; }); return bars";

#[test]
fn the_ui_shows_a_run_filling_in_live_with_every_step_and_the_diagnosis_and_only_to_its_client() {
    let stack = shared_stack();
    let base = stack.base_url();

    // The page and its assets are served without credentials, from this origin only.
    let page = stack.get("/ui");
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.header("content-type").is_some_and(|t| t.starts_with("text/html")));
    assert!(page.header("content-security-policy").is_some_and(|p| p.contains("default-src 'none'")));
    assert!(
        !page.text().contains("http://") && !page.text().contains("https://"),
        "the page loads nothing from elsewhere"
    );
    let script = stack.get("/ui/assets/app.js");
    assert_eq!((script.status, script.header("content-type")), (200, Some("text/javascript; charset=utf-8")));
    assert_eq!(stack.get("/ui/runs/whatever").status, 200, "every UI path is the page");
    assert_eq!(stack.get("/ui/assets/nothing.js").status, 404);

    let browser = Browser::start();
    sign_in(&browser, &base, stack.token(0));

    // A run with a retry, a permanent failure and a second wave, slow enough to watch: it
    // lasts longer than two refreshes of the runs list (every 3 s), so the page finds it
    // while it is still in progress.
    let site = unique("ui-site");
    let run_id = start_run(
        stack,
        0,
        &json!({"website_id": site, "domain": "ui.example", "parameters": {"sample_behaviour": {
            "serp-intelligence": {"latency_ms": 6500},
            "technical-seo": {"fail_transient": 1, "latency_ms": 300},
            "domain-authority": {"fail_permanent": true},
            "*": {"latency_ms": 600},
        }}}),
    );

    // The runs list polls the API: the new run appears without a reload.
    browser.wait_for(
        "the new run in the runs list",
        Duration::from_secs(15),
        "return document.querySelector(`tr[data-run-id='${arguments[0]}']`) !== null",
        json!([run_id]),
    );
    browser.eval("document.querySelector(`tr[data-run-id='${arguments[0]}'] a`).click(); return true", json!([run_id]));

    // Watch the timeline fill in: record every (step, status) the page shows until the run ends.
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let final_bars = poll_until("the run page to show the ended run", Duration::from_secs(60), || {
        // One script reads both, so the bars are those of the page that says the run ended.
        let page = browser.eval(
            &format!(
                "const bars = (() => {{ {BARS} }})(); const f = document.getElementById('run-facts'); \
                 return {{ bars, ended: f !== null && f.dataset.terminal === 'true' \
                     && document.getElementById('diagnosis')?.dataset.ready === 'true' }}"
            ),
            json!([]),
        );
        if let Some(map) = page["bars"].as_object() {
            for (step, status) in map {
                seen.insert((step.clone(), status.as_str().unwrap_or("").to_string()));
            }
        }
        (page["ended"] == true).then(|| page["bars"].clone())
    });
    let statuses: Vec<(&str, &str)> =
        STANDARD_STEPS.iter().map(|s| (*s, final_bars[*s].as_str().unwrap_or("no bar"))).collect();
    assert_eq!(
        statuses,
        [
            ("serp-intelligence", "completed"),
            ("technical-seo", "completed"),
            ("domain-authority", "failed"),
            ("competitive-intelligence", "completed"),
            ("vitals-monitor", "completed"),
        ],
        "every step has its bar, coloured by its status; the API says {}",
        stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}")).text()
    );
    assert!(
        seen.iter().any(|(_, status)| status != "completed" && status != "failed"),
        "the page showed the run in progress before it ended: {seen:?}"
    );

    // Attempts with their outcome and error, the fan-in moment, the diagnosis, the events.
    let details = browser.eval(
        "const text = s => document.querySelector(s)?.innerText ?? null; \
         return { retried: text(\"#steps tr[data-service='technical-seo']\"), \
                  failed: text(\"#steps tr[data-service='domain-authority']\"), \
                  output: document.querySelector(\"#steps tr[data-service='vitals-monitor'] details.output pre\")?.textContent ?? null, \
                  fanIn: document.getElementById('fan-in') !== null, \
                  trace: text('#run-trace'), cost: text('#run-cost'), \
                  confidence: text('#confidence'), missing: text('#missing'), \
                  findings: document.querySelectorAll('#diagnosis [data-finding]').length, \
                  events: [...document.querySelectorAll('#events tr[data-event]')].map(r => r.dataset.event) }",
        json!([]),
    );
    let api = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}")).json();
    assert!(api["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{api}");
    assert_eq!(details["trace"], api["trace_id"], "the page shows the run's trace id");
    let cost = details["cost"].as_str().unwrap_or("");
    assert!(
        cost.starts_with('$') && cost.contains(" subrequests") && cost.contains("D1 "),
        "the page shows its cost: {cost}"
    );
    let retried = details["retried"].as_str().unwrap_or("");
    assert!(retried.contains("attempt 1: retrying") && retried.contains("attempt 2: completed"), "{retried}");
    assert!(details["failed"].as_str().unwrap_or("").contains("failed"), "{details}");
    // What the service returned, as the API gives it.
    let api = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}")).json();
    let returned =
        api["service_results"].as_array().and_then(|steps| steps.iter().find(|s| s["service"] == "vitals-monitor"));
    let returned = returned.map(|s| s["output"].clone()).unwrap_or(Value::Null);
    assert!(returned.is_object(), "the API shows the step's output: {api}");
    let shown: Value = serde_json::from_str(details["output"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    assert_eq!(shown, returned, "the page shows the step's output: {details}");
    assert_eq!(details["fanIn"], true, "the fan-in moment is marked: {details}");
    assert!(details["confidence"].as_str().is_some_and(|c| c.ends_with('%')), "{details}");
    assert!(details["missing"].as_str().unwrap_or("").contains("domain-authority"), "{details}");
    assert!(details["findings"].as_u64().unwrap_or(0) >= 1, "{details}");
    assert!(details["events"].as_array().is_some_and(|e| e.len() >= 2), "start and finish events: {details}");

    // A screenshot of the run page, whole.
    let height = browser.eval("return document.documentElement.scrollHeight", json!([])).as_u64().unwrap_or(1000);
    browser.resize(1400, height.clamp(800, 4000) as u32);
    let shot = browser::output_dir().join("ui-run-page.png");
    browser.screenshot(&shot);
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "{} written", shot.display());

    // Why a step was skipped.
    let skipped_run = start_run(
        stack,
        0,
        &json!({"website_id": site, "domain": "ui.example",
                "parameters": {"sample_behaviour": {"serp-intelligence": {"fail_permanent": true}}}}),
    );
    browser.goto(&format!("{base}/ui/runs/{skipped_run}"));
    let reason = browser.wait_for(
        "the skipped step's reason",
        Duration::from_secs(30),
        "return document.querySelector(\"#steps tr[data-service='competitive-intelligence'] .skip-reason\")?.innerText ?? null",
        json!([]),
    );
    assert!(reason.as_str().unwrap_or("").contains("serp-intelligence"), "{reason}");

    // Filters: by site, status and plan.
    browser.goto(&format!("{base}/ui/runs?website_id={site}&status=completed&plan_id=standard-v1"));
    let listed = browser.wait_for(
        "the filtered list",
        Duration::from_secs(15),
        "const rows = [...document.querySelectorAll('#runs tr[data-run-id]')].map(r => r.dataset.runId); \
         return rows.length === 2 ? rows : null",
        json!([]),
    );
    assert_eq!(listed, json!([skipped_run, run_id]), "newest first");
    browser.goto(&format!("{base}/ui/runs?website_id={site}&plan_id=quick-v1"));
    browser.wait_for(
        "an empty list for another plan",
        Duration::from_secs(15),
        "return document.getElementById('runs')?.innerText.includes('No runs.')",
        json!([]),
    );

    // Bulk actions on the filtered runs: without a filter they are off; with one, after a
    // confirm, every matching run is cancelled and the count shown.
    browser.goto(&format!("{base}/ui/runs"));
    let off = browser.wait_for(
        "the bulk buttons",
        Duration::from_secs(15),
        "const b = document.getElementById('bulk-cancel'); return b ? b.disabled : null",
        json!([]),
    );
    assert_eq!(off, json!(true), "no bulk action without a filter");
    let stuck = start_run(
        stack,
        0,
        &json!({"website_id": site, "domain": "ui.example", "plan_id": "quick-v1",
                "parameters": {"sample_behaviour": {"*": {"never_answer": true}}}}),
    );
    browser.goto(&format!("{base}/ui/runs?website_id={site}&plan_id=quick-v1"));
    browser.wait_for(
        "the run to cancel in the filtered list",
        Duration::from_secs(15),
        "return document.querySelector(`#runs tr[data-run-id='${arguments[0]}']`) !== null",
        json!([stuck]),
    );
    browser.eval(
        "window.confirmed = []; window.confirm = (m) => { window.confirmed.push(m); return true; };          document.getElementById('bulk-cancel').click(); return true",
        json!([]),
    );
    let shown = browser.wait_for(
        "the bulk cancel's result",
        Duration::from_secs(15),
        "const r = document.getElementById('bulk-result');          return r && r.dataset.acted ? { acted: r.dataset.acted, text: r.innerText, asked: window.confirmed } : null",
        json!([]),
    );
    assert_eq!(shown["acted"], "1", "{shown}");
    assert!(shown["text"].as_str().is_some_and(|t| t.contains("Cancelled 1 run")), "{shown}");
    assert!(shown["asked"][0].as_str().is_some_and(|m| m.contains(&site)), "confirmed first: {shown}");
    let api = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{stuck}")).json();
    assert_eq!(api["status"], "cancelled", "{api}");

    // Another client's token: none of the first client's runs, and their pages are not found.
    sign_in(&browser, &base, stack.token(1));
    browser.goto(&format!("{base}/ui/runs?website_id={site}"));
    browser.wait_for(
        "bob's (empty) list for alice's site",
        Duration::from_secs(15),
        "return document.getElementById('runs')?.innerText.includes('No runs.')",
        json!([]),
    );
    browser.goto(&format!("{base}/ui/runs"));
    let bobs = browser.wait_for(
        "bob's list",
        Duration::from_secs(15),
        "return document.getElementById('live')?.innerText.includes('updated') \
             ? [...document.querySelectorAll('#runs tr[data-run-id]')].map(r => r.dataset.runId) : null",
        json!([]),
    );
    let bobs: Vec<&str> = bobs.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    assert!(!bobs.contains(&run_id.as_str()) && !bobs.contains(&skipped_run.as_str()), "{bobs:?}");
    browser.goto(&format!("{base}/ui/runs/{run_id}"));
    browser.wait_for(
        "alice's run to be not found for bob",
        Duration::from_secs(15),
        "return document.getElementById('error')?.innerText.includes('Not found')",
        json!([]),
    );
}

#[test]
fn the_execution_page_shows_stages_queue_deliverables_and_costs() {
    let stack = shared_stack();
    let base = stack.base_url();
    let r = stack.post_as(
        stack.token(0),
        "/execute",
        &json!({"template_name": "course_creation", "parameters": {"topic": "Rust", "targetAudience": "beginners"}}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let execution_id = r.json()["execution_id"].as_str().expect("execution_id").to_string();

    let browser = Browser::start();
    sign_in(&browser, &base, stack.token(0));
    browser.goto(&format!("{base}/ui/executions/{execution_id}"));
    let shown = browser.wait_for(
        "the ended execution",
        Duration::from_secs(60),
        "const f = document.getElementById('execution-facts'); \
         if (!f || f.dataset.terminal !== 'true') return null; \
         return { status: f.dataset.status, \
                  stages: document.querySelectorAll('#stages tr[data-service]').length, \
                  deliverables: document.querySelectorAll('#deliverables .card').length, \
                  queue: document.getElementById('queue')?.innerText ?? '', \
                  costs: document.getElementById('costs')?.innerText ?? '' }",
        json!([]),
    );
    let api = stack.get_as(stack.token(0), &format!("/executions/{execution_id}")).json();
    let stages = api["stages"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(shown["status"], api["status"], "{shown}");
    assert_eq!(shown["stages"], json!(stages), "{shown}");
    assert_eq!(shown["deliverables"], json!(api["deliverables"].as_array().map(Vec::len).unwrap_or(0)), "{shown}");
    assert!(shown["queue"].as_str().unwrap_or("").contains("started"), "{shown}");
    assert!(shown["costs"].as_str().unwrap_or("").contains("tokens"), "{shown}");

    // Not visible to another client.
    sign_in(&browser, &base, stack.token(1));
    browser.goto(&format!("{base}/ui/executions/{execution_id}"));
    browser.wait_for(
        "the execution to be not found for bob",
        Duration::from_secs(15),
        "return document.getElementById('error')?.innerText.includes('Not found')",
        json!([]),
    );
}
