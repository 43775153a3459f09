//! Every worker variable core validates, checked in one place. The workers parse each where
//! they use it (a bad value refuses that work, and `/health` names it); [`check`] runs the same
//! parsers over a whole configuration at once, so that `make dev` and `make deploy` refuse it
//! before anything starts (`baton check-config`).
//!
//! A new validated variable is one more entry of [`CHECKS`].

use crate::config::{self, Config, ConfigError};
use crate::cost;
use crate::llm;
use crate::otlp;
use crate::retention::{self, Retention};
use crate::shard::{self, Shards};

/// A variable refused: which, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct VarProblem {
    /// The variable.
    pub variable: String,
    /// What is wrong with it.
    pub problem: String,
}

/// A variable's value by name (`None`: unset).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// One check: the variables it reads, and the problems it finds in their values.
pub struct Check {
    /// The variables it reads.
    pub variables: &'static [&'static str],
    /// Its problems with the values `lookup` gives.
    pub run: fn(Lookup<'_>) -> Vec<VarProblem>,
}

/// Every check, one per parser of core's.
pub const CHECKS: &[Check] = &[
    Check { variables: &config::KEYS, run: orchestration },
    Check { variables: &[retention::RETENTION_DAYS, retention::RETENTION_DAYS_BY_CLIENT], run: retention },
    Check { variables: &[shard::D1_SHARDS, shard::SHARD_BY_CLIENT], run: shards },
    Check { variables: &[llm::PRICES_VAR], run: llm_prices },
    Check { variables: &[llm::CACHE_SECONDS_VAR], run: llm_cache_seconds },
    Check { variables: &[cost::PRICES_VAR], run: cost_prices },
    Check {
        variables: &[otlp::ENDPOINT_VAR, otlp::TRACES_ENDPOINT_VAR, otlp::HEADERS_VAR, otlp::TIMEOUT_VAR],
        run: otlp_exporter,
    },
];

/// Every problem of the variables `lookup` gives, by every check.
pub fn check(lookup: Lookup<'_>) -> Vec<VarProblem> {
    CHECKS.iter().flat_map(|c| (c.run)(lookup)).collect()
}

/// Every variable some check reads.
pub fn checked() -> impl Iterator<Item = &'static str> {
    CHECKS.iter().flat_map(|c| c.variables.iter().copied())
}

/// The orchestration configuration ([`Config::from_lookup`]), each key on its own so every
/// bad one is named.
fn orchestration(lookup: Lookup<'_>) -> Vec<VarProblem> {
    config::KEYS
        .iter()
        .filter_map(|key| {
            let only = |k: &str| if k == *key { lookup(k) } else { None };
            Config::from_lookup(only).err().map(|e| VarProblem {
                variable: key.to_string(),
                problem: match e {
                    ConfigError::InvalidValue { value, expected, .. } => {
                        format!("expected {expected}, got {value:?}")
                    }
                    other => other.to_string(),
                },
            })
        })
        .collect()
}

/// The retention ([`Retention::parse`]).
fn retention(lookup: Lookup<'_>) -> Vec<VarProblem> {
    let days = lookup(retention::RETENTION_DAYS);
    let by_client = lookup(retention::RETENTION_DAYS_BY_CLIENT);
    match Retention::parse(days.as_deref(), by_client.as_deref()) {
        Ok(_) => Vec::new(),
        Err(e) => vec![VarProblem { variable: e.variable.to_string(), problem: e.problem }],
    }
}

/// The shards ([`Shards::parse`]).
fn shards(lookup: Lookup<'_>) -> Vec<VarProblem> {
    let count = lookup(shard::D1_SHARDS);
    let by_client = lookup(shard::SHARD_BY_CLIENT);
    match Shards::parse(count.as_deref(), by_client.as_deref()) {
        Ok(_) => Vec::new(),
        Err(e) => vec![VarProblem { variable: e.variable.to_string(), problem: e.problem }],
    }
}

/// `LLM_PRICES` ([`llm::Prices::parse`]): its message names the variable.
fn llm_prices(lookup: Lookup<'_>) -> Vec<VarProblem> {
    match llm::Prices::parse(&lookup(llm::PRICES_VAR).unwrap_or_default()) {
        Ok(_) => Vec::new(),
        Err(problem) => {
            let problem = problem.strip_prefix(llm::PRICES_VAR).unwrap_or(&problem).trim_start_matches([':', ' ']);
            vec![VarProblem { variable: llm::PRICES_VAR.to_string(), problem: problem.to_string() }]
        }
    }
}

/// `LLM_CACHE_SECONDS` ([`llm::parse_cache_seconds`]).
fn llm_cache_seconds(lookup: Lookup<'_>) -> Vec<VarProblem> {
    match llm::parse_cache_seconds(lookup(llm::CACHE_SECONDS_VAR).as_deref()) {
        Ok(_) => Vec::new(),
        Err(problem) => {
            let problem = problem.strip_prefix(llm::CACHE_SECONDS_VAR).unwrap_or(&problem).trim_start();
            vec![VarProblem { variable: llm::CACHE_SECONDS_VAR.to_string(), problem: problem.to_string() }]
        }
    }
}

/// `COST_PRICES` ([`cost::UnitPrices::parse`]).
fn cost_prices(lookup: Lookup<'_>) -> Vec<VarProblem> {
    match cost::UnitPrices::parse(lookup(cost::PRICES_VAR).as_deref()) {
        Ok(_) => Vec::new(),
        Err(problem) => {
            let problem = problem.strip_prefix(cost::PRICES_VAR).unwrap_or(&problem).trim_start();
            vec![VarProblem { variable: cost::PRICES_VAR.to_string(), problem: problem.to_string() }]
        }
    }
}

/// The span exporter ([`otlp::Exporter::from_lookup`]).
fn otlp_exporter(lookup: Lookup<'_>) -> Vec<VarProblem> {
    match otlp::Exporter::from_lookup(lookup) {
        Ok(_) => Vec::new(),
        Err(e) => vec![VarProblem { variable: e.variable.to_string(), problem: e.problem }],
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn problems(vars: &[(&str, &str)]) -> Vec<String> {
        let vars: BTreeMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        check(&|k: &str| vars.get(k).cloned()).into_iter().map(|p| p.variable).collect()
    }

    #[test]
    fn every_bad_variable_is_named_and_good_ones_pass() {
        assert!(problems(&[]).is_empty());
        assert!(problems(&[("RETENTION_DAYS", "30"), ("RETENTION_DAYS_BY_CLIENT", r#"{"acme": 0}"#)]).is_empty());
        assert_eq!(problems(&[("RETENTION_DAYS", "a month")]), ["RETENTION_DAYS"]);
        assert_eq!(problems(&[("RETENTION_DAYS_BY_CLIENT", "[1]")]), ["RETENTION_DAYS_BY_CLIENT"]);
        assert_eq!(problems(&[("D1_SHARDS", "0")]), ["D1_SHARDS"]);
        assert_eq!(problems(&[("D1_SHARDS", "2"), ("SHARD_BY_CLIENT", r#"{"acme": 2}"#)]), ["SHARD_BY_CLIENT"]);
        assert!(problems(&[("D1_SHARDS", "2"), ("SHARD_BY_CLIENT", r#"{"acme": 1}"#)]).is_empty());
        assert_eq!(problems(&[("LLM_CACHE_SECONDS", "5")]), ["LLM_CACHE_SECONDS"]);
        assert!(problems(&[("LLM_CACHE_SECONDS", "0")]).is_empty());
        assert_eq!(problems(&[("COST_PRICES", r#"{"kv": 1}"#)]), ["COST_PRICES"]);
        assert_eq!(problems(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318")]), ["OTEL_EXPORTER_OTLP_ENDPOINT"]);
        assert_eq!(problems(&[("OTEL_EXPORTER_OTLP_HEADERS", "key")]), ["OTEL_EXPORTER_OTLP_HEADERS"]);
        assert!(problems(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=b")
        ])
        .is_empty());
        assert_eq!(
            problems(&[("POLLER_BATCH_SIZE", "0"), ("JOB_TIMEOUT_MINUTES", "x"), ("RETENTION_DAYS", "-1")]),
            ["JOB_TIMEOUT_MINUTES", "POLLER_BATCH_SIZE", "RETENTION_DAYS"]
        );
    }

    #[test]
    fn a_problem_says_what_is_wrong() {
        let vars = |k: &str| (k == "RETENTION_DAYS").then(|| "soon".to_string());
        let found = check(&vars);
        assert_eq!(found.len(), 1);
        assert!(found[0].to_string().starts_with("RETENTION_DAYS: "), "{}", found[0]);
        assert!(found[0].problem.contains("number of days"), "{}", found[0]);
    }

    #[test]
    fn every_checked_variable_is_named_once() {
        let names: Vec<&str> = checked().collect();
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(names.len(), unique.len());
        assert!(unique.contains("RETENTION_DAYS") && unique.contains("POLLER_BATCH_SIZE"));
    }
}
