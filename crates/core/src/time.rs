//! Instants as milliseconds since the Unix epoch, and their RFC 3339 form.
//!
//! Core never reads the clock: callers pass `now` in. Durations are plain `u64`
//! milliseconds (fields named `*_ms`); [`Millis`] is only ever an instant.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};

/// One minute in milliseconds.
pub const MINUTE_MS: u64 = 60_000;

/// The latest instant with a four-digit year, `9999-12-31T23:59:59.999Z`. Later instants
/// format as this one, so formatting never fails.
pub const MAX_RFC3339_MS: u64 = 253_402_300_799_999;

/// An instant: milliseconds since the Unix epoch (UTC). Serialises as a JSON number, the way
/// D1 stores it; use [`rfc3339`] / [`rfc3339_option`] for the string form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(u64);

/// A timestamp string that is not an RFC 3339 instant at or after the epoch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not RFC 3339 at all.
    #[error("invalid RFC 3339 timestamp {value:?}: {reason}")]
    Invalid {
        /// The offending text.
        value: String,
        /// What the parser objected to.
        reason: String,
    },
    /// A valid instant, but before 1970-01-01T00:00:00Z.
    #[error("timestamp {value:?} is before the Unix epoch")]
    BeforeEpoch {
        /// The offending text.
        value: String,
    },
}

impl Millis {
    /// The epoch itself.
    pub const ZERO: Millis = Millis(0);

    /// The instant `ms` milliseconds after the epoch.
    pub const fn new(ms: u64) -> Self {
        Millis(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// `self + ms`, stopping at `u64::MAX` instead of overflowing.
    #[must_use]
    pub const fn saturating_add(self, ms: u64) -> Self {
        Millis(self.0.saturating_add(ms))
    }

    /// `self - ms`, stopping at the epoch instead of underflowing.
    #[must_use]
    pub const fn saturating_sub(self, ms: u64) -> Self {
        Millis(self.0.saturating_sub(ms))
    }

    /// Milliseconds from `earlier` to `self`; zero if `earlier` is later.
    pub const fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// `2025-01-27T10:00:00.000Z`: millisecond precision, always `Z`.
    pub fn to_rfc3339(self) -> String {
        let clamped = self.0.min(MAX_RFC3339_MS);
        // In range by construction: MAX_RFC3339_MS fits both i64 and chrono's range.
        match DateTime::from_timestamp_millis(i64::try_from(clamped).unwrap_or(0)) {
            Some(instant) => instant.to_rfc3339_opts(SecondsFormat::Millis, true),
            None => "9999-12-31T23:59:59.999Z".to_string(),
        }
    }

    /// Parses any RFC 3339 instant (any offset, any fraction; sub-millisecond digits are
    /// truncated). Instants before the epoch are rejected.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimeError> {
        let parsed = DateTime::parse_from_rfc3339(text)
            .map_err(|e| TimeError::Invalid { value: text.to_string(), reason: e.to_string() })?;
        u64::try_from(parsed.timestamp_millis())
            .map(Millis)
            .map_err(|_| TimeError::BeforeEpoch { value: text.to_string() })
    }
}

impl fmt::Display for Millis {
    /// The RFC 3339 form, so log lines and error messages read as dates.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl FromStr for Millis {
    type Err = TimeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Millis::parse_rfc3339(text)
    }
}

/// Serde helper: a [`Millis`] as an RFC 3339 string (`#[serde(with = "baton_core::time::rfc3339")]`).
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Millis;

    /// Writes the RFC 3339 form.
    pub fn serialize<S: Serializer>(instant: &Millis, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&instant.to_rfc3339())
    }

    /// Reads an RFC 3339 string.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Millis, D::Error> {
        let text = String::deserialize(deserializer)?;
        Millis::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde helper: an `Option<Millis>` as an RFC 3339 string or `null`.
pub mod rfc3339_option {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Millis;

    /// Writes the RFC 3339 form, or `null`.
    pub fn serialize<S: Serializer>(instant: &Option<Millis>, serializer: S) -> Result<S::Ok, S::Error> {
        match instant {
            Some(instant) => serializer.serialize_str(&instant.to_rfc3339()),
            None => serializer.serialize_none(),
        }
    }

    /// Reads an RFC 3339 string or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Millis>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            Some(text) => Millis::parse_rfc3339(&text).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_format(ms: u64, expected: &str) {
        assert_eq!(Millis::new(ms).to_rfc3339(), expected, "formatting {ms}");
    }

    #[test]
    fn formats_with_milliseconds_and_z() {
        check_format(0, "1970-01-01T00:00:00.000Z");
        check_format(1_737_972_000_000, "2025-01-27T10:00:00.000Z");
        check_format(1_737_972_150_123, "2025-01-27T10:02:30.123Z");
        check_format(MAX_RFC3339_MS, "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn formatting_saturates_beyond_year_9999() {
        check_format(u64::MAX, "9999-12-31T23:59:59.999Z");
    }

    fn check_parse(text: &str, expected: Result<u64, &str>) {
        let got = Millis::parse_rfc3339(text).map(Millis::as_u64);
        match (got, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "parsing {text:?}"),
            (Err(e), Err(kind)) => assert!(format!("{e:?}").starts_with(kind), "parsing {text:?}: {e:?}"),
            (got, want) => panic!("parsing {text:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parses_rfc3339_in_any_offset() {
        check_parse("2025-01-27T10:00:00.000Z", Ok(1_737_972_000_000));
        check_parse("2025-01-27T10:00:00Z", Ok(1_737_972_000_000));
        check_parse("2025-01-27T11:00:00.000+01:00", Ok(1_737_972_000_000));
        check_parse("2025-01-27T10:00:00.123456Z", Ok(1_737_972_000_123));
        check_parse("1969-12-31T23:59:59.000Z", Err("BeforeEpoch"));
        check_parse("2025-01-27", Err("Invalid"));
        check_parse("", Err("Invalid"));
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Millis::new(u64::MAX - 1).saturating_add(10), Millis::new(u64::MAX));
        assert_eq!(Millis::new(5).saturating_sub(10), Millis::ZERO);
        assert_eq!(Millis::new(5).since(Millis::new(10)), 0);
        assert_eq!(Millis::new(15).since(Millis::new(10)), 5);
    }

    #[test]
    fn serde_helpers_round_trip() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Times {
            #[serde(with = "rfc3339")]
            at: Millis,
            #[serde(with = "rfc3339_option")]
            maybe: Option<Millis>,
            raw: Millis,
        }
        let times = Times { at: Millis::new(1_737_972_000_000), maybe: None, raw: Millis::new(7) };
        let json = serde_json::to_string(&times).unwrap();
        assert_eq!(json, r#"{"at":"2025-01-27T10:00:00.000Z","maybe":null,"raw":7}"#);
        assert_eq!(serde_json::from_str::<Times>(&json).unwrap(), times);
    }
}
