//! Identifier newtypes. Each has one string form: `Display` writes it, `FromStr` validates it
//! (naming what is wrong), serde goes through it.
//!
//! Generated ids are built [`from_parts`](RunId::from_parts): a timestamp and random bytes the
//! caller supplies (core reads neither clock nor entropy). Their timestamp is zero-padded to 13
//! digits so ids sort by creation time until the year 2286.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::shard::Shard;
use crate::time::Millis;

/// Which kind of identifier an [`IdError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// [`RunId`].
    RunId,
    /// [`StepId`].
    StepId,
    /// [`ExecutionId`].
    ExecutionId,
    /// [`EventId`].
    EventId,
    /// [`ServiceSlug`].
    ServiceSlug,
    /// [`PlanId`].
    PlanId,
    /// [`WebsiteId`].
    WebsiteId,
    /// [`ClientId`].
    ClientId,
    /// A step's `worker_key` (see [`crate::plan::StepSpec`]).
    WorkerKey,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::RunId => "run id",
            IdKind::StepId => "step id",
            IdKind::ExecutionId => "execution id",
            IdKind::EventId => "event id",
            IdKind::ServiceSlug => "service slug",
            IdKind::PlanId => "plan id",
            IdKind::WebsiteId => "website id",
            IdKind::ClientId => "client id",
            IdKind::WorkerKey => "worker key",
        })
    }
}

/// What is wrong with an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdProblem {
    /// Zero characters.
    #[error("is empty")]
    Empty,
    /// More characters than the kind allows.
    #[error("is {len} characters long, at most {max} allowed")]
    TooLong {
        /// Its length in characters.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A character outside the kind's alphabet.
    #[error("contains {ch:?} at position {index}; allowed: {allowed}")]
    InvalidChar {
        /// The first offending character.
        ch: char,
        /// Its position (in characters, from 0).
        index: usize,
        /// The alphabet, for the message.
        allowed: &'static str,
    },
    /// A generated id that does not have its kind's shape.
    #[error("must look like {expected}")]
    Malformed {
        /// The expected shape, e.g. `run_{13-digit ms}_{16 hex}`.
        expected: &'static str,
    },
}

/// An identifier that failed validation: which kind, the value (cut to 200 characters) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {problem}")]
pub struct IdError {
    /// The kind of identifier.
    pub kind: IdKind,
    /// The offending value, cut to 200 characters so errors stay small.
    pub value: String,
    /// What is wrong with it.
    pub problem: IdProblem,
}

impl IdError {
    fn new(kind: IdKind, value: &str, problem: IdProblem) -> Self {
        IdError { kind, value: value.chars().take(200).collect(), problem }
    }
}

const SLUG_ALPHABET: &str = "a-z 0-9 _ -";
const STEP_ALPHABET: &str = "a-z 0-9 _ - .";
const WEBSITE_ALPHABET: &str = "A-Z a-z 0-9 _ . : -";
const WORKER_KEY_ALPHABET: &str = "a-z 0-9 _ -";

fn is_slug_char(ch: char) -> bool {
    ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' || ch == '-'
}

/// A step's slug may hold a `.`: a map step's items are `<step>.<index>` (a plan's own steps
/// never hold one: [`ServiceSlug::of_plan_step`]).
fn is_step_char(ch: char) -> bool {
    is_slug_char(ch) || ch == '.'
}

fn is_website_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | ':' | '-')
}

/// No `.` or `/`: a worker key becomes a path segment (`services.internal/{worker_key}`).
fn is_worker_key_char(ch: char) -> bool {
    is_slug_char(ch)
}

/// Checks length (1..=max characters) and alphabet.
fn check_text(
    kind: IdKind,
    value: &str,
    max: usize,
    allowed: fn(char) -> bool,
    alphabet: &'static str,
) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::new(kind, value, IdProblem::Empty));
    }
    let len = value.chars().count();
    if len > max {
        return Err(IdError::new(kind, value, IdProblem::TooLong { len, max }));
    }
    if let Some((index, ch)) = value.chars().enumerate().find(|(_, ch)| !allowed(*ch)) {
        return Err(IdError::new(kind, value, IdProblem::InvalidChar { ch, index, allowed: alphabet }));
    }
    Ok(())
}

/// Implements the string plumbing shared by every id: Display, serde via the string form,
/// `as_str`, `AsRef<str>`, and comparison with `str`.
macro_rules! string_form {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                value.parse()
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;

            fn try_from(value: &str) -> Result<Self, Self::Error> {
                value.parse()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A validated free-form identifier: `new` checks length and alphabet.
macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $kind:expr, $max:expr, $allowed:expr, $alphabet:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The longest value allowed, in characters.
            pub const MAX_LEN: usize = $max;

            /// Validates `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_text($kind, &value, $max, $allowed, $alphabet)?;
                Ok($name(value))
            }

            /// The string form.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                $name::new(value)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        string_form!($name);
    };
}

text_id!(
    /// A service (step) slug: 1..=72 characters of `[a-z0-9_.-]`, e.g. `serp-intelligence`. A
    /// plan's own step is 1..=64 characters of `[a-z0-9_-]` ([`ServiceSlug::of_plan_step`]);
    /// `audit.3` is item 3 of map step `audit` ([`crate::map`]).
    ServiceSlug, IdKind::ServiceSlug, 72, is_step_char, STEP_ALPHABET
);

impl ServiceSlug {
    /// The longest slug of a plan's own step.
    pub const MAX_STEP_LEN: usize = 64;

    /// The slug of item `index` of this (map) step: `audit` → `audit.3`. Infallible: a plan's
    /// step has at most 64 characters and an index at most 7 more.
    pub fn item(&self, index: u32) -> ServiceSlug {
        ServiceSlug(format!("{}.{index}", self.0))
    }

    /// Validates the slug of a plan's own step: 1..=64 characters of `[a-z0-9_-]`.
    pub fn of_plan_step(value: &str) -> Result<Self, IdError> {
        check_text(IdKind::ServiceSlug, value, Self::MAX_STEP_LEN, is_slug_char, SLUG_ALPHABET)?;
        Ok(ServiceSlug(value.to_string()))
    }
}
text_id!(
    /// A plan id: 1..=64 characters of `[a-z0-9_-]`, e.g. `standard-v1`.
    PlanId, IdKind::PlanId, 64, is_slug_char, SLUG_ALPHABET
);
text_id!(
    /// A website id: 1..=128 characters of `[A-Za-z0-9_.:-]`, e.g. `site_123`.
    WebsiteId, IdKind::WebsiteId, 128, is_website_char, WEBSITE_ALPHABET
);
text_id!(
    /// A client (tenant) id, as the bearer token maps it: 1..=128 characters of `[A-Za-z0-9_.:-]`.
    ClientId, IdKind::ClientId, 128, is_website_char, WEBSITE_ALPHABET
);
text_id!(
    /// The worker a step calls: 1..=64 characters of `[a-z0-9_-]`, e.g. `serp_intelligence`
    /// or `bitware-content-granulator`.
    WorkerKey, IdKind::WorkerKey, 64, is_worker_key_char, WORKER_KEY_ALPHABET
);

impl WorkerKey {
    /// The default worker key of a service: its slug with `-` replaced by `_`
    /// (`serp-intelligence` → `serp_intelligence`). Infallible: slugs use a subset of the alphabet.
    pub fn from_slug(slug: &ServiceSlug) -> Self {
        WorkerKey(slug.as_str().replace('-', "_"))
    }
}

/// A generated id `{prefix}{ms:013}_{hex}`: its text and the timestamp it was made at.
fn generated(prefix: &str, timestamp: Millis, random: &[u8]) -> String {
    format!("{prefix}{:013}_{}", timestamp.as_u64(), hex::encode(random))
}

/// Parses `{prefix}{digits}_{hex of hex_len}`; returns the timestamp. At most 19 digits: every
/// such number fits a u64, so the shape alone (openapi.json's cursor pattern) says what parses.
fn parse_generated(text: &str, prefix: &str, hex_len: usize) -> Option<Millis> {
    let rest = text.strip_prefix(prefix)?;
    // Run and execution ids made in a shard other than 0 end with `_s{k}` (see `crate::shard`).
    let rest = if prefix == "evt_" { rest } else { Shard::split_id(rest).0 };
    let (digits, hex) = rest.split_once('_')?;
    let digits_ok = !digits.is_empty() && digits.len() <= 19 && digits.bytes().all(|b| b.is_ascii_digit());
    let hex_ok = hex.len() == hex_len && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !(digits_ok && hex_ok) {
        return None;
    }
    digits.parse().ok().map(Millis::new)
}

/// Shape of a run id, for error messages.
const RUN_ID_SHAPE: &str = "run_{13-digit ms}_{16 hex}[_s{shard}] (or an execution id)";
const EXECUTION_ID_SHAPE: &str = "exec_{13-digit ms}_{12 hex}[_s{shard}]";
const EVENT_ID_SHAPE: &str = "evt_{13-digit ms}_{16 hex}";

/// A run's id, e.g. `run_1732350000000_a1b2c3d4e5f60718`. It is also the trace id the poller,
/// the analysis queue and `job:{traceId}` use.
///
/// A pipeline execution is a run too: its run id is its [`ExecutionId`] text
/// (`exec_1732350000000_a1b2c3d4e5f6`), so both shapes parse.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId {
    text: String,
    timestamp: Millis,
}

impl RunId {
    /// `run_{timestamp}_{random as hex}`.
    pub fn from_parts(timestamp: Millis, random: [u8; 8]) -> Self {
        RunId { text: generated("run_", timestamp, &random), timestamp }
    }

    /// [`from_parts`](Self::from_parts) in `shard`: `run_{timestamp}_{hex}_s{shard}` (no suffix
    /// for shard 0).
    pub fn in_shard(timestamp: Millis, random: [u8; 8], shard: Shard) -> Self {
        let mut id = RunId::from_parts(timestamp, random);
        id.text.push_str(&shard.id_suffix());
        id
    }

    /// The shard whose database holds the run.
    pub fn shard(&self) -> Shard {
        Shard::of_id(&self.text)
    }

    /// The run of a pipeline execution: same text as the execution id.
    pub fn from_execution(execution: &ExecutionId) -> Self {
        RunId { text: execution.text.clone(), timestamp: execution.timestamp }
    }

    /// The string form.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// When the id was made.
    pub fn timestamp(&self) -> Millis {
        self.timestamp
    }
}

impl FromStr for RunId {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(IdError::new(IdKind::RunId, text, IdProblem::Empty));
        }
        let timestamp = parse_generated(text, "run_", 16).or_else(|| parse_generated(text, "exec_", 12));
        match timestamp {
            Some(timestamp) => Ok(RunId { text: text.to_string(), timestamp }),
            None => Err(IdError::new(IdKind::RunId, text, IdProblem::Malformed { expected: RUN_ID_SHAPE })),
        }
    }
}

string_form!(RunId);

/// A pipeline execution's id, e.g. `exec_1732350000000_a1b2c3d4e5f6` (the seed's
/// `exec_{timestamp}_{random}`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExecutionId {
    text: String,
    timestamp: Millis,
}

impl ExecutionId {
    /// `exec_{timestamp}_{random as hex}`.
    pub fn from_parts(timestamp: Millis, random: [u8; 6]) -> Self {
        ExecutionId { text: generated("exec_", timestamp, &random), timestamp }
    }

    /// [`from_parts`](Self::from_parts) in `shard` (a `_s{shard}` suffix; none for shard 0).
    pub fn in_shard(timestamp: Millis, random: [u8; 6], shard: Shard) -> Self {
        let mut id = ExecutionId::from_parts(timestamp, random);
        id.text.push_str(&shard.id_suffix());
        id
    }

    /// The shard whose database holds the execution.
    pub fn shard(&self) -> Shard {
        Shard::of_id(&self.text)
    }

    /// The string form.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// When the id was made.
    pub fn timestamp(&self) -> Millis {
        self.timestamp
    }
}

impl FromStr for ExecutionId {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(IdError::new(IdKind::ExecutionId, text, IdProblem::Empty));
        }
        match parse_generated(text, "exec_", 12) {
            Some(timestamp) => Ok(ExecutionId { text: text.to_string(), timestamp }),
            None => Err(IdError::new(IdKind::ExecutionId, text, IdProblem::Malformed { expected: EXECUTION_ID_SHAPE })),
        }
    }
}

string_form!(ExecutionId);

/// A knowledge-base event's id, e.g. `evt_1732350000000_a1b2c3d4e5f60718`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    text: String,
    timestamp: Millis,
}

impl EventId {
    /// `evt_{timestamp}_{random as hex}`.
    pub fn from_parts(timestamp: Millis, random: [u8; 8]) -> Self {
        EventId { text: generated("evt_", timestamp, &random), timestamp }
    }

    /// The string form.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// When the id was made.
    pub fn timestamp(&self) -> Millis {
        self.timestamp
    }
}

impl FromStr for EventId {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(IdError::new(IdKind::EventId, text, IdProblem::Empty));
        }
        match parse_generated(text, "evt_", 16) {
            Some(timestamp) => Ok(EventId { text: text.to_string(), timestamp }),
            None => Err(IdError::new(IdKind::EventId, text, IdProblem::Malformed { expected: EVENT_ID_SHAPE })),
        }
    }
}

string_form!(EventId);

/// One step of one run: `{run_id}:{service}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepId {
    run_id: RunId,
    service: ServiceSlug,
    text: String,
}

impl StepId {
    /// The step `service` of run `run_id`.
    pub fn new(run_id: RunId, service: ServiceSlug) -> Self {
        let text = format!("{run_id}:{service}");
        StepId { run_id, service, text }
    }

    /// The run.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// The service.
    pub fn service(&self) -> &ServiceSlug {
        &self.service
    }

    /// The string form.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for StepId {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(IdError::new(IdKind::StepId, text, IdProblem::Empty));
        }
        // Neither part may contain ':', so the split is unambiguous.
        let Some((run, service)) = text.split_once(':') else {
            return Err(IdError::new(IdKind::StepId, text, IdProblem::Malformed { expected: "{run_id}:{service}" }));
        };
        Ok(StepId::new(run.parse()?, service.parse()?))
    }
}

string_form!(StepId);

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: FromStr<Err = IdError> + fmt::Debug>(text: &str, expected: Result<(), IdProblem>) {
        match (text.parse::<T>(), expected) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(problem)) => assert_eq!(e.problem, problem, "parsing {text:?}"),
            (got, want) => panic!("parsing {text:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn service_slugs_allow_lowercase_digits_dash_underscore() {
        check::<ServiceSlug>("serp-intelligence", Ok(()));
        check::<ServiceSlug>("a_1", Ok(()));
        check::<ServiceSlug>(&"a".repeat(64), Ok(()));
        check::<ServiceSlug>("", Err(IdProblem::Empty));
        check::<ServiceSlug>("audit.12", Ok(()));
        check::<ServiceSlug>(&"a".repeat(73), Err(IdProblem::TooLong { len: 73, max: 72 }));
        check::<ServiceSlug>("Serp", Err(IdProblem::InvalidChar { ch: 'S', index: 0, allowed: STEP_ALPHABET }));
        check::<ServiceSlug>("a b", Err(IdProblem::InvalidChar { ch: ' ', index: 1, allowed: STEP_ALPHABET }));
        let plan_step = |text: &str| ServiceSlug::of_plan_step(text).map(|_| ()).map_err(|e| e.problem);
        assert_eq!(plan_step("a_1"), Ok(()));
        assert_eq!(plan_step(&"a".repeat(65)), Err(IdProblem::TooLong { len: 65, max: 64 }));
        assert_eq!(plan_step("audit.1"), Err(IdProblem::InvalidChar { ch: '.', index: 5, allowed: SLUG_ALPHABET }));
        check::<PlanId>("standard-v1", Ok(()));
        check::<PlanId>("standard.v1", Err(IdProblem::InvalidChar { ch: '.', index: 8, allowed: SLUG_ALPHABET }));
    }

    #[test]
    fn website_ids_allow_mixed_case_dots_and_colons() {
        check::<WebsiteId>("site_123", Ok(()));
        check::<WebsiteId>("Site.example:1-a", Ok(()));
        check::<WebsiteId>(&"w".repeat(128), Ok(()));
        check::<WebsiteId>(&"w".repeat(129), Err(IdProblem::TooLong { len: 129, max: 128 }));
        check::<WebsiteId>("site/1", Err(IdProblem::InvalidChar { ch: '/', index: 4, allowed: WEBSITE_ALPHABET }));
        check::<ClientId>("client-a", Ok(()));
    }

    #[test]
    fn generated_ids_round_trip_and_keep_their_timestamp() {
        let run = RunId::from_parts(Millis::new(1_732_350_000_000), [0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18]);
        assert_eq!(run.as_str(), "run_1732350000000_a1b2c3d4e5f60718");
        assert_eq!(run.as_str().parse::<RunId>().unwrap(), run);
        assert_eq!(run.timestamp(), Millis::new(1_732_350_000_000));

        let exec = ExecutionId::from_parts(Millis::new(1_732_350_000_000), [0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6]);
        assert_eq!(exec.as_str(), "exec_1732350000000_a1b2c3d4e5f6");
        assert_eq!(exec.as_str().parse::<ExecutionId>().unwrap(), exec);
        let exec_run = RunId::from_execution(&exec);
        assert_eq!(exec_run.as_str().parse::<RunId>().unwrap(), exec_run);

        let sharded = RunId::in_shard(Millis::new(1), [1; 8], Shard::new(1));
        assert_eq!(sharded.as_str(), "run_0000000000001_0101010101010101_s1");
        assert_eq!(sharded.as_str().parse::<RunId>().unwrap().shard(), Shard::new(1));
        assert_eq!(run.shard(), Shard::FIRST);
        let exec = ExecutionId::in_shard(Millis::new(1), [2; 6], Shard::new(3));
        assert_eq!(exec.as_str().parse::<ExecutionId>().unwrap().shard(), Shard::new(3));
        assert_eq!(RunId::from_execution(&exec).shard(), Shard::new(3));
        assert_eq!(RunId::in_shard(Millis::new(1), [1; 8], Shard::FIRST), RunId::from_parts(Millis::new(1), [1; 8]));

        let event = EventId::from_parts(Millis::new(5), [0; 8]);
        assert_eq!(event.as_str(), "evt_0000000000005_0000000000000000");
        assert_eq!(event.as_str().parse::<EventId>().unwrap(), event);
    }

    #[test]
    fn run_ids_sort_by_time() {
        let early = RunId::from_parts(Millis::new(999_999_999_999), [0xff; 8]);
        let late = RunId::from_parts(Millis::new(1_000_000_000_000), [0; 8]);
        assert!(early.as_str() < late.as_str());
    }

    #[test]
    fn malformed_generated_ids_are_rejected() {
        let run_shape = Err(IdProblem::Malformed { expected: RUN_ID_SHAPE });
        check::<RunId>("abc123xyz", run_shape.clone());
        check::<RunId>("run_1732350000000_A1B2C3D4E5F60718", run_shape.clone());
        check::<RunId>("run_1732350000000_a1b2", run_shape.clone());
        check::<RunId>("run__a1b2c3d4e5f60718", run_shape);
        check::<RunId>("", Err(IdProblem::Empty));
        check::<ExecutionId>("exec_1_a1b2c3d4e5f60718", Err(IdProblem::Malformed { expected: EXECUTION_ID_SHAPE }));
        check::<EventId>("evt_789", Err(IdProblem::Malformed { expected: EVENT_ID_SHAPE }));
    }

    #[test]
    fn step_ids_join_run_and_service() {
        let run = RunId::from_parts(Millis::new(1), [1; 8]);
        let step = StepId::new(run.clone(), "technical-seo".parse().unwrap());
        assert_eq!(step.as_str(), format!("{run}:technical-seo"));
        let parsed: StepId = step.as_str().parse().unwrap();
        assert_eq!(parsed, step);
        assert_eq!(parsed.run_id(), &run);
        assert_eq!(parsed.service(), "technical-seo");
        let e = format!("{run}:Bad").parse::<StepId>().unwrap_err();
        assert_eq!(e.kind, IdKind::ServiceSlug);
        assert_eq!("nocolon".parse::<StepId>().unwrap_err().kind, IdKind::StepId);
    }

    #[test]
    fn serde_uses_the_validated_string_form() {
        let slug: ServiceSlug = serde_json::from_str("\"vitals-monitor\"").unwrap();
        assert_eq!(serde_json::to_string(&slug).unwrap(), "\"vitals-monitor\"");
        let error = serde_json::from_str::<ServiceSlug>("\"Vitals\"").unwrap_err().to_string();
        assert!(error.contains("invalid service slug \"Vitals\""), "{error}");
        let run: RunId = serde_json::from_str("\"run_1732350000000_a1b2c3d4e5f60718\"").unwrap();
        assert_eq!(serde_json::to_value(&run).unwrap(), "run_1732350000000_a1b2c3d4e5f60718");
    }

    #[test]
    fn errors_name_kind_value_and_problem_and_cut_long_values() {
        let e = "x".repeat(500).parse::<RunId>().unwrap_err();
        assert_eq!(e.kind, IdKind::RunId);
        assert_eq!(e.value.len(), 200);
        let message = "Bad!".parse::<PlanId>().unwrap_err().to_string();
        assert_eq!(message, "invalid plan id \"Bad!\": contains 'B' at position 0; allowed: a-z 0-9 _ -");
    }
}
