//! Webhooks: a client's URL told when its runs end. Each delivery is a JSON `POST` signed
//! with the webhook's secret:
//!
//! - [`TIMESTAMP_HEADER`]: milliseconds since the epoch when it was sent;
//! - [`SIGNATURE_HEADER`]: `v1=` and the lowercase hex HMAC-SHA256, keyed with the secret, of
//!   `{timestamp}.{body}`;
//! - [`ID_HEADER`] (the delivery's id, the same on every attempt) and [`EVENT_HEADER`].
//!
//! A receiver checks the signature with [`verify`] (or its own HMAC) and refuses timestamps far
//! from its clock. A delivery is tried until the receiver answers 2xx, with a backoff between
//! attempts ([`retry_delay_seconds`]), at most [`MAX_ATTEMPTS`] times; then it is dead-lettered
//! and recorded as failed.

use serde::{Deserialize, Serialize};

use crate::signature::{constant_time_eq, hmac_sha256};
use crate::state::{status_text, RunKind};
use crate::time::Millis;

/// Header carrying the sending time (ms since the epoch).
pub const TIMESTAMP_HEADER: &str = "X-Baton-Webhook-Timestamp";
/// Header carrying the signature (`v1=` + lowercase hex).
pub const SIGNATURE_HEADER: &str = "X-Baton-Webhook-Signature";
/// Header carrying the delivery's id.
pub const ID_HEADER: &str = "X-Baton-Webhook-Id";
/// Header carrying the event's name.
pub const EVENT_HEADER: &str = "X-Baton-Webhook-Event";
/// Attempts per delivery. The webhook queue's `max_retries` in the wrangler configs is this
/// less one, so the queue dead-letters a delivery after its last attempt.
pub const MAX_ATTEMPTS: u32 = 6;
/// The longest wait between two attempts: one hour.
pub const MAX_RETRY_DELAY_SECONDS: u32 = 3600;
/// How long one attempt may take, request and answer: 10 s.
pub const ATTEMPT_TIMEOUT_MS: u64 = 10_000;

/// What a webhook is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A diagnostic run ended (completed, failed, timed out or cancelled).
    #[serde(rename = "run.finished")]
    RunFinished,
    /// An execution (a master template's pipeline run) ended.
    #[serde(rename = "execution.finished")]
    ExecutionFinished,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 2] = [Event::RunFinished, Event::ExecutionFinished];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::RunFinished => "run.finished",
            Event::ExecutionFinished => "execution.finished",
        }
    }

    /// Reads a name.
    pub fn parse(text: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == text)
    }

    /// The event of a run of `kind` ending.
    pub fn of_run_kind(kind: RunKind) -> Event {
        match kind {
            RunKind::Pipeline => Event::ExecutionFinished,
            RunKind::Diagnostic => Event::RunFinished,
        }
    }
}

/// Where a delivery stands: `webhook_deliveries.status`, `pending` → `succeeded` | `failed`.
/// Serialises lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not yet answered with a 2xx; attempts continue.
    Pending,
    /// An attempt was answered with a 2xx.
    Succeeded,
    /// Its attempts are spent, or its webhook is gone.
    Failed,
}

impl DeliveryStatus {
    /// Every status, pending first.
    pub const ALL: [DeliveryStatus; 3] = [DeliveryStatus::Pending, DeliveryStatus::Succeeded, DeliveryStatus::Failed];

    /// The lowercase text (as stored in D1 and sent in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }
}

status_text!(DeliveryStatus, "webhook delivery status");

/// The queue message that asks for one attempt of a delivery (its content is in D1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryMessage {
    /// Message version.
    pub v: u32,
    /// The delivery.
    pub delivery_id: String,
}

impl DeliveryMessage {
    /// The current version.
    pub const VERSION: u32 = 1;

    /// A message for `delivery_id`.
    pub fn new(delivery_id: impl Into<String>) -> Self {
        DeliveryMessage { v: Self::VERSION, delivery_id: delivery_id.into() }
    }
}

/// The signature header's value for `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: Millis, body: &[u8]) -> String {
    format!("v1={}", hex::encode(mac(secret, timestamp, body)))
}

fn mac(secret: &str, timestamp: Millis, body: &[u8]) -> [u8; 32] {
    let mut message = format!("{}.", timestamp.as_u64()).into_bytes();
    message.extend_from_slice(body);
    hmac_sha256(secret.as_bytes(), &message)
}

/// Whether `signature` (the header) signs `body` at `timestamp` (the header, parsed) with
/// `secret`, and `timestamp` is within `max_skew_ms` of `now`.
pub fn verify(secret: &str, timestamp: Millis, signature: &str, body: &[u8], now: Millis, max_skew_ms: u64) -> bool {
    let skew = if timestamp > now { timestamp.since(now) } else { now.since(timestamp) };
    let Some(claimed) = signature.trim().strip_prefix("v1=").and_then(|h| hex::decode(h).ok()) else {
        return false;
    };
    skew <= max_skew_ms && constant_time_eq(&claimed, &mac(secret, timestamp, body))
}

/// How long to wait after failed attempt `attempt` (1-based) before the next: `base_seconds`
/// doubled at each attempt, at most [`MAX_RETRY_DELAY_SECONDS`]; `None` after the last.
pub fn retry_delay_seconds(attempt: u32, base_seconds: u32) -> Option<u32> {
    if attempt >= MAX_ATTEMPTS {
        return None;
    }
    let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
    Some(base_seconds.max(1).saturating_mul(factor).min(MAX_RETRY_DELAY_SECONDS))
}

/// Why a webhook URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not an absolute URL.
    #[error("`url` is not an absolute URL: {0}")]
    Invalid(String),
    /// Not `https` (nor an allowed local `http`).
    #[error("`url` must be https (http only to localhost or 127.0.0.1, where this deployment allows it)")]
    NotHttps,
    /// Carries credentials.
    #[error("`url` must not carry a user name or password")]
    Credentials,
    /// Longer than 2048 characters.
    #[error("`url` is longer than 2048 characters")]
    TooLong,
}

/// Checks a webhook URL: absolute, `https`, no credentials; `http` only to `localhost` or
/// `127.0.0.1`, and only when `allow_http_localhost` (a local stack).
pub fn validate_url(text: &str, allow_http_localhost: bool) -> Result<(), UrlError> {
    if text.len() > 2048 {
        return Err(UrlError::TooLong);
    }
    let url = url::Url::parse(text).map_err(|e| UrlError::Invalid(e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    let local = matches!(url.host_str(), Some("localhost" | "127.0.0.1"));
    match url.scheme() {
        "https" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        "http" if allow_http_localhost && local => Ok(()),
        _ => Err(UrlError::NotHttps),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ParseStatusError;

    #[test]
    fn delivery_statuses_round_trip_through_text() {
        let texts: Vec<&str> = DeliveryStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(texts, ["pending", "succeeded", "failed"]);
        for status in DeliveryStatus::ALL {
            assert_eq!(status.as_str().parse::<DeliveryStatus>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
            assert_eq!(serde_json::from_value::<DeliveryStatus>(status.as_str().into()).unwrap(), status);
        }
        assert_eq!(
            "delivered".parse::<DeliveryStatus>(),
            Err(ParseStatusError { what: "webhook delivery status", value: "delivered".into() })
        );
        assert_eq!(
            "Pending".parse::<DeliveryStatus>().unwrap_err().to_string(),
            "unknown webhook delivery status \"Pending\""
        );
        assert!(serde_json::from_value::<DeliveryStatus>("delivered".into()).is_err());
    }

    const NOW: Millis = Millis::new(1_732_350_000_000);

    #[test]
    fn the_documented_test_vector_holds() {
        let body = br#"{"event":"run.finished"}"#;
        assert_eq!(
            sign("whsec_test", NOW, body),
            "v1=589832f931863fc8badaaa19d432c9f7fef70146605bcc305dcf2da0ea96029c"
        );
    }

    #[test]
    fn a_signature_verifies_only_for_its_secret_body_and_time() {
        let body = br#"{"event":"run.finished","data":{}}"#;
        let signature = sign("s3cret", NOW, body);
        assert!(verify("s3cret", NOW, &signature, body, NOW, 300_000));
        assert!(verify("s3cret", NOW, &signature.to_uppercase().replace("V1=", "v1="), body, NOW, 300_000));
        assert!(!verify("other", NOW, &signature, body, NOW, 300_000));
        assert!(!verify("s3cret", NOW, &signature, b"{}", NOW, 300_000));
        assert!(!verify("s3cret", NOW.saturating_add(1), &signature, body, NOW, 300_000), "another timestamp");
        assert!(!verify("s3cret", NOW, &signature, body, NOW.saturating_add(300_001), 300_000), "too old");
        assert!(!verify("s3cret", NOW, signature.trim_start_matches("v1="), body, NOW, 300_000));
    }

    #[test]
    fn retries_back_off_and_stop_after_the_last_attempt() {
        assert_eq!(retry_delay_seconds(1, 10), Some(10));
        assert_eq!(retry_delay_seconds(2, 10), Some(20));
        assert_eq!(retry_delay_seconds(5, 10), Some(160));
        assert_eq!(retry_delay_seconds(MAX_ATTEMPTS, 10), None);
        assert_eq!(retry_delay_seconds(5, 1000), Some(MAX_RETRY_DELAY_SECONDS));
        assert_eq!(retry_delay_seconds(1, 0), Some(1));
    }

    #[test]
    fn webhook_urls_must_be_https_unless_local_http_is_allowed() {
        assert_eq!(validate_url("https://hooks.example.com/baton", false), Ok(()));
        assert_eq!(validate_url("http://hooks.example.com/baton", true), Err(UrlError::NotHttps));
        assert_eq!(validate_url("http://127.0.0.1:9000/hook", false), Err(UrlError::NotHttps));
        assert_eq!(validate_url("http://127.0.0.1:9000/hook", true), Ok(()));
        assert_eq!(validate_url("http://localhost/hook", true), Ok(()));
        assert_eq!(validate_url("ftp://example.com", true), Err(UrlError::NotHttps));
        assert_eq!(validate_url("https://user:pw@example.com", false), Err(UrlError::Credentials));
        assert!(matches!(validate_url("not a url", true), Err(UrlError::Invalid(_))));
    }

    #[test]
    fn events_are_named_after_the_kind_of_run() {
        assert_eq!(Event::of_run_kind(RunKind::Diagnostic), Event::RunFinished);
        assert_eq!(Event::of_run_kind(RunKind::Pipeline), Event::ExecutionFinished);
        assert_eq!(Event::parse("execution.finished"), Some(Event::ExecutionFinished));
        assert_eq!(Event::parse("run.started"), None);
        assert_eq!(serde_json::to_string(&Event::RunFinished).unwrap(), r#""run.finished""#);
    }
}
