//! Per-client quotas (`QUOTAS`): how much of the shared engine one client may hold at once.
//!
//! ```json
//! {"default": {"active_runs": 10000, "custom_plans": 1000, "queued_executions": 1000, "max_priority": "critical"},
//!  "acme": {"active_runs": 50, "max_priority": "high"}}
//! ```
//! A client's entry overrides the default field by field; absent fields keep the built-in
//! defaults ([`Quota::default`]), generous enough never to stop a single well-behaved client.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::request::Priority;

/// What one client may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Runs started and not yet ended (diagnostic runs).
    pub active_runs: u32,
    /// Custom plans.
    pub custom_plans: u32,
    /// Executions waiting for admission.
    pub queued_executions: u32,
    /// The highest priority its executions may ask for.
    pub max_priority: Priority,
    /// How deep child runs may nest: a run started by a `run` step is one deeper than its
    /// parent; a start deeper than this is refused (default [`DEFAULT_MAX_CHILD_DEPTH`]).
    pub max_child_depth: u32,
}

/// How deep child runs may nest by default.
pub const DEFAULT_MAX_CHILD_DEPTH: u32 = 3;

impl Default for Quota {
    fn default() -> Self {
        Quota {
            active_runs: 10_000,
            custom_plans: 1_000,
            queued_executions: 1_000,
            max_priority: Priority::Critical,
            max_child_depth: DEFAULT_MAX_CHILD_DEPTH,
        }
    }
}

/// One entry of `QUOTAS`: any field may be left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaDraft {
    active_runs: Option<u32>,
    custom_plans: Option<u32>,
    queued_executions: Option<u32>,
    max_priority: Option<Priority>,
    max_child_depth: Option<u32>,
}

impl QuotaDraft {
    fn over(self, base: Quota) -> Quota {
        Quota {
            active_runs: self.active_runs.unwrap_or(base.active_runs),
            custom_plans: self.custom_plans.unwrap_or(base.custom_plans),
            queued_executions: self.queued_executions.unwrap_or(base.queued_executions),
            max_priority: self.max_priority.unwrap_or(base.max_priority),
            max_child_depth: self.max_child_depth.unwrap_or(base.max_child_depth),
        }
    }
}

/// Every client's quota.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quotas {
    default: Quota,
    clients: BTreeMap<String, Quota>,
}

impl Quotas {
    /// Reads `QUOTAS` (an empty text: the built-in defaults). Errors name the entry and field.
    pub fn parse(text: &str) -> Result<Quotas, String> {
        if text.trim().is_empty() {
            return Ok(Quotas::default());
        }
        let entries: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| format!("QUOTAS must be a JSON object of client → quota: {e}"))?;
        let draft = |name: &str, value: &serde_json::Value| {
            QuotaDraft::deserialize(value).map_err(|e| format!("QUOTAS.{name}: {e}"))
        };
        let default = match entries.get("default") {
            Some(value) => draft("default", value)?.over(Quota::default()),
            None => Quota::default(),
        };
        let mut clients = BTreeMap::new();
        for (client, value) in entries.iter().filter(|(name, _)| name.as_str() != "default") {
            clients.insert(client.clone(), draft(client, value)?.over(default));
        }
        Ok(Quotas { default, clients })
    }

    /// `client`'s quota.
    pub fn of(&self, client: &str) -> Quota {
        self.clients.get(client).copied().unwrap_or(self.default)
    }
}

/// A quota a request would exceed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    /// Too many runs in progress (it clears as they end: retry later).
    #[error("quota active_runs: {limit} runs in progress at most; wait for one to end")]
    ActiveRuns {
        /// The limit.
        limit: u32,
    },
    /// Too many custom plans.
    #[error("quota custom_plans: {limit} custom plans at most")]
    CustomPlans {
        /// The limit.
        limit: u32,
    },
    /// Too many executions waiting.
    #[error("quota queued_executions: {limit} executions waiting at most; wait for one to be admitted")]
    QueuedExecutions {
        /// The limit.
        limit: u32,
    },
    /// A child run nested deeper than the client's limit.
    #[error("quota max_child_depth: a child run at depth {depth} is deeper than this client's {limit}")]
    ChildDepth {
        /// The depth the child would have.
        depth: u32,
        /// The limit.
        limit: u32,
    },
    /// A priority above the client's.
    #[error("quota max_priority: priority {asked:?} is above this client's highest, {limit:?}")]
    Priority {
        /// What was asked.
        asked: Priority,
        /// The highest allowed.
        limit: Priority,
    },
}

impl QuotaExceeded {
    /// Whether it clears by itself (answer 429 with `Retry-After`), or never does (403).
    pub fn clears(&self) -> bool {
        matches!(self, QuotaExceeded::ActiveRuns { .. } | QuotaExceeded::QueuedExecutions { .. })
    }

    /// The quota's name.
    pub fn quota(&self) -> &'static str {
        match self {
            QuotaExceeded::ActiveRuns { .. } => "active_runs",
            QuotaExceeded::CustomPlans { .. } => "custom_plans",
            QuotaExceeded::QueuedExecutions { .. } => "queued_executions",
            QuotaExceeded::Priority { .. } => "max_priority",
            QuotaExceeded::ChildDepth { .. } => "max_child_depth",
        }
    }
}

impl Quota {
    /// Whether an execution may ask for `priority`.
    pub fn allows_priority(&self, priority: Priority) -> Result<(), QuotaExceeded> {
        if priority.rank() > self.max_priority.rank() {
            return Err(QuotaExceeded::Priority { asked: priority, limit: self.max_priority });
        }
        Ok(())
    }

    /// Whether a client holding `held` custom plans may create another.
    pub fn allows_plan(&self, held: u64) -> Result<(), QuotaExceeded> {
        if held >= u64::from(self.custom_plans) {
            return Err(QuotaExceeded::CustomPlans { limit: self.custom_plans });
        }
        Ok(())
    }

    /// Whether a child run may start at `depth` (its parent's depth + 1; a run started by a
    /// client is at depth 0).
    pub fn allows_child_depth(&self, depth: u32) -> Result<(), QuotaExceeded> {
        if depth > self.max_child_depth {
            return Err(QuotaExceeded::ChildDepth { depth, limit: self.max_child_depth });
        }
        Ok(())
    }

    /// Whether a client with `waiting` executions queued may queue another.
    pub fn allows_queued(&self, waiting: u64) -> Result<(), QuotaExceeded> {
        if waiting >= u64::from(self.queued_executions) {
            return Err(QuotaExceeded::QueuedExecutions { limit: self.queued_executions });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_entry_overrides_the_default_field_by_field() {
        let quotas =
            Quotas::parse(r#"{"default": {"active_runs": 100}, "acme": {"custom_plans": 2, "max_priority": "high"}}"#)
                .unwrap();
        let acme = quotas.of("acme");
        assert_eq!((acme.active_runs, acme.custom_plans, acme.max_priority), (100, 2, Priority::High));
        assert_eq!(quotas.of("other"), Quota { active_runs: 100, ..Quota::default() });
        assert_eq!(Quotas::parse("").unwrap().of("x"), Quota::default());
    }

    #[test]
    fn bad_quotas_name_the_entry() {
        assert!(Quotas::parse("[]").unwrap_err().starts_with("QUOTAS must be a JSON object"));
        let error = Quotas::parse(r#"{"acme": {"active_run": 1}}"#).unwrap_err();
        assert!(error.starts_with("QUOTAS.acme: unknown field `active_run`"), "{error}");
        assert!(Quotas::parse(r#"{"acme": {"max_priority": "urgent"}}"#).unwrap_err().starts_with("QUOTAS.acme"));
    }

    #[test]
    fn each_quota_says_whether_it_clears() {
        let quota = Quota { custom_plans: 1, queued_executions: 1, max_priority: Priority::Normal, ..Quota::default() };
        assert_eq!(quota.allows_plan(0), Ok(()));
        let plans = quota.allows_plan(1).unwrap_err();
        assert!(!plans.clears());
        assert_eq!(plans.to_string(), "quota custom_plans: 1 custom plans at most");
        assert!(quota.allows_queued(1).unwrap_err().clears());
        let priority = quota.allows_priority(Priority::Critical).unwrap_err();
        assert_eq!(priority.quota(), "max_priority");
        assert!(quota.allows_priority(Priority::Low).is_ok());
        let depth = Quotas::parse(r#"{"acme": {"max_child_depth": 1}}"#).unwrap().of("acme");
        assert_eq!((Quota::default().max_child_depth, depth.allows_child_depth(1)), (3, Ok(())));
        let deep = depth.allows_child_depth(2).unwrap_err();
        assert!(!deep.clears() && deep.quota() == "max_child_depth", "{deep}");
        assert_eq!(deep.to_string(), "quota max_child_depth: a child run at depth 2 is deeper than this client's 1");
    }
}
