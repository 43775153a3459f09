//! HTTP helpers shared by the workers' fetch handlers.

use serde::{de::DeserializeOwned, Serialize};
use serde_path_to_error::{Path, Segment};
use worker::{Request, Response};

use crate::{Error, Result};

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A JSON response with the given status.
pub fn json<T: Serialize>(status: u16, body: &T) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

/// Reads the body (refusing anything over [`MAX_BODY_BYTES`]) and parses it as JSON.
pub async fn read_json<T: DeserializeOwned>(req: &mut Request) -> Result<T> {
    let bytes = read_body(req).await?;
    parse_json(&bytes)
}

/// Reads the raw body, refusing anything over [`MAX_BODY_BYTES`]: at once when
/// `Content-Length` says so, otherwise as soon as the bytes read pass it (a body without a
/// length is never read whole first).
pub async fn read_body(req: &mut Request) -> Result<Vec<u8>> {
    use futures_util::StreamExt;
    let unreadable =
        |e: worker::Error| Error::bad_request("invalid_body", "body", format!("could not read the body: {e}"));
    // A declared length bounds the body (the runtime holds a body to its Content-Length): over
    // the cap it is refused at once, within it read whole, in one call. Otherwise count the
    // bytes as they come.
    match req.headers().get("Content-Length").ok().flatten().and_then(|len| len.parse::<usize>().ok()) {
        Some(len) if len > MAX_BODY_BYTES => return Err(Error::PayloadTooLarge { limit: MAX_BODY_BYTES }),
        Some(_) => return req.bytes().await.map_err(unreadable),
        None => {}
    }
    let mut bytes = Vec::new();
    // A request without a body has no stream.
    let Ok(mut stream) = req.stream() else { return Ok(bytes) };
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.map_err(unreadable)?);
        if bytes.len() > MAX_BODY_BYTES {
            return Err(Error::PayloadTooLarge { limit: MAX_BODY_BYTES });
        }
    }
    Ok(bytes)
}

/// Parses JSON. Broken JSON (syntax, cut short, trailing text) is `invalid_json` about the
/// `body`; JSON that does not fit `T` is `invalid_field`, naming the field by its path in the
/// body (`domain`, `parameters.x`, `services[2].depends_on`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.is_empty() {
        return Err(Error::bad_request("invalid_json", "body", "the body is empty; send a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            Error::bad_request("invalid_json", "body", inner.to_string())
        } else {
            Error::bad_request("invalid_field", &field_path(e.path(), inner), e.to_string())
        }
    })?;
    // As `serde_json::from_slice` does: only whitespace may follow the value.
    deserializer.end().map_err(|e| Error::bad_request("invalid_json", "body", e.to_string()))?;
    Ok(value)
}

/// The path of the field a data error is about; `body` for the body as a whole. serde
/// reports a missing field at the object that lacks it, so its name (in serde's fixed wording
/// "missing field `name`") completes the path to the field to add.
fn field_path(path: &Path, error: &serde_json::Error) -> String {
    let at = (!path.iter().all(|segment| matches!(segment, Segment::Unknown))).then(|| path.to_string());
    let message = error.to_string();
    let missing = message.strip_prefix("missing field `").and_then(|rest| rest.split_once('`')).map(|(name, _)| name);
    match (at, missing) {
        (Some(at), Some(name)) => format!("{at}.{name}"),
        (None, Some(name)) => name.to_string(),
        (Some(at), None) => at,
        (None, None) => "body".to_string(),
    }
}

/// The bearer token of the request, if any.
pub fn bearer_token(req: &Request) -> Option<String> {
    let value = req.headers().get("Authorization").ok().flatten()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// A query parameter, if present.
pub fn query_param(req: &Request, name: &str) -> Result<Option<String>> {
    let url = req.url()?;
    Ok(url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::{json, Value};

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        domain: String,
        #[serde(default)]
        parameters: Option<Parameters>,
        #[serde(default)]
        steps: Vec<Step>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Parameters {
        x: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Step {
        service: String,
        #[serde(default)]
        depends_on: Vec<String>,
    }

    /// Parsing `body` as [`Body`] fails with `code`, naming `field`.
    fn check(body: &str, code: &str, field: &str) {
        match parse_json::<Body>(body.as_bytes()) {
            Err(Error::BadRequest { code: got, message, details }) => {
                assert_eq!((got, &details), (code, &json!({ "field": field })), "{body}: {message}");
                assert!(!message.is_empty(), "{body}");
            }
            other => panic!("{body}: expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn broken_json_is_invalid_json_about_the_body() {
        check("", "invalid_json", "body");
        check("{oops", "invalid_json", "body");
        check(r#"{"domain": "#, "invalid_json", "body");
        check(r#"{"domain": "a"} trailing"#, "invalid_json", "body");
        check(r#"{"domain": "a", "steps": [{"service": tru"#, "invalid_json", "body");
    }

    #[test]
    fn misfitting_json_is_invalid_field_naming_the_field_by_its_path() {
        check(r#"{"domain": 5}"#, "invalid_field", "domain");
        check(r#"{"domain": "a", "extra": 1}"#, "invalid_field", "extra");
        check(r#"{"domain": "a", "parameters": {"x": "no"}}"#, "invalid_field", "parameters.x");
        check(
            r#"{"domain": "a", "steps": [{"service": "s"}, {"service": "t"}, {"service": "u", "depends_on": "s"}]}"#,
            "invalid_field",
            "steps[2].depends_on",
        );
        check(r#"{"domain": "a", "steps": [{"service": "s", "after": []}]}"#, "invalid_field", "steps[0].after");
        check(r#""text""#, "invalid_field", "body");
    }

    #[test]
    fn a_missing_field_is_named_by_the_path_it_should_have() {
        check("{}", "invalid_field", "domain");
        check(r#"{"domain": "a", "parameters": {}}"#, "invalid_field", "parameters.x");
        check(
            r#"{"domain": "a", "steps": [{"service": "s"}, {"depends_on": []}]}"#,
            "invalid_field",
            "steps[1].service",
        );
    }

    #[test]
    fn the_message_names_the_path_too() {
        let Err(e) = parse_json::<Body>(br#"{"domain": "a", "parameters": {"x": -1}}"#) else { panic!("parsed") };
        assert!(e.to_string().starts_with("parameters.x: invalid value"), "{e}");
    }

    #[test]
    fn json_that_fits_parses() {
        let body: Body = parse_json(br#" {"domain": "a", "steps": [{"service": "s", "depends_on": []}]} "#).unwrap();
        assert_eq!((body.domain.as_str(), body.steps.len()), ("a", 1));
        let value: Value = parse_json(b"[1, 2]").unwrap();
        assert_eq!(value, json!([1, 2]));
    }
}
