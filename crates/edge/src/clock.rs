//! The clock and entropy the workers hand to core (core never reads either itself).

use crate::{Error, Result};

/// Milliseconds since the Unix epoch, from the JS clock (`SystemTime::now()` panics on wasm32).
pub fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// `N` random bytes from the platform's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("getrandom failed: {e}")))?;
    Ok(bytes)
}

/// A random u64, e.g. to seed core's jitter source.
pub fn random_u64() -> Result<u64> {
    Ok(u64::from_le_bytes(random_bytes::<8>()?))
}
