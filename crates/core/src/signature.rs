//! Signed result callbacks: a service that answered `202` later posts its result to
//! `POST /api/jobs/:trace_id/results/:service` with two headers:
//! - [`TIMESTAMP_HEADER`]: milliseconds since the epoch when it signed;
//! - [`SIGNATURE_HEADER`]: lowercase hex HMAC-SHA256, keyed with `WORKER_SECRET`, of
//!   `"{timestamp}." + body`.
//!
//! The receiver [`verify`]s both against its own `now`, refusing stale or future timestamps
//! (replays) beyond [`DEFAULT_MAX_SKEW_MS`]. HMAC and SHA-256 come from RustCrypto's `hmac` and
//! `sha2` (pure computation: no I/O, no clock, so core still builds for wasm32); the signature is
//! checked with `Mac::verify_slice`, which compares in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::time::Millis;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the signing time (ms since the epoch).
pub const TIMESTAMP_HEADER: &str = "X-Baton-Timestamp";
/// Header carrying the signature (lowercase hex).
pub const SIGNATURE_HEADER: &str = "X-Baton-Signature";
/// How far a callback's timestamp may be from the receiver's clock: 5 minutes.
pub const DEFAULT_MAX_SKEW_MS: u64 = 5 * 60 * 1000;

/// Why a callback's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A header is absent.
    #[error("missing header {header}")]
    MissingHeader {
        /// Which.
        header: &'static str,
    },
    /// The timestamp is not an integer.
    #[error("invalid {TIMESTAMP_HEADER} {value:?}: expected milliseconds since the epoch")]
    InvalidTimestamp {
        /// The value (cut to 100 characters).
        value: String,
    },
    /// The timestamp is too far from `now`.
    #[error("{TIMESTAMP_HEADER} {timestamp} is more than {max_skew_ms} ms from now ({now})")]
    Stale {
        /// The signed time.
        timestamp: Millis,
        /// The receiver's time.
        now: Millis,
        /// The tolerance.
        max_skew_ms: u64,
    },
    /// The signature does not match.
    #[error("signature does not match the body")]
    Mismatch,
}

/// The signature of `body` sent at `timestamp`, keyed with `secret`.
pub fn sign(secret: &str, timestamp: Millis, body: &[u8]) -> String {
    hex::encode(signed_message_mac(secret, timestamp, body).finalize().into_bytes())
}

/// Checks a callback's headers (as received, `None` if absent) against its body at `now`.
pub fn verify(
    secret: &str,
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now: Millis,
    max_skew_ms: u64,
) -> Result<(), SignatureError> {
    let timestamp_text = timestamp_header.ok_or(SignatureError::MissingHeader { header: TIMESTAMP_HEADER })?;
    let signature = signature_header.ok_or(SignatureError::MissingHeader { header: SIGNATURE_HEADER })?;
    let timestamp = timestamp_text
        .trim()
        .parse::<u64>()
        .map(Millis::new)
        .map_err(|_| SignatureError::InvalidTimestamp { value: timestamp_text.chars().take(100).collect() })?;
    let skew = if timestamp > now { timestamp.since(now) } else { now.since(timestamp) };
    if skew > max_skew_ms {
        return Err(SignatureError::Stale { timestamp, now, max_skew_ms });
    }
    // Hex of either case; text that is not hex cannot match.
    let claimed = hex::decode(signature.trim()).map_err(|_| SignatureError::Mismatch)?;
    signed_message_mac(secret, timestamp, body).verify_slice(&claimed).map_err(|_| SignatureError::Mismatch)
}

/// The MAC over `"{timestamp}." + body`, ready to finalize or verify.
fn signed_message_mac(secret: &str, timestamp: Millis, body: &[u8]) -> HmacSha256 {
    let mut mac = keyed(secret.as_bytes());
    mac.update(format!("{}.", timestamp.as_u64()).as_bytes());
    mac.update(body);
    mac
}

#[allow(clippy::expect_used, reason = "HMAC takes keys of any length (longer ones are hashed first)")]
fn keyed(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// Compares in time independent of where the inputs differ (only the length leaks).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = keyed(key);
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// SHA-256 (FIPS 180-4).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_test_vector_holds() {
        let signed = sign("s3cret", Millis::new(1_732_350_000_000), br#"{"a":1}"#);
        assert_eq!(signed, "9908a773272e1453a17699d9dfd7d6dfadda0dbed246ee7983d2a1b38b9be164");
    }

    fn check_sha(input: &[u8], expected: &str) {
        assert_eq!(hex::encode(sha256(input)), expected, "sha256 of {:?}", String::from_utf8_lossy(input));
    }

    #[test]
    fn sha256_matches_the_standard_vectors() {
        check_sha(b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        check_sha(b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        check_sha(
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        );
        check_sha(&[b'a'; 1_000_000], "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    }

    /// Checks HMAC-SHA256 of `message` under `key` both ways: computed, and verified by `Mac::verify_slice`.
    fn check_hmac(key: &[u8], message: &[u8], expected: &str) {
        assert_eq!(hex::encode(hmac_sha256(key, message)), expected, "hmac of {:?}", String::from_utf8_lossy(message));
        let tag = hex::decode(expected).unwrap();
        let mut mac = keyed(key);
        mac.update(message);
        assert!(mac.verify_slice(&tag).is_ok(), "verify_slice of {:?}", String::from_utf8_lossy(message));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 1.
        check_hmac(&[0x0b; 20], b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        // Test case 2: a key shorter than the output.
        check_hmac(
            b"Jefe",
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        );
        // Test case 6: a key longer than the block is hashed first.
        check_hmac(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        );
    }

    #[test]
    fn signature_matches_the_known_vector_for_timestamp_dot_body() {
        // HMAC-SHA256("s3cret", "1737972000000." + body), as `openssl dgst -sha256 -hmac s3cret` gives it.
        let now = Millis::new(1_737_972_000_000);
        let body = br#"{"status":"completed"}"#;
        let expected = "85184cea3fcaf03037dbebf1f0d5f62632102392567d73d6bdb2372216985603";
        assert_eq!(sign("s3cret", now, body), expected);
        let timestamp = now.as_u64().to_string();
        assert_eq!(verify("s3cret", Some(&timestamp), Some(expected), body, now, DEFAULT_MAX_SKEW_MS), Ok(()));
        // Surrounding whitespace is tolerated; a truncated or non-hex signature is a mismatch.
        let padded = format!(" {expected} ");
        assert_eq!(verify("s3cret", Some(&timestamp), Some(&padded), body, now, DEFAULT_MAX_SKEW_MS), Ok(()));
        for wrong in [&expected[..62], "not hex", ""] {
            assert_eq!(
                verify("s3cret", Some(&timestamp), Some(wrong), body, now, DEFAULT_MAX_SKEW_MS),
                Err(SignatureError::Mismatch),
                "signature {wrong:?}"
            );
        }
    }

    #[test]
    fn constant_time_eq_is_equality_of_bytes() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"token2"));
        assert!(!constant_time_eq(b"", b"t"));
    }

    #[test]
    fn signed_callbacks_verify_and_tampering_is_caught() {
        let now = Millis::new(1_737_972_000_000);
        let body = br#"{"status":"completed"}"#;
        let signature = sign("s3cret", now, body);
        let timestamp = now.as_u64().to_string();
        let verify_at = |ts: Option<&str>, sig: Option<&str>, body: &[u8], at: Millis| {
            verify("s3cret", ts, sig, body, at, DEFAULT_MAX_SKEW_MS)
        };
        assert_eq!(verify_at(Some(&timestamp), Some(&signature), body, now), Ok(()));
        assert_eq!(verify_at(Some(&timestamp), Some(&signature.to_uppercase()), body, now), Ok(()));
        assert_eq!(verify_at(Some(&timestamp), Some(&signature), b"{}", now), Err(SignatureError::Mismatch));
        assert_eq!(
            verify("other", Some(&timestamp), Some(&signature), body, now, DEFAULT_MAX_SKEW_MS),
            Err(SignatureError::Mismatch)
        );
        let later = now.saturating_add(DEFAULT_MAX_SKEW_MS + 1);
        assert!(matches!(
            verify_at(Some(&timestamp), Some(&signature), body, later),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(
            verify_at(None, Some(&signature), body, now),
            Err(SignatureError::MissingHeader { header: TIMESTAMP_HEADER })
        );
        assert_eq!(
            verify_at(Some(&timestamp), None, body, now),
            Err(SignatureError::MissingHeader { header: SIGNATURE_HEADER })
        );
        assert!(matches!(
            verify_at(Some("soon"), Some(&signature), body, now),
            Err(SignatureError::InvalidTimestamp { .. })
        ));
    }
}
