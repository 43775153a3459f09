//! Per-client rate limits on the API (`RATE_LIMITS`) and the fixed-window decision.
//!
//! ```json
//! {"default": {"requests": 600, "period_s": 60},
//!  "key-accounts": {"requests": 6000, "period_s": 60, "binding": "RATE_LIMIT_KEY_ACCOUNTS"},
//!  "batch": null}
//! ```
//! A client's own entry wins over `default`; `null` exempts it; with no entry and no
//! `default` it is not limited (an unset or empty setting limits no one). Requests are counted
//! per client (the client of the token, also when it acts for another). `period_s` is 10 or
//! 60: the periods Cloudflare's rate-limiting binding supports, so a limit means the same
//! wherever it is counted. `binding` names the rate-limiting binding that counts the limit
//! when it exists (deployed; its `simple` settings must say the same numbers); without it the
//! edge counts requests in fixed windows ([`window_start`], [`verdict`]).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::json::kind;
use crate::time::Millis;

/// The periods a limit may have, in seconds.
pub const PERIODS_S: [u32; 2] = [10, 60];
/// The key of the limit that applies to clients without an entry of their own.
pub const DEFAULT_KEY: &str = "default";

/// One client's limit: at most `requests` per `period_s` seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Requests allowed per period.
    pub requests: u32,
    /// The period, in seconds (one of [`PERIODS_S`]).
    pub period_s: u32,
    /// The rate-limiting binding that counts this limit, where it exists.
    pub binding: Option<String>,
}

/// The limits of every client, parsed from `RATE_LIMITS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimits {
    default: Option<Limit>,
    /// A client's own limit; `None`: exempt.
    clients: BTreeMap<String, Option<Limit>>,
}

/// Why a `RATE_LIMITS` text was refused; each names the entry and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    /// Not JSON, or not an object.
    #[error("RATE_LIMITS must be a JSON object of client id → {{\"requests\", \"period_s\"}}: {0}")]
    NotAnObject(String),
    /// An entry that is not an object (or null).
    #[error("RATE_LIMITS[{client:?}] must be an object {{\"requests\", \"period_s\"}} or null, got {got}")]
    EntryNotAnObject {
        /// The entry's key.
        client: String,
        /// What it is instead.
        got: &'static str,
    },
    /// A field with a bad value.
    #[error("RATE_LIMITS[{client:?}].{field} {problem}")]
    InvalidField {
        /// The entry's key.
        client: String,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A field that is not known.
    #[error("RATE_LIMITS[{client:?}] has an unknown field `{field}`; expected requests, period_s, binding")]
    UnknownField {
        /// The entry's key.
        client: String,
        /// The field.
        field: String,
    },
}

impl RateLimits {
    /// Parses the setting's text (see the module docs); blank text limits no one.
    pub fn parse(text: &str) -> Result<Self, RateLimitError> {
        if text.trim().is_empty() {
            return Ok(RateLimits::default());
        }
        let value: Value = serde_json::from_str(text).map_err(|e| RateLimitError::NotAnObject(e.to_string()))?;
        let Value::Object(entries) = value else {
            return Err(RateLimitError::NotAnObject(format!("got {}", kind(&value))));
        };
        let mut limits = RateLimits::default();
        for (client, entry) in entries {
            let limit = match entry {
                Value::Null => None,
                Value::Object(fields) => Some(limit_of(&client, &fields)?),
                other => return Err(RateLimitError::EntryNotAnObject { client, got: kind(&other) }),
            };
            if client == DEFAULT_KEY {
                limits.default = limit;
            } else {
                limits.clients.insert(client, limit);
            }
        }
        Ok(limits)
    }

    /// Whether no client is limited.
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.clients.values().all(Option::is_none)
    }

    /// The limit of `client`: its own entry, else the default; `None` when it is not limited.
    pub fn for_client(&self, client: &str) -> Option<&Limit> {
        match self.clients.get(client) {
            Some(own) => own.as_ref(),
            None => self.default.as_ref(),
        }
    }
}

fn limit_of(client: &str, fields: &Map<String, Value>) -> Result<Limit, RateLimitError> {
    let invalid = |field, problem: String| RateLimitError::InvalidField { client: client.to_string(), field, problem };
    if let Some(unknown) = fields.keys().find(|k| !matches!(k.as_str(), "requests" | "period_s" | "binding")) {
        return Err(RateLimitError::UnknownField { client: client.to_string(), field: unknown.clone() });
    }
    let whole = |field: &'static str| match fields.get(field) {
        None => Err(invalid(field, "is missing".into())),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| invalid(field, format!("must be a whole number, got {v}"))),
    };
    let requests = whole("requests")?;
    if requests == 0 {
        return Err(invalid("requests", "must be at least 1 (use null to exempt a client)".into()));
    }
    let period_s = whole("period_s")?;
    if !PERIODS_S.contains(&period_s) {
        return Err(invalid("period_s", format!("must be 10 or 60 (the binding's periods), got {period_s}")));
    }
    let binding = match fields.get("binding") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) if !name.trim().is_empty() => Some(name.trim().to_string()),
        Some(other) => return Err(invalid("binding", format!("must be a binding name, got {other}"))),
    };
    Ok(Limit { requests, period_s, binding })
}

/// The start of the fixed window `now` falls in (windows are aligned to the period).
pub fn window_start(limit: &Limit, now: Millis) -> Millis {
    let period_ms = u64::from(limit.period_s) * 1000;
    Millis::new(now.as_u64() - now.as_u64() % period_ms)
}

/// A request's fate under a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Allowed,
    /// Over it: try again after this many seconds (at least 1).
    Refused {
        /// Seconds until the window ends (`Retry-After`).
        retry_after_s: u32,
    },
}

/// The verdict on a request that is the `count`-th (1-based) in the window starting at
/// `window` under `limit`, at `now`.
pub fn verdict(limit: &Limit, window: Millis, count: u64, now: Millis) -> Verdict {
    if count <= u64::from(limit.requests) {
        return Verdict::Allowed;
    }
    let ends = window.as_u64() + u64::from(limit.period_s) * 1000;
    let left_ms = ends.saturating_sub(now.as_u64());
    Verdict::Refused { retry_after_s: (left_ms.div_ceil(1000) as u32).clamp(1, limit.period_s) }
}

/// The verdict when a binding refused the request: it does not say where its window stands,
/// so the client is told to wait one whole period.
pub fn refused_by_binding(limit: &Limit) -> Verdict {
    Verdict::Refused { retry_after_s: limit.period_s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, period_s: u32) -> Limit {
        Limit { requests, period_s, binding: None }
    }

    #[test]
    fn a_clients_own_entry_wins_over_the_default_and_null_exempts() {
        let limits = RateLimits::parse(
            r#"{"default": {"requests": 600, "period_s": 60}, "alice": {"requests": 5, "period_s": 10, "binding": "RL_ALICE"},
                "bench": null}"#,
        )
        .unwrap();
        assert_eq!(
            limits.for_client("alice"),
            Some(&Limit { requests: 5, period_s: 10, binding: Some("RL_ALICE".into()) })
        );
        assert_eq!(limits.for_client("bob"), Some(&limit(600, 60)));
        assert_eq!(limits.for_client("bench"), None);
        assert!(!limits.is_empty());
        let only_alice = RateLimits::parse(r#"{"alice": {"requests": 5, "period_s": 60}}"#).unwrap();
        assert_eq!(only_alice.for_client("bob"), None);
        for blank in ["", "  ", "{}", r#"{"default": null}"#] {
            assert!(RateLimits::parse(blank).unwrap().is_empty(), "{blank:?}");
        }
    }

    #[test]
    fn malformed_limits_are_refused_naming_the_entry_and_field() {
        for (text, expected) in [
            ("[1]", "RATE_LIMITS must be a JSON object"),
            ("{", "RATE_LIMITS must be a JSON object"),
            (r#"{"alice": 5}"#, r#"RATE_LIMITS["alice"] must be an object"#),
            (r#"{"alice": {"period_s": 60}}"#, r#"RATE_LIMITS["alice"].requests is missing"#),
            (r#"{"alice": {"requests": 0, "period_s": 60}}"#, r#"RATE_LIMITS["alice"].requests must be at least 1"#),
            (
                r#"{"alice": {"requests": -1, "period_s": 60}}"#,
                r#"RATE_LIMITS["alice"].requests must be a whole number"#,
            ),
            (r#"{"default": {"requests": 5, "period_s": 30}}"#, r#"RATE_LIMITS["default"].period_s must be 10 or 60"#),
            (r#"{"alice": {"requests": 5, "period_s": 60, "binding": 3}}"#, r#"RATE_LIMITS["alice"].binding"#),
            (r#"{"alice": {"requests": 5, "period_s": 60, "burst": 3}}"#, "unknown field `burst`"),
        ] {
            let error = RateLimits::parse(text).unwrap_err().to_string();
            assert!(error.starts_with(expected) || error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn a_fixed_window_allows_the_limit_then_refuses_until_it_ends() {
        let l = limit(3, 10);
        let now = Millis::new(1_000_004_250);
        let window = window_start(&l, now);
        assert_eq!(window, Millis::new(1_000_000_000));
        for (count, expected) in [
            (1, Verdict::Allowed),
            (3, Verdict::Allowed),
            (4, Verdict::Refused { retry_after_s: 6 }),
            (100, Verdict::Refused { retry_after_s: 6 }),
        ] {
            assert_eq!(verdict(&l, window, count, now), expected, "{count}");
        }
        // At the very end of a window the client still waits at least a second.
        assert_eq!(verdict(&l, window, 4, Millis::new(1_000_009_999)), Verdict::Refused { retry_after_s: 1 });
        assert_eq!(refused_by_binding(&limit(3, 60)), Verdict::Refused { retry_after_s: 60 });
    }
}
