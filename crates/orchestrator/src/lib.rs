//! The HTTP orchestrator worker: parse, call core, persist, respond.
//! Routing lives in [`routes`]; every handler returns `baton_edge::Result<Response>` and
//! errors become responses in one place (`Error::to_response`).

mod routes;

use worker::{event, Context, Env, Request, Response};

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    match routes::route(req, &env, &ctx).await {
        Ok(response) => Ok(response),
        Err(error) => error.to_response(),
    }
}
