//! `GET /api/orchestration/runs?website_id=&status=&plan_id=&limit=&cursor=`: the caller's runs,
//! newest first, a page at a time.

use baton_api::runs::RunList;
use baton_api::Success;
use baton_core::listing::{validate_run_list, RunListDraft};
use baton_edge::engine::Engine;
use baton_edge::{auth, http, Result};
use worker::{Env, Request, Response};

use super::input;

pub async fn list(req: Request, env: &Env) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let draft = RunListDraft {
        website_id: http::query_param(&req, "website_id")?,
        status: http::query_param(&req, "status")?,
        plan_id: http::query_param(&req, "plan_id")?,
        limit: http::query_param(&req, "limit")?,
        cursor: http::query_param(&req, "cursor")?,
    };
    let query = validate_run_list(&draft).map_err(|found| input::request_problems("invalid_query", &found))?;
    let engine = Engine::for_client(env, &client_id).await?;
    let (runs, next) = engine.list_runs(&client_id, &query).await?;
    http::json(200, &RunList { success: Success, runs, next_cursor: next.map(|c| c.to_string()) })
}
