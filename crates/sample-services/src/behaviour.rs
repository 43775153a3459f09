//! Per-request steering for tests and demos, read from the run's parameters:
//!
//! ```json
//! {"sample_behaviour": {"technical-seo": {"fail_transient": 1}, "*": {"latency_ms": 50}}}
//! ```
//! Keys are sample services (`technical-seo`; `technical_seo` names the same one) or `"*"`;
//! the entry for the service wins over `"*"`. A key that names no sample service, a field
//! that is not a behaviour, or a value of the wrong type is refused (400), so that a typo
//! fails the step with a message naming it instead of being ignored.

use serde::Deserialize;
use serde_json::Value;

use crate::outputs;

/// How a sample service behaves for one request.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Work time before answering (capped at 30 s).
    pub latency_ms: u64,
    /// Attempts up to this number fail with 503 (transient).
    pub fail_transient: u32,
    /// Attempts up to this number fail with 429 (transient).
    pub rate_limit: u32,
    /// Every attempt fails with 400 and this message (permanent); `true` uses the default message.
    pub fail_permanent: Option<Value>,
    /// Record when each call of process started and ended, and the upstream outputs it was
    /// given (KV `sample:call:{execution}:{service}:{attempt}`).
    pub record_calls: bool,
    /// Attempts up to this number fail with 400 (permanent), later ones succeed.
    pub fail_permanent_until: u32,
    /// Attempts up to this number are refused at handshake (`accepted: false`).
    pub reject: u32,
    /// Process answers 202 and never reports a result (exercises timeouts).
    pub never_answer: bool,
    /// Process answers 202 and reports the result later with a signed callback.
    #[serde(rename = "async")]
    pub asynchronous: bool,
    /// The handshake does not offer progress answers (`capabilities.progress` false).
    pub no_progress: bool,
    /// Process answers 202; the result comes only through progress answers (`running` with a
    /// growing fraction until `latency_ms` has passed, then `completed`).
    pub progress_only: bool,
    /// With `progress_only`: `completed` carries no output; it is fetched from
    /// `/api/result/{executionId}`.
    pub result_by_fetch: bool,
    /// Process answers 202; progress answers say `running` (heartbeats) for this long, then
    /// stop answering (the connection is held open).
    pub heartbeat_then_silent_ms: Option<u64>,
    /// Process holds the connection open without answering (for this long, capped at 10
    /// minutes; `true`: 10 minutes).
    pub hold_open: Option<Value>,
    /// The items of a map step at these indices (`index` in the input) fail with 400
    /// (permanent), on every attempt.
    pub fail_items: Vec<u64>,
}

/// The message of a permanent failure when none is given.
pub const DEFAULT_PERMANENT_ERROR: &str = "Worker config invalid: No API key found";

impl Behaviour {
    /// Reads the behaviour for `service` from the run parameters (none given: the default).
    /// An error names what is wrong with the table, whichever service it is about.
    pub fn for_service(parameters: &Value, service: &str) -> Result<Behaviour, String> {
        let table = match &parameters["sample_behaviour"] {
            Value::Null => return Ok(Behaviour::default()),
            Value::Object(table) => table,
            other => {
                return Err(format!("parameters.sample_behaviour must be an object keyed by service, got {other}"))
            }
        };
        let mut own = None;
        let mut wildcard = None;
        for (key, entry) in table {
            let named = key.replace('_', "-");
            let behaviour: Behaviour =
                serde_json::from_value(entry.clone()).map_err(|e| format!("parameters.sample_behaviour.{key}: {e}"))?;
            if key == "*" {
                wildcard = Some(behaviour);
            } else if !outputs::is_known(&named) {
                return Err(format!(
                    "parameters.sample_behaviour: `{key}` is not a sample service; keys are \"*\" or one of: {}",
                    outputs::SERVICES.join(", ")
                ));
            } else if named == service {
                own = Some(behaviour);
            }
        }
        Ok(own.or(wildcard).unwrap_or_default())
    }

    /// The permanent failure message, if this request must fail permanently.
    pub fn permanent_error(&self) -> Option<String> {
        match &self.fail_permanent {
            None | Some(Value::Bool(false)) | Some(Value::Null) => None,
            Some(Value::String(message)) => Some(message.clone()),
            Some(_) => Some(DEFAULT_PERMANENT_ERROR.to_string()),
        }
    }

    /// Work time, capped.
    pub fn latency_ms(&self) -> u64 {
        self.latency_ms.min(30_000)
    }

    /// How long process holds the connection open, if it must.
    pub fn hold_open_ms(&self) -> Option<u64> {
        const LIMIT: u64 = 600_000;
        match &self.hold_open {
            None | Some(Value::Bool(false)) | Some(Value::Null) => None,
            Some(Value::Number(ms)) => Some(ms.as_u64().unwrap_or(LIMIT).min(LIMIT)),
            Some(_) => Some(LIMIT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_service_entry_wins_over_the_wildcard() {
        let params = json!({"sample_behaviour": {"technical-seo": {"fail_transient": 2}, "*": {"latency_ms": 5}}});
        let of = |service| Behaviour::for_service(&params, service).unwrap();
        assert_eq!(of("technical-seo").fail_transient, 2);
        assert_eq!(of("technical-seo").latency_ms, 0);
        assert_eq!(of("vitals-monitor").latency_ms, 5);
        assert_eq!(Behaviour::for_service(&json!({}), "vitals-monitor"), Ok(Behaviour::default()));
    }

    #[test]
    fn a_key_with_underscores_names_the_same_service() {
        let params = json!({"sample_behaviour": {"technical_seo": {"fail_transient": 2}}});
        assert_eq!(Behaviour::for_service(&params, "technical-seo").unwrap().fail_transient, 2);
        assert_eq!(Behaviour::for_service(&params, "vitals-monitor").unwrap(), Behaviour::default());
    }

    #[test]
    fn a_typo_is_an_error_naming_it() {
        let check = |table: Value, expected: &str| {
            let error = Behaviour::for_service(&json!({ "sample_behaviour": table }), "vitals-monitor").unwrap_err();
            assert!(error.contains(expected), "{error:?} should contain {expected:?}");
        };
        check(json!({"technical-sep": {"hold_open": true}}), "`technical-sep` is not a sample service");
        check(json!({"technical-seo": {"hold_opn": true}}), "sample_behaviour.technical-seo: unknown field `hold_opn`");
        check(json!({"*": {"latency_ms": "fast"}}), "sample_behaviour.*: invalid type");
        check(json!([1]), "must be an object keyed by service");
    }

    #[test]
    fn permanent_failure_messages() {
        let b = |v: Value| Behaviour { fail_permanent: Some(v), ..Behaviour::default() }.permanent_error();
        assert_eq!(b(json!(true)).as_deref(), Some(DEFAULT_PERMANENT_ERROR));
        assert_eq!(b(json!("boom")).as_deref(), Some("boom"));
        assert_eq!(b(json!(false)), None);
    }
}
