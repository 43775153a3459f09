//! The LLM narrative against a fake OpenAI-compatible server on loopback: success, 429 then
//! success, garbage → the rule-based diagnosis with `synthesis_error`, and an identical request
//! answered from the cache. Each test asks about a domain of its own: the sample services'
//! outputs (so the request) follow from the domain.

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use baton_e2e::browser::Browser;
use baton_e2e::fake_llm::{FakeLlm, LlmMode, INPUT_TOKENS, NARRATIVE, OUTPUT_TOKENS};
use baton_e2e::{Stack, StackOptions};
use serde_json::{json, Value};

use crate::runs::{start_run, wait_terminal};

fn llm_stack() -> (&'static Stack, &'static FakeLlm, MutexGuard<'static, ()>) {
    static SERVER: OnceLock<FakeLlm> = OnceLock::new();
    static STACK: OnceLock<Stack> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let server = SERVER.get_or_init(|| FakeLlm::start(LlmMode::Answer));
    let stack = STACK.get_or_init(|| {
        // Both workers that analyse runs (the orchestrator runs attempts in place) see the LLM.
        let llm = vec![
            ("LLM_API_URL".to_string(), server.base_url()),
            ("LLM_MODEL".to_string(), "fake-model".to_string()),
            ("LLM_TIMEOUT_MS".to_string(), "5000".to_string()),
            ("LLM_PRICES".to_string(), r#"{"fake-model": {"input": 0.5, "output": 2.0}}"#.to_string()),
        ];
        Stack::start(StackOptions { vars: llm.clone(), consumer_vars: llm, ..StackOptions::default() })
    });
    (stack, server, turn)
}

fn diagnosed_run(stack: &Stack, site: &str, domain: &str) -> Value {
    let run_id = start_run(stack, &json!({"website_id": site, "domain": domain, "plan_id": "quick-v1"}));
    let body = wait_terminal(stack, &run_id);
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    body
}

#[test]
fn the_llm_narrative_is_stored_with_the_diagnosis() {
    let (stack, server, _turn) = llm_stack();
    server.set_mode(LlmMode::Answer);
    let body = diagnosed_run(stack, "site_llm_ok", "ok.llm.example");
    assert_eq!(body["diagnosis"]["narrative"], NARRATIVE, "{body}");
    assert_eq!(body["diagnosis"]["synthesis"], "rules+llm");
    assert_eq!(body["diagnosis"]["synthesis_error"], Value::Null);
    assert_eq!(server.requests(), 1);
    // What the analysis used: the provider's counts, priced at LLM_PRICES.
    let usage = &body["diagnosis"]["llm"];
    assert_eq!(usage["provider"], "127.0.0.1", "{usage}");
    assert_eq!(usage["model"], "fake-model");
    assert_eq!(
        (usage["input_tokens"].as_u64(), usage["output_tokens"].as_u64()),
        (Some(INPUT_TOKENS), Some(OUTPUT_TOKENS))
    );
    let cost = (INPUT_TOKENS as f64 * 0.5 + OUTPUT_TOKENS as f64 * 2.0) / 1e6;
    assert!(usage["cost_usd"].as_f64().is_some_and(|c| (c - cost).abs() < 1e-12), "{usage}");
    assert_eq!((usage["attempts"].as_u64(), usage["cached"].as_bool()), (Some(1), Some(false)));
    assert_eq!(usage["prompt_hash"], baton_core::llm::prompt_hash());
    assert_eq!(usage["fallback_reason"], Value::Null);
}

#[test]
fn a_rate_limited_llm_call_is_retried() {
    let (stack, server, _turn) = llm_stack();
    server.set_mode(LlmMode::RateLimitedFirst(1));
    let body = diagnosed_run(stack, "site_llm_429", "rate-limited.llm.example");
    assert_eq!(body["diagnosis"]["narrative"], NARRATIVE, "{body}");
    assert_eq!(server.requests(), 2);
    assert_eq!(body["diagnosis"]["llm"]["attempts"], 2, "{body}");
}

#[test]
fn a_garbage_answer_falls_back_to_the_rules_with_synthesis_error() {
    let (stack, server, _turn) = llm_stack();
    server.set_mode(LlmMode::Garbage);
    let body = diagnosed_run(stack, "site_llm_garbage", "garbage.llm.example");
    let diagnosis = &body["diagnosis"];
    assert_eq!(diagnosis["narrative"], Value::Null, "{body}");
    assert_eq!(diagnosis["synthesis"], "rules");
    let error = diagnosis["synthesis_error"].as_str().unwrap_or("");
    assert!(error.contains("malformed") && error.contains("3 attempts"), "{error}");
    assert!(!diagnosis["findings"].is_null() && diagnosis["overall_score"].is_number(), "{diagnosis}");
    assert_eq!(server.requests(), 3);
    let usage = &diagnosis["llm"];
    assert_eq!((usage["attempts"].as_u64(), usage["fallback_reason"].as_str()), (Some(3), Some(error)), "{usage}");
    let run_id = body["summary"]["runId"].as_str().unwrap_or("");
    let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}/events"));
    let events = r.json()["events"].as_array().cloned().unwrap_or_default();
    let finish = events.iter().find(|e| e["payload"]["status"] == "completed").expect("finish event");
    assert_eq!(finish["payload"]["synthesis_error"], error);
}

/// `/metrics`' value of `series` (name and labels, as rendered), 0 when absent.
fn metric(stack: &Stack, series: &str) -> f64 {
    let r = stack.get_as(&stack.secrets().admin_token, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |value| value.parse().unwrap_or_else(|_| panic!("{series}: {value:?}")))
}

const MODEL: &str = "model=\"fake-model\"";

/// The LLM series of `/metrics` for the fake model: analyses, calls, cache hits, input and
/// output tokens, cost.
fn llm_metrics(stack: &Stack) -> [f64; 6] {
    [
        metric(stack, &format!("orchestrator_llm_analyses_total{{{MODEL}}}")),
        metric(stack, &format!("orchestrator_llm_calls_total{{{MODEL}}}")),
        metric(stack, &format!("orchestrator_llm_cache_hits_total{{{MODEL}}}")),
        metric(stack, &format!("orchestrator_llm_tokens_total{{{MODEL},type=\"input\"}}")),
        metric(stack, &format!("orchestrator_llm_tokens_total{{{MODEL},type=\"output\"}}")),
        metric(stack, &format!("orchestrator_llm_cost_usd_total{{{MODEL}}}")),
    ]
}

#[test]
fn an_identical_analysis_is_answered_from_the_cache_and_metrics_count_what_was_asked() {
    let (stack, server, _turn) = llm_stack();
    server.set_mode(LlmMode::Answer);
    let before = llm_metrics(stack);
    let first = diagnosed_run(stack, "site_llm_cache_1", "cached.llm.example");
    assert_eq!(first["diagnosis"]["llm"]["cached"], false, "{first}");
    assert_eq!(server.requests(), 1);
    let cost = (INPUT_TOKENS as f64 * 0.5 + OUTPUT_TOKENS as f64 * 2.0) / 1e6;
    let asked = llm_metrics(stack);
    let delta: Vec<f64> = asked.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(delta[..5], [1.0, 1.0, 0.0, INPUT_TOKENS as f64, OUTPUT_TOKENS as f64], "/metrics counts the call");
    assert!((delta[5] - cost).abs() < 1e-9, "/metrics counts its cost: {delta:?}");

    // Another run asking the same (same domain, so the same signals and findings): the
    // cache answers, the model is not called, nothing is paid.
    let second = diagnosed_run(stack, "site_llm_cache_2", "cached.llm.example");
    let diagnosis = &second["diagnosis"];
    assert_eq!(diagnosis["narrative"], NARRATIVE, "{second}");
    assert_eq!(diagnosis["synthesis"], "rules+llm");
    let usage = &diagnosis["llm"];
    assert_eq!((usage["cached"].as_bool(), usage["attempts"].as_u64()), (Some(true), Some(0)), "{usage}");
    assert_eq!((usage["input_tokens"].as_u64(), usage["output_tokens"].as_u64()), (Some(0), Some(0)));
    assert_eq!((usage["model"].as_str(), usage["cost_usd"].as_f64()), (Some("fake-model"), Some(0.0)));
    assert_eq!(server.requests(), 1, "the model was not asked again");
    let hit = llm_metrics(stack);
    let delta: Vec<f64> = hit.iter().zip(asked).map(|(a, b)| a - b).collect();
    assert_eq!(delta, [1.0, 0.0, 1.0, 0.0, 0.0, 0.0], "/metrics counts the hit and no spend");

    // The run pages, in a real browser, say what each analysis used.
    let browser = Browser::start();
    crate::ui::sign_in(&browser, &stack.base_url(), stack.token(0));
    let line = |body: &Value| {
        let run_id = body["summary"]["runId"].as_str().expect("runId");
        browser.goto(&format!("{}/ui/runs/{run_id}", stack.base_url()));
        browser.wait_for(
            "the run page's LLM line",
            Duration::from_secs(10),
            "return document.getElementById('llm-usage')?.innerText ?? null",
            json!([]),
        )
    };
    let asked_line = line(&first).as_str().unwrap_or("").to_string();
    for part in ["fake-model", "127.0.0.1", &format!("{INPUT_TOKENS} in / {OUTPUT_TOKENS} out"), "1 attempt"] {
        assert!(asked_line.contains(part), "{part:?} in {asked_line:?}");
    }
    assert!(!asked_line.contains("from the cache"), "{asked_line}");
    let cached_line = line(&second).as_str().unwrap_or("").to_string();
    assert!(cached_line.contains("from the cache") && cached_line.contains("0 attempts"), "{cached_line}");
}
