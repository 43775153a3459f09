//! `POST /api/orchestration/runs/:run_id/retry` (the ended run again, in place: what did not
//! complete starts over) and `.../rerun` (a new run with the same inputs).

use baton_api::runs::{RunRerun, RunRetried};
use baton_api::Success;
use baton_core::state::{RunKind, RunStatus};
use baton_edge::engine::{Engine, Kept, Loaded, RetryOutcome, Started};
use baton_edge::{auth, http, Error, Result};
use worker::{Env, Request, Response};

use super::runs::{visible_kept, visible_run};

/// Only diagnostic runs are retried here; an execution is submitted again with `/execute`.
fn diagnostic(kind: RunKind, run_id: &str) -> Result<()> {
    if kind != RunKind::Diagnostic {
        return Err(Error::Conflict(format!("{run_id} is an execution: submit it again with POST /execute")));
    }
    Ok(())
}

/// `POST /api/orchestration/runs/:run_id/retry`
pub async fn retry(req: Request, env: &Env, run_id: &str) -> Result<Response> {
    let caller = auth::caller(&req, env)?;
    let engine = Engine::for_id(env, run_id).await?;
    let loaded = visible_run(&engine, run_id, &caller).await?;
    diagnostic(loaded.run.kind, run_id)?;
    match engine.retry_run(loaded).await? {
        RetryOutcome::Retried { steps, retries, advance } => http::json(
            200,
            &RunRetried {
                success: Success,
                run_id: run_id.to_string(),
                status: RunStatus::Running,
                retried_steps: steps,
                retries,
                dispatched: advance.dispatched,
                skipped: advance.skipped,
            },
        ),
        RetryOutcome::Refused(refused) => Err(Error::Conflict(refused.to_string())),
    }
}

/// `POST /api/orchestration/runs/:run_id/rerun`
pub async fn rerun(req: Request, env: &Env, run_id: &str) -> Result<Response> {
    let caller = auth::caller(&req, env)?;
    let engine = Engine::for_id(env, run_id).await?;
    // An archived run is rerun from its archive: the plan and inputs it ran with.
    let loaded = match visible_kept(&engine, run_id, &caller).await? {
        Kept::Live(loaded) => *loaded,
        Kept::Archived(row) => {
            let archived = engine.read_archived(&row).await?;
            Loaded::from_rows(archived.run, archived.steps)?
        }
    };
    diagnostic(loaded.run.kind, run_id)?;
    let acted_by = Some(caller.client_id.clone()).filter(|c| *c != loaded.run.client_id);
    let Started::New(written) = engine.rerun(&loaded, acted_by).await? else {
        return Err(Error::Internal("a rerun has no idempotency key, so it is always new".into()));
    };
    let new_id = &written.run.run_id;
    let rerun = RunRerun {
        success: Success,
        run_id: new_id.clone(),
        rerun_of: run_id.to_string(),
        status: written.run.status,
        status_url: format!("/api/orchestration/runs/{new_id}"),
    };
    http::json(202, &rerun)
}
