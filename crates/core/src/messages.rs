//! The only shapes sent on queues. Each carries `v` (currently 1) so a consumer can tell a
//! message it does not understand from a malformed one. Decoding never panics: a bad body is a
//! typed [`MessageError`], which the consumer records and acks (a poison message).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{RunId, ServiceSlug};

/// The message version this crate writes and reads.
pub const MESSAGE_VERSION: u32 = 1;

/// Dispatch one attempt of one step (queue `baton-tasks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMessage {
    /// Always [`MESSAGE_VERSION`].
    pub v: u32,
    /// The run.
    pub run_id: RunId,
    /// The step.
    pub service: ServiceSlug,
    /// Which attempt this is (1-based); a consumer ignores a message for an attempt that is
    /// not the step's current one.
    pub attempt: u32,
}

impl TaskMessage {
    /// A version-1 task message.
    pub fn new(run_id: RunId, service: ServiceSlug, attempt: u32) -> Self {
        TaskMessage { v: MESSAGE_VERSION, run_id, service, attempt }
    }

    /// Decodes a queue body.
    pub fn decode(body: &Value) -> Result<Self, MessageError> {
        let message: TaskMessage = decode_versioned(MessageType::Task, body)?;
        if message.attempt == 0 {
            return Err(MessageError::InvalidField {
                message: MessageType::Task,
                field: "attempt",
                reason: "must be at least 1".into(),
            });
        }
        Ok(message)
    }

    /// Decodes a queue body given as text.
    pub fn decode_str(body: &str) -> Result<Self, MessageError> {
        TaskMessage::decode(&parse(MessageType::Task, body)?)
    }
}

/// Analyse a run whose fan-in was claimed (queue `llm-analysis`). `traceId` is the run id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisMessage {
    /// Always [`MESSAGE_VERSION`].
    pub v: u32,
    /// The run (`traceId` on the wire, as the poller's design names it).
    #[serde(rename = "traceId")]
    pub trace_id: RunId,
    /// Whether some steps did not complete (absent → false).
    #[serde(default)]
    pub partial: bool,
    /// The steps that did not complete (absent → empty).
    #[serde(default)]
    pub missing: Vec<ServiceSlug>,
}

impl AnalysisMessage {
    /// A version-1 analysis message.
    pub fn new(trace_id: RunId, partial: bool, missing: Vec<ServiceSlug>) -> Self {
        AnalysisMessage { v: MESSAGE_VERSION, trace_id, partial, missing }
    }

    /// Decodes a queue body.
    pub fn decode(body: &Value) -> Result<Self, MessageError> {
        decode_versioned(MessageType::Analysis, body)
    }

    /// Decodes a queue body given as text.
    pub fn decode_str(body: &str) -> Result<Self, MessageError> {
        AnalysisMessage::decode(&parse(MessageType::Analysis, body)?)
    }
}

/// Which message an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// [`TaskMessage`].
    Task,
    /// [`AnalysisMessage`].
    Analysis,
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MessageType::Task => "task message",
            MessageType::Analysis => "analysis message",
        })
    }
}

/// A queue body that is not a message this crate understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not JSON, not an object, or missing/mistyped fields.
    #[error("malformed {message}: {reason}")]
    Malformed {
        /// Which message.
        message: MessageType,
        /// What is wrong (the decoder's words).
        reason: String,
    },
    /// `v` missing or not a number.
    #[error("{message} has no numeric version field v")]
    MissingVersion {
        /// Which message.
        message: MessageType,
    },
    /// A version this crate does not read.
    #[error("{message} has version {found}, expected {MESSAGE_VERSION}")]
    UnsupportedVersion {
        /// Which message.
        message: MessageType,
        /// The version found.
        found: u64,
    },
    /// A field with an invalid value.
    #[error("{message}: {field} {reason}")]
    InvalidField {
        /// Which message.
        message: MessageType,
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn parse(message: MessageType, body: &str) -> Result<Value, MessageError> {
    serde_json::from_str(body).map_err(|e| MessageError::Malformed { message, reason: e.to_string() })
}

fn decode_versioned<T: DeserializeOwned>(message: MessageType, body: &Value) -> Result<T, MessageError> {
    let Value::Object(fields) = body else {
        return Err(MessageError::Malformed { message, reason: "not a JSON object".into() });
    };
    let version = fields.get("v").and_then(Value::as_u64).ok_or(MessageError::MissingVersion { message })?;
    if version != u64::from(MESSAGE_VERSION) {
        return Err(MessageError::UnsupportedVersion { message, found: version });
    }
    T::deserialize(body).map_err(|e| MessageError::Malformed { message, reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run_id() -> RunId {
        "run_1732350000000_a1b2c3d4e5f60718".parse().unwrap()
    }

    #[test]
    fn task_message_wire_shape() {
        let message = TaskMessage::new(run_id(), "technical-seo".parse().unwrap(), 2);
        let json = serde_json::to_value(&message).unwrap();
        assert_eq!(
            json,
            json!({"v": 1, "run_id": "run_1732350000000_a1b2c3d4e5f60718", "service": "technical-seo", "attempt": 2})
        );
        assert_eq!(TaskMessage::decode(&json).unwrap(), message);
        assert_eq!(TaskMessage::decode_str(&json.to_string()).unwrap(), message);
    }

    #[test]
    fn analysis_message_uses_camel_case_trace_id_and_optional_fields() {
        let message = AnalysisMessage::new(run_id(), true, vec!["vitals-monitor".parse().unwrap()]);
        let json = serde_json::to_value(&message).unwrap();
        assert_eq!(
            json,
            json!({"v": 1, "traceId": "run_1732350000000_a1b2c3d4e5f60718", "partial": true, "missing": ["vitals-monitor"]})
        );
        let minimal =
            AnalysisMessage::decode(&json!({"v": 1, "traceId": "run_1732350000000_a1b2c3d4e5f60718"})).unwrap();
        assert_eq!(minimal, AnalysisMessage::new(run_id(), false, vec![]));
    }

    fn check_task(body: &str, expected: &str) {
        assert_eq!(TaskMessage::decode_str(body).unwrap_err().to_string(), expected, "{body}");
    }

    #[test]
    fn malformed_messages_give_typed_errors() {
        check_task("not json", "malformed task message: expected ident at line 1 column 2");
        check_task("[1]", "malformed task message: not a JSON object");
        check_task(r#"{"run_id": "x"}"#, "task message has no numeric version field v");
        check_task(r#"{"v": 2}"#, "task message has version 2, expected 1");
        check_task(r#"{"v": 1, "service": "a", "attempt": 1}"#, "malformed task message: missing field `run_id`");
        check_task(
            r#"{"v": 1, "run_id": "nope", "service": "a", "attempt": 1}"#,
            "malformed task message: invalid run id \"nope\": must look like run_{13-digit ms}_{16 hex} (or an execution id)",
        );
        check_task(
            r#"{"v": 1, "run_id": "run_1732350000000_a1b2c3d4e5f60718", "service": "a", "attempt": 0}"#,
            "task message: attempt must be at least 1",
        );
        let error = AnalysisMessage::decode(&json!({"v": 1, "traceId": 5})).unwrap_err();
        assert!(matches!(error, MessageError::Malformed { message: MessageType::Analysis, .. }), "{error:?}");
    }
}
