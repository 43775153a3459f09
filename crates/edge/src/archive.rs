//! The archive (R2, binding `ARCHIVE`): one gzip-compressed JSON object per archived run, keyed
//! so that a client's runs list by time ([`baton_core::retention::archive_key`]). An object is
//! written and read back before anything of its run is deleted from D1.

use std::io::{Read, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{bindings, Error, Result};

/// The archive bucket.
pub struct Archive {
    bucket: worker::Bucket,
}

/// Gzip of `value`'s JSON.
pub fn compress<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(value).map_err(|e| Error::Internal(format!("encoding an archive: {e}")))?;
    // The fast level: a run's JSON is mostly repeated keys, so it compresses well at little CPU.
    let mut encoder = GzEncoder::new(Vec::with_capacity(json.len() / 4), Compression::fast());
    encoder.write_all(&json).map_err(|e| Error::Internal(format!("compressing an archive: {e}")))?;
    encoder.finish().map_err(|e| Error::Internal(format!("compressing an archive: {e}")))
}

/// The value of a gzip-compressed JSON object.
pub fn decompress<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let mut json = Vec::with_capacity(bytes.len() * 4);
    GzDecoder::new(bytes)
        .read_to_end(&mut json)
        .map_err(|e| Error::Storage(format!("an archive object is not gzip: {e}")))?;
    serde_json::from_slice(&json).map_err(|e| Error::Storage(format!("an archive object is unreadable: {e}")))
}

impl Archive {
    /// Opens the `ARCHIVE` binding.
    pub fn from_env(env: &worker::Env) -> Result<Archive> {
        env.bucket(bindings::ARCHIVE)
            .map(|bucket| Archive { bucket })
            .map_err(|e| Error::Binding { name: bindings::ARCHIVE.into(), cause: e.to_string() })
    }

    /// Writes `bytes` at `key`, then reads its size back: `Ok` only once the object stands
    /// whole.
    pub async fn put_verified(&self, key: &str, bytes: Vec<u8>) -> Result<u64> {
        let size = bytes.len() as u64;
        crate::meter::add(|u| u.r2_writes += 1);
        // R2 answers a put once the object is stored (strongly consistent): the object it
        // describes is the check.
        let stored =
            self.bucket.put(key, bytes).execute().await.map_err(|e| Error::Storage(format!("R2 put {key}: {e}")))?;
        match stored {
            Some(object) if object.size() == size => Ok(size),
            Some(object) => Err(Error::Storage(format!("R2 {key}: {} bytes stored of {size}", object.size()))),
            None => Err(Error::Storage(format!("R2 {key}: the put stored nothing"))),
        }
    }

    /// The object at `key`, if there is one.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        crate::meter::add(|u| u.r2_reads += 1);
        let object = self.bucket.get(key).execute().await.map_err(|e| Error::Storage(format!("R2 get {key}: {e}")))?;
        let Some(object) = object else { return Ok(None) };
        let Some(body) = object.body() else { return Ok(None) };
        body.bytes().await.map(Some).map_err(|e| Error::Storage(format!("R2 read {key}: {e}")))
    }

    /// Deletes the object at `key` (nothing if there is none).
    pub async fn delete(&self, key: &str) -> Result<()> {
        crate::meter::add(|u| u.r2_writes += 1);
        self.bucket.delete(key).await.map_err(|e| Error::Storage(format!("R2 delete {key}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_object_round_trips_and_a_damaged_one_is_an_error() {
        let value = serde_json::json!({ "run": { "run_id": "r", "steps": [1, 2, 3] }, "text": "x".repeat(2_000) });
        let bytes = compress(&value).unwrap();
        assert!(bytes.len() < 200, "2 KB of repetition compresses: {} bytes", bytes.len());
        assert_eq!(decompress::<serde_json::Value>(&bytes).unwrap(), value);
        assert!(matches!(decompress::<serde_json::Value>(&bytes[..bytes.len() / 2]), Err(Error::Storage(_))));
        assert!(matches!(decompress::<serde_json::Value>(b"not gzip"), Err(Error::Storage(_))));
    }
}
