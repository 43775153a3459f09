//! How long finished history stays in D1 (`RETENTION_DAYS`, `RETENTION_DAYS_BY_CLIENT`), and
//! where an archived run is kept (R2, one object per run).
//!
//! A run that ended more than its client's retention ago is archived: one compressed object in
//! R2 holding everything its API and page show, a slim row in D1 that lists it, and its rows
//! deleted. `0` keeps everything (unbounded: D1 fills up). Days may be fractional
//! (`0.5` = 12 hours).

use std::collections::BTreeMap;

use crate::state::RunStatus;
use crate::time::Millis;

/// `RETENTION_DAYS`: days a finished run stays in D1 before it is archived.
pub const RETENTION_DAYS: &str = "RETENTION_DAYS";
/// `RETENTION_DAYS_BY_CLIENT`: a JSON object of client id → days, overriding the default.
pub const RETENTION_DAYS_BY_CLIENT: &str = "RETENTION_DAYS_BY_CLIENT";
/// The default retention, in days.
pub const DEFAULT_DAYS: f64 = 30.0;
/// The longest retention a setting may name (100 years), so that every cut-off is a time.
pub const MAX_DAYS: f64 = 36_500.0;

const DAY_MS: f64 = 86_400_000.0;

/// Why a retention setting is refused: it names the variable and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct RetentionError {
    /// The variable.
    pub variable: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// How long each client's finished runs stay in D1.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// Everyone's, unless overridden; `None` keeps everything.
    default: Option<u64>,
    /// Per client: `None` keeps that client's runs.
    clients: BTreeMap<String, Option<u64>>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { default: days_ms(DEFAULT_DAYS), clients: BTreeMap::new() }
    }
}

fn days_ms(days: f64) -> Option<u64> {
    (days > 0.0).then(|| (days * DAY_MS).round().max(1.0) as u64)
}

fn days_of(variable: &'static str, what: &str, text: &str) -> Result<f64, RetentionError> {
    let refuse = |problem: String| RetentionError { variable, problem };
    let days: f64 = text
        .trim()
        .parse()
        .map_err(|_| refuse(format!("{what} must be a number of days (0 keeps everything), got {text:?}")))?;
    if !days.is_finite() || !(0.0..=MAX_DAYS).contains(&days) {
        return Err(refuse(format!("{what} must be from 0 to {MAX_DAYS} days, got {text:?}")));
    }
    Ok(days)
}

impl Retention {
    /// The retention from `RETENTION_DAYS` (empty: [`DEFAULT_DAYS`]) and
    /// `RETENTION_DAYS_BY_CLIENT` (empty: no overrides). Every problem names its variable.
    pub fn parse(days: Option<&str>, by_client: Option<&str>) -> Result<Retention, RetentionError> {
        let default = match days.map(str::trim).filter(|t| !t.is_empty()) {
            Some(text) => days_ms(days_of(RETENTION_DAYS, "it", text)?),
            None => days_ms(DEFAULT_DAYS),
        };
        let mut clients = BTreeMap::new();
        if let Some(text) = by_client.map(str::trim).filter(|t| !t.is_empty()) {
            let refuse = |problem: String| RetentionError { variable: RETENTION_DAYS_BY_CLIENT, problem };
            let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(text)
                .map_err(|e| refuse(format!("must be a JSON object of client id → days: {e}")))?;
            for (client, value) in map {
                let text = match &value {
                    serde_json::Value::Number(n) => n.to_string(),
                    other => return Err(refuse(format!("client {client:?}: days must be a number, got {other}"))),
                };
                let days = days_of(RETENTION_DAYS_BY_CLIENT, &format!("client {client:?}"), &text)?;
                clients.insert(client, days_ms(days));
            }
        }
        Ok(Retention { default, clients })
    }

    /// How long `client_id`'s finished runs stay, in milliseconds; `None`: for good.
    pub fn of(&self, client_id: &str) -> Option<u64> {
        self.clients.get(client_id).copied().unwrap_or(self.default)
    }

    /// The default retention in milliseconds (`None`: for good): the period of the history
    /// kept beside runs (webhook deliveries, schedule fires, dead letters).
    pub fn default_ms(&self) -> Option<u64> {
        self.default
    }

    /// Whether anything is ever archived.
    pub fn archives(&self) -> bool {
        self.default.is_some() || self.clients.values().any(Option::is_some)
    }

    /// The passes an archiving tick makes, each a cut-off for a set of clients: every client
    /// with an override on its own, then everyone else under the default (`except` them).
    pub fn passes(&self, now: Millis) -> Vec<Pass> {
        let cutoff = |ms: u64| Millis::new(now.as_u64().saturating_sub(ms));
        let mut passes: Vec<Pass> = self
            .clients
            .iter()
            .filter_map(|(client, ms)| {
                ms.map(|ms| Pass::Client { client_id: client.clone(), ended_before: cutoff(ms) })
            })
            .collect();
        if let Some(ms) = self.default {
            passes.push(Pass::Others { except: self.clients.keys().cloned().collect(), ended_before: cutoff(ms) });
        }
        passes
    }

    /// Whether a run of `client_id` that `status` and ended at `completed_at` is due for the
    /// archive at `now`: it has ended, and longer ago than its client's retention.
    pub fn due(&self, client_id: &str, status: RunStatus, completed_at: Option<Millis>, now: Millis) -> bool {
        let (Some(ms), Some(ended)) = (self.of(client_id), completed_at) else { return false };
        status.is_terminal() && now.since(ended) >= ms
    }
}

/// One selection of runs due for the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// One client's runs that ended before `ended_before`.
    Client {
        /// The client.
        client_id: String,
        /// The cut-off.
        ended_before: Millis,
    },
    /// The runs of every client but `except` that ended before `ended_before`.
    Others {
        /// Clients with a retention of their own.
        except: Vec<String>,
        /// The cut-off.
        ended_before: Millis,
    },
}

/// The R2 key of an archived run: a client's runs listed by time under `runs/{client_id}/`.
pub fn archive_key(client_id: &str, created_at: Millis, run_id: &str) -> String {
    format!("runs/{client_id}/{:013}/{run_id}.json.gz", created_at.as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = Millis::new(1_800_000_000_000);

    #[test]
    fn the_default_is_thirty_days_and_zero_keeps_everything() {
        let r = Retention::parse(None, None).unwrap();
        assert_eq!(r.of("acme"), Some(30 * 86_400_000));
        assert!(r.archives());
        let keep = Retention::parse(Some("0"), None).unwrap();
        assert_eq!(keep.of("acme"), None);
        assert!(!keep.archives());
        assert!(keep.passes(NOW).is_empty());
        assert_eq!(Retention::parse(Some("0.5"), None).unwrap().of("x"), Some(43_200_000));
    }

    #[test]
    fn a_client_may_keep_its_runs_longer_shorter_or_for_good() {
        let r = Retention::parse(Some("7"), Some(r#"{"acme": 90, "beta": 0}"#)).unwrap();
        assert_eq!(r.of("acme"), Some(90 * 86_400_000));
        assert_eq!(r.of("beta"), None);
        assert_eq!(r.of("other"), Some(7 * 86_400_000));
        let passes = r.passes(NOW);
        assert_eq!(passes.len(), 2, "acme on its own, everyone but acme and beta by the default: {passes:?}");
        assert!(matches!(&passes[1], Pass::Others { except, .. } if except == &["acme", "beta"]));
    }

    #[test]
    fn a_run_is_due_once_it_ended_longer_ago_than_its_retention() {
        let r = Retention::parse(Some("1"), None).unwrap();
        let day_ago = Some(Millis::new(NOW.as_u64() - 86_400_000));
        assert!(r.due("a", RunStatus::Completed, day_ago, NOW));
        assert!(!r.due("a", RunStatus::Completed, Some(Millis::new(NOW.as_u64() - 1_000)), NOW));
        assert!(!r.due("a", RunStatus::Running, day_ago, NOW), "a run that runs again (retried) stays");
        assert!(!r.due("a", RunStatus::Completed, None, NOW));
    }

    #[test]
    fn every_bad_setting_names_its_variable() {
        for (days, by_client, variable) in [
            (Some("soon"), None, RETENTION_DAYS),
            (Some("-1"), None, RETENTION_DAYS),
            (Some("NaN"), None, RETENTION_DAYS),
            (Some("99999999"), None, RETENTION_DAYS),
            (None, Some("[1]"), RETENTION_DAYS_BY_CLIENT),
            (None, Some(r#"{"acme": "ten"}"#), RETENTION_DAYS_BY_CLIENT),
            (None, Some(r#"{"acme": -3}"#), RETENTION_DAYS_BY_CLIENT),
        ] {
            let e = Retention::parse(days, by_client).unwrap_err();
            assert_eq!(e.variable, variable, "{days:?} {by_client:?}");
            assert!(e.to_string().starts_with(variable), "{e}");
        }
    }

    #[test]
    fn a_clients_archive_keys_sort_by_time() {
        let early = archive_key("acme", Millis::new(999), "run_a");
        let late = archive_key("acme", Millis::new(1_000_000), "run_b");
        assert_eq!(early, "runs/acme/0000000000999/run_a.json.gz");
        assert!(early < late);
    }
}
