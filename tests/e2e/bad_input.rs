//! Every bad input gets a clear error naming what is wrong, and writes nothing.

use baton_core::signature::{self, Purpose, Signed};
use baton_core::time::Millis;
use baton_e2e::{now_ms, Stack, StackOptions};
use serde_json::{json, Value};

/// One bad request and what must come back.
struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
    /// The `Allow` header a 405 must carry.
    allow: Option<&'static str>,
}

fn case(name: &'static str, method: &'static str, path: &str, status: u16, code: &'static str) -> Case {
    Case {
        name,
        method,
        path: path.to_string(),
        headers: Vec::new(),
        body: None,
        status,
        code,
        field: None,
        allow: None,
    }
}

impl Case {
    fn auth(mut self, token: &str) -> Self {
        self.headers.push(("Authorization".into(), format!("Bearer {token}")));
        self
    }
    fn json(mut self, body: Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self.headers.push(("Content-Type".into(), "application/json".into()));
        self
    }
    fn raw(mut self, body: &str) -> Self {
        self.body = Some(body.as_bytes().to_vec());
        self
    }
    /// Signs the body for `path` instead of this case's own (a replay to another run).
    fn signed_for(mut self, key: &str, path: &str) -> Self {
        let own = std::mem::replace(&mut self.path, path.to_string());
        self = self.signed(key, now_ms());
        self.path = own;
        self
    }
    fn field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }
    fn allow(mut self, allow: &'static str) -> Self {
        self.allow = Some(allow);
        self
    }
    /// Signs the body as a service reporting attempt 1 would (`at_ms` lets a case sign in the
    /// past).
    fn signed(mut self, key: &str, at_ms: u64) -> Self {
        let body = self.body.clone().unwrap_or_default();
        let request = Signed {
            purpose: Purpose::Result,
            method: self.method,
            path: &self.path,
            attempt: Some(1),
            body: &body,
            trace: None,
        };
        for (name, value) in signature::headers(key, &request, Millis::new(at_ms)) {
            self.headers.push((name.into(), value));
        }
        self
    }
}

const TABLES: [&str; 5] = ["runs", "steps", "kbase_events", "custom_plans", "execution_queue"];

fn row_counts(stack: &Stack) -> Vec<(String, i64)> {
    TABLES
        .iter()
        .map(|t| {
            let (rows, _) = stack.sql(&format!("SELECT COUNT(*) AS n FROM {t}"), &[]);
            (t.to_string(), rows[0]["n"].as_i64().unwrap_or(-1))
        })
        .collect()
}

#[test]
fn bad_requests_get_the_right_status_and_code_and_write_nothing() {
    let stack = Stack::start(StackOptions::default());
    let alice = stack.token(0).to_string();
    let secret = stack.secrets().key_for("technical_seo");
    let run = "/api/orchestration/run";
    let valid = || json!({"website_id": "site_1", "domain": "example.com"});
    let with = |key: &str, value: Value| {
        let mut body = valid();
        body[key] = value;
        body
    };
    // A run that stays running (its services accept and never answer), to report on.
    let r = stack.post_as(
        &alice,
        run,
        &json!({"website_id": "site_cb", "domain": "cb.example",
                "parameters": {"sample_behaviour": {"*": {"never_answer": true}}}}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let run_id = r.json()["run_id"].as_str().expect("run_id").to_string();
    let callback = &format!("/api/jobs/{run_id}/results/technical-seo");
    let unknown_job = "/api/jobs/run_1795000000000_0123456789abcdef/results/technical-seo";
    let completed = json!({"status": "completed", "output": {}});

    let cases = vec![
        case("run without a token", "POST", run, 401, "unauthorized").json(valid()),
        case("run with a wrong token", "POST", run, 401, "unauthorized").auth("nope").json(valid()),
        case("malformed JSON", "POST", run, 400, "invalid_json").auth(&alice).raw("{\"website_id\": "),
        case("empty body", "POST", run, 400, "invalid_json").auth(&alice),
        case("body is an array", "POST", run, 400, "invalid_body").auth(&alice).json(json!([1, 2])),
        case("missing website_id", "POST", run, 400, "invalid_request")
            .auth(&alice)
            .json(json!({"domain": "example.com"}))
            .field("website_id"),
        case("missing domain", "POST", run, 400, "invalid_request")
            .auth(&alice)
            .json(json!({"website_id": "s"}))
            .field("domain"),
        case("domain with a scheme", "POST", run, 400, "invalid_request")
            .auth(&alice)
            .json(with("domain", json!("https://example.com")))
            .field("domain"),
        case("domain with a path", "POST", run, 400, "invalid_request")
            .auth(&alice)
            .json(with("domain", json!("example.com/x")))
            .field("domain"),
        case("domain too long", "POST", run, 400, "invalid_request")
            .auth(&alice)
            .json(with("domain", json!(format!("{}.com", "a".repeat(300)))))
            .field("domain"),
        case("website_id with spaces", "POST", run, 400, "invalid_request")
            .auth(&alice)
            .json(with("website_id", json!("my site")))
            .field("website_id"),
        case("website_id of the wrong type", "POST", run, 400, "invalid_field")
            .auth(&alice)
            .json(with("website_id", json!(42)))
            .field("website_id"),
        case("domain of the wrong type", "POST", run, 400, "invalid_field")
            .auth(&alice)
            .json(with("domain", json!(["a"])))
            .field("domain"),
        case("unknown field", "POST", run, 400, "unknown_field")
            .auth(&alice)
            .json(with("plan", json!("quick-v1")))
            .field("plan"),
        case("unknown plan", "POST", run, 400, "unknown_plan")
            .auth(&alice)
            .json(with("plan_id", json!("nope-v9")))
            .field("plan_id"),
        case("plan id with bad characters", "POST", run, 400, "invalid_request")
            .auth(&alice)
            .json(with("plan_id", json!("Bad Plan!")))
            .field("plan_id"),
        case("parameters not an object", "POST", run, 400, "invalid_field")
            .auth(&alice)
            .json(with("parameters", json!("x")))
            .field("parameters"),
        case("parameters too large", "POST", run, 400, "too_long")
            .auth(&alice)
            .json(with("parameters", json!({"x": "y".repeat(200 * 1024)})))
            .field("parameters"),
        case("idempotency key too long", "POST", run, 400, "invalid_request")
            .auth(&alice)
            .json(with("idempotency_key", json!("k".repeat(200))))
            .field("idempotency_key"),
        case("idempotency key of the wrong type", "POST", run, 400, "invalid_field")
            .auth(&alice)
            .json(with("idempotency_key", json!(7)))
            .field("idempotency_key"),
        case("body over 256 KiB", "POST", run, 413, "payload_too_large")
            .auth(&alice)
            .json(with("parameters", json!({"x": "y".repeat(300 * 1024)}))),
        case(
            "wait beyond any plan's duration and analysis",
            "POST",
            &format!("{run}?wait=604861"),
            400,
            "invalid_field",
        )
        .auth(&alice)
        .json(valid())
        .field("wait"),
        case("wait not a number", "POST", &format!("{run}?wait=soon"), 400, "invalid_field")
            .auth(&alice)
            .json(valid())
            .field("wait"),
        case("GET on the run endpoint", "GET", run, 405, "method_not_allowed").allow("POST"),
        case(
            "PUT on a run",
            "PUT",
            "/api/orchestration/runs/run_1795000000000_0123456789abcdef",
            405,
            "method_not_allowed",
        )
        .auth(&alice),
        case("malformed run id", "GET", "/api/orchestration/runs/not-a-run", 404, "not_found").auth(&alice),
        case("unknown run", "GET", "/api/orchestration/runs/run_1795000000000_0123456789abcdef", 404, "not_found")
            .auth(&alice),
        case(
            "events of an unknown run",
            "GET",
            "/api/orchestration/runs/run_1795000000000_0123456789abcdef/events",
            404,
            "not_found",
        )
        .auth(&alice),
        case(
            "run read without a token",
            "GET",
            "/api/orchestration/runs/run_1795000000000_0123456789abcdef",
            401,
            "unauthorized",
        ),
        case("unknown route", "GET", "/api/orchestration/nothing-here", 404, "not_found"),
        case("DELETE on health", "DELETE", "/health", 405, "method_not_allowed"),
        case("poller tick without the admin token", "POST", "/admin/poller/tick", 401, "unauthorized").auth(&alice),
        case("callback without a signature", "POST", callback, 401, "unauthorized").json(completed.clone()),
        case("callback with a wrong signature", "POST", callback, 401, "unauthorized")
            .json(completed.clone())
            .signed("not-the-secret", now_ms()),
        case("callback signed too long ago", "POST", callback, 401, "unauthorized")
            .json(completed.clone())
            .signed(&secret, now_ms() - 10 * 60 * 1000),
        case("callback signed for another run", "POST", callback, 401, "unauthorized")
            .json(completed.clone())
            .signed_for(&secret, unknown_job),
        case("callback signed with another service's key", "POST", callback, 401, "unauthorized")
            .json(completed.clone())
            .signed(&stack.secrets().key_for("vitals_monitor"), now_ms()),
        case("callback for an unknown job", "POST", unknown_job, 404, "not_found")
            .json(completed.clone())
            .signed(&secret, now_ms()),
        case("callback with an unknown status", "POST", callback, 400, "invalid_field")
            .json(json!({"status": "maybe"}))
            .signed(&secret, now_ms())
            .field("status"),
        case("callback without a status", "POST", callback, 400, "missing_field")
            .json(json!({"output": {}}))
            .signed(&secret, now_ms())
            .field("status"),
        case("callback with malformed JSON", "POST", callback, 400, "invalid_json")
            .raw("{oops")
            .signed(&secret, now_ms()),
        case("callback with an unknown field", "POST", callback, 400, "unknown_field")
            .json(json!({"status": "completed", "extra": 1}))
            .signed(&secret, now_ms())
            .field("extra"),
    ];
    assert!(cases.len() >= 30);

    let before = row_counts(&stack);
    let mut failures = Vec::new();
    for c in &cases {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = stack.send(c.method, &c.path, &headers, c.body.as_deref());
        let body = r.json();
        let mut problems = Vec::new();
        if r.status != c.status {
            problems.push(format!("status {} (expected {})", r.status, c.status));
        }
        if body["success"] != false || body["error"]["code"] != c.code {
            problems.push(format!("code {} (expected {})", body["error"]["code"], c.code));
        }
        if body["error"]["message"].as_str().is_none_or(str::is_empty) {
            problems.push("no message".to_string());
        }
        if let Some(field) = c.field {
            let named = body["error"]["details"]["field"] == field
                || body["error"]["details"]["problems"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["field"] == field));
            if !named {
                problems.push(format!("details do not name {field}: {}", body["error"]["details"]));
            }
        }
        if c.allow.is_some() && r.header("Allow") != c.allow {
            problems.push(format!("Allow {:?} (expected {:?})", r.header("Allow"), c.allow));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {} — {}",
                c.name,
                problems.join("; "),
                r.text().chars().take(300).collect::<String>()
            ));
        }
    }
    // A method no route declares (a custom one such as QUERY) is refused, never served as a GET.
    for (path, allow) in
        [("/api/orchestration/runs", "GET"), ("/api/orchestration/schedules/sch_1", "GET, PATCH, DELETE")]
    {
        let (status, head, body) = custom_method(&stack, "QUERY", path, &alice);
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let allowed = head.lines().any(|l| l.to_ascii_lowercase() == format!("allow: {}", allow.to_ascii_lowercase()));
        if status != 405 || body["error"]["code"] != "method_not_allowed" || !allowed {
            failures.push(format!("QUERY {path}: {status}, Allow: {allow} expected\n{head}\n{body}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert_eq!(row_counts(&stack), before, "a rejected request wrote rows");
}

/// Sends `method` over a plain socket (the harness's HTTP client sends only the methods HTTP
/// names): the status, the response head and the body.
fn custom_method(stack: &Stack, method: &str, path: &str, token: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let address = stack.base_url().trim_start_matches("http://").to_string();
    let mut socket = std::net::TcpStream::connect(&address).expect("connecting to the stack");
    socket.set_read_timeout(Some(std::time::Duration::from_secs(30))).expect("setting a timeout");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).expect("sending the request");
    let mut response = String::new();
    socket.read_to_string(&mut response).expect("reading the response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    // The body may come chunked: keep from its first brace to its last.
    let body = body.find('{').zip(body.rfind('}')).map(|(a, b)| body[a..=b].to_string()).unwrap_or_default();
    (status, head.to_string(), body)
}
