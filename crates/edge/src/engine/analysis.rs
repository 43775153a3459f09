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

/// How a claimed run is analysed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Analysis<'a> {
    /// The rule-based diagnosis, with the LLM's narrative when one is configured.
    Full,
    /// The rule-based diagnosis only, noting why the narrative is missing (the dead-letter
    /// path, which must not wait on the LLM again).
    RulesOnly {
        /// Why: kept as the diagnosis's `synthesis_error`.
        because: &'a str,
    },
}

impl Engine<'_> {
    /// Writes the diagnosis of `run_id` and ends it, once.
    pub async fn finalize(&self, run_id: &str, analysis: Analysis<'_>) -> Result<()> {
        crate::meter::attribute(run_id);
        let Some(loaded) = self.load(run_id).await? else { return Ok(()) };
        self.finalize_loaded(loaded, analysis).await
    }

    /// [`finalize`](Self::finalize) on a run the caller has (the one that just won the fan-in
    /// claim).
    pub(crate) async fn finalize_loaded(&self, loaded: Loaded, analysis: Analysis<'_>) -> Result<()> {
        // Resilience tests make the analysis fail so its messages reach the dead-letter queue
        // (whose rules-only finalisation is let through).
        if analysis == Analysis::Full && faults::injected(self.env(), "analysis") {
            return Err(Error::Internal("injected analysis fault".into()));
        }
        if loaded.status()? != RunStatus::Aggregating {
            return Ok(()); // finalised already, or not claimed: nothing to do
        }
        let synthesis_error = match analysis {
            Analysis::Full => None,
            Analysis::RulesOnly { because } => Some(because),
        };
        let mut diagnosis = rule_based_diagnosis(&loaded, synthesis_error);
        if let (Analysis::Full, Some(llm)) = (analysis, LlmConfig::from_env(self.env())) {
            let kv = crate::kv::Kv::from_env(self.env()).ok();
            let asked = narrative(&llm, &diagnosis, &loaded.run.trace(), kv.as_ref()).await;
            match asked.narrative {
                Ok(text) => {
                    diagnosis.narrative = Some(text);
                    diagnosis.synthesis = "rules+llm".to_string();
                }
                Err(error) => diagnosis.synthesis_error = Some(error),
            }
            diagnosis.llm = Some(asked.usage);
        }
        self.finish_analysed(&loaded, diagnosis).await?;
        Ok(())
    }
}
