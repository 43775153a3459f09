//! Usage counters in the units Cloudflare bills (D1 statements and rows, KV reads and
//! writes, queue messages, subrequests, R2 operations), counted where each call is made.
//!
//! Two views of the same counts:
//! - **per run**: work done for a run runs inside that run's scope ([`for_run`], or a scope
//!   named later with [`attribute`]); what is counted while a scope's future is polled is that
//!   run's. Futures interleave only at their awaits, and a scope is current only while its own
//!   future is polled, so concurrent work for other runs (or for none) is never counted to it.
//!   A scope's units wait in this isolate when its future ends and are added to the run's row
//!   by [`flush`] (the engine's write), which every worker calls when its work is done: one
//!   batch per shard. The write that records them is not counted (it is for many runs at once);
//! - **per isolate**, for the benchmark's cost table and the test hooks (`GET /__test/meter`,
//!   only when `BATON_TEST_HOOKS` is "true").

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

pub use baton_core::cost::Units as Usage;
use worker::{Env, Request, Response};

use crate::{auth, http, settings, Error, Result};

/// The units of work for one run (or, until it is named, for a request that may start one).
#[derive(Default)]
struct Scope {
    run: RefCell<Option<String>>,
    usage: Cell<Usage>,
}

thread_local! {
    static USAGE: RefCell<Usage> = RefCell::new(Usage::default());
    /// The scope whose future is being polled, if any.
    static CURRENT: RefCell<Option<Rc<Scope>>> = const { RefCell::new(None) };
    /// Units of ended scopes, by run, not yet written.
    static PENDING: RefCell<BTreeMap<String, Usage>> = const { RefCell::new(BTreeMap::new()) };
}

/// Adds to this isolate's counters, and to the current run's.
pub fn add(update: impl Fn(&mut Usage)) {
    USAGE.with(|usage| update(&mut usage.borrow_mut()));
    CURRENT.with(|current| {
        if let Some(scope) = current.borrow().as_ref() {
            let mut usage = scope.usage.get();
            update(&mut usage);
            scope.usage.set(usage);
        }
    });
}

/// `future`, with what it uses counted to run `run_id`.
pub fn for_run<F: Future>(run_id: &str, future: F) -> Metered<F> {
    let scope = Scope { run: RefCell::new(Some(run_id.to_string())), usage: Cell::default() };
    Metered { scope: Rc::new(scope), inner: Box::pin(future), closed: false }
}

/// `future` (a request that may start or act on a run), with what it uses counted to the run
/// it names with [`attribute`]; nothing, if it names none.
pub fn for_request<F: Future>(future: F) -> Metered<F> {
    Metered { scope: Rc::new(Scope::default()), inner: Box::pin(future), closed: false }
}

/// Names the run the current [`for_request`] scope works for (the first name stands).
pub fn attribute(run_id: &str) {
    CURRENT.with(|current| {
        if let Some(scope) = current.borrow().as_ref() {
            scope.run.borrow_mut().get_or_insert_with(|| run_id.to_string());
        }
    });
}

/// A future whose usage is counted to its scope's run.
pub struct Metered<F: Future> {
    scope: Rc<Scope>,
    inner: Pin<Box<F>>,
    closed: bool,
}

impl<F: Future> Metered<F> {
    /// Moves the scope's units to the pending ones of its run (once).
    fn close(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        let usage = self.scope.usage.take();
        if let (Some(run), false) = (self.scope.run.borrow().clone(), usage.is_empty()) {
            PENDING.with(|pending| *pending.borrow_mut().entry(run).or_default() += usage);
        }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let previous = CURRENT.with(|current| current.replace(Some(this.scope.clone())));
        let polled = this.inner.as_mut().poll(cx);
        CURRENT.with(|current| *current.borrow_mut() = previous);
        if polled.is_ready() {
            this.close();
        }
        polled
    }
}

impl<F: Future> Drop for Metered<F> {
    /// A future dropped before its end (a timeout) still used what it used.
    fn drop(&mut self) {
        self.close();
    }
}

/// The units of ended scopes not yet written, by run; taken.
pub fn take_pending() -> Vec<(String, Usage)> {
    PENDING.with(|pending| std::mem::take(&mut *pending.borrow_mut()).into_iter().collect())
}

/// Puts back units that could not be written (they go with the next flush).
pub fn put_back(units: Vec<(String, Usage)>) {
    PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        for (run, usage) in units {
            *pending.entry(run).or_default() += usage;
        }
    });
}

/// How long a request waits before recording the units it leaves pending, so that work for
/// the same runs ending meanwhile (a first wave run in place, ending just after the answer)
/// records them together, in one write.
pub const COALESCE: std::time::Duration = std::time::Duration::from_millis(50);

/// Adds the pending units to their runs' rows: the engine's [`crate::engine::record_usage`],
/// which every worker calls when its work is done.
pub async fn flush(env: &Env) {
    crate::engine::record_usage(env).await;
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
