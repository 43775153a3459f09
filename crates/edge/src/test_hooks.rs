//! What the test-only routes need of storage (`/__test/sql`, `/__test/d1-size`), kept here so
//! that no worker reaches into [`crate::d1`]: raw SQL with D1's `meta`, for the e2e harness to
//! assert on rows and rows read, and the database's size, for the bench to measure what runs
//! take. The routes answer only with `BATON_TEST_HOOKS` and the admin token.

use serde_json::{json, Value};
use worker::Env;

use crate::d1::{Arg, Db};
use crate::{bindings, Error, Result};

/// Runs `sql` with `params` (JSON values bound in order) on the unmetered database:
/// `{"rows": [...], "meta": {...}}`.
pub async fn sql(env: &Env, sql: &str, params: &[Value]) -> Result<Value> {
    let args: Vec<Arg> = params.iter().map(arg_of).collect();
    let db = Db::unmetered_from_env(env)?;
    let (rows, meta) = db.all::<Value>(sql, &args).await?;
    Ok(json!({ "rows": rows, "meta": meta }))
}

/// The database's size in bytes, as D1 reports it after a query (`meta.size_after`): the
/// pages in use, what D1's size limit counts. `{"bytes": n}` (`null` if D1 did not say).
pub async fn database_size(env: &Env) -> Result<Value> {
    let storage = |e: worker::Error| Error::Storage(e.to_string());
    let database = env.d1(bindings::DB).map_err(|e| Error::Binding { name: bindings::DB, cause: e.to_string() })?;
    let result = database.prepare("SELECT 1").all().await.map_err(storage)?;
    let bytes = result.meta().map_err(storage)?.and_then(|m| m.size_after);
    Ok(json!({ "bytes": bytes }))
}

fn arg_of(value: &Value) -> Arg {
    match value {
        Value::Null => Arg::Null,
        Value::Bool(b) => Arg::from(*b),
        Value::Number(n) => n.as_i64().map(Arg::Int).unwrap_or_else(|| Arg::Real(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => Arg::Text(s.clone()),
        other => Arg::Text(other.to_string()),
    }
}
