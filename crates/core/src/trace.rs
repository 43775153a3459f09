//! W3C Trace Context: every run belongs to one trace, and every call Baton makes for it says
//! where in that trace it comes from.
//!
//! - A run started with a valid `traceparent` header joins the caller's trace: its trace id is
//!   the caller's, its root span's parent is the caller's span, and the caller's sampled flag
//!   and `tracestate` travel on. A run started without one (or with one that does not parse,
//!   which the standard says to treat as absent) has a trace id derived from its run id.
//! - Span ids are derived too ([`SpanOf`]): the run, each step, each attempt, each call of an
//!   attempt, the fan-in, the analysis, each webhook delivery. The same id comes out wherever
//!   it is computed (a log line, a call's header, an exporter reading the run's rows later), so
//!   nothing about a span needs to be stored.
//!
//! The ids and the `tracestate` list are OpenTelemetry's own types ([`TraceId`], [`SpanId`],
//! [`TraceState`], which checks a list's members as the standard requires).

use std::str::FromStr;

pub use opentelemetry::trace::{SpanId, TraceId, TraceState};
use sha2::{Digest, Sha256};

/// The header carrying a trace's position: `00-{trace id}-{parent span id}-{flags}`.
pub const TRACEPARENT: &str = "traceparent";
/// The header carrying vendors' trace state (a list of `key=value`).
pub const TRACESTATE: &str = "tracestate";

/// Why a `traceparent` header was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// Not four `-`-separated fields of the right lengths in lowercase hex.
    #[error("traceparent {value:?} is not `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`")]
    Malformed {
        /// The value (cut to 100 characters).
        value: String,
    },
    /// The version `ff` is invalid, as are ids of all zeros.
    #[error("traceparent {value:?}: {why}")]
    Invalid {
        /// The value (cut to 100 characters).
        value: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// A caller's position in its trace, as its headers said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    /// The trace.
    pub trace_id: TraceId,
    /// The caller's span: the parent of the run's root span.
    pub span_id: SpanId,
    /// Whether the caller records this trace.
    pub sampled: bool,
    /// The vendors' state that travels with it (`None`: absent, or not a valid list).
    pub state: Option<String>,
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Reads a `traceparent` header (and its `tracestate`, dropped if not a valid list, as the
/// standard says). A version above `00` is read by its first four fields.
pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Result<Parent, TraceError> {
    let value = traceparent.trim();
    let cut = || value.chars().take(100).collect::<String>();
    let malformed = || TraceError::Malformed { value: cut() };
    let fields: Vec<&str> = value.split('-').collect();
    if fields.len() < 4 {
        return Err(malformed());
    }
    let (version, trace, span, flags) = (fields[0], fields[1], fields[2], fields[3]);
    let lengths = version.len() == 2 && trace.len() == 32 && span.len() == 16 && flags.len() == 2;
    if !lengths || ![version, trace, span, flags].into_iter().all(is_lower_hex) {
        return Err(malformed());
    }
    if version == "ff" {
        return Err(TraceError::Invalid { value: cut(), why: "version ff is invalid" });
    }
    if version == "00" && fields.len() != 4 {
        return Err(malformed());
    }
    let trace_id = TraceId::from_hex(trace).map_err(|_| malformed())?;
    let span_id = SpanId::from_hex(span).map_err(|_| malformed())?;
    if trace_id == TraceId::INVALID {
        return Err(TraceError::Invalid { value: cut(), why: "the trace id is all zeros" });
    }
    if span_id == SpanId::INVALID {
        return Err(TraceError::Invalid { value: cut(), why: "the parent span id is all zeros" });
    }
    let flags = u8::from_str_radix(flags, 16).map_err(|_| malformed())?;
    let state = tracestate
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 512)
        .and_then(|s| TraceState::from_str(s).ok())
        .map(|s| s.header())
        .filter(|s| !s.is_empty());
    Ok(Parent { trace_id, span_id, sampled: flags & 1 == 1, state })
}

/// A `traceparent` value (version `00`).
pub fn traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> String {
    format!("00-{trace_id}-{span_id}-{:02x}", u8::from(sampled))
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

/// The trace of a run that joined none: derived from its id.
pub fn trace_of_run(run_id: &str) -> TraceId {
    let bytes = digest(&["baton trace", run_id]);
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[..16]);
    // Never all zeros (one chance in 2^128, but the standard forbids it).
    if id == [0; 16] {
        id[15] = 1;
    }
    TraceId::from_bytes(id)
}

/// A span of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanOf<'a> {
    /// The run itself (the root of its part of the trace).
    Run,
    /// One step, over all its attempts.
    Step(&'a str),
    /// One attempt of a step.
    Attempt(&'a str, u32),
    /// One call to a service for an attempt (`what`: `handshake`, `process`, `progress`,
    /// `result`, `cancel`).
    Call(&'a str, u32, &'a str),
    /// The fan-in.
    FanIn,
    /// The analysis.
    Analysis,
    /// A webhook delivery (by its id).
    Delivery(&'a str),
}

impl SpanOf<'_> {
    /// The span's id in the run `run_id`'s trace `trace_id`.
    pub fn id(self, trace_id: TraceId, run_id: &str) -> SpanId {
        let trace = trace_id.to_string();
        let attempt;
        let parts: Vec<&str> = match self {
            SpanOf::Run => vec!["run"],
            SpanOf::Step(step) => vec!["step", step],
            SpanOf::Attempt(step, n) => {
                attempt = n.to_string();
                vec!["attempt", step, &attempt]
            }
            SpanOf::Call(step, n, what) => {
                attempt = n.to_string();
                vec!["call", step, &attempt, what]
            }
            SpanOf::FanIn => vec!["fan-in"],
            SpanOf::Analysis => vec!["analysis"],
            SpanOf::Delivery(id) => vec!["delivery", id],
        };
        let mut all = vec!["baton span", trace.as_str(), run_id];
        all.extend(parts);
        let bytes = digest(&all);
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[..8]);
        if id == [0; 8] {
            id[7] = 1;
        }
        SpanId::from_bytes(id)
    }
}

/// A run's place in its trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTrace {
    /// The run.
    pub run_id: String,
    /// Its trace.
    pub trace_id: TraceId,
    /// The caller's span the run's root span hangs from, if it joined a trace.
    pub parent: Option<SpanId>,
    /// Whether the trace is recorded (the caller's flag; `true` for a trace of its own).
    pub sampled: bool,
    /// The caller's `tracestate`, passed on.
    pub state: Option<String>,
}

impl RunTrace {
    /// The trace of `run_id`, joined from what its start carried (`joined`: its
    /// `traceparent` and `tracestate` as stored), else its own.
    pub fn of(run_id: &str, joined: Option<&str>, state: Option<&str>) -> RunTrace {
        match joined.and_then(|tp| parse(tp, state).ok()) {
            Some(parent) => RunTrace {
                run_id: run_id.to_string(),
                trace_id: parent.trace_id,
                parent: Some(parent.span_id),
                sampled: parent.sampled,
                state: parent.state,
            },
            None => RunTrace {
                run_id: run_id.to_string(),
                trace_id: trace_of_run(run_id),
                parent: None,
                sampled: true,
                state: None,
            },
        }
    }

    /// The id of `span` in this run's trace.
    pub fn span(&self, span: SpanOf<'_>) -> SpanId {
        span.id(self.trace_id, &self.run_id)
    }

    /// The `traceparent` a request sent from `span` carries.
    pub fn traceparent(&self, span: SpanOf<'_>) -> String {
        traceparent(self.trace_id, self.span(span), self.sampled)
    }

    /// The headers a request sent from `span` carries: `traceparent`, and `tracestate` when
    /// the run's caller gave one.
    pub fn headers(&self, span: SpanOf<'_>) -> Vec<(&'static str, String)> {
        let mut headers = vec![(TRACEPARENT, self.traceparent(span))];
        if let Some(state) = &self.state {
            headers.push((TRACESTATE, state.clone()));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read_with_its_state() {
        let parent = parse(GOOD, Some("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7")).unwrap();
        assert_eq!(parent.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.span_id.to_string(), "00f067aa0ba902b7");
        assert!(parent.sampled);
        assert_eq!(parent.state.as_deref(), Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"));
        let unsampled = parse(&GOOD.replace("-01", "-00"), None).unwrap();
        assert!(!unsampled.sampled && unsampled.state.is_none());
        // A later version is read by its first four fields.
        assert!(parse(&format!("{}-extra", GOOD.replacen("00", "01", 1)), None).is_ok());
    }

    #[test]
    fn a_bad_traceparent_says_what_is_wrong_and_a_bad_state_is_dropped() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(matches!(parse(bad, None), Err(TraceError::Malformed { .. })), "{bad:?}");
        }
        let zeros = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        assert!(parse(zeros, None).unwrap_err().to_string().contains("trace id is all zeros"));
        let zeros = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        assert!(parse(zeros, None).unwrap_err().to_string().contains("span id is all zeros"));
        assert!(parse(&GOOD.replacen("00", "ff", 1), None).unwrap_err().to_string().contains("version ff"));
        assert_eq!(parse(GOOD, Some("not a list")).unwrap().state, None);
    }

    #[test]
    fn a_run_without_a_caller_has_a_trace_of_its_own_and_one_with_a_caller_joins_it() {
        let own = RunTrace::of("run_a", None, None);
        assert_eq!(own, RunTrace::of("run_a", None, None));
        assert_ne!(own.trace_id, RunTrace::of("run_b", None, None).trace_id);
        assert!(own.parent.is_none() && own.sampled);
        let joined = RunTrace::of("run_a", Some(GOOD), Some("k=v"));
        assert_eq!(joined.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(joined.parent.map(|p| p.to_string()).as_deref(), Some("00f067aa0ba902b7"));
        let headers = joined.headers(SpanOf::Call("seo", 1, "process"));
        assert_eq!(headers[1], (TRACESTATE, "k=v".to_string()));
        let sent = parse(&headers[0].1, None).unwrap();
        assert_eq!(sent.trace_id, joined.trace_id);
        assert_eq!(sent.span_id, joined.span(SpanOf::Call("seo", 1, "process")));
        // A stored traceparent that no longer parses: the run's own trace.
        assert_eq!(RunTrace::of("run_a", Some("junk"), None), own);
    }

    proptest! {
        #[test]
        fn what_baton_writes_it_reads_back(trace in 1u128.., span in 1u64.., sampled: bool) {
            let (trace_id, span_id) = (TraceId::from(trace), SpanId::from(span));
            let parent = parse(&traceparent(trace_id, span_id, sampled), None).unwrap();
            prop_assert_eq!((parent.trace_id, parent.span_id, parent.sampled), (trace_id, span_id, sampled));
        }

        #[test]
        fn a_runs_spans_are_distinct_and_valid(run in "run_[a-z0-9]{1,12}", step in "[a-z-]{1,12}", n in 1u32..50) {
            let trace = RunTrace::of(&run, None, None);
            let spans = [
                trace.span(SpanOf::Run),
                trace.span(SpanOf::Step(&step)),
                trace.span(SpanOf::Attempt(&step, n)),
                trace.span(SpanOf::Attempt(&step, n + 1)),
                trace.span(SpanOf::Call(&step, n, "process")),
                trace.span(SpanOf::Call(&step, n, "handshake")),
                trace.span(SpanOf::FanIn),
                trace.span(SpanOf::Analysis),
            ];
            for (i, a) in spans.iter().enumerate() {
                prop_assert!(*a != SpanId::INVALID);
                for b in &spans[i + 1..] {
                    prop_assert!(a != b);
                }
            }
        }

        #[test]
        fn no_header_text_makes_parse_panic(text in ".{0,80}", state in ".{0,80}") {
            let _ = parse(&text, Some(&state));
        }
    }
}
