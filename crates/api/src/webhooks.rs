//! `POST /api/orchestration/webhooks`' body.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The https URLs the schema describes (a subset of those accepted: lower-case host names whose
/// labels start with a letter, so none reads as a malformed IP address, and have no `--`, so
/// none reads as punycode; a path of unreserved characters, so each is a well-formed URI).
const URL_PATTERN: &str = concat!(
    "^https://[a-z][a-z0-9]{0,20}(-[a-z0-9]{1,20}){0,3}([.][a-z][a-z0-9]{0,20}(-[a-z0-9]{1,20}){0,3}){0,5}",
    "(:[0-9]{1,4})?(/[A-Za-z0-9._~/-]*)?$"
);

/// What a webhook is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WebhookEvent {
    /// A run ended.
    #[serde(rename = "run.finished")]
    RunFinished,
    /// An execution ended.
    #[serde(rename = "execution.finished")]
    ExecutionFinished,
}

impl WebhookEvent {
    /// The event named `text`, if any.
    pub fn parse(text: &str) -> Option<WebhookEvent> {
        [WebhookEvent::RunFinished, WebhookEvent::ExecutionFinished].into_iter().find(|e| e.as_str() == text)
    }

    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::RunFinished => "run.finished",
            WebhookEvent::ExecutionFinished => "execution.finished",
        }
    }
}

/// A webhook to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookDraft {
    /// Where deliveries are posted: an https URL (a deployment with
    /// `WEBHOOK_ALLOW_HTTP_LOCALHOST` on also takes http to localhost or 127.0.0.1). At most 2048
    /// characters, without credentials.
    #[schemars(length(max = 2048), extend("pattern" = URL_PATTERN))]
    pub url: String,
    /// What to deliver (default: both).
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub events: Option<Vec<WebhookEvent>>,
}

/// A webhook as its owner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Webhook {
    pub webhook_id: String,
    pub url: String,
    pub events: Vec<WebhookEvent>,
    pub created_at: crate::Instant,
    /// The signing secret: shown once, when the webhook is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub secret: Option<String>,
}

/// One webhook (created or read).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WebhookOne {
    pub success: crate::Success,
    pub webhook: Webhook,
}

/// A client's webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WebhookList {
    pub success: crate::Success,
    pub webhooks: Vec<Webhook>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_delivery_status_schema_lists_core_statuses() {
        let schema = schemars::schema_for!(WebhookDelivery).to_value();
        let core: Vec<&str> = baton_core::webhook::DeliveryStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(schema["properties"]["status"]["enum"], serde_json::json!(core));
    }

    proptest! {
        #[test]
        fn every_url_the_schema_allows_is_accepted(
            url in proptest::string::string_regex(URL_PATTERN.trim_start_matches('^').trim_end_matches('$')).unwrap()
        ) {
            prop_assume!(url.len() <= 2048);
            prop_assert_eq!(baton_core::webhook::validate_url(&url, false), Ok(()), "{}", url);
        }
    }
}

/// One delivery of an ending to a webhook, with every attempt made.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WebhookDelivery {
    /// Also the `X-Baton-Webhook-Id` header, the same on every attempt.
    pub delivery_id: String,
    pub webhook_id: String,
    #[schemars(with = "WebhookEvent")]
    pub event: String,
    pub run_id: Option<String>,
    #[schemars(extend("enum" = ["pending", "succeeded", "failed"]))]
    pub status: String,
    #[schemars(range(min = 0))]
    pub attempts: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    /// The delivery this one replays.
    pub replay_of: Option<String>,
    pub created_at: crate::Instant,
    pub updated_at: crate::Instant,
    pub delivered_at: Option<crate::Instant>,
    pub attempt_log: Vec<DeliveryAttempt>,
    /// The body posted: `{id, event, created_at, data: {run_id, kind, status, summary}}`.
    pub payload: serde_json::Value,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct DeliveryAttempt {
    #[schemars(range(min = 1))]
    pub attempt: i64,
    pub at: crate::Instant,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    #[schemars(range(min = 0))]
    pub duration_ms: i64,
}

/// A webhook's latest deliveries, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WebhookDeliveries {
    pub success: crate::Success,
    pub webhook_id: String,
    pub deliveries: Vec<WebhookDelivery>,
}

/// A delivery sent again, as a new delivery.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WebhookReplayed {
    pub success: crate::Success,
    pub delivery: WebhookDelivery,
}
