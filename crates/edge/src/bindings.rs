//! Binding names, as declared in the wrangler configs, with the queue names and KV keys.
//! Variables and secrets are read in [`crate::settings`].

/// The D1 database: authoritative state.
pub const DB: &str = "DB";
/// The KV namespace: config, poller heartbeat, job snapshots, large payloads.
pub const KV: &str = "KV";
/// Producer for step dispatch messages (queue `baton-tasks`).
pub const TASK_QUEUE: &str = "TASK_QUEUE";
/// Producer for analysis messages (queue `llm-analysis`).
pub const LLM_ANALYSIS_QUEUE: &str = "LLM_ANALYSIS_QUEUE";
/// Service binding to the poller worker (from the orchestrator).
pub const POLLER: &str = "POLLER";
/// Service binding to the consumer worker (from the orchestrator).
pub const CONSUMER: &str = "CONSUMER";
/// Service binding to the key-account service (master templates).
pub const KAM: &str = "KAM";
/// Service binding to the external services (handshake/process/progress).
pub const SERVICES: &str = "SERVICES";

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
