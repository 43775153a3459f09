//! Usage counters in the units Cloudflare bills (D1 statements and rows, KV reads and
//! writes, queue messages, subrequests), per isolate, for the benchmark's cost table. Counting
//! is a few integer additions; the counters are read (and reset) only through the test hooks
//! (`GET /__test/meter`), which exist only when `BATON_TEST_HOOKS` is "true".

use std::cell::RefCell;

use serde::Serialize;
use worker::{Env, Request, Response};

use crate::{auth, http, settings, Error, Result};

/// What this isolate used since the last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// D1 calls (a batch is one).
    pub d1_round_trips: u64,
    /// D1 statements (billed as queries).
    pub d1_statements: u64,
    /// D1 `meta.rows_read`.
    pub d1_rows_read: u64,
    /// D1 `meta.rows_written`.
    pub d1_rows_written: u64,
    /// KV reads.
    pub kv_reads: u64,
    /// KV writes and deletes.
    pub kv_writes: u64,
    /// Queue messages sent.
    pub queue_messages: u64,
    /// Outgoing requests (services, service bindings, the LLM).
    pub subrequests: u64,
    /// R2 reads (class B operations: get, head).
    pub r2_reads: u64,
    /// R2 writes (class A operations: put, delete).
    pub r2_writes: u64,
}

thread_local! {
    static USAGE: RefCell<Usage> = RefCell::new(Usage::default());
}

/// Adds to this isolate's counters.
pub fn add(update: impl FnOnce(&mut Usage)) {
    USAGE.with(|usage| update(&mut usage.borrow_mut()));
}

/// Counts one outgoing request.
pub fn subrequest() {
    add(|u| u.subrequests += 1);
}

/// This isolate's counters; zeroed afterwards when `reset`.
pub fn read(reset: bool) -> Usage {
    USAGE.with(|usage| {
        let now = *usage.borrow();
        if reset {
            *usage.borrow_mut() = Usage::default();
        }
        now
    })
}

/// `GET /__test/meter[?reset=true]` of one worker: its counters (admin token required).
pub fn respond(req: &Request, env: &Env) -> Result<Response> {
    if !settings::test_hooks_enabled(env) {
        return Err(Error::NotFound { what: format!("route {}", req.path()) });
    }
    auth::require_admin(req, env)?;
    let reset = http::query_param(req, "reset")?.is_some_and(|v| v == "true");
    http::json(200, &read(reset))
}
