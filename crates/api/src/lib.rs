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

pub mod decode;
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
/// them (references point into `#/components/schemas/`).
pub fn schemas() -> Map<String, Value> {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas/".into();
            s.meta_schema = None;
        })
        .for_deserialize()
        .into_generator();
    let mut named = Map::new();
    let mut add = |name: &str, schema: schemars::Schema| {
        named.insert(name.to_string(), schema.to_value());
    };
    add("StartRun", runs::StartRun::json_schema(&mut generator));
    add("ScheduleDraft", schedules::ScheduleDraft::json_schema(&mut generator));
    add("SchedulePatch", schedules::SchedulePatch::json_schema(&mut generator));
    add("WebhookDraft", webhooks::WebhookDraft::json_schema(&mut generator));
    add("Execute", executions::Execute::json_schema(&mut generator));
    for (name, schema) in generator.take_definitions(true) {
        named.entry(name).or_insert(schema);
    }
    named.values_mut().for_each(tidy);
    named
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
