//! `POST /internal/drive`: the orchestrator hands over the first wave of a run whose client
//! waits for it (`?wait`). The attempts run here at once, as their task messages would, and
//! what they make ready runs here too; the answer comes when there is nothing left to run
//! here. Signed with `WORKER_SECRET` like result callbacks.
//!
//! The work is handed to `ctx.wait_until`, so a caller that stops waiting (its `?wait`
//! expired, its client left) does not cut it short.

use baton_core::messages::TaskMessage;
use baton_edge::concurrency::oneshot;
use baton_edge::engine::Engine;

use crate::tasks::{send_task, Disposition};
use baton_edge::{auth, http, Error, Result};
use serde_json::{json, Value};
use worker::{Context, Env, Request, Response};

/// The route.
pub const PATH: &str = "/internal/drive";

pub async fn handle(mut req: Request, env: Env, ctx: &Context) -> Result<Response> {
    let body = http::read_body(&mut req).await?;
    auth::verify_signed(&req, &env, &body, "drive request")?;
    let tasks = decode(&http::parse_json(&body)?)?;
    let count = tasks.len();
    let (done, finished) = oneshot();
    ctx.wait_until(async move {
        match Engine::new(&env).await {
            Ok(engine) => {
                let outcomes = crate::tasks::run_batch(&engine, &tasks).await;
                for (task, outcome) in tasks.iter().zip(outcomes) {
                    match outcome {
                        Ok(Disposition::Ack) => {}
                        Ok(Disposition::RetryAfter(seconds)) => send_task(&engine, task, seconds).await,
                        Err(e) => {
                            worker::console_warn!("drive: {}/{}: {e}; queueing it", task.run_id, task.service);
                            send_task(&engine, task, 1).await;
                        }
                    }
                }
            }
            Err(e) => {
                worker::console_error!("drive: cannot start ({e}); queueing {count} tasks");
                if let Err(e) = send(&env, &tasks).await {
                    worker::console_error!("drive: not queued either ({e}); the poller dispatches them");
                }
            }
        }
        done.send(());
    });
    finished.await;
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

async fn send(env: &Env, tasks: &[TaskMessage]) -> Result<()> {
    baton_edge::queues::send_all(&baton_edge::queues::task_queue(env)?, tasks).await
}
