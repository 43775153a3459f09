//! `GET /openapi.json`: the API described in OpenAPI 3.1 (every public route, its request
//! and response schemas, the error shape, auth). Served as written in `openapi.json`.

use baton_edge::Result;
use worker::Response;

const SPEC: &str = include_str!("../../openapi.json");

pub fn spec() -> Result<Response> {
    let mut response = Response::ok(SPEC)?;
    response.headers_mut().set("Content-Type", "application/json")?;
    Ok(response)
}
