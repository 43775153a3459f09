//! Schedules (`/api/orchestration/schedules`): a client's runs started on a cron expression
//! (in a time zone) or an interval, fired by the poller. A client sees only its own.

use baton_api::schedules::{Missed, Schedule, ScheduleDraft, ScheduleList, ScheduleOne, SchedulePatch};
use baton_api::{Instant, Success};
use baton_core::time::Millis;
use baton_edge::engine::{Engine, ScheduleFields, ScheduleView};
use baton_edge::{auth, http, Error, Result};
use serde_json::{json, Value};
use worker::{Env, Request, Response};

use super::input;

/// Schedules per page at most (and by default).
const PAGE: u32 = 100;
/// Largest `parameters` object (as for a run).
const MAX_PARAMETERS_BYTES: usize = 90 * 1024;
fn instant(ms: i64) -> Instant {
    Instant(Millis::new(ms.max(0) as u64).to_rfc3339())
}

/// A schedule as its owner sees it.
fn shown(view: &ScheduleView) -> Schedule {
    let row = &view.row;
    Schedule {
        schedule_id: row.schedule_id.clone(),
        name: row.name.clone(),
        cron: row.cron.clone(),
        timezone: row.timezone.clone(),
        interval_seconds: row.interval_seconds,
        missed: Missed::parse(&row.missed).unwrap_or(Missed::Skip),
        website_id: row.website_id.clone(),
        domain: row.domain.clone(),
        plan_id: row.plan_id.clone(),
        parameters: serde_json::from_str(&row.parameters).unwrap_or_default(),
        paused: row.paused != 0,
        next_slot: row.next_slot.map(instant),
        next_fire_times: view.upcoming.iter().map(|m| Instant(m.to_rfc3339())).collect(),
        last_slot: row.last_slot.map(instant),
        last_run_id: row.last_run_id.clone(),
        last_error: row.last_error.clone(),
        created_at: instant(row.created_at),
        updated_at: instant(row.updated_at),
    }
}

/// The fields of a create or change, each of the right type (their values are checked by core).
fn fields(body: SchedulePatch) -> Result<ScheduleFields> {
    if let Some(parameters) = &body.parameters {
        input::at_most("parameters", parameters, MAX_PARAMETERS_BYTES)?;
    }
    Ok(ScheduleFields {
        name: body.name,
        cron: body.cron,
        timezone: body.timezone,
        interval_seconds: body.interval_seconds,
        missed: body.missed.map(|m| m.as_str().to_string()),
        website_id: body.website_id,
        domain: body.domain,
        plan_id: body.plan_id,
        parameters: body.parameters.map(|p| Value::Object(p).to_string()),
        paused: body.paused,
    })
}

/// `POST /api/orchestration/schedules`
pub async fn create(mut req: Request, env: &Env) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let draft: ScheduleDraft = input::decode(http::read_json(&mut req).await?)?;
    let fields = fields(draft.into())?;
    let engine = Engine::for_client(env, &client_id).await?;
    let view = engine.schedules().create(&client_id, fields).await?;
    http::json(201, &ScheduleOne { success: Success, schedule: shown(&view) })
}

/// `GET /api/orchestration/schedules?limit=&cursor=`
pub async fn list(req: Request, env: &Env) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let limit = match http::query_param(&req, "limit")? {
        None => PAGE,
        Some(raw) => raw.parse::<u32>().ok().filter(|n| (1..=PAGE).contains(n)).ok_or_else(|| {
            Error::bad_request("invalid_field", "limit", format!("`limit` must be a whole number from 1 to {PAGE}"))
        })?,
    };
    let cursor = http::query_param(&req, "cursor")?;
    let engine = Engine::for_client(env, &client_id).await?;
    let views = engine.schedules().list(&client_id, cursor.as_deref(), limit).await?;
    let next = (views.len() as u32 == limit).then(|| views.last().map(|v| v.row.schedule_id.clone())).flatten();
    http::json(200, &ScheduleList { success: Success, schedules: views.iter().map(shown).collect(), next_cursor: next })
}

/// `GET /api/orchestration/schedules/:id`
pub async fn get(req: Request, env: &Env, schedule_id: &str) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let engine = Engine::for_client(env, &client_id).await?;
    let view = engine.schedules().get(&client_id, schedule_id).await?;
    http::json(200, &ScheduleOne { success: Success, schedule: shown(&view) })
}

/// `PATCH /api/orchestration/schedules/:id`: the fields given change; `paused` pauses or
/// resumes.
pub async fn update(mut req: Request, env: &Env, schedule_id: &str) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let patch: SchedulePatch = input::decode(http::read_json(&mut req).await?)?;
    let fields = fields(patch)?;
    let engine = Engine::for_client(env, &client_id).await?;
    let view = engine.schedules().update(&client_id, schedule_id, fields).await?;
    http::json(200, &ScheduleOne { success: Success, schedule: shown(&view) })
}

/// `DELETE /api/orchestration/schedules/:id`
pub async fn delete(req: Request, env: &Env, schedule_id: &str) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let engine = Engine::for_client(env, &client_id).await?;
    engine.schedules().delete(&client_id, schedule_id).await?;
    http::json(200, &json!({ "success": true, "schedule_id": schedule_id, "deleted": true }))
}
