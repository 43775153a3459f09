//! `POST /api/orchestration/runs/:run_id/pause` and `.../resume`: the caller's own runs only
//! (another client's run is 404). Pausing a paused run, or resuming one that is not paused,
//! changes nothing and says so (`changed: false`); a run that has ended, or (a pause) whose
//! analysis has begun, is 409, naming its status.

use baton_api::runs::{RunPaused, RunResumed};
use baton_api::Success;
use baton_edge::engine::{summary_of, Engine, HoldOutcome};
use baton_edge::{auth, http, Error, Result};
use worker::{Env, Request, Response};

use super::runs::visible_run;

/// `POST /api/orchestration/runs/:run_id/pause`
pub async fn pause(req: Request, env: &Env, run_id: &str) -> Result<Response> {
    let caller = auth::caller(&req, env)?;
    let engine = Engine::for_id(env, run_id).await?;
    let loaded = visible_run(&engine, run_id, &caller).await?;
    match engine.pause(loaded).await? {
        HoldOutcome::Refused { status } if status.is_terminal() => Err(Error::Conflict(format!(
            "run {run_id} has already ended: it is {status}; only a run in progress can be paused"
        ))),
        HoldOutcome::Refused { status } => Err(Error::Conflict(format!(
            "run {run_id} is {status}: every step has ended and its analysis has begun, so there is nothing left to pause"
        ))),
        HoldOutcome::Done { loaded, changed, .. } => http::json(
            200,
            &RunPaused {
                success: Success,
                run_id: run_id.to_string(),
                status: loaded.status()?,
                changed,
                summary: summary_of(&loaded)?,
            },
        ),
    }
}

/// `POST /api/orchestration/runs/:run_id/resume`
pub async fn resume(req: Request, env: &Env, run_id: &str) -> Result<Response> {
    let caller = auth::caller(&req, env)?;
    let engine = Engine::for_id(env, run_id).await?;
    let loaded = visible_run(&engine, run_id, &caller).await?;
    match engine.resume(loaded).await? {
        HoldOutcome::Refused { status } => Err(Error::Conflict(format!(
            "run {run_id} has already ended: it is {status}; only a paused run can be resumed"
        ))),
        HoldOutcome::Done { loaded, changed, report } => http::json(
            200,
            &RunResumed {
                success: Success,
                run_id: run_id.to_string(),
                status: loaded.status()?,
                changed,
                dispatched: report.dispatched.clone(),
                summary: summary_of(&loaded)?,
            },
        ),
    }
}
