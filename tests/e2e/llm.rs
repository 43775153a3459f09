//! The LLM narrative against a fake OpenAI-compatible server on loopback: success, 429 then
//! success, and garbage → the rule-based diagnosis with `synthesis_error`.

use std::sync::{Mutex, MutexGuard, OnceLock};

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

fn diagnosed_run(stack: &Stack, site: &str) -> Value {
    let run_id = start_run(stack, &json!({"website_id": site, "domain": "llm.example", "plan_id": "quick-v1"}));
    let body = wait_terminal(stack, &run_id);
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    body
}

#[test]
fn the_llm_narrative_is_stored_with_the_diagnosis() {
    let (stack, server, _turn) = llm_stack();
    server.set_mode(LlmMode::Answer);
    let body = diagnosed_run(stack, "site_llm_ok");
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
    let body = diagnosed_run(stack, "site_llm_429");
    assert_eq!(body["diagnosis"]["narrative"], NARRATIVE, "{body}");
    assert_eq!(server.requests(), 2);
    assert_eq!(body["diagnosis"]["llm"]["attempts"], 2, "{body}");
}

#[test]
fn a_garbage_answer_falls_back_to_the_rules_with_synthesis_error() {
    let (stack, server, _turn) = llm_stack();
    server.set_mode(LlmMode::Garbage);
    let body = diagnosed_run(stack, "site_llm_garbage");
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
