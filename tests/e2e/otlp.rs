//! OpenTelemetry span export against a fake collector on loopback: an ended run's spans arrive
//! as one tree (the caller's span, the run, its steps, their attempts, their calls, the fan-in
//! and the analysis), in the run's trace, under the span ids its calls carried, their times
//! nested; a collector that fails or does not answer delays no run and counts its drops.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_core::otlp::{AnyValue, Span};
use baton_core::trace;
use baton_e2e::fake_collector::{CollectorMode, Export, FakeCollector};
use baton_e2e::fake_service::FakeService;
use baton_e2e::{poll_until, Stack, StackOptions};
use serde_json::{json, Value};

use crate::metrics::{number, scrape};
use crate::runs::wait_terminal;

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";
/// How long one export may take in this stack.
const EXPORT_TIMEOUT_MS: u64 = 3_000;

struct Fixture {
    stack: Stack,
    collector: FakeCollector,
    service: FakeService,
}

/// A stack whose every worker that ends runs exports to the collector; vitals-monitor is the
/// fake service at its base URL. A run nobody waits for goes through the task queue (and ends
/// in the consumer); one a client waits for runs in place (and ends in the orchestrator).
fn fixture() -> Fixture {
    let collector = FakeCollector::start(CollectorMode::Accept);
    let service = FakeService::start();
    let vars = vec![
        ("SERVICE_URLS".to_string(), json!({ "vitals_monitor": service.base_url() }).to_string()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), collector.endpoint()),
        ("OTEL_EXPORTER_OTLP_HEADERS".to_string(), "x-collector-key=key%20one".to_string()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT".to_string(), EXPORT_TIMEOUT_MS.to_string()),
    ];
    let mut orchestrator = vars.clone();
    orchestrator.push(("IN_PLACE_SECONDS".to_string(), "0".to_string()));
    let stack = Stack::start(StackOptions {
        vars: orchestrator,
        consumer_vars: vars.clone(),
        poller_vars: vars,
        ..StackOptions::default()
    });
    Fixture { stack, collector, service }
}

/// Starts a quick run of `site` (`query`: the request's query string) with `headers`: the
/// answer's status and body, and how long it took.
fn start(stack: &Stack, site: &str, query: &str, headers: &[(&str, &str)]) -> (u16, Value, Duration) {
    let body = json!({ "website_id": site, "domain": format!("{site}.example"), "plan_id": "quick-v1" }).to_string();
    let auth = format!("Bearer {}", stack.token(0));
    let mut all = vec![("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    let began = Instant::now();
    let r = stack.send("POST", &format!("/api/orchestration/run{query}"), &all, Some(body.as_bytes()));
    (r.status, r.json(), began.elapsed())
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes.iter().find(|a| a.key == key).map(|a| match &a.value {
        AnyValue::StringValue(s) | AnyValue::IntValue(s) => s.as_str(),
    })
}

fn nanos(text: &str) -> u128 {
    text.parse().unwrap_or_else(|_| panic!("{text:?} is not a time in nanoseconds"))
}

/// The export of `run_id`'s spans, once the collector has it.
fn export_of(collector: &FakeCollector, run_id: &str) -> Export {
    poll_until(&format!("the spans of {run_id} at the collector"), Duration::from_secs(30), || {
        collector
            .received()
            .into_iter()
            .find(|e| e.request.spans().any(|s| attribute(s, "baton.run.id") == Some(run_id)))
    })
}

fn counter(stack: &Stack, name: &str) -> f64 {
    number(&scrape(stack), name, &[])
}

/// The spans of a run that joined a caller's trace (and went through the task queue) reach the
/// collector as one tree.
fn spans_arrive_as_one_tree(f: &Fixture) {
    let exported_before = counter(&f.stack, "orchestrator_otlp_spans_exported_total");
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let (status, answer, _) =
        start(&f.stack, "site-otlp", "", &[("traceparent", &traceparent), ("tracestate", "vendor=xyz")]);
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["run_id"].as_str().expect("run_id").to_string();
    let body = wait_terminal(&f.stack, &run_id);
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    assert_eq!(body["trace_id"], CALLER_TRACE);

    let export = export_of(&f.collector, &run_id);
    assert_eq!(export.path, "/v1/traces");
    assert_eq!(export.header("content-type"), Some("application/json"));
    assert_eq!(export.header("x-collector-key"), Some("key one"), "the configured header, percent-decoded");
    let resource = &export.request.resource_spans[0].resource.attributes;
    assert!(resource.iter().any(|a| a.key == "service.name" && a.value == AnyValue::StringValue("baton".into())));
    let spans: Vec<&Span> = export.request.spans().collect();
    let by_id: BTreeMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique");
    let names = |parent: &Span| -> Vec<String> {
        let mut names: Vec<String> =
            spans.iter().filter(|s| s.parent_span_id == parent.span_id).map(|s| s.name.clone()).collect();
        names.sort();
        names
    };

    // Every span in the caller's trace, with its trace state; every time nested in its parent's.
    for span in &spans {
        assert_eq!(span.trace_id, CALLER_TRACE, "{span:?}");
        assert_eq!(span.trace_state, "vendor=xyz", "{span:?}");
        let (start, end) = (nanos(&span.start_time_unix_nano), nanos(&span.end_time_unix_nano));
        assert!(start <= end, "{span:?}");
        if span.parent_span_id == CALLER_SPAN {
            continue;
        }
        let parent = by_id.get(span.parent_span_id.as_str()).unwrap_or_else(|| panic!("no parent of {span:?}"));
        assert!(
            nanos(&parent.start_time_unix_nano) <= start && end <= nanos(&parent.end_time_unix_nano),
            "{} [{start}, {end}] is not inside {} [{}, {}]",
            span.name,
            parent.name,
            parent.start_time_unix_nano,
            parent.end_time_unix_nano
        );
    }

    // One root: the run, under the caller's span, lasting as long as the run.
    let roots: Vec<&&Span> = spans.iter().filter(|s| s.parent_span_id == CALLER_SPAN).collect();
    assert_eq!(roots.len(), 1, "{roots:?}");
    let run = roots[0];
    assert_eq!(run.name, "run quick-v1");
    let run_trace = trace::RunTrace::of(&run_id, Some(&traceparent), Some("vendor=xyz"));
    assert_eq!(run.span_id, run_trace.span(trace::SpanOf::Run).to_string());
    let run_ms = nanos(&run.end_time_unix_nano).saturating_sub(nanos(&run.start_time_unix_nano)) / 1_000_000;
    assert!(run_ms > 0 && run_ms < 30_000, "{run_ms} ms");
    eprintln!("otlp: {} spans for a {run_ms} ms run", spans.len());

    // Under the run: a step per step of the plan, the fan-in and the analysis.
    let services: Vec<String> = body["service_results"]
        .as_array()
        .expect("service_results")
        .iter()
        .map(|s| s["service"].as_str().expect("service").to_string())
        .collect();
    let mut expected: Vec<String> = services.iter().map(|s| format!("step {s}")).collect();
    expected.extend(["analysis".to_string(), "fan-in".to_string()]);
    expected.sort();
    assert_eq!(names(run), expected);

    // Under each step its attempts; under each attempt its two calls, HTTP client spans.
    for service in &services {
        let step = spans.iter().find(|s| s.name == format!("step {service}")).expect("the step");
        assert_eq!(step.span_id, run_trace.span(trace::SpanOf::Step(service)).to_string());
        let attempts = crate::runs::step(&body, service)["attempts"].as_u64().expect("attempts");
        let expected: Vec<String> = (1..=attempts).map(|n| format!("attempt {service} #{n}")).collect();
        assert_eq!(names(step), expected);
        for n in 1..=attempts as u32 {
            let attempt = by_id[run_trace.span(trace::SpanOf::Attempt(service, n)).to_string().as_str()];
            assert_eq!(names(attempt), ["POST", "POST"], "{service} #{n}");
            for (what, path) in [("handshake", "/api/handshake"), ("process", "/api/process")] {
                let call = by_id[run_trace.span(trace::SpanOf::Call(service, n, what)).to_string().as_str()];
                assert_eq!(call.parent_span_id, attempt.span_id);
                assert_eq!(call.kind, baton_core::otlp::kind::CLIENT);
                assert_eq!(attribute(call, "http.request.method"), Some("POST"));
                let url = attribute(call, "url.full").expect("url.full");
                assert!(url.ends_with(path), "{url}");
                assert!(attribute(call, "server.address").is_some_and(|a| !a.is_empty()), "{call:?}");
            }
        }
    }

    // The calls to the service reached by URL: the spans have the ids their requests carried,
    // so the service's own spans hang under them.
    let vitals = services.iter().find(|s| s.starts_with("vitals")).expect("a vitals step");
    let received: Vec<_> = f
        .service
        .requests()
        .into_iter()
        .filter(|r| serde_json::from_slice::<Value>(&r.body).is_ok_and(|b| b["executionId"] == json!(run_id)))
        .collect();
    assert_eq!(received.len(), 2, "{received:?}");
    for call in &received {
        let sent = trace::parse(&call.header("traceparent").expect("traceparent"), None).expect("a traceparent");
        let span = by_id.get(sent.span_id.to_string().as_str()).unwrap_or_else(|| panic!("no span for {}", call.path));
        assert_eq!(span.name, "POST");
        assert_eq!(attribute(span, "url.full"), Some(format!("{}{}", f.service.base_url(), call.path).as_str()));
        assert_eq!(attribute(span, "server.address"), Some("127.0.0.1"));
        assert!(by_id[span.parent_span_id.as_str()].name.starts_with(&format!("attempt {vitals} #")));
    }

    // The fan-in ends where the analysis begins; the analysis ends with the run.
    let fan_in = spans.iter().find(|s| s.name == "fan-in").expect("fan-in");
    let analysis = spans.iter().find(|s| s.name == "analysis").expect("analysis");
    assert_eq!(fan_in.end_time_unix_nano, analysis.start_time_unix_nano);
    assert_eq!(analysis.end_time_unix_nano, run.end_time_unix_nano);

    // What the collector accepted is counted.
    let want = exported_before + spans.len() as f64;
    poll_until("the exported spans counted", Duration::from_secs(10), || {
        (counter(&f.stack, "orchestrator_otlp_spans_exported_total") >= want).then_some(())
    });
}

/// How many spans a run's export holds: the run, each step, each of its attempts with their
/// two calls, the fan-in and the analysis.
fn span_count(body: &Value) -> f64 {
    let steps = body["service_results"].as_array().expect("service_results");
    let attempts: u64 = steps.iter().map(|s| s["attempts"].as_u64().expect("attempts")).sum();
    (1 + steps.len() as u64 + attempts * 3 + 2) as f64
}

/// The spans dropped since `before`, once they are counted.
fn dropped_since(stack: &Stack, before: f64, within: Duration) -> f64 {
    poll_until("the dropped spans counted", within, || {
        let now = counter(stack, "orchestrator_otlp_spans_dropped_total");
        (now > before).then_some(now - before)
    })
}

/// A run that a client waits for, started with the collector in its current mode: the answer
/// (completed) and how long it took.
fn waited_run(f: &Fixture, site: &str) -> (Value, Duration) {
    let (status, answer, took) = start(&f.stack, site, "?wait=20", &[]);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "completed", "{answer}");
    let run_id = answer["run_id"].as_str().expect("run_id");
    (wait_terminal(&f.stack, run_id), took)
}

/// A collector that fails, then one that does not answer, then the quiet period after its
/// timeout: no run waits or fails, and every span not delivered is counted.
fn a_collector_that_fails_or_does_not_answer_delays_no_run(f: &Fixture) {
    // 500: the run ends as ever; its spans are dropped and counted.
    f.collector.set_mode(CollectorMode::Fail);
    let (before, requests) = (counter(&f.stack, "orchestrator_otlp_spans_dropped_total"), f.collector.requests());
    let (body, _) = waited_run(f, "site-otlp-down");
    assert_eq!(dropped_since(&f.stack, before, Duration::from_secs(15)), span_count(&body));
    assert!(f.collector.requests() > requests, "the export was tried");

    // No answer: the client's answer does not wait for the export, which is given up at its
    // timeout, not when the collector would have answered.
    f.collector.set_mode(CollectorMode::Hang(Duration::from_secs(20)));
    let (before, requests) = (counter(&f.stack, "orchestrator_otlp_spans_dropped_total"), f.collector.requests());
    let began = Instant::now();
    let (body, took) = waited_run(f, "site-otlp-hung");
    assert!(took < Duration::from_millis(EXPORT_TIMEOUT_MS), "the run's answer took {took:?}");
    assert_eq!(dropped_since(&f.stack, before, Duration::from_secs(15)), span_count(&body));
    let dropped_after = began.elapsed();
    assert!(dropped_after < Duration::from_secs(12), "dropped after {dropped_after:?}");
    eprintln!("otlp: with a collector that does not answer, the run's answer took {took:?}; its spans were counted dropped {dropped_after:?} after the request");
    assert_eq!(f.collector.requests(), requests + 1, "tried once");

    // Right after a timeout: the next run's spans are dropped without a request.
    let before = counter(&f.stack, "orchestrator_otlp_spans_dropped_total");
    let (body, _) = waited_run(f, "site-otlp-quiet");
    assert_eq!(dropped_since(&f.stack, before, Duration::from_secs(15)), span_count(&body));
    assert_eq!(f.collector.requests(), requests + 1, "no request while the collector is quiet");
}

#[test]
fn an_ended_runs_spans_reach_the_collector_as_one_tree_and_a_collector_down_delays_no_run() {
    let f = fixture();
    spans_arrive_as_one_tree(&f);
    a_collector_that_fails_or_does_not_answer_delays_no_run(&f);
}
