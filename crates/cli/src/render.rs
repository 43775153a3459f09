//! The API's answers as text for a terminal. Every function is pure: JSON in, text out.

use baton_core::time::Millis;
use serde_json::Value;

/// One step of a run, as `GET /api/orchestration/runs/:id` shows it (run summaries are
/// camelCase, everything else snake_case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepView {
    /// The step's service.
    pub service: String,
    /// Its wave (1 = no dependencies).
    pub wave: i64,
    /// For a `run` step: the child run it started.
    pub child_run_id: Option<String>,
    /// Its status.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// How long it ran, once it has ended.
    pub duration_ms: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
    /// When its current attempt started.
    pub started_at: Option<Millis>,
    /// When it ended.
    pub finished_at: Option<Millis>,
    /// What its service returned (`Null` until it completed).
    pub output: Value,
}

impl StepView {
    /// Whether the step has ended (it will not change again).
    pub fn ended(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "timeout" | "skipped" | "cancelled")
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

fn instant(value: &Value) -> Option<Millis> {
    value.as_str().and_then(|t| Millis::parse_rfc3339(t).ok())
}

/// The steps of a run's JSON (`service_results`), in plan order, each map step followed by
/// its items (`audit.0`, `audit.1`, ...).
pub fn steps_of(run: &Value) -> Vec<StepView> {
    let Some(results) = run["service_results"].as_array() else { return Vec::new() };
    results
        .iter()
        .flat_map(|s| std::iter::once(s).chain(s["items"].as_array().into_iter().flatten()))
        .map(|s| StepView {
            service: text(&s["service"]),
            wave: s["wave"].as_i64().unwrap_or(0),
            child_run_id: s["child_run_id"].as_str().map(str::to_string),
            status: text(&s["status"]),
            attempts: s["attempts"].as_i64().unwrap_or(0),
            duration_ms: s["duration_ms"].as_u64(),
            error: s["error"].as_str().map(str::to_string),
            started_at: instant(&s["started_at"]),
            finished_at: instant(&s["finished_at"]),
            output: s["output"].clone(),
        })
        .collect()
}

/// Longest output shown on a step's line in a report (`--json` prints all of it).
pub const OUTPUT_PREVIEW_CHARS: usize = 100;

/// A step's output on one line, cut to [`OUTPUT_PREVIEW_CHARS`]; `None` when it has none.
pub fn output_preview(step: &StepView) -> Option<String> {
    if step.output.is_null() {
        return None;
    }
    let text = step.output.to_string();
    Some(match text.char_indices().nth(OUTPUT_PREVIEW_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    })
}

/// `ms` for people: `850 ms`, `4.2 s`, `3 min 05 s`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {:02} s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// One step on one line: wave, service, status, attempt, duration (and the error, if any).
pub fn step_line(step: &StepView) -> String {
    let took = step.duration_ms.map(duration).unwrap_or_default();
    let mut line =
        format!("wave {}  {:<28} {:<10} attempt {:<2} {took}", step.wave, step.service, step.status, step.attempts);
    if let Some(error) = &step.error {
        line.push_str(&format!("  ({error})"));
    }
    line.trim_end().to_string()
}

/// The lines for steps that are new in `after` or whose status or attempt changed since `before`.
pub fn step_changes(before: &[StepView], after: &[StepView]) -> Vec<String> {
    after
        .iter()
        .filter(|step| {
            !before.iter().any(|b| b.service == step.service && b.status == step.status && b.attempts == step.attempts)
        })
        .map(step_line)
        .collect()
}

/// Columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n") + "\n"
}

/// The answer to a run request that did not wait.
pub fn run_started(body: &Value) -> String {
    let run_id = text(&body["run_id"]);
    let replay = if body["idempotent_replay"] == Value::Bool(true) { " (already started with this key)" } else { "" };
    format!("run {run_id} {}{replay}\n  follow it: baton show {run_id}\n", text(&body["status"]))
}

/// A run in full: its header, its steps, and its diagnosis.
pub fn run_report(run: &Value) -> String {
    let summary = &run["summary"];
    let mut out = String::new();
    let took = summary["durationMs"].as_u64().map(|ms| format!(" in {}", duration(ms))).unwrap_or_default();
    out.push_str(&format!(
        "run {} {}{took} (plan {}, {})\n",
        text(&summary["runId"]),
        text(&run["status"]),
        text(&summary["planId"]),
        text(&summary["domain"])
    ));
    if let Some(by) = run["acted_by"].as_str() {
        out.push_str(&format!("  started for {} by {by}\n", text(&run["client_id"])));
    }
    if let Some(trace_id) = run["trace_id"].as_str() {
        out.push_str(&format!("  trace {trace_id}\n"));
    }
    if let Some(parent) = run["parent"]["run_id"].as_str() {
        out.push_str(&format!("  child of run {parent} (step {})\n", text(&run["parent"]["step"])));
    }
    if let Some(usd) = run["cost"]["usd"].as_f64() {
        out.push_str(&format!("  cost ${usd:.6}: {}\n", units(&run["cost"]["units"])));
    }
    out.push_str(&format!(
        "  {} services: {} completed, {} failed, {} timed out, {} skipped\n",
        summary["servicesTotal"].as_u64().unwrap_or(0),
        summary["servicesCompleted"].as_u64().unwrap_or(0),
        summary["servicesFailed"].as_u64().unwrap_or(0),
        summary["servicesTimeout"].as_u64().unwrap_or(0),
        summary["servicesSkipped"].as_u64().unwrap_or(0),
    ));
    if let Some(error) = summary["error"].as_str() {
        out.push_str(&format!("  error: {error}\n"));
    }
    out.push_str("steps:\n");
    for step in steps_of(run) {
        out.push_str(&format!("  {}\n", step_line(&step)));
        if let Some(child) = &step.child_run_id {
            out.push_str(&format!("          child run {child}: baton show {child}\n"));
        }
        if let Some(output) = output_preview(&step) {
            out.push_str(&format!("          output {output}\n"));
        }
    }
    out.push_str(&diagnosis(&run["diagnosis"]));
    out
}

/// The diagnosis: status and score, missing services, findings, recommendations.
pub fn diagnosis(diagnosis: &Value) -> String {
    if diagnosis.is_null() {
        return "diagnosis: none yet\n".to_string();
    }
    let mut out = format!(
        "diagnosis: {}, score {}, confidence {:.2}\n",
        text(&diagnosis["overall_status"]),
        text(&diagnosis["overall_score"]),
        diagnosis["confidence"].as_f64().unwrap_or(0.0)
    );
    let missing: Vec<String> = diagnosis["missing_services"].as_array().into_iter().flatten().map(text).collect();
    if !missing.is_empty() {
        out.push_str(&format!("  missing: {}\n", missing.join(", ")));
    }
    for finding in diagnosis["findings"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  [{}] {}: {}\n",
            text(&finding["severity"]),
            text(&finding["title"]),
            text(&finding["detail"])
        ));
    }
    for recommendation in diagnosis["recommendations"].as_array().into_iter().flatten() {
        out.push_str(&format!("  {}. {}\n", text(&recommendation["priority"]), text(&recommendation["action"])));
    }
    if let Some(narrative) = diagnosis["narrative"].as_str() {
        out.push_str(&format!("  {narrative}\n"));
    }
    let llm = &diagnosis["llm"];
    if llm.is_object() {
        let cost = llm["cost_usd"].as_f64().map(|c| format!(", ${c:.6}")).unwrap_or_default();
        out.push_str(&format!(
            "  llm: {} at {}, {} in / {} out tokens{cost}, {} ms, {} attempt(s){}\n",
            text(&llm["model"]),
            text(&llm["provider"]),
            text(&llm["input_tokens"]),
            text(&llm["output_tokens"]),
            text(&llm["latency_ms"]),
            text(&llm["attempts"]),
            if llm["cached"] == Value::Bool(true) { ", from the cache" } else { "" },
        ));
    }
    out
}

/// Width of the timeline's bars, in characters.
pub const TIMELINE_WIDTH: usize = 40;

/// A run's steps on a timeline: each step's bar spans its start to its end (or `now`, while
/// it runs), on a scale from the run's start to its end (or `now`).
pub fn timeline(run: &Value, now: Millis) -> String {
    let summary = &run["summary"];
    let steps = steps_of(run);
    let Some(start) = instant(&summary["startedAt"]) else { return String::new() };
    let end = instant(&summary["completedAt"])
        .or_else(|| steps.iter().filter_map(|s| s.finished_at).max().filter(|_| steps.iter().all(StepView::ended)))
        .unwrap_or(now)
        .max(Millis::new(start.as_u64() + 1));
    let span = end.since(start) as f64;
    let column = |at: Millis| ((at.since(start) as f64 / span) * TIMELINE_WIDTH as f64).round() as usize;
    let mut rows = Vec::new();
    for step in &steps {
        let bar = match step.started_at {
            Some(from) => {
                let to = step.finished_at.unwrap_or(if step.ended() { from } else { end });
                let (a, b) = (column(from).min(TIMELINE_WIDTH), column(to).min(TIMELINE_WIDTH));
                let fill = if step.ended() { '█' } else { '▒' };
                format!("{}{}", " ".repeat(a), fill.to_string().repeat((b - a.min(b)).max(1)))
            }
            None => String::new(),
        };
        rows.push(vec![
            step.wave.to_string(),
            step.service.clone(),
            step.status.clone(),
            step.attempts.to_string(),
            step.duration_ms.map(duration).unwrap_or_default(),
            format!("|{:<w$}|", bar.chars().take(TIMELINE_WIDTH).collect::<String>(), w = TIMELINE_WIDTH),
        ]);
    }
    let mut out = format!("timeline: 0 → {}\n", duration(end.since(start)));
    out.push_str(&table(&["WAVE", "SERVICE", "STATUS", "ATTEMPTS", "TOOK", ""], &rows));
    out
}

/// A run's events, oldest first: time since the first, type, service, and what it says.
pub fn events(body: &Value) -> String {
    let events = body["events"].as_array().cloned().unwrap_or_default();
    let first = events.first().and_then(|e| instant(&e["created_at"]));
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let at = match (first, instant(&e["created_at"])) {
                (Some(first), Some(at)) => format!("+{}", duration(at.since(first))),
                _ => text(&e["created_at"]),
            };
            vec![at, text(&e["type"]), text(&e["service"]), event_gist(&e["payload"])]
        })
        .collect();
    table(&["AT", "TYPE", "SERVICE", "WHAT"], &rows)
}

/// What an event's payload says, in a few words.
fn event_gist(payload: &Value) -> String {
    let mut parts = Vec::new();
    for key in ["status", "overall_status", "error"] {
        if let Some(value) = payload[key].as_str() {
            parts.push(if key == "status" { value.to_string() } else { format!("{key}: {value}") });
        }
    }
    if let Some(by) = payload["acted_by"].as_str() {
        parts.push(format!("acted_by: {by}"));
    }
    if parts.is_empty() {
        let compact = payload.to_string();
        return if compact.chars().count() > 80 {
            compact.chars().take(77).collect::<String>() + "..."
        } else {
            compact
        };
    }
    parts.join(", ")
}

/// Runs as a table.
pub fn runs(runs: &[Value]) -> String {
    if runs.is_empty() {
        return "no runs\n".to_string();
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                text(&r["runId"]),
                text(&r["status"]),
                text(&r["planId"]),
                text(&r["websiteId"]),
                text(&r["domain"]),
                text(&r["startedAt"]),
                r["durationMs"].as_u64().map(duration).unwrap_or_default(),
            ]
        })
        .collect();
    table(&["RUN", "STATUS", "PLAN", "SITE", "DOMAIN", "STARTED", "TOOK"], &rows)
}

/// The answer to a cancel.
pub fn cancelled(body: &Value) -> String {
    let steps: Vec<String> = body["cancelled_steps"].as_array().into_iter().flatten().map(text).collect();
    let which = if steps.is_empty() { String::new() } else { format!(": {}", steps.join(", ")) };
    format!("run {} {}; {} steps cancelled{which}\n", text(&body["run_id"]), text(&body["status"]), steps.len())
}

/// The answer to an event delivered to a run.
pub fn signalled(body: &Value) -> String {
    format!(
        "event {} {} to run {}: step {} is {}\n",
        text(&body["event"]),
        text(&body["status"]).replace('_', " "),
        text(&body["run_id"]),
        text(&body["step"]),
        text(&body["step_status"])
    )
}

/// The answer to a pause or a resume.
pub fn held(body: &Value) -> String {
    let run = text(&body["run_id"]);
    let status = text(&body["status"]);
    if body["changed"] == Value::Bool(false) {
        return format!("run {run} {status}; nothing changed\n");
    }
    let dispatched: Vec<String> = body["dispatched"].as_array().into_iter().flatten().map(text).collect();
    let which = if dispatched.is_empty() { String::new() } else { format!("; dispatched {}", dispatched.join(", ")) };
    format!("run {run} {status}{which}\n")
}

/// The answer to a retry of one run.
pub fn retried(body: &Value) -> String {
    let steps: Vec<String> = body["retried_steps"].as_array().into_iter().flatten().map(text).collect();
    format!(
        "run {} {} again; {} steps start over: {}\n",
        text(&body["run_id"]),
        text(&body["status"]),
        steps.len(),
        steps.join(", ")
    )
}

/// A page of a bulk action: each run acted on, each skipped with its reason.
pub fn bulk_page(page: &Value) -> String {
    let done = if page["action"] == "retry" { "retried" } else { "cancelled" };
    let mut out = String::new();
    for run_id in page["run_ids"].as_array().into_iter().flatten() {
        out.push_str(&format!("{done} {}\n", text(run_id)));
    }
    for skipped in page["skipped"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "skipped {}: {} ({})\n",
            text(&skipped["run_id"]),
            text(&skipped["reason"]),
            text(&skipped["code"])
        ));
    }
    out
}

/// The totals of a bulk action, and how to go on when runs are left.
pub fn bulk_total(total: &Value) -> String {
    let done = if total["action"] == "retry" { "retried" } else { "cancelled" };
    let acted = total["acted"].as_u64().unwrap_or(0);
    let skipped = total["skipped"].as_array().map(Vec::len).unwrap_or(0);
    let runs = if acted == 1 { "run" } else { "runs" };
    let mut out = format!("{done} {acted} {runs}, {skipped} skipped\n");
    if let Some(cursor) = total["next_cursor"].as_str() {
        out.push_str(&format!("more runs may match: continue with --cursor {cursor} (or use --all-pages)\n"));
    }
    out
}

/// Plans as a table.
pub fn plans(body: &Value) -> String {
    let rows: Vec<Vec<String>> = body["plans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                text(&p["plan_id"]),
                text(&p["name"]),
                p["services"].as_array().map(|s| s.len()).unwrap_or(0).to_string(),
                p["max_run_duration_ms"].as_u64().map(duration).unwrap_or_default(),
                text(&p["source"]),
            ]
        })
        .collect();
    table(&["PLAN", "NAME", "STEPS", "MAX DURATION", "SOURCE"], &rows)
}

/// One plan: its header and its steps.
pub fn plan(plan: &Value) -> String {
    let mut out = format!(
        "plan {} ({}): {}\n  max duration {}\n",
        text(&plan["plan_id"]),
        text(&plan["source"]),
        text(&plan["name"]),
        plan["max_run_duration_ms"].as_u64().map(duration).unwrap_or_default()
    );
    if let Some(description) = plan["description"].as_str().filter(|d| !d.is_empty()) {
        out.push_str(&format!("  {description}\n"));
    }
    let rows: Vec<Vec<String>> = plan["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let depends: Vec<String> = s["depends_on"].as_array().into_iter().flatten().map(text).collect();
            vec![
                text(&s["service"]),
                text(&s["worker_key"]),
                if depends.is_empty() { "-".to_string() } else { depends.join(", ") },
                s["timeout_ms"].as_u64().map(duration).unwrap_or_default(),
                s["retry"]["max_attempts"].as_u64().map(|n| n.to_string()).unwrap_or_default(),
                if s["required"] == Value::Bool(true) { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(&["SERVICE", "WORKER", "DEPENDS ON", "TIMEOUT", "ATTEMPTS", "REQUIRED"], &rows));
    out
}

/// The answer to `POST /execute`.
pub fn execution_submitted(body: &Value) -> String {
    let id = text(&body["execution_id"]);
    let mut out = format!("execution {id} {} (priority {})", text(&body["status"]), text(&body["priority"]));
    if let Some(by) = body["acted_by"].as_str() {
        out.push_str(&format!(" for {} by {by}", text(&body["client_id"])));
    }
    out.push('\n');
    if let Some(reason) = body["reason"].as_str() {
        out.push_str(&format!("  waiting: {reason}\n"));
    }
    if let Some(ms) = body["estimated_completion_ms"].as_u64() {
        out.push_str(&format!("  estimated completion: {}\n", duration(ms)));
    }
    out.push_str(&format!("  follow it: baton executions show {id}\n"));
    out
}

/// An execution: status, queue, stages, deliverables and costs.
pub fn execution(body: &Value) -> String {
    let mut out = format!(
        "execution {} {} (template {}, priority {})\n",
        text(&body["execution_id"]),
        text(&body["status"]),
        text(&body["template_name"]),
        text(&body["priority"])
    );
    if let Some(by) = body["acted_by"].as_str() {
        out.push_str(&format!("  submitted for {} by {by}\n", text(&body["client_id"])));
    }
    if let Some(reason) = body["queue"]["reason"].as_str() {
        out.push_str(&format!("  queue: {reason}\n"));
    }
    if let Some(error) = body["error"].as_str() {
        out.push_str(&format!("  error: {error}\n"));
    }
    let rows: Vec<Vec<String>> = body["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            vec![
                text(&s["stage"]),
                text(&s["service"]),
                text(&s["status"]),
                text(&s["attempts"]),
                s["duration_ms"].as_u64().map(duration).unwrap_or_default(),
                s["error"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&table(&["STAGE", "SERVICE", "STATUS", "ATTEMPTS", "TOOK", "ERROR"], &rows));
    }
    let deliverables = body["deliverables"].as_array().map(Vec::len).unwrap_or(0);
    out.push_str(&format!("deliverables: {deliverables}\n"));
    if let Some(tokens) = body["costs"]["tokens"].as_u64() {
        out.push_str(&format!("tokens: {tokens}\n"));
    }
    out
}

/// A run's billed units on one line: `31 D1 rows read, 25 written (8 statements), 1 KV read, ...`.
fn units(units: &Value) -> String {
    let n = |name: &str| units[name].as_u64().unwrap_or(0);
    format!(
        "{} D1 rows read, {} written ({} statements), {} KV reads, {} KV writes, {} queue messages, {} subrequests, {} R2 reads, {} R2 writes",
        n("d1_rows_read"),
        n("d1_rows_written"),
        n("d1_statements"),
        n("kv_reads"),
        n("kv_writes"),
        n("queue_messages"),
        n("subrequests"),
        n("r2_reads"),
        n("r2_writes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run_json(status: &str, completed: Option<&str>) -> Value {
        json!({
            "status": status,
            "client_id": "alice",
            "acted_by": "key-accounts",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "parent": {"run_id": "run_0", "step": "audit"},
            "cost": {"usd": 0.0000251, "units": {"d1_rows_read": 40, "d1_rows_written": 25, "d1_statements": 23,
                     "kv_reads": 0, "kv_writes": 1, "queue_messages": 0, "subrequests": 6}},
            "summary": {
                "runId": "run_1", "planId": "quick-v1", "domain": "example.com", "status": status,
                "startedAt": "2026-01-01T00:00:00.000Z", "completedAt": completed,
                "durationMs": completed.map(|_| 4000), "servicesTotal": 2, "servicesCompleted": 1,
                "servicesFailed": 1, "servicesTimeout": 0, "servicesSkipped": 0, "error": null
            },
            "service_results": [
                {"service": "serp", "wave": 1, "status": "completed", "attempts": 1, "duration_ms": 1500,
                 "started_at": "2026-01-01T00:00:00.000Z", "finished_at": "2026-01-01T00:00:01.500Z", "error": null,
                 "output": {"rank": 3, "keywords": ["a", "b"]}},
                {"service": "seo", "wave": 2, "status": "failed", "attempts": 3, "duration_ms": 2000,
                 "started_at": "2026-01-01T00:00:02.000Z", "finished_at": "2026-01-01T00:00:04.000Z",
                 "error": "Worker config invalid", "child_run_id": "run_2"}
            ],
            "diagnosis": {
                "overall_status": "needs_attention", "overall_score": 61, "confidence": 0.5,
                "missing_services": ["seo"],
                "findings": [{"severity": "high", "title": "Slow LCP", "detail": "LCP 4.1 s"}],
                "recommendations": [{"priority": 1, "action": "Compress images"}],
                "llm": {"provider": "api.openai.com", "model": "gpt-4o-mini", "input_tokens": 1200, "output_tokens": 150,
                        "latency_ms": 850, "attempts": 1, "cost_usd": 0.00027, "cached": false}
            }
        })
    }

    #[test]
    fn durations_read_naturally() {
        for (ms, expected) in [(0, "0 ms"), (850, "850 ms"), (4_200, "4.2 s"), (185_000, "3 min 05 s")] {
            assert_eq!(duration(ms), expected);
        }
    }

    #[test]
    fn a_report_shows_every_step_who_acted_and_the_diagnosis() {
        let report = run_report(&run_json("completed", Some("2026-01-01T00:00:04.000Z")));
        assert!(report.starts_with("run run_1 completed in 4.0 s (plan quick-v1, example.com)\n"), "{report}");
        for expected in [
            "  started for alice by key-accounts\n",
            "  trace 4bf92f3577b34da6a3ce929d0e0e4736\n",
            "  child of run run_0 (step audit)\n",
            "  cost $0.000025: 40 D1 rows read, 25 written (23 statements), 0 KV reads, 1 KV writes, 0 queue messages, 6 subrequests, 0 R2 reads, 0 R2 writes\n",
            "  2 services: 1 completed, 1 failed, 0 timed out, 0 skipped\n",
            "  wave 1  serp                         completed  attempt 1  1.5 s\n          output {\"keywords\":[\"a\",\"b\"],\"rank\":3}\n",
            "  wave 2  seo                          failed     attempt 3  2.0 s  (Worker config invalid)\n          child run run_2: baton show run_2\n",
            "diagnosis: needs_attention, score 61, confidence 0.50\n",
            "  missing: seo\n",
            "  [high] Slow LCP: LCP 4.1 s\n",
            "  1. Compress images\n",
            "  llm: gpt-4o-mini at api.openai.com, 1200 in / 150 out tokens, $0.000270, 850 ms, 1 attempt(s)\n",
        ] {
            assert!(report.contains(expected), "missing {expected:?} in\n{report}");
        }
        assert!(diagnosis(&Value::Null).contains("none yet"));
    }

    #[test]
    fn a_long_output_is_cut_on_a_character_boundary() {
        let step = |output: Value| StepView { output, ..steps_of(&run_json("completed", None))[0].clone() };
        let long = output_preview(&step(json!("é".repeat(300)))).unwrap();
        assert_eq!(long.chars().count(), OUTPUT_PREVIEW_CHARS + 1, "{long}");
        assert!(long.ends_with('…'));
        assert_eq!(output_preview(&step(Value::Null)), None);
    }

    #[test]
    fn only_changed_steps_are_reported_while_following() {
        let before = steps_of(&run_json("running", None));
        let mut after = before.clone();
        after[1].status = "retrying".into();
        after[1].attempts = 2;
        assert_eq!(
            step_changes(&before, &after),
            vec!["wave 2  seo                          retrying   attempt 2  2.0 s  (Worker config invalid)"]
        );
        assert_eq!(step_changes(&[], &before).len(), 2);
        assert!(step_changes(&after, &after).is_empty());
    }

    #[test]
    fn the_timeline_places_each_step_on_the_runs_span() {
        let shown = timeline(&run_json("completed", Some("2026-01-01T00:00:04.000Z")), Millis::new(0));
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], "timeline: 0 → 4.0 s");
        // serp ran in the first 1.5 s of 4 s: 15 of 40 columns from the left edge.
        let serp = lines.iter().find(|l| l.contains("serp")).unwrap();
        assert!(serp.contains(&format!("|{}{}|", "█".repeat(15), " ".repeat(25))), "{serp}");
        let seo = lines.iter().find(|l| l.contains("seo")).unwrap();
        assert!(seo.contains(&format!("|{}{}|", " ".repeat(20), "█".repeat(20))), "{seo}");
    }

    #[test]
    fn events_tables_and_answers_name_what_matters() {
        let body = json!({"events": [
            {"created_at": "2026-01-01T00:00:00.000Z", "type": "run_status", "service": "orchestrator",
             "payload": {"status": "started", "acted_by": "key-accounts"}},
            {"created_at": "2026-01-01T00:00:02.500Z", "type": "diagnosis", "service": "orchestrator",
             "payload": {"overall_status": "healthy"}}
        ]});
        let shown = events(&body);
        assert!(shown.contains("+0 ms   run_status  orchestrator  started, acted_by: key-accounts"), "{shown}");
        assert!(shown.contains("+2.5 s  diagnosis   orchestrator  overall_status: healthy"), "{shown}");
        assert_eq!(table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]), "A    BB\nxyz  1\n");
        assert_eq!(runs(&[]), "no runs\n");
        let cancelled_text =
            cancelled(&json!({"run_id": "run_1", "status": "cancelled", "cancelled_steps": ["a", "b"]}));
        assert_eq!(cancelled_text, "run run_1 cancelled; 2 steps cancelled: a, b\n");
        assert_eq!(held(&json!({"run_id": "run_1", "status": "paused", "changed": true})), "run run_1 paused\n");
        assert_eq!(
            held(&json!({"run_id": "run_1", "status": "running", "changed": true, "dispatched": ["b", "c"]})),
            "run run_1 running; dispatched b, c\n"
        );
        assert_eq!(
            held(&json!({"run_id": "run_1", "status": "running", "changed": false, "dispatched": []})),
            "run run_1 running; nothing changed\n"
        );
        let submitted = execution_submitted(&json!({"execution_id": "exec_1", "status": "queued", "priority": "high",
            "client_id": "alice", "acted_by": "kam", "reason": "waiting for tokens", "estimated_completion_ms": 1200}));
        assert!(submitted
            .starts_with("execution exec_1 queued (priority high) for alice by kam\n  waiting: waiting for tokens\n"));
    }
}
