//! What a failed attempt reports: the kind of error (which decides whether it is retried)
//! and its message. A leaf module: plans (retry policies) and step states both build on it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What kind of error a service reported; decides whether it is retried.
/// Serialises as its text; unknown texts are kept as [`ErrorKind::Custom`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Worth retrying (5xx, network).
    Transient,
    /// Never retried (4xx, bad configuration).
    Permanent,
    /// The service asked us to slow down (429).
    RateLimited,
    /// The handshake was not accepted (at capacity).
    Rejected,
    /// An attempt ran past its timeout.
    Timeout,
    /// Any other kind a service reports, kept verbatim (retried unless the policy lists it).
    Custom(String),
}

impl ErrorKind {
    /// The text form: `transient`, `permanent`, `rate_limited`, `rejected`, `timeout`, or the custom text.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Custom(text) => text,
        }
    }
}

impl From<&str> for ErrorKind {
    fn from(text: &str) -> Self {
        match text {
            "transient" => ErrorKind::Transient,
            "permanent" => ErrorKind::Permanent,
            "rate_limited" => ErrorKind::RateLimited,
            "rejected" => ErrorKind::Rejected,
            "timeout" => ErrorKind::Timeout,
            other => ErrorKind::Custom(other.to_string()),
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(ErrorKind::from(String::deserialize(deserializer)?.as_str()))
    }
}

/// An error a step attempt ended with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    /// Its kind.
    pub kind: ErrorKind,
    /// Human message (cut to [`MAX_ERROR_MESSAGE_CHARS`](crate::state::MAX_ERROR_MESSAGE_CHARS) when recorded).
    pub message: String,
}

impl StepError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StepError { kind, message: message.into() }
    }

    /// A retryable error.
    pub fn transient(message: impl Into<String>) -> Self {
        StepError::new(ErrorKind::Transient, message)
    }

    /// A non-retryable error.
    pub fn permanent(message: impl Into<String>) -> Self {
        StepError::new(ErrorKind::Permanent, message)
    }
}
