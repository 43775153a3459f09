//! HTTP helpers shared by the workers' fetch handlers.

use serde::{de::DeserializeOwned, Serialize};
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

/// Reads the raw body, refusing anything over [`MAX_BODY_BYTES`].
pub async fn read_body(req: &mut Request) -> Result<Vec<u8>> {
    if let Ok(Some(len)) = req.headers().get("Content-Length") {
        if len.parse::<usize>().map(|n| n > MAX_BODY_BYTES).unwrap_or(false) {
            return Err(Error::PayloadTooLarge { limit: MAX_BODY_BYTES });
        }
    }
    let bytes = req
        .bytes()
        .await
        .map_err(|e| Error::bad_request("invalid_body", "body", format!("could not read the body: {e}")))?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(Error::PayloadTooLarge { limit: MAX_BODY_BYTES });
    }
    Ok(bytes)
}

/// Parses JSON, naming the field serde complained about when it can.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.is_empty() {
        return Err(Error::bad_request("invalid_json", "body", "the body is empty; send a JSON object"));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let message = e.to_string();
        let field = field_from_serde_message(&message).unwrap_or_else(|| "body".to_string());
        let code = if e.is_syntax() || e.is_eof() { "invalid_json" } else { "invalid_field" };
        Error::bad_request(code, &field, message)
    })
}

/// serde names the field in backticks ("missing field `domain`", "unknown field `x`").
fn field_from_serde_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    let field = &message[start..start + len];
    (message.contains("field")).then(|| field.to_string())
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
