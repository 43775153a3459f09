//! `POST /api/orchestration/run`'s body.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Object;

/// A run to start: a website's domain, checked by a plan's services.
// `website_id` and `domain` are required, but default to empty when decoded: core reports a
// missing one with the request's other problems.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("required" = ["website_id", "domain"]))]
pub struct StartRun {
    /// The site the run is for.
    #[serde(default)]
    #[schemars(extend("pattern" = "^[A-Za-z0-9_.:-]{1,128}$"))]
    pub website_id: String,
    /// A hostname (a URL is reduced to its host).
    #[serde(default)]
    #[schemars(extend("pattern" = "^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?[.][a-z]{2,10}$"))]
    pub domain: String,
    /// Default `standard-v1`. A built-in plan or one of yours (`[a-z0-9_-]{1,64}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["standard-v1", "quick-v1", null]))]
    pub plan_id: Option<String>,
    /// Passed to every step; at most 90 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Object>,
    /// The same key returns the same run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub idempotency_key: Option<String>,
    /// The client this run is for, when the token may act for others (`API_DELEGATIONS`);
    /// otherwise your own or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::request::{validate_run_request, RunRequestDraft};
    use proptest::prelude::*;

    const WEBSITE_ID: &str = "[A-Za-z0-9_.:-]{1,128}";
    const DOMAIN: &str = "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?[.][a-z]{2,10}";

    proptest! {
        #[test]
        fn every_run_the_schema_allows_is_valid(
            website_id in proptest::string::string_regex(WEBSITE_ID).unwrap(),
            domain in proptest::string::string_regex(DOMAIN).unwrap(),
        ) {
            let draft = RunRequestDraft { website_id, domain, plan_id: None, idempotency_key: None };
            prop_assert!(validate_run_request(&draft).is_ok(), "{:?}", validate_run_request(&draft).err());
        }
    }

    #[test]
    fn the_patterns_tested_are_the_schemas() {
        let schema = serde_json::to_value(schemars::schema_for!(StartRun)).unwrap();
        assert_eq!(schema["properties"]["website_id"]["pattern"], format!("^{WEBSITE_ID}$"));
        assert_eq!(schema["properties"]["domain"]["pattern"], format!("^{DOMAIN}$"));
    }
}
