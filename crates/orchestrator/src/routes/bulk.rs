//! `POST /api/orchestration/runs/cancel` and `.../runs/retry`: a page of the caller's own runs
//! matching a filter, each cancelled or retried as its single-run route would; the runs left as
//! they were are listed with the reason.

use baton_api::bulk::{BulkRuns, RunSkipped, RunsActed};
use baton_api::Success;
use baton_core::bulk::{validate_bulk, BulkAction};
use baton_edge::engine::Engine;
use baton_edge::{auth, http, Result};
use serde_json::Value;
use worker::{Env, Request, Response};

use super::input;

/// `POST /api/orchestration/runs/{cancel,retry}`
pub async fn act(mut req: Request, env: &Env, action: BulkAction) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let body: Value = http::read_json(&mut req).await?;
    let body: BulkRuns = input::decode(body)?;
    let query = validate_bulk(&body.draft()).map_err(|found| input::request_problems("invalid_request", &found))?;
    let engine = Engine::for_client(env, &client_id).await?;
    let report = engine.bulk(&client_id, action, &query).await?;
    let skipped = report
        .skipped
        .into_iter()
        .map(|(run_id, why)| RunSkipped { run_id, code: why.code().to_string(), reason: why.to_string() })
        .collect();
    http::json(
        200,
        &RunsActed {
            success: Success,
            action: action.as_str().to_string(),
            acted: report.acted.len() as u32,
            run_ids: report.acted,
            skipped,
            next_cursor: report.next.map(|c| c.to_string()),
        },
    )
}
