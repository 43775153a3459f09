//! The operator's metrics (`GET /metrics`) in the Prometheus text exposition format
//! (version 0.0.4), from a [`Snapshot`] of aggregates the edge reads out of D1.
//!
//! Every value comes from the database, not from memory: the counters are right across
//! isolates, workers and restarts. A scrape reads two things, neither of which grows with
//! history:
//!
//! - totals (`metric_totals`) that a run adds in the transaction that ends it
//!   ([`ending_totals`]) and that a retry of the ended run takes back in the transaction that
//!   restarts it ([`restart_totals`]): a run that ended counts only there, and keeps counting
//!   when it leaves D1 (archived, or deleted by its client);
//! - the rows of the runs not yet ended, read through the index of their status.
//!
//! [`Snapshot::add_totals`] folds the totals into what the live rows counted. Histograms are
//! cumulative (`le`) bucket counts over [`RUN_SECONDS`], [`FAN_IN_SECONDS`] and [`TASK_SECONDS`].

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::cost::{self, UnitPrices, Units, UNIT_NAMES};
use crate::llm::Usage;

use crate::execution::QueueStatus;
use crate::state::{RunStatus, StepStatus};

/// Bucket bounds (seconds) of `orchestrator_run_execution_seconds`: start to end of a run.
pub const RUN_SECONDS: &[f64] = &[0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];
/// Bucket bounds (seconds) of `orchestrator_fan_in_latency_seconds`: from the last step
/// settling to the fan-in claim.
pub const FAN_IN_SECONDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0];
/// Bucket bounds (seconds) of `orchestrator_task_execution_seconds`: one attempt, from the
/// moment a consumer began running it to its end.
pub const TASK_SECONDS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Observations of one histogram, as counted by the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// For each bound of the histogram, how many observations are at most that bound.
    pub cumulative: Vec<u64>,
    /// All observations.
    pub count: u64,
    /// Their sum, in milliseconds.
    pub sum_ms: u64,
}

/// One admission pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// The resource (`tokens`, `concurrent_executions`).
    pub resource: String,
    /// Its capacity.
    pub capacity: u64,
    /// How much is reserved now.
    pub in_use: u64,
}

/// The aggregates every metric is computed from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Runs per status (statuses absent count 0).
    pub runs_by_status: Vec<(String, u64)>,
    /// Steps per status.
    pub steps_by_status: Vec<(String, u64)>,
    /// Attempts ever dispatched, over every step.
    pub attempts_total: u64,
    /// Attempts beyond each step's first, per service.
    pub retries_by_service: Vec<(String, u64)>,
    /// Durations of ended runs.
    pub run_seconds: Observed,
    /// Fan-in latencies of runs whose fan-in was claimed.
    pub fan_in_seconds: Observed,
    /// Durations of ended attempts that a consumer ran.
    pub task_seconds: Observed,
    /// Pipeline executions per queue status (`queued`, `admitted`, `started`, `failed`).
    pub queue_by_status: Vec<(String, u64)>,
    /// The admission pools.
    pub pools: Vec<Pool>,
    /// Archive passes' failures to write or verify a run's object in R2.
    pub archive_failures: u64,
    /// What analyses asked of the LLM, by model.
    pub llm: BTreeMap<String, LlmTotals>,
    /// The units runs used, by client and plan.
    pub run_units: BTreeMap<(String, String), Units>,
    /// The units' prices (`COST_PRICES`), for the cost series.
    pub unit_prices: UnitPrices,
    /// Spans an OpenTelemetry collector accepted.
    pub otlp_spans_exported: u64,
    /// Spans not delivered to the collector (it failed, refused them or did not answer in time).
    pub otlp_spans_dropped: u64,
}

/// What analyses asked of one model, summed ([`llm_totals`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LlmTotals {
    /// Analyses that stood.
    pub analyses: u64,
    /// Calls made to the model.
    pub calls: u64,
    /// Analyses the cache answered.
    pub cache_hits: u64,
    /// Analyses whose narrative is missing (the rules' diagnosis stood alone).
    pub fallbacks: u64,
    /// Tokens read.
    pub input_tokens: u64,
    /// Tokens written.
    pub output_tokens: u64,
    /// The estimated cost at `LLM_PRICES`, in billionths of a USD.
    pub cost_nano_usd: u64,
}

/// What one ended run counts in the metrics: its rows as the transaction that ends it leaves
/// them (or, for [`restart_totals`], as the retry finds them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaving<'a> {
    /// Its status.
    pub status: RunStatus,
    /// When it started (ms).
    pub started_at: u64,
    /// When it ended.
    pub completed_at: Option<u64>,
    /// When its fan-in was claimed.
    pub claimed_at: Option<u64>,
    /// Its steps: (service, status, attempts, finished_at).
    pub steps: &'a [(&'a str, StepStatus, u64, Option<u64>)],
    /// Its ended attempts a consumer ran: (started_at, ended_at).
    pub attempts: &'a [(u64, u64)],
}

/// A metric total's key and how much to add: `(metric, label, value)`.
pub type Total = (String, String, i64);

/// The totals metric of archive passes' R2 failures (label empty).
pub const ARCHIVE_FAILURES: &str = "archive_failures";
/// The totals metric of spans an OpenTelemetry collector accepted (label empty).
pub const OTLP_SPANS_EXPORTED: &str = "otlp_spans_exported";
/// The totals metric of spans not delivered to the collector (label empty).
pub const OTLP_SPANS_DROPPED: &str = "otlp_spans_dropped";

/// The totals `run` adds: `(metric, label, value)`, one per distinct key, in the shape of
/// [`Snapshot::add_totals`]: `runs`/`steps` by status, `attempts`, `retries` by service, and
/// each histogram's bucket (`le:{bound ms}` or `le:+Inf`, the smallest bound the value is at
/// most: not cumulative), `count` and `sum`.
pub fn leaving_totals(run: &Leaving<'_>) -> Vec<Total> {
    let mut totals: std::collections::BTreeMap<(String, String), i64> = std::collections::BTreeMap::new();
    let mut add = |metric: &str, label: &str, value: i64| {
        *totals.entry((metric.to_string(), label.to_string())).or_default() += value;
    };
    add("runs", run.status.as_str(), 1);
    for (service, status, attempts, _) in run.steps {
        add("steps", status.as_str(), 1);
        add("attempts", "", *attempts as i64);
        if *attempts > 1 {
            // A map step's items count under their step: one series per step, not per item.
            let step = crate::map::item_of(service).map_or(*service, |(step, _)| step);
            add("retries", step, *attempts as i64 - 1);
        }
    }
    let mut observe = |metric: &str, bounds: &[f64], ms: u64| {
        add(&format!("{metric}_ms"), &bucket_label(bounds, ms), 1);
        add(&format!("{metric}_ms"), "count", 1);
        add(&format!("{metric}_ms"), "sum", ms as i64);
    };
    if let Some(completed) = run.completed_at {
        observe("run", RUN_SECONDS, completed.saturating_sub(run.started_at));
    }
    let last_settled = run.steps.iter().filter_map(|(_, _, _, finished)| *finished).max();
    if let (Some(claimed), Some(settled)) = (run.claimed_at, last_settled) {
        observe("fan_in", FAN_IN_SECONDS, claimed.saturating_sub(settled));
    }
    for (started, ended) in run.attempts {
        observe("attempt", TASK_SECONDS, ended.saturating_sub(*started));
    }
    totals.into_iter().filter(|(_, v)| *v != 0).map(|((m, l), v)| (m, l, v)).collect()
}

/// The totals metric of the LLM's usage: label `{model}\u{1f}{what}` ([`LLM_WHAT`]).
pub const LLM: &str = "llm";

/// What [`LLM`] totals count, in [`LlmTotals`]' order.
pub const LLM_WHAT: [&str; 7] =
    ["analyses", "calls", "cache_hits", "fallbacks", "input_tokens", "output_tokens", "cost_nano_usd"];

/// What an analysis's LLM usage adds to the totals, by model. Added by the batch that ends the
/// run with that diagnosis and never taken back (a retry's new analysis adds its own): they
/// count what was asked and paid.
pub fn llm_totals(usage: &Usage) -> Vec<Total> {
    let cost = usage.cost_usd.map_or(0, |usd| (usd * 1e9).round().max(0.0) as i64);
    let values = [
        1,
        i64::from(usage.attempts),
        i64::from(usage.cached),
        i64::from(usage.fallback_reason.is_some()),
        usage.input_tokens as i64,
        usage.output_tokens as i64,
        cost,
    ];
    LLM_WHAT
        .iter()
        .zip(values)
        .filter(|(_, v)| *v != 0)
        .map(|(what, v)| (LLM.to_string(), format!("{}\u{1f}{what}", usage.model), v))
        .collect()
}

/// The label of the bucket `ms` falls in: `le:{the smallest bound in ms it is at most}`, or
/// `le:+Inf`.
pub fn bucket_label(bounds: &[f64], ms: u64) -> String {
    bounds
        .iter()
        .map(|b| (b * 1000.0).round() as u64)
        .find(|bound| ms <= *bound)
        .map_or_else(|| "le:+Inf".to_string(), |bound| format!("le:{bound}"))
}

/// What a run adds to the totals as it ends (`ended`: its rows as the ending leaves them). From
/// then on the scrape's read of live runs no longer sees it.
pub fn ending_totals(ended: &Leaving<'_>) -> Vec<Total> {
    leaving_totals(ended)
}

/// What a retry of an ended run takes back out of the totals (`previous`: its rows as its last
/// ending left them, which is how the retry reads them): exactly what that ending added, since
/// from the retry on the run is live and the scrape counts its rows again.
pub fn restart_totals(previous: &Leaving<'_>) -> Vec<Total> {
    leaving_totals(previous).into_iter().map(|(m, l, v)| (m, l, -v)).collect()
}

impl Observed {
    /// Adds archived observations: per-bound counts (not cumulative) by `le:{bound ms}`
    /// label, `count` and `sum`.
    fn add_totals(&mut self, bounds: &[f64], totals: &[(&str, i64)]) {
        if self.cumulative.len() < bounds.len() {
            self.cumulative.resize(bounds.len(), 0);
        }
        for (label, value) in totals {
            let value = (*value).max(0) as u64;
            match *label {
                "count" => self.count += value,
                "sum" => self.sum_ms += value,
                label => {
                    let Some(bound) = label.strip_prefix("le:").and_then(|b| b.parse::<u64>().ok()) else { continue };
                    for (i, b) in bounds.iter().enumerate() {
                        if bound <= (b * 1000.0).round() as u64 {
                            self.cumulative[i] += value;
                        }
                    }
                }
            }
        }
    }
}

impl Snapshot {
    /// Adds the totals of ended runs ([`ending_totals`] less [`restart_totals`], summed) and
    /// of archive failures ([`ARCHIVE_FAILURES`]) to what the live rows counted. A key whose
    /// total came back to 0 adds no series of its own.
    pub fn add_totals(&mut self, totals: &[Total]) {
        fn add(counts: &mut Vec<(String, u64)>, key: &str, value: i64) {
            let value = value.max(0) as u64;
            match counts.iter_mut().find(|(k, _)| k == key) {
                Some((_, n)) => *n += value,
                None if value > 0 => counts.push((key.to_string(), value)),
                None => {}
            }
        }
        let of = |metric: &str| -> Vec<(&str, i64)> {
            totals.iter().filter(|(m, _, _)| m == metric).map(|(_, l, v)| (l.as_str(), *v)).collect()
        };
        for (metric, label, value) in totals {
            match metric.as_str() {
                "runs" => add(&mut self.runs_by_status, label, *value),
                "steps" => add(&mut self.steps_by_status, label, *value),
                "attempts" => self.attempts_total += (*value).max(0) as u64,
                "retries" => add(&mut self.retries_by_service, label, *value),
                ARCHIVE_FAILURES => self.archive_failures += (*value).max(0) as u64,
                cost::UNITS_METRIC => {
                    let Some((client, plan, unit)) = cost::units_label(label) else { continue };
                    let units = self.run_units.entry((client.to_string(), plan.to_string())).or_default();
                    let mut values = units.values();
                    if let Some(i) = UNIT_NAMES.iter().position(|n| *n == unit) {
                        values[i] += (*value).max(0) as u64;
                    }
                    *units = Units::from_values(values);
                }
                LLM => {
                    let Some((model, what)) = label.rsplit_once('\u{1f}') else { continue };
                    let totals = self.llm.entry(model.to_string()).or_default();
                    let value = (*value).max(0) as u64;
                    match what {
                        "analyses" => totals.analyses += value,
                        "calls" => totals.calls += value,
                        "cache_hits" => totals.cache_hits += value,
                        "fallbacks" => totals.fallbacks += value,
                        "input_tokens" => totals.input_tokens += value,
                        "output_tokens" => totals.output_tokens += value,
                        "cost_nano_usd" => totals.cost_nano_usd += value,
                        _ => {}
                    }
                }
                OTLP_SPANS_EXPORTED => self.otlp_spans_exported += (*value).max(0) as u64,
                OTLP_SPANS_DROPPED => self.otlp_spans_dropped += (*value).max(0) as u64,
                _ => {}
            }
        }
        self.retries_by_service.sort();
        self.run_seconds.add_totals(RUN_SECONDS, &of("run_ms"));
        self.fan_in_seconds.add_totals(FAN_IN_SECONDS, &of("fan_in_ms"));
        self.task_seconds.add_totals(TASK_SECONDS, &of("attempt_ms"));
    }

    /// Adds another shard's snapshot: every count, bucket and pool summed (a pool of the same
    /// resource in two shards is one pool of both capacities).
    pub fn absorb(&mut self, other: Snapshot) {
        fn merge(into: &mut Vec<(String, u64)>, from: Vec<(String, u64)>) {
            for (key, value) in from {
                match into.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, n)) => *n += value,
                    None => into.push((key, value)),
                }
            }
            into.sort();
        }
        fn observed(into: &mut Observed, from: Observed) {
            if into.cumulative.len() < from.cumulative.len() {
                into.cumulative.resize(from.cumulative.len(), 0);
            }
            for (i, n) in from.cumulative.into_iter().enumerate() {
                into.cumulative[i] += n;
            }
            into.count += from.count;
            into.sum_ms += from.sum_ms;
        }
        // Every field by name: a new one cannot be left out of the sum.
        let Snapshot {
            runs_by_status,
            steps_by_status,
            attempts_total,
            retries_by_service,
            run_seconds,
            fan_in_seconds,
            task_seconds,
            queue_by_status,
            pools,
            archive_failures,
            llm,
            run_units,
            unit_prices: _,
            otlp_spans_exported,
            otlp_spans_dropped,
        } = other;
        merge(&mut self.runs_by_status, runs_by_status);
        merge(&mut self.steps_by_status, steps_by_status);
        self.attempts_total += attempts_total;
        merge(&mut self.retries_by_service, retries_by_service);
        observed(&mut self.run_seconds, run_seconds);
        observed(&mut self.fan_in_seconds, fan_in_seconds);
        observed(&mut self.task_seconds, task_seconds);
        merge(&mut self.queue_by_status, queue_by_status);
        self.archive_failures += archive_failures;
        for (key, from) in run_units {
            *self.run_units.entry(key).or_default() += from;
        }
        for (model, from) in llm {
            let into = self.llm.entry(model).or_default();
            into.analyses += from.analyses;
            into.calls += from.calls;
            into.cache_hits += from.cache_hits;
            into.fallbacks += from.fallbacks;
            into.input_tokens += from.input_tokens;
            into.output_tokens += from.output_tokens;
            into.cost_nano_usd += from.cost_nano_usd;
        }
        self.otlp_spans_exported += otlp_spans_exported;
        self.otlp_spans_dropped += otlp_spans_dropped;
        for pool in pools {
            match self.pools.iter_mut().find(|p| p.resource == pool.resource) {
                Some(p) => {
                    p.capacity += pool.capacity;
                    p.in_use += pool.in_use;
                }
                None => self.pools.push(pool),
            }
        }
        self.pools.sort_by(|a, b| a.resource.cmp(&b.resource));
    }
}

/// Execution-queue statuses that are still in the queue (a gauge for each).
const QUEUE_WAITING: [QueueStatus; 2] = [QueueStatus::Queued, QueueStatus::Admitted];

fn count_of(counts: &[(String, u64)], key: &str) -> u64 {
    counts.iter().filter(|(k, _)| k == key).map(|(_, v)| *v).sum()
}

/// The snapshot in the Prometheus text format.
pub fn render(s: &Snapshot) -> String {
    let mut out = Exposition::default();
    out.family(
        "orchestrator_flow_runs_processed_total",
        "counter",
        "Runs that ended, by final status.",
        RunStatus::ALL
            .iter()
            .filter(|st| st.is_terminal())
            .map(|st| (vec![("status", st.as_str())], count_of(&s.runs_by_status, st.as_str()) as f64))
            .collect(),
    );
    let active: u64 =
        RunStatus::ALL.iter().filter(|st| !st.is_terminal()).map(|st| count_of(&s.runs_by_status, st.as_str())).sum();
    out.family("orchestrator_active_runs", "gauge", "Runs not yet ended.", vec![(vec![], active as f64)]);
    out.histogram(
        "orchestrator_run_execution_seconds",
        "Run duration, start to end, of ended runs.",
        RUN_SECONDS,
        &s.run_seconds,
    );
    out.histogram(
        "orchestrator_fan_in_latency_seconds",
        "From the last step settling to the run's fan-in claim.",
        FAN_IN_SECONDS,
        &s.fan_in_seconds,
    );
    out.family(
        "orchestrator_tasks_scheduled_total",
        "counter",
        "Step attempts dispatched.",
        vec![(vec![], s.attempts_total as f64)],
    );
    out.family(
        "orchestrator_tasks_completed_total",
        "counter",
        "Steps that ended, by final status.",
        StepStatus::ALL
            .iter()
            .filter(|st| st.is_terminal())
            .map(|st| (vec![("status", st.as_str())], count_of(&s.steps_by_status, st.as_str()) as f64))
            .collect(),
    );
    out.family(
        "orchestrator_active_tasks",
        "gauge",
        "Steps running now.",
        vec![(vec![], count_of(&s.steps_by_status, StepStatus::Running.as_str()) as f64)],
    );
    out.histogram(
        "orchestrator_task_execution_seconds",
        "Duration of one attempt, from a consumer starting it to its end.",
        TASK_SECONDS,
        &s.task_seconds,
    );
    out.family(
        "orchestrator_retry_attempts_total",
        "counter",
        "Attempts beyond a step's first, by service.",
        s.retries_by_service.iter().map(|(service, n)| (vec![("service", service.as_str())], *n as f64)).collect(),
    );
    out.family(
        "orchestrator_execution_queue",
        "gauge",
        "Pipeline executions waiting in the queue (queued) or admitted and not yet started.",
        QUEUE_WAITING
            .iter()
            .map(|st| (vec![("status", st.as_str())], count_of(&s.queue_by_status, st.as_str()) as f64))
            .collect(),
    );
    out.family(
        "orchestrator_admission_pool_capacity",
        "gauge",
        "Capacity of each admission pool.",
        s.pools.iter().map(|p| (vec![("resource", p.resource.as_str())], p.capacity as f64)).collect(),
    );
    out.family(
        "orchestrator_admission_pool_in_use",
        "gauge",
        "Reserved amount of each admission pool.",
        s.pools.iter().map(|p| (vec![("resource", p.resource.as_str())], p.in_use as f64)).collect(),
    );
    out.family(
        "orchestrator_archive_failures_total",
        "counter",
        "Runs an archive pass could not write or verify in R2 (each kept in D1 and tried again).",
        vec![(vec![], s.archive_failures as f64)],
    );
    let by_model = |value: fn(&LlmTotals) -> u64| -> Vec<Sample<'_>> {
        s.llm.iter().map(|(model, t)| (vec![("model", model.as_str())], value(t) as f64)).collect()
    };
    out.family(
        "orchestrator_llm_analyses_total",
        "counter",
        "Analyses that asked the LLM (or its cache) for a narrative, by model.",
        by_model(|t| t.analyses),
    );
    out.family(
        "orchestrator_llm_calls_total",
        "counter",
        "Calls made to the LLM, retries included, by model.",
        by_model(|t| t.calls),
    );
    out.family(
        "orchestrator_llm_cache_hits_total",
        "counter",
        "Analyses answered from the cache (LLM_CACHE_SECONDS), by model.",
        by_model(|t| t.cache_hits),
    );
    out.family(
        "orchestrator_llm_fallbacks_total",
        "counter",
        "Analyses whose LLM call failed, leaving the rules' diagnosis alone, by model.",
        by_model(|t| t.fallbacks),
    );
    out.family(
        "orchestrator_llm_tokens_total",
        "counter",
        "Tokens the LLM read (type=input) and wrote (type=output), as the provider counted them, by model.",
        s.llm
            .iter()
            .flat_map(|(model, t)| {
                [
                    (vec![("model", model.as_str()), ("type", "input")], t.input_tokens as f64),
                    (vec![("model", model.as_str()), ("type", "output")], t.output_tokens as f64),
                ]
            })
            .collect(),
    );
    out.family(
        "orchestrator_llm_cost_usd_total",
        "counter",
        "The LLM's estimated cost at LLM_PRICES, in USD, by model.",
        by_model(|t| t.cost_nano_usd).into_iter().map(|(labels, nano)| (labels, nano / 1e9)).collect(),
    );
    out.family(
        "orchestrator_run_units_total",
        "counter",
        "Billed units runs used (D1 rows, KV operations, queue messages, subrequests, R2 operations), by client and plan.",
        s.run_units
            .iter()
            .flat_map(|((client, plan), units)| {
                UNIT_NAMES.iter().zip(units.values()).filter(|(_, n)| *n > 0).map(move |(unit, n)| {
                    (vec![("client", client.as_str()), ("plan", plan.as_str()), ("unit", *unit)], n as f64)
                })
            })
            .collect(),
    );
    out.family(
        "orchestrator_run_cost_usd_total",
        "counter",
        "What runs' units cost at COST_PRICES, USD, by client and plan.",
        s.run_units
            .iter()
            .map(|((client, plan), units)| {
                (vec![("client", client.as_str()), ("plan", plan.as_str())], s.unit_prices.cost_usd(units))
            })
            .collect(),
    );
    out.family(
        "orchestrator_otlp_spans_exported_total",
        "counter",
        "Spans of ended runs an OpenTelemetry collector accepted (OTEL_EXPORTER_OTLP_ENDPOINT).",
        vec![(vec![], s.otlp_spans_exported as f64)],
    );
    out.family(
        "orchestrator_otlp_spans_dropped_total",
        "counter",
        "Spans of ended runs not delivered: the collector failed, refused them or did not answer in time.",
        vec![(vec![], s.otlp_spans_dropped as f64)],
    );
    out.text
}

/// A labelled sample: label pairs and the value.
type Sample<'a> = (Vec<(&'a str, &'a str)>, f64);

#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v))).collect();
            let _ = write!(self.text, "{{{}}}", pairs.join(","));
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    fn family(&mut self, name: &str, kind: &str, help: &str, samples: Vec<Sample<'_>>) {
        self.header(name, kind, help);
        for (labels, value) in samples {
            self.sample(name, &labels, value);
        }
    }

    fn histogram(&mut self, name: &str, help: &str, bounds: &[f64], observed: &Observed) {
        self.header(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (i, bound) in bounds.iter().enumerate() {
            let le = number(*bound);
            let below = observed.cumulative.get(i).copied().unwrap_or(observed.count).min(observed.count);
            self.sample(&bucket, &[("le", &le)], below as f64);
        }
        self.sample(&bucket, &[("le", "+Inf")], observed.count as f64);
        self.sample(&format!("{name}_sum"), &[], observed.sum_ms as f64 / 1000.0);
        self.sample(&format!("{name}_count"), &[], observed.count as f64);
    }
}

/// A sample value as Go's `strconv.FormatFloat(v, 'g', -1, 64)` would accept it back:
/// integers without a fraction, others in Rust's shortest round-trip form.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// HELP text escapes backslash and newline.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Label values escape backslash, double quote and newline.
fn escape_label_value(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn every_terminal_status_has_a_series_even_at_zero() {
        let snapshot = Snapshot {
            runs_by_status: vec![("completed".into(), 3), ("running".into(), 2), ("started".into(), 1)],
            ..Snapshot::default()
        };
        let text = render(&snapshot);
        let runs = lines_of(&text, "orchestrator_flow_runs_processed_total{");
        assert!(runs.contains(&"orchestrator_flow_runs_processed_total{status=\"completed\"} 3"), "{text}");
        assert!(runs.contains(&"orchestrator_flow_runs_processed_total{status=\"cancelled\"} 0"), "{text}");
        assert!(!runs.iter().any(|l| l.contains("running")), "{text}");
        assert_eq!(lines_of(&text, "orchestrator_active_runs "), ["orchestrator_active_runs 3"]);
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_an_infinite_bucket_a_sum_in_seconds_and_a_count() {
        let observed = Observed { cumulative: vec![0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2], count: 3, sum_ms: 4_250 };
        let text = render(&Snapshot { run_seconds: observed, ..Snapshot::default() });
        let buckets = lines_of(&text, "orchestrator_run_execution_seconds_bucket");
        assert_eq!(buckets.len(), RUN_SECONDS.len() + 1);
        assert_eq!(buckets[0], "orchestrator_run_execution_seconds_bucket{le=\"0.25\"} 0");
        assert_eq!(buckets[2], "orchestrator_run_execution_seconds_bucket{le=\"1\"} 2");
        assert_eq!(buckets[RUN_SECONDS.len()], "orchestrator_run_execution_seconds_bucket{le=\"+Inf\"} 3");
        assert_eq!(
            lines_of(&text, "orchestrator_run_execution_seconds_sum"),
            ["orchestrator_run_execution_seconds_sum 4.25"]
        );
        assert_eq!(
            lines_of(&text, "orchestrator_run_execution_seconds_count"),
            ["orchestrator_run_execution_seconds_count 3"]
        );
    }

    #[test]
    fn the_retries_of_a_map_steps_items_count_under_the_step() {
        use crate::state::{RunStatus, StepStatus};
        let steps = [
            ("crawl", StepStatus::Completed, 2, Some(10)),
            ("audit.0", StepStatus::Completed, 2, Some(20)),
            ("audit.1", StepStatus::Failed, 3, Some(30)),
        ];
        let totals = leaving_totals(&Leaving {
            status: RunStatus::Completed,
            started_at: 0,
            completed_at: Some(40),
            claimed_at: Some(35),
            steps: &steps,
            attempts: &[],
        });
        let retries: Vec<(&str, i64)> =
            totals.iter().filter(|(m, ..)| m == "retries").map(|(_, label, v)| (label.as_str(), *v)).collect();
        assert_eq!(retries, [("audit", 3), ("crawl", 1)]);
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_help("x\\y\nz"), "x\\\\y\\nz");
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = render(&Snapshot {
            retries_by_service: vec![("technical-seo".into(), 2)],
            pools: vec![Pool { resource: "tokens".into(), capacity: 10, in_use: 4 }],
            ..Snapshot::default()
        });
        let mut declared: Vec<&str> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap_or(""));
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                let family = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
                assert!(declared.last().is_some_and(|d| *d == name || *d == family), "{line} outside its family");
            }
        }
        assert!(text.contains("orchestrator_retry_attempts_total{service=\"technical-seo\"} 2"));
        assert!(text.contains("orchestrator_admission_pool_in_use{resource=\"tokens\"} 4"));
    }

    #[test]
    fn a_run_leaving_d1_keeps_every_counter_and_histogram_where_it_was() {
        let steps = [("a", StepStatus::Completed, 2, Some(10_400)), ("b", StepStatus::Failed, 1, Some(10_000))];
        let leaving = Leaving {
            status: RunStatus::Completed,
            started_at: 10_000,
            completed_at: Some(11_000),
            claimed_at: Some(10_420),
            steps: &steps,
            attempts: &[(10_000, 10_030), (10_100, 10_400)],
        };
        let totals = leaving_totals(&leaving);
        let live = |run_ms: u64| Snapshot {
            runs_by_status: vec![("completed".into(), 1)],
            steps_by_status: vec![("completed".into(), 1), ("failed".into(), 1)],
            attempts_total: 3,
            retries_by_service: vec![("a".into(), 1)],
            run_seconds: Observed {
                cumulative: RUN_SECONDS.iter().map(|b| u64::from(run_ms <= (b * 1000.0) as u64)).collect(),
                count: 1,
                sum_ms: run_ms,
            },
            fan_in_seconds: Observed {
                cumulative: FAN_IN_SECONDS.iter().map(|b| u64::from(20 <= (b * 1000.0).round() as u64)).collect(),
                count: 1,
                sum_ms: 20,
            },
            task_seconds: Observed {
                cumulative: TASK_SECONDS
                    .iter()
                    .map(|b| [30u64, 300].iter().filter(|v| **v <= (b * 1000.0).round() as u64).count() as u64)
                    .collect(),
                count: 2,
                sum_ms: 330,
            },
            ..Snapshot::default()
        };
        // The run counted by the scan, and the same run counted from its totals, render alike.
        let mut archived = Snapshot::default();
        archived.add_totals(&totals);
        assert_eq!(render(&archived), render(&live(1_000)));
        // Totals add to what the scan still sees.
        let mut both = live(1_000);
        both.add_totals(&totals);
        assert_eq!(both.attempts_total, 6);
        assert_eq!(both.run_seconds.count, 2);
        assert_eq!(both.run_seconds.cumulative.last(), Some(&2));
    }

    /// One run's rows, as the tables hold them.
    #[derive(Debug, Clone)]
    struct Rows {
        status: RunStatus,
        started_at: u64,
        completed_at: Option<u64>,
        claimed_at: Option<u64>,
        steps: Vec<(String, StepStatus, u64, Option<u64>)>,
        attempts: Vec<(u64, u64)>,
    }

    impl Rows {
        fn counted<T>(&self, f: impl FnOnce(&Leaving<'_>) -> T) -> T {
            let steps: Vec<(&str, StepStatus, u64, Option<u64>)> =
                self.steps.iter().map(|(s, st, a, f)| (s.as_str(), *st, *a, *f)).collect();
            f(&Leaving {
                status: self.status,
                started_at: self.started_at,
                completed_at: self.completed_at,
                claimed_at: self.claimed_at,
                steps: &steps,
                attempts: &self.attempts,
            })
        }
    }

    fn observed(bounds: &[f64], values: &[u64]) -> Observed {
        Observed {
            cumulative: bounds
                .iter()
                .map(|b| values.iter().filter(|v| **v <= (b * 1000.0).round() as u64).count() as u64)
                .collect(),
            count: values.len() as u64,
            sum_ms: values.iter().sum(),
        }
    }

    /// What the edge's statements count over `runs`' rows (the whole tables for the full scan,
    /// the live runs for a scrape).
    fn scan<'a>(runs: impl Iterator<Item = &'a Rows> + Clone) -> Snapshot {
        let mut s = Snapshot::default();
        let bump = |counts: &mut Vec<(String, u64)>, key: &str, n: u64| match counts.iter_mut().find(|(k, _)| k == key)
        {
            Some((_, v)) => *v += n,
            None => counts.push((key.to_string(), n)),
        };
        let (mut run_ms, mut fan_in_ms, mut attempt_ms) = (Vec::new(), Vec::new(), Vec::new());
        for run in runs.clone() {
            bump(&mut s.runs_by_status, run.status.as_str(), 1);
            for (service, status, attempts, _) in &run.steps {
                bump(&mut s.steps_by_status, status.as_str(), 1);
                s.attempts_total += attempts;
                if *attempts > 1 {
                    bump(&mut s.retries_by_service, service, attempts - 1);
                }
            }
            if let Some(done) = run.completed_at {
                run_ms.push(done.saturating_sub(run.started_at));
            }
            let settled = run.steps.iter().filter_map(|s| s.3).max();
            if let (Some(claimed), Some(settled)) = (run.claimed_at, settled) {
                fan_in_ms.push(claimed.saturating_sub(settled));
            }
            attempt_ms.extend(run.attempts.iter().map(|(a, b)| b.saturating_sub(*a)));
        }
        s.retries_by_service.sort();
        s.run_seconds = observed(RUN_SECONDS, &run_ms);
        s.fan_in_seconds = observed(FAN_IN_SECONDS, &fan_in_ms);
        s.task_seconds = observed(TASK_SECONDS, &attempt_ms);
        s
    }

    /// `metric_totals` after `writes`: summed per key.
    fn table(writes: &[Total]) -> Vec<Total> {
        let mut sums: std::collections::BTreeMap<(String, String), i64> = Default::default();
        for (m, l, v) in writes {
            *sums.entry((m.clone(), l.clone())).or_default() += v;
        }
        sums.into_iter().map(|((m, l), v)| (m, l, v)).collect()
    }

    fn status_of(n: u8, statuses: &[RunStatus]) -> RunStatus {
        statuses[n as usize % statuses.len()]
    }

    proptest::proptest! {
        /// Runs that end, are retried (their rows grow: more attempts, a new ending) and end
        /// again, or stay live: a scrape (the live runs' rows and the totals the endings and
        /// restarts wrote) renders what a scan of every row renders.
        #[test]
        fn live_rows_and_ending_totals_render_as_the_full_scan(
            runs in proptest::collection::vec(
                (
                    0u8..4, 0u64..2_000_000, 0u64..5_000, proptest::option::of(0u64..400),
                    proptest::collection::vec((0u8..3, 0u8..6, 0u64..4, proptest::option::of(0u64..3_000)), 0..4),
                    proptest::collection::vec((0u64..1_000, 0u64..400_000), 0..4),
                    0u8..3, 0u8..4,
                ),
                0..6,
            )
        ) {
            let services = ["alpha", "beta", "gamma"];
            let ended = [RunStatus::Completed, RunStatus::Failed, RunStatus::Timeout, RunStatus::Cancelled];
            let live = [RunStatus::Started, RunStatus::Running, RunStatus::Aggregating];
            let mut written: Vec<Total> = Vec::new();
            let mut rows: Vec<Rows> = Vec::new();
            for (status, duration, started, claim, steps, attempts, rounds, last) in runs {
                let mut run = Rows {
                    status: RunStatus::Running,
                    started_at: started,
                    completed_at: None,
                    claimed_at: None,
                    steps: Vec::new(),
                    attempts: Vec::new(),
                };
                for round in 0..=rounds {
                    // The round's rows as its ending leaves them (attempts and steps only grow).
                    run.steps = steps
                        .iter()
                        .map(|(svc, st, a, f)| {
                            let status = StepStatus::ALL[(*st as usize + round as usize) % StepStatus::ALL.len()];
                            (services[*svc as usize].to_string(), status, a + u64::from(round), *f)
                        })
                        .collect();
                    run.attempts.extend(attempts.iter().map(|(a, d)| (started + a, started + a + d + u64::from(round))));
                    let final_round = round == rounds;
                    if final_round && last == 3 {
                        // Still live: never ended in its last round.
                        run.status = status_of(status, &live);
                        run.completed_at = None;
                        run.claimed_at = claim.map(|c| started + c).filter(|_| run.status == RunStatus::Aggregating);
                        break;
                    }
                    run.status = status_of(status + round, &ended);
                    run.completed_at = Some(run.started_at + duration);
                    run.claimed_at = claim.map(|c| run.started_at + c);
                    written.extend(run.counted(ending_totals));
                    if !final_round {
                        // Retried: the restart takes the ending back, the run is live again.
                        written.extend(run.counted(restart_totals));
                        run.status = RunStatus::Running;
                        run.started_at += duration + 1;
                        run.completed_at = None;
                        run.claimed_at = None;
                    }
                }
                rows.push(run);
            }
            let mut scraped = scan(rows.iter().filter(|r| !r.status.is_terminal()));
            scraped.add_totals(&table(&written));
            proptest::prop_assert_eq!(render(&scraped), render(&scan(rows.iter())));
        }
    }

    #[test]
    fn a_restart_takes_back_exactly_what_the_ending_added() {
        let steps = [("a", StepStatus::Failed, 3, Some(10_400))];
        let run = Leaving {
            status: RunStatus::Failed,
            started_at: 10_000,
            completed_at: Some(10_500),
            claimed_at: Some(10_450),
            steps: &steps,
            attempts: &[(10_000, 10_100), (10_200, 10_300)],
        };
        let both: Vec<Total> = ending_totals(&run).into_iter().chain(restart_totals(&run)).collect();
        assert!(table(&both).iter().all(|(_, _, v)| *v == 0), "{both:?}");
        let mut scrape = Snapshot::default();
        scrape.add_totals(&table(&both));
        assert_eq!(render(&scrape), render(&Snapshot::default()));
    }

    #[test]
    fn bucket_labels_name_the_smallest_bound_in_ms() {
        assert_eq!(bucket_label(RUN_SECONDS, 0), "le:250");
        assert_eq!(bucket_label(RUN_SECONDS, 250), "le:250");
        assert_eq!(bucket_label(RUN_SECONDS, 251), "le:500");
        assert_eq!(bucket_label(FAN_IN_SECONDS, 5), "le:5");
        assert_eq!(bucket_label(TASK_SECONDS, 300_001), "le:+Inf");
    }

    #[test]
    fn archive_failures_render_as_a_counter_even_at_zero() {
        assert!(render(&Snapshot::default()).contains("\norchestrator_archive_failures_total 0\n"));
        let mut s = Snapshot::default();
        s.add_totals(&[(ARCHIVE_FAILURES.into(), String::new(), 2)]);
        assert!(render(&s).contains("\norchestrator_archive_failures_total 2\n"));
    }

    fn usage(model: &str, attempts: u32, tokens: (u64, u64), cost: Option<f64>, cached: bool) -> Usage {
        Usage {
            provider: "api.example".into(),
            model: model.into(),
            prompt_hash: "h".into(),
            input_tokens: tokens.0,
            output_tokens: tokens.1,
            latency_ms: 10,
            attempts,
            cost_usd: cost,
            cached,
            fallback_reason: None,
        }
    }

    #[test]
    fn the_llms_usage_sums_by_model_across_shards() {
        let mut one = Snapshot::default();
        one.add_totals(&llm_totals(&usage("m-1", 2, (1_000, 200), Some(0.00027), false)));
        one.add_totals(&llm_totals(&usage("m-1", 0, (0, 0), Some(0.0), true)));
        let mut two = Snapshot::default();
        let failed = Usage { fallback_reason: Some("HTTP 500".into()), ..usage("m-2", 3, (0, 0), None, false) };
        two.add_totals(&llm_totals(&failed));
        one.absorb(two);
        let m1 = &one.llm["m-1"];
        assert_eq!((m1.analyses, m1.calls, m1.cache_hits, m1.input_tokens, m1.output_tokens), (2, 2, 1, 1_000, 200));
        assert_eq!(m1.cost_nano_usd, 270_000);
        assert_eq!((one.llm["m-2"].fallbacks, one.llm["m-2"].calls), (1, 3));
        let text = render(&one);
        for line in [
            "orchestrator_llm_tokens_total{model=\"m-1\",type=\"input\"} 1000",
            "orchestrator_llm_tokens_total{model=\"m-1\",type=\"output\"} 200",
            "orchestrator_llm_cost_usd_total{model=\"m-1\"} 0.00027",
            "orchestrator_llm_cache_hits_total{model=\"m-1\"} 1",
            "orchestrator_llm_fallbacks_total{model=\"m-2\"} 1",
            "orchestrator_llm_calls_total{model=\"m-2\"} 3",
        ] {
            assert!(text.contains(&format!("\n{line}\n")), "{line} in\n{text}");
        }
        // A retry takes back what the ending counted, never what was asked of the LLM.
        assert!(restart_totals(&Leaving {
            status: RunStatus::Completed,
            started_at: 0,
            completed_at: Some(1),
            claimed_at: None,
            steps: &[],
            attempts: &[],
        })
        .iter()
        .all(|(m, _, _)| m != LLM));
    }

    #[test]
    fn span_export_counters_render_even_at_zero_and_add_up() {
        let zero = render(&Snapshot::default());
        assert!(zero.contains("\norchestrator_otlp_spans_exported_total 0\n"), "{zero}");
        assert!(zero.contains("\norchestrator_otlp_spans_dropped_total 0\n"), "{zero}");
        let mut s = Snapshot::default();
        s.add_totals(&[(OTLP_SPANS_EXPORTED.into(), String::new(), 13), (OTLP_SPANS_DROPPED.into(), String::new(), 4)]);
        let mut other = Snapshot::default();
        other.add_totals(&[(OTLP_SPANS_EXPORTED.into(), String::new(), 1)]);
        s.absorb(other);
        assert!(render(&s).contains("\norchestrator_otlp_spans_exported_total 14\n"));
        assert!(render(&s).contains("\norchestrator_otlp_spans_dropped_total 4\n"));
    }
}

#[cfg(test)]
mod absorb_tests {
    use super::*;

    #[test]
    fn shards_snapshots_add_up() {
        let one = Snapshot {
            runs_by_status: vec![("completed".into(), 2), ("running".into(), 1)],
            attempts_total: 5,
            run_seconds: Observed { cumulative: vec![1, 2], count: 2, sum_ms: 700 },
            pools: vec![Pool { resource: "tokens".into(), capacity: 10, in_use: 3 }],
            ..Snapshot::default()
        };
        let two = Snapshot {
            runs_by_status: vec![("completed".into(), 1), ("failed".into(), 1)],
            attempts_total: 2,
            run_seconds: Observed { cumulative: vec![0, 1], count: 1, sum_ms: 400 },
            pools: vec![Pool { resource: "tokens".into(), capacity: 10, in_use: 1 }],
            archive_failures: 2,
            ..Snapshot::default()
        };
        let mut sum = one;
        sum.absorb(two);
        assert_eq!(sum.runs_by_status, vec![("completed".into(), 3), ("failed".into(), 1), ("running".into(), 1)]);
        assert_eq!(sum.attempts_total, 7);
        assert_eq!(sum.run_seconds, Observed { cumulative: vec![1, 3], count: 3, sum_ms: 1100 });
        assert_eq!(sum.pools, vec![Pool { resource: "tokens".into(), capacity: 20, in_use: 4 }]);
        assert_eq!(sum.archive_failures, 2);
    }
}
