//! The web UI at `/ui`: plain HTML, CSS and JavaScript compiled into the worker, served
//! without credentials. The page asks for a bearer token once (kept in the browser
//! session's `sessionStorage`) and reads everything through the JSON API with it, so a
//! client sees exactly what the API shows it.

use baton_edge::{Error, Result};
use worker::Response;

const INDEX_HTML: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");

/// Nothing is loaded from elsewhere: scripts, styles and data come from this origin only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /ui/...`: the assets by name; any other path is a page of the UI (the script reads
/// the path to know which).
pub fn serve(rest: &[&str]) -> Result<Response> {
    let (body, content_type) = match rest {
        ["assets", "app.js"] => (APP_JS, "text/javascript; charset=utf-8"),
        ["assets", "app.css"] => (APP_CSS, "text/css; charset=utf-8"),
        ["assets", ..] => return Err(Error::NotFound { what: format!("asset /ui/{}", rest.join("/")) }),
        _ => (INDEX_HTML, "text/html; charset=utf-8"),
    };
    let mut response = Response::ok(body)?;
    let headers = response.headers_mut();
    headers.set("Content-Type", content_type)?;
    headers.set("Content-Security-Policy", CONTENT_SECURITY_POLICY)?;
    headers.set("X-Content-Type-Options", "nosniff")?;
    headers.set("Referrer-Policy", "no-referrer")?;
    headers.set("Cache-Control", "no-cache")?;
    Ok(response)
}
