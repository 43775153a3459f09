//! Binding names, as declared in the wrangler configs, with the queue names and KV keys.
//! Variables and secrets are read in [`crate::settings`].

/// The D1 databases, authoritative state: `DB_0`..`DB_{N-1}`, one per shard (`D1_SHARDS`;
/// see [`baton_core::shard::Shard::binding`]).
pub const DB_PREFIX: &str = "DB_";
/// The KV namespace: config, poller heartbeat, job snapshots, large payloads.
pub const KV: &str = "KV";
/// R2: archived runs, one compressed object each (`RETENTION_DAYS`).
pub const ARCHIVE: &str = "ARCHIVE";
/// Producer for step dispatch messages (queue `baton-tasks`).
pub const TASK_QUEUE: &str = "TASK_QUEUE";
/// Producer for analysis messages (queue `llm-analysis`).
pub const LLM_ANALYSIS_QUEUE: &str = "LLM_ANALYSIS_QUEUE";
/// Producer for webhook deliveries (queue `baton-webhooks`).
pub const WEBHOOK_QUEUE: &str = "WEBHOOK_QUEUE";
/// Service binding to the poller worker (from the orchestrator).
pub const POLLER: &str = "POLLER";
/// Service binding to the consumer worker (from the orchestrator).
pub const CONSUMER: &str = "CONSUMER";
/// Service binding to the key-account service (master templates).
pub const KAM: &str = "KAM";
/// Service binding to the external services (handshake/process/progress).
pub const SERVICES: &str = "SERVICES";
/// The version metadata (`[version_metadata]`): when this version of the worker was uploaded
/// (under `wrangler dev`: when the stack started).
pub const VERSION_METADATA: &str = "CF_VERSION_METADATA";

/// Queue names as the consumer sees them in a batch.
pub mod queue_names {
    /// Step dispatch.
    pub const TASKS: &str = "baton-tasks";
    /// Step dispatch dead letters.
    pub const TASKS_DLQ: &str = "baton-tasks-dlq";
    /// Analysis.
    pub const ANALYSIS: &str = "llm-analysis";
    /// Analysis dead letters.
    pub const ANALYSIS_DLQ: &str = "llm-analysis-dlq";

    /// Webhook deliveries.
    pub const WEBHOOKS: &str = "baton-webhooks";
    /// Webhook deliveries that exhausted their attempts.
    pub const WEBHOOKS_DLQ: &str = "baton-webhooks-dlq";

    /// Which of the queues above `name` is. A deployed environment other than production
    /// suffixes its queues (`baton-tasks-staging`, `baton-tasks-dlq-staging`).
    pub fn kind(name: &str) -> Option<&'static str> {
        // The dead-letter queues first: `baton-tasks-dlq` also starts with `baton-tasks-`.
        [TASKS_DLQ, ANALYSIS_DLQ, WEBHOOKS_DLQ, TASKS, ANALYSIS, WEBHOOKS].into_iter().find(|base| {
            name.strip_prefix(base).is_some_and(|rest| rest.is_empty() || (rest.starts_with('-') && rest.len() > 1))
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn an_environment_suffix_keeps_the_kind_of_queue() {
            for (name, expected) in [
                ("baton-tasks", Some(TASKS)),
                ("baton-tasks-staging", Some(TASKS)),
                ("baton-tasks-dlq", Some(TASKS_DLQ)),
                ("baton-tasks-dlq-staging", Some(TASKS_DLQ)),
                ("llm-analysis-staging", Some(ANALYSIS)),
                ("llm-analysis-dlq", Some(ANALYSIS_DLQ)),
                ("baton-webhooks", Some(WEBHOOKS)),
                ("baton-webhooks-dlq-staging", Some(WEBHOOKS_DLQ)),
                ("baton-tasks-", None),
                ("baton-taskss", None),
                ("other", None),
            ] {
                assert_eq!(kind(name), expected, "{name}");
            }
        }
    }
}

/// KV keys.
pub mod kv_keys {
    /// Runtime overrides of the orchestration config (JSON object).
    pub const CONFIG: &str = "orchestration:config";
    /// The poller's last tick (JSON).
    pub const LAST_RUN: &str = "orchestration:last_run";
    /// A job's status snapshot.
    pub fn job(trace_id: &str) -> String {
        format!("job:{trace_id}")
    }
}
