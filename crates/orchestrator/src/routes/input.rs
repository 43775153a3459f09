//! Request-body helpers: every rejection names the field.

use baton_edge::{Error, Result};
use serde_json::{json, Map, Value};

/// The body as a JSON object whose keys are all in `allowed`.
pub fn object(body: Value, allowed: &[&str]) -> Result<Map<String, Value>> {
    let Value::Object(map) = body else {
        return Err(Error::bad_request("invalid_body", "body", "the body must be a JSON object"));
    };
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Error::BadRequest {
            code: "unknown_field",
            message: format!("unknown field `{unknown}`; expected one of: {}", allowed.join(", ")),
            details: json!({ "field": unknown, "allowed": allowed }),
        });
    }
    Ok(map)
}

/// An optional string field (`null` counts as absent).
pub fn optional_string(map: &Map<String, Value>, field: &str) -> Result<Option<String>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Error::bad_request(
            "invalid_field",
            field,
            format!("`{field}` must be a string, got {}", baton_core::json::kind(other)),
        )),
    }
}

/// An optional object field (`null` counts as absent), at most `max_bytes` when serialised.
pub fn optional_object(map: &Map<String, Value>, field: &str, max_bytes: usize) -> Result<Option<Map<String, Value>>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => {
            let size = Value::Object(o.clone()).to_string().len();
            if size > max_bytes {
                return Err(Error::bad_request(
                    "too_long",
                    field,
                    format!("`{field}` is {size} bytes, at most {max_bytes} allowed"),
                ));
            }
            Ok(Some(o.clone()))
        }
        Some(other) => Err(Error::bad_request(
            "invalid_field",
            field,
            format!("`{field}` must be an object, got {}", baton_core::json::kind(other)),
        )),
    }
}

/// A 400 listing every problem: `details.problems[] = {field, code, message}`.
pub fn problems(code: &'static str, message: &str, problems: Vec<Value>) -> Error {
    let field = problems.first().and_then(|p| p["field"].as_str()).unwrap_or("body").to_string();
    Error::BadRequest { code, message: message.to_string(), details: json!({ "field": field, "problems": problems }) }
}
