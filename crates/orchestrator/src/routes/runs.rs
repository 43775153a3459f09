//! Runs: start (`POST /api/orchestration/run`), read, list events.

use std::collections::BTreeMap;
use std::time::Duration;

use baton_api::runs::{Attempt, ParentRun, RunCost, RunDetail, RunEvents, RunStarted, RunWaited, StartRun, StepResult};
use baton_api::{Instant, Success};
use baton_core::delegation::Acting;
use baton_core::ids::RunId;
use baton_core::map;
use baton_core::messages::TaskMessage;
use baton_core::plan::{Plan, DEFAULT_PLAN_ID};
use baton_core::request::{self, validate_run_request, RunRequest, RunRequestDraft};
use baton_core::state::RunKind;
use baton_core::state::RunStatus;
use baton_core::summary::RunSummary;
use baton_edge::auth::{self, Caller};
use baton_edge::engine::{attempts, blocked_by, depends_on, summary_of, Engine, Kept, Loaded, NewRun, Started};
use baton_edge::{clock, http, log, services, settings, Error, Result};
use serde_json::{json, Map, Value};
use worker::{Context, Env, Request, Response};

use super::input;

/// Largest `parameters` object: the run row must stay under D1's 100 KB statement limit.
/// (Step inputs over 64 KiB — parameters plus upstream outputs — travel through KV.)
const MAX_PARAMETERS_BYTES: usize = 90 * 1024;

/// `POST /api/orchestration/run`
pub async fn start(mut req: Request, env: &Env, ctx: &Context) -> Result<Response> {
    let caller = auth::caller(&req, env)?;
    let asked = wait_asked(&req)?;
    let body: Value = http::read_json(&mut req).await?;
    let (request, parameters, claimed) = decode_run_request(body)?;
    let acting = caller.acting(claimed.as_deref(), "client_id")?;
    let engine = Engine::for_client(env, &acting.client_id).await?;
    let plan = resolve_plan(&engine, request.plan_id.as_str(), &acting.client_id).await?;
    let wait = request::wait_seconds(asked, settings::run_wait_default_seconds(env), &plan);
    let wait = Some(wait).filter(|seconds| *seconds > 0);
    let mut new = new_run(engine.new_run_id()?, acting, request, plan, parameters)?;
    new.trace = caller_trace(&req);
    // The run's log lines wait until a waiting client has its answer.
    let held = wait.map(|_| log::hold(new.run_id.as_str()));
    let answered = |response| {
        attempts::release_after_answer(ctx, held);
        response
    };
    let wait_deadline = wait.map(|seconds| clock::now_ms() + seconds * 1000);
    let begun = begin(&engine, ctx, new, wait).await?;
    let answer = |status: RunStatus, summary: RunSummary| RunWaited {
        success: Success,
        run_id: begun.run_id.clone(),
        status,
        summary,
        idempotent_replay: begun.replayed,
    };
    // The run ended while its first wave ran at once: nothing to read.
    if let Some(summary) = &begun.ended {
        return answered(http::json(200, &answer(summary.status, summary.clone())));
    }
    if let Some(deadline) = wait_deadline {
        let loaded = engine.wait_for_end(&begun.run_id, deadline).await?;
        return answered(http::json(200, &answer(loaded.run.status, summary_of(&loaded)?)));
    }
    let started = RunStarted {
        success: Success,
        status_url: format!("/api/orchestration/runs/{}", begun.run_id),
        run_id: begun.run_id,
        status: begun.status,
        idempotent_replay: begun.replayed,
    };
    http::json(202, &started)
}

/// A new diagnostic run of the client `acting` names.
fn new_run(
    run_id: RunId,
    acting: Acting,
    request: RunRequest,
    plan: Plan,
    parameters: Map<String, Value>,
) -> Result<NewRun> {
    Ok(NewRun {
        run_id,
        kind: RunKind::Diagnostic,
        client_id: acting.client_id,
        acted_by: acting.acted_by,
        website_id: request.website_id.as_str().to_string(),
        domain: request.domain,
        plan,
        parameters: Value::Object(parameters),
        idempotency_key: request.idempotency_key,
        priority: 1,
        trace: None,
        parent: None,
    })
}

/// The caller's trace (`traceparent`, `tracestate`) a new run joins. A header that does not
/// parse is treated as absent, as W3C Trace Context requires (the run starts a trace of its
/// own), and logged.
pub(crate) fn caller_trace(req: &Request) -> Option<baton_core::trace::Parent> {
    let header = |name: &str| req.headers().get(name).ok().flatten();
    let traceparent = header(baton_core::trace::TRACEPARENT)?;
    match baton_core::trace::parse(&traceparent, header(baton_core::trace::TRACESTATE).as_deref()) {
        Ok(parent) => Some(parent),
        Err(e) => {
            worker::console_warn!("{e}; the run starts a trace of its own");
            None
        }
    }
}

/// A run request's outcome: the run, whether it already existed, and its summary if it ended
/// while the request waited for its hand-over.
struct Begun {
    run_id: String,
    status: RunStatus,
    replayed: bool,
    ended: Option<RunSummary>,
}

/// Starts the run (or finds the one its idempotency key names). Its first wave runs at once,
/// here, when this worker reaches every service of the plan (for a client that does not wait,
/// only if `IN_PLACE_SECONDS` is not 0); a waiting client's is otherwise handed to the
/// consumer, anyone else's queued.
async fn begin(engine: &Engine<'_>, ctx: &Context, new: NewRun, wait: Option<u64>) -> Result<Begun> {
    let begun = |run_id: &str, status: RunStatus, replayed, ended| Begun {
        run_id: run_id.to_string(),
        status,
        replayed,
        ended,
    };
    let reachable = services::reachable(engine.env(), new.plan.steps().iter().map(|s| s.worker_key.as_str()));
    let here = reachable && (wait.is_some() || settings::in_place_seconds(engine.env()) > 0);
    let at_once = here || wait.is_some();
    let (started, wave) = match at_once {
        true => engine.start_run_inline(new).await?,
        false => (engine.start_run(new).await?, Vec::new()),
    };
    Ok(match started {
        Started::New(written) => {
            let (run_id, status) = (written.run.run_id.clone(), written.run.status);
            let ended = match at_once {
                true => {
                    let limit = Duration::from_secs(wait.unwrap_or(0));
                    run_first_wave(engine, ctx, *written, wave, limit, here).await?
                }
                false => None,
            };
            begun(&run_id, status, false, ended)
        }
        Started::Existing(run) => begun(&run.run_id, run.status, true, None),
    })
}

/// Runs a first wave (claimed in the run's insert) at once: `here` (the run's own timer is sent
/// if it does not end within a second), else handed to the consumer; the run's summary if it
/// ended within `limit` (zero: the client does not wait).
async fn run_first_wave(
    engine: &Engine<'_>,
    ctx: &Context,
    written: Loaded,
    wave: Vec<TaskMessage>,
    limit: Duration,
    here: bool,
) -> Result<Option<RunSummary>> {
    if !here {
        let ended = engine.hand_over(&written, &wave, limit).await;
        return ended.map(|s| serde_json::from_value(s).map_err(|e| Error::Internal(e.to_string()))).transpose();
    }
    let ended = attempts::run_waited(ctx, engine.env(), engine.config, written, wave, limit).await;
    ended.map(|run| summary_of(&run)).transpose()
}

/// The run request's fields, validated (every problem named), its parameters and the
/// `client_id` it names.
fn decode_run_request(body: Value) -> Result<(RunRequest, Map<String, Value>, Option<String>)> {
    let body: StartRun = input::decode(body)?;
    let parameters = body.parameters.unwrap_or_default();
    input::at_most("parameters", &parameters, MAX_PARAMETERS_BYTES)?;
    let draft = RunRequestDraft {
        website_id: body.website_id,
        domain: body.domain,
        plan_id: body.plan_id,
        idempotency_key: body.idempotency_key,
    };
    let request = validate_run_request(&draft).map_err(|found| input::request_problems("invalid_request", &found))?;
    Ok((request, parameters, body.client_id))
}

/// `?wait` as asked (whole seconds, at most [`request::MAX_WAIT_SECONDS`]), before the plan's
/// limit is known.
fn wait_asked(req: &Request) -> Result<Option<u64>> {
    let Some(raw) = http::query_param(req, "wait")? else { return Ok(None) };
    let max = request::MAX_WAIT_SECONDS;
    raw.parse::<u64>().ok().filter(|seconds| *seconds <= max).map(Some).ok_or_else(|| {
        Error::bad_request(
            "invalid_field",
            "wait",
            format!("`wait` must be a whole number of seconds from 0 to {max}, got {raw:?}"),
        )
    })
}

async fn resolve_plan(engine: &Engine<'_>, plan_id: &str, client_id: &str) -> Result<Plan> {
    engine.plans().for_client(plan_id, client_id).await?.ok_or_else(|| Error::BadRequest {
        code: "unknown_plan",
        message: format!("no plan named {plan_id:?} (built-in: standard-v1, quick-v1; or one you created)"),
        details: json!({ "field": "plan_id", "default": DEFAULT_PLAN_ID }),
    })
}

/// Loads a run the caller may see (its own, or one of a client it may act for); another
/// client's run is 404, as if it did not exist. An archived run can be read, not changed: 409.
pub(super) async fn visible_run(engine: &Engine<'_>, run_id: &str, caller: &Caller) -> Result<Loaded> {
    match visible_kept(engine, run_id, caller).await? {
        Kept::Live(loaded) => Ok(*loaded),
        Kept::Archived(_) => Err(Error::Conflict(format!(
            "run {run_id} has ended and is archived: it can be read and deleted, not changed (a rerun starts it anew)"
        ))),
    }
}

/// A run the caller may see, wherever it is kept (D1 or the archive).
pub(super) async fn visible_kept(engine: &Engine<'_>, run_id: &str, caller: &Caller) -> Result<Kept> {
    let not_found = || Error::NotFound { what: format!("run {run_id}") };
    if run_id.parse::<RunId>().is_err() {
        return Err(not_found());
    }
    match engine.kept(run_id).await? {
        Some(kept) if caller.may_act_for(kept.client_id()) => Ok(kept),
        _ => Err(not_found()),
    }
}

/// `GET /api/orchestration/runs/:run_id`
pub async fn get(req: Request, env: &Env, run_id: &str) -> Result<Response> {
    let caller = auth::caller(&req, env)?;
    let engine = Engine::for_id(env, run_id).await?;
    let kept = visible_kept(&engine, run_id, &caller).await?;
    let record = engine.run_record(kept).await?;
    let loaded = &record.loaded;
    let summary = summary_of(loaded)?;
    let mut service_results = step_views(loaded, record.attempts.clone());
    if loaded.plan.has_runs() {
        let children = engine.children_of(run_id).await?;
        for step in service_results.iter_mut() {
            step.child_run_id = children.get(&step.service).cloned();
        }
    }
    let fire = engine.schedules().fire_of(run_id).await?;
    let detail = RunDetail {
        success: Success,
        summary,
        status: loaded.run.status,
        client_id: loaded.run.client_id.clone(),
        acted_by: loaded.run.acted_by.clone(),
        trace_id: loaded.run.trace().trace_id.to_string(),
        partial: loaded.run.partial.map(|p| p != 0),
        service_results,
        diagnosis: record.diagnosis.clone(),
        terminal: loaded.status().map(RunStatus::is_terminal).unwrap_or(false),
        kind: loaded.run.kind,
        plan_name: loaded.run.plan_name.clone(),
        created_at: Instant::at(loaded.run.created_at),
        deadline_at: Instant::at(loaded.run.deadline_at),
        fan_in_at: Instant::of(loaded.run.claimed_at),
        missing: loaded.run.missing.as_deref().and_then(|m| serde_json::from_str(m).ok()),
        schedule_id: fire.as_ref().map(|f| f.schedule_id.clone()),
        schedule_slot: Instant::of(fire.as_ref().map(|f| f.slot)),
        archived: record.archived,
        cost: RunCost::of(&loaded.run.usage(), &baton_edge::settings::cost_prices(env).unwrap_or_default()),
        parent: loaded
            .run
            .parent_run_id
            .clone()
            .zip(loaded.run.parent_step.clone())
            .map(|(run_id, step)| ParentRun { run_id, step }),
    };
    http::json(200, &detail)
}

/// `DELETE /api/orchestration/runs/:run_id`: deletes an ended run for good (D1, the archive,
/// KV); 409 while it runs.
pub async fn delete(req: Request, env: &Env, run_id: &str) -> Result<Response> {
    let caller = auth::caller(&req, env)?;
    let engine = Engine::for_id(env, run_id).await?;
    let kept = visible_kept(&engine, run_id, &caller).await?;
    if let Kept::Live(loaded) = &kept {
        if !loaded.run.status.is_terminal() {
            return Err(Error::Conflict(format!(
                "run {run_id} is {}: only a run that has ended can be deleted (cancel it first)",
                loaded.run.status
            )));
        }
    }
    if !engine.delete_run(&kept).await? {
        return Err(Error::Conflict(format!("run {run_id} changed while it was being deleted; try again")));
    }
    http::json(200, &json!({ "success": true, "run_id": run_id, "deleted": true }))
}

/// The steps of a run as `GET /runs/:id` shows them, each with its attempts (`history`) and
/// what its service returned (`output`, once it completed).
fn step_views(loaded: &Loaded, mut history: BTreeMap<String, Vec<baton_edge::engine::Attempt>>) -> Vec<StepResult> {
    let attempt = |a: baton_edge::engine::Attempt| Attempt {
        attempt: a.attempt,
        started_at: a.started_at.map(Instant),
        ended_at: a.ended_at.map(Instant),
        duration_ms: a.duration_ms,
        outcome: a.outcome,
        error: a.error,
        error_kind: a.error_kind,
    };
    let mut items: BTreeMap<String, Vec<(u32, StepResult)>> = BTreeMap::new();
    let mut steps = Vec::new();
    for s in &loaded.steps {
        let view = StepResult {
            service: s.service.clone(),
            status: s.status,
            wave: s.wave,
            attempts: s.attempts,
            duration_ms: s.duration_ms,
            error: s.error.clone(),
            output: s.output.as_deref().and_then(|o| serde_json::from_str(o).ok()).unwrap_or(Value::Null),
            progress: s.progress.as_deref().and_then(|p| serde_json::from_str(p).ok()),
            depends_on: depends_on(loaded, &s.service),
            started_at: Instant::of(s.started_at),
            finished_at: Instant::of(s.finished_at),
            deadline_at: Instant::of(s.deadline_at),
            next_attempt_at: Instant::of(s.next_attempt_at),
            error_kind: s.error_kind.clone(),
            skipped_because: blocked_by(loaded, &s.service),
            attempt_history: history.remove(&s.service).unwrap_or_default().into_iter().map(attempt).collect(),
            waits_for: loaded.plan.step(&s.service).and_then(|spec| spec.wait.as_ref()).map(|w| w.event.clone()),
            for_each: loaded.plan.step(&s.service).and_then(|spec| spec.map.as_ref()).map(|m| m.for_each()),
            child_run_id: None,
            items: Vec::new(),
        };
        match map::item_of(&s.service) {
            Some((step, index)) => items.entry(step.to_string()).or_default().push((index, view)),
            None => steps.push(view),
        }
    }
    for step in &mut steps {
        if let Some(mut of_step) = items.remove(&step.service) {
            of_step.sort_by_key(|(index, _)| *index);
            step.items = of_step.into_iter().map(|(_, item)| StepResult { for_each: None, ..item }).collect();
        }
    }
    steps
}

/// `GET /api/orchestration/runs/:run_id/events`
pub async fn events(req: Request, env: &Env, run_id: &str) -> Result<Response> {
    let caller = auth::caller(&req, env)?;
    let engine = Engine::for_id(env, run_id).await?;
    let kept = visible_kept(&engine, run_id, &caller).await?;
    let events = engine.events_kept(&kept).await?;
    http::json(200, &RunEvents { success: Success, run_id: run_id.to_string(), events })
}
