//! Binding probes for the workers' health endpoints.

use serde::Serialize;

use crate::{bindings, d1::Db, kv::Kv};

/// The outcome of probing one binding.
#[derive(Debug, Serialize)]
pub struct Probe {
    /// The binding name.
    pub binding: String,
    /// What was tried: "query", "get", "present".
    pub check: &'static str,
    /// Whether it worked.
    pub ok: bool,
    /// The error, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn probe(binding: String, check: &'static str, outcome: Result<(), String>) -> Probe {
    Probe { binding, check, ok: outcome.is_ok(), error: outcome.err() }
}

/// D1: runs `SELECT 1` on every shard's database (`D1_SHARDS`); an invalid shard setting is a
/// failed probe naming the variable.
pub async fn probe_d1(env: &worker::Env) -> Vec<Probe> {
    let shards = match crate::settings::shards(env) {
        Ok(shards) => shards,
        Err(e) => return vec![probe("DB_0".into(), "query", Err(e.to_string()))],
    };
    let mut probes = Vec::new();
    for shard in shards.all() {
        let outcome = match Db::of_shard(env, shard) {
            Ok(db) => db.run("SELECT 1", &[]).await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        probes.push(probe(shard.binding(), "query", outcome));
    }
    probes
}

/// KV: reads a key (absent is fine).
pub async fn probe_kv(env: &worker::Env) -> Probe {
    let outcome = match Kv::from_env(env) {
        Ok(kv) => kv.get_text(bindings::kv_keys::LAST_RUN).await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    probe(bindings::KV.into(), "get", outcome)
}

/// A queue producer: the binding is present.
pub fn probe_queue(env: &worker::Env, name: &'static str) -> Probe {
    probe(name.into(), "present", env.queue(name).map(|_| ()).map_err(|e| e.to_string()))
}

/// A service binding: the binding is present.
pub fn probe_service(env: &worker::Env, name: &'static str) -> Probe {
    probe(name.into(), "present", env.service(name).map(|_| ()).map_err(|e| e.to_string()))
}

/// When this version of the worker was uploaded (`timestamp` of the version metadata binding;
/// under `wrangler dev`, when the stack started). `None` without the binding.
pub fn version_uploaded_at(env: &worker::Env) -> Option<baton_core::time::Millis> {
    let metadata = js_sys::Reflect::get(env, &bindings::VERSION_METADATA.into()).ok()?;
    let timestamp = js_sys::Reflect::get(&metadata, &"timestamp".into()).ok()?.as_string()?;
    baton_core::time::Millis::parse_rfc3339(&timestamp).ok()
}
