//! The e2e harness: start the real stack under `wrangler dev` and talk to it over HTTP.

pub mod browser;
pub mod cli;
pub mod fake_collector;
pub mod fake_llm;
pub mod fake_service;
pub mod http;
pub mod stack;
pub mod webhook_receiver;

pub use http::HttpResponse;
pub use stack::{poll_until, repo_root, Stack, StackOptions};

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds (the unit of every Baton timestamp).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The headers of a result callback for `service`'s attempt `attempt` of run `run_id`, signed
/// with `key` at `at_ms` (the scheme of `baton_core::signature`).
pub fn result_headers(
    key: &str,
    run_id: &str,
    service: &str,
    attempt: u32,
    body: &[u8],
    at_ms: u64,
) -> Vec<(&'static str, String)> {
    use baton_core::signature::{headers, Purpose, Signed};
    let path = format!("/api/jobs/{run_id}/results/{service}");
    let request =
        Signed { purpose: Purpose::Result, method: "POST", path: &path, attempt: Some(attempt), body, trace: None };
    let mut out = headers(key, &request, baton_core::time::Millis::new(at_ms));
    out.push(("Content-Type", "application/json".to_string()));
    out
}

/// One stack shared by the tests of a test binary. It is never dropped; when the test
/// process exits, the guard script notices its closed stdin and kills the stack.
pub fn shared_stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| Stack::start(StackOptions::default()))
}
