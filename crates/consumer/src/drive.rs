//! `POST /internal/drive`: the orchestrator hands over the first wave of a run whose client
//! waits for it (`?wait`). The attempts run here at once, as their task messages would, and
//! what they make ready runs here too; the answer comes when there is nothing left to run
//! here. Signed with `WORKER_SECRET` like result callbacks.
//!
//! The body carries the run as the orchestrator just wrote it and its effective
//! configuration, so nothing is read before the claims (which are guarded all the same). The
//! work is handed to `ctx.wait_until`, so a caller that stops waiting (its `?wait` expired,
//! its client left) does not cut it short.

use baton_core::config::{apply_override, Config};
use baton_core::messages::TaskMessage;
use baton_edge::concurrency::oneshot;
use baton_edge::d1::runs::RunRow;
use baton_edge::d1::steps::StepRow;
use baton_edge::engine::{Engine, Loaded};

use crate::tasks::queue_what_remains;
use baton_edge::{auth, http, Error, Result};
use serde_json::{json, Value};
use worker::{Context, Env, Request, Response};

/// The route.
pub const PATH: &str = "/internal/drive";

pub async fn handle(mut req: Request, env: Env, ctx: &Context) -> Result<Response> {
    let body = http::read_body(&mut req).await?;
    auth::verify_signed(&req, &env, &body, "drive request")?;
    let body = http::parse_json(&body)?;
    let tasks = decode(&body)?;
    let written = written_run(&body)?;
    let config = handed_config(&env, &body);
    let count = tasks.len();
    let (done, finished) = oneshot();
    ctx.wait_until(async move {
        let engine = match config {
            Some(config) => Engine::with_config(&env, config),
            None => Engine::new(&env).await,
        };
        match engine {
            Ok(engine) => {
                let outcomes = crate::tasks::run_batch(&engine, &tasks, written.as_ref()).await;
                for (task, outcome) in tasks.iter().zip(outcomes) {
                    queue_what_remains(&engine, task, outcome).await;
                }
            }
            Err(e) => {
                worker::console_error!("drive: cannot start ({e}); queueing {count} tasks");
                if let Err(e) = send(&env, &tasks).await {
                    worker::console_error!("drive: not queued either ({e}); the poller dispatches them");
                }
            }
        }
        let _ = done.send(()); // the caller may have stopped waiting
    });
    finished.await.map_err(|_| Error::Internal("drive: the work ended without finishing".into()))?;
    http::json(200, &json!({ "success": true, "ran": count }))
}

fn decode(body: &Value) -> Result<Vec<TaskMessage>> {
    let tasks = body
        .get("tasks")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::bad_request("missing_field", "tasks", "`tasks` must be an array of task messages"))?;
    tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            TaskMessage::decode(t).map_err(|e| Error::bad_request("invalid_field", "tasks", format!("tasks[{i}]: {e}")))
        })
        .collect()
}

/// The run as the orchestrator just wrote it (`run` + `steps`), if it sent it.
fn written_run(body: &Value) -> Result<Option<Loaded>> {
    let (Some(run), Some(steps)) = (body.get("run"), body.get("steps")) else { return Ok(None) };
    let invalid =
        |field: &str, e: serde_json::Error| Error::bad_request("invalid_field", field, format!("`{field}`: {e}"));
    let run: RunRow = serde_json::from_value(run.clone()).map_err(|e| invalid("run", e))?;
    let steps: Vec<StepRow> = serde_json::from_value(steps.clone()).map_err(|e| invalid("steps", e))?;
    Loaded::from_rows(run, steps).map(Some)
}

/// The orchestrator's effective configuration (`config`, as an override object) on top of
/// this worker's; `None` (read KV as usual) if absent or unusable.
fn handed_config(env: &Env, body: &Value) -> Option<Config> {
    let config = body.get("config")?;
    let base = Config::from_lookup(|key| env.var(key).ok().map(|v| v.to_string())).ok()?;
    apply_override(&base, &config.to_string()).ok()
}

async fn send(env: &Env, tasks: &[TaskMessage]) -> Result<()> {
    baton_edge::queues::send_all(&baton_edge::queues::task_queue(env)?, tasks).await
}
