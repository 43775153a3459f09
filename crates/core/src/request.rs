//! Validation of the two requests that start work: a diagnostic run
//! (`POST /api/orchestration/run`) and a pipeline execution (`POST /execute`). Every problem
//! is reported at once, each naming its field.

use std::fmt;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::ids::{IdError, PlanId, WebsiteId};
use crate::plan::DEFAULT_PLAN_ID;

/// Longest idempotency key / request id.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;
/// Longest domain (RFC 1035).
pub const MAX_DOMAIN_CHARS: usize = 253;
/// Longest domain label.
pub const MAX_LABEL_CHARS: usize = 63;
/// Longest template name.
pub const MAX_TEMPLATE_NAME_CHARS: usize = 64;

/// A run request as a client sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequestDraft {
    /// The website, [`WebsiteId`] rules.
    #[serde(default)]
    pub website_id: String,
    /// A hostname, e.g. `example.com` (lowercased).
    #[serde(default)]
    pub domain: String,
    /// The plan; default `standard-v1`.
    #[serde(default)]
    pub plan_id: Option<String>,
    /// Makes retries of the same request start one run; at most 128 characters.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// A valid run request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    /// The website.
    pub website_id: WebsiteId,
    /// The domain, lowercase, without a trailing dot.
    pub domain: String,
    /// The plan (built-in or custom; existence is the caller's to check).
    pub plan_id: PlanId,
    /// The idempotency key, if any.
    pub idempotency_key: Option<String>,
}

/// How urgently an execution should leave the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// 0.
    Low,
    /// 1 (default).
    #[default]
    Normal,
    /// 2.
    High,
    /// 3.
    Critical,
}

impl Priority {
    /// The rank stored in `execution_queue.priority` (higher leaves first).
    pub fn rank(self) -> i64 {
        match self {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
            Priority::Critical => 3,
        }
    }
}

/// An execution request as a client sends it (`client_id` comes from authentication).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecuteRequestDraft {
    /// The master template's name, `[a-z0-9_-]{1,64}` any case.
    #[serde(default)]
    pub template_name: String,
    /// Inputs for the pipeline; must be an object (default `{}`).
    #[serde(default)]
    pub parameters: Option<Value>,
    /// Makes retries of the same request start one execution; at most 128 characters.
    #[serde(default)]
    pub request_id: Option<String>,
    /// `low`, `normal` (default), `high` or `critical`.
    #[serde(default)]
    pub priority: Option<String>,
}

/// A valid execution request.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteRequest {
    /// The master template's name.
    pub template_name: String,
    /// Inputs for the pipeline.
    pub parameters: Map<String, Value>,
    /// The request id, if any.
    pub request_id: Option<String>,
    /// Queue priority.
    pub priority: Priority,
}

/// One thing wrong with a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestProblem {
    /// A required field is missing or blank.
    #[error("{field} is required")]
    Missing {
        /// The field.
        field: &'static str,
    },
    /// An id-like field that fails its rule.
    #[error("{field}: {error}")]
    InvalidId {
        /// The field.
        field: &'static str,
        /// Why.
        error: IdError,
    },
    /// Not a hostname.
    #[error("domain {value:?} is not a valid hostname: {reason}")]
    InvalidDomain {
        /// The value (cut to 300 characters).
        value: String,
        /// Why.
        reason: String,
    },
    /// Longer than allowed.
    #[error("{field} is {len} characters long, at most {max} allowed")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value outside a fixed set or of the wrong type.
    #[error("{field} must be {expected}, got {value}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// What is accepted.
        expected: &'static str,
        /// What was given (JSON-encoded or quoted, cut to 100 characters).
        value: String,
    },
    /// A filter that names no runs, where acting on every run must be asked for explicitly.
    #[error("{field} names no runs: give at least one of status, plan_id, website_id, created_after, created_before, or \"all\": true to act on every run")]
    EmptyFilter {
        /// The filter.
        field: &'static str,
    },
}

impl RequestProblem {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            RequestProblem::Missing { .. } => "missing_field",
            RequestProblem::InvalidId { .. } => "invalid_id",
            RequestProblem::InvalidDomain { .. } => "invalid_domain",
            RequestProblem::TooLong { .. } => "too_long",
            RequestProblem::InvalidValue { .. } => "invalid_value",
            RequestProblem::EmptyFilter { .. } => "empty_filter",
        }
    }

    /// The field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            RequestProblem::Missing { field }
            | RequestProblem::InvalidId { field, .. }
            | RequestProblem::TooLong { field, .. }
            | RequestProblem::InvalidValue { field, .. }
            | RequestProblem::EmptyFilter { field } => field,
            RequestProblem::InvalidDomain { .. } => "domain",
        }
    }
}

impl Serialize for RequestProblem {
    /// `{"code", "field", "message"}`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("RequestProblem", 3)?;
        out.serialize_field("code", self.code())?;
        out.serialize_field("field", self.field())?;
        out.serialize_field("message", &self.to_string())?;
        out.end()
    }
}

/// Every problem with a request (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RequestProblems(pub Vec<RequestProblem>);

impl fmt::Display for RequestProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let messages: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "invalid request: {}", messages.join("; "))
    }
}

impl std::error::Error for RequestProblems {}

/// A lowercase hostname: labels of `[a-z0-9-]` (1..=63, not starting or ending with `-`),
/// at most 253 characters; one trailing dot is dropped. Schemes, paths and ports are refused
/// (send `example.com`, not `https://example.com/`).
pub fn normalize_domain(raw: &str) -> Result<String, RequestProblem> {
    let invalid = |reason: &str| RequestProblem::InvalidDomain {
        value: raw.chars().take(300).collect(),
        reason: reason.to_string(),
    };
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(RequestProblem::Missing { field: "domain" });
    }
    if trimmed.contains("://") || trimmed.contains('/') {
        return Err(invalid("send the hostname only, without scheme or path"));
    }
    let domain = trimmed.strip_suffix('.').unwrap_or(trimmed).to_ascii_lowercase();
    if domain.len() > MAX_DOMAIN_CHARS {
        return Err(invalid("longer than 253 characters"));
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err(invalid("empty label"));
        }
        if label.len() > MAX_LABEL_CHARS {
            return Err(invalid("a label is longer than 63 characters"));
        }
        if let Some(ch) = label.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
            return Err(invalid(&format!("character {ch:?} is not allowed (a-z, 0-9, - and dots)")));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label starts or ends with '-'"));
        }
    }
    Ok(domain)
}

fn check_key(field: &'static str, key: &Option<String>, problems: &mut Vec<RequestProblem>) -> Option<String> {
    let key = key.as_ref()?;
    let len = key.chars().count();
    if key.is_empty() {
        problems.push(RequestProblem::Missing { field });
    } else if len > MAX_IDEMPOTENCY_KEY_CHARS {
        problems.push(RequestProblem::TooLong { field, len, max: MAX_IDEMPOTENCY_KEY_CHARS });
    }
    Some(key.clone())
}

/// Validates a run request.
pub fn validate_run_request(draft: &RunRequestDraft) -> Result<RunRequest, RequestProblems> {
    let mut problems = Vec::new();
    let website_id = if draft.website_id.trim().is_empty() {
        problems.push(RequestProblem::Missing { field: "website_id" });
        None
    } else {
        WebsiteId::new(draft.website_id.as_str())
            .map_err(|error| problems.push(RequestProblem::InvalidId { field: "website_id", error }))
            .ok()
    };
    let domain = normalize_domain(&draft.domain).map_err(|p| problems.push(p)).ok();
    let plan_id = PlanId::new(draft.plan_id.as_deref().unwrap_or(DEFAULT_PLAN_ID))
        .map_err(|error| problems.push(RequestProblem::InvalidId { field: "plan_id", error }))
        .ok();
    let idempotency_key = check_key("idempotency_key", &draft.idempotency_key, &mut problems);
    match (website_id, domain, plan_id) {
        (Some(website_id), Some(domain), Some(plan_id)) if problems.is_empty() => {
            Ok(RunRequest { website_id, domain, plan_id, idempotency_key })
        }
        _ => Err(RequestProblems(problems)),
    }
}

fn shown(value: &Value) -> String {
    value.to_string().chars().take(100).collect()
}

/// Validates an execution request.
pub fn validate_execute_request(draft: &ExecuteRequestDraft) -> Result<ExecuteRequest, RequestProblems> {
    let mut problems = Vec::new();
    let name = draft.template_name.as_str();
    let len = name.chars().count();
    if name.is_empty() {
        problems.push(RequestProblem::Missing { field: "template_name" });
    } else if len > MAX_TEMPLATE_NAME_CHARS {
        problems.push(RequestProblem::TooLong { field: "template_name", len, max: MAX_TEMPLATE_NAME_CHARS });
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        problems.push(RequestProblem::InvalidValue {
            field: "template_name",
            expected: "letters, digits, '_' or '-'",
            value: format!("{:?}", name.chars().take(100).collect::<String>()),
        });
    }
    let parameters = match &draft.parameters {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(other) => {
            problems.push(RequestProblem::InvalidValue {
                field: "parameters",
                expected: "a JSON object",
                value: shown(other),
            });
            Map::new()
        }
    };
    let request_id = check_key("request_id", &draft.request_id, &mut problems);
    let priority = match draft.priority.as_deref() {
        None => Priority::Normal,
        Some(text) => match serde_json::from_value::<Priority>(Value::String(text.to_string())) {
            Ok(priority) => priority,
            Err(_) => {
                problems.push(RequestProblem::InvalidValue {
                    field: "priority",
                    expected: "low, normal, high or critical",
                    value: format!("{:?}", text.chars().take(100).collect::<String>()),
                });
                Priority::Normal
            }
        },
    };
    if problems.is_empty() {
        Ok(ExecuteRequest { template_name: name.to_string(), parameters, request_id, priority })
    } else {
        Err(RequestProblems(problems))
    }
}

/// How long past its plan's maximum duration a client may wait for a run: its analysis.
pub const WAIT_ANALYSIS_MARGIN_SECONDS: u64 = 60;

/// The longest a client may wait for a run of `plan` (`?wait`): the plan's maximum duration,
/// rounded up to whole seconds, and the time its analysis takes.
pub fn wait_limit_seconds(plan: &crate::plan::Plan) -> u64 {
    plan.max_run_duration_ms().div_ceil(1000) + WAIT_ANALYSIS_MARGIN_SECONDS
}

/// The longest `?wait` accepted, whatever the plan: the longest plan's limit
/// ([`crate::plan::MAX_RUN_DURATION_MS`] and its analysis). A shorter plan's wait is capped.
pub const MAX_WAIT_SECONDS: u64 = crate::plan::MAX_RUN_DURATION_MS / 1000 + WAIT_ANALYSIS_MARGIN_SECONDS;

/// How long to wait for a run of `plan`, in seconds (0: answer at once): what the client
/// asked (`?wait`), else the deployment's default, capped at the plan's limit either way (the
/// run has ended by then, so waiting longer would change nothing).
pub fn wait_seconds(asked: Option<u64>, default: u64, plan: &crate::plan::Plan) -> u64 {
    asked.unwrap_or(default).min(wait_limit_seconds(plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_may_wait_as_long_as_the_plan_runs_and_its_analysis() {
        let standard = crate::plan::builtin_plan("standard-v1").unwrap();
        assert_eq!(wait_limit_seconds(&standard), 360);
        assert_eq!(wait_seconds(Some(300), 0, &standard), 300);
        assert_eq!(wait_seconds(None, 0, &standard), 0);
        assert_eq!(wait_seconds(None, 3600, &standard), 360, "a default is capped");
        assert_eq!(wait_seconds(Some(361), 0, &standard), 360, "so is a longer wait asked");
        assert_eq!(MAX_WAIT_SECONDS, 604_860, "seven days and the analysis");
    }
    use serde_json::json;

    fn run_draft(website_id: &str, domain: &str) -> RunRequestDraft {
        RunRequestDraft { website_id: website_id.into(), domain: domain.into(), ..RunRequestDraft::default() }
    }

    fn check_run(draft: RunRequestDraft, expected: &[(&str, &str)]) {
        let got: Vec<(&str, &str)> = match validate_run_request(&draft) {
            Ok(_) => vec![],
            Err(problems) => problems.0.iter().map(|p| (p.code(), p.field())).collect(),
        };
        assert_eq!(got, expected, "{draft:?}");
    }

    #[test]
    fn run_request_defaults_the_plan_and_lowercases_the_domain() {
        let request = validate_run_request(&run_draft("site_123", "Example.COM.")).unwrap();
        assert_eq!(request.domain, "example.com");
        assert_eq!(request.plan_id, "standard-v1");
        assert_eq!(request.idempotency_key, None);
    }

    #[test]
    fn run_request_problems_name_their_fields() {
        check_run(run_draft("site_123", "example.com"), &[]);
        check_run(run_draft("", ""), &[("missing_field", "website_id"), ("missing_field", "domain")]);
        check_run(run_draft("site/1", "example.com"), &[("invalid_id", "website_id")]);
        check_run(run_draft("s", "https://example.com"), &[("invalid_domain", "domain")]);
        check_run(run_draft("s", "exa mple.com"), &[("invalid_domain", "domain")]);
        check_run(run_draft("s", "-bad.com"), &[("invalid_domain", "domain")]);
        check_run(run_draft("s", "a..b"), &[("invalid_domain", "domain")]);
        check_run(run_draft("s", &format!("{}.com", "a".repeat(64))), &[("invalid_domain", "domain")]);
        check_run(run_draft("s", &vec!["abcdefghi"; 26].join(".")), &[("invalid_domain", "domain")]);
        check_run(
            RunRequestDraft {
                plan_id: Some("Quick".into()),
                idempotency_key: Some("k".repeat(129)),
                ..run_draft("s", "a.io")
            },
            &[("invalid_id", "plan_id"), ("too_long", "idempotency_key")],
        );
    }

    #[test]
    fn domain_messages_say_why() {
        let problem = normalize_domain("https://example.com/").unwrap_err();
        assert_eq!(
            problem.to_string(),
            "domain \"https://example.com/\" is not a valid hostname: send the hostname only, without scheme or path"
        );
        assert_eq!(normalize_domain("localhost").unwrap(), "localhost");
    }

    #[test]
    fn execute_request_validation() {
        let ok = validate_execute_request(&ExecuteRequestDraft {
            template_name: "course_creation".into(),
            parameters: Some(json!({"topic": "React"})),
            request_id: Some("req-1".into()),
            priority: Some("high".into()),
        })
        .unwrap();
        assert_eq!(ok.priority.rank(), 2);
        assert_eq!(ok.parameters["topic"], "React");

        let problems = validate_execute_request(&ExecuteRequestDraft {
            template_name: String::new(),
            parameters: Some(json!([1])),
            request_id: Some(String::new()),
            priority: Some("urgent".into()),
        })
        .unwrap_err();
        let got: Vec<(&str, &str)> = problems.0.iter().map(|p| (p.code(), p.field())).collect();
        assert_eq!(
            got,
            [
                ("missing_field", "template_name"),
                ("invalid_value", "parameters"),
                ("missing_field", "request_id"),
                ("invalid_value", "priority")
            ]
        );
        assert_eq!(problems.0[3].to_string(), "priority must be low, normal, high or critical, got \"urgent\"");
        let defaults =
            validate_execute_request(&ExecuteRequestDraft { template_name: "x".into(), ..Default::default() }).unwrap();
        assert_eq!((defaults.priority, defaults.parameters.len()), (Priority::Normal, 0));
    }
}
