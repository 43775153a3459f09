//! Schedules: when a schedule's runs are due. A schedule's slots are the instants it names —
//! the occurrences of a cron expression in an IANA time zone, or every `interval_seconds`
//! counted from the Unix epoch (so an hourly interval fires on the hour, UTC) — and a run is
//! started for a slot at most once.
//!
//! The edge stores, per schedule, its `next_slot`: the first slot not yet handled. At each poller
//! tick [`due`] takes that and `now` and decides:
//!
//! ```text
//! next_slot > now                 → NotYet (nothing to write)
//! next_slot ≤ now, latest slot L ≤ now:
//!     L on time (now − L ≤ grace) → Fire L,  next_slot := first slot after now
//!     L late, missed = latest     → Fire L,  next_slot := first slot after now
//!     L late, missed = skip       → Skip,    next_slot := first slot after now
//! ```
//!
//! So a schedule fires at most once per tick (slots closer together than the poller's period
//! collapse into the latest), and after an outage `skip` resumes at the next slot while `latest`
//! runs the latest missed slot once. Exactly-once is the edge's claim: moving `next_slot` from
//! the value read to the one decided here, a compare-and-set that one tick wins.
//!
//! Time zones follow the IANA database (`chrono-tz`); across a daylight-saving change, `croner`
//! fires a wall-clock time that falls in the skipped hour once, at the first instant after the
//! gap, and a wall-clock time that occurs twice, once.

use std::str::FromStr;

use chrono::{DateTime, TimeZone};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Deserialize, Serialize};

use crate::state::status_text;
use crate::time::Millis;

/// The shortest interval: one second.
pub const MIN_INTERVAL_SECONDS: u64 = 1;
/// The longest interval: 366 days.
pub const MAX_INTERVAL_SECONDS: u64 = 366 * 24 * 3600;
/// How many upcoming slots a schedule shows when read.
pub const UPCOMING: usize = 3;
/// The time zone of a cron expression given without one.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// When a schedule's slots are.
#[derive(Debug, Clone)]
pub enum Timing {
    /// The occurrences of a cron expression, read in a time zone.
    Cron {
        /// The parsed expression.
        cron: Box<Cron>,
        /// The time zone it is read in.
        timezone: Tz,
    },
    /// Every `seconds`, counted from the Unix epoch.
    Interval {
        /// The period.
        seconds: u64,
    },
}

/// What to do with slots the poller reached late (after an outage, or a pause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// Drop them: the schedule resumes at its next slot.
    Skip,
    /// Run the latest of them, once.
    Latest,
}

impl Missed {
    /// Its name in the API and in D1.
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::Latest => "latest",
        }
    }

    /// Reads a name (`skip`, `latest`).
    pub fn parse(text: &str) -> Option<Missed> {
        match text {
            "skip" => Some(Missed::Skip),
            "latest" => Some(Missed::Latest),
            _ => None,
        }
    }
}

/// Where a fired slot stands: `schedule_fires.status`, `claimed` → `started` | `failed`.
/// Serialises lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FireStatus {
    /// A tick claimed the slot; its run may not have started yet.
    Claimed,
    /// The slot's run was started.
    Started,
    /// The slot's run could not be started.
    Failed,
}

impl FireStatus {
    /// Every status, claimed first.
    pub const ALL: [FireStatus; 3] = [FireStatus::Claimed, FireStatus::Started, FireStatus::Failed];

    /// The lowercase text (as stored in D1).
    pub fn as_str(self) -> &'static str {
        match self {
            FireStatus::Claimed => "claimed",
            FireStatus::Started => "started",
            FireStatus::Failed => "failed",
        }
    }
}

status_text!(FireStatus, "schedule fire status");

/// Why a schedule's timing was refused; [`field`](ScheduleError::field) names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Neither or both of `cron` and `interval_seconds`.
    #[error("give exactly one of `cron` and `interval_seconds`")]
    TimingChoice,
    /// The cron expression does not parse.
    #[error("`cron` {expression:?} is not a cron expression: {reason}")]
    InvalidCron {
        /// The expression (cut to 100 characters).
        expression: String,
        /// The parser's reason.
        reason: String,
    },
    /// The cron expression never fires.
    #[error("`cron` {expression:?} has no upcoming slot")]
    NeverFires {
        /// The expression.
        expression: String,
    },
    /// Not an IANA time zone name.
    #[error("`timezone` {name:?} is not an IANA time zone (e.g. `Europe/Paris`, `UTC`)")]
    UnknownTimezone {
        /// The name (cut to 100 characters).
        name: String,
    },
    /// A time zone given with an interval.
    #[error("`timezone` applies only to a `cron` schedule")]
    TimezoneWithInterval,
    /// The interval is out of bounds.
    #[error("`interval_seconds` must be between {MIN_INTERVAL_SECONDS} and {MAX_INTERVAL_SECONDS}, got {seconds}")]
    IntervalOutOfRange {
        /// What was given.
        seconds: i64,
    },
    /// Not `skip` or `latest`.
    #[error("`missed` must be `skip` or `latest`, got {value:?}")]
    UnknownMissedPolicy {
        /// What was given (cut to 100 characters).
        value: String,
    },
}

impl ScheduleError {
    /// The request field it is about.
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::TimingChoice | ScheduleError::InvalidCron { .. } | ScheduleError::NeverFires { .. } => {
                "cron"
            }
            ScheduleError::UnknownTimezone { .. } | ScheduleError::TimezoneWithInterval => "timezone",
            ScheduleError::IntervalOutOfRange { .. } => "interval_seconds",
            ScheduleError::UnknownMissedPolicy { .. } => "missed",
        }
    }

    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ScheduleError::TimingChoice => "invalid_schedule",
            ScheduleError::InvalidCron { .. } | ScheduleError::NeverFires { .. } => "invalid_cron",
            ScheduleError::UnknownTimezone { .. } | ScheduleError::TimezoneWithInterval => "invalid_timezone",
            ScheduleError::IntervalOutOfRange { .. } => "invalid_interval",
            ScheduleError::UnknownMissedPolicy { .. } => "invalid_missed",
        }
    }
}

fn cut(text: &str) -> String {
    text.chars().take(100).collect()
}

/// Reads a missed-slots policy; `None` is `skip`.
pub fn missed_policy(value: Option<&str>) -> Result<Missed, ScheduleError> {
    match value {
        None => Ok(Missed::Skip),
        Some(text) => Missed::parse(text).ok_or_else(|| ScheduleError::UnknownMissedPolicy { value: cut(text) }),
    }
}

/// A schedule's timing from its fields: a cron expression (with a time zone, default UTC) or
/// an interval, not both.
pub fn timing(
    cron: Option<&str>,
    timezone: Option<&str>,
    interval_seconds: Option<i64>,
) -> Result<Timing, ScheduleError> {
    match (cron, interval_seconds) {
        (Some(expression), None) => {
            let name = timezone.unwrap_or(DEFAULT_TIMEZONE);
            let timezone = Tz::from_str(name).map_err(|_| ScheduleError::UnknownTimezone { name: cut(name) })?;
            let cron = Cron::from_str(expression.trim())
                .map_err(|e| ScheduleError::InvalidCron { expression: cut(expression), reason: e.to_string() })?;
            let timing = Timing::Cron { cron: Box::new(cron), timezone };
            // An expression that parses but names no instant (`0 0 30 2 *`) is refused too.
            match timing.next_after(Millis::new(0)) {
                Some(_) => Ok(timing),
                None => Err(ScheduleError::NeverFires { expression: cut(expression) }),
            }
        }
        (None, Some(seconds)) => {
            if timezone.is_some() {
                return Err(ScheduleError::TimezoneWithInterval);
            }
            match u64::try_from(seconds) {
                Ok(s) if (MIN_INTERVAL_SECONDS..=MAX_INTERVAL_SECONDS).contains(&s) => {
                    Ok(Timing::Interval { seconds: s })
                }
                _ => Err(ScheduleError::IntervalOutOfRange { seconds }),
            }
        }
        _ => Err(ScheduleError::TimingChoice),
    }
}

impl Timing {
    /// The first slot strictly after `after`, if there is one.
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        match self {
            Timing::Interval { seconds } => {
                let period = seconds * 1000;
                Some(Millis::new((after.as_u64() / period + 1) * period))
            }
            Timing::Cron { cron, timezone } => {
                let at = in_zone(timezone, after)?;
                cron.find_next_occurrence(&at, false).ok().and_then(millis_of)
            }
        }
    }

    /// The last slot at or before `at`, if there is one.
    pub fn latest_at_or_before(&self, at: Millis) -> Option<Millis> {
        match self {
            Timing::Interval { seconds } => {
                let period = seconds * 1000;
                Some(Millis::new(at.as_u64() / period * period))
            }
            Timing::Cron { cron, timezone } => {
                let instant = in_zone(timezone, at)?;
                cron.find_previous_occurrence(&instant, true).ok().and_then(millis_of)
            }
        }
    }

    /// Up to `n` slots strictly after `after`, in order.
    pub fn upcoming(&self, after: Millis, n: usize) -> Vec<Millis> {
        let mut slots = Vec::with_capacity(n);
        let mut from = after;
        while slots.len() < n {
            match self.next_after(from) {
                Some(slot) => {
                    slots.push(slot);
                    from = slot;
                }
                None => break,
            }
        }
        slots
    }
}

fn in_zone(timezone: &Tz, at: Millis) -> Option<DateTime<Tz>> {
    timezone.timestamp_millis_opt(i64::try_from(at.as_u64()).ok()?).single()
}

fn millis_of(at: DateTime<Tz>) -> Option<Millis> {
    u64::try_from(at.timestamp_millis()).ok().map(Millis::new)
}

/// What a tick does about one schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Its next slot is still ahead: nothing to do.
    NotYet,
    /// Start a run for `slot`; the schedule's next slot becomes `next_slot` (`None`: never).
    Fire {
        /// The slot to run.
        slot: Millis,
        /// The first slot after now.
        next_slot: Option<Millis>,
    },
    /// The due slots were missed and the policy drops them: move on to `next_slot`.
    Skip {
        /// The latest slot dropped.
        latest: Millis,
        /// The first slot after now.
        next_slot: Option<Millis>,
    },
}

/// Decides what a tick at `now` does about a schedule whose first unhandled slot is
/// `next_slot` (see the module's table). A slot is on time when the tick comes at most
/// `grace_ms` after it (the edge passes the poller's period and a minute).
pub fn due(timing: &Timing, next_slot: Millis, now: Millis, missed: Missed, grace_ms: u64) -> Due {
    if next_slot > now {
        return Due::NotYet;
    }
    let latest = timing.latest_at_or_before(now).filter(|l| *l >= next_slot).unwrap_or(next_slot);
    let next = timing.next_after(now);
    if missed == Missed::Latest || now.since(latest) <= grace_ms {
        Due::Fire { slot: latest, next_slot: next }
    } else {
        Due::Skip { latest, next_slot: next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ParseStatusError;

    #[test]
    fn fire_statuses_round_trip_through_text() {
        let texts: Vec<&str> = FireStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(texts, ["claimed", "started", "failed"]);
        for status in FireStatus::ALL {
            assert_eq!(status.as_str().parse::<FireStatus>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
            assert_eq!(serde_json::from_value::<FireStatus>(status.as_str().into()).unwrap(), status);
        }
        assert_eq!(
            "skipped".parse::<FireStatus>(),
            Err(ParseStatusError { what: "schedule fire status", value: "skipped".into() })
        );
        assert_eq!(
            "Claimed".parse::<FireStatus>().unwrap_err().to_string(),
            "unknown schedule fire status \"Claimed\""
        );
        assert!(serde_json::from_value::<FireStatus>("skipped".into()).is_err());
    }

    const MINUTE: u64 = 60_000;
    const GRACE: u64 = 2 * MINUTE;

    fn at(text: &str) -> Millis {
        Millis::parse_rfc3339(text).unwrap()
    }

    fn cron(expression: &str, timezone: &str) -> Timing {
        timing(Some(expression), Some(timezone), None).unwrap()
    }

    fn rfc(slots: &[Millis]) -> Vec<String> {
        slots.iter().map(|s| s.to_rfc3339()).collect()
    }

    #[test]
    fn a_cron_expression_is_read_in_its_time_zone() {
        // 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
        let t = cron("0 9 * * *", "Europe/Paris");
        assert_eq!(
            rfc(&t.upcoming(at("2026-01-10T12:00:00Z"), 2)),
            ["2026-01-11T08:00:00.000Z", "2026-01-12T08:00:00.000Z"]
        );
        assert_eq!(t.next_after(at("2026-07-10T12:00:00Z")), Some(at("2026-07-11T07:00:00Z")));
        assert_eq!(t.latest_at_or_before(at("2026-07-10T07:00:00Z")), Some(at("2026-07-10T07:00:00Z")));
    }

    #[test]
    fn interval_slots_are_counted_from_the_epoch() {
        let t = timing(None, None, Some(3600)).unwrap();
        assert_eq!(t.next_after(at("2026-01-10T12:34:56Z")), Some(at("2026-01-10T13:00:00Z")));
        assert_eq!(t.next_after(at("2026-01-10T13:00:00Z")), Some(at("2026-01-10T14:00:00Z")));
        assert_eq!(t.latest_at_or_before(at("2026-01-10T12:34:56Z")), Some(at("2026-01-10T12:00:00Z")));
        assert_eq!(t.upcoming(at("2026-01-10T12:00:00Z"), 3).len(), 3);
    }

    #[test]
    fn a_slot_fires_once_and_the_schedule_moves_past_now() {
        let t = cron("*/5 * * * *", "UTC");
        let next = at("2026-01-10T12:05:00Z");
        assert_eq!(due(&t, next, at("2026-01-10T12:04:59Z"), Missed::Skip, GRACE), Due::NotYet);
        assert_eq!(
            due(&t, next, at("2026-01-10T12:05:30Z"), Missed::Skip, GRACE),
            Due::Fire { slot: next, next_slot: Some(at("2026-01-10T12:10:00Z")) }
        );
    }

    #[test]
    fn missed_slots_are_skipped_or_the_latest_runs_once() {
        let t = cron("*/5 * * * *", "UTC");
        let next = at("2026-01-10T12:05:00Z");
        // The poller was away for an hour, and its tick comes 4 minutes after the latest slot.
        let now = at("2026-01-10T13:09:00Z");
        let after = Some(at("2026-01-10T13:10:00Z"));
        assert_eq!(
            due(&t, next, now, Missed::Latest, GRACE),
            Due::Fire { slot: at("2026-01-10T13:05:00Z"), next_slot: after }
        );
        assert_eq!(
            due(&t, next, now, Missed::Skip, GRACE),
            Due::Skip { latest: at("2026-01-10T13:05:00Z"), next_slot: after }
        );
        // A tick within the grace of the latest slot runs it whatever the policy.
        let soon = at("2026-01-10T13:06:00Z");
        assert_eq!(
            due(&t, next, soon, Missed::Skip, GRACE),
            Due::Fire { slot: at("2026-01-10T13:05:00Z"), next_slot: after }
        );
        // Several slots within one tick (a short interval) are one firing, of the latest.
        let fast = timing(None, None, Some(1)).unwrap();
        assert_eq!(
            due(&fast, at("2026-01-10T12:00:01Z"), at("2026-01-10T12:00:30.500Z"), Missed::Skip, GRACE),
            Due::Fire { slot: at("2026-01-10T12:00:30Z"), next_slot: Some(at("2026-01-10T12:00:31Z")) }
        );
    }

    #[test]
    fn a_wall_clock_time_in_the_spring_gap_fires_once_that_day() {
        // 2026-03-29: Paris goes from 02:00 to 03:00; 02:30 does not exist that day.
        let t = cron("30 2 * * *", "Europe/Paris");
        let day = t.upcoming(at("2026-03-28T12:00:00Z"), 2);
        assert_eq!(day.len(), 2);
        assert!(day[0] >= at("2026-03-29T00:00:00Z") && day[0] < at("2026-03-30T00:00:00Z"), "{:?}", rfc(&day));
        assert_eq!(day[1], at("2026-03-30T00:30:00Z"), "the next day, 02:30 summer time");
    }

    #[test]
    fn a_wall_clock_time_that_occurs_twice_fires_once() {
        // 2026-10-25: Paris goes from 03:00 back to 02:00; 02:30 happens twice.
        let t = cron("30 2 * * *", "Europe/Paris");
        let slots = t.upcoming(at("2026-10-24T12:00:00Z"), 2);
        let that_day =
            slots.iter().filter(|s| **s >= at("2026-10-24T22:00:00Z") && **s < at("2026-10-25T23:00:00Z")).count();
        assert_eq!(that_day, 1, "{:?}", rfc(&slots));
    }

    fn check_error(cron: Option<&str>, timezone: Option<&str>, interval: Option<i64>, field: &str) {
        let error = timing(cron, timezone, interval).unwrap_err();
        assert_eq!(error.field(), field, "{error}");
    }

    #[test]
    fn invalid_timing_names_its_field() {
        check_error(Some("not a cron"), None, None, "cron");
        check_error(Some("61 * * * *"), None, None, "cron");
        check_error(Some("0 0 30 2 *"), None, None, "cron");
        check_error(Some("* * * * *"), Some("Mars/Olympus"), None, "timezone");
        check_error(None, Some("UTC"), Some(60), "timezone");
        check_error(None, None, Some(0), "interval_seconds");
        check_error(None, None, Some(-5), "interval_seconds");
        check_error(None, None, None, "cron");
        check_error(Some("* * * * *"), None, Some(60), "cron");
        assert_eq!(missed_policy(Some("all")).unwrap_err().field(), "missed");
        assert_eq!(missed_policy(None), Ok(Missed::Skip));
        assert_eq!(missed_policy(Some("latest")), Ok(Missed::Latest));
    }
}
