//! `GET /openapi.json` and the API's conformance to it, checked by schemathesis (installed
//! by `make test` into `.venv-schemathesis/`) against a stack of its own, every check on:
//! generated valid and invalid inputs on every operation; a request the document allows must
//! be accepted and one it forbids refused, an undeclared method must be 405, and each answer
//! must have a documented status, content type and headers, match its response schema, and
//! never be a 5xx.

use std::path::PathBuf;
use std::process::Command;

use baton_e2e::{repo_root, Stack, StackOptions};

/// Examples per operation and phase (`BATON_SCHEMATHESIS_EXAMPLES` overrides it): bounds
/// the run to well under a minute.
const MAX_EXAMPLES: &str = "25";

fn schemathesis() -> PathBuf {
    std::env::var("BATON_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".venv-schemathesis/bin/schemathesis"))
}

#[test]
fn the_api_conforms_to_its_openapi_document_on_generated_inputs() {
    let stack = Stack::start(StackOptions::default());
    let r = stack.get("/openapi.json");
    assert_eq!(r.status, 200, "{}", r.text());
    let spec = r.json();
    assert_eq!(spec["openapi"], "3.1.0");
    for path in [
        "/api/orchestration/run",
        "/api/orchestration/runs/{run_id}",
        "/api/orchestration/schedules/{schedule_id}",
        "/api/orchestration/webhooks/{webhook_id}/deliveries",
        "/execute",
        "/metrics",
        "/ui",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} is documented");
    }

    let bin = schemathesis();
    assert!(bin.exists(), "{} not found: make test installs it (scripts/test.sh)", bin.display());
    // Its reports and its cache go to a scratch directory, not into the checkout.
    let report = std::env::temp_dir().join(format!("baton-schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&report).expect("creating the schemathesis directory");
    let output = Command::new(&bin)
        .current_dir(&report)
        .arg("--config-file")
        .arg(repo_root().join("tests/e2e/schemathesis.toml"))
        .arg("run")
        .arg(format!("{}/openapi.json", stack.base_url()))
        .args(["--url", &stack.base_url()])
        .args(["--header", &format!("Authorization: Bearer {}", stack.token(0))])
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", &std::env::var("BATON_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| MAX_EXAMPLES.into())])
        // One worker: with two, schemathesis' threads generate concurrently, and CPython 3.11's
        // parser is not safe for that (seen: "AST constructor recursion depth mismatch", a
        // `KeyError` in `linecache`, reported as a runtime error with no check failed).
        // Speed is the benchmark's to measure: an answer only has to come within the request's
        // own time limit (`--checks all` would otherwise fail one slower than 10 s on a busy
        // 2-core machine).
        .args(["--workers", "1", "--request-timeout", "30", "--max-response-time", "30"])
        .args(["--seed", "20261130", "--generation-deterministic"])
        .arg("--report-dir")
        .arg(&report)
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let _ = std::fs::remove_dir_all(&report);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{}\nwrangler log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        stack.log().lines().rev().take(60).collect::<Vec<_>>().join("\n")
    );
}
