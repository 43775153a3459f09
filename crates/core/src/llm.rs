//! The LLM's part of an analysis, accounted for: the prompt it is given (one template, whose
//! hash names it), what one call used (tokens, time, attempts), what that cost at the
//! configured prices, and the key under which an identical request is answered from the cache.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The system prompt of every analysis: the template whose hash ([`prompt_hash`]) each usage
/// record names, so a change to it shows in the records and invalidates the cache.
pub const SYSTEM_PROMPT: &str =
    "You are an SEO analyst. Write a short diagnosis (at most 150 words) for the site owner \
from these normalised signals and findings. Mention missing data if any.";

/// The sampling temperature of every analysis (part of the template).
pub const TEMPERATURE: f64 = 0.2;

/// The hash of the prompt template (system prompt and temperature): 16 hex characters.
pub fn prompt_hash() -> String {
    let mut hash = Sha256::new();
    hash.update(SYSTEM_PROMPT.as_bytes());
    hash.update(format!("\ntemperature={TEMPERATURE}").as_bytes());
    hex::encode(&hash.finalize()[..8])
}

/// The cache key of a request: the template, the model and the user message (the run's
/// signals and findings). Two analyses with the same key would ask the model the same thing.
pub fn cache_key(model: &str, user_message: &str) -> String {
    let mut hash = Sha256::new();
    for part in [prompt_hash().as_str(), model, user_message] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    format!("llm:{}", hex::encode(hash.finalize()))
}

/// What one analysis asked of the LLM, kept with its diagnosis (`llm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Who answered: the host of `LLM_API_URL`.
    pub provider: String,
    /// The model asked (`LLM_MODEL`), or the one the provider says answered.
    pub model: String,
    /// The prompt template's hash ([`prompt_hash`]).
    pub prompt_hash: String,
    /// Tokens read (the provider's `usage.prompt_tokens`), 0 when it did not say.
    pub input_tokens: u64,
    /// Tokens written (`usage.completion_tokens`).
    pub output_tokens: u64,
    /// From the first attempt's start to the answer (or the last failure), ms.
    pub latency_ms: u64,
    /// Calls made (0 when the cache answered).
    pub attempts: u32,
    /// The estimated cost in USD at `LLM_PRICES`; `None` when the model has no price.
    pub cost_usd: Option<f64>,
    /// Whether the narrative came from the cache (an identical request within
    /// `LLM_CACHE_SECONDS`): nothing was paid for it this time.
    pub cached: bool,
    /// Why the rules' diagnosis stands alone (the LLM failed), if it does.
    pub fallback_reason: Option<String>,
}

/// The variable that sets how long an answer is reused: seconds, `0` turns the cache off.
pub const CACHE_SECONDS_VAR: &str = "LLM_CACHE_SECONDS";

/// How long an answer is reused when [`CACHE_SECONDS_VAR`] is unset: an hour.
pub const DEFAULT_CACHE_SECONDS: u64 = 3_600;

/// KV's shortest expiry: a shorter cache time (other than 0) is refused.
pub const MIN_CACHE_SECONDS: u64 = 60;

/// Reads [`CACHE_SECONDS_VAR`]: unset or blank is [`DEFAULT_CACHE_SECONDS`], `0` is off;
/// every problem names the variable.
pub fn parse_cache_seconds(text: Option<&str>) -> Result<u64, String> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(DEFAULT_CACHE_SECONDS) };
    match text.parse::<u64>() {
        Ok(0) => Ok(0),
        Ok(seconds) if seconds >= MIN_CACHE_SECONDS => Ok(seconds),
        Ok(seconds) => Err(format!(
            "{CACHE_SECONDS_VAR} must be 0 (no cache) or at least {MIN_CACHE_SECONDS} seconds (KV's shortest expiry), got {seconds}"
        )),
        Err(_) => Err(format!("{CACHE_SECONDS_VAR} must be a whole number of seconds, got {text:?}")),
    }
}

/// An answer kept under its request's [`cache_key`]: the narrative and the model that wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cached {
    /// The narrative.
    pub narrative: String,
    /// The model that wrote it.
    pub model: String,
}

impl Usage {
    /// The usage of an analysis the cache answered: nothing was sent, nothing paid
    /// (`cost_usd` is 0 for a priced model), `latency_ms` is the cache read's.
    pub fn from_cache(provider: String, cached: &Cached, latency_ms: u64, prices: &Prices) -> Usage {
        Usage {
            provider,
            model: cached.model.clone(),
            prompt_hash: prompt_hash(),
            input_tokens: 0,
            output_tokens: 0,
            latency_ms,
            attempts: 0,
            cost_usd: prices.cost(&cached.model, 0, 0),
            cached: true,
            fallback_reason: None,
        }
    }
}

/// The price of a model, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million input tokens.
    pub input: f64,
    /// Per million output tokens.
    pub output: f64,
}

/// `LLM_PRICES`: model → price. Empty: no cost is estimated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices(BTreeMap<String, Price>);

/// The variable that sets [`Prices`].
pub const PRICES_VAR: &str = "LLM_PRICES";

impl Prices {
    /// Reads `LLM_PRICES` (`{"model": {"input": usd, "output": usd}}`, per million tokens);
    /// every problem names the variable.
    pub fn parse(text: &str) -> Result<Prices, String> {
        if text.trim().is_empty() {
            return Ok(Prices::default());
        }
        let prices: BTreeMap<String, Price> = serde_json::from_str(text).map_err(|e| {
            format!("{PRICES_VAR} must be a JSON object of model → {{\"input\": usd, \"output\": usd}} per million tokens: {e}")
        })?;
        for (model, price) in &prices {
            let fine = |v: f64| v.is_finite() && v >= 0.0;
            if !fine(price.input) || !fine(price.output) {
                return Err(format!("{PRICES_VAR}.{model}: prices must be numbers of at least 0"));
            }
        }
        Ok(Prices(prices))
    }

    /// The cost of `input` and `output` tokens of `model`, if it has a price.
    pub fn cost(&self, model: &str, input: u64, output: u64) -> Option<f64> {
        let price = self.0.get(model)?;
        Some((input as f64 * price.input + output as f64 * price.output) / 1_000_000.0)
    }
}

/// The provider's name for a base URL: its host (`https://api.openai.com/v1` → `api.openai.com`).
pub fn provider_of(url: &str) -> String {
    url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_else(|| url.to_string())
}

/// The tokens an OpenAI-compatible answer says it used: `(prompt_tokens, completion_tokens)`
/// (0 for what it leaves out).
pub fn tokens_of(answer: &serde_json::Value) -> (u64, u64) {
    let usage = &answer["usage"];
    (usage["prompt_tokens"].as_u64().unwrap_or(0), usage["completion_tokens"].as_u64().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn prices_read_per_million_tokens_and_bad_ones_name_the_variable() {
        let prices = Prices::parse(r#"{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}"#).unwrap();
        assert_eq!(prices.cost("gpt-4o-mini", 1_000_000, 0), Some(0.15));
        assert_eq!(prices.cost("gpt-4o-mini", 2_000, 500), Some((2_000.0 * 0.15 + 500.0 * 0.6) / 1e6));
        assert_eq!(prices.cost("other", 1, 1), None);
        assert_eq!(Prices::parse("").unwrap(), Prices::default());
        for bad in [
            r#"[]"#,
            r#"{"m": {"input": 1}}"#,
            r#"{"m": {"input": -1, "output": 1}}"#,
            r#"{"m": {"input": 1, "output": 1, "x": 2}}"#,
        ] {
            assert!(Prices::parse(bad).unwrap_err().starts_with("LLM_PRICES"), "{bad}");
        }
    }

    #[test]
    fn the_provider_is_the_host_and_tokens_come_from_usage() {
        assert_eq!(provider_of("https://api.openai.com/v1"), "api.openai.com");
        assert_eq!(provider_of("http://127.0.0.1:9999/v1"), "127.0.0.1");
        assert_eq!(tokens_of(&json!({"usage": {"prompt_tokens": 120, "completion_tokens": 40}})), (120, 40));
        assert_eq!(tokens_of(&json!({})), (0, 0));
    }

    #[test]
    fn the_cache_time_defaults_to_an_hour_and_bad_ones_name_the_variable() {
        assert_eq!(parse_cache_seconds(None), Ok(DEFAULT_CACHE_SECONDS));
        assert_eq!(parse_cache_seconds(Some(" ")), Ok(DEFAULT_CACHE_SECONDS));
        assert_eq!(parse_cache_seconds(Some("0")), Ok(0));
        assert_eq!(parse_cache_seconds(Some("60")), Ok(60));
        for bad in ["59", "-1", "1h", "1.5"] {
            assert!(parse_cache_seconds(Some(bad)).unwrap_err().starts_with(CACHE_SECONDS_VAR), "{bad}");
        }
    }

    #[test]
    fn a_cached_answer_costs_nothing_and_says_so() {
        let prices = Prices::parse(r#"{"m": {"input": 1, "output": 2}}"#).unwrap();
        let cached = Cached { narrative: "n".into(), model: "m".into() };
        let usage = Usage::from_cache("host".into(), &cached, 3, &prices);
        assert_eq!((usage.cached, usage.attempts, usage.input_tokens, usage.output_tokens), (true, 0, 0, 0));
        assert_eq!((usage.cost_usd, usage.latency_ms, usage.model.as_str()), (Some(0.0), 3, "m"));
        let other = Cached { model: "unpriced".into(), ..cached };
        assert_eq!(Usage::from_cache("host".into(), &other, 3, &prices).cost_usd, None);
    }

    #[test]
    fn the_prompt_hash_is_short_hex_and_stable() {
        let hash = prompt_hash();
        assert_eq!(hash.len(), 16);
        assert_eq!(hash, prompt_hash());
    }

    proptest! {
        #[test]
        fn a_cache_key_changes_with_the_model_or_the_message(model in "[a-z0-9-]{1,12}", a in ".{0,40}", b in ".{0,40}") {
            prop_assert_eq!(cache_key(&model, &a), cache_key(&model, &a));
            prop_assert_eq!(cache_key(&model, &a) == cache_key(&model, &b), a == b);
            let other = format!("{model}x");
            prop_assert_ne!(cache_key(&model, &a), cache_key(&other, &a));
        }
    }
}
