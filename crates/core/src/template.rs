//! Compiling the key-account service's master templates into plans.
//!
//! A master template carries its stages as a JSON **string**:
//! `"[{\"stage\": 1, \"worker\": \"bitware-content-granulator\", \"template_ref\": \"course_v1\"}]"`.
//! Compilation rules:
//! - steps with the same stage number run in parallel; each step depends on every step of
//!   the previous stage number present (gaps are fine: stages 1, 3 → 3 waits for 1);
//! - plan order is stage number, then position in the list;
//! - a step's slug is its worker's name, which must be a valid [`ServiceSlug`]; its
//!   `worker_key` is the worker's name, its `action` the stage's `template_ref`;
//! - a worker used by several stages gets distinct slugs `worker`, `worker-2`, `worker-3`, …
//!   (pipelines legitimately call one worker twice; the worker key still names the worker);
//! - the plan id is `tpl-` + the template name lowercased with `_` → `-`
//!   (`course_creation` → `tpl-course-creation`); the plan name is the template name;
//! - durations come from [`CompileOptions`] (default: 10-minute run, 2-minute steps).
//!
//! The first problem found is reported, naming the stage and field.

use std::collections::BTreeSet;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::ids::{IdError, PlanId, ServiceSlug};
use crate::plan::{validate, Plan, PlanDraft, PlanProblems, StepDraft};
use crate::retry::RetryPolicy;
use crate::time::MINUTE_MS;

/// A compiled pipeline's run duration unless the caller chooses another: 10 minutes.
pub const DEFAULT_PIPELINE_DURATION_MS: u64 = 10 * MINUTE_MS;
/// A compiled stage's timeout unless the caller chooses another: 2 minutes.
pub const DEFAULT_STAGE_TIMEOUT_MS: u64 = 2 * MINUTE_MS;
/// Prefix of compiled plans' ids.
pub const TEMPLATE_PLAN_PREFIX: &str = "tpl-";

/// A master template as the key-account service returns it. `pipeline_stages` is a JSON
/// string; an actual JSON array is accepted too (and kept as its text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterTemplate {
    /// E.g. `mt_course_001`.
    pub template_id: String,
    /// E.g. `course_creation`.
    pub template_name: String,
    /// The stages, as JSON text.
    #[serde(deserialize_with = "stages_as_text")]
    pub pipeline_stages: String,
}

fn stages_as_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(text) => Ok(text),
        other => Ok(other.to_string()),
    }
}

/// One parsed stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineStage {
    /// Stage number, ≥ 1.
    pub stage: u32,
    /// The worker to call (also the step slug).
    pub worker: ServiceSlug,
    /// The template the worker should apply (the handshake `action`).
    pub template_ref: Option<String>,
}

/// Durations and retries of compiled plans.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileOptions {
    /// The run's maximum duration.
    pub max_run_duration_ms: u64,
    /// Each stage's attempt timeout (capped at the run's duration).
    pub step_timeout_ms: u64,
    /// Each stage's retry policy.
    pub retry: RetryPolicy,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            max_run_duration_ms: DEFAULT_PIPELINE_DURATION_MS,
            step_timeout_ms: DEFAULT_STAGE_TIMEOUT_MS,
            retry: RetryPolicy::default(),
        }
    }
}

/// What is wrong with one stage entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageProblem {
    /// The entry is not a JSON object.
    #[error("must be an object, got {found}")]
    NotAnObject {
        /// The entry, JSON-encoded (cut to 100 characters).
        found: String,
    },
    /// `stage` missing, not an integer, or below 1.
    #[error("stage must be an integer >= 1, got {value}")]
    InvalidStageNumber {
        /// The value, JSON-encoded.
        value: String,
    },
    /// No `worker`, or not a string.
    #[error("worker is missing or not a string")]
    MissingWorker,
    /// `worker` is not a valid slug.
    #[error("{error}")]
    InvalidWorker {
        /// Why.
        error: IdError,
    },
    /// `template_ref` present but not a string.
    #[error("template_ref must be a string, got {value}")]
    InvalidTemplateRef {
        /// The value, JSON-encoded.
        value: String,
    },
}

impl StageProblem {
    /// The stage field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            StageProblem::NotAnObject { .. } => "",
            StageProblem::InvalidStageNumber { .. } => "stage",
            StageProblem::MissingWorker | StageProblem::InvalidWorker { .. } => "worker",
            StageProblem::InvalidTemplateRef { .. } => "template_ref",
        }
    }
}

/// A master template that cannot be compiled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    /// `pipeline_stages` is not valid JSON.
    #[error("template {template}: pipeline_stages is not valid JSON: {reason}")]
    MalformedStages {
        /// Template name.
        template: String,
        /// The parser's complaint.
        reason: String,
    },
    /// `pipeline_stages` is JSON but not an array.
    #[error("template {template}: pipeline_stages must be a JSON array, got {found}")]
    StagesNotAList {
        /// Template name.
        template: String,
        /// What it is instead.
        found: &'static str,
    },
    /// `pipeline_stages` is an empty array.
    #[error("template {template}: pipeline_stages is empty")]
    EmptyStages {
        /// Template name.
        template: String,
    },
    /// One stage entry is invalid.
    #[error("template {template}: pipeline_stages[{index}]: {problem}")]
    InvalidStage {
        /// Template name.
        template: String,
        /// Position of the stage entry.
        index: usize,
        /// What is wrong.
        problem: StageProblem,
    },
    /// The template name cannot form a plan id.
    #[error("template {template}: its name cannot form a plan id: {error}")]
    InvalidTemplateName {
        /// Template name.
        template: String,
        /// Why.
        error: IdError,
    },
    /// The compiled plan is invalid (e.g. more than 50 stages, over-long template_ref).
    #[error("template {template}: {problems}")]
    InvalidPlan {
        /// Template name.
        template: String,
        /// The plan's problems.
        problems: PlanProblems,
    },
}

impl TemplateError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            TemplateError::MalformedStages { .. } => "malformed_stages",
            TemplateError::StagesNotAList { .. } => "stages_not_a_list",
            TemplateError::EmptyStages { .. } => "empty_stages",
            TemplateError::InvalidStage { .. } => "invalid_stage",
            TemplateError::InvalidTemplateName { .. } => "invalid_template_name",
            TemplateError::InvalidPlan { .. } => "invalid_plan",
        }
    }

    /// Path of the field at fault, e.g. `pipeline_stages[2].worker`.
    pub fn field(&self) -> String {
        match self {
            TemplateError::InvalidStage { index, problem, .. } => match problem.field() {
                "" => format!("pipeline_stages[{index}]"),
                field => format!("pipeline_stages[{index}].{field}"),
            },
            TemplateError::InvalidTemplateName { .. } => "template_name".to_string(),
            TemplateError::InvalidPlan { problems, .. } => {
                problems.0.first().map(|p| p.field()).unwrap_or_else(|| "pipeline_stages".to_string())
            }
            _ => "pipeline_stages".to_string(),
        }
    }
}

fn shown(value: &Value) -> String {
    value.to_string().chars().take(100).collect()
}

/// Parses the `pipeline_stages` text of template `template_name`.
pub fn parse_stages(template_name: &str, text: &str) -> Result<Vec<PipelineStage>, TemplateError> {
    let template = || template_name.chars().take(100).collect::<String>();
    let value: Value = serde_json::from_str(text)
        .map_err(|e| TemplateError::MalformedStages { template: template(), reason: e.to_string() })?;
    let Value::Array(entries) = value else {
        return Err(TemplateError::StagesNotAList { template: template(), found: crate::json::kind(&value) });
    };
    if entries.is_empty() {
        return Err(TemplateError::EmptyStages { template: template() });
    }
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            parse_stage(entry).map_err(|problem| TemplateError::InvalidStage { template: template(), index, problem })
        })
        .collect()
}

fn parse_stage(entry: &Value) -> Result<PipelineStage, StageProblem> {
    let Value::Object(fields) = entry else {
        return Err(StageProblem::NotAnObject { found: shown(entry) });
    };
    let stage_value = fields.get("stage").unwrap_or(&Value::Null);
    let stage = stage_value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| StageProblem::InvalidStageNumber { value: shown(stage_value) })?;
    let worker = fields.get("worker").and_then(Value::as_str).ok_or(StageProblem::MissingWorker)?;
    let worker = ServiceSlug::new(worker).map_err(|error| StageProblem::InvalidWorker { error })?;
    let template_ref = match fields.get("template_ref") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(other) => return Err(StageProblem::InvalidTemplateRef { value: shown(other) }),
    };
    Ok(PipelineStage { stage, worker, template_ref })
}

/// The plan id of a template: `tpl-{template_name lowercased, _ → -}`.
pub fn plan_id_for(template_name: &str) -> Result<PlanId, TemplateError> {
    let id = format!("{TEMPLATE_PLAN_PREFIX}{}", template_name.to_ascii_lowercase().replace('_', "-"));
    PlanId::new(id).map_err(|error| TemplateError::InvalidTemplateName {
        template: template_name.chars().take(100).collect(),
        error,
    })
}

/// Compiles `template` into a plan (see the module docs for the rules).
pub fn compile(template: &MasterTemplate, options: &CompileOptions) -> Result<Plan, TemplateError> {
    let plan_id = plan_id_for(&template.template_name)?;
    let mut stages = parse_stages(&template.template_name, &template.pipeline_stages)?;
    stages.sort_by_key(|s| s.stage); // stable: list order within a stage

    // Reserve every literal worker name first, so a generated `worker-2` never takes the
    // name of a worker that appears later.
    let mut used: BTreeSet<String> = stages.iter().map(|s| s.worker.to_string()).collect();
    let mut first_use = BTreeSet::new();
    let slugs: Vec<String> = stages
        .iter()
        .map(|s| {
            let name = s.worker.to_string();
            if first_use.insert(name.clone()) {
                return name;
            }
            let mut n = 2;
            while used.contains(&format!("{name}-{n}")) {
                n += 1;
            }
            let slug = format!("{name}-{n}");
            used.insert(slug.clone());
            slug
        })
        .collect();

    let step_timeout_ms = options.step_timeout_ms.min(options.max_run_duration_ms);
    let mut services = Vec::with_capacity(stages.len());
    let mut previous_stage: Vec<String> = Vec::new();
    let mut current_stage: Vec<String> = Vec::new();
    let mut current_number = None;
    for (stage, slug) in stages.iter().zip(&slugs) {
        if current_number != Some(stage.stage) {
            if current_number.is_some() {
                previous_stage = std::mem::take(&mut current_stage);
            }
            current_number = Some(stage.stage);
        }
        services.push(StepDraft {
            service: slug.clone(),
            display_name: Some(format!("Stage {}: {}", stage.stage, stage.worker)),
            worker_key: Some(stage.worker.to_string()),
            depends_on: previous_stage.clone(),
            required: true,
            timeout_ms: Some(step_timeout_ms),
            retry: Some(options.retry.clone()),
            action: stage.template_ref.clone(),
            heartbeat_timeout_ms: None,
            trigger_rule: None,
            ..StepDraft::default()
        });
        current_stage.push(slug.clone());
    }

    let draft = PlanDraft {
        plan_id: plan_id.to_string(),
        name: template.template_name.clone(),
        description: format!(
            "Pipeline compiled from master template {}",
            template.template_id.chars().take(200).collect::<String>()
        ),
        max_run_duration_ms: options.max_run_duration_ms,
        services,
        min_completed: None,
    };
    validate(&draft).map_err(|problems| TemplateError::InvalidPlan {
        template: template.template_name.chars().take(100).collect(),
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(stages: &str) -> MasterTemplate {
        MasterTemplate {
            template_id: "mt_course_001".into(),
            template_name: "course_creation".into(),
            pipeline_stages: stages.into(),
        }
    }

    /// Compiles and lists `(slug, depends_on, action)` per step.
    fn steps_of(stages: &str) -> Vec<(String, Vec<String>, Option<String>)> {
        let plan = compile(&template(stages), &CompileOptions::default()).unwrap();
        plan.steps()
            .iter()
            .map(|s| (s.service.to_string(), s.depends_on.iter().map(ToString::to_string).collect(), s.action.clone()))
            .collect()
    }

    #[test]
    fn seed_template_compiles_to_a_one_step_plan() {
        let json = r#"{"template_id": "mt_course_001", "template_name": "course_creation",
            "pipeline_stages": "[{\"stage\": 1, \"worker\": \"bitware-content-granulator\", \"template_ref\": \"course_v1\"}]"}"#;
        let template: MasterTemplate = serde_json::from_str(json).unwrap();
        let plan = compile(&template, &CompileOptions::default()).unwrap();
        assert_eq!(plan.plan_id(), "tpl-course-creation");
        assert_eq!(plan.name(), "course_creation");
        assert_eq!(plan.max_run_duration_ms(), 600_000);
        let step = &plan.steps()[0];
        assert_eq!(step.service, "bitware-content-granulator");
        assert_eq!(step.worker_key, "bitware-content-granulator");
        assert_eq!(step.action.as_deref(), Some("course_v1"));
        assert_eq!(step.timeout_ms, 120_000);
    }

    #[test]
    fn stages_chain_and_same_stage_runs_in_parallel() {
        let stages = r#"[
            {"stage": 2, "worker": "b", "template_ref": "r2"},
            {"stage": 1, "worker": "a"},
            {"stage": 2, "worker": "c"},
            {"stage": 5, "worker": "d"}
        ]"#;
        let s = |x: &str| x.to_string();
        assert_eq!(
            steps_of(stages),
            vec![
                (s("a"), vec![], None),
                (s("b"), vec![s("a")], Some(s("r2"))),
                (s("c"), vec![s("a")], None),
                (s("d"), vec![s("b"), s("c")], None),
            ]
        );
    }

    #[test]
    fn a_worker_used_twice_gets_distinct_slugs() {
        let stages = r#"[{"stage": 1, "worker": "w"}, {"stage": 2, "worker": "w"}, {"stage": 3, "worker": "w-2"}, {"stage": 4, "worker": "w"}]"#;
        let slugs: Vec<String> = steps_of(stages).into_iter().map(|(slug, _, _)| slug).collect();
        assert_eq!(slugs, ["w", "w-3", "w-2", "w-4"]);
        let plan = compile(&template(stages), &CompileOptions::default()).unwrap();
        assert_eq!(plan.steps()[1].worker_key, "w");
    }

    #[test]
    fn stages_given_as_an_array_are_accepted() {
        let json = r#"{"template_id": "t", "template_name": "x", "pipeline_stages": [{"stage": 1, "worker": "a"}]}"#;
        let template: MasterTemplate = serde_json::from_str(json).unwrap();
        assert_eq!(compile(&template, &CompileOptions::default()).unwrap().steps().len(), 1);
    }

    fn check(stages: &str, code: &str, field: &str) {
        let error = compile(&template(stages), &CompileOptions::default()).unwrap_err();
        assert_eq!((error.code(), error.field().as_str()), (code, field), "{stages}: {error}");
    }

    #[test]
    fn malformed_stages_give_typed_errors() {
        check("[{\"stage\": 1,", "malformed_stages", "pipeline_stages");
        check("{\"stage\": 1}", "stages_not_a_list", "pipeline_stages");
        check("[]", "empty_stages", "pipeline_stages");
        check("[1]", "invalid_stage", "pipeline_stages[0]");
        check(r#"[{"stage": 0, "worker": "a"}]"#, "invalid_stage", "pipeline_stages[0].stage");
        check(r#"[{"stage": -1, "worker": "a"}]"#, "invalid_stage", "pipeline_stages[0].stage");
        check(r#"[{"stage": 1.5, "worker": "a"}]"#, "invalid_stage", "pipeline_stages[0].stage");
        check(r#"[{"worker": "a"}]"#, "invalid_stage", "pipeline_stages[0].stage");
        check(r#"[{"stage": 1, "worker": "a"}, {"stage": 2}]"#, "invalid_stage", "pipeline_stages[1].worker");
        check(r#"[{"stage": 1, "worker": 7}]"#, "invalid_stage", "pipeline_stages[0].worker");
        check(r#"[{"stage": 1, "worker": "Bad Worker"}]"#, "invalid_stage", "pipeline_stages[0].worker");
        check(
            r#"[{"stage": 1, "worker": "a", "template_ref": 3}]"#,
            "invalid_stage",
            "pipeline_stages[0].template_ref",
        );
        let many: Vec<String> = (0..51).map(|i| format!(r#"{{"stage": 1, "worker": "w{i}"}}"#)).collect();
        check(&format!("[{}]", many.join(",")), "invalid_plan", "services");
    }

    #[test]
    fn error_messages_name_template_stage_and_value() {
        let error = compile(&template(r#"[{"stage": 0, "worker": "a"}]"#), &CompileOptions::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "template course_creation: pipeline_stages[0]: stage must be an integer >= 1, got 0"
        );
    }

    #[test]
    fn template_names_that_cannot_form_ids_are_rejected() {
        let bad = MasterTemplate { template_name: "course creation".into(), ..template("[]") };
        let error = compile(&bad, &CompileOptions::default()).unwrap_err();
        assert_eq!((error.code(), error.field().as_str()), ("invalid_template_name", "template_name"));
        assert_eq!(plan_id_for("Course_Creation").unwrap(), "tpl-course-creation");
    }

    #[test]
    fn options_set_durations_and_cap_the_stage_timeout() {
        let options =
            CompileOptions { max_run_duration_ms: 60_000, step_timeout_ms: 90_000, ..CompileOptions::default() };
        let plan = compile(&template(r#"[{"stage": 1, "worker": "a"}]"#), &options).unwrap();
        assert_eq!((plan.max_run_duration_ms(), plan.steps()[0].timeout_ms), (60_000, 60_000));
    }
}
