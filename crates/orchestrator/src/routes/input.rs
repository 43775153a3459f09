//! Request-body helpers: a body is decoded into its `baton_api` type; every rejection names the
//! field.

use baton_edge::{Error, Result};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

/// The body as its wire type from `baton_api` (the type `openapi.json` describes): a JSON
/// object of its fields only; a refusal names the field (`details.field`, and `details.path`
/// when deeper).
pub fn decode<T: DeserializeOwned>(body: Value) -> Result<T> {
    baton_api::decode::decode(body).map_err(|e| {
        let mut details = json!({ "field": e.field });
        if let Some(path) = e.path {
            details["path"] = json!(path);
        }
        Error::BadRequest { code: e.code, message: e.message, details }
    })
}

/// Refuses an object `field` longer than `max_bytes` when serialised.
pub fn at_most(field: &str, object: &Map<String, Value>, max_bytes: usize) -> Result<()> {
    let size = serde_json::to_string(object).map(|s| s.len()).unwrap_or(usize::MAX);
    if size > max_bytes {
        return Err(Error::bad_request(
            "too_long",
            field,
            format!("`{field}` is {size} bytes, at most {max_bytes} allowed"),
        ));
    }
    Ok(())
}

/// A 400 listing every problem core found in a request: `details.problems[] = {field, code,
/// message}`.
pub fn request_problems(code: &'static str, found: &baton_core::request::RequestProblems) -> Error {
    let list =
        found.0.iter().map(|p| json!({ "field": p.field(), "code": p.code(), "message": p.to_string() })).collect();
    problems(code, &found.to_string(), list)
}

/// A 400 listing every problem: `details.problems[] = {field, code, message}`.
pub fn problems(code: &'static str, message: &str, problems: Vec<Value>) -> Error {
    let field = problems.first().and_then(|p| p["field"].as_str()).unwrap_or("body").to_string();
    Error::BadRequest { code, message: message.to_string(), details: json!({ "field": field, "problems": problems }) }
}
