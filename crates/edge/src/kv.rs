//! KV access. KV mirrors and configures; it never decides (it is eventually consistent).

use serde::Serialize;
use worker::kv::KvStore;

use crate::{bindings, Error, Result};

/// The KV namespace.
pub struct Kv {
    store: KvStore,
    /// Resilience tests make every KV call fail (`BATON_FAULT_INJECTION` containing `kv`).
    failing: bool,
}

impl Kv {
    /// Opens the `KV` binding.
    pub fn from_env(env: &worker::Env) -> Result<Self> {
        let store =
            env.kv(bindings::KV).map_err(|e| Error::Binding { name: bindings::KV.into(), cause: e.to_string() })?;
        Ok(Kv { store, failing: crate::faults::injected(env, "kv") })
    }

    fn check(&self, op: &str, key: &str) -> Result<()> {
        if self.failing {
            return Err(Error::Kv(format!("{op} {key}: injected fault")));
        }
        Ok(())
    }

    /// Reads a text value.
    pub async fn get_text(&self, key: &str) -> Result<Option<String>> {
        self.check("get", key)?;
        crate::meter::add(|u| u.kv_reads += 1);
        self.store.get(key).text().await.map_err(|e| Error::Kv(format!("get {key}: {e}")))
    }

    /// Writes a text value.
    pub async fn put_text(&self, key: &str, value: &str) -> Result<()> {
        self.check("put", key)?;
        crate::meter::add(|u| u.kv_writes += 1);
        self.store
            .put(key, value)
            .map_err(|e| Error::Kv(format!("put {key}: {e}")))?
            .execute()
            .await
            .map_err(|e| Error::Kv(format!("put {key}: {e}")))
    }

    /// Writes a text value that KV forgets after `ttl_seconds` (at least 60).
    pub async fn put_text_expiring(&self, key: &str, value: &str, ttl_seconds: u64) -> Result<()> {
        self.check("put", key)?;
        crate::meter::add(|u| u.kv_writes += 1);
        self.store
            .put(key, value)
            .map_err(|e| Error::Kv(format!("put {key}: {e}")))?
            .expiration_ttl(ttl_seconds)
            .execute()
            .await
            .map_err(|e| Error::Kv(format!("put {key}: {e}")))
    }

    /// Writes a JSON value.
    pub async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let text = serde_json::to_string(value).map_err(|e| Error::Internal(e.to_string()))?;
        self.put_text(key, &text).await
    }

    /// Deletes a key.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.check("delete", key)?;
        crate::meter::add(|u| u.kv_writes += 1);
        self.store.delete(key).await.map_err(|e| Error::Kv(format!("delete {key}: {e}")))
    }
}
