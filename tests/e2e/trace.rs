//! W3C trace context: a run started with a `traceparent` joins the caller's trace, and every
//! call Baton makes for it (to a service, to a webhook) carries the trace on, signed.

use std::time::Duration;

use baton_core::signature::{self, Purpose};
use baton_core::time::Millis;
use baton_core::trace;
use baton_e2e::fake_service::{FakeService, Received};
use baton_e2e::webhook_receiver::WebhookReceiver;
use baton_e2e::{poll_until, Stack, StackOptions};
use serde_json::{json, Value};

use crate::runs::wait_terminal;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A stack whose workers call vitals-monitor at `base` (`SERVICE_URLS`).
fn stack_calling(base: &str) -> Stack {
    let vars = vec![("SERVICE_URLS".to_string(), json!({ "vitals_monitor": base }).to_string())];
    Stack::start(StackOptions { vars: vars.clone(), consumer_vars: vars, ..StackOptions::default() })
}

/// Starts a quick run of `site` with `headers`: its id.
fn start_with(stack: &Stack, site: &str, headers: &[(&str, &str)]) -> String {
    let body = json!({ "website_id": site, "domain": format!("{site}.example"), "plan_id": "quick-v1" }).to_string();
    let auth = format!("Bearer {}", stack.token(0));
    let mut all = vec![("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    let r = stack.send("POST", "/api/orchestration/run", &all, Some(body.as_bytes()));
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["run_id"].as_str().expect("run_id").to_string()
}

/// The fake service's requests about `run_id`.
fn calls_of(service: &FakeService, run_id: &str) -> Vec<Received> {
    service
        .requests()
        .into_iter()
        .filter(|r| serde_json::from_slice::<Value>(&r.body).is_ok_and(|b| b["executionId"] == run_id))
        .collect()
}

#[test]
fn a_run_joins_its_callers_trace_and_every_call_it_makes_carries_the_trace_signed() {
    let service = FakeService::start();
    let stack = stack_calling(&service.base_url());
    let receiver = WebhookReceiver::start(0);
    let r = stack.post_as(stack.token(0), "/api/orchestration/webhooks", &json!({ "url": receiver.url() }));
    assert_eq!(r.status, 201, "{}", r.text());

    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let run_id = start_with(&stack, "site-traced", &[("traceparent", &traceparent), ("tracestate", "vendor=abc")]);
    let body = wait_terminal(&stack, &run_id);
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    assert_eq!(body["trace_id"], CALLER_TRACE, "the run joined the caller's trace");

    // The service's calls: each in the caller's trace, from a span of Baton's own (one per
    // call), with the caller's trace state, and signed with the trace context.
    let calls = calls_of(&service, &run_id);
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/api/handshake", "/api/process"]);
    let key = stack.secrets().key_for("vitals_monitor");
    let mut spans = Vec::new();
    for call in &calls {
        let sent = call.header("traceparent").unwrap_or_else(|| panic!("no traceparent on {}", call.path));
        let parent = trace::parse(&sent, call.header("tracestate").as_deref()).expect("a valid traceparent");
        assert_eq!(parent.trace_id.to_string(), CALLER_TRACE, "{sent}");
        assert_ne!(parent.span_id.to_string(), CALLER_SPAN, "{sent}: Baton's own span");
        assert!(parent.sampled, "{sent}");
        assert_eq!(parent.state.as_deref(), Some("vendor=abc"));
        spans.push(parent.span_id);
        let header = |name: &str| call.header(name);
        let http = (call.method.as_str(), call.path.as_str(), call.body.as_slice());
        let now = Millis::new(baton_e2e::now_ms());
        assert_eq!(
            signature::verify_received(std::slice::from_ref(&key), Purpose::Call, http, header, now),
            Ok(Some(1))
        );
        // Another trace under the same signature is refused.
        let forged = format!("00-{}-{CALLER_SPAN}-01", "1".repeat(32));
        let tampered = |name: &str| if name == "traceparent" { Some(forged.clone()) } else { call.header(name) };
        assert!(signature::verify_received(std::slice::from_ref(&key), Purpose::Call, http, tampered, now).is_err());
    }
    assert_ne!(spans[0], spans[1], "each call its own span");

    // The webhook delivery of its ending: in the same trace, its body (signed) naming it too.
    let delivery = poll_until("the run's webhook delivery", Duration::from_secs(30), || {
        receiver.received().into_iter().find(|d| d.json()["data"]["run_id"] == json!(run_id))
    });
    let sent = delivery.header("traceparent").expect("the delivery's traceparent").to_string();
    let parent = trace::parse(&sent, delivery.header("tracestate")).expect("a valid traceparent");
    assert_eq!(parent.trace_id.to_string(), CALLER_TRACE);
    assert_eq!(parent.state.as_deref(), Some("vendor=abc"));
    let data = &delivery.json()["data"];
    let in_body = trace::parse(data["traceparent"].as_str().unwrap_or_default(), None).expect("the body's trace");
    assert_eq!(in_body.trace_id.to_string(), CALLER_TRACE);
    assert_eq!(data["tracestate"], "vendor=abc");

    // Without a traceparent, or with one that does not parse, a run has a trace of its own.
    let own = start_with(&stack, "site-own-trace", &[]);
    let bad = start_with(&stack, "site-bad-trace", &[("traceparent", "00-not-a-trace-01")]);
    let mut ids = Vec::new();
    for run in [&own, &bad] {
        let body = wait_terminal(&stack, run);
        let trace_id = body["trace_id"].as_str().expect("a trace id").to_string();
        assert!(trace_id.len() == 32 && trace_id != CALLER_TRACE && trace_id != "0".repeat(32), "{trace_id}");
        for call in calls_of(&service, run) {
            let parent = trace::parse(&call.header("traceparent").unwrap_or_default(), None).expect("traceparent");
            assert_eq!(parent.trace_id.to_string(), trace_id);
            assert_eq!(call.header("tracestate"), None);
        }
        ids.push(trace_id);
    }
    assert_ne!(ids[0], ids[1], "each run its own trace");
}
