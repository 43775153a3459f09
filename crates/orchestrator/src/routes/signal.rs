//! `POST /api/orchestration/runs/:run_id/events/:name`: an event for a run's wait step, from
//! the run's client (another client's run is 404), or from a sender without an API token that
//! signs it with one of the client's `EVENT_KEYS` (`X-Baton-Timestamp`, `X-Baton-Signature`,
//! purpose `event`, over this path and the body). The body is the payload (any JSON; empty:
//! `null`). Refused, keeping nothing, when the name is malformed (400 `invalid_event`), no wait
//! step of the plan waits for it (404), the payload does not hold the wait's `match` (409,
//! naming the field) or is too large (413), or the run has ended (409). A second delivery of
//! the same event is `already_delivered`.

use baton_api::runs::EventDelivered;
use baton_api::Success;
use baton_core::signal::{self, EventRefused, MAX_PAYLOAD_BYTES};
use baton_core::signature::{self, Purpose};
use baton_edge::engine::Engine;
use baton_edge::{auth, http, settings, Error, Result};
use serde_json::Value;
use worker::{Env, Request, Response};

use super::runs::visible_run;

/// `POST /api/orchestration/runs/:run_id/events/:name`
pub async fn deliver(mut req: Request, env: &Env, run_id: &str, name: &str) -> Result<Response> {
    let signed = http::bearer_token(&req).is_none() && req.headers().has(signature::SIGNATURE_HEADER).unwrap_or(false);
    let caller = if signed { None } else { Some(auth::caller(&req, env)?) };
    let body = http::read_body(&mut req).await?;
    let payload: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Error::bad_request("invalid_json", "body", format!("the payload is not JSON: {e}")))?
    };
    let engine = Engine::for_id(env, run_id).await?;
    let loaded = match &caller {
        Some(caller) => visible_run(&engine, run_id, caller).await?,
        None => {
            // The run is read first: its client's keys check the signature (a miss is the same
            // 404 for anyone).
            let loaded = engine.load(run_id).await?.ok_or_else(|| Error::NotFound { what: format!("run {run_id}") })?;
            let keys = settings::event_keys(env, &loaded.run.client_id);
            auth::verify_request(&req, &keys, Purpose::Event, &body, "signed event")?;
            loaded
        }
    };
    let step = signal::accept(&loaded.plan, loaded.status()?, name, &payload)
        .map_err(|refused| refusal(run_id, refused))?
        .service
        .to_string();
    let delivered = engine.deliver_event(loaded, name, &payload).await?;
    let step_status = delivered
        .after
        .step(&step)
        .map(|row| row.status)
        .ok_or_else(|| Error::Internal(format!("run {run_id} has no step {step}")))?;
    http::json(
        200,
        &EventDelivered {
            success: Success,
            run_id: run_id.to_string(),
            event: name.to_string(),
            status: if delivered.new { "delivered" } else { "already_delivered" }.to_string(),
            step,
            step_status,
        },
    )
}

fn refusal(run_id: &str, refused: EventRefused) -> Error {
    let message = format!("run {run_id}: {refused}");
    match &refused {
        EventRefused::Closed(_) | EventRefused::Mismatch { .. } => Error::Conflict(message),
        EventRefused::TooLarge(_) => Error::PayloadTooLarge { limit: MAX_PAYLOAD_BYTES },
        EventRefused::NoWait { event, waits, .. } => {
            Error::NotFound { what: format!("a wait step for event {event:?} in run {run_id} (it waits for: {waits})") }
        }
        EventRefused::BadName(_) => Error::bad_request(refused.code(), "name", message),
    }
}
