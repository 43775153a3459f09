//! The API over HTTP: one blocking request at a time, every answer read as JSON.

use std::time::Duration;

use serde_json::Value;
use ureq::Agent;

/// How long one request may take (a run request without `?wait` answers at once).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(70);

/// Why a request produced no answer to use.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// The API answered with an error: its status, `error.code`, `error.message`, and the body.
    Refused { status: u16, code: String, message: String, body: Value },
    /// No answer: the URL is wrong, or the API is down.
    Unreachable(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Refused { status, code, message, .. } => {
                write!(f, "the API refused ({status} {code}): {message}")
            }
            ApiError::Unreachable(cause) => write!(f, "could not reach the API: {cause}"),
        }
    }
}

/// A client of one Baton API with one token.
pub struct Api {
    base: String,
    token: String,
    agent: Agent,
}

impl Api {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:8787`).
    pub fn new(base: &str, token: &str) -> Api {
        let agent =
            Agent::config_builder().http_status_as_error(false).timeout_global(Some(REQUEST_TIMEOUT)).build().into();
        Api { base: base.trim_end_matches('/').to_string(), token: token.to_string(), agent }
    }

    /// `GET path` → the JSON body of a 2xx answer.
    pub fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.get_with(path, &[])
    }

    /// `GET path?query` (the values percent-encoded) → the JSON body of a 2xx answer.
    pub fn get_with(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ApiError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .get(&url)
            .query_pairs(query.iter().map(|(k, v)| (*k, v.as_str())))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call();
        read(response)
    }

    /// `POST path` with a JSON body → the JSON body of a 2xx answer.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .post(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes());
        read(response)
    }
}

fn read(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Value, ApiError> {
    let mut response = response.map_err(|e| ApiError::Unreachable(e.to_string()))?;
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = response.body_mut().read_to_vec().map_err(|e| ApiError::Unreachable(e.to_string()))?;
    answer(status, &body, retry_after.as_deref())
}

/// The body of a 2xx answer as JSON; any other answer as [`ApiError::Refused`] with the
/// API's error code and message (and when to retry, for a 429).
pub fn answer(status: u16, body: &[u8], retry_after: Option<&str>) -> Result<Value, ApiError> {
    let json = serde_json::from_slice::<Value>(body).ok();
    if (200..300).contains(&status) {
        return json.ok_or_else(|| ApiError::Unreachable(format!("the answer ({status}) is not JSON")));
    }
    let error = json.as_ref().map(|j| &j["error"]);
    let code = error.and_then(|e| e["code"].as_str()).map(str::to_string).unwrap_or_else(|| format!("http_{status}"));
    let mut message = error
        .and_then(|e| e["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().chars().take(300).collect());
    if let Some(seconds) = retry_after {
        message.push_str(&format!(" (retry after {seconds} s)"));
    }
    Err(ApiError::Refused { status, code, message, body: json.unwrap_or(Value::Null) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_success_is_its_json_and_an_error_its_code_and_message() {
        assert_eq!(answer(202, br#"{"run_id": "r"}"#, None), Ok(json!({"run_id": "r"})));
        let body = json!({"success": false, "error": {"code": "unauthorized", "message": "invalid bearer token"}});
        assert_eq!(
            answer(401, body.to_string().as_bytes(), None),
            Err(ApiError::Refused {
                status: 401,
                code: "unauthorized".into(),
                message: "invalid bearer token".into(),
                body: body.clone()
            })
        );
        let Err(limited) = answer(429, br#"{"error": {"code": "rate_limited", "message": "slow down"}}"#, Some("7"))
        else {
            panic!("a 429 is an error")
        };
        assert_eq!(limited.to_string(), "the API refused (429 rate_limited): slow down (retry after 7 s)");
    }

    #[test]
    fn answers_that_are_not_json_are_still_reported() {
        let Err(ApiError::Refused { code, message, body, .. }) = answer(502, b"Bad Gateway\n", None) else {
            panic!("a 502 is an error")
        };
        assert_eq!((code.as_str(), message.as_str(), body), ("http_502", "Bad Gateway", Value::Null));
        assert!(matches!(answer(200, b"<html>", None), Err(ApiError::Unreachable(_))));
    }
}
