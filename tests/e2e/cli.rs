//! The `baton` CLI against the stack: following runs, exit codes, `--json`, refusals.

use std::time::{SystemTime, UNIX_EPOCH};

use baton_e2e::{cli, shared_stack};
use serde_json::Value;

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{nanos:x}")
}

#[test]
fn run_wait_follows_every_step_and_exits_by_how_the_run_ended() {
    let stack = shared_stack();
    let token = stack.token(0);
    let plan = stack.get("/api/orchestration/plans/standard-v1").json();
    let services: Vec<String> = plan["plan"]["services"]
        .as_array()
        .expect("the plan's services")
        .iter()
        .filter_map(|s| s["service"].as_str().map(str::to_string))
        .collect();
    assert!(services.len() >= 2, "{plan}");

    let site = unique("cli");
    let done = cli::run(stack, token, &["run", "--site", &site, "--domain", "example.com", "--wait"]);
    assert_eq!(done.code, 0, "stdout:\n{}\nstderr:\n{}", done.stdout, done.stderr);
    assert!(done.stdout.contains(" completed in "), "{}", done.stdout);
    for service in &services {
        let line = done.stdout.lines().find(|l| l.contains(service.as_str()));
        assert!(line.is_some_and(|l| l.contains("completed") && l.contains("wave")), "{service}:\n{}", done.stdout);
        // Followed live: each step's changes were reported while the run went.
        assert!(done.stderr.contains(service.as_str()), "{service} not followed:\n{}", done.stderr);
    }
    assert!(done.stdout.contains("diagnosis: "), "{}", done.stdout);

    let failing = cli::run(
        stack,
        token,
        &[
            "--json",
            "run",
            "--site",
            &site,
            "--domain",
            "example.com",
            "--param",
            r#"sample_behaviour={"*":{"fail_permanent":true}}"#,
            "--wait",
        ],
    );
    assert_eq!(failing.code, 1, "stdout:\n{}\nstderr:\n{}", failing.stdout, failing.stderr);
    let body = failing.json();
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["terminal"], true);
    assert!(body["service_results"].as_array().is_some_and(|s| s.iter().all(|s| s["status"] != "completed")));
    let run_id = body["summary"]["runId"].as_str().expect("run_id").to_string();

    let shown = cli::run(stack, token, &["show", &run_id]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(shown.stdout.starts_with("timeline: "), "{}", shown.stdout);
    let trace_id = body["trace_id"].as_str().expect("the run's trace id");
    assert!(shown.stdout.contains(&format!("\n  trace {trace_id}\n")), "{}", shown.stdout);
    assert!(services.iter().all(|s| shown.stdout.contains(s.as_str())), "{}", shown.stdout);
    let events = cli::run(stack, token, &["events", &run_id]);
    assert_eq!(events.code, 0, "{}", events.stderr);
    assert!(events.stdout.contains("run_status"), "{}", events.stdout);
    let listed = cli::run(stack, token, &["--json", "runs", "--site", &site]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(listed.json()["runs"].as_array().map(Vec::len), Some(2), "{}", listed.stdout);
    let failed_only =
        cli::run(stack, token, &["--json", "runs", "--site", &site, "--status", "failed", "--plan", "standard-v1"]);
    let runs: Vec<Value> = failed_only.json()["runs"].as_array().cloned().unwrap_or_default();
    assert_eq!(runs.len(), 1, "{}", failed_only.stdout);
    assert_eq!(runs[0]["runId"], run_id.as_str());
}

#[test]
fn refusals_exit_3_with_the_apis_message_and_usage_errors_exit_2() {
    let stack = shared_stack();
    let refused = cli::run(stack, "not-a-token", &["runs"]);
    assert_eq!(refused.code, 3, "stdout:\n{}\nstderr:\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("unauthorized") && refused.stderr.contains("invalid bearer token"),
        "{}",
        refused.stderr
    );
    let as_json = cli::run(stack, "not-a-token", &["--json", "runs"]);
    assert_eq!(as_json.code, 3);
    assert_eq!(as_json.json()["error"]["code"], "unauthorized");

    let missing = cli::run(stack, stack.token(0), &["show", "run_0_nope"]);
    assert_eq!(missing.code, 3);
    assert!(missing.stderr.contains("not_found"), "{}", missing.stderr);
    let usage = cli::run(stack, stack.token(0), &["run", "--site", "s"]);
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    let unreachable = std::process::Command::new(cli::binary())
        .args(["--url", "http://127.0.0.1:9", "runs"])
        .output()
        .expect("running the CLI");
    assert_eq!(unreachable.status.code(), Some(4));
}

#[test]
fn plans_and_executions_from_the_cli() {
    let stack = shared_stack();
    let token = stack.token(0);
    let plans = cli::run(stack, token, &["plans"]);
    assert_eq!(plans.code, 0, "{}", plans.stderr);
    assert!(plans.stdout.contains("standard-v1") && plans.stdout.contains("quick-v1"), "{}", plans.stdout);

    let plan_id = unique("cli-plan");
    let file = std::env::temp_dir().join(format!("{plan_id}.json"));
    let draft = serde_json::json!({
        "plan_id": plan_id, "name": "CLI plan", "max_run_duration_ms": 60000,
        "services": [{"service": "serp-intelligence", "timeout_ms": 5000}]
    });
    std::fs::write(&file, draft.to_string()).expect("writing the plan file");
    let created = cli::run(stack, token, &["plans", "create", &file.display().to_string()]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(created.code, 0, "stdout:\n{}\nstderr:\n{}", created.stdout, created.stderr);
    assert_eq!(created.stdout, format!("created plan {plan_id}\n"));
    let shown = cli::run(stack, token, &["plans", "show", &plan_id]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(shown.stdout.contains("serp-intelligence"), "{}", shown.stdout);
    let again = cli::run(stack, token, &["plans", "create", "/nonexistent/plan.json"]);
    assert_eq!(again.code, 2, "{}", again.stderr);

    let submitted = cli::run(
        stack,
        token,
        &["--json", "execute", "course_creation", "--param", "topic=Rust", "--priority", "high"],
    );
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let execution_id = submitted.json()["execution_id"].as_str().expect("execution_id").to_string();
    let shown = cli::run(stack, token, &["executions", "show", &execution_id]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(shown.stdout.starts_with(&format!("execution {execution_id} ")), "{}", shown.stdout);
}
