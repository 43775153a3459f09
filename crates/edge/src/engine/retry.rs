//! Retrying an ended run in place, and running it again as a new run.
//!
//! A retry is core's decision ([`lifecycle::retry`]): the steps that did not complete start
//! over with a fresh retry budget, completed outputs are kept. One gated batch writes it — the
//! steps, the run back to `running` from now (a new deadline, one more retry counted), the
//! client's quota of runs in progress, a start event of the new round — then a look dispatches
//! what is ready. The round's diagnosis and finish events have their own dedupe keys, so the
//! run's history keeps every round's.

use baton_core::lifecycle::{self, RetryRefused};
use baton_core::quota::QuotaExceeded;
use baton_core::state::RunKind;
use serde_json::Value;

use super::run::{AdvanceReport, Engine, Loaded};
use super::start::{NewRun, Started};
use crate::d1::runs;
use crate::{Error, Result};

/// What retrying came to.
#[derive(Debug, Clone)]
pub enum RetryOutcome {
    /// The run runs again: the steps started over, and what the first look did.
    Retried { steps: Vec<String>, retries: i64, advance: Box<AdvanceReport> },
    /// Core refused it.
    Refused(RetryRefused),
}

impl Engine<'_> {
    /// Retries the ended run `loaded` in place.
    pub async fn retry_run(&self, loaded: Loaded) -> Result<RetryOutcome> {
        crate::meter::attribute(&loaded.run.run_id);
        let restart = match lifecycle::restart(
            loaded.status()?,
            &loaded.plan,
            &loaded.records()?,
            loaded.run.retries.max(0) as u32,
            self.now(),
            &self.config.fan_in(),
        ) {
            Ok(restart) => restart,
            Err(refused) => return Ok(RetryOutcome::Refused(refused)),
        };
        let max_active = crate::settings::quotas(self.env()).of(&loaded.run.client_id).active_runs;
        let (after, advance) = match self.write_restart(&loaded, &restart, max_active).await {
            Ok(Some(written)) => written,
            Ok(None) => {
                let run_id = &loaded.run.run_id;
                return Err(Error::Conflict(format!("run {run_id} changed while it was being retried; try again")));
            }
            Err(e) if runs::is_over_active_quota(&e) => {
                return Err(Error::Quota(QuotaExceeded::ActiveRuns { limit: max_active }))
            }
            Err(e) => return Err(e),
        };
        let names = restart.writes.iter().map(|w| w.after.service.as_str().to_string()).collect();
        Ok(RetryOutcome::Retried { steps: names, retries: after.run.retries, advance: Box::new(advance) })
    }

    /// Starts a new run with the same inputs as `loaded` (plan as it ran, site, domain,
    /// parameters) for the same client; `acted_by`: the delegate asking, if not the client.
    pub async fn rerun(&self, loaded: &Loaded, acted_by: Option<String>) -> Result<Started> {
        let parameters: Value = serde_json::from_str(&loaded.run.parameters).unwrap_or(Value::Null);
        let new = NewRun {
            run_id: self.new_run_id()?,
            kind: RunKind::Diagnostic,
            client_id: loaded.run.client_id.clone(),
            website_id: loaded.run.website_id.clone(),
            domain: loaded.run.domain.clone(),
            plan: loaded.plan.clone(),
            parameters,
            idempotency_key: None,
            priority: loaded.run.priority,
            acted_by,
            trace: None,
            parent: None,
        };
        self.start_run(new).await
    }
}
