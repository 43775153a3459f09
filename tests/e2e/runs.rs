//! Runs end to end through the real local D1, queues, consumer and sample services.

use std::time::Duration;

use baton_e2e::{poll_until, shared_stack, Stack};
use serde_json::{json, Value};

/// Starts a run as client 0 and returns its id.
pub fn start_run(stack: &Stack, body: &Value) -> String {
    let r = stack.post_as(stack.token(0), "/api/orchestration/run", body);
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["run_id"].as_str().expect("run_id").to_string()
}

/// Polls the run until it is terminal and returns its GET body (panics with the run and
/// wrangler's recent output after 30 s).
pub fn wait_terminal(stack: &Stack, run_id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}"));
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        if body["terminal"] == true {
            return body;
        }
        if std::time::Instant::now() >= deadline {
            let log = stack.log();
            let tail: String = log.chars().rev().take(4000).collect::<Vec<_>>().into_iter().rev().collect();
            panic!("run {run_id} did not finish within 30 s: {body}\nwrangler log (tail):\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn step<'a>(body: &'a Value, service: &str) -> &'a Value {
    body["service_results"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["service"] == service))
        .unwrap_or_else(|| panic!("no service {service} in {body}"))
}

#[test]
fn a_standard_run_goes_from_http_through_d1_and_queues_to_one_diagnosis() {
    let stack = shared_stack();
    let run_id = start_run(stack, &json!({"website_id": "site_123", "domain": "example.com"}));
    let body = wait_terminal(stack, &run_id);

    let summary = &body["summary"];
    assert_eq!(summary["status"], "completed", "{body}");
    assert_eq!(summary["planId"], "standard-v1");
    assert_eq!(summary["servicesCompleted"], 5, "{body}");
    assert_eq!(summary["servicesTotal"], 5);
    assert!(summary["diagnosisEventId"].as_str().is_some_and(|id| id.starts_with("evt_")), "{body}");
    assert_eq!(step(&body, "serp-intelligence")["wave"], 1);
    assert_eq!(step(&body, "competitive-intelligence")["wave"], 2);
    assert_eq!(step(&body, "technical-seo")["attempts"], 1);

    // Competitive intelligence was dispatched only after SERP intelligence completed,
    // and it received SERP's output as its input.
    let (rows, _) =
        stack.sql("SELECT service, started_at, finished_at, output FROM steps WHERE run_id = ?1", &[json!(run_id)]);
    let find = |s: &str| rows.iter().find(|r| r["service"] == s).cloned().expect("step row");
    let serp = find("serp-intelligence");
    let competitive = find("competitive-intelligence");
    assert!(competitive["started_at"].as_i64() >= serp["finished_at"].as_i64(), "{serp} {competitive}");
    let competitive_output: Value =
        serde_json::from_str(competitive["output"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    assert_eq!(competitive_output["based_on_serp"], true, "{competitive_output}");
    // Each step's duration is Baton's measure, from its dispatch to its end (the sample
    // services say they worked 0 ms).
    for service in ["serp-intelligence", "competitive-intelligence"] {
        let shown = step(&body, service);
        let at = |field: &str| {
            baton_core::time::Millis::parse_rfc3339(shown[field].as_str().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{service} {field}: {e}: {shown}"))
        };
        assert_eq!(shown["duration_ms"].as_u64(), Some(at("finished_at").since(at("started_at"))), "{shown}");
    }
    // The run detail shows what each service returned.
    assert_eq!(step(&body, "competitive-intelligence")["output"], competitive_output, "{body}");
    let serp_output: Value = serde_json::from_str(serp["output"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    assert!(serp_output.is_object(), "{serp}");
    assert_eq!(step(&body, "serp-intelligence")["output"], serp_output, "{body}");

    // Two lifecycle events and exactly one diagnosis.
    let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}/events"));
    assert_eq!(r.status, 200, "{}", r.text());
    let events = r.json()["events"].as_array().cloned().unwrap_or_default();
    let of_type = |t: &str| events.iter().filter(|e| e["type"] == t).cloned().collect::<Vec<_>>();
    let lifecycle = of_type("run_status");
    assert_eq!(lifecycle.len(), 2, "{events:?}");
    assert_eq!(lifecycle[0]["payload"]["status"], "started");
    assert_eq!(lifecycle[0]["service"], "orchestrator");
    assert_eq!(lifecycle[1]["payload"]["status"], "completed");
    assert_eq!(lifecycle[1]["payload"]["services_completed"], 5);
    assert_eq!(lifecycle[1]["payload"]["diagnosis_event_id"], summary["diagnosisEventId"]);
    let diagnoses = of_type("diagnosis");
    assert_eq!(diagnoses.len(), 1, "{events:?}");
    assert_eq!(diagnoses[0]["id"], summary["diagnosisEventId"]);
    assert_eq!(diagnoses[0]["payload"]["confidence"], 1.0);
    assert_eq!(body["diagnosis"]["missing_services"], json!([]));

    // The KV mirror of the job was written by the finaliser.
    let snapshot = poll_until("the job snapshot in KV", Duration::from_secs(10), || {
        stack
            .kv_get(&format!("job:{run_id}"))
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .filter(|v| v["summary"]["status"] == "completed")
    });
    assert_eq!(snapshot["traceId"], run_id.as_str());
}

#[test]
fn a_permanently_failing_wave_one_service_skips_its_dependent_and_the_run_still_completes() {
    let stack = shared_stack();
    let run_id = start_run(
        stack,
        &json!({
            "website_id": "site_fail",
            "domain": "failing.example",
            "parameters": {"sample_behaviour": {"serp-intelligence": {"fail_permanent": true}}},
        }),
    );
    let body = wait_terminal(stack, &run_id);
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    assert_eq!(body["summary"]["servicesCompleted"], 3);
    assert_eq!(body["summary"]["servicesFailed"], 1);
    assert_eq!(body["summary"]["servicesSkipped"], 1);
    let serp = step(&body, "serp-intelligence");
    assert_eq!(serp["status"], "failed");
    assert_eq!(serp["attempts"], 1, "a permanent failure is not retried");
    assert_eq!(serp["error"], "Worker config invalid: No API key found");
    let competitive = step(&body, "competitive-intelligence");
    assert_eq!(competitive["status"], "skipped");
    assert_eq!(competitive["error"], "Dependencies failed or timed out");
    assert_eq!(body["diagnosis"]["missing_services"], json!(["serp-intelligence", "competitive-intelligence"]));
    assert!(body["diagnosis"]["confidence"].as_f64().unwrap_or(1.0) < 1.0, "{body}");
}

#[test]
fn a_mistyped_sample_behaviour_fails_the_steps_with_a_message_naming_it() {
    let stack = shared_stack();
    let run_id = start_run(
        stack,
        &json!({"website_id": "site_typo", "domain": "typo.example", "plan_id": "quick-v1",
                "parameters": {"sample_behaviour": {"technical-sep": {"hold_open": true}}}}),
    );
    let body = wait_terminal(stack, &run_id);
    let seo = step(&body, "technical-seo");
    assert_eq!(seo["status"], "failed", "{body}");
    let error = seo["error"].as_str().unwrap_or_default();
    assert!(error.contains("`technical-sep` is not a sample service"), "{error}");
    assert_eq!(seo["attempts"], 1, "a typo is permanent: {seo}");
}

#[test]
fn wait_answers_when_the_run_ends() {
    let stack = shared_stack();
    let r = stack.post_as(
        stack.token(0),
        "/api/orchestration/run?wait=30",
        &json!({"website_id": "site_wait", "domain": "wait.example", "plan_id": "quick-v1"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["summary"]["servicesTotal"], 3);
    assert_eq!(body["summary"]["servicesCompleted"], 3);
}

#[test]
fn resubmitting_a_run_with_the_same_idempotency_key_returns_the_same_run() {
    let stack = shared_stack();
    let body = json!({"website_id": "site_idem", "domain": "idem.example", "plan_id": "quick-v1", "idempotency_key": "order-42"});
    let first = stack.post_as(stack.token(0), "/api/orchestration/run", &body);
    let second = stack.post_as(stack.token(0), "/api/orchestration/run", &body);
    assert_eq!(first.status, 202, "{}", first.text());
    assert_eq!(second.status, 202, "{}", second.text());
    assert_eq!(first.json()["run_id"], second.json()["run_id"]);
    assert_eq!(second.json()["idempotent_replay"], true);
    // The same key from another client is another run.
    let other = stack.post_as(stack.token(1), "/api/orchestration/run", &body);
    assert_ne!(other.json()["run_id"], first.json()["run_id"]);
    let (rows, _) = stack.sql("SELECT COUNT(*) AS n FROM runs WHERE idempotency_key = 'order-42'", &[]);
    assert_eq!(rows[0]["n"], 2);
}

#[test]
fn a_client_cannot_see_another_clients_run() {
    let stack = shared_stack();
    let run_id =
        start_run(stack, &json!({"website_id": "site_private", "domain": "private.example", "plan_id": "quick-v1"}));
    let theirs = stack.get_as(stack.token(1), &format!("/api/orchestration/runs/{run_id}"));
    assert_eq!(theirs.status, 404, "{}", theirs.text());
    let events = stack.get_as(stack.token(1), &format!("/api/orchestration/runs/{run_id}/events"));
    assert_eq!(events.status, 404, "{}", events.text());
    let mine = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}"));
    assert_eq!(mine.status, 200, "{}", mine.text());
}
