//! Optional LLM narrative for the diagnosis: an OpenAI-compatible chat-completions call
//! with the signals and findings. Configured by `LLM_API_URL` (base URL, e.g.
//! `https://api.openai.com/v1`), `LLM_API_KEY` (secret) and `LLM_MODEL`; unset URL = off.
//! Timeouts, 429, 5xx and malformed answers are retried with backoff within the analysis;
//! after the last attempt the caller keeps the rule-based diagnosis and records the error.
//! An answer is kept in KV under its request's key ([`llm::cache_key`]: the prompt template,
//! the model, the run's signals and findings) for `LLM_CACHE_SECONDS`: an identical request
//! meanwhile is answered from there, and its usage says so.

use std::time::Duration;

use crate::kv::Kv;
use crate::settings::{self, LlmSettings};
use baton_core::llm::{self, Cached, Prices, Usage};
use baton_core::retry::{RandomSource, RetryPolicy, SplitMix64};
use baton_core::synthesis::Diagnosis;
use baton_core::trace::{RunTrace, SpanOf};
use serde_json::{json, Value};
use worker::{AbortController, Delay, Env, Fetch, Headers, Method, Request, RequestInit};

/// The LLM settings, read once per analysis.
pub struct LlmConfig {
    url: String,
    key: Option<String>,
    model: String,
    timeout_ms: u64,
    policy: RetryPolicy,
    prices: Prices,
    /// How long an answer is reused (0: never).
    cache_seconds: u64,
}

impl LlmConfig {
    /// `None` when no `LLM_API_URL` is configured: the rule-based diagnosis stands alone.
    pub fn from_env(env: &Env) -> Option<LlmConfig> {
        let LlmSettings { url, key, model, timeout_ms } = settings::llm(env)?;
        let prices = settings::llm_prices(env).unwrap_or_else(|e| {
            worker::console_error!("{e}; no LLM cost is estimated until it is fixed");
            Prices::default()
        });
        let cache_seconds = settings::llm_cache_seconds(env).unwrap_or_else(|e| {
            worker::console_error!("{e}; answers are not cached until it is fixed");
            0
        });
        Some(LlmConfig {
            url,
            key,
            model,
            timeout_ms,
            policy: RetryPolicy {
                initial_interval_ms: 250,
                backoff_coefficient: 2.0,
                max_interval_ms: 2_000,
                max_attempts: 3,
                non_retryable_error_kinds: Vec::new(),
            },
            prices,
            cache_seconds,
        })
    }
}

/// Why one attempt failed, and whether another may succeed.
struct AttemptError {
    message: String,
    retryable: bool,
}

/// What one attempt got.
struct Answer {
    text: String,
    /// `(input, output)` tokens, as the provider counted them.
    tokens: (u64, u64),
    /// The model the provider says answered.
    model: Option<String>,
}

/// What an analysis got from the LLM: the narrative, or why there is none (the last error
/// after every attempt failed), and what it used.
pub struct Asked {
    pub narrative: Result<String, String>,
    pub usage: Usage,
}

/// The user message of `diagnosis`'s request: its signals and findings.
pub fn user_message(diagnosis: &Diagnosis) -> String {
    json!({
        "domain": diagnosis.domain,
        "overall_score": diagnosis.overall_score,
        "findings": diagnosis.findings,
        "signals": diagnosis.signals,
        "missing_services": diagnosis.missing_services,
    })
    .to_string()
}

/// Asks for the narrative of `diagnosis`: from the cache (`kv`) when an identical request was
/// answered within `LLM_CACHE_SECONDS`, else from the model, retrying what may succeed (and
/// keeping its answer in the cache). Each call carries the run's trace (`trace`), from the
/// analysis's span. The cache is best effort: a KV failure only means the model is asked.
pub async fn narrative(config: &LlmConfig, diagnosis: &Diagnosis, trace: &RunTrace, kv: Option<&Kv>) -> Asked {
    let started = crate::clock::now_ms();
    let message = user_message(diagnosis);
    let cache = kv.filter(|_| config.cache_seconds > 0).map(|kv| (kv, llm::cache_key(&config.model, &message)));
    if let Some((kv, key)) = &cache {
        match kv.get_text(key).await {
            Ok(Some(text)) => match serde_json::from_str::<Cached>(&text) {
                Ok(cached) => {
                    let took = crate::clock::now_ms().saturating_sub(started);
                    let usage = Usage::from_cache(llm::provider_of(&config.url), &cached, took, &config.prices);
                    return Asked { narrative: Ok(cached.narrative), usage };
                }
                Err(e) => worker::console_warn!("LLM cache {key}: unreadable ({e}); asking the model"),
            },
            Ok(None) => {}
            Err(e) => worker::console_warn!("LLM cache: {e}; asking the model"),
        }
    }
    let asked = ask(config, &message, trace, started).await;
    if let (Some((kv, key)), Ok(narrative)) = (&cache, &asked.narrative) {
        let cached = Cached { narrative: narrative.clone(), model: asked.usage.model.clone() };
        let text = serde_json::to_string(&cached).unwrap_or_default();
        if let Err(e) = kv.put_text_expiring(key, &text, config.cache_seconds).await {
            worker::console_warn!("LLM cache: {e}; the answer is not kept");
        }
    }
    asked
}

/// Asks the model for the narrative of `message`, retrying what may succeed.
async fn ask(config: &LlmConfig, message: &str, trace: &RunTrace, started: u64) -> Asked {
    let usage = |attempts: u32, (input, output): (u64, u64), model: Option<String>, fallback: Option<String>| {
        let model = model.unwrap_or_else(|| config.model.clone());
        Usage {
            provider: llm::provider_of(&config.url),
            cost_usd: config.prices.cost(&model, input, output),
            model,
            prompt_hash: llm::prompt_hash(),
            input_tokens: input,
            output_tokens: output,
            latency_ms: crate::clock::now_ms().saturating_sub(started),
            attempts,
            cached: false,
            fallback_reason: fallback,
        }
    };
    let mut rng = SplitMix64::new(crate::clock::random_u64().unwrap_or(7));
    let mut attempt = 1;
    loop {
        let failed = match call(config, message, trace).await {
            Ok(answer) => {
                return Asked { usage: usage(attempt, answer.tokens, answer.model, None), narrative: Ok(answer.text) }
            }
            Err(e) if !e.retryable => format!("LLM call failed: {}", e.message),
            Err(e) => match config.policy.next_delay(attempt, &mut rng as &mut dyn RandomSource) {
                Some(delay) => {
                    Delay::from(Duration::from_millis(delay)).await;
                    attempt += 1;
                    continue;
                }
                None => format!("LLM call failed after {attempt} attempts: {}", e.message),
            },
        };
        return Asked { usage: usage(attempt, (0, 0), None, Some(failed.clone())), narrative: Err(failed) };
    }
}

async fn call(config: &LlmConfig, message: &str, trace: &RunTrace) -> Result<Answer, AttemptError> {
    let retryable = |message: String| AttemptError { message, retryable: true };
    let body = json!({
        "model": config.model,
        "temperature": llm::TEMPERATURE,
        "messages": [
            {"role": "system", "content": llm::SYSTEM_PROMPT},
            {"role": "user", "content": message},
        ],
    });
    let headers = Headers::new();
    let _ = headers.set("Content-Type", "application/json");
    if let Some(key) = &config.key {
        let _ = headers.set("Authorization", &format!("Bearer {key}"));
    }
    for (name, value) in trace.headers(SpanOf::Analysis) {
        let _ = headers.set(name, &value);
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.to_string().into()));
    let url = format!("{}/chat/completions", config.url);
    let request = Request::new_with_init(&url, &init).map_err(|e| {
        worker::console_warn!("LLM request to {url}: {e}");
        AttemptError { message: "LLM_API_URL does not make a request".into(), retryable: false }
    })?;
    let controller = AbortController::default();
    let signal = controller.signal();
    let timeout_ms = config.timeout_ms;
    worker::wasm_bindgen_futures::spawn_local(async move {
        Delay::from(Duration::from_millis(timeout_ms)).await;
        controller.abort();
    });
    crate::meter::subrequest();
    // What the provider said goes to the log only: the error kept with the run says what kind
    // of failure it was.
    let mut response = Fetch::Request(request).send_with_signal(&signal).await.map_err(|e| {
        if signal.aborted() {
            retryable(format!("timed out after {timeout_ms} ms"))
        } else {
            worker::console_warn!("LLM request: {e}");
            retryable("network error".to_string())
        }
    })?;
    let status = response.status_code();
    let text = response.text().await.map_err(|e| {
        worker::console_warn!("LLM answer: {e}");
        retryable("the answer could not be read".to_string())
    })?;
    match status {
        200..=299 => {}
        429 | 500..=599 => return Err(retryable(format!("HTTP {status}"))),
        _ => {
            worker::console_warn!("LLM answered {status}: {}", text.chars().take(500).collect::<String>());
            return Err(AttemptError { message: format!("HTTP {status}"), retryable: false });
        }
    }
    let answer: Value = serde_json::from_str(&text).map_err(|_| retryable("malformed answer: not JSON".to_string()))?;
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .ok_or_else(|| retryable("malformed answer: no choices[0].message.content".to_string()))?;
    Ok(Answer { text, tokens: llm::tokens_of(&answer), model: answer["model"].as_str().map(str::to_string) })
}
