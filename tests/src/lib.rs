//! The e2e harness: start the real stack under `wrangler dev` and talk to it over HTTP.

pub mod cli;
pub mod fake_llm;
pub mod fake_service;
pub mod http;
pub mod stack;

pub use http::HttpResponse;
pub use stack::{poll_until, repo_root, Stack, StackOptions};

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds (the unit of every Baton timestamp).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// One stack shared by the tests of a test binary. It is never dropped; when the test
/// process exits, the guard script notices its closed stdin and kills the stack.
pub fn shared_stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| Stack::start(StackOptions::default()))
}
