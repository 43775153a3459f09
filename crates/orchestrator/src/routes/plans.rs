//! Plans: list (`GET /api/orchestration/plans`), read one, create a custom plan.
//!
//! Listing and reading are public: without a token only the built-in plans are visible; with
//! a valid token, the client's own plans too (a token that is given but invalid is 401, not
//! silently ignored). Custom plans are per client.

use baton_core::plan::{validate, Plan, PlanDraft};
use baton_core::quota::QuotaExceeded;
use baton_edge::engine::{create_plan, visible_plan, visible_plans, PlanCreated, PlanSource};
use baton_edge::{auth, http, settings, Error, Result};
use serde_json::{json, Value};
use worker::{Env, Request, Response};

use super::input;

/// A plan as the API shows it: core's serialisation, plus `max_duration_ms` (the listing
/// name of the design this API follows) and where it comes from.
fn shown(plan: &Plan, source: PlanSource) -> Result<Value> {
    let mut value = serde_json::to_value(plan).map_err(|e| Error::Internal(e.to_string()))?;
    value["max_duration_ms"] = json!(plan.max_run_duration_ms());
    value["source"] = json!(source.as_str());
    Ok(value)
}

/// The caller's client id when a bearer token is given; `None` without one.
fn optional_client(req: &Request, env: &Env) -> Result<Option<String>> {
    match http::bearer_token(req) {
        None => Ok(None),
        Some(_) => auth::client_id(req, env).map(Some),
    }
}

/// Plans per page when `limit` is not given, and the most a page holds.
const PLAN_PAGE: u32 = 100;

/// `GET /api/orchestration/plans[?limit=&cursor=]`: a page of plans; `next_cursor` (when more
/// follow) is the `cursor` of the next page.
pub async fn list(req: Request, env: &Env) -> Result<Response> {
    let client = optional_client(&req, env)?;
    let number = |name: &str, min: u32, max: u32, default: u32| -> Result<u32> {
        match http::query_param(&req, name)? {
            None => Ok(default),
            Some(raw) => raw.parse::<u32>().ok().filter(|n| (min..=max).contains(n)).ok_or_else(|| {
                Error::bad_request(
                    "invalid_field",
                    name,
                    format!("`{name}` must be a whole number from {min} to {max}, got {raw:?}"),
                )
            }),
        }
    };
    let limit = number("limit", 1, PLAN_PAGE, PLAN_PAGE)?;
    // A cursor is up to 9 digits (openapi.json's pattern), nothing else that parses as a number.
    let cursor = http::query_param(&req, "cursor")?;
    if cursor.as_deref().is_some_and(|c| c.is_empty() || c.len() > 9 || !c.bytes().all(|b| b.is_ascii_digit())) {
        return Err(Error::bad_request(
            "invalid_field",
            "cursor",
            format!("`cursor` must be the next_cursor of a previous page (up to 9 digits), got {cursor:?}"),
        ));
    }
    let offset = number("cursor", 0, u32::MAX, 0)?;
    let (plans, more) = visible_plans(env, client.as_deref(), offset, limit).await?;
    let shown_plans = plans.iter().map(|(plan, source)| shown(plan, *source)).collect::<Result<Vec<_>>>()?;
    let next = more.then(|| (offset + plans.len() as u32).to_string());
    http::json(200, &json!({ "success": true, "plans": shown_plans, "next_cursor": next }))
}

/// `GET /api/orchestration/plans/:plan_id`
pub async fn get(req: Request, env: &Env, plan_id: &str) -> Result<Response> {
    let client = optional_client(&req, env)?;
    match visible_plan(env, plan_id, client.as_deref()).await? {
        Some((plan, source)) => http::json(200, &json!({ "success": true, "plan": shown(&plan, source)? })),
        None => Err(Error::NotFound { what: format!("plan {plan_id}") }),
    }
}

/// `POST /api/orchestration/plans`: body is a plan draft; 400 lists every problem.
pub async fn create(mut req: Request, env: &Env) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let draft: PlanDraft = input::decode(http::read_json(&mut req).await?)?;
    let plan = validate(&draft).map_err(|problems| {
        let list = problems.0.iter().map(|p| serde_json::to_value(p).unwrap_or(Value::Null)).collect();
        input::problems("invalid_plan", &problems.to_string(), list)
    })?;
    // A step may only call a configured service: a worker key becomes a path to it.
    let unknown = plan.unknown_workers(&settings::allowed_worker_keys(env));
    if !unknown.is_empty() {
        let list = unknown.iter().map(|p| serde_json::to_value(p).unwrap_or(Value::Null)).collect();
        let message = unknown.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        return Err(input::problems("invalid_plan", &message, list));
    }
    let plan_id = plan.plan_id().as_str();
    let quota = settings::quotas(env).of(&client_id);
    match create_plan(env, &client_id, &plan, quota.custom_plans).await? {
        PlanCreated::Created => http::json(201, &json!({ "success": true, "plan": shown(&plan, PlanSource::Custom)? })),
        PlanCreated::BuiltinId => {
            Err(Error::Conflict(format!("plan_id {plan_id:?} is a built-in plan; choose another plan_id")))
        }
        PlanCreated::AlreadyExists => Err(Error::Conflict(format!(
            "you already have a plan {plan_id:?}; plans cannot be replaced, choose another plan_id"
        ))),
        PlanCreated::OverQuota(limit) => Err(Error::Quota(QuotaExceeded::CustomPlans { limit })),
    }
}
