//! Test-only routes for the e2e harness: raw SQL against D1 (with `meta`, to assert on
//! rows read) and KV access. They answer only when `BATON_TEST_HOOKS` is "true" and the
//! admin token is given; otherwise they do not exist (404).

use baton_edge::{auth, bindings, http, kv::Kv, queues, settings, test_hooks, Error, Result};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use worker::{Env, Headers, Method, Request, RequestInit, Response};

fn guard(req: &Request, env: &Env) -> Result<()> {
    if !settings::test_hooks_enabled(env) {
        return Err(Error::NotFound { what: format!("route {}", req.path()) });
    }
    auth::require_admin(req, env)
}

#[derive(Deserialize)]
struct SqlRequest {
    sql: String,
    #[serde(default)]
    params: Vec<Value>,
    /// One shard's database; absent: every shard's.
    #[serde(default)]
    shard: Option<u32>,
}

pub async fn sql(mut req: Request, env: &Env) -> Result<Response> {
    guard(&req, env)?;
    let body: SqlRequest = http::read_json(&mut req).await?;
    http::json(200, &test_hooks::sql(env, &body.sql, &body.params, body.shard).await?)
}

/// `GET /__test/d1-size`: the D1 database's size in bytes (`{"bytes": n}`).
pub async fn d1_size(req: Request, env: &Env) -> Result<Response> {
    guard(&req, env)?;
    http::json(200, &test_hooks::database_size(env).await?)
}

pub async fn kv(mut req: Request, env: &Env, key: &str) -> Result<Response> {
    guard(&req, env)?;
    let kv = Kv::from_env(env)?;
    match req.method() {
        Method::Get => match kv.get_text(key).await? {
            Some(value) => http::json(200, &json!({ "key": key, "value": value })),
            None => Err(Error::NotFound { what: format!("kv key {key}") }),
        },
        Method::Put => {
            let body = http::read_body(&mut req).await?;
            kv.put_text(key, &String::from_utf8_lossy(&body)).await?;
            http::json(200, &json!({ "key": key }))
        }
        _ => {
            kv.delete(key).await?;
            http::json(200, &json!({ "key": key, "deleted": true }))
        }
    }
}

#[derive(Deserialize)]
struct QueueRequest {
    messages: Vec<Value>,
}

/// `POST /__test/queues/{tasks|analysis}` `{messages: [...]}`: sends raw messages, so tests
/// can deliver duplicates and malformed bodies the way an at-least-once queue might.
pub async fn queue(mut req: Request, env: &Env, name: &str) -> Result<Response> {
    guard(&req, env)?;
    let body: QueueRequest = http::read_json(&mut req).await?;
    let queue = match name {
        "tasks" => queues::task_queue(env)?,
        "analysis" => queues::analysis_queue(env)?,
        other => return Err(Error::NotFound { what: format!("queue {other}") }),
    };
    queues::send_json_values(&queue, &body.messages).await?;
    http::json(200, &json!({ "sent": body.messages.len() }))
}

/// `GET /__test/meter[?reset=true]`: the usage counters (`baton_edge::meter`) of the
/// orchestrator, the consumer and the poller — each worker's own `/__test/meter`, reached over
/// its service binding (these calls are not counted).
pub async fn meter(req: Request, env: &Env) -> Result<Response> {
    guard(&req, env)?;
    let reset = http::query_param(&req, "reset")?.is_some_and(|v| v == "true");
    let mut usage = Map::new();
    usage.insert("orchestrator".into(), json!(baton_edge::meter::read(reset)));
    let authorization = req.headers().get("Authorization").ok().flatten().unwrap_or_default();
    for (name, binding) in [("consumer", bindings::CONSUMER), ("poller", bindings::POLLER)] {
        let fetcher = baton_edge::services::worker(env, binding)?;
        let headers = Headers::new();
        let _ = headers.set("Authorization", &authorization);
        let mut init = RequestInit::new();
        init.with_method(Method::Get).with_headers(headers);
        let mut response = fetcher.fetch(format!("https://internal/__test/meter?reset={reset}"), Some(init)).await?;
        let status = response.status_code();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != 200 {
            return Err(Error::Internal(format!("{name} meter: {status} {body} (is BATON_TEST_HOOKS true for it?)")));
        }
        usage.insert(name.into(), body);
    }
    http::json(200, &Value::Object(usage))
}

/// `POST /__test/drive`: hands the body to the consumer's `/internal/drive` exactly as the
/// orchestrator's hand-over does (signed with the internal key), so tests can send hand-overs
/// of their own making; answers with the consumer's status and body.
pub async fn drive(mut req: Request, env: &Env) -> Result<Response> {
    guard(&req, env)?;
    let body = http::read_body(&mut req).await?;
    let path = baton_edge::engine::DRIVE_PATH;
    let headers = Headers::new();
    let _ = headers.set("Content-Type", "application/json");
    for (name, value) in auth::internal_headers(env, "POST", path, &body)? {
        let _ = headers.set(name, &value);
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let consumer = baton_edge::services::worker(env, bindings::CONSUMER)?;
    let mut response = consumer.fetch(format!("https://consumer.internal{path}"), Some(init)).await?;
    let status = response.status_code();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    http::json(200, &json!({ "status": status, "body": answer }))
}
