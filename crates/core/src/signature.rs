//! Signed result callbacks: a service that answered `202` later posts its result to
//! `POST /api/jobs/:trace_id/results/:service` with two headers:
//! - [`TIMESTAMP_HEADER`]: milliseconds since the epoch when it signed;
//! - [`SIGNATURE_HEADER`]: lowercase hex HMAC-SHA256, keyed with `WORKER_SECRET`, of
//!   `"{timestamp}." + body`.
//!
//! The receiver [`verify`]s both against its own `now`, refusing stale or future timestamps
//! (replays) beyond [`DEFAULT_MAX_SKEW_MS`]. SHA-256 is implemented here (FIPS 180-4) so core
//! stays dependency-light; it is checked against the standard test vectors.

use crate::time::Millis;

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
    to_hex(&hmac_sha256(secret.as_bytes(), &signed_message(timestamp, body)))
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
    let expected = sign(secret, timestamp, body);
    if constant_time_eq(expected.as_bytes(), signature.trim().to_ascii_lowercase().as_bytes()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn signed_message(timestamp: Millis, body: &[u8]) -> Vec<u8> {
    let mut message = format!("{}.", timestamp.as_u64()).into_bytes();
    message.extend_from_slice(body);
    message
}

/// Compares in time independent of where the inputs differ (only the length leaks).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&sha256(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Vec::with_capacity(64 + message.len());
    inner.extend(block.iter().map(|b| b ^ 0x36));
    inner.extend_from_slice(message);
    let mut outer = Vec::with_capacity(64 + 32);
    outer.extend(block.iter().map(|b| b ^ 0x5c));
    outer.extend_from_slice(&sha256(&inner));
    sha256(&outer)
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
];

/// SHA-256 (FIPS 180-4).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut state: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut padded = data.to_vec();
    padded.push(0x80);
    while padded.len() % 64 != 56 {
        padded.push(0);
    }
    padded.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in padded.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in chunk.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let choice = (e & f) ^ (!e & g);
            let t1 = h.wrapping_add(s1).wrapping_add(choice).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let majority = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(majority);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (slot, value) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *slot = slot.wrapping_add(value);
        }
    }
    let mut digest = [0u8; 32];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_sha(input: &[u8], expected: &str) {
        assert_eq!(to_hex(&sha256(input)), expected, "sha256 of {:?}", String::from_utf8_lossy(input));
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

    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            to_hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            to_hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            to_hex(&hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
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
