//! OpenTelemetry span export: an ended run as an OTLP/HTTP JSON `ExportTraceServiceRequest`
//! (<https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding>), and the exporter's
//! variables (`OTEL_EXPORTER_OTLP_*`).
//!
//! The spans are built from what an ended run's rows hold ([`EndedRun`]): nothing about a span
//! is stored, and every span id is the one [`RunTrace::span`] derives, the id the calls Baton
//! made already carried in their `traceparent` headers, so a service's own spans hang under
//! Baton's. The tree:
//!
//! ```text
//! run {plan}                      parent: the caller's span, when the run joined a trace
//! ├── step {service}
//! │   └── attempt {service} #{n}
//! │       ├── POST (handshake)    HTTP client spans (semantic conventions' attributes)
//! │       └── POST (process)
//! ├── fan-in                      from the last step's end to the claim
//! └── analysis                    from the claim to the run's end
//! ```
//!
//! Baton does not record when each call of an attempt began and ended, only the attempt's
//! own times: a call's span has its attempt's times. The rows' times come from two clocks (a
//! worker's and D1's), so every span's times are put inside its parent's.
//!
//! The wire types are written here from the specification (the `opentelemetry-proto` crate's
//! `trace` feature brings the SDK and its random number generator with it).

use serde::{Deserialize, Serialize};

use crate::trace::{RunTrace, SpanOf};

/// The variable naming the collector's base URL: spans go to `{it}/v1/traces`.
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The variable naming the traces URL itself (used as it is; wins over [`ENDPOINT_VAR`]).
pub const TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The variable naming the headers every export carries: `key=value,key=value`, each
/// percent-decoded.
pub const HEADERS_VAR: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// The variable bounding one export, in milliseconds.
pub const TIMEOUT_VAR: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
/// [`TIMEOUT_VAR`] when unset: an export is given up after 2 s.
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
/// The longest [`TIMEOUT_VAR`] allowed: an export runs after the run's answer, within the
/// 30 s a worker may go on working after a response.
pub const MAX_TIMEOUT_MS: u64 = 10_000;
/// After an export runs out of time, how long the exports of the same isolate are dropped
/// without a request: a collector that does not answer costs one timeout per this period, not
/// one per ended run (a poller tick that ends many runs is not held up by each).
pub const COOL_OFF_MS: u64 = 30_000;
/// The resource's `service.name`.
pub const SERVICE_NAME: &str = "baton";
/// The instrumentation scope's name.
pub const SCOPE_NAME: &str = "baton";

/// The longest status message or error text a span carries.
const MAX_TEXT: usize = 256;

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exporter {
    /// The URL the request is posted to.
    pub url: String,
    /// Headers every request carries (decoded).
    pub headers: Vec<(String, String)>,
    /// How long one export may take.
    pub timeout_ms: u64,
}

/// A variable of the exporter refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ExporterError {
    /// The variable.
    pub variable: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn http_url(variable: &'static str, text: &str) -> Result<url::Url, ExporterError> {
    let problem = |problem: String| ExporterError { variable, problem };
    let url = url::Url::parse(text).map_err(|e| problem(format!("{text:?} is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(problem(format!("{text:?} is not an http(s) URL")));
    }
    Ok(url)
}

/// Decodes `%XX` escapes (the headers' form, as W3C Baggage writes it).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Reads [`HEADERS_VAR`]: `key=value` pairs separated by commas, each part trimmed and
/// percent-decoded; an empty list is no headers.
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, ExporterError> {
    let problem = |problem: String| ExporterError { variable: HEADERS_VAR, problem };
    let mut headers = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| problem(format!("{pair:?} is not key=value")))?;
        let key = percent_decode(key.trim()).ok_or_else(|| problem(format!("{key:?}: a bad percent escape")))?;
        let value = percent_decode(value.trim())
            .ok_or_else(|| problem(format!("in the value of {key:?}: a bad percent escape")))?;
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if key.is_empty() || !key.chars().all(token) {
            return Err(problem(format!("{key:?} is not a header name")));
        }
        if value.chars().any(|c| c.is_control()) {
            return Err(problem(format!("the value of {key:?} holds a control character")));
        }
        headers.push((key, value));
    }
    Ok(headers)
}

impl Exporter {
    /// The exporter the variables `lookup` gives describe: `None` (export off) when neither
    /// [`TRACES_ENDPOINT_VAR`] nor [`ENDPOINT_VAR`] is set (blank counts as unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Exporter>, ExporterError> {
        let set = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let traces = set(TRACES_ENDPOINT_VAR).map(|t| http_url(TRACES_ENDPOINT_VAR, &t)).transpose()?;
        let base = set(ENDPOINT_VAR).map(|b| http_url(ENDPOINT_VAR, &b)).transpose()?;
        let headers = parse_headers(&set(HEADERS_VAR).unwrap_or_default())?;
        let timeout_ms = match set(TIMEOUT_VAR) {
            None => DEFAULT_TIMEOUT_MS,
            Some(text) => match text.parse::<u64>() {
                Ok(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => ms,
                _ => {
                    return Err(ExporterError {
                        variable: TIMEOUT_VAR,
                        problem: format!("expected milliseconds from 1 to {MAX_TIMEOUT_MS}, got {text:?}"),
                    })
                }
            },
        };
        let url = match (traces, base) {
            (Some(traces), _) => traces.to_string(),
            (None, Some(base)) => format!("{}/v1/traces", base.as_str().trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        Ok(Some(Exporter { url, headers, timeout_ms }))
    }
}

/// An ended run, as its rows hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedRun<'a> {
    /// Its trace.
    pub trace: &'a RunTrace,
    /// Its plan.
    pub plan_id: &'a str,
    /// Its client.
    pub client_id: &'a str,
    /// Its status (`completed`, `failed`, `timeout`, `cancelled`).
    pub status: &'a str,
    /// Why it failed, if it did.
    pub error: Option<&'a str>,
    /// How many times it was retried after it ended.
    pub retries: u64,
    /// When it started (ms since the epoch).
    pub started_at: u64,
    /// When it ended.
    pub completed_at: u64,
    /// When its fan-in was claimed (the analysis began), if it was.
    pub claimed_at: Option<u64>,
    /// Its steps, in plan order.
    pub steps: Vec<EndedStep<'a>>,
}

/// A step of an ended run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedStep<'a> {
    /// The step's slug.
    pub service: &'a str,
    /// The worker key it calls.
    pub worker: &'a str,
    /// The worker's base URL (its calls go to `{base}/api/handshake` and `{base}/api/process`).
    pub base_url: &'a str,
    /// Its status.
    pub status: &'a str,
    /// When it was first dispatched.
    pub started_at: Option<u64>,
    /// When it ended.
    pub finished_at: Option<u64>,
    /// Its ended attempts, by number.
    pub attempts: Vec<EndedAttempt<'a>>,
}

/// An ended attempt (a row of `step_attempts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedAttempt<'a> {
    /// Its number.
    pub attempt: u32,
    /// When it was claimed and its calls began (`None`: it never ran).
    pub started_at: Option<u64>,
    /// When it ended.
    pub ended_at: u64,
    /// The status its step left `running` for.
    pub outcome: &'a str,
    /// Its error.
    pub error: Option<&'a str>,
    /// Its error's kind.
    pub error_kind: Option<&'a str>,
}

/// `SpanKind` (its protobuf number, as the JSON encoding writes enums).
pub mod kind {
    /// An operation inside the application.
    pub const INTERNAL: u8 = 1;
    /// A request to a remote service.
    pub const CLIENT: u8 = 3;
}

/// `Status.code`.
pub mod code {
    /// The default: no error.
    pub const UNSET: u8 = 0;
    /// An error.
    pub const ERROR: u8 = 2;
}

/// `ExportTraceServiceRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportTraceServiceRequest {
    /// The spans, by resource.
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ResourceSpans`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSpans {
    /// The resource (Baton).
    pub resource: Resource,
    /// The spans, by instrumentation scope.
    pub scope_spans: Vec<ScopeSpans>,
}

/// `Resource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Its attributes (`service.name`).
    pub attributes: Vec<KeyValue>,
}

/// `ScopeSpans`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeSpans {
    /// The instrumentation scope.
    pub scope: Scope,
    /// The spans.
    pub spans: Vec<Span>,
}

/// `InstrumentationScope`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// `Span`: ids in lowercase hex, times as decimal strings of nanoseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// The W3C `tracestate` of the trace, if the caller gave one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_state: String,
    /// 16 hex digits; empty for a root span.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent_span_id: String,
    /// Its name.
    pub name: String,
    /// [`kind`].
    pub kind: u8,
    /// When it started.
    pub start_time_unix_nano: String,
    /// When it ended.
    pub end_time_unix_nano: String,
    /// Its attributes.
    pub attributes: Vec<KeyValue>,
    /// Its status.
    pub status: Status,
}

/// `Status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Why it is an error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// [`code`].
    pub code: u8,
}

/// `KeyValue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The attribute's name.
    pub key: String,
    /// Its value.
    pub value: AnyValue,
}

/// `AnyValue` (the two kinds Baton sends). An `int64` is a decimal string in the JSON
/// encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AnyValue {
    /// A string.
    StringValue(String),
    /// An integer.
    IntValue(String),
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.to_string(), value: AnyValue::StringValue(value.to_string()) }
}

fn int(key: &str, value: u64) -> KeyValue {
    KeyValue { key: key.to_string(), value: AnyValue::IntValue(value.to_string()) }
}

fn cut(text: &str) -> String {
    text.chars().take(MAX_TEXT).collect()
}

fn error(message: Option<&str>) -> Status {
    Status { message: message.map(cut).unwrap_or_default(), code: code::ERROR }
}

fn ok() -> Status {
    Status { message: String::new(), code: code::UNSET }
}

/// A time interval in ms, `start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interval(u64, u64);

impl Interval {
    fn new(start: u64, end: u64) -> Interval {
        Interval(start.min(end), end)
    }

    /// This interval put inside `parent`.
    fn within(self, parent: Interval) -> Interval {
        let clamp = |t: u64| t.clamp(parent.0, parent.1);
        Interval(clamp(self.0), clamp(self.1))
    }
}

/// The status code of the call `what` if the attempt's error names it (`"{what}: {code} ..."`).
fn status_code_of(error: Option<&str>, what: &str) -> Option<u16> {
    let rest = error?.strip_prefix(what)?.strip_prefix(": ")?;
    let code = rest.split_whitespace().next()?;
    code.parse().ok().filter(|c| (100..=599).contains(c))
}

/// Whether an attempt's error came from its handshake (so no process call was made).
fn failed_at_handshake(attempt: &EndedAttempt<'_>) -> bool {
    attempt.error_kind == Some("rejected") || attempt.error.is_some_and(|e| e.starts_with("handshake"))
}

struct Builder<'r, 'a> {
    run: &'r EndedRun<'a>,
    spans: Vec<Span>,
}

impl Builder<'_, '_> {
    fn push(
        &mut self,
        span: SpanOf<'_>,
        parent: Option<SpanOf<'_>>,
        (name, kind): (String, u8),
        at: Interval,
        attributes: Vec<KeyValue>,
        status: Status,
    ) {
        let trace = self.run.trace;
        let parent_span_id = match parent {
            Some(parent) => trace.span(parent).to_string(),
            None => trace.parent.map(|p| p.to_string()).unwrap_or_default(),
        };
        let nanos = |ms: u64| (u128::from(ms) * 1_000_000).to_string();
        self.spans.push(Span {
            trace_id: trace.trace_id.to_string(),
            span_id: trace.span(span).to_string(),
            trace_state: trace.state.clone().unwrap_or_default(),
            parent_span_id,
            name,
            kind,
            start_time_unix_nano: nanos(at.0),
            end_time_unix_nano: nanos(at.1),
            attributes,
            status,
        });
    }

    fn step(&mut self, step: &EndedStep<'_>, run: Interval) {
        let starts = step.started_at.into_iter().chain(step.attempts.iter().filter_map(|a| a.started_at));
        let ends = step.finished_at.into_iter().chain(step.attempts.iter().map(|a| a.ended_at));
        let (Some(start), end) = (starts.min(), ends.max()) else { return };
        let at = Interval::new(start, end.unwrap_or(run.1).max(start)).within(run);
        let failed = matches!(step.status, "failed" | "timeout");
        let last_error = step.attempts.last().and_then(|a| a.error);
        self.push(
            SpanOf::Step(step.service),
            Some(SpanOf::Run),
            (format!("step {}", step.service), kind::INTERNAL),
            at,
            vec![
                text("baton.step", step.service),
                text("baton.worker", step.worker),
                text("baton.step.status", step.status),
                int("baton.step.attempts", step.attempts.len() as u64),
            ],
            if failed { error(last_error.or(Some(step.status))) } else { ok() },
        );
        for attempt in &step.attempts {
            self.attempt(step, attempt, at);
        }
    }

    fn attempt(&mut self, step: &EndedStep<'_>, attempt: &EndedAttempt<'_>, parent: Interval) {
        let n = attempt.attempt;
        let at = Interval::new(attempt.started_at.unwrap_or(attempt.ended_at), attempt.ended_at).within(parent);
        let mut attributes = vec![
            text("baton.step", step.service),
            int("baton.attempt", u64::from(n)),
            text("baton.attempt.outcome", attempt.outcome),
        ];
        if let Some(kind) = attempt.error_kind {
            attributes.push(text("baton.error.kind", kind));
        }
        let failed = attempt.outcome != "completed";
        self.push(
            SpanOf::Attempt(step.service, n),
            Some(SpanOf::Step(step.service)),
            (format!("attempt {} #{n}", step.service), kind::INTERNAL),
            at,
            attributes,
            if failed { error(attempt.error.or(Some(attempt.outcome))) } else { ok() },
        );
        if attempt.started_at.is_none() {
            return;
        }
        let handshake_only = failed_at_handshake(attempt);
        for (what, path) in [("handshake", "/api/handshake"), ("process", "/api/process")] {
            if what == "process" && handshake_only {
                break;
            }
            // The call that ended the attempt with an error: the handshake when it failed
            // there, else the process call.
            let last = what == "process" || handshake_only;
            self.call(step, attempt, (what, path), last && failed, at);
        }
    }

    fn call(
        &mut self,
        step: &EndedStep<'_>,
        attempt: &EndedAttempt<'_>,
        (what, path): (&str, &str),
        failed: bool,
        at: Interval,
    ) {
        let n = attempt.attempt;
        let full = format!("{}{path}", step.base_url.trim_end_matches('/'));
        let mut attributes = vec![text("http.request.method", "POST")];
        match url::Url::parse(&full) {
            Ok(mut url) => {
                // `url.full` never carries credentials.
                let _ = url.set_username("");
                let _ = url.set_password(None);
                if let Some(host) = url.host_str() {
                    attributes.push(text("server.address", host));
                }
                if let Some(port) = url.port_or_known_default() {
                    attributes.push(int("server.port", u64::from(port)));
                }
                attributes.push(text("url.full", url.as_str()));
            }
            Err(_) => attributes.push(text("url.full", &full)),
        }
        let status_code = status_code_of(attempt.error, what);
        if let Some(code) = status_code {
            attributes.push(int("http.response.status_code", u64::from(code)));
        }
        if failed {
            let kind = match status_code {
                Some(code) => code.to_string(),
                None => attempt.error_kind.unwrap_or(attempt.outcome).to_string(),
            };
            attributes.push(text("error.type", &kind));
        }
        attributes.push(text("baton.call", what));
        attributes.push(text("baton.step", step.service));
        attributes.push(int("baton.attempt", u64::from(n)));
        self.push(
            SpanOf::Call(step.service, n, what),
            Some(SpanOf::Attempt(step.service, n)),
            ("POST".to_string(), kind::CLIENT),
            at,
            attributes,
            if failed { error(attempt.error.or(Some(attempt.outcome))) } else { ok() },
        );
    }
}

/// The spans of an ended run (see the module's tree), with `service.name` [`SERVICE_NAME`]
/// and the scope's `version`.
pub fn spans_of(run: &EndedRun<'_>, version: &str) -> ExportTraceServiceRequest {
    let whole = Interval::new(run.started_at, run.completed_at.max(run.started_at));
    let mut builder = Builder { run, spans: Vec::new() };
    let mut attributes = vec![
        text("baton.run.id", &run.trace.run_id),
        text("baton.plan.id", run.plan_id),
        text("baton.client.id", run.client_id),
        text("baton.run.status", run.status),
    ];
    if run.retries > 0 {
        attributes.push(int("baton.run.retries", run.retries));
    }
    let failed = matches!(run.status, "failed" | "timeout");
    builder.push(
        SpanOf::Run,
        None,
        (format!("run {}", run.plan_id), kind::INTERNAL),
        whole,
        attributes,
        if failed { error(run.error.or(Some(run.status))) } else { ok() },
    );
    for step in &run.steps {
        builder.step(step, whole);
    }
    if let Some(claimed) = run.claimed_at {
        let claimed = claimed.clamp(whole.0, whole.1);
        // From the last step settling before the claim (none: the claim alone).
        let settled = run.steps.iter().filter_map(|s| s.finished_at).filter(|f| *f <= claimed).max().unwrap_or(claimed);
        let fan_in = Interval::new(settled, claimed).within(whole);
        builder.push(SpanOf::FanIn, Some(SpanOf::Run), ("fan-in".to_string(), kind::INTERNAL), fan_in, vec![], ok());
        let analysis = Interval::new(claimed, whole.1).within(whole);
        builder.push(
            SpanOf::Analysis,
            Some(SpanOf::Run),
            ("analysis".to_string(), kind::INTERNAL),
            analysis,
            vec![],
            ok(),
        );
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Resource { attributes: vec![text("service.name", SERVICE_NAME)] },
            scope_spans: vec![ScopeSpans {
                scope: Scope { name: SCOPE_NAME.to_string(), version: version.to_string() },
                spans: builder.spans,
            }],
        }],
    }
}

impl ExportTraceServiceRequest {
    /// How many spans it holds.
    pub fn span_count(&self) -> usize {
        self.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum()
    }

    /// Every span it holds.
    pub fn spans(&self) -> impl Iterator<Item = &Span> {
        self.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans)
    }
}

/// How many spans a collector's answer (`ExportTraceServiceResponse`) says it rejected
/// (`partialSuccess.rejectedSpans`; 0 when it says nothing).
pub fn rejected_spans(answer: &str) -> u64 {
    let Ok(answer) = serde_json::from_str::<serde_json::Value>(answer) else { return 0 };
    let rejected = &answer["partialSuccess"]["rejectedSpans"];
    rejected.as_u64().or_else(|| rejected.as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn lookup(vars: &[(&str, &str)]) -> Result<Option<Exporter>, ExporterError> {
        let vars: BTreeMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Exporter::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn the_exporter_is_off_without_an_endpoint_and_reads_the_standard_variables() {
        assert_eq!(lookup(&[]), Ok(None));
        assert_eq!(lookup(&[(ENDPOINT_VAR, "  "), (HEADERS_VAR, "a=b")]), Ok(None));
        let on = lookup(&[(ENDPOINT_VAR, "http://127.0.0.1:4318/")]).unwrap().unwrap();
        assert_eq!(on.url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!((on.headers.len(), on.timeout_ms), (0, DEFAULT_TIMEOUT_MS));
        let prefixed = lookup(&[(ENDPOINT_VAR, "https://otel.example.com/otlp")]).unwrap().unwrap();
        assert_eq!(prefixed.url, "https://otel.example.com/otlp/v1/traces");
        let traces = lookup(&[
            (ENDPOINT_VAR, "http://ignored:4318"),
            (TRACES_ENDPOINT_VAR, "https://collector.example.com/custom/path"),
            (HEADERS_VAR, "x-api-key=abc%3D%3D , Authorization=Basic%20dXNlcg==,"),
            (TIMEOUT_VAR, "500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(traces.url, "https://collector.example.com/custom/path");
        assert_eq!(
            traces.headers,
            [
                ("x-api-key".to_string(), "abc==".to_string()),
                ("Authorization".to_string(), "Basic dXNlcg==".to_string())
            ]
        );
        assert_eq!(traces.timeout_ms, 500);
    }

    #[test]
    fn a_bad_exporter_variable_is_named() {
        let named = |vars: &[(&str, &str)]| lookup(vars).unwrap_err().variable;
        assert_eq!(named(&[(ENDPOINT_VAR, "collector:4318")]), ENDPOINT_VAR);
        assert_eq!(named(&[(ENDPOINT_VAR, "ftp://collector")]), ENDPOINT_VAR);
        assert_eq!(named(&[(TRACES_ENDPOINT_VAR, "not a url")]), TRACES_ENDPOINT_VAR);
        assert_eq!(named(&[(ENDPOINT_VAR, "http://c"), (HEADERS_VAR, "novalue")]), HEADERS_VAR);
        assert_eq!(named(&[(ENDPOINT_VAR, "http://c"), (HEADERS_VAR, "k=%zz")]), HEADERS_VAR);
        assert_eq!(named(&[(ENDPOINT_VAR, "http://c"), (HEADERS_VAR, "bad key=v")]), HEADERS_VAR);
        assert_eq!(named(&[(ENDPOINT_VAR, "http://c"), (HEADERS_VAR, "k=a%0Ab")]), HEADERS_VAR);
        assert_eq!(named(&[(ENDPOINT_VAR, "http://c"), (TIMEOUT_VAR, "0")]), TIMEOUT_VAR);
        assert_eq!(named(&[(ENDPOINT_VAR, "http://c"), (TIMEOUT_VAR, "60000")]), TIMEOUT_VAR);
        // Headers are checked even while export is off, so a mistake shows before it is on.
        assert_eq!(named(&[(HEADERS_VAR, "novalue")]), HEADERS_VAR);
    }

    #[test]
    fn a_collectors_partial_success_counts_its_rejected_spans() {
        assert_eq!(rejected_spans(""), 0);
        assert_eq!(rejected_spans("{}"), 0);
        assert_eq!(rejected_spans(r#"{"partialSuccess":{"rejectedSpans":"3"}}"#), 3);
        assert_eq!(rejected_spans(r#"{"partialSuccess":{"rejectedSpans":2,"errorMessage":"x"}}"#), 2);
    }

    fn attempt(n: u32, started: Option<u64>, ended: u64, outcome: &'static str) -> EndedAttempt<'static> {
        EndedAttempt { attempt: n, started_at: started, ended_at: ended, outcome, error: None, error_kind: None }
    }

    fn sample(trace: &RunTrace) -> EndedRun<'_> {
        let mut failed = attempt(1, Some(1_100), 1_300, "retrying");
        failed.error = Some("process: 503 busy");
        failed.error_kind = Some("transient");
        let mut rejected = attempt(1, Some(1_050), 1_060, "failed");
        rejected.error = Some("handshake not accepted: no");
        rejected.error_kind = Some("rejected");
        EndedRun {
            trace,
            plan_id: "standard-v1",
            client_id: "alice",
            status: "completed",
            error: None,
            retries: 0,
            started_at: 1_000,
            completed_at: 2_000,
            claimed_at: Some(1_800),
            steps: vec![
                EndedStep {
                    service: "seo",
                    worker: "seo",
                    base_url: "https://user:pw@services.internal/seo/",
                    status: "completed",
                    started_at: Some(1_050),
                    finished_at: Some(1_700),
                    attempts: vec![failed, attempt(2, Some(1_400), 1_700, "completed")],
                },
                EndedStep {
                    service: "ads",
                    worker: "ads",
                    base_url: "http://127.0.0.1:9001",
                    status: "failed",
                    started_at: Some(1_040),
                    finished_at: Some(1_060),
                    attempts: vec![rejected],
                },
                EndedStep {
                    service: "later",
                    worker: "later",
                    base_url: "http://x",
                    status: "skipped",
                    started_at: None,
                    finished_at: None,
                    attempts: vec![],
                },
            ],
        }
    }

    fn attribute<'s>(span: &'s Span, key: &str) -> Option<&'s AnyValue> {
        span.attributes.iter().find(|a| a.key == key).map(|a| &a.value)
    }

    fn named<'s>(request: &'s ExportTraceServiceRequest, name: &str, id: SpanId) -> &'s Span {
        request
            .spans()
            .find(|s| s.name == name && s.span_id == id.to_string())
            .unwrap_or_else(|| panic!("no span {name} {id}"))
    }

    use crate::trace::SpanId;

    #[test]
    fn a_run_becomes_its_tree_of_spans_with_the_ids_its_calls_carried() {
        let trace = RunTrace::of("run_a", Some(CALLER), Some("k=v"));
        let request = spans_of(&sample(&trace), "1.2.3");
        // run, 2 steps, 3 attempts, 2 + 2 + 1 calls, fan-in, analysis (the skipped step has none).
        assert_eq!(request.span_count(), 1 + 2 + 3 + 5 + 2);
        let run = named(&request, "run standard-v1", trace.span(SpanOf::Run));
        assert_eq!(run.parent_span_id, "00f067aa0ba902b7");
        assert_eq!(run.trace_state, "k=v");
        assert_eq!((run.start_time_unix_nano.as_str(), run.end_time_unix_nano.as_str()), ("1000000000", "2000000000"));
        let process = named(&request, "POST", trace.span(SpanOf::Call("seo", 1, "process")));
        assert_eq!(process.kind, kind::CLIENT);
        assert_eq!(process.parent_span_id, trace.span(SpanOf::Attempt("seo", 1)).to_string());
        assert_eq!(
            attribute(process, "url.full"),
            Some(&AnyValue::StringValue("https://services.internal/seo/api/process".into()))
        );
        assert_eq!(attribute(process, "server.address"), Some(&AnyValue::StringValue("services.internal".into())));
        assert_eq!(attribute(process, "http.response.status_code"), Some(&AnyValue::IntValue("503".into())));
        assert_eq!(attribute(process, "error.type"), Some(&AnyValue::StringValue("503".into())));
        assert_eq!(process.status.code, code::ERROR);
        let handshake = named(&request, "POST", trace.span(SpanOf::Call("seo", 1, "handshake")));
        assert_eq!(handshake.status.code, code::UNSET);
        assert_eq!(attribute(handshake, "http.response.status_code"), None);
        // A rejected handshake: no process call.
        named(&request, "POST", trace.span(SpanOf::Call("ads", 1, "handshake")));
        assert!(!request.spans().any(|s| s.span_id == trace.span(SpanOf::Call("ads", 1, "process")).to_string()));
        let fan_in = named(&request, "fan-in", trace.span(SpanOf::FanIn));
        assert_eq!(
            (fan_in.start_time_unix_nano.as_str(), fan_in.end_time_unix_nano.as_str()),
            ("1700000000", "1800000000")
        );
        let analysis = named(&request, "analysis", trace.span(SpanOf::Analysis));
        assert_eq!(analysis.end_time_unix_nano, "2000000000");
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"], "baton");
        assert_eq!(json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["startTimeUnixNano"], "1000000000");
        assert_eq!(json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["kind"], 1);
    }

    #[test]
    fn a_run_of_its_own_trace_has_a_root_span() {
        let trace = RunTrace::of("run_b", None, None);
        let request = spans_of(&sample(&trace), "1");
        let run = named(&request, "run standard-v1", trace.span(SpanOf::Run));
        assert!(run.parent_span_id.is_empty() && run.trace_state.is_empty());
        let json = serde_json::to_value(&request).unwrap();
        assert!(json["resourceSpans"][0]["scopeSpans"][0]["spans"][0].get("parentSpanId").is_none());
    }

    /// Checks the tree: one root (parent: the caller's span or none), every other parent in
    /// the batch, every child's interval inside its parent's, ids unique and of the run's trace.
    fn check_tree(request: &ExportTraceServiceRequest, trace: &RunTrace) -> Result<(), TestCaseError> {
        let spans: BTreeMap<&str, &Span> = request.spans().map(|s| (s.span_id.as_str(), s)).collect();
        prop_assert_eq!(spans.len(), request.span_count(), "span ids are unique");
        let time = |t: &str| t.parse::<u128>().unwrap();
        let root = trace.parent.map(|p| p.to_string()).unwrap_or_default();
        let mut roots = 0;
        for span in spans.values() {
            prop_assert_eq!(&span.trace_id, &trace.trace_id.to_string());
            prop_assert!(time(&span.start_time_unix_nano) <= time(&span.end_time_unix_nano));
            if span.parent_span_id == root {
                roots += 1;
                prop_assert_eq!(&span.span_id, &trace.span(SpanOf::Run).to_string());
                continue;
            }
            let parent = spans.get(span.parent_span_id.as_str());
            prop_assert!(parent.is_some(), "the parent of {} is in the batch", span.name);
            let parent = parent.unwrap();
            prop_assert!(time(&parent.start_time_unix_nano) <= time(&span.start_time_unix_nano));
            prop_assert!(time(&span.end_time_unix_nano) <= time(&parent.end_time_unix_nano));
        }
        prop_assert_eq!(roots, 1);
        Ok(())
    }

    /// A random attempt: (started, ended, outcome and error).
    type RandomAttempt = (Option<u64>, u64, u8);
    /// A random step: (status, started, finished, attempts).
    type RandomStep = (u8, Option<u64>, Option<u64>, Vec<RandomAttempt>);
    /// A random run: (joined a trace, start, length, claimed, steps).
    type RandomRun = (bool, u64, u64, Option<u64>, Vec<RandomStep>);

    fn arbitrary_run() -> impl Strategy<Value = RandomRun> {
        let attempt = (proptest::option::of(0u64..5_000), 0u64..5_000, 0u8..4);
        let step = (
            0u8..4,
            proptest::option::of(0u64..5_000),
            proptest::option::of(0u64..5_000),
            proptest::collection::vec(attempt, 0..4),
        );
        (
            any::<bool>(),
            0u64..5_000,
            0u64..5_000,
            proptest::option::of(0u64..5_000),
            proptest::collection::vec(step, 0..5),
        )
    }

    proptest! {
        #[test]
        fn any_ended_run_makes_a_well_formed_tree((joined, start, length, claimed, steps) in arbitrary_run()) {
            let trace = if joined { RunTrace::of("run_p", Some(CALLER), None) } else { RunTrace::of("run_p", None, None) };
            let services: Vec<String> = (0..steps.len()).map(|i| format!("s{i}")).collect();
            const OUTCOMES: [&str; 4] = ["completed", "retrying", "failed", "timeout"];
            const ERRORS: [Option<&str>; 4] = [None, Some("handshake: 500 x"), Some("process: 429 y"), Some("network")];
            let run = EndedRun {
                trace: &trace,
                plan_id: "p",
                client_id: "c",
                status: "completed",
                error: None,
                retries: 0,
                // Times from two clocks: anything may come before the run's start.
                started_at: 10_000 + start,
                completed_at: 10_000 + start + length,
                claimed_at: claimed.map(|c| 8_000 + c * 2),
                steps: steps.iter().zip(&services).map(|((status, started, finished, attempts), service)| EndedStep {
                    service,
                    worker: service,
                    base_url: "https://services.internal/w",
                    status: OUTCOMES[usize::from(*status)],
                    started_at: started.map(|s| 8_000 + s * 2),
                    finished_at: finished.map(|f| 8_000 + f * 2),
                    attempts: attempts.iter().enumerate().map(|(i, (started, ended, kind))| EndedAttempt {
                        attempt: i as u32 + 1,
                        started_at: started.map(|s| 8_000 + s * 2),
                        ended_at: 8_000 + ended * 2,
                        outcome: OUTCOMES[usize::from(*kind)],
                        error: ERRORS[usize::from(*kind)],
                        error_kind: None,
                    }).collect(),
                }).collect(),
            };
            let request = spans_of(&run, "1");
            check_tree(&request, &trace)?;
            // Every step with a time or an attempt has its span, under the ids the calls carried.
            for (step, service) in steps.iter().zip(&services) {
                let has = request.spans().any(|s| s.span_id == trace.span(SpanOf::Step(service)).to_string());
                prop_assert_eq!(has, step.1.is_some() || step.3.iter().any(|a| a.0.is_some()));
                for (i, a) in step.3.iter().enumerate() {
                    let n = i as u32 + 1;
                    let attempt = trace.span(SpanOf::Attempt(service, n)).to_string();
                    let handshake = trace.span(SpanOf::Call(service, n, "handshake")).to_string();
                    if has {
                        prop_assert!(request.spans().any(|s| s.span_id == attempt));
                        prop_assert_eq!(request.spans().any(|s| s.span_id == handshake), a.0.is_some());
                    }
                }
            }
        }
    }
}
