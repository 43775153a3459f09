//! Runs: start (`POST /api/orchestration/run`), read, list events.

use std::time::Duration;

use baton_core::ids::RunId;
use baton_core::messages::TaskMessage;
use baton_core::plan::{Plan, DEFAULT_PLAN_ID};
use baton_core::request::{validate_run_request, RunRequestDraft};
use baton_core::state::RunStatus;
use baton_core::time::Millis;
use baton_edge::concurrency::with_timeout;
use baton_edge::engine::{summary_of, write_snapshot, Engine, Loaded, NewRun, Started};
use baton_edge::{auth, bindings, clock, http, Error, Result};
use serde_json::{json, Value};
use worker::{Context, Delay, Env, Headers, Method, Request, RequestInit, Response};

use super::input;

/// Longest `?wait`, in seconds.
const MAX_WAIT_SECONDS: u64 = 60;
/// Largest `parameters` object: the run row must stay under D1's 100 KB statement limit.
/// (Step inputs over 64 KiB — parameters plus upstream outputs — travel through KV.)
const MAX_PARAMETERS_BYTES: usize = 90 * 1024;

/// `POST /api/orchestration/run`
pub async fn start(mut req: Request, env: &Env, ctx: &Context) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let wait = wait_seconds(&req)?;
    let body: Value = http::read_json(&mut req).await?;
    let map = input::object(body, &["website_id", "domain", "plan_id", "parameters", "idempotency_key"])?;
    let draft = RunRequestDraft {
        website_id: input::optional_string(&map, "website_id")?.unwrap_or_default(),
        domain: input::optional_string(&map, "domain")?.unwrap_or_default(),
        plan_id: input::optional_string(&map, "plan_id")?,
        idempotency_key: input::optional_string(&map, "idempotency_key")?,
    };
    let parameters = input::optional_object(&map, "parameters", MAX_PARAMETERS_BYTES)?.unwrap_or_default();
    let request = validate_run_request(&draft).map_err(|problems| {
        let list = problems
            .0
            .iter()
            .map(|p| json!({ "field": p.field(), "code": p.code(), "message": p.to_string() }))
            .collect();
        input::problems("invalid_request", &problems.to_string(), list)
    })?;
    let engine = Engine::new(env).await?;
    let plan = resolve_plan(&engine, request.plan_id.as_str(), &client_id).await?;
    let now = clock::now_ms();
    let run_id = RunId::from_parts(Millis::new(now), clock::random_bytes::<8>()?);
    let new = NewRun {
        run_id,
        kind: "diagnostic",
        client_id,
        website_id: request.website_id.as_str().to_string(),
        domain: request.domain,
        plan,
        parameters: Value::Object(parameters),
        idempotency_key: request.idempotency_key,
        priority: 1,
    };
    let wait_deadline = wait.map(|seconds| clock::now_ms() + seconds * 1000);
    let (started, first_wave) = match wait {
        // A client is waiting: the consumer runs the first wave now instead of through the queue.
        Some(seconds) if seconds > 0 => engine.start_run_inline(new).await?,
        _ => (engine.start_run(new).await?, Vec::new()),
    };
    let mut ended = None;
    let (run, replayed) = match started {
        Started::New(written) => {
            // The KV mirror of what was just written, outside the request's path (it never
            // decides anything).
            let snapshot = (*written).clone();
            let env2 = env.clone();
            ctx.wait_until(async move { write_snapshot(&env2, &snapshot).await });
            if !first_wave.is_empty() {
                ended = hand_over(&engine, &written, &first_wave, Duration::from_secs(wait.unwrap_or(0))).await;
            }
            (written.run, false)
        }
        Started::Existing(run) => (*run, true),
    };
    if let Some(summary) = ended {
        // The consumer ran the whole run and answered with how it ended: nothing to read.
        let status = summary.get("status").cloned().unwrap_or(Value::Null);
        return http::json(
            200,
            &json!({ "success": true, "run_id": run.run_id, "status": status, "summary": summary, "idempotent_replay": replayed }),
        );
    }
    if let Some(deadline) = wait_deadline {
        let loaded = wait_for_end(&engine, &run.run_id, deadline).await?;
        let summary = summary_of(&loaded)?;
        return http::json(
            200,
            &json!({ "success": true, "run_id": run.run_id, "status": loaded.run.status, "summary": summary, "idempotent_replay": replayed }),
        );
    }
    http::json(
        202,
        &json!({
            "success": true,
            "run_id": run.run_id,
            "status": run.status,
            "status_url": format!("/api/orchestration/runs/{}", run.run_id),
            "idempotent_replay": replayed,
        }),
    )
}

fn wait_seconds(req: &Request) -> Result<Option<u64>> {
    let Some(raw) = http::query_param(req, "wait")? else { return Ok(None) };
    match raw.parse::<u64>() {
        Ok(s) if s <= MAX_WAIT_SECONDS => Ok(Some(s)),
        _ => Err(Error::bad_request(
            "invalid_field",
            "wait",
            format!("`wait` must be a whole number of seconds from 0 to {MAX_WAIT_SECONDS}, got {raw:?}"),
        )),
    }
}

/// Hands the first wave of a waited-for run to the consumer (`POST /internal/drive` over the
/// `CONSUMER` binding, with the run as written and the effective configuration), which runs
/// it, and what it makes ready, at once. Returns when the
/// consumer has nothing left to run there, or when `limit` passes (the work goes on in the
/// consumer). If the hand-over fails, the wave goes on the task queue as usual. The run's
/// summary if it ended there.
async fn hand_over(engine: &Engine<'_>, written: &Loaded, tasks: &[TaskMessage], limit: Duration) -> Option<Value> {
    let call = async {
        // With the run as just written and the configuration just resolved, the consumer
        // needs neither a read of the run nor of KV before claiming.
        let mut body = written.hand_over();
        body["tasks"] = json!(tasks);
        body["config"] = engine.config.to_override();
        let body = serde_json::to_vec(&body).map_err(|e| Error::Internal(e.to_string()))?;
        let headers = Headers::new();
        let _ = headers.set("Content-Type", "application/json");
        for (name, value) in auth::signature_headers(engine.env(), &body)? {
            let _ = headers.set(name, &value);
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
        let request = Request::new_with_init("https://consumer.internal/internal/drive", &init)?;
        let consumer = engine
            .env()
            .service(bindings::CONSUMER)
            .map_err(|e| Error::Binding { name: bindings::CONSUMER, cause: e.to_string() })?;
        baton_edge::meter::subrequest();
        let mut response = consumer.fetch_request(request).await?;
        match response.status_code() {
            200 => Ok(response.json::<Value>().await.ok().and_then(|answer| answer.get("ended").cloned())),
            status => Err(Error::Internal(format!(
                "consumer answered {status}: {}",
                response.text().await.unwrap_or_default()
            ))),
        }
    };
    match with_timeout(call, limit).await {
        Some(Ok(ended)) => ended.filter(|summary| !summary.is_null()),
        None => None,
        Some(Err(e)) => {
            worker::console_warn!("hand-over to the consumer failed ({e}); queueing the first wave");
            // Attempts the consumer did claim are acknowledged as duplicates there.
            if let Err(e) = engine.send_tasks(tasks).await {
                worker::console_error!("first wave not queued either ({e}); the poller dispatches it");
            }
            None
        }
    }
}

/// Polls D1 (the authority) until the run ends or the deadline (ms) passes; the interval
/// grows from 2 ms to 100 ms so short runs answer fast and long waits stay cheap.
async fn wait_for_end(engine: &Engine<'_>, run_id: &str, deadline: u64) -> Result<Loaded> {
    let mut interval = 2u64;
    loop {
        let loaded = engine.load(run_id).await?.ok_or_else(|| Error::NotFound { what: format!("run {run_id}") })?;
        if loaded.status()?.is_terminal() || clock::now_ms() >= deadline {
            return Ok(loaded);
        }
        Delay::from(Duration::from_millis(interval)).await;
        interval = (interval * 3 / 2).min(100);
    }
}

async fn resolve_plan(engine: &Engine<'_>, plan_id: &str, client_id: &str) -> Result<Plan> {
    engine.plan_for_client(plan_id, client_id).await?.ok_or_else(|| Error::BadRequest {
        code: "unknown_plan",
        message: format!("no plan named {plan_id:?} (built-in: standard-v1, quick-v1; or one you created)"),
        details: json!({ "field": "plan_id", "default": DEFAULT_PLAN_ID }),
    })
}

/// Loads a run the client may see; another client's run is 404, as if it did not exist.
pub(super) async fn visible_run(engine: &Engine<'_>, run_id: &str, client_id: &str) -> Result<Loaded> {
    let not_found = || Error::NotFound { what: format!("run {run_id}") };
    if run_id.parse::<RunId>().is_err() {
        return Err(not_found());
    }
    match engine.load(run_id).await? {
        Some(loaded) if loaded.run.client_id == client_id => Ok(loaded),
        _ => Err(not_found()),
    }
}

/// `GET /api/orchestration/runs/:run_id`
pub async fn get(req: Request, env: &Env, run_id: &str) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let engine = Engine::new(env).await?;
    let loaded = visible_run(&engine, run_id, &client_id).await?;
    let summary = summary_of(&loaded)?;
    let service_results: Vec<Value> = loaded
        .steps
        .iter()
        .map(|s| {
            json!({
                "service": s.service,
                "status": s.status,
                "wave": s.wave,
                "attempts": s.attempts,
                "duration_ms": s.duration_ms,
                "error": s.error,
                "progress": s.progress.as_deref().and_then(|p| serde_json::from_str::<Value>(p).ok()),
            })
        })
        .collect();
    let diagnosis = engine.diagnosis_of(&loaded).await?;
    http::json(
        200,
        &json!({
            "success": true,
            "summary": summary,
            "status": loaded.run.status,
            "partial": loaded.run.partial.map(|p| p != 0),
            "service_results": service_results,
            "diagnosis": diagnosis,
            "terminal": loaded.status().map(RunStatus::is_terminal).unwrap_or(false),
        }),
    )
}

/// `GET /api/orchestration/runs/:run_id/events`
pub async fn events(req: Request, env: &Env, run_id: &str) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let engine = Engine::new(env).await?;
    visible_run(&engine, run_id, &client_id).await?;
    let events = engine.run_events(run_id).await?;
    http::json(200, &json!({ "success": true, "run_id": run_id, "events": events }))
}
