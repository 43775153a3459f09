//! `POST /api/orchestration/runs/cancel` and `.../runs/retry`: the body (a filter of the
//! caller's runs, a page size, a cursor) and the answer (the runs acted on, those skipped with
//! the reason, the cursor of the next page).

use baton_core::bulk::BulkDraft;
use baton_core::state::RunStatus;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::Success;

/// A field that may be absent but not `null`: a filter field given must name something.
fn given<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Which of your runs to act on. At least one field: a filter with none is refused, so acting
/// on every run is asked for with `"all": true`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1))]
pub struct RunsFilter {
    /// Only runs in this status. Cancel takes runs in progress and retry ended runs: a status
    /// the action does not apply to matches no run.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "given")]
    #[schemars(with = "RunStatus")]
    pub status: Option<RunStatus>,
    /// Only runs of this plan.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "given")]
    #[schemars(with = "String", extend("pattern" = "^[a-z0-9_-]{1,64}$"))]
    pub plan_id: Option<String>,
    /// Only this site's runs.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "given")]
    #[schemars(with = "String", extend("pattern" = "^[A-Za-z0-9_.:-]{1,128}$"))]
    pub website_id: Option<String>,
    /// Only runs created at this instant or later (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "given")]
    #[schemars(with = "crate::Instant")]
    pub created_after: Option<String>,
    /// Only runs created before this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "given")]
    #[schemars(with = "crate::Instant")]
    pub created_before: Option<String>,
    /// `true`: every run of yours the action applies to (alone, or with other fields).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "given")]
    #[schemars(with = "bool", extend("const" = true))]
    pub all: Option<bool>,
}

/// The body of `POST /runs/cancel` and `POST /runs/retry`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRuns {
    /// Required, with at least one field (core refuses an empty one naming `filter`).
    pub filter: RunsFilter,
    /// Matching runs taken by this request, 1–100 (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::whole_number")]
    #[schemars(with = "Option<i64>", range(min = 1, max = 100))]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous answer (absent, null or empty: from the newest run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = CURSOR_PATTERN))]
    pub cursor: Option<String>,
}

impl BulkRuns {
    /// The body as core validates it.
    pub fn draft(&self) -> BulkDraft {
        let f = self.filter.clone();
        BulkDraft {
            status: f.status,
            plan_id: f.plan_id,
            website_id: f.website_id,
            created_after: f.created_after,
            created_before: f.created_before,
            all: f.all,
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }
}

/// A cursor as `GET /runs` and the bulk actions hand it out (or empty).
pub const CURSOR_PATTERN: &str =
    "^([0-9]{1,16}_(run_[0-9]{1,19}_[0-9a-f]{16}|exec_[0-9]{1,19}_[0-9a-f]{12})(_s([1-9]|[1-5][0-9]|6[0-3]))?)?$";

/// The answer of a bulk action (200): what became of each matching run of this page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunsActed {
    pub success: Success,
    /// `cancel` or `retry`.
    pub action: String,
    /// How many runs were cancelled (or retried).
    pub acted: u32,
    /// The runs cancelled (or retried), newest first.
    pub run_ids: Vec<String>,
    /// The matching runs left as they were, each with the reason.
    pub skipped: Vec<RunSkipped>,
    /// Pass back as `cursor` for the next page of matching runs; null when none is left.
    pub next_cursor: Option<String>,
}

/// A matching run a bulk action left as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunSkipped {
    pub run_id: String,
    /// `already_ended`, `in_progress`, `nothing_to_retry`, `execution`, `gone` (archived or
    /// deleted meanwhile), `changed`, `over_quota` or `failed`.
    pub code: String,
    /// Why, for people.
    pub reason: String,
}

impl<'de> Deserialize<'de> for Success {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match bool::deserialize(d)? {
            true => Ok(Success),
            false => Err(serde::de::Error::custom("success is true")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;
    use baton_core::bulk::validate_bulk;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_filter_field_may_be_absent_not_null() {
        let e = decode::<BulkRuns>(json!({"limit": 5})).unwrap_err();
        assert_eq!((e.code, e.field.as_str()), ("missing_field", "filter"));
        let body: BulkRuns = decode(json!({"filter": {"status": "failed"}, "cursor": null})).unwrap();
        assert_eq!(body.filter.status, Some(RunStatus::Failed));
        let e = decode::<BulkRuns>(json!({"filter": {"plan_id": null}})).unwrap_err();
        assert_eq!((e.code, e.path.as_deref()), ("invalid_field", Some("filter.plan_id")));
        let e = decode::<BulkRuns>(json!({"filter": {"all": true, "everything": 1}})).unwrap_err();
        assert_eq!((e.code, e.path.as_deref()), ("unknown_field", Some("filter.everything")));
        let e = decode::<BulkRuns>(json!({"filter": {"status": "done"}})).unwrap_err();
        assert_eq!((e.code, e.path.as_deref()), ("invalid_field", Some("filter.status")));
    }

    #[test]
    fn the_schema_states_the_rules() {
        let schema = serde_json::to_value(schemars::schema_for!(BulkRuns)).unwrap();
        assert_eq!(schema["required"], json!(["filter"]));
        let filter = &schema["$defs"]["RunsFilter"];
        assert_eq!(filter["minProperties"], 1);
        assert_eq!(filter["additionalProperties"], false);
        assert_eq!(filter["properties"]["all"]["const"], true);
        assert_eq!(schema["properties"]["cursor"]["pattern"], CURSOR_PATTERN);
    }

    const PLAN_ID: &str = "[a-z0-9_-]{1,64}";
    const WEBSITE_ID: &str = "[A-Za-z0-9_.:-]{1,128}";

    proptest! {
        /// A body the schema allows (here: the id patterns, any instant, any limit in range)
        /// is valid.
        #[test]
        fn every_filter_the_schema_allows_is_valid(
            plan_id in proptest::option::of(proptest::string::string_regex(PLAN_ID).unwrap()),
            website_id in proptest::string::string_regex(WEBSITE_ID).unwrap(),
            after in proptest::option::of((0i64..=9999, 1u32..=12, 1u32..=28, -23i32..=23)),
            limit in proptest::option::of(1i64..=100),
        ) {
            let created_after = after.map(|(y, m, d, h)| format!("{y:04}-{m:02}-{d:02}T00:00:00.5{h:+03}:00"));
            let body = BulkRuns {
                filter: RunsFilter { plan_id, website_id: Some(website_id), created_after, ..RunsFilter::default() },
                limit,
                cursor: None,
            };
            let d = body.draft();
            prop_assert!(validate_bulk(&d).is_ok(), "{:?}", validate_bulk(&d).err());
        }
    }
}
