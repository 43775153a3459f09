//! Schedules (`/api/orchestration/schedules`): a client's runs started on a cron expression
//! (in a time zone) or an interval, fired by the poller. A client sees only its own.

use baton_core::time::Millis;
use baton_edge::engine::{Engine, ScheduleFields, ScheduleView};
use baton_edge::{auth, http, Error, Result};
use serde_json::{json, Map, Value};
use worker::{Env, Request, Response};

use super::input;

/// Schedules per page at most (and by default).
const PAGE: u32 = 100;
/// Largest `parameters` object (as for a run).
const MAX_PARAMETERS_BYTES: usize = 90 * 1024;
const FIELDS: &[&str] = &[
    "name",
    "cron",
    "timezone",
    "interval_seconds",
    "missed",
    "website_id",
    "domain",
    "plan_id",
    "parameters",
    "paused",
];

fn rfc3339(ms: Option<i64>) -> Value {
    ms.map(|ms| json!(Millis::new(ms.max(0) as u64).to_rfc3339())).unwrap_or(Value::Null)
}

/// A schedule as its owner sees it.
fn shown(view: &ScheduleView) -> Value {
    let row = &view.row;
    json!({
        "schedule_id": row.schedule_id,
        "name": row.name,
        "cron": row.cron,
        "timezone": row.timezone,
        "interval_seconds": row.interval_seconds,
        "missed": row.missed,
        "website_id": row.website_id,
        "domain": row.domain,
        "plan_id": row.plan_id,
        "parameters": serde_json::from_str::<Value>(&row.parameters).unwrap_or_else(|_| json!({})),
        "paused": row.paused != 0,
        "next_slot": rfc3339(row.next_slot),
        "next_fire_times": view.upcoming.iter().map(|m| m.to_rfc3339()).collect::<Vec<_>>(),
        "last_slot": rfc3339(row.last_slot),
        "last_run_id": row.last_run_id,
        "last_error": row.last_error,
        "created_at": rfc3339(Some(row.created_at)),
        "updated_at": rfc3339(Some(row.updated_at)),
    })
}

fn optional_integer(map: &Map<String, Value>, field: &str) -> Result<Option<i64>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_i64().map(Some).ok_or_else(|| {
            Error::bad_request("invalid_field", field, format!("`{field}` must be a whole number of seconds"))
        }),
    }
}

fn optional_bool(map: &Map<String, Value>, field: &str) -> Result<Option<bool>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(Error::bad_request(
            "invalid_field",
            field,
            format!("`{field}` must be true or false, got {}", baton_core::json::kind(other)),
        )),
    }
}

/// The fields of a create or change, each of the right type (their values are checked by core).
async fn decode(req: &mut Request) -> Result<ScheduleFields> {
    let body: Value = http::read_json(req).await?;
    let map = input::object(body, FIELDS)?;
    let parameters = input::optional_object(&map, "parameters", MAX_PARAMETERS_BYTES)?;
    Ok(ScheduleFields {
        name: input::optional_string(&map, "name")?,
        cron: input::optional_string(&map, "cron")?,
        timezone: input::optional_string(&map, "timezone")?,
        interval_seconds: optional_integer(&map, "interval_seconds")?,
        missed: input::optional_string(&map, "missed")?,
        website_id: input::optional_string(&map, "website_id")?,
        domain: input::optional_string(&map, "domain")?,
        plan_id: input::optional_string(&map, "plan_id")?,
        parameters: parameters.map(|p| Value::Object(p).to_string()),
        paused: optional_bool(&map, "paused")?,
    })
}

/// `POST /api/orchestration/schedules`
pub async fn create(mut req: Request, env: &Env) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let fields = decode(&mut req).await?;
    let engine = Engine::new(env).await?;
    let view = engine.create_schedule(&client_id, fields).await?;
    http::json(201, &json!({ "success": true, "schedule": shown(&view) }))
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
    let engine = Engine::new(env).await?;
    let views = engine.schedules(&client_id, cursor.as_deref(), limit).await?;
    let next = (views.len() as u32 == limit).then(|| views.last().map(|v| v.row.schedule_id.clone())).flatten();
    let shown_views: Vec<Value> = views.iter().map(shown).collect();
    http::json(200, &json!({ "success": true, "schedules": shown_views, "next_cursor": next }))
}

/// `GET /api/orchestration/schedules/:id`
pub async fn get(req: Request, env: &Env, schedule_id: &str) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let engine = Engine::new(env).await?;
    let view = engine.schedule(&client_id, schedule_id).await?;
    http::json(200, &json!({ "success": true, "schedule": shown(&view) }))
}

/// `PATCH /api/orchestration/schedules/:id`: the fields given change; `paused` pauses or
/// resumes.
pub async fn update(mut req: Request, env: &Env, schedule_id: &str) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let fields = decode(&mut req).await?;
    let engine = Engine::new(env).await?;
    let view = engine.update_schedule(&client_id, schedule_id, fields).await?;
    http::json(200, &json!({ "success": true, "schedule": shown(&view) }))
}

/// `DELETE /api/orchestration/schedules/:id`
pub async fn delete(req: Request, env: &Env, schedule_id: &str) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let engine = Engine::new(env).await?;
    engine.delete_schedule(&client_id, schedule_id).await?;
    http::json(200, &json!({ "success": true, "schedule_id": schedule_id, "deleted": true }))
}
