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
//! `client_id` in the body is optional; if given it must be the token's client or one the
//! token's client may act for (`API_DELEGATIONS`, e.g. the key-account service); 403
//! `forbidden` otherwise. The execution belongs to that client and records who acted.

use baton_api::executions::Execute;
use baton_core::execution::{self, priority_of_rank};
use baton_core::ids::ExecutionId;
use baton_core::request::{normalize_domain, validate_execute_request, ExecuteRequestDraft};
use baton_core::state::StepStatus;
use baton_core::time::Millis;
use baton_edge::auth::{self, Caller};
use baton_edge::engine::{summary_of, Engine, ExecutionDetail, Loaded, NewExecution, Submitted};
use baton_edge::{http, settings, Error, Result};
use serde_json::{json, Map, Value};
use worker::{Env, Request, Response};

use super::input;

/// Largest `parameters` object: the execution row (plan and parameters) must stay well
/// inside D1's 100 KB per statement.
const MAX_PARAMETERS_BYTES: usize = 32 * 1024;
/// The domain of an execution whose parameters name none.
const DEFAULT_DOMAIN: &str = "pipeline.local";

/// An instant in ms as RFC 3339, or `null`.
pub(super) fn rfc3339(ms: Option<i64>) -> Value {
    ms.map(|ms| json!(Millis::new(ms.max(0) as u64).to_rfc3339())).unwrap_or(Value::Null)
}

/// `POST /execute`
pub async fn execute(mut req: Request, env: &Env) -> Result<Response> {
    let caller = auth::caller(&req, env)?;
    let body: Value = http::read_json(&mut req).await?;
    let mut new = decode(body, &caller)?;
    new.trace = super::runs::caller_trace(&req);
    let quota = settings::quotas(env).of(&new.client_id);
    quota.allows_priority(new.priority).map_err(Error::Quota)?;
    let engine = Engine::for_client(env, &new.client_id).await?;
    quota.allows_queued(engine.executions().queued_of_client(&new.client_id).await?).map_err(Error::Quota)?;
    let submitted = engine.executions().submit(new).await?;
    http::json(202, &submitted_json(&submitted))
}

/// The body of `POST /execute` as a valid request of `caller` (or of the client it acts for).
fn decode(body: Value, caller: &Caller) -> Result<NewExecution> {
    let body: Execute = input::decode(body)?;
    let acting = caller.acting(body.client_id.as_deref(), "client_id")?;
    let draft = ExecuteRequestDraft {
        template_name: body.template_name,
        parameters: body.parameters,
        request_id: body.request_id,
        priority: body.priority,
    };
    let request =
        validate_execute_request(&draft).map_err(|found| input::request_problems("invalid_request", &found))?;
    let parameters = sized(Value::Object(request.parameters))?;
    Ok(NewExecution {
        client_id: acting.client_id,
        acted_by: acting.acted_by,
        template_name: request.template_name,
        request_id: request.request_id,
        priority: request.priority,
        domain: domain_of(&parameters)?,
        parameters,
        trace: None,
    })
}

/// `parameters`, if it is at most [`MAX_PARAMETERS_BYTES`] long.
fn sized(parameters: Value) -> Result<Value> {
    let size = parameters.to_string().len();
    if size > MAX_PARAMETERS_BYTES {
        return Err(Error::bad_request(
            "too_long",
            "parameters",
            format!("`parameters` is {size} bytes, at most {MAX_PARAMETERS_BYTES} allowed"),
        ));
    }
    Ok(parameters)
}

/// `parameters.domain`, normalised, or [`DEFAULT_DOMAIN`] when absent.
fn domain_of(parameters: &Value) -> Result<String> {
    match parameters.get("domain") {
        None | Some(Value::Null) => Ok(DEFAULT_DOMAIN.to_string()),
        Some(Value::String(text)) => {
            normalize_domain(text).map_err(|p| Error::bad_request("invalid_domain", "parameters.domain", p.to_string()))
        }
        Some(_) => Err(Error::bad_request(
            "invalid_field",
            "parameters.domain",
            "`parameters.domain` must be a hostname string",
        )),
    }
}

fn submitted_json(submitted: &Submitted) -> Value {
    let row = &submitted.execution;
    json!({
        "success": true,
        "execution_id": row.run_id,
        "client_id": row.client_id,
        "acted_by": row.acted_by,
        "status": submitted.status(),
        "estimated_completion_ms": submitted.estimated_completion_ms,
        "priority": priority_of_rank(row.priority),
        "reason": submitted.reason(),
        "status_url": format!("/executions/{}", row.run_id),
        "idempotent_replay": submitted.replay,
    })
}

/// `GET /executions/:execution_id`
pub async fn get(req: Request, env: &Env, execution_id: &str) -> Result<Response> {
    let caller = auth::caller(&req, env)?;
    let not_found = || Error::NotFound { what: format!("execution {execution_id}") };
    let execution_id: ExecutionId = execution_id.parse().map_err(|_| not_found())?;
    let engine = Engine::for_id(env, execution_id.as_str()).await?;
    let detail =
        engine.executions().visible(&execution_id, |owner| caller.may_act_for(owner)).await?.ok_or_else(not_found)?;
    http::json(200, &detail_json(&detail)?)
}

fn detail_json(detail: &ExecutionDetail) -> Result<Value> {
    let row = &detail.execution;
    let (stages, deliverables, costs) = match &detail.run {
        Some(loaded) => stages_of(loaded),
        None => (Vec::new(), Vec::new(), json!({ "totals": {}, "by_stage": [] })),
    };
    let run = detail.run.as_ref().map(|l| &l.run);
    Ok(json!({
        "success": true,
        "execution_id": row.run_id,
        "template_name": row.template_name,
        "client_id": row.client_id,
        "acted_by": row.acted_by,
        "request_id": row.request_id,
        "priority": priority_of_rank(row.priority),
        "status": detail.status(),
        "terminal": detail.terminal()?,
        "error": detail.error(),
        "queue": {
            "status": row.status,
            "enqueued_at": rfc3339(Some(row.enqueued_at)),
            "admitted_at": rfc3339(row.admitted_at),
            "deadline_at": rfc3339(Some(row.deadline_at)),
            "attempts": row.attempts,
            "reason": detail.reason(),
        },
        "started_at": rfc3339(run.map(|r| r.started_at)),
        "completed_at": rfc3339(run.and_then(|r| r.completed_at)),
        "stages": stages,
        "deliverables": deliverables,
        "costs": costs,
        "summary": detail.run.as_ref().map(summary_of).transpose()?,
    }))
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
        if step.status == StepStatus::Completed {
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
