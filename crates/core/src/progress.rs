//! What a service's answer to `GET /api/progress/{executionId}` means for the attempt it
//! accepted (the progress protocol): Baton asks at intervals
//! ([`crate::messages::progress_poll_interval_ms`]) until the attempt ends one way or
//! another, or its deadline passes.
//!
//! | answer                                              | verdict                              |
//! |-----------------------------------------------------|--------------------------------------|
//! | 2xx, `status: "completed"` (`output` inline or not) | [`Verdict::Completed`]               |
//! | 2xx, `status: "failed"`                             | [`Verdict::Failed`], transient if `error.retryable` (or `retryable`) is true or `error.kind` is `transient`, else permanent |
//! | 2xx, `status: "running"` with a numeric `progress`  | [`Verdict::Running`], a heartbeat    |
//! | anything else (no progress, 4xx/5xx, not JSON)      | [`Verdict::NoSign`]: nothing learnt  |

use serde_json::Value;

use crate::failure::{ErrorKind, StepError};

/// What an answer to a progress question means.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The work is done. `output`: the result, if the answer carries it (otherwise it is
    /// fetched from the service's `GET /api/result/{executionId}`).
    Completed {
        /// The result, when inline.
        output: Option<Value>,
        /// Usage the service reports, if any.
        usage: Option<Value>,
    },
    /// The work failed.
    Failed(StepError),
    /// It is running: a heartbeat. `fraction`: how far along, 0..=1, when given as such.
    Running {
        /// The progress value as given.
        progress: Value,
    },
    /// Nothing learnt (why, for the record).
    NoSign(String),
}

/// Reads a progress answer (`status` code, body parsed as JSON when it was JSON).
pub fn read(status: u16, body: &Value) -> Verdict {
    if !(200..300).contains(&status) {
        return Verdict::NoSign(format!("progress answered {status}"));
    }
    match body.get("status").and_then(Value::as_str) {
        Some("completed") => Verdict::Completed {
            output: body.get("output").filter(|o| !o.is_null()).cloned(),
            usage: body.get("usage").filter(|u| !u.is_null()).cloned(),
        },
        Some("failed") => {
            let error = &body["error"];
            let retryable = error["retryable"].as_bool().or(body["retryable"].as_bool()).unwrap_or(false)
                || error["kind"].as_str() == Some("transient");
            let message = error["message"]
                .as_str()
                .or(error.as_str())
                .or(body["message"].as_str())
                .unwrap_or("the service reported a failure")
                .to_string();
            let kind = if retryable { ErrorKind::Transient } else { ErrorKind::Permanent };
            Verdict::Failed(StepError::new(kind, format!("progress: {message}")))
        }
        Some("running") | Some("processing") | Some("accepted") => match body.get("progress") {
            Some(progress) if progress.is_number() => Verdict::Running { progress: progress.clone() },
            _ => Verdict::NoSign("running without progress".into()),
        },
        Some(other) => Verdict::NoSign(format!("unknown status {other:?}")),
        None => Verdict::NoSign("no status".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_answer_reads_as_one_verdict() {
        assert_eq!(
            read(200, &json!({"status": "completed", "output": {"a": 1}})),
            Verdict::Completed { output: Some(json!({"a": 1})), usage: None }
        );
        assert_eq!(read(200, &json!({"status": "completed"})), Verdict::Completed { output: None, usage: None });
        assert_eq!(
            read(200, &json!({"status": "running", "progress": 0.4})),
            Verdict::Running { progress: json!(0.4) }
        );
        assert!(matches!(read(200, &json!({"status": "running"})), Verdict::NoSign(_)));
        assert!(matches!(read(503, &json!({"status": "completed"})), Verdict::NoSign(_)));
        assert!(matches!(read(200, &json!("hello")), Verdict::NoSign(_)));
    }

    #[test]
    fn a_failure_is_transient_only_when_the_service_says_so() {
        let kind = |body: Value| match read(200, &body) {
            Verdict::Failed(error) => error.kind,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kind(json!({"status": "failed", "error": {"message": "x", "retryable": true}})),
            ErrorKind::Transient
        );
        assert_eq!(kind(json!({"status": "failed", "error": {"kind": "transient"}})), ErrorKind::Transient);
        assert_eq!(kind(json!({"status": "failed", "retryable": true})), ErrorKind::Transient);
        assert_eq!(kind(json!({"status": "failed", "error": "quota exceeded"})), ErrorKind::Permanent);
    }
}
