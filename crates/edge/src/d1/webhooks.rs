//! `webhooks`, `webhook_deliveries` and `webhook_attempts`: a client's webhooks, what is sent
//! to them, and every attempt.

use baton_core::webhook::DeliveryStatus;
use serde::{Deserialize, Serialize};

use super::{literal, Arg, Db, Stmt};
use crate::Result;

/// A webhook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhookRow {
    pub webhook_id: String,
    pub client_id: String,
    pub url: String,
    pub secret: String,
    /// A JSON array of event names.
    pub events: String,
    pub created_at: i64,
}

/// A delivery: one event for one webhook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveryRow {
    pub delivery_id: String,
    pub webhook_id: String,
    pub client_id: String,
    pub event: String,
    pub run_id: Option<String>,
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub replay_of: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub delivered_at: Option<i64>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptRow {
    pub delivery_id: String,
    pub attempt: i64,
    pub at: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

const WEBHOOK_COLUMNS: &str = "webhook_id, client_id, url, secret, events, created_at";
const DELIVERY_COLUMNS: &str = "delivery_id, webhook_id, client_id, event, run_id, payload, status, attempts, \
    last_status_code, last_error, replay_of, created_at, updated_at, delivered_at";

/// Inserts a webhook.
pub async fn insert(db: &Db, w: &WebhookRow) -> Result<()> {
    db.run(
        &format!("INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        &[
            Arg::from(&w.webhook_id),
            Arg::from(&w.client_id),
            Arg::from(&w.url),
            Arg::from(&w.secret),
            Arg::from(&w.events),
            Arg::Int(w.created_at),
        ],
    )
    .await?;
    Ok(())
}

/// `client_id`'s webhooks, oldest first (at most `limit`).
pub async fn of_client(db: &Db, client_id: &str, limit: u32) -> Result<Vec<WebhookRow>> {
    let (rows, _) = db
        .all(
            &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE client_id = ?1 ORDER BY created_at LIMIT ?2"),
            &[Arg::from(client_id), Arg::from(limit)],
        )
        .await?;
    Ok(rows)
}

/// One of `client_id`'s webhooks.
pub async fn get(db: &Db, client_id: &str, webhook_id: &str) -> Result<Option<WebhookRow>> {
    db.first(
        &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE webhook_id = ?1 AND client_id = ?2"),
        &[Arg::from(webhook_id), Arg::from(client_id)],
    )
    .await
}

/// Deletes one of `client_id`'s webhooks; whether it existed. Its pending deliveries are
/// then not attempted (their attempt finds no webhook).
pub async fn delete(db: &Db, client_id: &str, webhook_id: &str) -> Result<bool> {
    let meta = db
        .run(
            "DELETE FROM webhooks WHERE webhook_id = ?1 AND client_id = ?2",
            &[Arg::from(webhook_id), Arg::from(client_id)],
        )
        .await?;
    Ok(meta.changes > 0)
}

/// Inserts a delivery.
pub fn insert_delivery(db: &Db, d: &DeliveryRow) -> Result<Stmt> {
    db.stmt(
        &format!(
            "INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
             ?11, ?12, ?13, ?14)"
        ),
        &[
            Arg::from(&d.delivery_id),
            Arg::from(&d.webhook_id),
            Arg::from(&d.client_id),
            Arg::from(&d.event),
            Arg::from(d.run_id.clone()),
            Arg::from(&d.payload),
            Arg::from(d.status.as_str()),
            Arg::Int(d.attempts),
            Arg::from(d.last_status_code),
            Arg::from(d.last_error.clone()),
            Arg::from(d.replay_of.clone()),
            Arg::Int(d.created_at),
            Arg::Int(d.updated_at),
            Arg::from(d.delivered_at),
        ],
    )
}

/// The deliveries of a run's ending, written in the ending's own batch (an outbox: a run
/// that ends has its deliveries, a run that does not has none): one per webhook of
/// `client_id` subscribed to `event`, only if the run carries `token` (the ending won).
/// The `i`-th webhook (oldest first, at most `limit`) gets the id `ids[i]`; the statement's
/// `changes` says how many were written, so the first `changes` ids are the deliveries. The
/// payload is `{"id", "event", "created_at", "data"}` with `data` as given.
pub struct EndingDeliveries<'a> {
    pub run_id: &'a str,
    pub client_id: &'a str,
    pub event: &'a str,
    pub token: i64,
    /// Candidate delivery ids, oldest webhook first; all of the same length.
    pub ids: &'a [String],
    /// `created_at` of the payload (RFC 3339).
    pub created: &'a str,
    /// The payload's `data`, as JSON text.
    pub data: &'a str,
    pub now: i64,
}

/// The statement of [`EndingDeliveries`].
pub fn insert_ending_deliveries(db: &Db, d: &EndingDeliveries<'_>) -> Result<Stmt> {
    let width = d.ids.first().map_or(0, String::len);
    db.stmt(
        &format!(
            "INSERT INTO webhook_deliveries (delivery_id, webhook_id, client_id, event, run_id, payload, status, \
           attempts, created_at, updated_at) \
         SELECT m.id, m.webhook_id, m.client_id, ?3, ?1, \
           json_object('id', m.id, 'event', ?3, 'created_at', ?7, 'data', json(?8)), {}, 0, ?9, ?9 \
         FROM (SELECT substr(?5, (row_number() OVER (ORDER BY w.created_at, w.webhook_id) - 1) * ?6 + 1, ?6) AS id, \
                 w.webhook_id, w.client_id \
               FROM webhooks w \
               WHERE w.client_id = ?2 AND EXISTS (SELECT 1 FROM json_each(w.events) WHERE value = ?3) \
               ORDER BY w.created_at, w.webhook_id LIMIT ?10) m \
         WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ?1 AND version = ?4)",
            literal(DeliveryStatus::Pending.as_str())
        ),
        &[
            Arg::from(d.run_id),
            Arg::from(d.client_id),
            Arg::from(d.event),
            Arg::Int(d.token),
            Arg::Text(d.ids.concat()),
            Arg::Int(width as i64),
            Arg::from(d.created),
            Arg::from(d.data),
            Arg::Int(d.now),
            Arg::Int(d.ids.len() as i64),
        ],
    )
}

/// A delivery, with its webhook's URL and secret (`None` for those if the webhook is gone).
pub async fn delivery_with_target(db: &Db, delivery_id: &str) -> Result<Option<(DeliveryRow, Option<WebhookRow>)>> {
    let Some(delivery) = delivery(db, delivery_id).await? else { return Ok(None) };
    let webhook = get(db, &delivery.client_id, &delivery.webhook_id).await?;
    Ok(Some((delivery, webhook)))
}

/// A delivery.
pub async fn delivery(db: &Db, delivery_id: &str) -> Result<Option<DeliveryRow>> {
    db.first(
        &format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE delivery_id = ?1"),
        &[Arg::from(delivery_id)],
    )
    .await
}

/// A webhook's deliveries, newest first (at most `limit`), and their attempts.
pub async fn deliveries(db: &Db, webhook_id: &str, limit: u32) -> Result<(Vec<DeliveryRow>, Vec<AttemptRow>)> {
    let results = db
        .batch_rows(vec![
            db.stmt(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = ?1 \
                     ORDER BY created_at DESC, delivery_id DESC LIMIT ?2"
                ),
                &[Arg::from(webhook_id), Arg::from(limit)],
            )?,
            db.stmt(
                "SELECT a.delivery_id, a.attempt, a.at, a.status_code, a.error, a.duration_ms FROM webhook_attempts a \
                 JOIN (SELECT delivery_id FROM webhook_deliveries WHERE webhook_id = ?1 \
                       ORDER BY created_at DESC, delivery_id DESC LIMIT ?2) d ON d.delivery_id = a.delivery_id \
                 ORDER BY a.delivery_id, a.attempt",
                &[Arg::from(webhook_id), Arg::from(limit)],
            )?,
        ])
        .await?;
    let deliveries = results.first().map(|(rows, _)| decode(rows)).transpose()?.unwrap_or_default();
    let attempts = results.get(1).map(|(rows, _)| decode(rows)).transpose()?.unwrap_or_default();
    Ok((deliveries, attempts))
}

/// Records an attempt and its outcome on the delivery, in one transaction: `succeeded` on a
/// 2xx, else still `pending` (the queue retries it). A delivery already settled is left as it
/// is (a duplicate message's attempt is still recorded).
pub async fn record_attempt(db: &Db, attempt: &AttemptRow, succeeded: bool) -> Result<()> {
    let status = if succeeded { DeliveryStatus::Succeeded } else { DeliveryStatus::Pending };
    db.batch(vec![
        db.stmt(
            "INSERT OR REPLACE INTO webhook_attempts (delivery_id, attempt, at, status_code, error, duration_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &[
                Arg::from(&attempt.delivery_id),
                Arg::Int(attempt.attempt),
                Arg::Int(attempt.at),
                Arg::from(attempt.status_code),
                Arg::from(attempt.error.clone()),
                Arg::Int(attempt.duration_ms),
            ],
        )?,
        db.stmt(
            "UPDATE webhook_deliveries SET attempts = MAX(attempts, ?2), last_status_code = ?3, last_error = ?4, \
             status = CASE WHEN status = ?7 THEN ?5 ELSE status END, updated_at = ?6, \
             delivered_at = CASE WHEN ?5 = ?8 AND delivered_at IS NULL THEN ?6 ELSE delivered_at END \
             WHERE delivery_id = ?1",
            &[
                Arg::from(&attempt.delivery_id),
                Arg::Int(attempt.attempt),
                Arg::from(attempt.status_code),
                Arg::from(attempt.error.clone()),
                Arg::from(status.as_str()),
                Arg::Int(attempt.at),
                Arg::from(DeliveryStatus::Pending.as_str()),
                Arg::from(DeliveryStatus::Succeeded.as_str()),
            ],
        )?,
    ])
    .await?;
    Ok(())
}

/// Marks a pending delivery failed (its attempts are spent, or its webhook is gone).
pub async fn fail(db: &Db, delivery_id: &str, error: &str, now: i64) -> Result<()> {
    db.run(
        "UPDATE webhook_deliveries SET status = ?4, last_error = COALESCE(?2, last_error), updated_at = ?3 \
         WHERE delivery_id = ?1 AND status = ?5",
        &[
            Arg::from(delivery_id),
            Arg::from(error),
            Arg::Int(now),
            Arg::from(DeliveryStatus::Failed.as_str()),
            Arg::from(DeliveryStatus::Pending.as_str()),
        ],
    )
    .await?;
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(rows: &[serde_json::Value]) -> Result<Vec<T>> {
    rows.iter()
        .map(|r| serde_json::from_value(r.clone()).map_err(|e| crate::Error::Storage(format!("decoding rows: {e}"))))
        .collect()
}

/// Deletes up to `limit` deliveries that settled (succeeded or failed) before `before`, with
/// their attempt logs (index `webhook_deliveries_settled`): two statements for one batch.
pub fn prune_settled(db: &Db, before: i64, limit: u32) -> Result<Vec<Stmt>> {
    let settled = format!(
        "SELECT delivery_id FROM webhook_deliveries WHERE status <> {} AND updated_at < ?1 ORDER BY updated_at LIMIT ?2",
        literal(DeliveryStatus::Pending.as_str())
    );
    Ok(vec![
        db.stmt(
            &format!("DELETE FROM webhook_attempts WHERE delivery_id IN ({settled})"),
            &[Arg::Int(before), Arg::from(limit)],
        )?,
        db.stmt(
            &format!("DELETE FROM webhook_deliveries WHERE delivery_id IN ({settled})"),
            &[Arg::Int(before), Arg::from(limit)],
        )?,
    ])
}
