//! `POST /internal/drive`: an orchestrator that cannot reach one of the plan's services (it
//! runs the first wave itself otherwise) hands over the first wave of a run whose client waits
//! for it (`?wait`). The attempts run here at once, as their task messages would, and
//! what they make ready runs here too; the answer comes when there is nothing left to run
//! here. Signed with the internal key (`INTERNAL_KEY`), which no service holds.
//!
//! The body carries ids only (the run, its claimed first wave) and the orchestrator's effective
//! configuration; the run, its plan and its parameters are read from D1. The
//! work is handed to `ctx.wait_until`, so a caller that stops waiting (its `?wait` expired,
//! its client left) does not cut it short.

use baton_core::config::{apply_override, Config};
use baton_core::messages::TaskMessage;
use baton_core::time::Millis;
use baton_edge::engine::attempts::{self, run_first_wave, FirstWaveRun};
use baton_edge::engine::summary_of;
use baton_edge::{auth, http, log, Error, Result};
use serde_json::{json, Value};
use worker::{Context, Env, Request, Response};

/// The route.
pub const PATH: &str = baton_edge::engine::DRIVE_PATH;

pub async fn handle(mut req: Request, env: Env, ctx: &Context) -> Result<Response> {
    let body = http::read_body(&mut req).await?;
    auth::verify_internal(&req, &env, &body, "drive request")?;
    let body = http::parse_json(&body)?;
    let tasks = decode(&body)?;
    let run_id = body
        .get("run_id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::bad_request("missing_field", "run_id", "`run_id` must name the run handed over"))?;
    if tasks.iter().any(|task| task.run_id.as_str() != run_id) {
        return Err(Error::bad_request("invalid_field", "tasks", "every task must be of the run handed over"));
    }
    let config = handed_config(&env, &body);
    let count = tasks.len();
    // The run as D1 has it: nothing in the hand-over but ids is trusted.
    let until = handed_until(&env, &body);
    // The run's log lines wait until the orchestrator has the answer for its client.
    let held = log::hold(&run_id);
    let finished = run_first_wave(ctx, &env, config, FirstWaveRun::Read(run_id), tasks, until);
    let ended = finished.await.map_err(|_| Error::Internal("drive: the work ended without finishing".into()))?;
    let summary = ended.as_ref().map(summary_of).transpose()?;
    attempts::release_after_answer(ctx, Some(held));
    http::json(200, &json!({ "success": true, "ran": count, "ended": summary }))
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

/// When the attempts must be let go of: as the orchestrator says (it stops waiting before
/// then), and not before this worker's own time after an answer is up.
fn handed_until(env: &Env, body: &Value) -> Millis {
    let latest = attempts::in_place_until(env, std::time::Duration::ZERO);
    body.get("until").and_then(Value::as_u64).map(Millis::new).map_or(latest, |until| until.max(latest))
}

/// The orchestrator's effective configuration (`config`, as an override object) on top of
/// this worker's; `None` (read KV as usual) if absent or unusable.
fn handed_config(env: &Env, body: &Value) -> Option<Config> {
    let config = body.get("config")?;
    let base = baton_edge::settings::base_config(env).ok()?;
    apply_override(&base, &config.to_string()).ok()
}
