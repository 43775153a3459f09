//! Signed requests between Baton and services, and between Baton's own workers. A signature
//! binds the key to what it authorises: its purpose, the method, the path, the attempt, the
//! time and the body. Three headers:
//! - [`TIMESTAMP_HEADER`]: milliseconds since the epoch when it was signed;
//! - [`ATTEMPT_HEADER`]: the attempt it is about (absent for a hand-over, which is about a run);
//! - [`SIGNATURE_HEADER`]: `v2=` and the lowercase hex HMAC-SHA256, keyed with the key of the
//!   service concerned (or the internal key between workers), of the string
//!
//! ```text
//! v2\n{purpose}\n{METHOD}\n{path}\n{attempt or -}\n{timestamp}\n{body}
//! ```
//!
//! A request that carries a W3C `traceparent` header ([`crate::trace`]) signs it too, and its
//! `tracestate` (empty when absent), on two more lines before the body:
//!
//! ```text
//! v2\n{purpose}\n{METHOD}\n{path}\n{attempt or -}\n{timestamp}\ntraceparent={traceparent}\ntracestate={tracestate}\n{body}
//! ```
//!
//! where `purpose` is `result` (a service reports a result), `call` (Baton calls a service) or
//! `hand-over` (the orchestrator hands a run to the consumer), and `path` is the request's path
//! without its query. So a signature made for one run, step, attempt or purpose is refused for
//! any other, and a replay of the same request is refused after [`DEFAULT_MAX_SKEW_MS`] (within
//! it, the attempt's own uniqueness makes a replayed result a no-op).
//!
//! The receiver [`verify`]s against its own `now` and every key it accepts (two during a key
//! rotation). HMAC and SHA-256 come from RustCrypto's `hmac` and `sha2` (pure computation: no
//! I/O, no clock, so core still builds for wasm32); the signature is checked with
//! `Mac::verify_slice`, which compares in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::time::Millis;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the signing time (ms since the epoch).
pub const TIMESTAMP_HEADER: &str = "X-Baton-Timestamp";
/// Header carrying the attempt a signed request is about.
pub const ATTEMPT_HEADER: &str = "X-Baton-Attempt";
/// Header carrying the signature (`v2=` + lowercase hex).
pub const SIGNATURE_HEADER: &str = "X-Baton-Signature";
/// The signature scheme this crate writes and reads.
pub const SCHEME: &str = "v2";
/// How far a signed request's timestamp may be from the receiver's clock: 5 minutes.
pub const DEFAULT_MAX_SKEW_MS: u64 = 5 * 60 * 1000;

/// What a signature authorises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A service reports a step's result (`POST /api/jobs/:run/results/:step`).
    Result,
    /// Baton calls a service (handshake, process, progress, result, cancel).
    Call,
    /// The orchestrator hands a run over to the consumer.
    HandOver,
    /// A sender without an API token delivers an event to a run's wait step
    /// (`POST /api/orchestration/runs/:run/events/:name`), with a key of the run's client.
    Event,
}

impl Purpose {
    /// The label in the signed string.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Result => "result",
            Purpose::Call => "call",
            Purpose::HandOver => "hand-over",
            Purpose::Event => "event",
        }
    }

    /// Whether a request of this purpose must name its attempt ([`ATTEMPT_HEADER`]): a result
    /// is always about one attempt of a step.
    pub fn requires_attempt(self) -> bool {
        self == Purpose::Result
    }
}

/// A request as signed: everything the signature covers but the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signed<'a> {
    /// What it authorises.
    pub purpose: Purpose,
    /// The HTTP method (any case).
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The attempt it is about, if any.
    pub attempt: Option<u32>,
    /// The body (empty for a `GET`).
    pub body: &'a [u8],
    /// Its trace context, if it carries one: `traceparent` and `tracestate`.
    pub trace: Option<(&'a str, Option<&'a str>)>,
}

/// Why a signed request was refused.
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
    /// The attempt header is not a positive integer.
    #[error("invalid {ATTEMPT_HEADER} {value:?}: expected the attempt number")]
    InvalidAttempt {
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
    /// Not a `v2=` signature.
    #[error("{SIGNATURE_HEADER} must be `{SCHEME}=` and the hex signature (see the signing scheme)")]
    UnsupportedScheme,
    /// The signature does not match what was sent.
    #[error("signature does not match this request (its purpose, method, path, attempt, time and body)")]
    Mismatch,
    /// No key to check it with.
    #[error("no key is configured to check this signature")]
    NoKey,
}

/// Reads `SERVICE_KEYS`: a JSON object of worker key → key, or → a list of keys (the first
/// signs; all are accepted, for a rotation without downtime).
pub fn parse_service_keys(text: &str) -> Result<std::collections::BTreeMap<String, Vec<String>>, String> {
    parse_keys("SERVICE_KEYS", "worker key", text)
}

/// Reads `EVENT_KEYS`: a JSON object of client id → key, or → a list of keys, with which a
/// sender without an API token signs an event for that client's runs.
pub fn parse_event_keys(text: &str) -> Result<std::collections::BTreeMap<String, Vec<String>>, String> {
    parse_keys("EVENT_KEYS", "client id", text)
}

/// Reads `variable`, a JSON object of `whose` → key or [keys] (none empty).
fn parse_keys(
    variable: &str,
    whose: &str,
    text: &str,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("{variable} is not JSON: {e}"))?;
    let serde_json::Value::Object(entries) = value else {
        return Err(format!("{variable} must be a JSON object of {whose} → key or [keys]"));
    };
    let mut keys = std::collections::BTreeMap::new();
    for (worker, entry) in entries {
        let list: Vec<String> = match &entry {
            serde_json::Value::String(key) => vec![key.clone()],
            serde_json::Value::Array(items) => items.iter().filter_map(|k| k.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        };
        if list.is_empty() || list.iter().any(|k| k.trim().is_empty()) {
            return Err(format!("{variable}.{worker} must be a non-empty key or a list of non-empty keys"));
        }
        keys.insert(worker, list);
    }
    Ok(keys)
}

/// The signature (`v2=...`) of `request` sent at `timestamp`, keyed with `key`.
pub fn sign(key: &str, request: &Signed<'_>, timestamp: Millis) -> String {
    format!("{SCHEME}={}", hex::encode(mac_of(key, request, timestamp).finalize().into_bytes()))
}

/// The headers of `request` signed with `key` at `timestamp`.
pub fn headers(key: &str, request: &Signed<'_>, timestamp: Millis) -> Vec<(&'static str, String)> {
    let mut headers =
        vec![(TIMESTAMP_HEADER, timestamp.as_u64().to_string()), (SIGNATURE_HEADER, sign(key, request, timestamp))];
    if let Some(attempt) = request.attempt {
        headers.push((ATTEMPT_HEADER, attempt.to_string()));
    }
    if let Some((traceparent, state)) = request.trace {
        headers.push((crate::trace::TRACEPARENT, traceparent.to_string()));
        if let Some(state) = state {
            headers.push((crate::trace::TRACESTATE, state.to_string()));
        }
    }
    headers
}

/// Reads the attempt header (`None` if absent).
pub fn attempt_of(header: Option<&str>) -> Result<Option<u32>, SignatureError> {
    header
        .map(|value| {
            value
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|a| *a >= 1)
                .ok_or_else(|| SignatureError::InvalidAttempt { value: value.chars().take(100).collect() })
        })
        .transpose()
}

/// Checks a request's timestamp and signature headers (as received, `None` if absent) against
/// `request` at `now`, with any of `keys`.
pub fn verify(
    keys: &[&str],
    request: &Signed<'_>,
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
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
    let hex_part = signature.trim().strip_prefix("v2=").ok_or(SignatureError::UnsupportedScheme)?;
    // Hex of either case; text that is not hex cannot match.
    let claimed = hex::decode(hex_part).map_err(|_| SignatureError::Mismatch)?;
    if keys.is_empty() {
        return Err(SignatureError::NoKey);
    }
    let mut matched = false;
    // Every key is tried, so the time taken does not say which one matched.
    for key in keys {
        matched |= mac_of(key, request, timestamp).verify_slice(&claimed).is_ok();
    }
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Checks a received request, signed for `purpose` with any of `keys`, at `now`: its method,
/// path and body, and its headers as `header` finds them (by name), its trace context
/// included when it carries one. Returns the attempt it is
/// about.
pub fn verify_received(
    keys: &[String],
    purpose: Purpose,
    (method, path, body): (&str, &str, &[u8]),
    header: impl Fn(&str) -> Option<String>,
    now: Millis,
) -> Result<Option<u32>, SignatureError> {
    let attempt = attempt_of(header(ATTEMPT_HEADER).as_deref())?;
    if attempt.is_none() && purpose.requires_attempt() {
        return Err(SignatureError::MissingHeader { header: ATTEMPT_HEADER });
    }
    let (traceparent, state) = (header(crate::trace::TRACEPARENT), header(crate::trace::TRACESTATE));
    let trace = traceparent.as_deref().map(|tp| (tp, state.as_deref()));
    let request = Signed { purpose, method, path, attempt, body, trace };
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let (timestamp, signature) = (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER));
    verify(&keys, &request, timestamp.as_deref(), signature.as_deref(), now, DEFAULT_MAX_SKEW_MS)?;
    Ok(attempt)
}

/// The MAC over the signed string, ready to finalize or verify.
fn mac_of(key: &str, request: &Signed<'_>, timestamp: Millis) -> HmacSha256 {
    let mut mac = keyed(key.as_bytes());
    let attempt = request.attempt.map_or_else(|| "-".to_string(), |a| a.to_string());
    mac.update(
        format!(
            "{SCHEME}\n{}\n{}\n{}\n{attempt}\n{}\n",
            request.purpose.as_str(),
            request.method.to_ascii_uppercase(),
            request.path,
            timestamp.as_u64()
        )
        .as_bytes(),
    );
    if let Some((traceparent, state)) = request.trace {
        mac.update(format!("traceparent={traceparent}\ntracestate={}\n", state.unwrap_or("")).as_bytes());
    }
    mac.update(request.body);
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

    const NOW: Millis = Millis::new(1_732_350_000_000);

    fn result_callback(body: &[u8]) -> Signed<'_> {
        Signed {
            purpose: Purpose::Result,
            method: "POST",
            path: "/api/jobs/run_1732350000000_a1b2c3d4e5f60718/results/technical-seo",
            attempt: Some(2),
            body,
            trace: None,
        }
    }

    #[test]
    fn the_documented_test_vector_holds() {
        let body = br#"{"status":"completed","attempt":2,"output":{"a":1}}"#;
        let request = result_callback(body);
        let signed = sign("s3cret", &request, NOW);
        assert_eq!(signed, "v2=b60e63f0577f23291db087ca0ee86dd987d76f013e97ed46ed3aa7338c9d112d");
    }

    #[test]
    fn a_signature_holds_only_for_what_it_authorises() {
        let body = br#"{"status":"completed","attempt":2}"#;
        let request = result_callback(body);
        let signature = sign("s3cret", &request, NOW);
        let timestamp = NOW.as_u64().to_string();
        let check = |keys: &[&str], r: &Signed<'_>, sig: &str, at: Millis| {
            verify(keys, r, Some(&timestamp), Some(sig), at, DEFAULT_MAX_SKEW_MS)
        };
        assert_eq!(check(&["s3cret"], &request, &signature, NOW), Ok(()));
        assert_eq!(check(&["new", "s3cret"], &request, &signature, NOW), Ok(()), "either key of a rotation");
        assert_eq!(check(&["s3cret"], &request, &signature.to_uppercase().replace("V2=", "v2="), NOW), Ok(()));
        let other_run =
            Signed { path: "/api/jobs/run_1732350000001_a1b2c3d4e5f60718/results/technical-seo", ..request };
        let other_step =
            Signed { path: "/api/jobs/run_1732350000000_a1b2c3d4e5f60718/results/vitals-monitor", ..request };
        let other_attempt = Signed { attempt: Some(3), ..request };
        let other_purpose = Signed { purpose: Purpose::Call, ..request };
        let other_method = Signed { method: "PUT", ..request };
        let other_body = Signed { body: b"{}", ..request };
        for (what, tampered) in [
            ("run", other_run),
            ("step", other_step),
            ("attempt", other_attempt),
            ("purpose", other_purpose),
            ("method", other_method),
            ("body", other_body),
        ] {
            assert_eq!(check(&["s3cret"], &tampered, &signature, NOW), Err(SignatureError::Mismatch), "another {what}");
        }
        assert_eq!(check(&["other"], &request, &signature, NOW), Err(SignatureError::Mismatch));
        assert_eq!(check(&[], &request, &signature, NOW), Err(SignatureError::NoKey));
        let later = NOW.saturating_add(DEFAULT_MAX_SKEW_MS + 1);
        assert!(matches!(check(&["s3cret"], &request, &signature, later), Err(SignatureError::Stale { .. })));
        let bare = signature.trim_start_matches("v2=").to_string();
        assert_eq!(check(&["s3cret"], &request, &bare, NOW), Err(SignatureError::UnsupportedScheme));
        assert_eq!(
            verify(&["s3cret"], &request, None, Some(&signature), NOW, DEFAULT_MAX_SKEW_MS),
            Err(SignatureError::MissingHeader { header: TIMESTAMP_HEADER })
        );
        assert_eq!(
            verify(&["s3cret"], &request, Some(&timestamp), None, NOW, DEFAULT_MAX_SKEW_MS),
            Err(SignatureError::MissingHeader { header: SIGNATURE_HEADER })
        );
        assert!(matches!(
            verify(&["s3cret"], &request, Some("soon"), Some(&signature), NOW, DEFAULT_MAX_SKEW_MS),
            Err(SignatureError::InvalidTimestamp { .. })
        ));
    }

    #[test]
    fn a_request_with_trace_context_signs_it_and_one_without_signs_as_before() {
        let body = br#"{"status":"completed","attempt":2,"output":{"a":1}}"#;
        let plain = result_callback(body);
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let traced = Signed { trace: Some((traceparent, Some("k=v"))), ..plain };
        // The documented vector's signature is unchanged without trace context.
        assert_eq!(sign("s3cret", &plain, NOW), "v2=b60e63f0577f23291db087ca0ee86dd987d76f013e97ed46ed3aa7338c9d112d");
        let sent = headers("s3cret", &traced, NOW);
        let received = |drop: &'static str, swap: Option<(&'static str, &'static str)>| {
            let sent = sent.clone();
            move |name: &str| match swap {
                Some((n, v)) if n == name => Some(v.to_string()),
                _ => sent.iter().find(|(n, _)| *n == name && *n != drop).map(|(_, v)| v.clone()),
            }
        };
        let http = (traced.method, traced.path, traced.body);
        let keys = ["s3cret".to_string()];
        assert_eq!(verify_received(&keys, Purpose::Result, http, received("", None), NOW), Ok(Some(2)));
        for tampered in [
            received(crate::trace::TRACEPARENT, None),
            received(crate::trace::TRACESTATE, None),
            received("", Some((crate::trace::TRACEPARENT, "00-4bf92f3577b34da6a3ce929d0e0e4737-00f067aa0ba902b7-01"))),
            received("", Some((crate::trace::TRACESTATE, "k=w"))),
        ] {
            assert_eq!(verify_received(&keys, Purpose::Result, http, tampered, NOW), Err(SignatureError::Mismatch));
        }
    }

    #[test]
    fn headers_carry_the_attempt_and_it_reads_back() {
        let request = result_callback(b"");
        let headers = headers("k", &request, NOW);
        let attempt = headers.iter().find(|(name, _)| *name == ATTEMPT_HEADER).map(|(_, v)| v.as_str());
        assert_eq!(attempt_of(attempt), Ok(Some(2)));
        assert_eq!(attempt_of(None), Ok(None));
        assert!(matches!(attempt_of(Some("0")), Err(SignatureError::InvalidAttempt { .. })));
        assert!(matches!(attempt_of(Some("two")), Err(SignatureError::InvalidAttempt { .. })));
    }

    #[test]
    fn a_result_without_its_attempt_header_is_refused_naming_the_header() {
        let request = result_callback(b"{}");
        let sent = headers("k", &request, NOW);
        let received = |skip: &str| {
            let sent = sent.clone();
            let skip = skip.to_string();
            move |name: &str| sent.iter().find(|(n, _)| *n == name && *n != skip).map(|(_, v)| v.clone())
        };
        let http = (request.method, request.path, request.body);
        let keys = ["k".to_string()];
        assert_eq!(verify_received(&keys, Purpose::Result, http, received(""), NOW), Ok(Some(2)));
        let missing = verify_received(&keys, Purpose::Result, http, received(ATTEMPT_HEADER), NOW).unwrap_err();
        assert_eq!(missing, SignatureError::MissingHeader { header: ATTEMPT_HEADER });
        assert_eq!(missing.to_string(), "missing header X-Baton-Attempt");
    }

    #[test]
    fn service_keys_read_as_one_key_or_a_rotation() {
        let keys = parse_service_keys(r#"{"technical-seo": "a", "serp_intelligence": ["new", "old"]}"#).unwrap();
        assert_eq!(keys["technical-seo"], vec!["a"]);
        assert_eq!(keys["serp_intelligence"], vec!["new", "old"]);
        assert!(parse_service_keys("[]").is_err());
        assert_eq!(
            parse_service_keys(r#"{"x": ""}"#).unwrap_err(),
            "SERVICE_KEYS.x must be a non-empty key or a list of non-empty keys"
        );
        assert!(parse_service_keys("nope").unwrap_err().starts_with("SERVICE_KEYS is not JSON"));
        let events = parse_event_keys(r#"{"acme": ["new", "old"]}"#).unwrap();
        assert_eq!(events["acme"], vec!["new", "old"]);
        assert_eq!(
            parse_event_keys("[]").unwrap_err(),
            "EVENT_KEYS must be a JSON object of client id → key or [keys]"
        );
        assert_eq!(
            parse_event_keys(r#"{"acme": [""]}"#).unwrap_err(),
            "EVENT_KEYS.acme must be a non-empty key or a list of non-empty keys"
        );
    }

    fn check_sha(input: &[u8], expected: &str) {
        assert_eq!(hex::encode(sha256(input)), expected, "sha256 of {:?}", String::from_utf8_lossy(input));
    }

    #[test]
    fn sha256_matches_the_standard_vectors() {
        check_sha(b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        check_sha(b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
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
        check_hmac(&[0x0b; 20], b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        check_hmac(
            b"Jefe",
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        );
    }

    #[test]
    fn constant_time_eq_is_equality_of_bytes() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"token2"));
    }
}
