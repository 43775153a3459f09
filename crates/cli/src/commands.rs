//! Each command: its arguments as a request, the answer as output and an exit code.

use std::io::Read;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton_api::executions::Execute;
use baton_api::runs::StartRun;
use baton_core::time::Millis;
use serde_json::{json, Value};

use crate::api::{Api, ApiError};
use crate::args::{parameters, ActArgs, Command, ExecuteArgs, ExecutionsCommand, PlansCommand, RunArgs, RunsArgs};
use crate::render;
use crate::watch::Watch;

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done (a followed run completed).
    Success = 0,
    /// A followed run ended without completing (failed, timed out, cancelled), or did not end
    /// within `--timeout`.
    RunNotCompleted = 1,
    /// The command line is wrong (clap answers it with this code too).
    Usage = 2,
    /// The API refused the request; its code and message are printed.
    Refused = 3,
    /// The API could not be reached.
    Unreachable = 4,
}

/// How often a followed run is read again.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Pages `runs --plan` reads at most while looking for runs of the plan.
const MAX_PAGES: usize = 10;

/// Where output goes and in which form.
pub struct Out {
    /// JSON answers instead of text.
    pub json: bool,
}

impl Out {
    /// Prints `text`, or the JSON `value` with `--json`.
    fn show(&self, value: &Value, text: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        } else {
            print!("{}", text(value));
        }
    }
}

/// Runs `command` against `api`.
pub fn execute(api: &Api, out: &Out, command: Command) -> Result<Exit, Failure> {
    match command {
        Command::Run(args) => run(api, out, &args),
        Command::Runs(args) => list_runs(api, out, &args),
        Command::Show { run_id } => {
            let path = run_path(&run_id)?;
            let run = api.get(&path)?;
            if out.json {
                let events = api.get(&format!("{path}/events"))?;
                out.show(&json!({ "run": run, "events": events["events"] }), |_| String::new());
            } else {
                print!("{}", render::timeline(&run, now()));
                print!("{}", render::run_report(&run));
            }
            Ok(Exit::Success)
        }
        Command::Events { run_id } => {
            out.show(&api.get(&format!("{}/events", run_path(&run_id)?))?, render::events);
            Ok(Exit::Success)
        }
        Command::Cancel(ActArgs { run_id: Some(run_id), .. }) => {
            out.show(&api.post(&format!("{}/cancel", run_path(&run_id)?), &json!({}))?, render::cancelled);
            Ok(Exit::Success)
        }
        Command::Signal { run_id, name, data } => {
            let payload: Value = match data.as_deref() {
                None => Value::Null,
                Some(text) => serde_json::from_str(text)
                    .map_err(|e| Failure::Usage(format!("--data is not JSON ({e}): {text}")))?,
            };
            let path = format!("{}/events/{}", run_path(&run_id)?, segment(&name, "event name")?);
            out.show(&api.post(&path, &payload)?, render::signalled);
            Ok(Exit::Success)
        }
        Command::Pause { run_id } => {
            out.show(&api.post(&format!("{}/pause", run_path(&run_id)?), &json!({}))?, render::held);
            Ok(Exit::Success)
        }
        Command::Resume { run_id } => {
            out.show(&api.post(&format!("{}/resume", run_path(&run_id)?), &json!({}))?, render::held);
            Ok(Exit::Success)
        }
        Command::Retry(ActArgs { run_id: Some(run_id), .. }) => {
            out.show(&api.post(&format!("{}/retry", run_path(&run_id)?), &json!({}))?, render::retried);
            Ok(Exit::Success)
        }
        Command::Cancel(args) => bulk(api, out, "cancel", &args),
        Command::Retry(args) => bulk(api, out, "retry", &args),
        Command::Plans { command: None } => {
            out.show(&api.get("/api/orchestration/plans")?, render::plans);
            Ok(Exit::Success)
        }
        Command::Plans { command: Some(PlansCommand::Show { plan_id }) } => {
            let body = api.get(&format!("/api/orchestration/plans/{}", segment(&plan_id, "plan id")?))?;
            out.show(&body, |b| render::plan(&b["plan"]));
            Ok(Exit::Success)
        }
        Command::Plans { command: Some(PlansCommand::Create { file }) } => {
            let draft = read_plan(&file)?;
            out.show(&api.post("/api/orchestration/plans", &draft)?, |b| {
                format!("created plan {}\n", b["plan"]["plan_id"].as_str().unwrap_or("?"))
            });
            Ok(Exit::Success)
        }
        Command::Execute(args) => {
            out.show(&api.post("/execute", &execute_body(&args))?, render::execution_submitted);
            Ok(Exit::Success)
        }
        Command::Executions { command: ExecutionsCommand::Show { execution_id } } => {
            out.show(&api.get(&format!("/executions/{}", segment(&execution_id, "execution id")?))?, render::execution);
            Ok(Exit::Success)
        }
        // Checked before any API is set up (main).
        Command::CheckConfig { .. } => Err(Failure::Usage("check-config takes no API".into())),
    }
}

/// `baton cancel` / `baton retry` with a filter: a page of matching runs (every page with
/// `--all-pages`), each acted on by the API; prints what became of each run and the totals.
fn bulk(api: &Api, out: &Out, action: &str, args: &ActArgs) -> Result<Exit, Failure> {
    let filter = args.filter().ok_or_else(|| {
        Failure::Usage(format!(
            "{action} needs a run id or a filter: --status, --plan, --site, --since or --until \
             (or --all for every run of yours)"
        ))
    })?;
    let path = format!("/api/orchestration/runs/{action}");
    let mut cursor = args.cursor.clone().filter(|c| !c.is_empty());
    let mut total = json!({ "success": true, "action": action, "acted": 0, "run_ids": [], "skipped": [] });
    loop {
        let mut body = json!({ "filter": filter, "limit": args.limit });
        if let Some(cursor) = &cursor {
            body["cursor"] = json!(cursor);
        }
        let page = api.post(&path, &body)?;
        if !out.json {
            print!("{}", render::bulk_page(&page));
        }
        total["acted"] = json!(total["acted"].as_u64().unwrap_or(0) + page["acted"].as_u64().unwrap_or(0));
        for key in ["run_ids", "skipped"] {
            let more = page[key].as_array().cloned().unwrap_or_default();
            if let Some(list) = total[key].as_array_mut() {
                list.extend(more);
            }
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() || !args.all_pages {
            break;
        }
    }
    total["next_cursor"] = json!(cursor);
    out.show(&total, render::bulk_total);
    Ok(Exit::Success)
}

/// Why a command stopped early.
#[derive(Debug)]
pub enum Failure {
    /// The API refused or could not be reached.
    Api(ApiError),
    /// An argument the command line could not check (a file, an id).
    Usage(String),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

impl Failure {
    /// The exit code for this failure.
    pub fn exit(&self) -> Exit {
        match self {
            Failure::Api(ApiError::Refused { .. }) => Exit::Refused,
            Failure::Api(ApiError::Unreachable(_)) => Exit::Unreachable,
            Failure::Usage(_) => Exit::Usage,
        }
    }
}

fn now() -> Millis {
    Millis::new(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0))
}

/// An id as one path segment: ids never contain `/`, `?` or `#`.
fn segment<'a>(id: &'a str, what: &str) -> Result<&'a str, Failure> {
    if id.is_empty() || id.contains(['/', '?', '#', '%']) {
        return Err(Failure::Usage(format!("{id:?} is not a {what}")));
    }
    Ok(id)
}

fn run_path(run_id: &str) -> Result<String, Failure> {
    Ok(format!("/api/orchestration/runs/{}", segment(run_id, "run id")?))
}

fn read_plan(file: &str) -> Result<Value, Failure> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map(|_| text)
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|e| Failure::Usage(format!("cannot read {file}: {e}")))?;
    serde_json::from_str(&text).map_err(|e| Failure::Usage(format!("{file} is not JSON: {e}")))
}

/// The body of `POST /api/orchestration/run` for `baton run`.
pub fn run_body(args: &RunArgs) -> Value {
    let body = StartRun {
        website_id: args.site.clone(),
        domain: args.domain.clone(),
        plan_id: args.plan.clone(),
        parameters: (!args.params.is_empty()).then(|| parameters(&args.params)),
        idempotency_key: args.idempotency_key.clone(),
        client_id: args.for_client.clone(),
    };
    serde_json::to_value(body).unwrap_or_default()
}

/// The body of `POST /execute` for `baton execute`.
pub fn execute_body(args: &ExecuteArgs) -> Value {
    let body = Execute {
        template_name: args.template.clone(),
        parameters: (!args.params.is_empty()).then(|| Value::Object(parameters(&args.params))),
        client_id: args.for_client.clone(),
        request_id: args.request_id.clone(),
        priority: args.priority.clone(),
    };
    serde_json::to_value(body).unwrap_or_default()
}

/// How a run that ended makes the command end: 0 only when it completed.
pub fn exit_of_run(status: &str) -> Exit {
    if status == "completed" {
        Exit::Success
    } else {
        Exit::RunNotCompleted
    }
}

fn run(api: &Api, out: &Out, args: &RunArgs) -> Result<Exit, Failure> {
    // `wait=0`: the answer comes at once, whatever the API's default wait; this command waits.
    let started = api.post("/api/orchestration/run?wait=0", &run_body(args))?;
    if !args.wait {
        out.show(&started, render::run_started);
        return Ok(Exit::Success);
    }
    let run_id = started["run_id"].as_str().unwrap_or_default().to_string();
    let path = run_path(&run_id)?;
    let mut watch = Watch::new(&run_id, out.json);
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let run = match api.get(&path) {
            // Over the rate limit while following: wait as told, then look again.
            Err(ApiError::Refused { status: 429, body, .. }) if Instant::now() < deadline => {
                std::thread::sleep(retry_after(&body));
                continue;
            }
            other => other?,
        };
        watch.update(&run);
        if run["terminal"] == Value::Bool(true) {
            watch.finish();
            out.show(&run, render::run_report);
            return Ok(exit_of_run(run["status"].as_str().unwrap_or_default()));
        }
        if Instant::now() >= deadline {
            watch.finish();
            eprintln!("run {run_id} has not ended after {} s; follow it with: baton show {run_id}", args.timeout);
            out.show(&run, render::run_report);
            return Ok(Exit::RunNotCompleted);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// How long a 429 says to wait (`details.retry_after_s`; 5 s when it does not say).
pub fn retry_after(body: &Value) -> Duration {
    Duration::from_secs(body["error"]["details"]["retry_after_s"].as_u64().unwrap_or(5).clamp(1, 60))
}

/// The query of `GET /api/orchestration/runs` for one page.
pub fn runs_query(args: &RunsArgs, cursor: Option<&str>) -> Vec<(&'static str, String)> {
    // Filtering by plan happens here, so pages are read whole.
    let limit = if args.plan.is_some() { 100 } else { args.limit };
    let mut query = vec![("limit", limit.to_string())];
    if let Some(site) = &args.site {
        query.push(("website_id", site.clone()));
    }
    if let Some(status) = &args.status {
        query.push(("status", status.clone()));
    }
    if let Some(cursor) = cursor {
        query.push(("cursor", cursor.to_string()));
    }
    query
}

fn list_runs(api: &Api, out: &Out, args: &RunsArgs) -> Result<Exit, Failure> {
    let limit = args.limit as usize;
    let mut found: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = api.get_with("/api/orchestration/runs", &runs_query(args, cursor.as_deref()))?;
        let runs = page["runs"].as_array().cloned().unwrap_or_default();
        found.extend(runs.into_iter().filter(|r| args.plan.as_deref().is_none_or(|p| r["planId"] == p)));
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if args.plan.is_none() || found.len() >= limit || cursor.is_none() {
            break;
        }
    }
    found.truncate(limit);
    out.show(&json!({ "success": true, "runs": found }), |b| {
        render::runs(b["runs"].as_array().map(Vec::as_slice).unwrap_or_default())
    });
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Cli;
    use clap::Parser;

    fn command(line: &[&str]) -> Command {
        Cli::try_parse_from(line).unwrap().command
    }

    #[test]
    fn a_run_request_carries_only_what_was_given() {
        let Command::Run(args) = command(&[
            "baton",
            "run",
            "--site",
            "s1",
            "--domain",
            "example.com",
            "--param",
            r#"sample_behaviour={"*":{"fail_permanent":true}}"#,
            "--param",
            "depth=2",
            "--for",
            "alice",
            "--wait",
        ]) else {
            panic!("a run")
        };
        assert!(args.wait);
        assert_eq!(
            run_body(&args),
            json!({"website_id": "s1", "domain": "example.com", "client_id": "alice",
                   "parameters": {"sample_behaviour": {"*": {"fail_permanent": true}}, "depth": 2}})
        );
        let Command::Run(args) = command(&["baton", "run", "--site", "s", "--domain", "d", "--plan", "quick-v1"])
        else {
            panic!("a run")
        };
        assert_eq!(run_body(&args), json!({"website_id": "s", "domain": "d", "plan_id": "quick-v1"}));
    }

    #[test]
    fn an_execute_request_carries_template_priority_and_client() {
        let Command::Execute(args) = command(&[
            "baton",
            "execute",
            "course_creation",
            "--priority",
            "high",
            "--for",
            "bob",
            "--param",
            "topic=rust",
        ]) else {
            panic!("an execute")
        };
        assert_eq!(
            execute_body(&args),
            json!({"template_name": "course_creation", "priority": "high", "client_id": "bob", "parameters": {"topic": "rust"}})
        );
    }

    #[test]
    fn only_a_completed_run_succeeds() {
        for (status, expected) in [
            ("completed", Exit::Success),
            ("failed", Exit::RunNotCompleted),
            ("timeout", Exit::RunNotCompleted),
            ("cancelled", Exit::RunNotCompleted),
        ] {
            assert_eq!(exit_of_run(status), expected, "{status}");
        }
        let refused =
            ApiError::Refused { status: 401, code: "unauthorized".into(), message: "m".into(), body: Value::Null };
        assert_eq!(Failure::Api(refused).exit() as i32, 3);
        assert_eq!(Failure::Api(ApiError::Unreachable("down".into())).exit() as i32, 4);
        assert_eq!(Failure::Usage("bad".into()).exit() as i32, 2);
    }

    #[test]
    fn listing_filters_go_in_the_query_and_a_plan_filter_reads_whole_pages() {
        let Command::Runs(args) = command(&["baton", "runs", "--site", "a b", "--status", "failed", "--limit", "5"])
        else {
            panic!("runs")
        };
        assert_eq!(
            runs_query(&args, Some("c1")),
            vec![
                ("limit", "5".into()),
                ("website_id", "a b".into()),
                ("status", "failed".into()),
                ("cursor", "c1".into())
            ]
        );
        let Command::Runs(args) = command(&["baton", "runs", "--plan", "quick-v1", "--limit", "5"]) else {
            panic!("runs")
        };
        assert_eq!(runs_query(&args, None), vec![("limit", "100".into())]);
    }

    #[test]
    fn a_rate_limited_follower_waits_as_told() {
        let refused = json!({"error": {"code": "rate_limited", "details": {"retry_after_s": 7}}});
        assert_eq!(retry_after(&refused), Duration::from_secs(7));
        assert_eq!(retry_after(&Value::Null), Duration::from_secs(5));
    }

    #[test]
    fn ids_must_be_one_path_segment() {
        assert_eq!(run_path("run_1").unwrap(), "/api/orchestration/runs/run_1");
        for bad in ["", "a/b", "a?b", "../x"] {
            assert!(run_path(bad).is_err(), "{bad}");
        }
    }
}
