//! Retry policy (Temporal-style) with full-jitter backoff, and the random source it draws from.
//!
//! Attempt `n` (1-based) that failed is retried after a delay drawn uniformly from
//! `[0, min(max_interval_ms, initial_interval_ms * backoff_coefficient^(n-1))]` ("full jitter":
//! retries of many steps that failed together spread out instead of arriving in waves).

use serde::{Deserialize, Serialize};

use crate::failure::ErrorKind;

/// At most this many attempts per step (the first one included).
pub const MAX_ATTEMPTS_LIMIT: u32 = 20;

/// The longest interval a policy may configure: one day.
pub const MAX_INTERVAL_LIMIT_MS: u64 = 24 * 60 * 60 * 1000;

/// A source of random 64-bit numbers. Core never reads entropy itself: the edge seeds one
/// (e.g. [`SplitMix64`] from getrandom) and passes it in.
pub trait RandomSource {
    /// The next random number, uniform over all `u64`.
    fn next_u64(&mut self) -> u64;
}

/// A small, fast, deterministic generator (SplitMix64). Not cryptographic: use it for jitter,
/// seeded from getrandom in production and from a constant in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose sequence is fixed by `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// A generator seeded from 8 random bytes (e.g. getrandom's).
    pub const fn from_bytes(seed: [u8; 8]) -> Self {
        SplitMix64 { state: u64::from_le_bytes(seed) }
    }
}

impl RandomSource for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A uniform number in `[0, max]` (inclusive), without overflow for any `max`.
pub fn uniform_inclusive(rng: &mut dyn RandomSource, max: u64) -> u64 {
    // Multiply-shift maps the full u64 range onto [0, max]; its bias is below 2^-64 * max.
    let span = u128::from(max) + 1;
    ((u128::from(rng.next_u64()) * span) >> 64) as u64
}

/// How a step is retried. Serde: snake_case fields, each optional (defaults below).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RetryPolicy {
    /// The cap of the first retry's delay. Default 1000 ms.
    #[serde(alias = "initialIntervalMs")]
    pub initial_interval_ms: u64,
    /// How much the cap grows per attempt; ≥ 1. Default 2.0.
    #[serde(alias = "backoffCoefficient")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1.0)))]
    pub backoff_coefficient: f64,
    /// The largest cap; ≥ `initial_interval_ms`, ≤ one day. Default 60000 ms.
    #[serde(alias = "maxIntervalMs")]
    #[cfg_attr(feature = "schema", schemars(range(max = 86_400_000)))]
    pub max_interval_ms: u64,
    /// Attempts in total, the first included; 1..=20 (1 = never retry). Default 3.
    #[serde(alias = "maxAttempts")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 20)))]
    pub max_attempts: u32,
    /// Error kinds (as their strings, e.g. `"rate_limited"`) never retried, on top of
    /// `permanent`, which never is.
    #[serde(alias = "nonRetryableErrorKinds")]
    pub non_retryable_error_kinds: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_interval_ms: 1000,
            backoff_coefficient: 2.0,
            max_interval_ms: 60_000,
            max_attempts: 3,
            non_retryable_error_kinds: Vec::new(),
        }
    }
}

/// A policy field with an invalid value; names the field and the value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RetryPolicyError {
    /// `backoff_coefficient` below 1, or not a finite number.
    #[error("backoff_coefficient must be a finite number >= 1, got {value}")]
    InvalidCoefficient {
        /// The value given.
        value: f64,
    },
    /// `max_interval_ms` smaller than `initial_interval_ms`.
    #[error("max_interval_ms ({max_interval_ms}) must be >= initial_interval_ms ({initial_interval_ms})")]
    MaxIntervalBelowInitial {
        /// The initial interval.
        initial_interval_ms: u64,
        /// The maximum interval.
        max_interval_ms: u64,
    },
    /// `max_interval_ms` above [`MAX_INTERVAL_LIMIT_MS`].
    #[error("max_interval_ms must be at most {limit_ms}, got {value}")]
    IntervalTooLong {
        /// The value given.
        value: u64,
        /// The limit.
        limit_ms: u64,
    },
    /// `max_attempts` outside `1..=MAX_ATTEMPTS_LIMIT`.
    #[error("max_attempts must be between 1 and {limit}, got {value}")]
    AttemptsOutOfRange {
        /// The value given.
        value: u32,
        /// The limit.
        limit: u32,
    },
    /// An empty string in `non_retryable_error_kinds`.
    #[error("non_retryable_error_kinds[{index}] is empty")]
    EmptyErrorKind {
        /// Its position.
        index: usize,
    },
}

impl RetryPolicyError {
    /// The policy field at fault, e.g. `backoff_coefficient` or `non_retryable_error_kinds[1]`.
    pub fn field(&self) -> String {
        match self {
            RetryPolicyError::InvalidCoefficient { .. } => "backoff_coefficient".to_string(),
            RetryPolicyError::MaxIntervalBelowInitial { .. } | RetryPolicyError::IntervalTooLong { .. } => {
                "max_interval_ms".to_string()
            }
            RetryPolicyError::AttemptsOutOfRange { .. } => "max_attempts".to_string(),
            RetryPolicyError::EmptyErrorKind { index } => format!("non_retryable_error_kinds[{index}]"),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn no_retries() -> Self {
        RetryPolicy { max_attempts: 1, ..RetryPolicy::default() }
    }

    /// Every problem with this policy (empty when valid).
    pub fn problems(&self) -> Vec<RetryPolicyError> {
        let mut problems = Vec::new();
        if !(self.backoff_coefficient.is_finite() && self.backoff_coefficient >= 1.0) {
            problems.push(RetryPolicyError::InvalidCoefficient { value: self.backoff_coefficient });
        }
        if self.max_interval_ms < self.initial_interval_ms {
            problems.push(RetryPolicyError::MaxIntervalBelowInitial {
                initial_interval_ms: self.initial_interval_ms,
                max_interval_ms: self.max_interval_ms,
            });
        }
        if self.max_interval_ms > MAX_INTERVAL_LIMIT_MS {
            problems.push(RetryPolicyError::IntervalTooLong {
                value: self.max_interval_ms,
                limit_ms: MAX_INTERVAL_LIMIT_MS,
            });
        }
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            problems.push(RetryPolicyError::AttemptsOutOfRange { value: self.max_attempts, limit: MAX_ATTEMPTS_LIMIT });
        }
        for (index, kind) in self.non_retryable_error_kinds.iter().enumerate() {
            if kind.trim().is_empty() {
                problems.push(RetryPolicyError::EmptyErrorKind { index });
            }
        }
        problems
    }

    /// The first problem with this policy, if any.
    pub fn validate(&self) -> Result<(), RetryPolicyError> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// The delay cap after attempt `attempt` failed: `min(max, initial * coef^(attempt-1))`.
    pub fn backoff_cap_ms(&self, attempt: u32) -> u64 {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = self.initial_interval_ms as f64 * self.backoff_coefficient.max(1.0).powi(exponent);
        // `as` saturates (and maps NaN to 0), which is what a cap wants.
        (grown as u64).min(self.max_interval_ms)
    }

    /// How long to wait before retrying after attempt `attempt` (1-based) failed; `None` when
    /// that was the last attempt allowed.
    pub fn next_delay(&self, attempt: u32, rng: &mut dyn RandomSource) -> Option<u64> {
        if attempt >= self.max_attempts {
            return None;
        }
        Some(uniform_inclusive(rng, self.backoff_cap_ms(attempt)))
    }

    /// Whether errors of `kind` may be retried: never `permanent`, nor any listed kind.
    pub fn is_retryable(&self, kind: &ErrorKind) -> bool {
        *kind != ErrorKind::Permanent && !self.non_retryable_error_kinds.iter().any(|k| k == kind.as_str())
    }

    /// [`next_delay`](Self::next_delay), or `None` when errors of `kind` are not retried.
    pub fn delay_after(&self, attempt: u32, kind: &ErrorKind, rng: &mut dyn RandomSource) -> Option<u64> {
        if self.is_retryable(kind) {
            self.next_delay(attempt, rng)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Always returns the same number, to pin the jitter to an end of its range.
    struct Fixed(u64);

    impl RandomSource for Fixed {
        fn next_u64(&mut self) -> u64 {
            self.0
        }
    }

    #[test]
    fn defaults_follow_temporal() {
        let policy = RetryPolicy::default();
        assert_eq!(
            (policy.initial_interval_ms, policy.backoff_coefficient, policy.max_interval_ms, policy.max_attempts),
            (1000, 2.0, 60_000, 3)
        );
        assert_eq!(policy.validate(), Ok(()));
    }

    #[test]
    fn cap_grows_geometrically_up_to_the_maximum() {
        let policy = RetryPolicy { max_attempts: 20, ..RetryPolicy::default() };
        let caps: Vec<u64> = (1..=8).map(|attempt| policy.backoff_cap_ms(attempt)).collect();
        assert_eq!(caps, [1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000]);
        assert_eq!(policy.backoff_cap_ms(u32::MAX), 60_000);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.next_delay(2, &mut Fixed(0)), Some(0));
        assert_eq!(policy.next_delay(2, &mut Fixed(u64::MAX)), Some(2000));
        assert_eq!(policy.next_delay(1, &mut Fixed(u64::MAX)), Some(1000));
    }

    #[test]
    fn no_delay_after_the_last_attempt() {
        let policy = RetryPolicy::default();
        let mut rng = SplitMix64::new(1);
        assert!(policy.next_delay(2, &mut rng).is_some());
        assert_eq!(policy.next_delay(3, &mut rng), None);
        assert_eq!(RetryPolicy::no_retries().next_delay(1, &mut rng), None);
    }

    #[test]
    fn permanent_and_listed_kinds_are_not_retried() {
        let policy = RetryPolicy { non_retryable_error_kinds: vec!["rate_limited".into()], ..RetryPolicy::default() };
        let mut rng = SplitMix64::new(1);
        assert_eq!(policy.delay_after(1, &ErrorKind::Permanent, &mut rng), None);
        assert_eq!(policy.delay_after(1, &ErrorKind::RateLimited, &mut rng), None);
        assert!(policy.delay_after(1, &ErrorKind::Transient, &mut rng).is_some());
        assert!(policy.delay_after(1, &ErrorKind::Custom("flaky".into()), &mut rng).is_some());
    }

    #[test]
    fn seeded_source_is_deterministic() {
        let first: Vec<u64> = {
            let mut rng = SplitMix64::new(42);
            (0..5).map(|_| rng.next_u64()).collect()
        };
        let mut again = SplitMix64::from_bytes(42u64.to_le_bytes());
        let second: Vec<u64> = (0..5).map(|_| again.next_u64()).collect();
        assert_eq!(first, second);
        // Reference value of SplitMix64 seeded with 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    fn check(policy: RetryPolicy, expected: &[(&str, &str)]) {
        let got: Vec<(String, String)> = policy.problems().iter().map(|p| (p.field(), p.to_string())).collect();
        let want: Vec<(String, String)> = expected.iter().map(|(f, m)| (f.to_string(), m.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn validation_names_each_bad_field_and_value() {
        check(RetryPolicy::default(), &[]);
        check(
            RetryPolicy { backoff_coefficient: 0.5, ..RetryPolicy::default() },
            &[("backoff_coefficient", "backoff_coefficient must be a finite number >= 1, got 0.5")],
        );
        check(
            RetryPolicy { backoff_coefficient: f64::NAN, ..RetryPolicy::default() },
            &[("backoff_coefficient", "backoff_coefficient must be a finite number >= 1, got NaN")],
        );
        check(
            RetryPolicy { initial_interval_ms: 5000, max_interval_ms: 100, ..RetryPolicy::default() },
            &[("max_interval_ms", "max_interval_ms (100) must be >= initial_interval_ms (5000)")],
        );
        check(
            RetryPolicy { max_interval_ms: MAX_INTERVAL_LIMIT_MS + 1, ..RetryPolicy::default() },
            &[("max_interval_ms", "max_interval_ms must be at most 86400000, got 86400001")],
        );
        check(
            RetryPolicy { max_attempts: 0, ..RetryPolicy::default() },
            &[("max_attempts", "max_attempts must be between 1 and 20, got 0")],
        );
        check(
            RetryPolicy {
                max_attempts: 21,
                non_retryable_error_kinds: vec!["x".into(), " ".into()],
                ..RetryPolicy::default()
            },
            &[
                ("max_attempts", "max_attempts must be between 1 and 20, got 21"),
                ("non_retryable_error_kinds[1]", "non_retryable_error_kinds[1] is empty"),
            ],
        );
    }

    #[test]
    fn serde_fills_defaults_accepts_camel_case_and_rejects_unknown_fields() {
        let policy: RetryPolicy = serde_json::from_str(r#"{"max_attempts": 5}"#).unwrap();
        assert_eq!(policy, RetryPolicy { max_attempts: 5, ..RetryPolicy::default() });
        let camel: RetryPolicy = serde_json::from_str(r#"{"maxAttempts": 5}"#).unwrap();
        assert_eq!(camel, policy);
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"max_tries": 5}"#).is_err());
    }
}
