//! The answer of every request that fails: `{"success": false, "error": {code, message, details}}`.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

/// `false`: the `success` of every error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failure;

impl Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(false)
    }
}

impl JsonSchema for Failure {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Failure".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "const": false })
    }
}

/// A request that failed, and why.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorAnswer {
    pub success: Failure,
    pub error: ErrorInfo,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ErrorInfo {
    /// Stable machine-readable code, e.g. `invalid_field`, `not_found`.
    pub code: String,
    /// For people.
    pub message: String,
    /// What the error is about: `field`, and for validation errors `problems[]`, for 405
    /// `allowed`, for 413 `limit_bytes`; otherwise null.
    pub details: Value,
}

impl ErrorAnswer {
    /// The answer of an error with a stable `code`.
    pub fn new(code: &str, message: String, details: Value) -> ErrorAnswer {
        ErrorAnswer { success: Failure, error: ErrorInfo { code: code.to_string(), message, details } }
    }
}
