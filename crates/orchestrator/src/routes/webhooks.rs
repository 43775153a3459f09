//! Webhooks (`/api/orchestration/webhooks`): a client's URLs told, signed, when its runs and
//! executions end; their delivery log and replays. A client sees only its own.

use baton_api::webhooks::{
    DeliveryAttempt, Webhook, WebhookDeliveries, WebhookDelivery as Delivery, WebhookDraft, WebhookEvent, WebhookList,
    WebhookOne, WebhookReplayed,
};
use baton_api::{Instant, Success};
use baton_core::webhook::Event;
use baton_edge::engine::{Engine, Webhook as WebhookRow, WebhookAttempt, WebhookDelivery};
use baton_edge::{auth, http, Error, Result};
use serde_json::{json, Value};
use worker::{Env, Request, Response};

use super::input;

/// A webhook as its owner sees it; its secret only when it is created.
fn shown(row: &WebhookRow, with_secret: bool) -> Webhook {
    let events: Vec<String> = serde_json::from_str(&row.events).unwrap_or_default();
    Webhook {
        webhook_id: row.webhook_id.clone(),
        url: row.url.clone(),
        events: events.iter().filter_map(|e| WebhookEvent::parse(e)).collect(),
        created_at: Instant::at(row.created_at),
        secret: with_secret.then(|| row.secret.clone()),
    }
}

fn shown_delivery(d: &WebhookDelivery, attempts: &[WebhookAttempt]) -> Delivery {
    let attempt_log = attempts
        .iter()
        .filter(|a| a.delivery_id == d.delivery_id)
        .map(|a| DeliveryAttempt {
            attempt: a.attempt,
            at: Instant::at(a.at),
            status_code: a.status_code,
            error: a.error.clone(),
            duration_ms: a.duration_ms,
        })
        .collect();
    Delivery {
        delivery_id: d.delivery_id.clone(),
        webhook_id: d.webhook_id.clone(),
        event: d.event.clone(),
        run_id: d.run_id.clone(),
        status: d.status.as_str().to_string(),
        attempts: d.attempts,
        last_status_code: d.last_status_code,
        last_error: d.last_error.clone(),
        replay_of: d.replay_of.clone(),
        created_at: Instant::at(d.created_at),
        updated_at: Instant::at(d.updated_at),
        delivered_at: Instant::of(d.delivered_at),
        attempt_log,
        payload: serde_json::from_str::<Value>(&d.payload).unwrap_or(Value::Null),
    }
}

/// `POST /api/orchestration/webhooks` `{url, events?}`
pub async fn create(mut req: Request, env: &Env) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let draft: WebhookDraft = input::decode(http::read_json(&mut req).await?)?;
    let events: Vec<Event> = draft.events.iter().flatten().filter_map(|e| Event::parse(e.as_str())).collect();
    if draft.events.as_ref().is_some_and(Vec::is_empty) {
        return Err(Error::bad_request(
            "invalid_field",
            "events",
            "`events` must list one or more of `run.finished`, `execution.finished`",
        ));
    }
    let engine = Engine::for_client(env, &client_id).await?;
    let row = engine.webhooks().create(&client_id, &draft.url, &events).await?;
    http::json(201, &WebhookOne { success: Success, webhook: shown(&row, true) })
}

/// `GET /api/orchestration/webhooks`
pub async fn list(req: Request, env: &Env) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let engine = Engine::for_client(env, &client_id).await?;
    let webhooks = engine.webhooks().list(&client_id).await?.iter().map(|w| shown(w, false)).collect();
    http::json(200, &WebhookList { success: Success, webhooks })
}

/// `GET /api/orchestration/webhooks/:id`
pub async fn get(req: Request, env: &Env, webhook_id: &str) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let engine = Engine::for_client(env, &client_id).await?;
    let row = engine.webhooks().get(&client_id, webhook_id).await?;
    http::json(200, &WebhookOne { success: Success, webhook: shown(&row, false) })
}

/// `DELETE /api/orchestration/webhooks/:id`
pub async fn delete(req: Request, env: &Env, webhook_id: &str) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let engine = Engine::for_client(env, &client_id).await?;
    engine.webhooks().delete(&client_id, webhook_id).await?;
    http::json(200, &json!({ "success": true, "webhook_id": webhook_id, "deleted": true }))
}

/// `GET /api/orchestration/webhooks/:id/deliveries`: the latest deliveries, newest first,
/// each with every attempt.
pub async fn deliveries(req: Request, env: &Env, webhook_id: &str) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let engine = Engine::for_client(env, &client_id).await?;
    let (deliveries, attempts) = engine.webhooks().deliveries(&client_id, webhook_id).await?;
    let deliveries = deliveries.iter().map(|d| shown_delivery(d, &attempts)).collect();
    http::json(200, &WebhookDeliveries { success: Success, webhook_id: webhook_id.to_string(), deliveries })
}

/// `POST /api/orchestration/webhooks/:id/deliveries/:delivery_id/replay`: sends the delivery's
/// payload again, as a new delivery.
pub async fn replay(req: Request, env: &Env, webhook_id: &str, delivery_id: &str) -> Result<Response> {
    let client_id = auth::client_id(&req, env)?;
    let engine = Engine::for_client(env, &client_id).await?;
    let replay = engine.webhooks().replay(&client_id, webhook_id, delivery_id).await?;
    http::json(202, &WebhookReplayed { success: Success, delivery: shown_delivery(&replay, &[]) })
}
