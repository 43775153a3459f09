//! The HTTP orchestrator worker: parse, call core, persist, respond.
//! Routing lives in [`routes`]; every handler returns `baton_edge::Result<Response>` and
//! errors become responses in one place (`Error::to_response`).

mod routes;

use worker::{event, Context, Env, Request, Response};

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    // What a request does for a run (starting it, a service's report, a cancel) is the run's.
    let answer = baton_edge::meter::for_request(routes::route(req, &env, &ctx)).await;
    // Recorded a moment later: a run's work in place, which ends just after its answer, then
    // records the request's units with its own in one write.
    ctx.wait_until(async move {
        worker::Delay::from(baton_edge::meter::COALESCE).await;
        baton_edge::meter::flush(&env).await
    });
    match answer {
        Ok(response) => Ok(response),
        Err(error) => error.to_response(),
    }
}
