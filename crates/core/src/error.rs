//! The crate's error type: one variant per module area, each carrying that area's typed error.

use crate::config::ConfigError;
use crate::delegation::DelegationError;
use crate::ids::IdError;
use crate::messages::MessageError;
use crate::plan::PlanProblems;
use crate::rate_limit::RateLimitError;
use crate::request::RequestProblems;
use crate::retry::RetryPolicyError;
use crate::signature::SignatureError;
use crate::state::{IllegalTransition, ParseStatusError};
use crate::template::TemplateError;
use crate::time::TimeError;

/// Anything core can refuse. Every variant names the offending field or value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A malformed identifier.
    #[error(transparent)]
    Id(#[from] IdError),
    /// A malformed timestamp.
    #[error(transparent)]
    Time(#[from] TimeError),
    /// A plan draft with problems (all of them).
    #[error(transparent)]
    Plan(#[from] PlanProblems),
    /// A master template that cannot be compiled.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A state-machine move that is not allowed.
    #[error(transparent)]
    Transition(#[from] IllegalTransition),
    /// An unknown status text.
    #[error(transparent)]
    Status(#[from] ParseStatusError),
    /// An invalid retry policy.
    #[error(transparent)]
    Retry(#[from] RetryPolicyError),
    /// An invalid configuration value or override.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A queue body that is not a valid message.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// An invalid request (all its problems).
    #[error(transparent)]
    Request(#[from] RequestProblems),
    /// A callback signature that does not verify.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// An invalid `API_DELEGATIONS`.
    #[error(transparent)]
    Delegation(#[from] DelegationError),
    /// An invalid `RATE_LIMITS`.
    #[error(transparent)]
    RateLimit(#[from] RateLimitError),
}

/// Core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Stable machine code for the area, e.g. `invalid_plan` (finer codes live on the inner errors).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Id(_) => "invalid_id",
            Error::Time(_) => "invalid_timestamp",
            Error::Plan(_) => "invalid_plan",
            Error::Template(_) => "invalid_template",
            Error::Transition(_) => "illegal_transition",
            Error::Status(_) => "unknown_status",
            Error::Retry(_) => "invalid_retry_policy",
            Error::Config(_) => "invalid_config",
            Error::Message(_) => "invalid_message",
            Error::Request(_) => "invalid_request",
            Error::Signature(_) => "invalid_signature",
            Error::Delegation(_) => "invalid_delegations",
            Error::RateLimit(_) => "invalid_rate_limits",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ServiceSlug;

    fn parse_slug(text: &str) -> Result<ServiceSlug> {
        Ok(text.parse::<ServiceSlug>()?)
    }

    #[test]
    fn module_errors_convert_and_keep_their_message() {
        let error = parse_slug("Nope").unwrap_err();
        assert_eq!(error.code(), "invalid_id");
        assert_eq!(
            error.to_string(),
            "invalid service slug \"Nope\": contains 'N' at position 0; allowed: a-z 0-9 _ - ."
        );
    }
}
