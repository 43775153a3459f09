//! Optional LLM narrative for the diagnosis: an OpenAI-compatible chat-completions call
//! with the signals and findings. Configured by `LLM_API_URL` (base URL, e.g.
//! `https://api.openai.com/v1`), `LLM_API_KEY` (secret) and `LLM_MODEL`; unset URL = off.
//! Timeouts, 429, 5xx and malformed answers are retried with backoff within the analysis;
//! after the last attempt the caller keeps the rule-based diagnosis and records the error.

use std::time::Duration;

use crate::settings::{self, LlmSettings};
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
}

impl LlmConfig {
    /// `None` when no `LLM_API_URL` is configured: the rule-based diagnosis stands alone.
    pub fn from_env(env: &Env) -> Option<LlmConfig> {
        let LlmSettings { url, key, model, timeout_ms } = settings::llm(env)?;
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
        })
    }
}

/// Why one attempt failed, and whether another may succeed.
struct AttemptError {
    message: String,
    retryable: bool,
}

/// The narrative, or the last error after every attempt failed. Each call carries the run's
/// trace (`trace`), from the analysis's span.
pub async fn narrative(config: &LlmConfig, diagnosis: &Diagnosis, trace: &RunTrace) -> Result<String, String> {
    let mut rng = SplitMix64::new(crate::clock::random_u64().unwrap_or(7));
    let mut attempt = 1;
    loop {
        match call(config, diagnosis, trace).await {
            Ok(text) => return Ok(text),
            Err(e) if !e.retryable => return Err(format!("LLM call failed: {}", e.message)),
            Err(e) => match config.policy.next_delay(attempt, &mut rng as &mut dyn RandomSource) {
                Some(delay) => {
                    Delay::from(Duration::from_millis(delay)).await;
                    attempt += 1;
                }
                None => return Err(format!("LLM call failed after {attempt} attempts: {}", e.message)),
            },
        }
    }
}

async fn call(config: &LlmConfig, diagnosis: &Diagnosis, trace: &RunTrace) -> Result<String, AttemptError> {
    let retryable = |message: String| AttemptError { message, retryable: true };
    let body = json!({
        "model": config.model,
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are an SEO analyst. Write a short diagnosis (at most 150 words) \
              for the site owner from these normalised signals and findings. Mention missing data if any."},
            {"role": "user", "content": json!({
                "domain": diagnosis.domain,
                "overall_score": diagnosis.overall_score,
                "findings": diagnosis.findings,
                "signals": diagnosis.signals,
                "missing_services": diagnosis.missing_services,
            }).to_string()},
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
    answer["choices"][0]["message"]["content"]
        .as_str()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .ok_or_else(|| retryable("malformed answer: no choices[0].message.content".to_string()))
}
