//! What the test-only routes need of storage (`/__test/sql`, `/__test/d1-size`), kept here so
//! that no worker reaches into [`crate::d1`]: raw SQL with D1's `meta`, for the e2e harness to
//! assert on rows and rows read, and the database's size, for the bench to measure what runs
//! take. The routes answer only with `BATON_TEST_HOOKS` and the admin token.

use serde_json::{json, Value};
use worker::Env;

use baton_core::shard::Shard;

use crate::d1::{Arg, Db, Meta};
use crate::{settings, Error, Result};

/// Runs `sql` with `params` (JSON values bound in order) on the unmetered database of
/// `shard`, or of every shard: `{"rows": [...], "meta": {...}, "shards": [{"rows", "meta"}]}`.
/// Across shards the rows are concatenated in shard order, except a one-row answer of numbers
/// from every shard (an aggregate such as `COUNT(*)`), whose numbers are summed.
pub async fn sql(env: &Env, sql: &str, params: &[Value], shard: Option<u32>) -> Result<Value> {
    let args: Vec<Arg> = params.iter().map(arg_of).collect();
    let shards: Vec<Shard> = match shard {
        Some(index) => vec![Shard::new(index)],
        None => settings::shards(env)?.all().collect(),
    };
    let mut answers = Vec::new();
    for shard in shards {
        let db = Db::unmetered_of_shard(env, shard)?;
        answers.push(db.all::<Value>(sql, &args).await?);
    }
    let mut meta = Meta::default();
    for (_, m) in &answers {
        meta += *m;
    }
    let aggregate = answers.len() > 1
        && answers.iter().all(|(rows, _)| {
            rows.len() == 1 && rows[0].as_object().is_some_and(|row| row.values().all(|v| v.is_number() || v.is_null()))
        });
    let rows: Vec<Value> = if aggregate {
        let mut sum = serde_json::Map::new();
        for (rows, _) in &answers {
            for (column, value) in rows[0].as_object().into_iter().flatten() {
                let entry = sum.entry(column.clone()).or_insert(Value::Null);
                *entry = match (entry.as_f64(), value.as_f64()) {
                    (None, None) => Value::Null,
                    (a, b) => {
                        let total = a.unwrap_or(0.0) + b.unwrap_or(0.0);
                        if total.fract() == 0.0 && total.abs() < 9e15 {
                            json!(total as i64)
                        } else {
                            json!(total)
                        }
                    }
                };
            }
        }
        vec![Value::Object(sum)]
    } else {
        answers.iter().flat_map(|(rows, _)| rows.iter().cloned()).collect()
    };
    let each: Vec<Value> = answers.iter().map(|(rows, meta)| json!({ "rows": rows, "meta": meta })).collect();
    Ok(json!({ "rows": rows, "meta": meta, "shards": each }))
}

/// The databases' size in bytes, as D1 reports it after a query (`meta.size_after`): the
/// pages in use, what D1's size limit counts. `{"bytes": total, "shards": [n, ...]}` (`null`
/// if D1 did not say).
pub async fn database_size(env: &Env) -> Result<Value> {
    let storage = |e: worker::Error| Error::Storage(e.to_string());
    let mut each = Vec::new();
    for shard in settings::shards(env)?.all() {
        let name = shard.binding();
        let database = env.d1(&name).map_err(|e| Error::Binding { name, cause: e.to_string() })?;
        let result = database.prepare("SELECT 1").all().await.map_err(storage)?;
        each.push(result.meta().map_err(storage)?.and_then(|m| m.size_after));
    }
    let total = each.iter().try_fold(0usize, |sum, bytes| bytes.map(|b| sum + b));
    Ok(json!({ "bytes": total, "shards": each }))
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
