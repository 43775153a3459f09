//! D1 access: the only place SQL lives. One submodule per table; this module holds the
//! statement plumbing (binding arguments, reading `meta`).

pub mod archive;
pub mod dead_letters;
pub mod events;
pub mod executions;
pub mod inbox;
pub mod plans;
pub mod rate_limits;
pub mod resources;
pub mod runs;
pub mod schedules;
pub mod service_slots;
pub mod steps;
pub mod views;
pub mod webhooks;

use baton_core::shard::Shard;
use serde::de::DeserializeOwned;
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, D1Result};

use crate::{Error, Result};

/// `'queued'`: a core status's text as an SQL literal, for a guard or a value written into a
/// statement's text (a partial index, `... WHERE status = 'queued'`, is used only by a query
/// whose text carries the same literal). The text is a core enum's `as_str`, a constant
/// without quotes, never input.
pub(crate) fn literal(text: &'static str) -> String {
    debug_assert!(!text.contains('\''), "{text}");
    format!("'{text}'")
}

/// `?1, ?2, …` for `ids` and their arguments: the list of an `IN (…)` over run ids (at most
/// 100, D1's bound-parameter limit).
pub(crate) fn id_list(ids: &[&str]) -> Result<(String, Vec<Arg>)> {
    if ids.is_empty() || ids.len() > 100 {
        return Err(Error::Internal(format!("{} ids in one statement", ids.len())));
    }
    let list: Vec<String> = (1..=ids.len()).map(|i| format!("?{i}")).collect();
    Ok((list.join(", "), ids.iter().map(|id| Arg::from(*id)).collect()))
}

/// The guard of a statement over several ended runs, each only as the version read:
/// `run_id IN (the ended runs among (run_id, version) = …)`, and its arguments (the ids; the
/// versions are integers written into the text). At most 100 runs.
pub(crate) fn ended_as_read(runs: &[(&str, i64)]) -> Result<(String, Vec<Arg>)> {
    if runs.is_empty() || runs.len() > 100 {
        return Err(Error::Internal(format!("{} runs in one statement", runs.len())));
    }
    let pairs: Vec<String> =
        runs.iter().enumerate().map(|(i, (_, version))| format!("(?{}, {version})", i + 1)).collect();
    let guard = format!(
        "run_id IN (SELECT r.run_id FROM (VALUES {}) AS g JOIN runs r ON r.run_id = g.column1 \
         AND r.version = g.column2 WHERE r.completed_at IS NOT NULL)",
        pairs.join(", ")
    );
    Ok((guard, runs.iter().map(|(id, _)| Arg::from(*id)).collect()))
}

/// A bound SQL argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// SQL NULL.
    Null,
    /// An integer (times are integer milliseconds).
    Int(i64),
    /// A real.
    Real(f64),
    /// Text.
    Text(String),
}

impl Arg {
    fn to_js(&self) -> JsValue {
        match self {
            Arg::Null => JsValue::NULL,
            // D1 stores JS numbers; integers up to 2^53 round-trip exactly.
            Arg::Int(i) => JsValue::from_f64(*i as f64),
            Arg::Real(f) => JsValue::from_f64(*f),
            Arg::Text(s) => JsValue::from_str(s),
        }
    }
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<u64> for Arg {
    fn from(v: u64) -> Self {
        Arg::Int(v as i64)
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Self {
        Arg::Int(v.into())
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Int(v.into())
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_string())
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(v.clone())
    }
}
impl<T: Into<Arg>> From<Option<T>> for Arg {
    fn from(v: Option<T>) -> Self {
        v.map(Into::into).unwrap_or(Arg::Null)
    }
}

/// What a statement cost and changed (D1 bills rows read and written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Meta {
    /// Rows changed: 1 on a guarded UPDATE means this caller won the claim.
    pub changes: u64,
    /// Rows read.
    pub rows_read: u64,
    /// Rows written.
    pub rows_written: u64,
}

impl std::ops::AddAssign for Meta {
    fn add_assign(&mut self, other: Meta) {
        self.changes += other.changes;
        self.rows_read += other.rows_read;
        self.rows_written += other.rows_written;
    }
}

/// The D1 database.
pub struct Db {
    database: D1Database,
    /// Counted in [`crate::meter`] (test hooks are not).
    metered: bool,
    /// Which of the deployment's databases it is.
    shard: Shard,
}

/// A statement ready to run or to batch.
pub struct Stmt(D1PreparedStatement);

impl Db {
    /// Opens the database of `shard` (binding `DB_{k}`).
    pub fn of_shard(env: &worker::Env, shard: Shard) -> Result<Self> {
        let name = shard.binding();
        env.d1(&name)
            .map(|database| Db { database, metered: true, shard })
            .map_err(|e| Error::Binding { name, cause: e.to_string() })
    }

    /// The database of `shard` for the test hooks, whose queries stay out of [`crate::meter`].
    pub fn unmetered_of_shard(env: &worker::Env, shard: Shard) -> Result<Self> {
        Ok(Db { metered: false, ..Db::of_shard(env, shard)? })
    }

    /// Opens the database holding `client`'s data (`D1_SHARDS`, `SHARD_BY_CLIENT`).
    pub fn of_client(env: &worker::Env, client: &str) -> Result<Self> {
        Db::of_shard(env, crate::settings::shards(env)?.of_client(client))
    }

    /// Which shard this database is.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    fn count(&self, metas: &[Meta]) {
        if self.metered {
            crate::meter::add(|u| {
                u.d1_round_trips += 1;
                u.d1_statements += metas.len() as u64;
                u.d1_rows_read += metas.iter().map(|m| m.rows_read).sum::<u64>();
                u.d1_rows_written += metas.iter().map(|m| m.rows_written).sum::<u64>();
            });
        }
    }

    /// Prepares `sql` with positional arguments (`?1`, `?2`, ... or `?`).
    pub fn stmt(&self, sql: &str, args: &[Arg]) -> Result<Stmt> {
        let js: Vec<JsValue> = args.iter().map(Arg::to_js).collect();
        self.database.prepare(sql).bind(&js).map(Stmt).map_err(|e| Error::Storage(format!("binding arguments: {e}")))
    }

    /// Runs a statement for its effect.
    pub async fn run(&self, sql: &str, args: &[Arg]) -> Result<Meta> {
        let result = self.stmt(sql, args)?.0.run().await.map_err(storage_error)?;
        let meta = meta_of(&result);
        self.count(&[meta]);
        Ok(meta)
    }

    /// Runs a query and decodes every row.
    pub async fn all<T: DeserializeOwned>(&self, sql: &str, args: &[Arg]) -> Result<(Vec<T>, Meta)> {
        let result = self.stmt(sql, args)?.0.all().await.map_err(storage_error)?;
        let rows = result.results::<T>().map_err(|e| Error::Storage(format!("decoding rows: {e}")))?;
        let meta = meta_of(&result);
        self.count(&[meta]);
        Ok((rows, meta))
    }

    /// Runs a query and decodes the first row, if any.
    pub async fn first<T: DeserializeOwned>(&self, sql: &str, args: &[Arg]) -> Result<Option<T>> {
        let (rows, _) = self.all::<T>(sql, args).await?;
        Ok(rows.into_iter().next())
    }

    /// Runs statements in order as one transaction: all take effect or none.
    pub async fn batch(&self, stmts: Vec<Stmt>) -> Result<Vec<Meta>> {
        if stmts.is_empty() {
            return Ok(Vec::new());
        }
        let results = self.database.batch(stmts.into_iter().map(|s| s.0).collect()).await.map_err(storage_error)?;
        let metas: Vec<Meta> = results.iter().map(meta_of).collect();
        self.count(&metas);
        Ok(metas)
    }

    /// Runs a batch; each statement's rows are decoded on demand, into its own type.
    pub async fn batch_results(&self, stmts: Vec<Stmt>) -> Result<Results> {
        if stmts.is_empty() {
            return Ok(Results(Vec::new()));
        }
        let results = self.database.batch(stmts.into_iter().map(|s| s.0).collect()).await.map_err(storage_error)?;
        self.count(&results.iter().map(meta_of).collect::<Vec<_>>());
        Ok(Results(results))
    }

    /// Runs a batch and decodes the rows of each statement as JSON values.
    pub async fn batch_rows(&self, stmts: Vec<Stmt>) -> Result<Vec<(Vec<serde_json::Value>, Meta)>> {
        if stmts.is_empty() {
            return Ok(Vec::new());
        }
        let results = self.database.batch(stmts.into_iter().map(|s| s.0).collect()).await.map_err(storage_error)?;
        self.count(&results.iter().map(meta_of).collect::<Vec<_>>());
        results
            .iter()
            .map(|r| {
                let rows =
                    r.results::<serde_json::Value>().map_err(|e| Error::Storage(format!("decoding rows: {e}")))?;
                Ok((rows, meta_of(r)))
            })
            .collect()
    }
}

/// The results of a batch ([`Db::batch_results`]), by statement.
pub struct Results(Vec<D1Result>);

impl Results {
    /// The rows of statement `i` as `T` (none if there is no such statement).
    pub fn rows<T: DeserializeOwned>(&self, i: usize) -> Result<Vec<T>> {
        match self.0.get(i) {
            Some(result) => result.results::<T>().map_err(|e| Error::Storage(format!("decoding rows: {e}"))),
            None => Ok(Vec::new()),
        }
    }
}

fn storage_error(e: worker::Error) -> Error {
    Error::Storage(e.to_string())
}

fn meta_of(result: &D1Result) -> Meta {
    match result.meta() {
        Ok(Some(m)) => Meta {
            changes: m.changes.unwrap_or(0) as u64,
            rows_read: m.rows_read.unwrap_or(0) as u64,
            rows_written: m.rows_written.unwrap_or(0) as u64,
        },
        _ => Meta::default(),
    }
}
