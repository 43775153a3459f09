//! Baton's HTTP API as types: the request bodies the orchestrator's handlers decode, each
//! describing itself as JSON Schema. `openapi.json`'s schemas of these bodies are derived from
//! them ([`schemas`]), so the document and the decoder cannot drift apart.
//!
//! Invariants: pure (serde and schemars only: no worker, no I/O, no clock). A body type refuses
//! unknown fields, and its schema states every rule its decoding and core's validation apply,
//! so that a request the schema allows is not refused for its shape, and one it forbids is.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{Map, Value};

pub mod bulk;
pub mod callbacks;
pub mod decode;
pub mod error;
pub mod executions;
pub mod runs;
pub mod schedules;
pub mod webhooks;

/// A JSON object of any keys: a run's or an execution's `parameters`.
pub type Object = Map<String, Value>;

/// An optional whole number as JSON Schema's `integer` counts them: `60` and `60.0` alike (a
/// schema-valid `60.0` must not be refused as a float).
pub(crate) fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::{Deserialize, Error, Unexpected};
    let Some(number) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
    let whole = number
        .as_i64()
        .or_else(|| number.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < i64::MAX as f64).map(|f| f as i64));
    match whole {
        Some(n) => Ok(Some(n)),
        None => Err(D::Error::invalid_value(Unexpected::Other(&number.to_string()), &"a whole number")),
    }
}

/// The schemas derived from the types, by name, as `openapi.json`'s `components.schemas` holds
/// them (references point into `#/components/schemas/`): request bodies as they are decoded,
/// answers as they are encoded (every field present, `null` or not).
pub fn schemas() -> Map<String, Value> {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas/".into();
        s.meta_schema = None;
    });
    let mut requests = settings.clone().for_deserialize().into_generator();
    let mut answers = settings.for_serialize().into_generator();
    let mut named = Map::new();
    let mut add = |schema: schemars::Schema, name: std::borrow::Cow<'static, str>| {
        named.insert(name.into_owned(), schema.to_value());
    };
    add(runs::StartRun::json_schema(&mut requests), runs::StartRun::schema_name());
    add(executions::Execute::json_schema(&mut requests), executions::Execute::schema_name());
    add(schedules::ScheduleDraft::json_schema(&mut requests), schedules::ScheduleDraft::schema_name());
    add(schedules::SchedulePatch::json_schema(&mut requests), schedules::SchedulePatch::schema_name());
    add(webhooks::WebhookDraft::json_schema(&mut requests), webhooks::WebhookDraft::schema_name());
    add(callbacks::ResultReport::json_schema(&mut requests), callbacks::ResultReport::schema_name());
    add(baton_core::plan::PlanDraft::json_schema(&mut requests), baton_core::plan::PlanDraft::schema_name());
    add(schedules::Schedule::json_schema(&mut answers), schedules::Schedule::schema_name());
    add(schedules::ScheduleOne::json_schema(&mut answers), schedules::ScheduleOne::schema_name());
    add(schedules::ScheduleList::json_schema(&mut answers), schedules::ScheduleList::schema_name());
    add(webhooks::Webhook::json_schema(&mut answers), webhooks::Webhook::schema_name());
    add(webhooks::WebhookOne::json_schema(&mut answers), webhooks::WebhookOne::schema_name());
    add(webhooks::WebhookList::json_schema(&mut answers), webhooks::WebhookList::schema_name());
    add(webhooks::WebhookDeliveries::json_schema(&mut answers), webhooks::WebhookDeliveries::schema_name());
    add(webhooks::WebhookReplayed::json_schema(&mut answers), webhooks::WebhookReplayed::schema_name());
    add(callbacks::ResultRecorded::json_schema(&mut answers), callbacks::ResultRecorded::schema_name());
    add(error::ErrorAnswer::json_schema(&mut answers), error::ErrorAnswer::schema_name());
    add(runs::RunStarted::json_schema(&mut answers), runs::RunStarted::schema_name());
    add(runs::RunWaited::json_schema(&mut answers), runs::RunWaited::schema_name());
    add(runs::RunDetail::json_schema(&mut answers), runs::RunDetail::schema_name());
    add(runs::RunList::json_schema(&mut answers), runs::RunList::schema_name());
    add(runs::RunEvents::json_schema(&mut answers), runs::RunEvents::schema_name());
    add(runs::RunCancelled::json_schema(&mut answers), runs::RunCancelled::schema_name());
    add(runs::EventDelivered::json_schema(&mut answers), runs::EventDelivered::schema_name());
    add(runs::RunPaused::json_schema(&mut answers), runs::RunPaused::schema_name());
    add(runs::RunResumed::json_schema(&mut answers), runs::RunResumed::schema_name());
    add(runs::RunRetried::json_schema(&mut answers), runs::RunRetried::schema_name());
    add(runs::RunRerun::json_schema(&mut answers), runs::RunRerun::schema_name());
    add(bulk::BulkRuns::json_schema(&mut requests), bulk::BulkRuns::schema_name());
    add(bulk::RunsActed::json_schema(&mut answers), bulk::RunsActed::schema_name());
    for (name, schema) in requests.take_definitions(true).into_iter().chain(answers.take_definitions(true)) {
        named.entry(name).or_insert(schema);
    }
    named.values_mut().for_each(tidy);
    named
}

/// An instant as RFC 3339 text (`2026-12-06T08:35:49.572Z`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Instant(pub String);

impl Instant {
    /// The instant `ms` milliseconds after the epoch (a negative one reads as the epoch).
    pub fn at(ms: i64) -> Instant {
        Instant(baton_core::time::Millis::new(ms.max(0) as u64).to_rfc3339())
    }

    /// [`Instant::at`] of a time that may be unknown.
    pub fn of(ms: Option<i64>) -> Option<Instant> {
        ms.map(Instant::at)
    }
}

impl JsonSchema for Instant {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Instant".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "date-time" })
    }
}

/// `true`: the `success` of every answer that is not an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Success;

impl serde::Serialize for Success {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(true)
    }
}

impl JsonSchema for Success {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Success".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "const": true })
    }
}

/// Drops the `default`s serde's defaults put in (`null`, or the empty string of a field whose
/// absence core reports) and joins the doc comments' wrapped lines.
fn tidy(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.remove("default");
            if let Some(Value::String(text)) = map.get_mut("description") {
                *text = text.split("\n\n").map(|p| p.replace('\n', " ")).collect::<Vec<_>>().join("\n\n");
            }
            map.values_mut().for_each(tidy);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
