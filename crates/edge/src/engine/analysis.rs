//! The analysis of a claimed run: the rule-based diagnosis, with the LLM's narrative when one
//! is configured ([`crate::llm`]), then the run's one ending ([`Engine::finish_analysed`]).
//!
//! Idempotent: a run that is not `aggregating` (already finalised, or never claimed) is left
//! alone; two racing analyses both compute, but the guarded ending and the events' dedupe
//! keys let exactly one diagnosis stand.

use baton_core::state::RunStatus;

use super::finish::rule_based_diagnosis;
use super::run::{Engine, Loaded};
use crate::llm::{narrative, LlmConfig};
use crate::{faults, Error, Result};

impl Engine<'_> {
    /// Writes the diagnosis of `run_id` and ends it, once. `synthesis_error`: why the
    /// narrative is missing (the dead-letter path, which must not wait on the LLM again).
    pub async fn finalize(&self, run_id: &str, synthesis_error: Option<&str>) -> Result<()> {
        let Some(loaded) = self.load(run_id).await? else { return Ok(()) };
        self.finalize_loaded(loaded, synthesis_error).await
    }

    /// [`finalize`](Self::finalize) on a run the caller has (the one that just won the fan-in
    /// claim).
    pub async fn finalize_loaded(&self, loaded: Loaded, synthesis_error: Option<&str>) -> Result<()> {
        // Resilience tests make the analysis fail so its messages reach the dead-letter queue
        // (whose finalisation, with `synthesis_error`, is let through).
        if synthesis_error.is_none() && faults::injected(self.env(), "analysis") {
            return Err(Error::Internal("injected analysis fault".into()));
        }
        if loaded.status()? != RunStatus::Aggregating {
            return Ok(()); // finalised already, or not claimed: nothing to do
        }
        let mut diagnosis = rule_based_diagnosis(&loaded, synthesis_error);
        if let (None, Some(llm)) = (synthesis_error, LlmConfig::from_env(self.env())) {
            match narrative(&llm, &diagnosis).await {
                Ok(text) => {
                    diagnosis.narrative = Some(text);
                    diagnosis.synthesis = "rules+llm".to_string();
                }
                Err(error) => diagnosis.synthesis_error = Some(error),
            }
        }
        self.finish_analysed(&loaded, diagnosis).await?;
        Ok(())
    }
}
