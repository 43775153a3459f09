//! The webhooks service ([`Webhooks`], reached as `engine.webhooks()`): a client's URLs told,
//! signed, when its runs end — creating, listing and deleting them, their delivery logs and
//! replays, and the consumer's delivery attempts.
//!
//! A run's ending writes, in its own batch, one delivery per webhook of the client subscribed
//! to the event ([`Outbox`]): the run ends with its deliveries recorded, or neither happens,
//! and a racing writer whose ending lost writes none. The writer that won then sends a
//! [`DeliveryMessage`] per delivery on the webhook queue ([`Engine::after_ending`]); a send
//! that fails is recorded on the delivery. The consumer makes one attempt per message
//! ([`Webhooks::deliver`]): a signed `POST` bounded by [`webhook::ATTEMPT_TIMEOUT_MS`],
//! each attempt recorded; anything but a 2xx is retried by the queue with core's backoff, and
//! after [`webhook::MAX_ATTEMPTS`] the queue dead-letters the message and the delivery is
//! recorded as failed ([`Webhooks::dead_lettered`]).

use std::time::Duration;

use baton_core::shard::Shard;
use baton_core::time::Millis;
use baton_core::trace::{self, SpanOf};
use baton_core::webhook::{self, DeliveryMessage, DeliveryStatus, Event};
use serde_json::{json, Value};
use worker::{Fetch, Headers, Method, Request, RequestInit};

use super::run::{summary_of, Engine, Loaded};
use crate::concurrency::with_timeout;
use crate::d1::webhooks::{self as rows, AttemptRow, DeliveryRow, WebhookRow};
use crate::{bindings, clock, queues, settings, Error, Result};

pub use crate::d1::webhooks::{AttemptRow as WebhookAttempt, DeliveryRow as WebhookDelivery, WebhookRow as Webhook};

/// Webhooks per client.
pub const MAX_WEBHOOKS_PER_CLIENT: u32 = 10;
/// Deliveries shown per page of a delivery log.
pub const DELIVERY_LOG_LIMIT: u32 = 50;
/// Longest error text kept per attempt.
const MAX_ERROR_CHARS: usize = 300;

/// What an attempt of a delivery came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx, or there was nothing to do (already settled, unknown).
    Done,
    /// Try again in `delay_seconds`.
    Retry { delay_seconds: u32 },
}

/// A fresh id in `shard` (a `_s{k}` suffix, none for shard 0): a delivery's queue message
/// carries only its id, and the id says which database holds it.
fn new_id(prefix: &str, now: Millis, shard: Shard) -> Result<String> {
    Ok(format!("{prefix}_{:013}_{}{}", now.as_u64(), hex::encode(clock::random_bytes::<8>()?), shard.id_suffix()))
}

fn cut(text: &str) -> String {
    text.chars().take(MAX_ERROR_CHARS).collect()
}

/// The webhooks service: a client's webhooks, their deliveries, and the attempts to deliver
/// them. Reached through [`Engine::webhooks`].
#[derive(Clone, Copy)]
pub struct Webhooks<'e> {
    engine: &'e Engine<'e>,
}

impl Engine<'_> {
    /// The webhooks service, working with this engine.
    pub fn webhooks(&self) -> Webhooks<'_> {
        Webhooks { engine: self }
    }
}

impl Webhooks<'_> {
    /// Creates a webhook for `client_id` on `events` (all, if empty); its secret is generated
    /// here and shown once, in the answer. The URL is checked by core (https; local http only
    /// where `WEBHOOK_ALLOW_HTTP_LOCALHOST` allows it).
    pub async fn create(&self, client_id: &str, url: &str, events: &[Event]) -> Result<WebhookRow> {
        webhook::validate_url(url, settings::webhook_allow_http_localhost(self.engine.env()))
            .map_err(|e| Error::bad_request("invalid_url", "url", e.to_string()))?;
        if rows::of_client(&self.engine.db, client_id, MAX_WEBHOOKS_PER_CLIENT).await?.len() as u32
            >= MAX_WEBHOOKS_PER_CLIENT
        {
            return Err(Error::Conflict(format!("at most {MAX_WEBHOOKS_PER_CLIENT} webhooks per client")));
        }
        let now = self.engine.now();
        let events: Vec<&str> = if events.is_empty() {
            Event::ALL.iter().map(|e| e.as_str()).collect()
        } else {
            events.iter().map(|e| e.as_str()).collect()
        };
        let row = WebhookRow {
            webhook_id: new_id("wh", now, self.engine.shard())?,
            client_id: client_id.to_string(),
            url: url.to_string(),
            secret: format!("whsec_{}", hex::encode(clock::random_bytes::<24>()?)),
            events: serde_json::to_string(&events).map_err(|e| Error::Internal(e.to_string()))?,
            created_at: now.as_u64() as i64,
        };
        rows::insert(&self.engine.db, &row).await?;
        Ok(row)
    }

    /// `client_id`'s webhooks.
    pub async fn list(&self, client_id: &str) -> Result<Vec<WebhookRow>> {
        rows::of_client(&self.engine.db, client_id, MAX_WEBHOOKS_PER_CLIENT).await
    }

    /// One of `client_id`'s webhooks (another client's is 404).
    pub async fn get(&self, client_id: &str, webhook_id: &str) -> Result<WebhookRow> {
        rows::get(&self.engine.db, client_id, webhook_id)
            .await?
            .ok_or_else(|| Error::NotFound { what: format!("webhook {webhook_id}") })
    }

    /// Deletes one of `client_id`'s webhooks; 404 if there is none.
    pub async fn delete(&self, client_id: &str, webhook_id: &str) -> Result<()> {
        match rows::delete(&self.engine.db, client_id, webhook_id).await? {
            true => Ok(()),
            false => Err(Error::NotFound { what: format!("webhook {webhook_id}") }),
        }
    }

    /// One of `client_id`'s webhooks' latest deliveries, newest first, with their attempts.
    pub async fn deliveries(&self, client_id: &str, webhook_id: &str) -> Result<(Vec<DeliveryRow>, Vec<AttemptRow>)> {
        self.get(client_id, webhook_id).await?;
        rows::deliveries(&self.engine.db, webhook_id, DELIVERY_LOG_LIMIT).await
    }

    /// Sends one of a webhook's deliveries again, as a new delivery with the same payload
    /// (`replay_of` names the original).
    pub async fn replay(&self, client_id: &str, webhook_id: &str, delivery_id: &str) -> Result<DeliveryRow> {
        self.get(client_id, webhook_id).await?;
        let original = rows::delivery(&self.engine.db, delivery_id)
            .await?
            .filter(|d| d.webhook_id == webhook_id && d.client_id == client_id)
            .ok_or_else(|| Error::NotFound { what: format!("delivery {delivery_id}") })?;
        let now = self.engine.now().as_u64() as i64;
        let replay = DeliveryRow {
            delivery_id: new_id("whd", self.engine.now(), self.engine.shard())?,
            status: DeliveryStatus::Pending,
            attempts: 0,
            last_status_code: None,
            last_error: None,
            replay_of: Some(original.delivery_id.clone()),
            created_at: now,
            updated_at: now,
            delivered_at: None,
            ..original
        };
        self.engine.db.batch(vec![rows::insert_delivery(&self.engine.db, &replay)?]).await?;
        let queue = queues::producer(self.engine.env(), bindings::WEBHOOK_QUEUE)?;
        queues::send(&queue, &DeliveryMessage::new(&replay.delivery_id)).await?;
        Ok(replay)
    }

    /// One attempt of a delivery: a signed `POST` of its payload to its webhook, bounded in
    /// time, recorded whatever it comes to.
    pub async fn deliver(&self, delivery_id: &str) -> Result<DeliveryOutcome> {
        let Some((delivery, hook)) = rows::delivery_with_target(&self.engine.db, delivery_id).await? else {
            return Ok(DeliveryOutcome::Done);
        };
        if let Some(run_id) = &delivery.run_id {
            crate::meter::attribute(run_id);
        }
        if delivery.status != DeliveryStatus::Pending {
            return Ok(DeliveryOutcome::Done);
        }
        let Some(hook) = hook else {
            rows::fail(&self.engine.db, delivery_id, "the webhook was deleted", self.engine.now().as_u64() as i64)
                .await?;
            return Ok(DeliveryOutcome::Done);
        };
        let attempt = delivery.attempts + 1;
        let started = self.engine.now();
        let answer = post_signed(&hook, &delivery, started).await;
        let finished = self.engine.now();
        let (status_code, error) = match &answer {
            Ok(status) if (200..300).contains(status) => (Some(i64::from(*status)), None),
            Ok(status) => (Some(i64::from(*status)), Some(format!("HTTP {status}"))),
            Err(e) => (None, Some(cut(e))),
        };
        let succeeded = status_code.is_some_and(|s| (200..300).contains(&s));
        let row = AttemptRow {
            delivery_id: delivery_id.to_string(),
            attempt,
            at: started.as_u64() as i64,
            status_code,
            error,
            duration_ms: finished.since(started) as i64,
        };
        rows::record_attempt(&self.engine.db, &row, succeeded).await?;
        if succeeded {
            return Ok(DeliveryOutcome::Done);
        }
        let base = settings::webhook_retry_base_seconds(self.engine.env());
        let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
        // Past the last attempt the queue dead-letters the message; the delay only spaces it.
        let delay_seconds = webhook::retry_delay_seconds(attempt, base).unwrap_or(base);
        Ok(DeliveryOutcome::Retry { delay_seconds })
    }

    /// A delivery whose message exhausted its attempts: recorded as failed.
    pub async fn dead_lettered(&self, delivery_id: &str) -> Result<()> {
        let Some(delivery) = rows::delivery(&self.engine.db, delivery_id).await? else { return Ok(()) };
        let last = delivery.last_error.as_deref().unwrap_or("none");
        let reason = cut(&format!("gave up after {} attempts (dead-lettered); last error: {last}", delivery.attempts));
        rows::fail(&self.engine.db, delivery_id, &reason, self.engine.now().as_u64() as i64).await
    }
}

/// The trace context a delivery carries: its own span in its run's trace, whose position the
/// (signed) payload gives (`data.traceparent`, `data.tracestate`). None for a payload
/// without it.
fn delivery_trace(delivery: &DeliveryRow) -> Vec<(&'static str, String)> {
    let payload: Value = serde_json::from_str(&delivery.payload).unwrap_or(Value::Null);
    let data = &payload["data"];
    let Some(run) = data["traceparent"].as_str().and_then(|tp| trace::parse(tp, data["tracestate"].as_str()).ok())
    else {
        return Vec::new();
    };
    let span = SpanOf::Delivery(&delivery.delivery_id).id(run.trace_id, delivery.run_id.as_deref().unwrap_or(""));
    let mut headers = vec![(trace::TRACEPARENT, trace::traceparent(run.trace_id, span, run.sampled))];
    if let Some(state) = run.state {
        headers.push((trace::TRACESTATE, state));
    }
    headers
}

/// Posts a delivery's payload to its webhook, signed at `now`; the answer's status, or why
/// there was none. Bounded by [`webhook::ATTEMPT_TIMEOUT_MS`]: past it the request is aborted.
async fn post_signed(hook: &WebhookRow, delivery: &DeliveryRow, now: Millis) -> Result<u16, String> {
    let headers = Headers::new();
    let body = delivery.payload.as_str();
    let set = |name: &str, value: &str| headers.set(name, value).map_err(|e| e.to_string());
    set("Content-Type", "application/json")?;
    set("User-Agent", "Baton-Webhooks/1")?;
    set(webhook::ID_HEADER, &delivery.delivery_id)?;
    set(webhook::EVENT_HEADER, &delivery.event)?;
    set(webhook::TIMESTAMP_HEADER, &now.as_u64().to_string())?;
    set(webhook::SIGNATURE_HEADER, &webhook::sign(&hook.secret, now, body.as_bytes()))?;
    for (name, value) in delivery_trace(delivery) {
        set(name, &value)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let controller = worker::AbortController::default();
    let raw: worker::web_sys::RequestInit = (&init).into();
    let signal: &worker::web_sys::AbortSignal = &controller.signal();
    raw.set_signal(Some(signal));
    let request = worker::web_sys::Request::new_with_str_and_init(&hook.url, &raw)
        .map(Request::from)
        .map_err(|_| "the webhook URL does not make a request".to_string())?;
    crate::meter::subrequest();
    let exchange = async {
        let mut response = Fetch::Request(request).send().await.map_err(|e| format!("network error: {e}"))?;
        let status = response.status_code();
        // Read (and drop) the answer so the connection is released.
        let _ = response.text().await;
        Ok::<u16, String>(status)
    };
    let limit = Duration::from_millis(webhook::ATTEMPT_TIMEOUT_MS);
    match with_timeout(exchange, limit).await {
        Some(answer) => answer,
        None => {
            controller.abort();
            Err(format!("no answer within {} ms", webhook::ATTEMPT_TIMEOUT_MS))
        }
    }
}

/// A run's ending's side of webhooks: its deliveries are written with it ([`Outbox`]) and
/// queued once the ending stands.
impl Engine<'_> {
    /// Queues the deliveries an ending wrote. Best effort: a delivery whose message cannot be
    /// sent is recorded as failed (its log says so, and a replay sends it).
    pub(super) async fn queue_deliveries(&self, run_id: &str, deliveries: &[String]) {
        if deliveries.is_empty() {
            return;
        }
        let messages: Vec<DeliveryMessage> = deliveries.iter().map(DeliveryMessage::new).collect();
        let sent = match queues::producer(self.env(), bindings::WEBHOOK_QUEUE) {
            Ok(queue) => queues::send_all(&queue, &messages).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            worker::console_warn!("run {run_id}: webhook deliveries not queued: {e}");
            let now = self.now().as_u64() as i64;
            for id in deliveries {
                let _ = rows::fail(&self.db, id, &cut(&format!("not queued: {e}")), now).await;
            }
        }
    }
}

/// The webhook deliveries of a run's ending, written in the ending's own batch
/// ([`rows::insert_ending_deliveries`]): a run that ends has its deliveries recorded with it,
/// and only the writer whose ending stands queues them.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// A candidate id per webhook the client may have, oldest webhook first.
    ids: Vec<String>,
}

impl Outbox {
    /// The outbox of an ending at `now`: a fresh candidate delivery id per webhook a client
    /// may have.
    pub(crate) fn fresh(now: Millis, shard: Shard) -> Result<Outbox> {
        let random = clock::random_bytes::<{ 8 * MAX_WEBHOOKS_PER_CLIENT as usize }>()?;
        let ids = random
            .chunks(8)
            .map(|bytes| format!("whd_{:013}_{}{}", now.as_u64(), hex::encode(bytes), shard.id_suffix()))
            .collect();
        Ok(Outbox { ids })
    }

    /// The insert of the deliveries of `ended`, written only if the run carries `token`.
    pub(super) fn statement(
        &self,
        db: &crate::d1::Db,
        ended: &Loaded,
        token: i64,
        now: Millis,
    ) -> Result<crate::d1::Stmt> {
        let event = Event::of_run_kind(ended.run.kind);
        let summary = serde_json::to_value(summary_of(ended)?).map_err(|e| Error::Internal(e.to_string()))?;
        let trace = ended.run.trace();
        let data = json!({ "run_id": ended.run.run_id, "kind": ended.run.kind, "status": ended.run.status,
                           "summary": summary, "traceparent": trace.traceparent(SpanOf::Run),
                           "tracestate": trace.state });
        rows::insert_ending_deliveries(
            db,
            &rows::EndingDeliveries {
                run_id: &ended.run.run_id,
                client_id: &ended.run.client_id,
                event: event.as_str(),
                token,
                ids: &self.ids,
                created: &now.to_rfc3339(),
                data: &data.to_string(),
                now: now.as_u64() as i64,
            },
        )
    }

    /// The ids of the deliveries written, from the statement's `changes`.
    pub fn written(&self, changes: u64) -> Vec<String> {
        self.ids.iter().take(usize::try_from(changes).unwrap_or(usize::MAX)).cloned().collect()
    }
}
