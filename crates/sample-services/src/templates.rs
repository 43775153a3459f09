//! The key-account service's master templates. `pipeline_stages` is a JSON *string*, as the
//! real service sends it.

use serde_json::json;
use worker::Response;

const TEMPLATES: [(&str, &str, &str); 3] = [
    (
        "course_creation",
        "mt_course_001",
        r#"[{"stage": 1, "worker": "bitware-content-granulator", "template_ref": "course_v1"}]"#,
    ),
    (
        "seo_content_audit",
        "mt_audit_001",
        r#"[{"stage": 1, "worker": "serp-intelligence", "template_ref": "audit_serp_v1"},
            {"stage": 1, "worker": "technical-seo", "template_ref": "audit_tech_v1"},
            {"stage": 2, "worker": "bitware-content-granulator", "template_ref": "audit_report_v1"}]"#,
    ),
    // A broken template, so the orchestrator's handling of malformed stages can be exercised.
    ("broken_template", "mt_broken_001", r#"[{"stage": "one", "worker": 7"#),
];

/// The template names served.
pub fn names() -> Vec<&'static str> {
    TEMPLATES.iter().map(|(name, _, _)| *name).collect()
}

/// `GET /api/master-templates/{name}`.
pub fn get(name: &str) -> worker::Result<Response> {
    match TEMPLATES.iter().find(|(n, _, _)| *n == name) {
        Some((template_name, template_id, stages)) => Response::from_json(&json!({
            "template_id": template_id,
            "template_name": template_name,
            "pipeline_stages": stages,
        })),
        None => Ok(Response::from_json(&json!({
            "success": false,
            "error": { "code": "template_not_found", "message": format!("no master template named {name:?}") },
        }))?
        .with_status(404)),
    }
}
