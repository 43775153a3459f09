//! Test-only routes for the e2e harness: raw SQL against D1 (with `meta`, to assert on
//! rows read) and KV access. They answer only when `BATON_TEST_HOOKS` is "true" and the
//! admin token is given; otherwise they do not exist (404).

use baton_edge::{auth, d1::{Arg, Db}, http, kv::Kv, queues, Error, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use worker::{Env, Method, Request, Response};

fn enabled(env: &Env) -> bool {
    env.var("BATON_TEST_HOOKS").map(|v| v.to_string() == "true").unwrap_or(false)
}

fn guard(req: &Request, env: &Env) -> Result<()> {
    if !enabled(env) {
        return Err(Error::NotFound { what: format!("route {}", req.path()) });
    }
    auth::require_admin(req, env)
}

#[derive(Deserialize)]
struct SqlRequest {
    sql: String,
    #[serde(default)]
    params: Vec<Value>,
}

pub async fn sql(mut req: Request, env: &Env) -> Result<Response> {
    guard(&req, env)?;
    let body: SqlRequest = http::read_json(&mut req).await?;
    let args: Vec<Arg> = body
        .params
        .iter()
        .map(|v| match v {
            Value::Null => Arg::Null,
            Value::Bool(b) => Arg::from(*b),
            Value::Number(n) => n.as_i64().map(Arg::Int).unwrap_or_else(|| Arg::Real(n.as_f64().unwrap_or(0.0))),
            Value::String(s) => Arg::Text(s.clone()),
            other => Arg::Text(other.to_string()),
        })
        .collect();
    let db = Db::from_env(env)?;
    let (rows, meta) = db.all::<Value>(&body.sql, &args).await?;
    http::json(200, &json!({ "rows": rows, "meta": meta }))
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
