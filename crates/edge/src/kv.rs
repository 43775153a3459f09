//! KV access. KV mirrors and configures; it never decides (it is eventually consistent).

use serde::Serialize;
use worker::kv::KvStore;

use crate::{bindings, Error, Result};

/// The KV namespace.
pub struct Kv(KvStore);

impl Kv {
    /// Opens the `KV` binding.
    pub fn from_env(env: &worker::Env) -> Result<Self> {
        env.kv(bindings::KV)
            .map(Kv)
            .map_err(|e| Error::Binding { name: bindings::KV, cause: e.to_string() })
    }

    /// Reads a text value.
    pub async fn get_text(&self, key: &str) -> Result<Option<String>> {
        self.0.get(key).text().await.map_err(|e| Error::Kv(format!("get {key}: {e}")))
    }

    /// Writes a text value.
    pub async fn put_text(&self, key: &str, value: &str) -> Result<()> {
        self.0
            .put(key, value)
            .map_err(|e| Error::Kv(format!("put {key}: {e}")))?
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
        self.0.delete(key).await.map_err(|e| Error::Kv(format!("delete {key}: {e}")))
    }
}
