//! The edge error type and its single mapping to HTTP responses.

use baton_api::error::ErrorAnswer;
use serde_json::{json, Value};
use worker::Response;

/// Everything that can go wrong at the edge. Handlers return it; [`Error::to_response`]
/// turns it into the one JSON error shape the API promises.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; `details` names the offending field(s).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String, details: Value },
    /// No or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed to do this (e.g. act for another client); `field` is
    /// the part of the request that asks for it.
    #[error("{message}")]
    Forbidden { message: String, field: &'static str },
    /// Unknown route, or a resource the caller may not see.
    #[error("{what} not found")]
    NotFound { what: String },
    /// The route exists with other methods.
    #[error("method {method} not allowed")]
    MethodNotAllowed { method: String, allowed: Vec<&'static str> },
    /// The body exceeds the limit.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The request conflicts with current state (e.g. cancelling a finished run).
    #[error("{0}")]
    Conflict(String),
    /// The client is over its rate limit (`RATE_LIMITS`): answered with `Retry-After`.
    #[error("rate limit exceeded: at most {requests} requests per {period_s} s for client {client}; retry in {retry_after_s} s")]
    RateLimited { client: String, requests: u32, period_s: u32, retry_after_s: u32 },
    /// A binding is missing or misconfigured.
    #[error("binding {name} unavailable: {cause}")]
    Binding { name: String, cause: String },
    /// D1 failed.
    #[error("storage failed: {0}")]
    Storage(String),
    /// KV failed.
    #[error("kv failed: {0}")]
    Kv(String),
    /// A queue send failed.
    #[error("queue send failed: {0}")]
    Queue(String),
    /// A service we called failed.
    #[error("upstream {service} failed: {message}")]
    Upstream { service: String, message: String },
    /// Anything else; the message is logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
    /// A client's quota would be exceeded.
    #[error("{0}")]
    Quota(baton_core::quota::QuotaExceeded),
    /// An archived run whose object is not in the archive (deleted from R2 by hand, or lost).
    #[error("run {run_id} is archived, but its archive object is missing")]
    ArchiveMissing { run_id: String },
}

/// How long a client over a quota that clears by itself is asked to wait.
pub const QUOTA_RETRY_AFTER_SECONDS: u32 = 30;

/// Edge result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A 400 with a stable code and the field it is about.
    pub fn bad_request(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        Error::BadRequest { code, message: message.into(), details: json!({ "field": field }) }
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest { .. } => 400,
            Error::Unauthorized(_) => 401,
            Error::Forbidden { .. } => 403,
            Error::NotFound { .. } | Error::ArchiveMissing { .. } => 404,
            Error::MethodNotAllowed { .. } => 405,
            Error::Conflict(_) => 409,
            Error::PayloadTooLarge { .. } => 413,
            Error::RateLimited { .. } => 429,
            Error::Upstream { .. } => 502,
            Error::Binding { .. } | Error::Storage(_) | Error::Kv(_) | Error::Queue(_) => 503,
            Error::Internal(_) => 500,
            Error::Quota(exceeded) if exceeded.clears() => 429,
            Error::Quota(_) => 403,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest { code, .. } => code,
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden { .. } => "forbidden",
            Error::NotFound { .. } => "not_found",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::Conflict(_) => "conflict",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::RateLimited { .. } => "rate_limited",
            Error::Upstream { .. } => "upstream_failed",
            Error::Binding { .. } => "binding_unavailable",
            Error::Storage(_) => "storage_unavailable",
            Error::Kv(_) => "kv_unavailable",
            Error::Queue(_) => "queue_unavailable",
            Error::Internal(_) => "internal_error",
            Error::Quota(_) => "quota_exceeded",
            Error::ArchiveMissing { .. } => "archive_missing",
        }
    }

    fn public_message(&self) -> String {
        match self {
            // Causes of server-side failures are logged, never echoed to the caller.
            Error::Internal(_) => "internal error".into(),
            Error::Storage(_) => "storage is unavailable, nothing was written; retry later".into(),
            Error::Kv(_) | Error::Queue(_) | Error::Binding { .. } => {
                format!("{} is unavailable; retry later", self.code().trim_end_matches("_unavailable"))
            }
            // What the service said goes to the log only.
            Error::Upstream { service, .. } => format!("service {service} failed; retry later"),
            other => other.to_string(),
        }
    }

    fn details(&self) -> Value {
        match self {
            Error::BadRequest { details, .. } => details.clone(),
            Error::Forbidden { field, .. } => json!({ "field": field }),
            Error::MethodNotAllowed { allowed, .. } => json!({ "allowed": allowed }),
            Error::PayloadTooLarge { limit } => json!({ "limit_bytes": limit }),
            Error::Quota(exceeded) => json!({ "quota": exceeded.quota() }),
            Error::RateLimited { requests, period_s, retry_after_s, .. } => {
                json!({ "requests": requests, "period_s": period_s, "retry_after_s": retry_after_s })
            }
            _ => Value::Null,
        }
    }

    /// The JSON error response: `{"success": false, "error": {code, message, details}}`.
    pub fn to_response(&self) -> worker::Result<Response> {
        if self.status() >= 500 {
            worker::console_error!("{self}");
        }
        let body = ErrorAnswer::new(self.code(), self.public_message(), self.details());
        let mut response = Response::from_json(&body)?.with_status(self.status());
        if let Error::MethodNotAllowed { allowed, .. } = self {
            response.headers_mut().set("Allow", &allowed.join(", "))?;
        }
        if let Error::RateLimited { retry_after_s, .. } = self {
            response.headers_mut().set("Retry-After", &retry_after_s.to_string())?;
        } else if self.status() == 429 {
            response.headers_mut().set("Retry-After", &QUOTA_RETRY_AFTER_SECONDS.to_string())?;
        }
        Ok(response)
    }
}

impl From<worker::Error> for Error {
    fn from(e: worker::Error) -> Self {
        Error::Internal(e.to_string())
    }
}
