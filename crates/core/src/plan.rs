//! Run plans: which services (steps) a run calls, their dependencies, timeouts and retries.
//!
//! A [`PlanDraft`] is what a client sends (`POST /api/orchestration/plans`, snake_case JSON);
//! [`validate`] turns it into a [`Plan`] or reports **every** problem at once. A `Plan` is
//! valid by construction (ids well-formed, dependencies known, acyclic, timeouts within the
//! run), so the scheduler and fan-in never re-check it. Deserialising a `Plan` validates too.
//!
//! Limits: at most [`MAX_STEPS`] steps; names and display names at most
//! [`MAX_NAME_CHARS`] characters, descriptions [`MAX_DESCRIPTION_CHARS`], actions
//! [`MAX_ACTION_CHARS`]; runs at most [`MAX_RUN_DURATION_MS`] (7 days, the job-timeout bound).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use crate::ids::{IdError, PlanId, ServiceSlug, WorkerKey};
use crate::map::{self, MapSpec};
use crate::retry::{RetryPolicy, RetryPolicyError};
use crate::state::{ErrorKind, RunStatus, StepError};
use crate::time::MINUTE_MS;

/// At most this many steps per plan.
pub const MAX_STEPS: usize = 50;
/// Longest plan name or step display name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest plan description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// Longest step action (template reference), in characters.
pub const MAX_ACTION_CHARS: usize = 128;
/// Longest run: 7 days (10080 minutes, the `JOB_TIMEOUT_MINUTES` bound).
pub const MAX_RUN_DURATION_MS: u64 = 10_080 * MINUTE_MS;
/// A step's timeout when the draft gives none (capped at the run's duration).
pub const DEFAULT_STEP_TIMEOUT_MS: u64 = 60_000;
/// At most this many `run` steps (child runs) per plan.
pub const MAX_RUN_STEPS: usize = 20;

/// The plan a run uses when the request names none.
pub const DEFAULT_PLAN_ID: &str = STANDARD_PLAN_ID;
/// The built-in complete diagnostic.
pub const STANDARD_PLAN_ID: &str = "standard-v1";
/// The built-in fast diagnostic.
pub const QUICK_PLAN_ID: &str = "quick-v1";

/// One step of a valid plan: a service to call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepSpec {
    /// The step's slug, unique in the plan.
    pub service: ServiceSlug,
    /// Human name.
    pub display_name: String,
    /// Which worker to call.
    pub worker_key: WorkerKey,
    /// Steps that must complete first.
    pub depends_on: Vec<ServiceSlug>,
    /// Whether the diagnosis needs it (missing required steps cost more confidence).
    pub required: bool,
    /// Longest one attempt may take.
    pub timeout_ms: u64,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// The handshake `action` (a pipeline stage's `template_ref`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Longest an attempt may go without a heartbeat (a progress answer saying it runs), if
    /// the step asks for heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout_ms: Option<u64>,
    /// When it runs, given its dependencies (default `all_success`).
    #[serde(default, skip_serializing_if = "TriggerRule::is_default")]
    pub trigger_rule: TriggerRule,
    /// A wait step: no service is called; it waits for an event delivered to the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitSpec>,
    /// A map step: the service is called once per element of a list in an upstream output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<MapSpec>,
    /// A run step: no service is called; it starts a child run of another plan and ends
    /// with the child's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<ChildSpec>,
}

/// What a run step starts: a run of `plan_id` for the same client, website and domain, with
/// `parameters` and, for each name of `parameters_from`, a value taken from a completed
/// upstream step's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChildSpec {
    /// The child's plan (one the parent's client may use; checked when the child starts).
    pub plan_id: PlanId,
    /// Static parameters.
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// Parameter name → `<upstream step>.<dotted.path>` (the step alone: its whole output).
    pub parameters_from: BTreeMap<String, String>,
}

impl ChildSpec {
    /// How a child run that ended with `status` ends its run step's attempt: `None` when it
    /// completed (its outcome is the step's output), else the failure the step records — a
    /// timeout for a child that timed out (the step ends `timeout`, not retried: the child ran
    /// to its deadline), a permanent failure for one that failed or was cancelled. `error`:
    /// the child's own error, if it has one. `None` too for a child that has not ended.
    pub fn failure_of(status: RunStatus, run_id: &str, error: Option<&str>) -> Option<StepError> {
        let why = error.map(|e| format!(": {e}")).unwrap_or_default();
        match status {
            RunStatus::Timeout => {
                Some(StepError::new(ErrorKind::Timeout, format!("child run {run_id} timed out{why}")))
            }
            RunStatus::Failed | RunStatus::Cancelled => {
                Some(StepError::permanent(format!("child run {run_id} ended {status}{why}")))
            }
            _ => None,
        }
    }

    /// The child's parameters: the static ones, then each `parameters_from` value looked up in
    /// `output_of(step)` (a missing step output or path gives `null`).
    pub fn parameters_with(
        &self,
        output_of: impl Fn(&str) -> Option<serde_json::Value>,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut parameters = self.parameters.clone();
        for (name, source) in &self.parameters_from {
            let (step, path) = source.split_once('.').unwrap_or((source.as_str(), ""));
            let mut value = output_of(step).unwrap_or(serde_json::Value::Null);
            for key in path.split('.').filter(|k| !k.is_empty()) {
                value = match value {
                    serde_json::Value::Object(mut map) => map.remove(key).unwrap_or(serde_json::Value::Null),
                    serde_json::Value::Array(mut items) => match key.parse::<usize>() {
                        Ok(i) if i < items.len() => items.swap_remove(i),
                        _ => serde_json::Value::Null,
                    },
                    _ => serde_json::Value::Null,
                };
            }
            parameters.insert(name.clone(), value);
        }
        parameters
    }
}

/// What a wait step waits for: an event of this name delivered to its run
/// (`POST /api/orchestration/runs/:run_id/events/:name`) whose payload holds every field of
/// `matches` with the same value. The payload becomes the step's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitSpec {
    /// The event's name, `[a-z0-9_.-]{1,64}`, unique among the plan's waits.
    pub event: String,
    /// Top-level fields the payload must hold, with these values (empty: any payload).
    pub matches: serde_json::Map<String, serde_json::Value>,
}

impl WaitSpec {
    /// The first field of `matches` that `payload` lacks or holds with another value.
    pub fn mismatch<'a>(&'a self, payload: &serde_json::Value) -> Option<(&'a str, &'a serde_json::Value)> {
        self.matches.iter().find(|(k, v)| payload.get(k.as_str()) != Some(*v)).map(|(k, v)| (k.as_str(), v))
    }
}

/// An event name: `[a-z0-9_.-]{1,64}`.
pub fn is_event_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}

impl StepSpec {
    /// A step with every default: display name and worker key from the slug, no dependencies,
    /// required, [`DEFAULT_STEP_TIMEOUT_MS`], the default retry policy, no action.
    pub fn new(service: ServiceSlug) -> Self {
        StepSpec {
            display_name: display_name_from_slug(&service),
            worker_key: WorkerKey::from_slug(&service),
            service,
            depends_on: Vec::new(),
            required: true,
            timeout_ms: DEFAULT_STEP_TIMEOUT_MS,
            retry: RetryPolicy::default(),
            action: None,
            heartbeat_timeout_ms: None,
            trigger_rule: TriggerRule::AllSuccess,
            wait: None,
            map: None,
            child: None,
        }
    }

    /// Whether this step waits for an event instead of calling a service.
    pub fn is_wait(&self) -> bool {
        self.wait.is_some()
    }

    /// Whether this step maps over a list (its items call the service; it calls nothing).
    pub fn is_map(&self) -> bool {
        self.map.is_some()
    }

    /// Whether this step starts a child run instead of calling a service.
    pub fn is_run(&self) -> bool {
        self.child.is_some()
    }
}

/// `serp-intelligence` → `Serp Intelligence`.
pub fn display_name_from_slug(slug: &ServiceSlug) -> String {
    slug.as_str()
        .split(['-', '_'])
        .filter(|word| !word.is_empty())
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A validated plan. Serialises as the API shows it (snake_case); deserialises through
/// [`PlanDraft`] and [`validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PlanDraft", into = "PlanDraft")]
pub struct Plan {
    plan_id: PlanId,
    name: String,
    description: String,
    max_run_duration_ms: u64,
    services: Vec<StepSpec>,
    #[serde(default, skip_serializing_if = "Threshold::is_default")]
    min_completed: Threshold,
    /// Step positions, dependencies first.
    #[serde(skip)]
    order: Vec<usize>,
    /// Wave of each step, by position (1 = no dependencies).
    #[serde(skip)]
    waves: Vec<u32>,
}

impl Plan {
    /// The plan's id.
    pub fn plan_id(&self) -> &PlanId {
        &self.plan_id
    }

    /// Human name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Human description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Longest a run of this plan may take.
    pub fn max_run_duration_ms(&self) -> u64 {
        self.max_run_duration_ms
    }

    /// The steps, in plan order.
    pub fn steps(&self) -> &[StepSpec] {
        &self.services
    }

    /// The step called `service`; for an item of a map step (`audit.3`), the map step, whose
    /// spec its attempts follow.
    pub fn step(&self, service: &str) -> Option<&StepSpec> {
        self.position(service).map(|i| &self.services[i]).or_else(|| {
            let (step, _) = map::item_of(service)?;
            self.position(step).map(|i| &self.services[i]).filter(|spec| spec.is_map())
        })
    }

    /// The position of step `service` in plan order.
    pub fn position(&self, service: &str) -> Option<usize> {
        self.services.iter().position(|s| s.service == service)
    }

    /// The step slugs, in plan order.
    pub fn service_slugs(&self) -> Vec<ServiceSlug> {
        self.services.iter().map(|s| s.service.clone()).collect()
    }

    /// Step positions ordered so that every step comes after its dependencies (ties in plan order).
    pub fn topological_order(&self) -> &[usize] {
        &self.order
    }

    /// Each step's wave, by position: 1 for no dependencies, else 1 + the highest wave among
    /// its dependencies. For display and for the `steps.wave` column.
    pub fn waves(&self) -> &[u32] {
        &self.waves
    }

    /// The wave of step `service`.
    pub fn wave(&self, service: &str) -> Option<u32> {
        self.position(service).map(|i| self.waves[i])
    }

    /// Positions of the dependencies of the step at `position`.
    pub fn dependency_positions(&self, position: usize) -> Vec<usize> {
        self.services
            .get(position)
            .map(|step| step.depends_on.iter().filter_map(|d| self.position(d.as_str())).collect())
            .unwrap_or_default()
    }

    /// How many steps must complete for the run to be analysed.
    pub fn min_completed(&self) -> u32 {
        self.min_completed.of(self.services.len())
    }

    /// The draft this plan validates from (every default spelled out).
    pub fn to_draft(&self) -> PlanDraft {
        PlanDraft {
            plan_id: self.plan_id.to_string(),
            name: self.name.clone(),
            description: self.description.clone(),
            max_run_duration_ms: self.max_run_duration_ms,
            services: self
                .services
                .iter()
                .map(|s| StepDraft {
                    service: s.service.to_string(),
                    display_name: Some(s.display_name.clone()),
                    worker_key: Some(s.worker_key.to_string()).filter(|_| !s.is_wait() && !s.is_run()),
                    depends_on: s.depends_on.iter().map(ToString::to_string).collect(),
                    required: s.required,
                    timeout_ms: Some(s.timeout_ms),
                    retry: Some(s.retry.clone()).filter(|_| !s.is_wait()),
                    action: s.action.clone(),
                    heartbeat_timeout_ms: s.heartbeat_timeout_ms,
                    trigger_rule: Some(s.trigger_rule).filter(|r| !r.is_default()),
                    kind: match (&s.wait, &s.child) {
                        (Some(_), _) => Some(WAIT_KIND.to_string()),
                        (None, Some(_)) => Some(RUN_KIND.to_string()),
                        (None, None) => None,
                    },
                    event: s.wait.as_ref().map(|w| w.event.clone()),
                    matches: s.wait.as_ref().map(|w| w.matches.clone()).filter(|m| !m.is_empty()),
                    for_each: s.map.as_ref().map(MapSpec::for_each),
                    max_items: s.map.as_ref().map(|m| m.max_items),
                    max_parallel: s.map.as_ref().map(|m| m.max_parallel),
                    min_completed: s.map.as_ref().map(|m| m.min_completed),
                    plan_id: s.child.as_ref().map(|c| c.plan_id.to_string()),
                    parameters: s.child.as_ref().map(|c| c.parameters.clone()).filter(|p| !p.is_empty()),
                    parameters_from: s.child.as_ref().map(|c| c.parameters_from.clone()).filter(|p| !p.is_empty()),
                })
                .collect(),
            min_completed: Some(self.min_completed).filter(|t| !t.is_default()),
        }
    }
}

impl Plan {
    /// The steps whose worker key is neither a built-in plan's nor in `allowed` (the services
    /// a deployment configures), as problems naming the field.
    pub fn unknown_workers(&self, allowed: &[String]) -> Vec<PlanProblem> {
        let builtin: Vec<String> =
            builtin_plans().iter().flat_map(|p| p.steps().iter().map(|s| s.worker_key.to_string())).collect();
        self.services
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                let key = s.worker_key.as_str();
                if s.is_wait() || s.is_run() {
                    return false; // no service is called
                }
                !builtin.iter().chain(allowed).any(|k| k == key)
            })
            .map(|(index, s)| PlanProblem::UnknownWorker {
                index,
                service: s.service.to_string(),
                worker_key: s.worker_key.to_string(),
            })
            .collect()
    }
}

impl From<Plan> for PlanDraft {
    fn from(plan: Plan) -> Self {
        plan.to_draft()
    }
}

impl Plan {
    /// Whether any step waits for an event.
    pub fn has_waits(&self) -> bool {
        self.services.iter().any(StepSpec::is_wait)
    }

    /// Whether any step maps over a list.
    pub fn has_maps(&self) -> bool {
        self.services.iter().any(StepSpec::is_map)
    }

    /// Whether any step starts a child run.
    pub fn has_runs(&self) -> bool {
        self.services.iter().any(StepSpec::is_run)
    }

    /// The wait step waiting for `event`, if any.
    pub fn wait_for(&self, event: &str) -> Option<&StepSpec> {
        self.services.iter().find(|s| s.wait.as_ref().is_some_and(|w| w.event == event))
    }
}

impl TryFrom<PlanDraft> for Plan {
    type Error = PlanProblems;

    fn try_from(draft: PlanDraft) -> Result<Self, Self::Error> {
        validate(&draft)
    }
}

fn default_required() -> bool {
    true
}

/// How many steps must complete for a run to be worth analysing: a count (`3`) or a share of
/// the plan's steps (`0.6`, rounded up). As soon as it can no longer be reached the run ends
/// `failed`, its remaining steps are cancelled, and no analysis is spent on it. Default 1: a
/// run where no step completed fails.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Threshold {
    /// This many steps.
    Count(u32),
    /// This share of the steps, in (0, 1].
    Ratio(f64),
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold::Count(1)
    }
}

impl Threshold {
    /// The steps that must complete out of `steps`.
    pub fn of(self, steps: usize) -> u32 {
        match self {
            Threshold::Count(count) => count,
            Threshold::Ratio(ratio) => ((ratio * steps as f64).ceil() as u32).max(1),
        }
    }

    fn is_default(&self) -> bool {
        *self == Threshold::Count(1)
    }
}

/// A plan as a client sends it, unvalidated. Unknown fields are rejected (a typo such as
/// `depends` should not silently mean "no dependencies"). `max_duration_ms` (the seed's
/// listing name) and the camelCase spellings (`planId`, `maxRunDurationMs`, `dependsOn`,
/// `timeoutMs`, ...) are accepted too.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(transform = schema::plan_draft, description = schema::PLAN_DRAFT))]
pub struct PlanDraft {
    /// `[a-z0-9_-]{1,64}`.
    #[serde(alias = "planId")]
    #[cfg_attr(feature = "schema", schemars(extend("pattern" = "^[a-z0-9_-]{1,64}$")))]
    pub plan_id: String,
    /// 1..=200 characters.
    #[cfg_attr(feature = "schema", schemars(length(max = 200), extend("pattern" = "\\S")))]
    pub name: String,
    /// At most 2000 characters; default empty.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 2000)))]
    pub description: String,
    /// The longest a run may take: 1 ms to 7 days (604800000 ms).
    #[serde(alias = "max_duration_ms", alias = "maxRunDurationMs", alias = "maxDurationMs")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 604_800_000)))]
    pub max_run_duration_ms: u64,
    /// The steps, 1 to 50.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 50)))]
    pub services: Vec<StepDraft>,
    /// Steps that must complete: a count (3) or a share of the steps (0.6). Once out of reach
    /// the run fails at once (default 1).
    #[serde(default, alias = "minCompleted", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<f64>", extend("exclusiveMinimum" = 0)))]
    pub min_completed: Option<Threshold>,
}

/// A step as a client sends it. Defaults: `display_name` and `worker_key` from the slug,
/// `depends_on` empty, `required` true, `timeout_ms` min(60 s, the run's duration), `retry`
/// the default policy (any of its fields may be given alone), no `action`
/// (`template_ref` is accepted as its name).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(transform = schema::step_draft))]
pub struct StepDraft {
    /// The step's slug, `[a-z0-9_-]{1,64}`.
    #[cfg_attr(feature = "schema", schemars(extend("pattern" = "^[a-z0-9_-]{1,64}$")))]
    pub service: String,
    /// Human name, 1..=200 characters.
    #[serde(default, alias = "displayName", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(max = 200), extend("pattern" = "\\S")))]
    pub display_name: Option<String>,
    /// The worker to call, `[A-Za-z0-9_.-]{1,64}`: a service this deployment configures.
    #[serde(default, alias = "workerKey", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("pattern" = "^[A-Za-z0-9_.-]{1,64}$")))]
    pub worker_key: Option<String>,
    /// Slugs of steps that must complete first.
    #[serde(default, alias = "dependsOn")]
    pub depends_on: Vec<String>,
    /// Whether the diagnosis needs this step.
    #[serde(default = "default_required")]
    pub required: bool,
    /// Longest one attempt may take; 1..=the run's duration.
    #[serde(default, alias = "timeoutMs", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 604_800_000)))]
    pub timeout_ms: Option<u64>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// The handshake action, 1..=128 characters (`template_ref` is the same).
    #[serde(default, alias = "template_ref", alias = "templateRef", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 128)))]
    pub action: Option<String>,
    /// Longest an attempt may go without a heartbeat (a progress answer); 1..=`timeout_ms`.
    /// Absent: no heartbeats are required.
    #[serde(default, alias = "heartbeatTimeoutMs", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub heartbeat_timeout_ms: Option<u64>,
    /// When it runs, given its dependencies (default `all_success`).
    #[serde(default, alias = "triggerRule", skip_serializing_if = "Option::is_none")]
    pub trigger_rule: Option<TriggerRule>,
    /// `service` (the default: call the worker), `wait`: wait for an event delivered to the
    /// run (`event`), up to `timeout_ms` (default: the run's duration), or `run`: start a
    /// child run of `plan_id` and end with its outcome, up to `timeout_ms` (default: the run's
    /// duration). A wait takes no `worker_key`, `retry`, `action` or `heartbeat_timeout_ms`; a
    /// run step no `worker_key`, `action` or `heartbeat_timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["service", "wait", "run", null])))]
    pub kind: Option<String>,
    /// A wait's event name, `[a-z0-9_.-]{1,64}`, unique among the plan's waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("pattern" = "^[a-z0-9_.-]{1,64}$")))]
    pub event: Option<String>,
    /// A wait's condition: top-level fields the event's payload must hold with these values.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<serde_json::Map<String, serde_json::Value>>,
    /// Makes a map step: `<upstream step>.<path>` names a list in the output of one of
    /// `depends_on` (`crawl.pages`; object keys or list indices, dot-separated; the step
    /// alone: the output is the list). The service is called once per element (`item` and
    /// `index` in its input), each element with its own attempts, retries and timeout.
    #[serde(default, alias = "forEach", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("pattern" = "^[a-z0-9_-]{1,64}(\\.[^.]+)*$")))]
    pub for_each: Option<String>,
    /// A map step's most items, 1..=1000 (default 100): a longer list fails the step.
    #[serde(default, alias = "maxItems", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1000)))]
    pub max_items: Option<u32>,
    /// A map step's items running at once, 1..=`max_items` (default 10).
    #[serde(default, alias = "maxParallel", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1000)))]
    pub max_parallel: Option<u32>,
    /// How many of a map step's items must complete for it to complete: a count (at least 1)
    /// or a share in (0, 1]. Default: every item.
    #[serde(default, alias = "minCompleted", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<f64>", extend("exclusiveMinimum" = 0)))]
    pub min_completed: Option<Threshold>,
    /// A run step's plan, `[a-z0-9_-]{1,64}`: a plan the client may use.
    #[serde(default, alias = "planId", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("pattern" = "^[a-z0-9_-]{1,64}$")))]
    pub plan_id: Option<String>,
    /// A run step's static parameters for its child run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// A run step's parameters taken from upstream outputs: name →
    /// `<upstream step>.<dotted.path>`, the step one of `depends_on`.
    #[serde(default, alias = "parametersFrom", skip_serializing_if = "Option::is_none")]
    pub parameters_from: Option<BTreeMap<String, String>>,
}

/// The `kind` of a wait step.
pub const WAIT_KIND: &str = "wait";
/// The `kind` of a step that starts a child run.
pub const RUN_KIND: &str = "run";
/// The `kind` of a step that calls a service (the default).
pub const SERVICE_KIND: &str = "service";

impl StepDraft {
    /// A draft step with only its slug (every other field defaulted).
    pub fn new(service: impl Into<String>) -> Self {
        StepDraft { service: service.into(), required: true, ..StepDraft::default() }
    }
}

/// One thing wrong with a plan draft. `code()` is stable for machines, `field()` is a path into
/// the draft (`services[2].depends_on[0]`), `Display` is for humans.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanProblem {
    /// No steps.
    #[error("the plan has no services")]
    EmptyPlan,
    /// More than [`MAX_STEPS`] steps.
    #[error("the plan has {count} services, at most {max} allowed")]
    TooManySteps {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A malformed plan id, service slug, dependency or worker key.
    #[error("{field}: {error}")]
    InvalidId {
        /// Where.
        field: String,
        /// What.
        error: IdError,
    },
    /// An empty (or blank) name.
    #[error("{field} must not be empty")]
    EmptyText {
        /// Where.
        field: String,
    },
    /// A text longer than its limit.
    #[error("{field} is {len} characters long, at most {max} allowed")]
    TextTooLong {
        /// Where.
        field: String,
        /// Its length in characters.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A zero run duration or step timeout.
    #[error("{field} must be greater than 0")]
    ZeroDuration {
        /// Where.
        field: String,
    },
    /// A run duration above [`MAX_RUN_DURATION_MS`].
    #[error("{field} is {value_ms} ms, at most {max_ms} ms allowed")]
    DurationTooLong {
        /// Where.
        field: String,
        /// The value.
        value_ms: u64,
        /// The limit.
        max_ms: u64,
    },
    /// A step timeout longer than the whole run.
    #[error("service {service}: timeout_ms {timeout_ms} exceeds the plan's max_run_duration_ms {max_run_duration_ms}")]
    StepTimeoutExceedsRun {
        /// Step position.
        index: usize,
        /// Step slug.
        service: String,
        /// Its timeout.
        timeout_ms: u64,
        /// The run's duration.
        max_run_duration_ms: u64,
    },
    /// A heartbeat timeout longer than the attempt's own timeout.
    #[error("service {service}: heartbeat_timeout_ms {heartbeat_timeout_ms} exceeds its timeout_ms {timeout_ms}")]
    HeartbeatExceedsTimeout {
        /// Step position.
        index: usize,
        /// Step slug.
        service: String,
        /// Its heartbeat timeout.
        heartbeat_timeout_ms: u64,
        /// Its attempt timeout.
        timeout_ms: u64,
    },
    /// `min_completed` out of range.
    #[error("min_completed must be a count from 1 to the number of steps ({steps}) or a share in (0, 1]")]
    InvalidThreshold {
        /// The plan's steps.
        steps: usize,
    },
    /// A worker key that is not one of the configured services.
    #[error("service {service}: worker_key {worker_key:?} is not a configured service")]
    UnknownWorker {
        /// Step position.
        index: usize,
        /// Step slug.
        service: String,
        /// The worker key.
        worker_key: String,
    },
    /// The same slug twice.
    #[error("service {service} appears twice (first at services[{first_index}])")]
    DuplicateService {
        /// Position of the repeat.
        index: usize,
        /// The slug.
        service: String,
        /// Position of the first occurrence.
        first_index: usize,
    },
    /// A step depending on itself.
    #[error("service {service} depends on itself")]
    SelfDependency {
        /// Step position.
        index: usize,
        /// Position in its `depends_on`.
        dependency_index: usize,
        /// The slug.
        service: String,
    },
    /// A dependency that is not a step of the plan.
    #[error("service {service} depends on {dependency}, which is not in the plan")]
    UnknownDependency {
        /// Step position.
        index: usize,
        /// Position in its `depends_on`.
        dependency_index: usize,
        /// The step.
        service: String,
        /// The unknown slug.
        dependency: String,
    },
    /// The same dependency listed twice.
    #[error("service {service} lists dependency {dependency} twice")]
    DuplicateDependency {
        /// Step position.
        index: usize,
        /// Position of the repeat in its `depends_on`.
        dependency_index: usize,
        /// The step.
        service: String,
        /// The repeated slug.
        dependency: String,
    },
    /// Steps that depend on each other in a circle. `path` reads "depends on" along the arrows
    /// and ends where it starts, beginning at the step earliest in the plan.
    #[error("dependency cycle: {}", .path.join(" -> "))]
    DependencyCycle {
        /// Position of the first step on the path.
        index: usize,
        /// Position, in that step's `depends_on`, of the edge to the next step.
        dependency_index: usize,
        /// The slugs along the cycle, first repeated at the end: `a -> b -> c -> a`.
        path: Vec<String>,
    },
    /// A `kind` that is neither `service` nor `wait`.
    #[error("service {service}: kind {kind:?} is not one of service, wait, run")]
    UnknownKind {
        /// Step position.
        index: usize,
        /// The step.
        service: String,
        /// The kind given.
        kind: String,
    },
    /// A field a wait step does not take (`worker_key`, `retry`, `action`,
    /// `heartbeat_timeout_ms`), or one only a wait takes (`event`, `match`) on a service step.
    #[error("service {service}: {field} {why}")]
    NotForKind {
        /// Step position.
        index: usize,
        /// The step.
        service: String,
        /// The field.
        field: &'static str,
        /// Why not.
        why: &'static str,
    },
    /// A wait step without a valid event name, or with one another wait already has.
    #[error("service {service}: {why}")]
    InvalidEvent {
        /// Step position.
        index: usize,
        /// The step.
        service: String,
        /// What is wrong.
        why: String,
    },
    /// A map step's `for_each`, `max_items`, `max_parallel` or `min_completed` that cannot be.
    #[error("service {service}: {field} {why}")]
    InvalidMap {
        /// Step position.
        index: usize,
        /// The step.
        service: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// More than [`MAX_RUN_STEPS`] run steps.
    #[error("the plan has {count} run steps, at most {max} allowed (MAX_RUN_STEPS)")]
    TooManyRunSteps {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A run step without a valid `plan_id`, or a bad `parameters_from` entry.
    #[error("service {service}: {field}: {why}")]
    InvalidChild {
        /// Step position.
        index: usize,
        /// The step.
        service: String,
        /// The field, under the step (`plan_id`, `parameters_from.<name>`).
        field: String,
        /// What is wrong.
        why: String,
    },
    /// A bad retry policy field.
    #[error("service {service}: {error}")]
    InvalidRetry {
        /// Step position.
        index: usize,
        /// The step.
        service: String,
        /// What is wrong.
        error: RetryPolicyError,
    },
}

impl PlanProblem {
    /// Stable machine code, e.g. `dependency_cycle`.
    pub fn code(&self) -> &'static str {
        match self {
            PlanProblem::EmptyPlan => "empty_plan",
            PlanProblem::TooManySteps { .. } => "too_many_steps",
            PlanProblem::InvalidId { .. } => "invalid_id",
            PlanProblem::EmptyText { .. } => "empty_text",
            PlanProblem::TextTooLong { .. } => "text_too_long",
            PlanProblem::ZeroDuration { .. } => "zero_duration",
            PlanProblem::DurationTooLong { .. } => "duration_too_long",
            PlanProblem::StepTimeoutExceedsRun { .. } => "step_timeout_exceeds_run",
            PlanProblem::HeartbeatExceedsTimeout { .. } => "heartbeat_exceeds_timeout",
            PlanProblem::UnknownWorker { .. } => "unknown_worker",
            PlanProblem::InvalidThreshold { .. } => "invalid_threshold",
            PlanProblem::DuplicateService { .. } => "duplicate_service",
            PlanProblem::SelfDependency { .. } => "self_dependency",
            PlanProblem::UnknownDependency { .. } => "unknown_dependency",
            PlanProblem::DuplicateDependency { .. } => "duplicate_dependency",
            PlanProblem::DependencyCycle { .. } => "dependency_cycle",
            PlanProblem::InvalidRetry { .. } => "invalid_retry",
            PlanProblem::UnknownKind { .. } => "unknown_kind",
            PlanProblem::NotForKind { .. } => "not_for_kind",
            PlanProblem::InvalidEvent { .. } => "invalid_event",
            PlanProblem::InvalidMap { .. } => "invalid_map",
            PlanProblem::TooManyRunSteps { .. } => "too_many_run_steps",
            PlanProblem::InvalidChild { .. } => "invalid_child",
        }
    }

    /// Path of the offending field in the draft, e.g. `services[2].depends_on[0]`.
    pub fn field(&self) -> String {
        match self {
            PlanProblem::EmptyPlan | PlanProblem::TooManySteps { .. } => "services".to_string(),
            PlanProblem::InvalidId { field, .. }
            | PlanProblem::EmptyText { field }
            | PlanProblem::TextTooLong { field, .. }
            | PlanProblem::ZeroDuration { field }
            | PlanProblem::DurationTooLong { field, .. } => field.clone(),
            PlanProblem::StepTimeoutExceedsRun { index, .. } => format!("services[{index}].timeout_ms"),
            PlanProblem::HeartbeatExceedsTimeout { index, .. } => format!("services[{index}].heartbeat_timeout_ms"),
            PlanProblem::UnknownWorker { index, .. } => format!("services[{index}].worker_key"),
            PlanProblem::InvalidThreshold { .. } => "min_completed".to_string(),
            PlanProblem::DuplicateService { index, .. } => format!("services[{index}].service"),
            PlanProblem::SelfDependency { index, dependency_index, .. }
            | PlanProblem::UnknownDependency { index, dependency_index, .. }
            | PlanProblem::DuplicateDependency { index, dependency_index, .. }
            | PlanProblem::DependencyCycle { index, dependency_index, .. } => {
                format!("services[{index}].depends_on[{dependency_index}]")
            }
            PlanProblem::InvalidRetry { index, error, .. } => format!("services[{index}].retry.{}", error.field()),
            PlanProblem::UnknownKind { index, .. } => format!("services[{index}].kind"),
            PlanProblem::NotForKind { index, field, .. } => format!("services[{index}].{field}"),
            PlanProblem::InvalidEvent { index, .. } => format!("services[{index}].event"),
            PlanProblem::InvalidMap { index, field, .. } => format!("services[{index}].{field}"),
            PlanProblem::TooManyRunSteps { .. } => "services".to_string(),
            PlanProblem::InvalidChild { index, field, .. } => format!("services[{index}].{field}"),
        }
    }
}

impl Serialize for PlanProblem {
    /// `{"code", "field", "message"}`: the shape of an API error's details.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("PlanProblem", 3)?;
        out.serialize_field("code", self.code())?;
        out.serialize_field("field", &self.field())?;
        out.serialize_field("message", &self.to_string())?;
        out.end()
    }
}

/// Every problem found in a plan draft (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct PlanProblems(pub Vec<PlanProblem>);

impl fmt::Display for PlanProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid plan ({} problem{})", self.0.len(), if self.0.len() == 1 { "" } else { "s" })?;
        for (i, problem) in self.0.iter().enumerate() {
            write!(f, "{} {problem}", if i == 0 { ":" } else { ";" })?;
        }
        Ok(())
    }
}

impl std::error::Error for PlanProblems {}

impl PlanProblems {
    /// The machine codes, in order (handy in tests and logs).
    pub fn codes(&self) -> Vec<&'static str> {
        self.0.iter().map(PlanProblem::code).collect()
    }
}

fn invalid_id(field: impl Into<String>, error: IdError) -> PlanProblem {
    PlanProblem::InvalidId { field: field.into(), error }
}

/// Checks a text's length; `must_have_content` rejects empty and blank texts.
fn check_text(field: String, text: &str, max: usize, must_have_content: bool, problems: &mut Vec<PlanProblem>) {
    if must_have_content && text.trim().is_empty() {
        problems.push(PlanProblem::EmptyText { field });
        return;
    }
    let len = text.chars().count();
    if len > max {
        problems.push(PlanProblem::TextTooLong { field, len, max });
    }
}

/// Turns a draft into a valid plan, or reports every problem (in draft order; cycles last).
pub fn validate(draft: &PlanDraft) -> Result<Plan, PlanProblems> {
    let mut problems = Vec::new();

    let plan_id = PlanId::new(draft.plan_id.as_str()).map_err(|e| problems.push(invalid_id("plan_id", e))).ok();
    check_text("name".into(), &draft.name, MAX_NAME_CHARS, true, &mut problems);
    check_text("description".into(), &draft.description, MAX_DESCRIPTION_CHARS, false, &mut problems);
    let max_run = draft.max_run_duration_ms;
    if max_run == 0 {
        problems.push(PlanProblem::ZeroDuration { field: "max_run_duration_ms".into() });
    } else if max_run > MAX_RUN_DURATION_MS {
        problems.push(PlanProblem::DurationTooLong {
            field: "max_run_duration_ms".into(),
            value_ms: max_run,
            max_ms: MAX_RUN_DURATION_MS,
        });
    }
    let run_steps = draft.services.iter().filter(|s| s.kind.as_deref() == Some(RUN_KIND)).count();
    if run_steps > MAX_RUN_STEPS {
        problems.push(PlanProblem::TooManyRunSteps { count: run_steps, max: MAX_RUN_STEPS });
    }
    if draft.services.is_empty() {
        problems.push(PlanProblem::EmptyPlan);
    } else if draft.services.len() > MAX_STEPS {
        problems.push(PlanProblem::TooManySteps { count: draft.services.len(), max: MAX_STEPS });
    }

    // Slugs first: dependencies refer to them.
    let slugs: Vec<Option<ServiceSlug>> = draft
        .services
        .iter()
        .enumerate()
        .map(|(i, step)| {
            ServiceSlug::of_plan_step(step.service.as_str())
                .map_err(|e| problems.push(invalid_id(format!("services[{i}].service"), e)))
                .ok()
        })
        .collect();
    let mut first_position: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, slug) in slugs.iter().enumerate() {
        let Some(slug) = slug else { continue };
        match first_position.get(slug.as_str()) {
            Some(&first_index) => {
                problems.push(PlanProblem::DuplicateService { index: i, service: slug.to_string(), first_index })
            }
            None => {
                first_position.insert(slug.as_str(), i);
            }
        }
    }

    let default_timeout = if max_run == 0 { DEFAULT_STEP_TIMEOUT_MS } else { DEFAULT_STEP_TIMEOUT_MS.min(max_run) };
    let mut specs = Vec::with_capacity(draft.services.len());
    // edges[i] = (position of dependency, index in depends_on), for cycle detection.
    let mut edges: Vec<Vec<(usize, usize)>> = vec![Vec::new(); draft.services.len()];
    for (i, step) in draft.services.iter().enumerate() {
        let label = step.service.as_str();
        let display_name = match &step.display_name {
            Some(name) => {
                check_text(format!("services[{i}].display_name"), name, MAX_NAME_CHARS, true, &mut problems);
                Some(name.clone())
            }
            None => slugs[i].as_ref().map(display_name_from_slug),
        };
        let worker_key = match &step.worker_key {
            Some(key) => WorkerKey::new(key.as_str())
                .map_err(|e| problems.push(invalid_id(format!("services[{i}].worker_key"), e)))
                .ok(),
            None => slugs[i].as_ref().map(WorkerKey::from_slug),
        };
        let run = step.kind.as_deref() == Some(RUN_KIND);
        if !run {
            let given = [
                ("plan_id", step.plan_id.is_some()),
                ("parameters", step.parameters.is_some()),
                ("parameters_from", step.parameters_from.is_some()),
            ];
            refuse_given(&mut problems, i, label, "is for run steps only (kind: run)", &given);
        }
        let wait = match step.kind.as_deref() {
            None | Some(SERVICE_KIND) | Some(RUN_KIND) => {
                let not = |field| PlanProblem::NotForKind {
                    index: i,
                    service: label.to_string(),
                    field,
                    why: "is for wait steps only (kind: wait)",
                };
                if step.event.is_some() {
                    problems.push(not("event"));
                }
                if step.matches.is_some() {
                    problems.push(not("match"));
                }
                false
            }
            Some(WAIT_KIND) => {
                let given = [
                    ("worker_key", step.worker_key.is_some()),
                    ("retry", step.retry.is_some()),
                    ("action", step.action.is_some()),
                    ("heartbeat_timeout_ms", step.heartbeat_timeout_ms.is_some()),
                    ("for_each", step.for_each.is_some()),
                ];
                refuse_given(&mut problems, i, label, "is not for a wait step: it calls no service", &given);
                let invalid = |why: String| PlanProblem::InvalidEvent { index: i, service: label.to_string(), why };
                match step.event.as_deref() {
                    None => problems.push(invalid("a wait step needs an event name".into())),
                    Some(name) if !is_event_name(name) => {
                        problems.push(invalid(format!("event {name:?} is not [a-z0-9_.-]{{1,64}}")))
                    }
                    Some(name) => {
                        let first = draft.services[..i]
                            .iter()
                            .position(|s| s.kind.as_deref() == Some(WAIT_KIND) && s.event.as_deref() == Some(name));
                        if let Some(first) = first {
                            problems.push(invalid(format!("event {name:?} is waited for at services[{first}] too")));
                        }
                    }
                }
                true
            }
            Some(other) => {
                problems.push(PlanProblem::UnknownKind { index: i, service: label.to_string(), kind: other.into() });
                false
            }
        };
        let child = if run { child_of(i, label, step, &mut problems) } else { None };
        let default_timeout = if (wait || run) && max_run > 0 { max_run } else { default_timeout };
        let timeout_ms = step.timeout_ms.unwrap_or(default_timeout);
        if timeout_ms == 0 {
            problems.push(PlanProblem::ZeroDuration { field: format!("services[{i}].timeout_ms") });
        } else if max_run > 0 && timeout_ms > max_run {
            problems.push(PlanProblem::StepTimeoutExceedsRun {
                index: i,
                service: label.to_string(),
                timeout_ms,
                max_run_duration_ms: max_run,
            });
        }
        // A wait has one attempt: its timeout ends it.
        let retry = if wait {
            RetryPolicy { max_attempts: 1, ..RetryPolicy::default() }
        } else {
            step.retry.clone().unwrap_or_default()
        };
        for error in retry.problems() {
            problems.push(PlanProblem::InvalidRetry { index: i, service: label.to_string(), error });
        }
        if let Some(action) = &step.action {
            check_text(format!("services[{i}].action"), action, MAX_ACTION_CHARS, true, &mut problems);
        }
        match step.heartbeat_timeout_ms {
            Some(0) => {
                problems.push(PlanProblem::ZeroDuration { field: format!("services[{i}].heartbeat_timeout_ms") })
            }
            Some(heartbeat) if timeout_ms > 0 && heartbeat > timeout_ms => {
                problems.push(PlanProblem::HeartbeatExceedsTimeout {
                    index: i,
                    service: label.to_string(),
                    heartbeat_timeout_ms: heartbeat,
                    timeout_ms,
                })
            }
            _ => {}
        }

        // Only a service step maps (a wait refuses `for_each` above); without `for_each`,
        // `map_spec` refuses the map's other fields on any step.
        let map = if step.for_each.is_some() && (wait || run) {
            if run {
                problems.push(PlanProblem::NotForKind {
                    index: i,
                    service: label.to_string(),
                    field: "for_each",
                    why: "is not for a run step: a map step calls a service per element",
                });
            }
            None
        } else {
            map_spec(i, step, &mut problems)
        };

        let mut depends_on = Vec::with_capacity(step.depends_on.len());
        let mut seen = BTreeSet::new();
        for (j, dependency) in step.depends_on.iter().enumerate() {
            let dependency_slug = match ServiceSlug::new(dependency.as_str()) {
                Ok(slug) => slug,
                Err(e) => {
                    problems.push(invalid_id(format!("services[{i}].depends_on[{j}]"), e));
                    continue;
                }
            };
            if dependency == label {
                problems.push(PlanProblem::SelfDependency {
                    index: i,
                    dependency_index: j,
                    service: label.to_string(),
                });
            } else if !first_position.contains_key(dependency.as_str()) {
                problems.push(PlanProblem::UnknownDependency {
                    index: i,
                    dependency_index: j,
                    service: label.to_string(),
                    dependency: dependency.clone(),
                });
            } else if !seen.insert(dependency.as_str()) {
                problems.push(PlanProblem::DuplicateDependency {
                    index: i,
                    dependency_index: j,
                    service: label.to_string(),
                    dependency: dependency.clone(),
                });
            } else {
                // Repeated steps keep their own edges out of the graph: their slug maps to the first.
                if first_position.get(label) == Some(&i) {
                    edges[i].push((first_position[dependency.as_str()], j));
                }
                depends_on.push(dependency_slug);
            }
        }

        if let (Some(service), Some(display_name), Some(worker_key)) = (slugs[i].clone(), display_name, worker_key) {
            specs.push(StepSpec {
                service,
                display_name,
                worker_key,
                depends_on,
                required: step.required,
                timeout_ms,
                retry,
                action: step.action.clone(),
                heartbeat_timeout_ms: step.heartbeat_timeout_ms,
                trigger_rule: step.trigger_rule.unwrap_or_default(),
                wait: wait.then(|| WaitSpec {
                    event: step.event.clone().unwrap_or_default(),
                    matches: step.matches.clone().unwrap_or_default(),
                }),
                map,
                child,
            });
        }
    }

    for cycle in find_cycles(&edges) {
        let Some(&(index, dependency_index)) = cycle.first() else { continue };
        let mut path: Vec<String> = cycle.iter().map(|&(node, _)| draft.services[node].service.clone()).collect();
        path.push(draft.services[index].service.clone());
        problems.push(PlanProblem::DependencyCycle { index, dependency_index, path });
    }

    let min_completed = draft.min_completed.unwrap_or_default();
    let invalid_threshold = match min_completed {
        Threshold::Count(count) => count == 0 || count as usize > draft.services.len().max(1),
        Threshold::Ratio(ratio) => !(ratio > 0.0 && ratio <= 1.0),
    };
    if invalid_threshold {
        problems.push(PlanProblem::InvalidThreshold { steps: draft.services.len() });
    }

    match plan_id {
        Some(plan_id) if problems.is_empty() => {
            let order = topological_order(&edges);
            let mut waves = vec![1u32; specs.len()];
            for &node in &order {
                waves[node] = 1 + edges[node].iter().map(|&(dep, _)| waves[dep]).max().unwrap_or(0);
            }
            Ok(Plan {
                plan_id,
                name: draft.name.clone(),
                description: draft.description.clone(),
                max_run_duration_ms: max_run,
                services: specs,
                min_completed,
                order,
                waves,
            })
        }
        _ => Err(PlanProblems(problems)),
    }
}

/// A `not_for_kind` problem, saying `why`, for each field of `given` that the step at `index`
/// gave (`(field, whether it is given)`).
fn refuse_given(
    problems: &mut Vec<PlanProblem>,
    index: usize,
    service: &str,
    why: &'static str,
    given: &[(&'static str, bool)],
) {
    problems.extend(given.iter().filter(|(_, g)| *g).map(|&(field, _)| PlanProblem::NotForKind {
        index,
        service: service.to_string(),
        field,
        why,
    }));
}

/// A map step's spec from its draft (`None` without `for_each`), its problems pushed: each of
/// `max_items`, `max_parallel` and `min_completed` needs `for_each`, and `for_each` must name
/// one of the step's dependencies.
fn map_spec(index: usize, step: &StepDraft, problems: &mut Vec<PlanProblem>) -> Option<MapSpec> {
    let service = step.service.as_str();
    let invalid =
        |field: &'static str, why: String| PlanProblem::InvalidMap { index, service: service.to_string(), field, why };
    let Some(for_each) = &step.for_each else {
        let given = [
            ("max_items", step.max_items.is_some()),
            ("max_parallel", step.max_parallel.is_some()),
            ("min_completed", step.min_completed.is_some()),
        ];
        refuse_given(problems, index, service, "is for map steps only (for_each)", &given);
        return None;
    };
    let before = problems.len();
    let parsed = map::parse_for_each(for_each).map_err(|why| problems.push(invalid("for_each", why))).ok();
    if let Some((from, _)) = &parsed {
        if !step.depends_on.iter().any(|d| d == from.as_str()) {
            problems.push(invalid("for_each", format!("names {from}, which is not one of its depends_on")));
        }
    }
    let max_items = step.max_items.unwrap_or(map::DEFAULT_MAX_ITEMS);
    if !(1..=map::MAX_ITEMS).contains(&max_items) {
        problems.push(invalid("max_items", format!("is {max_items}, not 1..={}", map::MAX_ITEMS)));
    }
    let max_parallel = step.max_parallel.unwrap_or(map::DEFAULT_MAX_PARALLEL.min(max_items.max(1)));
    if max_parallel == 0 || max_parallel > max_items.max(1) {
        problems.push(invalid("max_parallel", format!("is {max_parallel}, not 1..=max_items ({max_items})")));
    }
    let min_completed = step.min_completed.unwrap_or(Threshold::Ratio(1.0));
    let bad = match min_completed {
        Threshold::Count(count) => count == 0 || count > max_items,
        Threshold::Ratio(ratio) => !(ratio > 0.0 && ratio <= 1.0),
    };
    if bad {
        problems.push(invalid(
            "min_completed",
            format!("must be a count from 1 to max_items ({max_items}) or a share in (0, 1]"),
        ));
    }
    let (from, path) = parsed?;
    (problems.len() == before).then_some(MapSpec { from, path, max_items, max_parallel, min_completed })
}

/// A run step's child: its `plan_id` (required) and `parameters_from` (each source a step of
/// its `depends_on`); a run step takes no `worker_key`, `action` or `heartbeat_timeout_ms`.
/// Problems name the field; `None` when there are any.
fn child_of(i: usize, label: &str, step: &StepDraft, problems: &mut Vec<PlanProblem>) -> Option<ChildSpec> {
    let before = problems.len();
    let given = [
        ("worker_key", step.worker_key.is_some()),
        ("action", step.action.is_some()),
        ("heartbeat_timeout_ms", step.heartbeat_timeout_ms.is_some()),
    ];
    refuse_given(problems, i, label, "is not for a run step: it starts a child run, it calls no service", &given);
    let invalid =
        |field: String, why: String| PlanProblem::InvalidChild { index: i, service: label.to_string(), field, why };
    let plan_id = match step.plan_id.as_deref() {
        None => {
            problems.push(invalid("plan_id".into(), "a run step needs the plan_id of its child run".into()));
            None
        }
        Some(id) => PlanId::new(id).map_err(|e| problems.push(invalid("plan_id".into(), e.to_string()))).ok(),
    };
    let parameters_from = step.parameters_from.clone().unwrap_or_default();
    for (name, source) in &parameters_from {
        let field = format!("parameters_from.{name}");
        let upstream = source.split_once('.').map_or(source.as_str(), |(step, _)| step);
        if name.is_empty() || name.len() > 64 {
            problems.push(invalid(field, "a parameter name is 1 to 64 characters".into()));
        } else if !step.depends_on.iter().any(|d| d == upstream) {
            problems.push(invalid(
                field,
                format!("{source:?} names step {upstream:?}, which is not in this step's depends_on"),
            ));
        } else if source.ends_with('.') || source.contains("..") {
            problems.push(invalid(field, format!("{source:?} is not <step>.<dotted.path>")));
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(ChildSpec { plan_id: plan_id?, parameters: step.parameters.clone().unwrap_or_default(), parameters_from })
}

/// Cycles found by a depth-first search, one per back edge. Each cycle is a list of
/// `(step position, index in its depends_on of the edge to the next step)`, rotated to start
/// at the lowest position. Iterative, so a huge draft cannot exhaust the stack.
fn find_cycles(edges: &[Vec<(usize, usize)>]) -> Vec<Vec<(usize, usize)>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; edges.len()];
    let mut cycles = Vec::new();
    for root in 0..edges.len() {
        if marks[root] != Mark::New {
            continue;
        }
        // (node, how many of its edges were followed)
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        marks[root] = Mark::OnPath;
        while let Some(&(node, followed)) = path.last() {
            let Some(&(target, _)) = edges[node].get(followed) else {
                marks[node] = Mark::Done;
                path.pop();
                continue;
            };
            if let Some(top) = path.last_mut() {
                top.1 += 1;
            }
            match marks[target] {
                Mark::New => {
                    marks[target] = Mark::OnPath;
                    path.push((target, 0));
                }
                Mark::OnPath => {
                    let start = path.iter().position(|&(n, _)| n == target).unwrap_or(0);
                    let mut cycle: Vec<(usize, usize)> =
                        path[start..].iter().map(|&(n, followed)| (n, edges[n][followed - 1].1)).collect();
                    if let Some(lowest) = (0..cycle.len()).min_by_key(|&k| cycle[k].0) {
                        cycle.rotate_left(lowest);
                    }
                    cycles.push(cycle);
                }
                Mark::Done => {}
            }
        }
    }
    cycles
}

/// Positions with dependencies first; among steps ready together, plan order. Assumes no cycle.
fn topological_order(edges: &[Vec<(usize, usize)>]) -> Vec<usize> {
    let mut placed = vec![false; edges.len()];
    let mut order = Vec::with_capacity(edges.len());
    while order.len() < edges.len() {
        let before = order.len();
        for node in 0..edges.len() {
            if !placed[node] && edges[node].iter().all(|&(dep, _)| placed[dep]) {
                placed[node] = true;
                order.push(node);
            }
        }
        if order.len() == before {
            break; // a cycle; validate never gets here
        }
    }
    order
}

fn builtin_step(service: &str, display_name: &str, depends_on: &[&str]) -> StepDraft {
    StepDraft {
        display_name: Some(display_name.to_string()),
        depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
        timeout_ms: Some(DEFAULT_STEP_TIMEOUT_MS),
        ..StepDraft::new(service)
    }
}

/// The drafts of the built-in plans (as in the run-orchestration design).
pub fn builtin_drafts() -> Vec<PlanDraft> {
    vec![
        PlanDraft {
            plan_id: STANDARD_PLAN_ID.into(),
            name: "Standard Diagnostic Run".into(),
            description: "Complete SEO diagnostic across all services".into(),
            max_run_duration_ms: 5 * MINUTE_MS,
            services: vec![
                builtin_step("serp-intelligence", "SERP Intelligence", &[]),
                builtin_step("technical-seo", "Technical SEO", &[]),
                builtin_step("domain-authority", "Domain Authority", &[]),
                builtin_step("competitive-intelligence", "Competitive Intelligence", &["serp-intelligence"]),
                builtin_step("vitals-monitor", "Vitals Monitor", &[]),
            ],
            min_completed: None,
        },
        PlanDraft {
            plan_id: QUICK_PLAN_ID.into(),
            name: "Quick Diagnostic Run".into(),
            description: "Fast diagnostic with critical services only".into(),
            max_run_duration_ms: 2 * MINUTE_MS,
            services: vec![
                builtin_step("serp-intelligence", "SERP Intelligence", &[]),
                builtin_step("technical-seo", "Technical SEO", &[]),
                builtin_step("vitals-monitor", "Vitals Monitor", &[]),
            ],
            min_completed: None,
        },
    ]
}

/// When a step runs, given its dependencies (judged in [`crate::trigger`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum TriggerRule {
    /// Every dependency completed.
    #[default]
    AllSuccess,
    /// Every dependency is done, however it ended.
    AllDone,
    /// Every dependency failed.
    AllFailed,
    /// At least one dependency completed.
    OneSuccess,
    /// At least one dependency failed.
    OneFailed,
    /// Every dependency is done and none failed.
    NoneFailed,
    /// Every dependency is done, none failed, and at least one completed.
    NoneFailedMinOneSuccess,
    /// Every dependency is done and none was skipped.
    NoneSkipped,
}

impl TriggerRule {
    /// Whether this is the default rule (left out when a plan is shown).
    pub fn is_default(&self) -> bool {
        *self == TriggerRule::AllSuccess
    }
}

/// The built-in plans: `standard-v1` and `quick-v1`.
pub fn builtin_plans() -> Vec<Plan> {
    // The drafts are constants checked by a test, so nothing is dropped here in practice.
    builtin_drafts().iter().filter_map(|draft| validate(draft).ok()).collect()
}

/// The built-in plan `plan_id`, if there is one.
pub fn builtin_plan(plan_id: &str) -> Option<Plan> {
    builtin_drafts().iter().find(|d| d.plan_id == plan_id).and_then(|d| validate(d).ok())
}

/// A valid plan of `(step, dependencies)` pairs (10-minute runs, default step settings), for
/// the tests of the modules that decide on plans.
#[cfg(test)]
pub(crate) fn test_plan(steps: &[(&str, &[&str])]) -> Plan {
    validate(&PlanDraft {
        plan_id: "p".into(),
        name: "P".into(),
        description: String::new(),
        max_run_duration_ms: 600_000,
        services: steps
            .iter()
            .map(|(service, deps)| StepDraft {
                depends_on: deps.iter().map(|d| d.to_string()).collect(),
                ..StepDraft::new(*service)
            })
            .collect(),
        min_completed: None,
    })
    .unwrap_or_else(|problems| panic!("an invalid test plan: {problems}"))
}

/// What serde's aliases and defaults hide from the derived schemas of a draft.
#[cfg(feature = "schema")]
mod schema {
    use schemars::Schema;
    use serde_json::{json, Value};

    pub const PLAN_DRAFT: &str = "A custom plan: its steps (`services`) and how long a run may take \
        (`max_run_duration_ms`, or its alias `max_duration_ms`: exactly one). Every problem is reported at once \
        (`details.problems`); a plan's graph (each dependency a step of the plan, no cycle) and its worker keys \
        (services the deployment configures) are checked beyond this schema.";

    /// `max_duration_ms` is `max_run_duration_ms` under another name (exactly one is given);
    /// `services` is required (empty, it is reported with the draft's other problems).
    pub fn plan_draft(schema: &mut Schema) {
        alias(schema, "max_run_duration_ms", "max_duration_ms");
        if let Some(Value::Array(required)) = schema.get_mut("required") {
            required.retain(|r| r != "max_run_duration_ms");
            required.push(json!("services"));
        }
        schema
            .insert("oneOf".into(), json!([{"required": ["max_run_duration_ms"]}, {"required": ["max_duration_ms"]}]));
    }

    /// `template_ref` is `action` under another name.
    pub fn step_draft(schema: &mut Schema) {
        alias(schema, "action", "template_ref");
        schema.insert("not".into(), json!({"required": ["action", "template_ref"]}));
    }

    fn alias(schema: &mut Schema, field: &str, alias: &str) {
        if let Some(Value::Object(properties)) = schema.get_mut("properties") {
            if let Some(mut property) = properties.get(field).cloned() {
                property["description"] = json!(format!("The same as `{field}` (give one of them)."));
                properties.insert(alias.to_string(), property);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(service: &str, depends_on: &[&str]) -> StepDraft {
        StepDraft { depends_on: depends_on.iter().map(|d| d.to_string()).collect(), ..StepDraft::new(service) }
    }

    fn draft(services: Vec<StepDraft>) -> PlanDraft {
        PlanDraft {
            plan_id: "custom-v1".into(),
            name: "Custom".into(),
            description: String::new(),
            max_run_duration_ms: 180_000,
            services,
            min_completed: None,
        }
    }

    /// Validates and compares `(code, field)` of every problem, in order.
    fn check(draft: PlanDraft, expected: &[(&str, &str)]) {
        let got: Vec<(String, String)> = match validate(&draft) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.0.iter().map(|p| (p.code().to_string(), p.field())).collect(),
        };
        let want: Vec<(String, String)> = expected.iter().map(|(c, f)| (c.to_string(), f.to_string())).collect();
        assert_eq!(got, want, "problems of {draft:?}");
    }

    #[test]
    fn builtins_are_exactly_the_seed_plans() {
        let plans = builtin_plans();
        assert_eq!(plans.len(), 2, "every built-in draft validates");
        let standard = builtin_plan("standard-v1").unwrap();
        assert_eq!(standard.name(), "Standard Diagnostic Run");
        assert_eq!(standard.description(), "Complete SEO diagnostic across all services");
        assert_eq!(standard.max_run_duration_ms(), 300_000);
        let slugs: Vec<String> = standard.service_slugs().iter().map(ToString::to_string).collect();
        assert_eq!(
            slugs,
            ["serp-intelligence", "technical-seo", "domain-authority", "competitive-intelligence", "vitals-monitor"]
        );
        assert_eq!(standard.step("competitive-intelligence").unwrap().depends_on, ["serp-intelligence"]);
        assert!(standard.steps().iter().all(|s| s.required && s.timeout_ms == 60_000));
        assert_eq!(standard.waves(), [1, 1, 1, 2, 1]);

        let quick = builtin_plan("quick-v1").unwrap();
        assert_eq!(quick.name(), "Quick Diagnostic Run");
        assert_eq!(quick.description(), "Fast diagnostic with critical services only");
        assert_eq!(quick.max_run_duration_ms(), 120_000);
        let slugs: Vec<String> = quick.service_slugs().iter().map(ToString::to_string).collect();
        assert_eq!(slugs, ["serp-intelligence", "technical-seo", "vitals-monitor"]);
        assert!(builtin_plan("nope").is_none());
    }

    #[test]
    fn a_valid_draft_fills_defaults() {
        let plan = validate(&draft(vec![step("serp-intelligence", &[]), step("b", &["serp-intelligence"])])).unwrap();
        let first = &plan.steps()[0];
        assert_eq!(first.display_name, "Serp Intelligence");
        assert_eq!(first.worker_key, "serp_intelligence");
        assert!(first.required);
        assert_eq!(first.timeout_ms, 60_000);
        assert_eq!(first.retry, RetryPolicy::default());
        assert_eq!(plan.topological_order(), [0, 1]);
        assert_eq!(plan.waves(), [1, 2]);
    }

    #[test]
    fn default_step_timeout_is_capped_at_the_run() {
        let mut d = draft(vec![step("a", &[])]);
        d.max_run_duration_ms = 30_000;
        assert_eq!(validate(&d).unwrap().steps()[0].timeout_ms, 30_000);
    }

    #[test]
    fn each_problem_kind_is_reported_with_its_field() {
        check(draft(vec![]), &[("empty_plan", "services")]);
        check(draft(vec![step("a", &[]), step("a", &[])]), &[("duplicate_service", "services[1].service")]);
        check(draft(vec![step("a", &["ghost"])]), &[("unknown_dependency", "services[0].depends_on[0]")]);
        check(draft(vec![step("a", &["a"])]), &[("self_dependency", "services[0].depends_on[0]")]);
        check(
            draft(vec![step("a", &[]), step("b", &["a", "a"])]),
            &[("duplicate_dependency", "services[1].depends_on[1]")],
        );
        check(
            draft(vec![step("a", &[]), StepDraft { timeout_ms: Some(500_000), ..step("b", &[]) }]),
            &[("step_timeout_exceeds_run", "services[1].timeout_ms")],
        );
        check(
            draft(vec![StepDraft { timeout_ms: Some(0), ..step("a", &[]) }]),
            &[("zero_duration", "services[0].timeout_ms")],
        );
        check(
            PlanDraft { max_run_duration_ms: 0, ..draft(vec![step("a", &[])]) },
            &[("zero_duration", "max_run_duration_ms")],
        );
        check(
            PlanDraft { max_run_duration_ms: MAX_RUN_DURATION_MS + 1, ..draft(vec![step("a", &[])]) },
            &[("duration_too_long", "max_run_duration_ms")],
        );
        check(PlanDraft { plan_id: "Custom V1".into(), ..draft(vec![step("a", &[])]) }, &[("invalid_id", "plan_id")]);
        check(PlanDraft { plan_id: String::new(), ..draft(vec![step("a", &[])]) }, &[("invalid_id", "plan_id")]);
        check(PlanDraft { plan_id: "p".repeat(65), ..draft(vec![step("a", &[])]) }, &[("invalid_id", "plan_id")]);
        check(draft(vec![step("Bad Slug", &[])]), &[("invalid_id", "services[0].service")]);
        check(draft(vec![step("a", &["B"])]), &[("invalid_id", "services[0].depends_on[0]")]);
        check(
            draft(vec![StepDraft { worker_key: Some("no/slash".into()), ..step("a", &[]) }]),
            &[("invalid_id", "services[0].worker_key")],
        );
        check(PlanDraft { name: "  ".into(), ..draft(vec![step("a", &[])]) }, &[("empty_text", "name")]);
        check(
            draft(vec![StepDraft { display_name: Some("x".repeat(201)), ..step("a", &[]) }]),
            &[("text_too_long", "services[0].display_name")],
        );
        check(
            draft(vec![StepDraft { action: Some(String::new()), ..step("a", &[]) }]),
            &[("empty_text", "services[0].action")],
        );
        check(draft((0..51).map(|i| step(&format!("s{i}"), &[])).collect()), &[("too_many_steps", "services")]);
        check(
            draft(vec![StepDraft {
                retry: Some(RetryPolicy { max_attempts: 0, backoff_coefficient: 0.5, ..RetryPolicy::default() }),
                ..step("a", &[])
            }]),
            &[
                ("invalid_retry", "services[0].retry.backoff_coefficient"),
                ("invalid_retry", "services[0].retry.max_attempts"),
            ],
        );
    }

    #[test]
    fn three_node_cycle_is_reported_with_its_path() {
        let problems = validate(&draft(vec![step("a", &["b"]), step("b", &["c"]), step("c", &["a"])])).unwrap_err();
        assert_eq!(problems.codes(), ["dependency_cycle"]);
        assert_eq!(problems.0[0].to_string(), "dependency cycle: a -> b -> c -> a");
        assert_eq!(problems.0[0].field(), "services[0].depends_on[0]");
    }

    #[test]
    fn cycle_path_starts_at_the_earliest_step_whatever_the_search_order() {
        // The search starts at x (outside the cycle) and enters the cycle at c.
        let problems =
            validate(&draft(vec![step("x", &["c"]), step("a", &["b"]), step("b", &["c"]), step("c", &["a"])]))
                .unwrap_err();
        assert_eq!(problems.0.len(), 1);
        assert_eq!(problems.0[0].to_string(), "dependency cycle: a -> b -> c -> a");
        assert_eq!(problems.0[0].field(), "services[1].depends_on[0]");
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let mut d = draft(vec![step("a", &["ghost"]), step("a", &[]), step("b", &["c"]), step("c", &["b"])]);
        d.plan_id = "BAD".into();
        d.max_run_duration_ms = 0;
        let problems = validate(&d).unwrap_err();
        assert_eq!(
            problems.codes(),
            ["invalid_id", "zero_duration", "duplicate_service", "unknown_dependency", "dependency_cycle"]
        );
        let message = problems.to_string();
        assert!(message.starts_with("invalid plan (5 problems): plan_id: invalid plan id \"BAD\""), "{message}");
    }

    #[test]
    fn problems_serialise_as_code_field_message() {
        let problems = validate(&draft(vec![step("a", &["a"])])).unwrap_err();
        assert_eq!(
            serde_json::to_value(&problems).unwrap(),
            serde_json::json!([{
                "code": "self_dependency",
                "field": "services[0].depends_on[0]",
                "message": "service a depends on itself",
            }])
        );
    }

    #[test]
    fn api_json_round_trips_and_fills_defaults() {
        let body = r#"{
            "plan_id": "custom-v1", "name": "Custom", "description": "d", "max_run_duration_ms": 180000,
            "services": [
                {"service": "serp-intelligence"},
                {"service": "competitive-intelligence", "depends_on": ["serp-intelligence"],
                 "required": false, "timeout_ms": 30000, "retry": {"max_attempts": 5}, "template_ref": "v1"}
            ]
        }"#;
        let plan: Plan = serde_json::from_str(body).unwrap();
        let second = &plan.steps()[1];
        assert!(!second.required);
        assert_eq!(second.retry.max_attempts, 5);
        assert_eq!(second.action.as_deref(), Some("v1"));
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["services"][0]["display_name"], "Serp Intelligence");
        assert_eq!(json["services"][0]["worker_key"], "serp_intelligence");
        assert_eq!(json["services"][1]["action"], "v1");
        assert!(json.get("order").is_none());
        let again: Plan = serde_json::from_value(json).unwrap();
        assert_eq!(again, plan);
        assert_eq!(validate(&plan.to_draft()).unwrap(), plan);
    }

    #[test]
    fn deserialising_an_invalid_plan_fails_with_its_problems() {
        let error = serde_json::from_str::<Plan>(
            r#"{"plan_id": "p", "name": "P", "max_run_duration_ms": 1000, "services": []}"#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("the plan has no services"), "{error}");
        let typo = serde_json::from_str::<PlanDraft>(
            r#"{"plan_id": "p", "name": "P", "max_run_duration_ms": 1000, "services": [{"service": "a", "depends": []}]}"#,
        );
        assert!(typo.is_err());
    }

    #[test]
    fn a_camel_case_draft_reads_as_its_snake_case_twin() {
        let camel: PlanDraft = serde_json::from_str(
            r#"{"planId": "p", "name": "P", "maxRunDurationMs": 60000, "services": [
                {"service": "a"},
                {"service": "b", "dependsOn": ["a"], "timeoutMs": 5000, "heartbeatTimeoutMs": 1000,
                 "retry": {"maxAttempts": 2}}]}"#,
        )
        .unwrap();
        let snake: PlanDraft = serde_json::from_str(
            r#"{"plan_id": "p", "name": "P", "max_run_duration_ms": 60000, "services": [
                {"service": "a"},
                {"service": "b", "depends_on": ["a"], "timeout_ms": 5000, "heartbeat_timeout_ms": 1000,
                 "retry": {"max_attempts": 2}}]}"#,
        )
        .unwrap();
        assert_eq!(camel, snake);
        assert_eq!(validate(&camel).unwrap().steps()[1].heartbeat_timeout_ms, Some(1000));
    }

    #[test]
    fn a_worker_key_is_a_path_segment_of_a_configured_service() {
        for bad in ["..", "/x", "a/b", "Upper", "a.b", ""] {
            let d = draft(vec![StepDraft { worker_key: Some(bad.into()), ..step("a", &[]) }]);
            let problems = validate(&d).expect_err(bad);
            assert_eq!(problems.0[0].field(), "services[0].worker_key", "{bad:?}");
        }
        let plan = validate(&draft(vec![
            step("technical-seo", &[]),
            StepDraft { worker_key: Some("elsewhere".into()), ..step("b", &[]) },
        ]))
        .unwrap();
        let problems = plan.unknown_workers(&[]);
        assert_eq!(problems.len(), 1, "a built-in plan's worker is allowed: {problems:?}");
        assert_eq!((problems[0].code(), problems[0].field()), ("unknown_worker", "services[1].worker_key".into()));
        assert!(plan.unknown_workers(&["elsewhere".to_string()]).is_empty());
    }

    #[test]
    fn a_heartbeat_timeout_fits_in_its_attempt() {
        let mut d =
            draft(vec![StepDraft { timeout_ms: Some(5_000), heartbeat_timeout_ms: Some(6_000), ..step("a", &[]) }]);
        check(d.clone(), &[("heartbeat_exceeds_timeout", "services[0].heartbeat_timeout_ms")]);
        d.services[0].heartbeat_timeout_ms = Some(0);
        check(d, &[("zero_duration", "services[0].heartbeat_timeout_ms")]);
    }

    #[test]
    fn seed_listing_field_name_is_accepted() {
        let d: PlanDraft =
            serde_json::from_str(r#"{"plan_id": "p", "name": "P", "max_duration_ms": 1000, "services": [{"service": "a", "timeout_ms": 1000}]}"#)
                .unwrap();
        assert_eq!(d.max_run_duration_ms, 1000);
    }

    #[test]
    fn waves_follow_the_longest_dependency_chain() {
        let plan =
            validate(&draft(vec![step("d", &["b", "c"]), step("c", &["a"]), step("b", &[]), step("a", &[])])).unwrap();
        assert_eq!(plan.waves(), [3, 2, 1, 1]);
        assert_eq!(plan.topological_order(), [2, 3, 1, 0]);
        assert_eq!(plan.wave("d"), Some(3));
        assert_eq!(plan.dependency_positions(0), [2, 1]);
    }

    #[test]
    fn a_wait_step_names_its_event_takes_no_service_fields_and_round_trips() {
        let wait = |event: Option<&str>| StepDraft {
            kind: Some(WAIT_KIND.into()),
            event: event.map(Into::into),
            ..StepDraft::new("approve")
        };
        let matched = StepDraft {
            matches: Some(serde_json::json!({"approved": true}).as_object().cloned().unwrap_or_default()),
            ..wait(Some("approval"))
        };
        let plan = validate(&draft(vec![step("a", &[]), StepDraft { depends_on: vec!["a".into()], ..matched }]))
            .expect("valid");
        let spec = plan.step("approve").expect("the wait");
        let w = spec.wait.as_ref().expect("a wait");
        assert_eq!((w.event.as_str(), spec.timeout_ms, spec.retry.max_attempts), ("approval", 180_000, 1));
        assert_eq!(w.mismatch(&serde_json::json!({"approved": true, "by": "x"})), None);
        assert_eq!(w.mismatch(&serde_json::json!({"approved": false})).map(|(k, _)| k), Some("approved"));
        assert!(plan.has_waits() && plan.wait_for("approval").is_some() && plan.wait_for("other").is_none());
        assert!(plan.unknown_workers(&[]).iter().all(|p| p.field() != "services[1].worker_key"));
        let json = serde_json::to_value(&plan).expect("json");
        assert_eq!(json["services"][1]["kind"], "wait");
        assert!(json["services"][1].get("worker_key").is_none() && json["services"][1].get("retry").is_none());
        assert!(json["services"][0].get("kind").is_none(), "a service step stays as it was: {json}");
        let back: Plan = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, plan);

        let problems = |steps: Vec<StepDraft>| -> Vec<(String, String)> {
            validate(&draft(steps))
                .err()
                .map(|p| p.0.iter().map(|p| (p.code().to_string(), p.field())).collect())
                .unwrap_or_default()
        };
        let with_worker =
            StepDraft { worker_key: Some("w".into()), retry: Some(RetryPolicy::default()), ..wait(Some("e")) };
        assert_eq!(
            problems(vec![with_worker]),
            [
                ("not_for_kind".into(), "services[0].worker_key".into()),
                ("not_for_kind".into(), "services[0].retry".into())
            ]
        );
        assert_eq!(problems(vec![wait(None)]), [("invalid_event".into(), "services[0].event".into())]);
        assert_eq!(problems(vec![wait(Some("Bad Name"))]), [("invalid_event".into(), "services[0].event".into())]);
        let second = StepDraft { service: "again".into(), ..wait(Some("e")) };
        assert_eq!(problems(vec![wait(Some("e")), second]), [("invalid_event".into(), "services[1].event".into())]);
        let service_with_event = StepDraft { event: Some("e".into()), ..step("s", &[]) };
        assert_eq!(problems(vec![service_with_event]), [("not_for_kind".into(), "services[0].event".into())]);
        let odd = StepDraft { kind: Some("sleep".into()), ..step("s", &[]) };
        assert_eq!(problems(vec![odd]), [("unknown_kind".into(), "services[0].kind".into())]);
    }

    #[test]
    fn a_map_step_names_a_list_of_one_of_its_dependencies_and_round_trips() {
        let audit = |for_each: &str| StepDraft { for_each: Some(for_each.into()), ..step("audit", &["crawl"]) };
        let plan = validate(&draft(vec![step("crawl", &[]), audit("crawl.pages"), step("report", &["audit"])]))
            .expect("valid");
        let spec = plan.step("audit").expect("the map");
        let map = spec.map.as_ref().expect("a map");
        assert_eq!((map.from.as_str(), map.path.clone()), ("crawl", vec!["pages".to_string()]));
        assert_eq!((map.max_items, map.max_parallel, map.min_completed), (100, 10, Threshold::Ratio(1.0)));
        assert!(plan.has_maps());
        assert_eq!(plan.step("audit.7").map(|s| s.service.as_str()), Some("audit"), "an item follows its map");
        assert!(plan.step("crawl.7").is_none() && plan.step("audit.x").is_none());
        let json = serde_json::to_value(&plan).expect("json");
        assert_eq!(json["services"][1]["for_each"], "crawl.pages");
        assert!(json["services"][0].get("for_each").is_none(), "other steps stay as they were: {json}");
        let back: Plan = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, plan);

        let bounded = StepDraft {
            max_items: Some(5),
            max_parallel: Some(2),
            min_completed: Some(Threshold::Count(3)),
            ..audit("crawl.site.0.links")
        };
        let plan = validate(&draft(vec![step("crawl", &[]), bounded])).expect("valid");
        let map = plan.step("audit").and_then(|s| s.map.clone()).expect("a map");
        assert_eq!((map.path.len(), map.max_items, map.max_parallel, map.needed(5)), (3, 5, 2, 3));

        check(
            draft(vec![step("crawl", &[]), step("other", &[]), StepDraft { ..audit("other.pages") }]),
            &[("invalid_map", "services[2].for_each")],
        );
        check(draft(vec![step("crawl", &[]), audit("crawl..x")]), &[("invalid_map", "services[1].for_each")]);
        let wrong = StepDraft {
            max_items: Some(1001),
            max_parallel: Some(0),
            min_completed: Some(Threshold::Count(0)),
            ..audit("crawl")
        };
        check(
            draft(vec![step("crawl", &[]), wrong]),
            &[
                ("invalid_map", "services[1].max_items"),
                ("invalid_map", "services[1].max_parallel"),
                ("invalid_map", "services[1].min_completed"),
            ],
        );
        let too_parallel = StepDraft { max_items: Some(3), max_parallel: Some(4), ..audit("crawl") };
        check(draft(vec![step("crawl", &[]), too_parallel]), &[("invalid_map", "services[1].max_parallel")]);
        let no_map = StepDraft { max_parallel: Some(2), min_completed: Some(Threshold::Ratio(0.5)), ..step("s", &[]) };
        check(
            draft(vec![no_map]),
            &[("not_for_kind", "services[0].max_parallel"), ("not_for_kind", "services[0].min_completed")],
        );
        let waiting = StepDraft {
            kind: Some(WAIT_KIND.into()),
            event: Some("e".into()),
            for_each: Some("crawl".into()),
            ..step("w", &["crawl"])
        };
        check(draft(vec![step("crawl", &[]), waiting]), &[("not_for_kind", "services[1].for_each")]);
        let child = StepDraft {
            kind: Some(RUN_KIND.into()),
            plan_id: Some("quick-v1".into()),
            for_each: Some("crawl".into()),
            ..step("c", &["crawl"])
        };
        check(draft(vec![step("crawl", &[]), child]), &[("not_for_kind", "services[1].for_each")]);
        let waiting_bounded = StepDraft {
            kind: Some(WAIT_KIND.into()),
            event: Some("e".into()),
            max_parallel: Some(2),
            ..step("w", &[])
        };
        check(draft(vec![waiting_bounded]), &[("not_for_kind", "services[0].max_parallel")]);
        check(draft(vec![step("a.b", &[])]), &[("invalid_id", "services[0].service")]);
    }

    #[test]
    fn a_run_step_names_its_plan_takes_parameters_from_its_dependencies_and_round_trips() {
        let run = |plan_id: Option<&str>| StepDraft {
            kind: Some(RUN_KIND.into()),
            plan_id: plan_id.map(Into::into),
            depends_on: vec!["a".into()],
            ..StepDraft::new("audit")
        };
        let from = |pairs: &[(&str, &str)]| Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let full = StepDraft {
            parameters: serde_json::json!({"depth": 2}).as_object().cloned(),
            parameters_from: from(&[("url", "a.page.url"), ("all", "a")]),
            ..run(Some("deep-audit"))
        };
        let plan = validate(&draft(vec![step("a", &[]), full])).expect("valid");
        let spec = plan.step("audit").expect("the run step");
        let child = spec.child.as_ref().expect("a child");
        assert_eq!((child.plan_id.as_str(), spec.timeout_ms, spec.is_wait()), ("deep-audit", 180_000, false));
        assert!(plan.has_runs() && plan.unknown_workers(&[]).iter().all(|p| p.field() != "services[1].worker_key"));
        let output = serde_json::json!({"page": {"url": "https://x.test"}});
        let parameters = child.parameters_with(|s| (s == "a").then(|| output.clone()));
        assert_eq!(
            serde_json::Value::Object(parameters),
            serde_json::json!({"depth": 2, "url": "https://x.test", "all": output})
        );
        let json = serde_json::to_value(&plan).expect("json");
        assert_eq!(
            (json["services"][1]["kind"].as_str(), json["services"][1]["plan_id"].as_str()),
            (Some("run"), Some("deep-audit"))
        );
        assert!(json["services"][1].get("worker_key").is_none());
        assert!(json["services"][0].get("kind").is_none() && json["services"][0].get("plan_id").is_none());
        let back: Plan = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, plan);

        let problems = |steps: Vec<StepDraft>| -> Vec<(String, String)> {
            validate(&draft(steps))
                .err()
                .map(|p| p.0.iter().map(|p| (p.code().to_string(), p.field())).collect())
                .unwrap_or_default()
        };
        let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(c, f)| (c.to_string(), f.to_string())).collect()
        };
        assert_eq!(problems(vec![step("a", &[]), run(None)]), owned(&[("invalid_child", "services[1].plan_id")]));
        assert_eq!(
            problems(vec![step("a", &[]), run(Some("Bad Plan"))]),
            owned(&[("invalid_child", "services[1].plan_id")])
        );
        let serviced = StepDraft {
            worker_key: Some("w".into()),
            action: Some("x".into()),
            heartbeat_timeout_ms: Some(5),
            event: Some("e".into()),
            ..run(Some("p"))
        };
        assert_eq!(
            problems(vec![step("a", &[]), serviced]),
            owned(&[
                ("not_for_kind", "services[1].event"),
                ("not_for_kind", "services[1].worker_key"),
                ("not_for_kind", "services[1].action"),
                ("not_for_kind", "services[1].heartbeat_timeout_ms"),
            ])
        );
        let undeclared = StepDraft { parameters_from: from(&[("url", "b.url")]), ..run(Some("p")) };
        assert_eq!(
            problems(vec![step("a", &[]), step("b", &[]), undeclared]),
            owned(&[("invalid_child", "services[2].parameters_from.url")])
        );
        let service_with_plan =
            StepDraft { plan_id: Some("p".into()), parameters: Some(Default::default()), ..step("s", &[]) };
        assert_eq!(
            problems(vec![service_with_plan]),
            owned(&[("not_for_kind", "services[0].plan_id"), ("not_for_kind", "services[0].parameters")])
        );
        let many: Vec<StepDraft> = (0..=MAX_RUN_STEPS)
            .map(|i| StepDraft { depends_on: Vec::new(), ..StepDraft { service: format!("r{i}"), ..run(Some("p")) } })
            .collect();
        assert_eq!(problems(many), owned(&[("too_many_run_steps", "services")]));
    }
}
