//! Decoding a request body into its type: every refusal names the field and says what is wrong.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a body was refused: a stable `code`, the top-level `field` (`body` for the whole), the
/// `path` within it when deeper (`events[1]`), and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    /// `invalid_body` (not an object), `unknown_field`, `missing_field` or `invalid_field`.
    pub code: &'static str,
    /// Which field: `url`, `events`, `body`.
    pub field: String,
    /// Where in it, when deeper than the field: `events[1]`.
    pub path: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// `body` as a `T`, which must be a JSON object of `T`'s fields (unknown ones are refused).
pub fn decode<T: DeserializeOwned>(body: Value) -> Result<T, BodyError> {
    if !body.is_object() {
        return Err(BodyError {
            code: "invalid_body",
            field: "body".into(),
            path: None,
            message: "the body must be a JSON object".into(),
        });
    }
    serde_path_to_error::deserialize(body).map_err(|e| {
        let message = e.inner().to_string();
        let (code, path, message) = if message.starts_with("unknown field") {
            // The path ends at the unknown key itself.
            let path = e.path().to_string();
            ("unknown_field", path.clone(), format!("unknown field `{path}`{}", after_name(&message)))
        } else if message.starts_with("missing field") {
            // The path is the object that lacks it.
            let name = message.split('`').nth(1).unwrap_or_default();
            let path = match e.path().to_string() {
                root if root == "." => name.to_string(),
                parent => format!("{parent}.{name}"),
            };
            ("missing_field", path.clone(), format!("`{path}` is required"))
        } else {
            let path = e.path().to_string();
            ("invalid_field", path.clone(), format!("`{path}`: {message}"))
        };
        // An error of the whole object (a field given twice through an alias) is the body's.
        let path = if path == "." { "body".to_string() } else { path };
        let field = path.split(['.', '[']).next().unwrap_or_default().to_string();
        BodyError { code, path: (path != field).then_some(path), field, message }
    })
}

/// serde's list of the expected names, after the unknown one (`, expected one of ...`).
fn after_name(message: &str) -> String {
    message.splitn(3, '`').nth(2).map(|rest| rest.replacen(", expected", "; expected", 1)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::WebhookDraft;
    use serde_json::json;

    fn check(body: Value, code: &str, path: &str, message: &str) {
        let e = decode::<WebhookDraft>(body).unwrap_err();
        let path_seen = e.path.clone().unwrap_or_else(|| e.field.clone());
        assert_eq!((e.code, path_seen.as_str(), e.message.as_str()), (code, path, message));
        assert!(path.starts_with(&e.field), "{path} is within {}", e.field);
    }

    #[test]
    fn every_refusal_names_its_field() {
        check(json!([1]), "invalid_body", "body", "the body must be a JSON object");
        check(
            json!({"url": "https://x.example", "extra": 1}),
            "unknown_field",
            "extra",
            "unknown field `extra`; expected `url` or `events`",
        );
        check(json!({"events": null}), "missing_field", "url", "`url` is required");
        check(json!({"url": 7}), "invalid_field", "url", "`url`: invalid type: integer `7`, expected a string");
        check(
            json!({"url": "https://x.example", "events": ["run.finished", "nope"]}),
            "invalid_field",
            "events[1]",
            "`events[1]`: unknown variant `nope`, expected `run.finished` or `execution.finished`",
        );
    }
}
