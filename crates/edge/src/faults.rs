//! Fault injection for resilience tests: `BATON_FAULT_INJECTION` is a comma-separated list
//! of faults (`kv`, `analysis`, `task-queue`). Unset in every real deployment.

/// Whether `fault` is switched on for this worker.
pub use crate::settings::fault_injected as injected;
