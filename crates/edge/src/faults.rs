//! Fault injection for resilience tests: `BATON_FAULT_INJECTION` is a comma-separated list
//! of faults (`kv`, `analysis`, `task-queue`). Unset in every real deployment.

/// Whether `fault` is switched on for this worker.
pub fn injected(env: &worker::Env, fault: &str) -> bool {
    env.var("BATON_FAULT_INJECTION").map(|v| v.to_string().split(',').any(|f| f.trim() == fault)).unwrap_or(false)
}
