//! Pipeline executions: `POST /execute` (from the key-account service or a client) and
//! `GET /executions/:execution_id`.
//!
//! An execution names a master template; the key-account service (`KAM`) supplies it, core
//! compiles it into a plan, and the execution is queued with that plan. An admission pass
//! runs at once: if the pools have room and nothing of higher priority (or older) waits, it
//! starts now; otherwise it stays `queued` and the poller's passes admit it later, or fail
//! it with the reason once its deadline (`JOB_TIMEOUT_MINUTES`) passes. The run of an
//! execution has the execution's id.
//!
//! `client_id` in the body is optional; if given it must be the token's client (403
//! `forbidden` otherwise: a caller cannot start executions for another client).

use baton_core::execution::{self, priority_of_rank};
use baton_core::ids::{ExecutionId, RunId};
use baton_core::plan::Plan;
use baton_core::request::{normalize_domain, validate_execute_request, ExecuteRequestDraft};
use baton_core::state::StepStatus;
use baton_core::template::{compile, CompileOptions};
use baton_core::time::Millis;
use baton_edge::admission;
use baton_edge::d1::executions::{self, ExecutionRow};
use baton_edge::d1::{resources, runs};
use baton_edge::engine::{summary_of, Engine, Loaded};
use baton_edge::{auth, clock, http, kam, Error, Result};
use serde_json::{json, Map, Value};
use worker::{Env, Request, Response};

use super::input;

/// Largest `parameters` object: the execution row (plan and parameters) must stay well
/// inside D1's 100 KB per statement.
const MAX_PARAMETERS_BYTES: usize = 32 * 1024;
/// Executions a request's admission pass may start (the poller's passes do the rest).
const ADMIT_PER_REQUEST: u32 = 5;
/// The domain of an execution whose parameters name none.
const DEFAULT_DOMAIN: &str = "pipeline.local";

fn rfc3339(ms: Option<i64>) -> Value {
    ms.map(|ms| json!(Millis::new(ms.max(0) as u64).to_rfc3339())).unwrap_or(Value::Null)
}

/// `POST /execute`
pub async fn execute(mut req: Request, env: &Env) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let body: Value = http::read_json(&mut req).await?;
    let map = input::object(body, &["template_name", "parameters", "client_id", "request_id", "priority"])?;
    if let Some(claimed) = input::optional_string(&map, "client_id")? {
        if claimed != client_id {
            return Err(Error::Forbidden {
                message: format!("client_id {claimed:?} is not the client of this token; omit it or send your own"),
                field: "client_id",
            });
        }
    }
    let draft = ExecuteRequestDraft {
        template_name: input::optional_string(&map, "template_name")?.unwrap_or_default(),
        parameters: map.get("parameters").cloned(),
        request_id: input::optional_string(&map, "request_id")?,
        priority: input::optional_string(&map, "priority")?,
    };
    let request = validate_execute_request(&draft).map_err(|problems| {
        let list = problems
            .0
            .iter()
            .map(|p| json!({ "field": p.field(), "code": p.code(), "message": p.to_string() }))
            .collect();
        input::problems("invalid_request", &problems.to_string(), list)
    })?;
    let parameters = Value::Object(request.parameters);
    let size = parameters.to_string().len();
    if size > MAX_PARAMETERS_BYTES {
        return Err(Error::bad_request(
            "too_long",
            "parameters",
            format!("`parameters` is {size} bytes, at most {MAX_PARAMETERS_BYTES} allowed"),
        ));
    }
    let domain = match parameters.get("domain") {
        None | Some(Value::Null) => DEFAULT_DOMAIN.to_string(),
        Some(Value::String(text)) => normalize_domain(text)
            .map_err(|p| Error::bad_request("invalid_domain", "parameters.domain", p.to_string()))?,
        Some(_) => {
            return Err(Error::bad_request(
                "invalid_field",
                "parameters.domain",
                "`parameters.domain` must be a hostname string",
            ))
        }
    };

    let engine = Engine::new(env).await?;
    if let Some(request_id) = &request.request_id {
        if let Some(existing) = executions::by_request(&engine.db, &client_id, request_id).await? {
            return respond(&engine, existing, true).await;
        }
    }
    let template = kam::master_template(env, &request.template_name).await?.ok_or_else(|| Error::BadRequest {
        code: "unknown_template",
        message: format!("the key-account service has no master template {:?}", request.template_name),
        details: json!({ "field": "template_name" }),
    })?;
    let plan = compile(&template, &CompileOptions::default()).map_err(|e| Error::BadRequest {
        code: e.code(),
        message: e.to_string(),
        details: json!({ "field": "template_name", "template_field": e.field(), "template": request.template_name }),
    })?;

    let now = engine.now();
    let execution_id = ExecutionId::from_parts(now, clock::random_bytes::<6>()?);
    let run_id = RunId::from_execution(&execution_id);
    let row = ExecutionRow {
        run_id: run_id.as_str().to_string(),
        client_id: client_id.clone(),
        request_id: request.request_id.clone(),
        template_name: request.template_name.clone(),
        website_id: client_id.clone(),
        domain,
        plan_json: serde_json::to_string(&plan).map_err(|e| Error::Internal(e.to_string()))?,
        parameters: parameters.to_string(),
        priority: request.priority.rank(),
        enqueued_at: now.as_u64() as i64,
        deadline_at: execution::queue_deadline(now, engine.config.job_timeout_ms()).as_u64() as i64,
        status: executions::QUEUED.to_string(),
        attempts: 0,
        admitted_at: None,
        admission_token: None,
        last_error: None,
    };
    if let Err(e) = engine.db.batch(vec![executions::insert(&engine.db, &row)?]).await {
        // Two requests with the same request_id raced: the other one's execution stands.
        if let Some(request_id) = &request.request_id {
            if let Some(existing) = executions::by_request(&engine.db, &client_id, request_id).await? {
                return respond(&engine, existing, true).await;
            }
        }
        return Err(e);
    }
    // The execution is queued whatever happens now; a failed pass is the poller's to redo.
    if let Err(e) = admission::admit_queued(&engine, ADMIT_PER_REQUEST).await {
        worker::console_error!("execute {}: admission pass failed ({e}); the poller will admit it", row.run_id);
    }
    let current = executions::get(&engine.db, &row.run_id).await?.unwrap_or(row);
    respond(&engine, current, false).await
}

/// Why a queued execution waits: the reason the admission pass gave the queue's head, or
/// that it waits behind others (only the head is tried).
fn reason_of(row: &ExecutionRow) -> Option<String> {
    match (row.status.as_str(), &row.last_error) {
        (_, Some(reason)) => Some(reason.clone()),
        (executions::QUEUED, None) => Some(execution::QUEUED_BEHIND.to_string()),
        _ => None,
    }
}

/// The execution's status as clients see it: `queued`, `starting` (admitted), its run's
/// status once started, or `failed` (never admitted).
fn status_of(row: &ExecutionRow, run_status: Option<&str>) -> String {
    match (row.status.as_str(), run_status) {
        (_, Some(status)) => status.to_string(),
        (executions::ADMITTED | executions::STARTED, None) => "starting".to_string(),
        (status, None) => status.to_string(),
    }
}

async fn respond(engine: &Engine<'_>, row: ExecutionRow, replay: bool) -> Result<Response> {
    let run_status = runs::get(&engine.db, &row.run_id).await?.map(|r| r.status);
    let plan: Plan = serde_json::from_str(&row.plan_json)
        .map_err(|e| Error::Storage(format!("execution {}: unreadable plan: {e}", row.run_id)))?;
    let workers: Vec<&str> = plan.steps().iter().map(|s| s.worker_key.as_str()).collect();
    let stats = resources::stats_of(&engine.db, &workers).await?;
    http::json(
        202,
        &json!({
            "success": true,
            "execution_id": row.run_id,
            "status": status_of(&row, run_status.as_deref()),
            "estimated_completion_ms": execution::estimated_completion_ms(&plan, &stats),
            "priority": priority_of_rank(row.priority),
            "reason": reason_of(&row),
            "status_url": format!("/executions/{}", row.run_id),
            "idempotent_replay": replay,
        }),
    )
}

/// `GET /executions/:execution_id`
pub async fn get(req: Request, env: &Env, execution_id: &str) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let not_found = || Error::NotFound { what: format!("execution {execution_id}") };
    if execution_id.parse::<ExecutionId>().is_err() {
        return Err(not_found());
    }
    let engine = Engine::new(env).await?;
    let row =
        executions::get(&engine.db, execution_id).await?.filter(|r| r.client_id == client_id).ok_or_else(not_found)?;
    let loaded = engine.load(execution_id).await?;
    let run_status = loaded.as_ref().map(|l| l.run.status.clone());
    let terminal = match &loaded {
        Some(l) => l.status()?.is_terminal(),
        None => row.status == executions::FAILED,
    };
    let (stages, deliverables, costs) = match &loaded {
        Some(loaded) => stages_of(loaded),
        None => (Vec::new(), Vec::new(), json!({ "totals": {}, "by_stage": [] })),
    };
    let run = loaded.as_ref().map(|l| &l.run);
    let error = match run {
        Some(run) => run.error.clone(),
        None if row.status == executions::FAILED => row.last_error.clone(),
        None => None,
    };
    http::json(
        200,
        &json!({
            "success": true,
            "execution_id": row.run_id,
            "template_name": row.template_name,
            "request_id": row.request_id,
            "priority": priority_of_rank(row.priority),
            "status": status_of(&row, run_status.as_deref()),
            "terminal": terminal,
            "error": error,
            "queue": {
                "status": row.status,
                "enqueued_at": rfc3339(Some(row.enqueued_at)),
                "admitted_at": rfc3339(row.admitted_at),
                "deadline_at": rfc3339(Some(row.deadline_at)),
                "attempts": row.attempts,
                "reason": reason_of(&row),
            },
            "started_at": rfc3339(run.map(|r| r.started_at)),
            "completed_at": rfc3339(run.and_then(|r| r.completed_at)),
            "stages": stages,
            "deliverables": deliverables,
            "costs": costs,
            "summary": loaded.as_ref().map(summary_of).transpose()?,
        }),
    )
}

/// The run's steps as stages, the outputs of those that completed, and the usage they reported.
fn stages_of(loaded: &Loaded) -> (Vec<Value>, Vec<Value>, Value) {
    let parse = |text: &Option<String>| text.as_deref().and_then(|t| serde_json::from_str::<Value>(t).ok());
    let mut stages = Vec::new();
    let mut deliverables = Vec::new();
    let mut usages = Vec::new();
    let mut by_stage = Vec::new();
    for step in &loaded.steps {
        let spec = loaded.plan.step(&step.service);
        let worker = spec.map(|s| s.worker_key.as_str().to_string());
        let action = spec.and_then(|s| s.action.clone());
        let output = parse(&step.output);
        let usage = parse(&step.usage);
        stages.push(json!({
            "service": step.service,
            "worker": worker,
            "action": action,
            "stage": step.wave,
            "status": step.status,
            "attempts": step.attempts,
            "started_at": rfc3339(step.started_at),
            "finished_at": rfc3339(step.finished_at),
            "duration_ms": step.duration_ms,
            "error": step.error,
            "output": output,
            "usage": usage,
        }));
        if step.status == StepStatus::Completed.as_str() {
            deliverables.push(json!({
                "service": step.service,
                "worker": worker,
                "action": action,
                "content": output,
                "created_at": rfc3339(step.finished_at),
            }));
        }
        if let Some(usage) = usage {
            by_stage.push(json!({ "service": step.service, "usage": usage }));
            usages.push(usage);
        }
    }
    let totals: Map<String, Value> = execution::usage_totals(&usages);
    let mut costs = json!({ "totals": totals, "by_stage": by_stage });
    if let Some(tokens) = totals.get(execution::TOKENS) {
        costs["tokens"] = tokens.clone();
    }
    (stages, deliverables, costs)
}
