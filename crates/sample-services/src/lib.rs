//! Stand-ins for the external services and the key-account service.

use worker::{event, Context, Env, Request, Response};

#[event(fetch)]
async fn fetch(req: Request, _env: Env, _ctx: Context) -> worker::Result<Response> {
    match req.path().as_str() {
        "/health" => Response::from_json(&serde_json::json!({ "status": "ok", "worker": "sample-services" })),
        _ => Ok(Response::from_json(&serde_json::json!({ "success": false }))?.with_status(404)),
    }
}
