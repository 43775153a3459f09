//! Structured logs: one JSON line per lifecycle transition, in one schema, found in the stack's
//! own output in the order things happened.

use std::time::Duration;

use baton_e2e::{poll_until, Stack, StackOptions};
use serde_json::{json, Value};

use crate::runs::start_run;

/// The run's lifecycle lines in the stack's output, in order.
fn lines_of(stack: &Stack, run_id: &str) -> Vec<Value> {
    stack
        .log()
        .lines()
        .filter_map(|line| line.find('{').and_then(|at| serde_json::from_str::<Value>(&line[at..]).ok()))
        .filter(|line| line["run_id"] == run_id && line["event"].is_string())
        .collect()
}

fn position(lines: &[Value], event: &str, service: Option<&str>, attempt: Option<u32>) -> usize {
    lines
        .iter()
        .position(|l| {
            l["event"] == event
                && service.is_none_or(|s| l["service"] == s)
                && attempt.is_none_or(|a| l["attempt"] == a)
        })
        .unwrap_or_else(|| panic!("no {event} {service:?} {attempt:?} in {lines:#?}"))
}

#[test]
fn every_transition_of_a_run_is_one_json_line_in_order() {
    let debug = vec![("LOG_LEVEL".to_string(), "debug".to_string())];
    let stack = Stack::start(StackOptions {
        log_level: Some("log".into()),
        vars: debug.clone(),
        consumer_vars: debug.clone(),
        poller_vars: debug,
        ..StackOptions::default()
    });
    let run_id = start_run(
        &stack,
        &json!({"website_id": "site_logs", "domain": "logs.example", "plan_id": "quick-v1",
                "parameters": {"sample_behaviour": {"technical-seo": {"fail_transient": 1}}}}),
    );
    let lines = poll_until("the run's last line", Duration::from_secs(30), || {
        let lines = lines_of(&stack, &run_id);
        lines.iter().any(|l| l["event"] == "run_finished").then_some(lines)
    });
    for line in &lines {
        let keys: Vec<&str> = line.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
        assert_eq!(
            keys,
            [
                "attempt",
                "duration_ms",
                "error",
                "event",
                "level",
                "run_id",
                "service",
                "span_id",
                "trace_id",
                "ts",
                "worker"
            ],
            "one schema: {line}"
        );
        assert!(line["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
    }
    // Every line carries the run's trace id, and the span it is about.
    let run = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}")).json();
    let trace_id = run["trace_id"].as_str().expect("the run's trace id").to_string();
    assert!(trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()), "{trace_id}");
    assert!(lines.iter().all(|l| l["trace_id"] == trace_id.as_str()), "{lines:#?}");
    assert!(lines.iter().all(|l| l["span_id"].as_str().is_some_and(|s| s.len() == 16)), "{lines:#?}");
    let span_of = |event: &str, attempt: u32| {
        lines[position(&lines, event, Some("technical-seo"), Some(attempt))]["span_id"].clone()
    };
    assert_eq!(span_of("step_dispatched", 2), span_of("step_completed", 2), "one attempt, one span");
    assert_ne!(span_of("step_dispatched", 1), span_of("step_dispatched", 2), "each attempt its own span");
    assert_eq!(lines.first().map(|l| &l["event"]), Some(&json!("run_started")), "{lines:#?}");
    assert_eq!(lines.last().map(|l| &l["event"]), Some(&json!("run_finished")), "{lines:#?}");
    for service in ["technical-seo", "serp-intelligence", "vitals-monitor"] {
        let last = if service == "technical-seo" { 2 } else { 1 };
        let dispatched = position(&lines, "step_dispatched", Some(service), Some(last));
        let claimed = position(&lines, "step_claimed", Some(service), Some(last));
        let completed = position(&lines, "step_completed", Some(service), Some(last));
        assert!(dispatched < claimed && claimed < completed, "{service}: {lines:#?}");
        assert!(completed < position(&lines, "fan_in_claimed", None, None), "{service}: {lines:#?}");
    }
    let failed_once = position(&lines, "step_retrying", Some("technical-seo"), Some(1));
    assert!(failed_once < position(&lines, "step_dispatched", Some("technical-seo"), Some(2)), "{lines:#?}");
    assert!(lines[failed_once]["error"].as_str().is_some_and(|e| e.contains("503")), "{lines:#?}");
    assert_eq!(lines[failed_once]["worker"], "technical_seo");
    let claimed = position(&lines, "fan_in_claimed", None, None);
    let started = position(&lines, "analysis_started", None, None);
    let finished = position(&lines, "analysis_finished", None, None);
    assert!(claimed < started && started <= finished, "{lines:#?}");
    assert_eq!(lines.iter().filter(|l| l["event"] == "run_finished").count(), 1, "{lines:#?}");
    assert!(lines.last().is_some_and(|l| l["duration_ms"].is_u64()), "{lines:#?}");
    assert_eq!(lines[position(&lines, "step_dispatched", None, None)]["level"], "debug", "{lines:#?}");
    assert_eq!(lines[position(&lines, "step_completed", None, None)]["level"], "info", "{lines:#?}");
}

#[test]
fn by_default_a_run_logs_how_it_started_how_each_step_ended_and_how_it_ended() {
    let stack = Stack::start(StackOptions { log_level: Some("log".into()), ..StackOptions::default() });
    let run_id =
        start_run(&stack, &json!({"website_id": "site_logs_info", "domain": "logs.example", "plan_id": "quick-v1"}));
    let lines = poll_until("the run's last line", Duration::from_secs(30), || {
        let lines = lines_of(&stack, &run_id);
        lines.iter().any(|l| l["event"] == "run_finished").then_some(lines)
    });
    let events: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    for service in ["technical-seo", "serp-intelligence", "vitals-monitor"] {
        position(&lines, "step_completed", Some(service), Some(1));
    }
    for left_out in ["step_dispatched", "step_claimed", "fan_in_claimed", "analysis_started", "analysis_finished"] {
        assert!(!events.contains(&left_out), "{left_out} is a debug line: {events:?}");
    }
    assert_eq!(events.first(), Some(&"run_started"), "{events:?}");
    assert_eq!(events.last(), Some(&"run_finished"), "{events:?}");
}
