//! Fault injection for resilience tests: `BATON_FAULT_INJECTION` is a comma-separated list
//! of faults (`kv`, `analysis`, `task-queue`, `in-place`: the orchestrator claims a run's first
//! wave and drops it two seconds later, unrun, as an invocation that dies would; `r2`: the
//! archive pass's write of a run's object fails). Unset in every real deployment.

/// Whether `fault` is switched on for this worker.
pub use crate::settings::fault_injected as injected;
