//! The HTTP API beyond starting runs: plans, listing and cancelling runs, pipeline
//! executions with priority admission.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_e2e::{poll_until, shared_stack, Stack, StackOptions};
use serde_json::{json, Value};

/// A suffix that makes names unique across tests sharing a stack.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{nanos:x}")
}

fn start_run_as(stack: &Stack, client: usize, body: &Value) -> String {
    let r = stack.post_as(stack.token(client), "/api/orchestration/run", body);
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["run_id"].as_str().expect("run_id").to_string()
}

fn run_body(stack: &Stack, run_id: &str) -> Value {
    let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn wait_run_terminal(stack: &Stack, run_id: &str) -> Value {
    poll_until(&format!("run {run_id} to finish"), Duration::from_secs(30), || {
        let body = run_body(stack, run_id);
        (body["terminal"] == true).then_some(body)
    })
}

fn wait_execution_terminal(stack: &Stack, execution_id: &str) -> Value {
    poll_until(&format!("execution {execution_id} to finish"), Duration::from_secs(30), || {
        let r = stack.get_as(stack.token(0), &format!("/executions/{execution_id}"));
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        (body["terminal"] == true).then_some(body)
    })
}

fn error_code(r: &baton_e2e::HttpResponse) -> (u16, String, Value) {
    let body = r.json();
    assert_eq!(body["success"], false, "{body}");
    (r.status, body["error"]["code"].as_str().unwrap_or("").to_string(), body["error"]["details"].clone())
}

fn plan_ids(body: &Value) -> Vec<String> {
    body["plans"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["plan_id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[test]
fn plans_are_listed_created_per_client_validated_and_used_by_runs() {
    let stack = shared_stack();
    let r = stack.get("/api/orchestration/plans");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(plan_ids(&body), ["standard-v1", "quick-v1"]);
    assert_eq!(body["plans"][0]["max_duration_ms"], 300_000);
    assert_eq!(body["plans"][0]["max_run_duration_ms"], 300_000);
    assert_eq!(body["plans"][0]["services"][3]["depends_on"], json!(["serp-intelligence"]));
    assert_eq!(stack.get_as("not-a-token", "/api/orchestration/plans").status, 401);

    let r = stack.get("/api/orchestration/plans/quick-v1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["plan"]["name"], "Quick Diagnostic Run");
    let (status, code, _) = error_code(&stack.get("/api/orchestration/plans/no-such-plan"));
    assert_eq!((status, code.as_str()), (404, "not_found"));

    // Several problems at once, and nothing is stored.
    let plan_id = unique("api-plan");
    let broken = json!({
        "plan_id": plan_id, "name": "Broken", "max_run_duration_ms": 60000,
        "services": [
            {"service": "a", "depends_on": ["b"]},
            {"service": "b", "depends_on": ["a"]},
            {"service": "c", "depends_on": ["ghost"]},
        ],
    });
    let (status, code, details) = error_code(&stack.post_as(stack.token(0), "/api/orchestration/plans", &broken));
    assert_eq!((status, code.as_str()), (400, "invalid_plan"), "{details}");
    let problems: Vec<(String, String)> = details["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| (p["code"].as_str().unwrap_or("").to_string(), p["field"].as_str().unwrap_or("").to_string()))
        .collect();
    assert!(problems.contains(&("unknown_dependency".into(), "services[2].depends_on[0]".into())), "{details}");
    assert!(problems.iter().any(|(c, _)| c == "dependency_cycle"), "{details}");
    assert!(details["problems"][0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(stack.get_as(stack.token(0), &format!("/api/orchestration/plans/{plan_id}")).status, 404);

    let draft = json!({
        "plan_id": plan_id, "name": "Two step", "description": "SERP then technical", "max_run_duration_ms": 120000,
        "services": [
            {"service": "serp-intelligence", "timeout_ms": 30000},
            {"service": "technical-seo", "depends_on": ["serp-intelligence"], "required": false},
        ],
    });
    let r = stack.post_as(stack.token(0), "/api/orchestration/plans", &draft);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["plan"]["services"][1]["depends_on"], json!(["serp-intelligence"]));
    assert_eq!(r.json()["plan"]["services"][1]["required"], false);

    // A duplicate of one's own plan or of a built-in is a conflict; the id is free for another client.
    let (status, code, _) = error_code(&stack.post_as(stack.token(0), "/api/orchestration/plans", &draft));
    assert_eq!((status, code.as_str()), (409, "conflict"));
    let builtin = json!({"plan_id": "quick-v1", "name": "Mine", "max_run_duration_ms": 60000, "services": [{"service": "technical-seo"}]});
    let (status, code, _) = error_code(&stack.post_as(stack.token(0), "/api/orchestration/plans", &builtin));
    assert_eq!((status, code.as_str()), (409, "conflict"));

    let mine = plan_ids(&stack.get_as(stack.token(0), "/api/orchestration/plans").json());
    assert!(mine.contains(&plan_id), "{mine:?}");
    let theirs = plan_ids(&stack.get_as(stack.token(1), "/api/orchestration/plans").json());
    assert!(!theirs.contains(&plan_id), "{theirs:?}");
    assert_eq!(stack.get_as(stack.token(1), &format!("/api/orchestration/plans/{plan_id}")).status, 404);
    let r = stack.get_as(stack.token(0), &format!("/api/orchestration/plans/{plan_id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["plan"]["source"], "custom");

    let run_id =
        start_run_as(stack, 0, &json!({"website_id": "site_plans", "domain": "plans.example", "plan_id": plan_id}));
    let body = wait_run_terminal(stack, &run_id);
    assert_eq!(body["summary"]["status"], "completed", "{body}");
    assert_eq!(body["summary"]["planId"], plan_id.as_str());
    assert_eq!(body["summary"]["servicesTotal"], 2);
    assert_eq!(body["summary"]["servicesCompleted"], 2);
}

fn list(stack: &Stack, client: usize, query: &str) -> Value {
    let r = stack.get_as(stack.token(client), &format!("/api/orchestration/runs?{query}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn listed_ids(body: &Value) -> Vec<String> {
    body["runs"].as_array().expect("runs").iter().map(|r| r["runId"].as_str().unwrap_or("").to_string()).collect()
}

#[test]
fn runs_are_listed_newest_first_a_page_at_a_time_filtered_and_per_client() {
    let stack = shared_stack();
    let website = unique("site_list");
    let quick = |domain: &str| json!({"website_id": website, "domain": domain, "plan_id": "quick-v1"});
    let oldest = start_run_as(stack, 0, &quick("one.example"));
    let middle = start_run_as(stack, 0, &quick("two.example"));
    let newest = start_run_as(
        stack,
        0,
        &json!({"website_id": website, "domain": "three.example", "plan_id": "quick-v1",
                "parameters": {"sample_behaviour": {"*": {"never_answer": true}}}}),
    );
    let foreign = start_run_as(stack, 1, &quick("four.example"));
    wait_run_terminal(stack, &oldest);
    wait_run_terminal(stack, &middle);
    let r = stack.post_as(stack.token(0), &format!("/api/orchestration/runs/{newest}/cancel"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());

    // Pages of one, newest first, each cursor leading to the next run.
    let mut seen = Vec::new();
    let mut query = format!("website_id={website}&limit=1");
    loop {
        let page = list(stack, 0, &query);
        let ids = listed_ids(&page);
        assert_eq!(ids.len(), 1, "{page}");
        seen.extend(ids);
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("website_id={website}&limit=1&cursor={cursor}"),
            None => break,
        }
        assert!(seen.len() <= 3, "more pages than runs: {seen:?}");
    }
    assert_eq!(seen, [newest.clone(), middle.clone(), oldest.clone()]);

    let all = list(stack, 0, &format!("website_id={website}"));
    assert_eq!(listed_ids(&all), [newest.clone(), middle.clone(), oldest.clone()]);
    assert_eq!(all["next_cursor"], Value::Null);
    assert_eq!(all["runs"][1]["servicesCompleted"], 3, "{all}");
    assert_eq!(all["runs"][0]["status"], "cancelled");
    assert_eq!(
        listed_ids(&list(stack, 0, &format!("website_id={website}&status=cancelled"))),
        std::slice::from_ref(&newest)
    );
    assert_eq!(
        listed_ids(&list(stack, 0, &format!("website_id={website}&status=completed"))),
        [middle.clone(), oldest.clone()]
    );

    // Another client's runs are never listed; without a website filter they are not either.
    assert_eq!(listed_ids(&list(stack, 1, &format!("website_id={website}"))), std::slice::from_ref(&foreign));
    let everything = listed_ids(&list(stack, 0, "limit=100"));
    assert!(everything.contains(&newest) && !everything.contains(&foreign), "{everything:?}");

    for (query, field) in
        [("cursor=garbage", "cursor"), ("status=done", "status"), ("limit=0", "limit"), ("limit=101", "limit")]
    {
        let (status, code, details) =
            error_code(&stack.get_as(stack.token(0), &format!("/api/orchestration/runs?{query}")));
        assert_eq!((status, code.as_str()), (400, "invalid_query"), "{query}");
        assert_eq!(details["field"], field, "{query}: {details}");
    }
    assert_eq!(stack.get("/api/orchestration/runs").status, 401);
}

#[test]
fn cancelling_ends_a_running_run_and_its_steps_once_for_its_owner_only() {
    let stack = shared_stack();
    let run_id = start_run_as(
        stack,
        0,
        &json!({"website_id": "site_cancel", "domain": "cancel.example",
                "parameters": {"sample_behaviour": {"*": {"never_answer": true}}}}),
    );
    poll_until("wave one to be running", Duration::from_secs(10), || {
        let (rows, _) = stack.sql(
            "SELECT COUNT(*) AS n FROM steps WHERE run_id = ?1 AND status = 'running' AND claimed_at IS NOT NULL",
            &[json!(run_id)],
        );
        (rows[0]["n"].as_i64() == Some(4)).then_some(())
    });

    let path = format!("/api/orchestration/runs/{run_id}/cancel");
    let (status, code, _) = error_code(&stack.post_as(stack.token(1), &path, &json!({})));
    assert_eq!((status, code.as_str()), (404, "not_found"), "another client's run does not exist for them");

    let r = stack.post_as(stack.token(0), &path, &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["cancelled_steps"].as_array().map(Vec::len), Some(5), "{body}");
    assert_eq!(body["summary"]["servicesSkipped"], 5);

    let run = run_body(stack, &run_id);
    assert_eq!(run["terminal"], true);
    assert_eq!(run["summary"]["status"], "cancelled");
    assert!(run["summary"]["completedAt"].is_string(), "{run}");
    let steps = run["service_results"].as_array().expect("service_results");
    assert!(steps.iter().all(|s| s["status"] == "cancelled" && s["error"] == "Run cancelled"), "{run}");
    let (rows, _) = stack.sql("SELECT due_at FROM runs WHERE run_id = ?1", &[json!(run_id)]);
    assert_eq!(rows[0]["due_at"], Value::Null, "a cancelled run is no longer the poller's");

    let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}/events"));
    let events = r.json()["events"].as_array().cloned().unwrap_or_default();
    let finishes: Vec<&Value> =
        events.iter().filter(|e| e["type"] == "run_status" && e["payload"]["status"] == "cancelled").collect();
    assert_eq!(finishes.len(), 1, "{events:?}");
    assert_eq!(finishes[0]["payload"]["services_skipped"], 5);

    let r = stack.post_as(stack.token(0), &path, &json!({}));
    let (status, code, _) = error_code(&r);
    assert_eq!((status, code.as_str()), (409, "conflict"));
    assert!(r.json()["error"]["message"].as_str().is_some_and(|m| m.contains("cancelled")), "{}", r.text());

    // A completed run cannot be cancelled either.
    let done =
        start_run_as(stack, 0, &json!({"website_id": "site_cancel", "domain": "done.example", "plan_id": "quick-v1"}));
    wait_run_terminal(stack, &done);
    let r = stack.post_as(stack.token(0), &format!("/api/orchestration/runs/{done}/cancel"), &json!({}));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().is_some_and(|m| m.contains("completed")), "{}", r.text());
}

fn execute(stack: &Stack, body: &Value) -> Value {
    let r = stack.post_as(stack.token(0), "/execute", body);
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()
}

#[test]
fn an_execution_of_a_master_template_completes_with_a_deliverable_and_costs() {
    let stack = shared_stack();
    let request_id = unique("req");
    let body = json!({
        "template_name": "course_creation",
        "parameters": {"topic": "React", "targetAudience": "beginners"},
        "client_id": stack.client_id(0),
        "request_id": request_id,
        "priority": "high",
    });
    let accepted = execute(stack, &body);
    let execution_id = accepted["execution_id"].as_str().expect("execution_id").to_string();
    assert!(execution_id.starts_with("exec_"), "{accepted}");
    assert!(accepted["estimated_completion_ms"].as_u64().is_some_and(|ms| ms > 0), "{accepted}");
    assert_eq!(accepted["idempotent_replay"], false);

    let done = wait_execution_terminal(stack, &execution_id);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["priority"], "high");
    assert_eq!(done["template_name"], "course_creation");
    let stage = &done["stages"][0];
    assert_eq!(stage["service"], "bitware-content-granulator");
    assert_eq!(stage["stage"], 1);
    assert_eq!(stage["status"], "completed");
    assert_eq!(stage["action"], "course_v1");
    let deliverables = done["deliverables"].as_array().expect("deliverables");
    assert_eq!(deliverables.len(), 1, "{done}");
    assert_eq!(deliverables[0]["content"]["topic"], "React");
    assert_eq!(deliverables[0]["content"]["template_ref"], "course_v1");
    let tokens = done["costs"]["tokens"].as_u64().unwrap_or(0);
    assert!(tokens >= 100, "{done}");
    assert_eq!(done["costs"]["by_stage"][0]["usage"]["tokens"], tokens);
    assert_eq!(done["summary"]["runId"], execution_id.as_str());

    // The same request is the same execution; nobody else sees it.
    let again = execute(stack, &body);
    assert_eq!(again["execution_id"], execution_id.as_str());
    assert_eq!(again["idempotent_replay"], true);
    assert_eq!(again["status"], "completed");
    let (rows, _) = stack.sql("SELECT COUNT(*) AS n FROM runs WHERE idempotency_key = ?1", &[json!(request_id)]);
    assert_eq!(rows[0]["n"], 1);
    assert_eq!(stack.get_as(stack.token(1), &format!("/executions/{execution_id}")).status, 404);
    assert_eq!(stack.get_as(stack.token(0), "/executions/exec_nope").status, 404);
}

#[test]
fn execute_refuses_unknown_or_broken_templates_bad_fields_and_foreign_clients_writing_nothing() {
    let stack = shared_stack();
    let post = |body: Value| error_code(&stack.post_as(stack.token(0), "/execute", &body));

    let (status, code, details) = post(json!({"template_name": "no_such_template", "request_id": "r-unknown"}));
    assert_eq!((status, code.as_str(), details["field"].as_str()), (400, "unknown_template", Some("template_name")));
    let (status, code, details) = post(json!({"template_name": "broken_template", "request_id": "r-broken"}));
    assert_eq!(
        (status, code.as_str(), details["field"].as_str()),
        (400, "malformed_stages", Some("template_name")),
        "{details}"
    );
    let (status, code, details) = post(json!({"template_name": "course_creation", "client_id": stack.client_id(1)}));
    assert_eq!((status, code.as_str(), details["field"].as_str()), (403, "forbidden", Some("client_id")));
    let (status, code, details) =
        post(json!({"template_name": "course_creation", "priority": "urgent", "parameters": [1]}));
    assert_eq!((status, code.as_str()), (400, "invalid_request"));
    let fields: Vec<&str> =
        details["problems"].as_array().expect("problems").iter().filter_map(|p| p["field"].as_str()).collect();
    assert_eq!(fields, ["parameters", "priority"]);
    let (status, code, details) =
        post(json!({"template_name": "course_creation", "parameters": {"domain": "https://x.com/"}}));
    assert_eq!((status, code.as_str(), details["field"].as_str()), (400, "invalid_domain", Some("parameters.domain")));
    let (status, code, _) = post(json!({"template_name": "course_creation", "surprise": 1}));
    assert_eq!((status, code.as_str()), (400, "unknown_field"));
    assert_eq!(stack.send("POST", "/execute", &[], Some(b"{}")).status, 401);
    assert_eq!(stack.get_as(stack.token(0), "/execute").status, 405);

    let (rows, _) = stack.sql(
        "SELECT COUNT(*) AS n FROM execution_queue WHERE request_id IN ('r-unknown', 'r-broken') \
         OR template_name IN ('no_such_template', 'broken_template')",
        &[],
    );
    assert_eq!(rows[0]["n"], 0, "a rejected request writes nothing");
}

fn tick(stack: &Stack) -> Value {
    let r = stack.admin_post("/admin/poller/tick", &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["last_run"]["admission"].clone()
}

fn execution(stack: &Stack, id: &str) -> Value {
    let r = stack.get_as(stack.token(0), &format!("/executions/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Changes resource pools, so it runs on a stack of its own.
#[test]
fn a_backlog_is_admitted_by_priority_then_age_and_reservations_are_released() {
    let stack = Stack::start(StackOptions::default());
    // One execution slot, taken: everything queues.
    stack.sql("UPDATE resource_pools SET capacity = 1, in_use = 1 WHERE resource = 'concurrent_executions'", &[]);
    let submit = |priority: &str| {
        let accepted = execute(
            &stack,
            &json!({"template_name": "course_creation", "parameters": {"topic": priority}, "priority": priority}),
        );
        assert_eq!(accepted["status"], "queued", "{accepted}");
        (
            accepted["execution_id"].as_str().expect("execution_id").to_string(),
            accepted["reason"].as_str().unwrap_or("").to_string(),
        )
    };
    let (low, reason) = submit("low");
    assert_eq!(reason, "waiting for concurrent_executions: needs 1, 0 of 1 free");
    let (late, reason) = submit("low");
    assert!(reason.contains("behind"), "{reason}");
    let (critical, _) = submit("critical");
    let queued = execution(&stack, &critical);
    assert_eq!((queued["status"].as_str(), queued["terminal"].as_bool()), (Some("queued"), Some(false)), "{queued}");
    assert_eq!(queued["stages"], json!([]));

    // `late` waits past its deadline; then the slot frees. One tick fails `late` with the
    // reason and admits the critical execution first although it came last.
    stack.sql("UPDATE execution_queue SET deadline_at = 1 WHERE run_id = ?1", &[json!(late)]);
    stack.sql("UPDATE resource_pools SET in_use = 0 WHERE resource = 'concurrent_executions'", &[]);
    let report = tick(&stack);
    assert_eq!(report["expired"], 1, "{report}");
    assert_eq!(report["admitted"], json!([critical]), "{report}");
    assert!(report["waiting"].as_str().is_some_and(|w| w.contains("concurrent_executions")), "{report}");
    let expired = execution(&stack, &late);
    assert_eq!((expired["status"].as_str(), expired["terminal"].as_bool()), (Some("failed"), Some(true)), "{expired}");
    let error = expired["error"].as_str().unwrap_or("");
    assert!(error.starts_with("not admitted by its deadline") && error.contains("behind"), "{expired}");
    assert_eq!(wait_execution_terminal(&stack, &critical)["status"], "completed");

    // The critical run's finaliser released its slot and admitted the low one at once.
    assert_eq!(wait_execution_terminal(&stack, &low)["status"], "completed");

    let (rows, _) =
        stack.sql("SELECT run_id, started_at FROM runs WHERE run_id IN (?1, ?2)", &[json!(critical), json!(low)]);
    let started =
        |id: &str| rows.iter().find(|r| r["run_id"] == id).and_then(|r| r["started_at"].as_i64()).unwrap_or(0);
    assert!(started(&critical) < started(&low), "{rows:?}");

    // Everything released by the finalisers, without a tick; history now feeds the estimates.
    poll_until("every reservation to be released", Duration::from_secs(10), || {
        let (pools, _) = stack.sql("SELECT resource, in_use FROM resource_pools ORDER BY resource", &[]);
        pools.iter().all(|p| p["in_use"] == 0).then_some(())
    });
    let (stats, _) = stack.sql(
        "SELECT samples FROM resource_stats WHERE service = 'bitware-content-granulator' AND resource = 'tokens'",
        &[],
    );
    assert_eq!(stats[0]["samples"], 2, "{stats:?}");

    // An execution larger than a whole pool fails at once instead of blocking the queue.
    stack.sql("UPDATE resource_pools SET capacity = 10 WHERE resource = 'tokens'", &[]);
    let refused = execute(&stack, &json!({"template_name": "course_creation"}));
    assert_eq!(refused["status"], "failed", "{refused}");
    assert!(refused["reason"].as_str().is_some_and(|r| r.contains("whole capacity")), "{refused}");
}
