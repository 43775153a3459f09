//! Orchestration configuration: environment variables, then runtime overrides from the KV
//! value `orchestration:config`.
//!
//! | key | type | default | bounds |
//! |---|---|---|---|
//! | `POLLING_FREQUENCY_MINUTES` | integer | 5 | 1..=1440 |
//! | `JOB_TIMEOUT_MINUTES` | integer | 30 | 1..=10080 |
//! | `ENABLE_PARTIAL_DATA` | bool | true | |
//! | `EVENT_DRIVEN_FANIN` | bool | true (false: only the poller fans in, for tests) | |
//! | `POLLER_BATCH_SIZE` | integer | 100 | 1..=1000 |
//! | `ANALYSIS_TIMEOUT_SECONDS` | integer | 120 | 1..=3600 |
//!
//! Environment values are strings; an absent or blank variable means the default. Booleans
//! read `true`/`false`/`1`/`0`/`yes`/`no` (any case). Overrides are a JSON object whose
//! values may be numbers/booleans or their string forms; `null` keeps the base value. Any
//! invalid value, and any unknown key, is an error naming the key and the value.

use serde_json::Value;

use crate::fanin::FanInConfig;
use crate::time::{Millis, MINUTE_MS};

/// `POLLING_FREQUENCY_MINUTES`.
pub const POLLING_FREQUENCY_MINUTES: &str = "POLLING_FREQUENCY_MINUTES";
/// `JOB_TIMEOUT_MINUTES`.
pub const JOB_TIMEOUT_MINUTES: &str = "JOB_TIMEOUT_MINUTES";
/// `ENABLE_PARTIAL_DATA`.
pub const ENABLE_PARTIAL_DATA: &str = "ENABLE_PARTIAL_DATA";
/// `EVENT_DRIVEN_FANIN`.
pub const EVENT_DRIVEN_FANIN: &str = "EVENT_DRIVEN_FANIN";
/// `POLLER_BATCH_SIZE`.
pub const POLLER_BATCH_SIZE: &str = "POLLER_BATCH_SIZE";
/// `ANALYSIS_TIMEOUT_SECONDS`.
pub const ANALYSIS_TIMEOUT_SECONDS: &str = "ANALYSIS_TIMEOUT_SECONDS";
/// Every key, in the order of [`Config`]'s fields.
pub const KEYS: [&str; 6] = [
    POLLING_FREQUENCY_MINUTES,
    JOB_TIMEOUT_MINUTES,
    ENABLE_PARTIAL_DATA,
    EVENT_DRIVEN_FANIN,
    POLLER_BATCH_SIZE,
    ANALYSIS_TIMEOUT_SECONDS,
];

/// The KV key holding runtime overrides.
pub const OVERRIDE_KV_KEY: &str = "orchestration:config";

/// Cron fires every minute but not to the millisecond; a tick this early still counts as due.
pub const POLL_SLACK_MS: u64 = 30_000;

/// The resolved configuration. Build it with [`Config::from_env`] / [`apply_override`], which
/// enforce the bounds in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How often the poller acts, in minutes.
    pub polling_frequency_minutes: u32,
    /// Longest any run may take, in minutes.
    pub job_timeout_minutes: u32,
    /// Aggregate runs with missing steps.
    pub enable_partial_data: bool,
    /// Fan in the moment the last result arrives (false: leave it to the poller).
    pub event_driven_fanin: bool,
    /// How many due runs the poller handles per tick.
    pub poller_batch_size: u32,
    /// How long an analysis may take after the fan-in claim before the poller sends its
    /// message again (a consumer that died mid-analysis loses nothing).
    pub analysis_timeout_seconds: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            polling_frequency_minutes: 5,
            job_timeout_minutes: 30,
            enable_partial_data: true,
            event_driven_fanin: true,
            poller_batch_size: 100,
            analysis_timeout_seconds: 120,
        }
    }
}

/// A configuration value or override that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value of the wrong type or out of bounds.
    #[error("invalid {key}: {value}: expected {expected}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value as given (JSON-encoded for overrides), cut to 100 characters.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// An override key that is not a configuration key.
    #[error("unknown configuration key {key:?} (known: {})", KEYS.join(", "))]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// The override is not a JSON object.
    #[error("configuration override is not a JSON object: {reason}")]
    MalformedOverride {
        /// Why.
        reason: String,
    },
}

/// The environment's raw values, one `Option<&str>` each (absent → default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnvVars<'a> {
    /// `POLLING_FREQUENCY_MINUTES`.
    pub polling_frequency_minutes: Option<&'a str>,
    /// `JOB_TIMEOUT_MINUTES`.
    pub job_timeout_minutes: Option<&'a str>,
    /// `ENABLE_PARTIAL_DATA`.
    pub enable_partial_data: Option<&'a str>,
    /// `EVENT_DRIVEN_FANIN`.
    pub event_driven_fanin: Option<&'a str>,
    /// `POLLER_BATCH_SIZE`.
    pub poller_batch_size: Option<&'a str>,
    /// `ANALYSIS_TIMEOUT_SECONDS`.
    pub analysis_timeout_seconds: Option<&'a str>,
}

/// A raw value: text from the environment or JSON from an override.
enum Raw<'a> {
    Text(&'a str),
    Json(&'a Value),
}

impl Raw<'_> {
    fn shown(&self) -> String {
        let shown = match self {
            Raw::Text(text) => format!("{text:?}"),
            Raw::Json(value) => value.to_string(),
        };
        shown.chars().take(100).collect()
    }
}

fn invalid(key: &str, raw: &Raw<'_>, expected: &'static str) -> ConfigError {
    ConfigError::InvalidValue { key: key.to_string(), value: raw.shown(), expected }
}

fn parse_bounded(key: &str, raw: &Raw<'_>, min: u32, max: u32, expected: &'static str) -> Result<u32, ConfigError> {
    let number = match raw {
        Raw::Text(text) => text.trim().parse::<u64>().ok(),
        Raw::Json(Value::Number(number)) => number.as_u64(),
        Raw::Json(Value::String(text)) => text.trim().parse::<u64>().ok(),
        Raw::Json(_) => None,
    };
    number
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| invalid(key, raw, expected))
}

fn parse_bool(key: &str, raw: &Raw<'_>) -> Result<bool, ConfigError> {
    let text_bool = |text: &str| match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    };
    let parsed = match raw {
        Raw::Text(text) => text_bool(text),
        Raw::Json(Value::Bool(b)) => Some(*b),
        Raw::Json(Value::String(text)) => text_bool(text),
        Raw::Json(Value::Number(n)) => match n.as_u64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Raw::Json(_) => None,
    };
    parsed.ok_or_else(|| invalid(key, raw, "true or false"))
}

impl Config {
    /// The configuration from environment values; absent or blank → default.
    pub fn from_env(vars: &EnvVars<'_>) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        let values = [
            (POLLING_FREQUENCY_MINUTES, vars.polling_frequency_minutes),
            (JOB_TIMEOUT_MINUTES, vars.job_timeout_minutes),
            (ENABLE_PARTIAL_DATA, vars.enable_partial_data),
            (EVENT_DRIVEN_FANIN, vars.event_driven_fanin),
            (POLLER_BATCH_SIZE, vars.poller_batch_size),
            (ANALYSIS_TIMEOUT_SECONDS, vars.analysis_timeout_seconds),
        ];
        for (key, value) in values {
            if let Some(text) = value.filter(|t| !t.trim().is_empty()) {
                config.set(key, &Raw::Text(text))?;
            }
        }
        Ok(config)
    }

    /// [`from_env`](Self::from_env) with a lookup by key name (e.g. over `env.var`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let values: Vec<Option<String>> = KEYS.iter().map(|key| lookup(key)).collect();
        Config::from_env(&EnvVars {
            polling_frequency_minutes: values[0].as_deref(),
            job_timeout_minutes: values[1].as_deref(),
            enable_partial_data: values[2].as_deref(),
            event_driven_fanin: values[3].as_deref(),
            poller_batch_size: values[4].as_deref(),
            analysis_timeout_seconds: values[5].as_deref(),
        })
    }

    fn set(&mut self, key: &str, raw: &Raw<'_>) -> Result<(), ConfigError> {
        match key {
            POLLING_FREQUENCY_MINUTES => {
                self.polling_frequency_minutes = parse_bounded(key, raw, 1, 1440, "an integer from 1 to 1440")?
            }
            JOB_TIMEOUT_MINUTES => {
                self.job_timeout_minutes = parse_bounded(key, raw, 1, 10_080, "an integer from 1 to 10080")?
            }
            ENABLE_PARTIAL_DATA => self.enable_partial_data = parse_bool(key, raw)?,
            EVENT_DRIVEN_FANIN => self.event_driven_fanin = parse_bool(key, raw)?,
            POLLER_BATCH_SIZE => {
                self.poller_batch_size = parse_bounded(key, raw, 1, 1000, "an integer from 1 to 1000")?
            }
            ANALYSIS_TIMEOUT_SECONDS => {
                self.analysis_timeout_seconds = parse_bounded(key, raw, 1, 3600, "an integer from 1 to 3600")?
            }
            other => return Err(ConfigError::UnknownKey { key: other.chars().take(100).collect() }),
        }
        Ok(())
    }

    /// Every key with its value, as an override object: applied to any base it gives this
    /// configuration (a worker hands its effective configuration to another this way).
    pub fn to_override(&self) -> Value {
        serde_json::json!({
            POLLING_FREQUENCY_MINUTES: self.polling_frequency_minutes,
            JOB_TIMEOUT_MINUTES: self.job_timeout_minutes,
            ENABLE_PARTIAL_DATA: self.enable_partial_data,
            EVENT_DRIVEN_FANIN: self.event_driven_fanin,
            POLLER_BATCH_SIZE: self.poller_batch_size,
            ANALYSIS_TIMEOUT_SECONDS: self.analysis_timeout_seconds,
        })
    }

    /// The job timeout in milliseconds.
    pub fn job_timeout_ms(&self) -> u64 {
        u64::from(self.job_timeout_minutes) * MINUTE_MS
    }

    /// The analysis timeout in milliseconds.
    pub fn analysis_timeout_ms(&self) -> u64 {
        u64::from(self.analysis_timeout_seconds) * 1000
    }

    /// The polling interval in milliseconds.
    pub fn polling_frequency_ms(&self) -> u64 {
        u64::from(self.polling_frequency_minutes) * MINUTE_MS
    }

    /// What fan-in needs.
    pub fn fan_in(&self) -> FanInConfig {
        FanInConfig { enable_partial_data: self.enable_partial_data, job_timeout_ms: self.job_timeout_ms() }
    }

    /// Whether the poller (fired every minute by cron) should act at `now`, given when it last
    /// did: never acted, or at least the polling interval ago (minus [`POLL_SLACK_MS`]).
    pub fn poll_due(&self, last_run: Option<Millis>, now: Millis) -> bool {
        match last_run {
            None => true,
            Some(last) => now.saturating_add(POLL_SLACK_MS) >= last.saturating_add(self.polling_frequency_ms()),
        }
    }
}

/// `base` with the overrides in `json` (the KV value) applied. On error the caller keeps
/// `base` and reports the rejection; nothing is applied partially.
pub fn apply_override(base: &Config, json: &str) -> Result<Config, ConfigError> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| ConfigError::MalformedOverride { reason: e.to_string() })?;
    let Value::Object(entries) = value else {
        return Err(ConfigError::MalformedOverride { reason: format!("got {}", crate::json::kind(&value)) });
    };
    let mut config = *base;
    for (key, value) in &entries {
        if value.is_null() && KEYS.contains(&key.as_str()) {
            continue;
        }
        config.set(key, &Raw::Json(value))?;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let config = Config::from_env(&EnvVars::default()).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(
            (config.polling_frequency_minutes, config.job_timeout_minutes, config.enable_partial_data),
            (5, 30, true)
        );
        assert!(config.event_driven_fanin);
        assert_eq!(config.poller_batch_size, 100);
        assert_eq!(config.analysis_timeout_ms(), 120_000);
        assert_eq!(config.fan_in(), FanInConfig { enable_partial_data: true, job_timeout_ms: 1_800_000 });
    }

    #[test]
    fn env_strings_are_parsed_and_blank_means_default() {
        let config = Config::from_env(&EnvVars {
            polling_frequency_minutes: Some("1"),
            job_timeout_minutes: Some(" 60 "),
            enable_partial_data: Some("FALSE"),
            event_driven_fanin: Some(""),
            poller_batch_size: Some("1000"),
            analysis_timeout_seconds: Some("15"),
        })
        .unwrap();
        assert_eq!(
            config,
            Config {
                polling_frequency_minutes: 1,
                job_timeout_minutes: 60,
                enable_partial_data: false,
                event_driven_fanin: true,
                poller_batch_size: 1000,
                analysis_timeout_seconds: 15,
            }
        );
        let looked_up = Config::from_lookup(|key| (key == JOB_TIMEOUT_MINUTES).then(|| "45".to_string())).unwrap();
        assert_eq!(looked_up.job_timeout_minutes, 45);
    }

    fn check_env(vars: EnvVars<'_>, expected: &str) {
        assert_eq!(Config::from_env(&vars).unwrap_err().to_string(), expected);
    }

    #[test]
    fn invalid_env_values_name_key_and_value() {
        check_env(
            EnvVars { polling_frequency_minutes: Some("0"), ..EnvVars::default() },
            "invalid POLLING_FREQUENCY_MINUTES: \"0\": expected an integer from 1 to 1440",
        );
        check_env(
            EnvVars { polling_frequency_minutes: Some("1441"), ..EnvVars::default() },
            "invalid POLLING_FREQUENCY_MINUTES: \"1441\": expected an integer from 1 to 1440",
        );
        check_env(
            EnvVars { job_timeout_minutes: Some("10081"), ..EnvVars::default() },
            "invalid JOB_TIMEOUT_MINUTES: \"10081\": expected an integer from 1 to 10080",
        );
        check_env(
            EnvVars { job_timeout_minutes: Some("-5"), ..EnvVars::default() },
            "invalid JOB_TIMEOUT_MINUTES: \"-5\": expected an integer from 1 to 10080",
        );
        check_env(
            EnvVars { enable_partial_data: Some("maybe"), ..EnvVars::default() },
            "invalid ENABLE_PARTIAL_DATA: \"maybe\": expected true or false",
        );
        check_env(
            EnvVars { event_driven_fanin: Some("2"), ..EnvVars::default() },
            "invalid EVENT_DRIVEN_FANIN: \"2\": expected true or false",
        );
        check_env(
            EnvVars { poller_batch_size: Some("1001"), ..EnvVars::default() },
            "invalid POLLER_BATCH_SIZE: \"1001\": expected an integer from 1 to 1000",
        );
        check_env(
            EnvVars { analysis_timeout_seconds: Some("0"), ..EnvVars::default() },
            "invalid ANALYSIS_TIMEOUT_SECONDS: \"0\": expected an integer from 1 to 3600",
        );
    }

    #[test]
    fn overrides_accept_json_values_and_their_string_forms() {
        let base = Config::default();
        let config =
            apply_override(&base, r#"{"POLLING_FREQUENCY_MINUTES": 1, "ENABLE_PARTIAL_DATA": false}"#).unwrap();
        assert_eq!((config.polling_frequency_minutes, config.enable_partial_data), (1, false));
        let config = apply_override(
            &base,
            r#"{"JOB_TIMEOUT_MINUTES": "10", "EVENT_DRIVEN_FANIN": "false", "POLLER_BATCH_SIZE": 5, "ENABLE_PARTIAL_DATA": null}"#,
        )
        .unwrap();
        assert_eq!((config.job_timeout_minutes, config.event_driven_fanin, config.poller_batch_size), (10, false, 5));
        assert!(config.enable_partial_data);
        assert_eq!(apply_override(&base, "{}").unwrap(), base);
    }

    #[test]
    fn a_configuration_handed_over_as_an_override_is_the_same_on_any_base() {
        let config = Config {
            polling_frequency_minutes: 7,
            job_timeout_minutes: 9,
            enable_partial_data: false,
            event_driven_fanin: false,
            poller_batch_size: 11,
            analysis_timeout_seconds: 13,
        };
        let json = config.to_override().to_string();
        assert_eq!(apply_override(&Config::default(), &json).unwrap(), config);
        assert_eq!(apply_override(&config, &Config::default().to_override().to_string()).unwrap(), Config::default());
    }

    fn check_override(json: &str, expected: &str) {
        assert_eq!(apply_override(&Config::default(), json).unwrap_err().to_string(), expected, "{json}");
    }

    #[test]
    fn invalid_overrides_name_key_and_value() {
        check_override(
            r#"{"POLLING_FREQUENCY_MINUTES": 0}"#,
            "invalid POLLING_FREQUENCY_MINUTES: 0: expected an integer from 1 to 1440",
        );
        check_override(
            r#"{"JOB_TIMEOUT_MINUTES": 1.5}"#,
            "invalid JOB_TIMEOUT_MINUTES: 1.5: expected an integer from 1 to 10080",
        );
        check_override(
            r#"{"ENABLE_PARTIAL_DATA": "sometimes"}"#,
            "invalid ENABLE_PARTIAL_DATA: \"sometimes\": expected true or false",
        );
        check_override(
            r#"{"POLLER_BATCH_SIZE": [1]}"#,
            "invalid POLLER_BATCH_SIZE: [1]: expected an integer from 1 to 1000",
        );
        check_override(
            r#"{"ANALYSIS_TIMEOUT_SECONDS": 3601}"#,
            "invalid ANALYSIS_TIMEOUT_SECONDS: 3601: expected an integer from 1 to 3600",
        );
        check_override(
            r#"{"POLLING_FREQUENCY": 1}"#,
            "unknown configuration key \"POLLING_FREQUENCY\" (known: POLLING_FREQUENCY_MINUTES, JOB_TIMEOUT_MINUTES, ENABLE_PARTIAL_DATA, EVENT_DRIVEN_FANIN, POLLER_BATCH_SIZE, ANALYSIS_TIMEOUT_SECONDS)",
        );
        check_override("[1, 2]", "configuration override is not a JSON object: got an array");
        assert!(matches!(apply_override(&Config::default(), "{not json"), Err(ConfigError::MalformedOverride { .. })));
    }

    #[test]
    fn poll_is_due_after_the_interval_with_cron_slack() {
        let config = Config { polling_frequency_minutes: 5, ..Config::default() };
        let last = Millis::new(10 * MINUTE_MS);
        assert!(config.poll_due(None, last));
        assert!(!config.poll_due(Some(last), Millis::new(14 * MINUTE_MS)));
        assert!(config.poll_due(Some(last), Millis::new(15 * MINUTE_MS - 1000)));
        assert!(config.poll_due(Some(last), Millis::new(15 * MINUTE_MS)));
    }
}
