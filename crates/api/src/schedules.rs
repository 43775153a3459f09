//! `POST /api/orchestration/schedules`' and `PATCH /api/orchestration/schedules/{id}`'s bodies.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::{Instant, Object};

/// Longest `interval_seconds`: a leap year.
pub const MAX_INTERVAL_SECONDS: i64 = 31_622_400;

/// The cron expressions the schema describes: five fields (minute hour day-of-month month
/// day-of-week), each `*`, `*/step` or a list of values in range, days of the month up to 28 so
/// that every one fires; or a nickname. Core accepts more (ranges, `L`, `#`, `W`).
pub const CRON_PATTERN: &str = concat!(
    "^(@(yearly|annually|monthly|weekly|daily|hourly)|",
    r"(\*(/[1-9][0-9]?)?|[1-5]?[0-9](,[1-5]?[0-9])*) ",
    r"(\*(/[1-9][0-9]?)?|(1?[0-9]|2[0-3])(,(1?[0-9]|2[0-3]))*) ",
    r"(\*(/[1-9][0-9]?)?|([1-9]|1[0-9]|2[0-8])(,([1-9]|1[0-9]|2[0-8]))*) ",
    r"(\*(/[1-9][0-9]?)?|([1-9]|1[0-2])(,([1-9]|1[0-2]))*) ",
    r"(\*(/[1-9][0-9]?)?|[0-6](,[0-6])*))$"
);

/// `timezone`: one of the IANA names core knows, or null.
fn timezone_schema(_: &mut SchemaGenerator) -> Schema {
    let mut names: Vec<serde_json::Value> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name().into()).collect();
    names.push(serde_json::Value::Null);
    json_schema!({ "type": ["string", "null"], "enum": names })
}

/// What the poller does with slots it reached late (an outage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Missed {
    /// Skip them (the default).
    Skip,
    /// Run the latest once.
    Latest,
}

impl Missed {
    /// The policy named `text`, if any.
    pub fn parse(text: &str) -> Option<Missed> {
        [Missed::Skip, Missed::Latest].into_iter().find(|m| m.as_str() == text)
    }

    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::Latest => "latest",
        }
    }
}

/// A schedule: `cron` (with `timezone`) or `interval_seconds`, and the runs it starts.
// `website_id` and `domain` are required, but default to empty when decoded: core reports a
// missing one with the request's other problems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend(
    "required" = ["website_id", "domain"],
    "oneOf" = [
        {"required": ["cron"], "properties": {"cron": {"type": "string"}}},
        {"required": ["interval_seconds"], "properties": {"interval_seconds": {"type": "integer"}}}
    ],
    "not" = {
        "required": ["timezone", "interval_seconds"],
        "properties": {"timezone": {"type": "string"}, "interval_seconds": {"type": "integer"}}
    }
))]
pub struct ScheduleDraft {
    /// A label for people.
    #[serde(default)]
    #[schemars(length(max = 200))]
    pub name: Option<String>,
    /// A cron expression (5 fields: minute hour day-of-month month day-of-week; also `@daily`,
    /// `L`, `#`, `W`), read in `timezone`. Give `cron` or `interval_seconds`.
    #[serde(default)]
    #[schemars(extend("pattern" = CRON_PATTERN))]
    pub cron: Option<String>,
    /// An IANA time zone for `cron` (default `UTC`), e.g. `Europe/Paris`; not with an interval.
    #[serde(default)]
    #[schemars(schema_with = "timezone_schema")]
    pub timezone: Option<String>,
    /// Every so many seconds, counted from the Unix epoch (3600: on the hour, UTC).
    #[serde(default, deserialize_with = "crate::whole_number")]
    #[schemars(with = "Option<i64>", range(min = 1, max = 31_622_400))]
    pub interval_seconds: Option<i64>,
    /// Slots the poller reached late (an outage): `skip` them (default), or run the `latest`
    /// once.
    #[serde(default)]
    pub missed: Option<Missed>,
    /// The runs' website.
    #[serde(default)]
    #[schemars(extend("pattern" = "^[A-Za-z0-9_.:-]{1,128}$"))]
    pub website_id: String,
    /// The runs' domain.
    #[serde(default)]
    #[schemars(extend("pattern" = "^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?[.][a-z]{2,10}$"))]
    pub domain: String,
    /// The runs' plan (default `standard-v1`; built-in or one of yours).
    #[serde(default)]
    #[schemars(extend("enum" = ["standard-v1", "quick-v1", null]))]
    pub plan_id: Option<String>,
    /// The runs' parameters.
    #[serde(default)]
    pub parameters: Option<Object>,
    /// A paused schedule fires nothing; resuming starts from the next slot.
    #[serde(default)]
    pub paused: Option<bool>,
}

/// The fields to change; the others stay. A new timing, or `paused: false`, starts from the
/// first slot after now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("allOf" = [
    {"not": {
        "required": ["cron", "interval_seconds"],
        "properties": {"cron": {"type": "string"}, "interval_seconds": {"type": "integer"}}
    }},
    {"not": {
        "required": ["timezone", "interval_seconds"],
        "properties": {"timezone": {"type": "string"}, "interval_seconds": {"type": "integer"}}
    }}
]))]
pub struct SchedulePatch {
    /// A label for people.
    #[serde(default)]
    #[schemars(length(max = 200))]
    pub name: Option<String>,
    /// A cron expression (5 fields: minute hour day-of-month month day-of-week; also `@daily`,
    /// `L`, `#`, `W`), read in `timezone`. Replaces an interval.
    #[serde(default)]
    #[schemars(extend("pattern" = CRON_PATTERN))]
    pub cron: Option<String>,
    /// An IANA time zone for `cron` (default `UTC`), e.g. `Europe/Paris`; not with an interval.
    #[serde(default)]
    #[schemars(schema_with = "timezone_schema")]
    pub timezone: Option<String>,
    /// Every so many seconds, counted from the Unix epoch. Replaces a cron expression.
    #[serde(default, deserialize_with = "crate::whole_number")]
    #[schemars(with = "Option<i64>", range(min = 1, max = 31_622_400))]
    pub interval_seconds: Option<i64>,
    /// Slots the poller reached late (an outage): `skip` them, or run the `latest` once.
    #[serde(default)]
    pub missed: Option<Missed>,
    /// The runs' website.
    #[serde(default)]
    #[schemars(extend("pattern" = "^[A-Za-z0-9_.:-]{1,128}$"))]
    pub website_id: Option<String>,
    /// The runs' domain.
    #[serde(default)]
    #[schemars(extend("pattern" = "^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?[.][a-z]{2,10}$"))]
    pub domain: Option<String>,
    /// The runs' plan (built-in or one of yours).
    #[serde(default)]
    #[schemars(extend("enum" = ["standard-v1", "quick-v1", null]))]
    pub plan_id: Option<String>,
    /// The runs' parameters.
    #[serde(default)]
    pub parameters: Option<Object>,
    /// `true` pauses, `false` resumes.
    #[serde(default)]
    pub paused: Option<bool>,
}

impl From<ScheduleDraft> for SchedulePatch {
    /// A new schedule is a change of an empty one.
    fn from(d: ScheduleDraft) -> Self {
        SchedulePatch {
            name: d.name,
            cron: d.cron,
            timezone: d.timezone,
            interval_seconds: d.interval_seconds,
            missed: d.missed,
            website_id: Some(d.website_id),
            domain: Some(d.domain),
            plan_id: d.plan_id,
            parameters: d.parameters,
            paused: d.paused,
        }
    }
}

/// A schedule as its owner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Schedule {
    pub schedule_id: String,
    pub name: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub interval_seconds: Option<i64>,
    pub missed: Missed,
    pub website_id: String,
    pub domain: String,
    pub plan_id: String,
    pub parameters: Object,
    pub paused: bool,
    /// The first slot not yet handled; null if the expression names none.
    pub next_slot: Option<Instant>,
    /// The next 3 slots (none while paused).
    pub next_fire_times: Vec<Instant>,
    /// The last slot fired.
    pub last_slot: Option<Instant>,
    /// The run of the last slot fired.
    pub last_run_id: Option<String>,
    /// Why the last fired slot's run did not start, if it did not.
    pub last_error: Option<String>,
    pub created_at: Instant,
    pub updated_at: Instant,
}

/// One schedule (created, read or changed).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ScheduleOne {
    pub success: crate::Success,
    pub schedule: Schedule,
}

/// A page of schedules, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ScheduleList {
    pub success: crate::Success,
    pub schedules: Vec<Schedule>,
    /// Pass it back as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::schedule::timing;
    use proptest::prelude::*;

    /// The pattern without `^` and `$` (proptest draws whole strings from it anyway).
    fn unanchored(pattern: &str) -> &str {
        pattern.trim_start_matches('^').trim_end_matches('$')
    }

    proptest! {
        #[test]
        fn every_cron_the_schema_allows_fires(cron in proptest::string::string_regex(unanchored(CRON_PATTERN)).unwrap()) {
            prop_assert!(timing(Some(&cron), None, None).is_ok(), "{cron}: {:?}", timing(Some(&cron), None, None).err());
        }
    }

    #[test]
    fn an_interval_is_a_whole_number_written_either_way() {
        let decode = |body| crate::decode::decode::<SchedulePatch>(body).map(|p| p.interval_seconds);
        assert_eq!(decode(serde_json::json!({"interval_seconds": 60})), Ok(Some(60)));
        assert_eq!(decode(serde_json::json!({"interval_seconds": 60.0})), Ok(Some(60)));
        assert_eq!(decode(serde_json::json!({"interval_seconds": null})), Ok(None));
        let refused = decode(serde_json::json!({"interval_seconds": 1.5})).unwrap_err();
        assert_eq!((refused.code, refused.field.as_str()), ("invalid_field", "interval_seconds"));
    }

    #[test]
    fn every_time_zone_the_schema_lists_is_known() {
        for tz in chrono_tz::TZ_VARIANTS {
            assert!(timing(Some("0 9 * * *"), Some(tz.name()), None).is_ok(), "{}", tz.name());
        }
    }
}
