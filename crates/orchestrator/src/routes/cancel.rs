//! `POST /api/orchestration/runs/:run_id/cancel`: the caller's own runs only (another
//! client's run is 404). A run that has already ended is 409, naming its status.

use baton_api::runs::RunCancelled;
use baton_api::Success;
use baton_edge::engine::{summary_of, CancelOutcome, Engine};
use baton_edge::{auth, http, Error, Result};
use worker::{Env, Request, Response};

use super::runs::visible_run;

pub async fn cancel(req: Request, env: &Env, run_id: &str) -> Result<Response> {
    let caller = auth::caller(&req, env)?;
    let engine = Engine::for_id(env, run_id).await?;
    let loaded = visible_run(&engine, run_id, &caller).await?;
    match engine.cancel(loaded).await? {
        CancelOutcome::AlreadyEnded { status } => Err(Error::Conflict(format!(
            "run {run_id} has already ended: it is {status}; only a run in progress can be cancelled"
        ))),
        CancelOutcome::Cancelled { loaded, cancelled_steps } => http::json(
            200,
            &RunCancelled {
                success: Success,
                run_id: run_id.to_string(),
                status: loaded.run.status,
                cancelled_steps,
                summary: summary_of(&loaded)?,
            },
        ),
    }
}
