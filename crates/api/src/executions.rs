//! `POST /execute`'s body.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use serde_json::Value;

use crate::Object;

/// How soon an execution is admitted, before others that wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    Normal,
    High,
    Critical,
}

/// A pipeline execution to submit: a master template and its parameters.
// Core checks the values together, listing every problem, so `template_name`, `parameters` and
// `priority` are decoded loosely here and described exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("required" = ["template_name"]))]
pub struct Execute {
    /// The master template the key-account service supplies.
    #[serde(default)]
    #[schemars(extend("pattern" = "^[A-Za-z0-9_-]{1,64}$"))]
    pub template_name: String,
    /// At most 32 KiB; `parameters.domain` names the domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Object>")]
    pub parameters: Option<Value>,
    /// Optional; must be the token's client (or one it may act for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The same request id is the same execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub request_id: Option<String>,
    /// Default `normal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Priority>")]
    pub priority: Option<String>,
}
