//! Clients acting for others (`API_DELEGATIONS`) and per-client rate limits (`RATE_LIMITS`),
//! on a stack of their own with its own tokens.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_e2e::{cli, poll_until, Stack, StackOptions};
use serde_json::{json, Value};

const ALICE: &str = "tok-alice";
const BOB: &str = "tok-bob";
/// The key-account service: may act for every client.
const KAM: &str = "tok-kam";
/// An agency: may act for alice only.
const AGENCY: &str = "tok-agency";
/// A client limited to [`LIMIT`] requests a minute.
const LIMITED: &str = "tok-limited";
const LIMIT: usize = 5;
/// A client whose limit the local rate-limiting binding counts (`LOCAL_RATE_LIMIT`, 5 a minute).
const METERED: &str = "tok-metered";

fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let var = |k: &str, v: &str| (k.to_string(), v.to_string());
        Stack::start(StackOptions {
            vars: vec![
                var(
                    "API_TOKENS",
                    &format!(
                        "{ALICE}:alice,{BOB}:bob,{KAM}:key-accounts,{AGENCY}:agency,{LIMITED}:limited,{METERED}:metered"
                    ),
                ),
                var("API_DELEGATIONS", "key-accounts:*,agency:alice"),
                var(
                    "RATE_LIMITS",
                    &json!({
                        "limited": {"requests": LIMIT, "period_s": 60},
                        "metered": {"requests": LIMIT, "period_s": 60, "binding": "LOCAL_RATE_LIMIT"},
                    })
                    .to_string(),
                ),
            ],
            ..StackOptions::default()
        })
    })
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{nanos:x}")
}

fn run_request(site: &str, client: Option<&str>) -> Value {
    let mut body = json!({"website_id": site, "domain": "example.com", "plan_id": "quick-v1"});
    if let Some(client) = client {
        body["client_id"] = json!(client);
    }
    body
}

fn refused(stack: &Stack, token: &str, path: &str, body: &Value) -> (u16, String, Value) {
    let r = stack.post_as(token, path, body);
    let json = r.json();
    (
        r.status,
        json["error"]["code"].as_str().unwrap_or_default().to_string(),
        json["error"]["details"]["field"].clone(),
    )
}

#[test]
fn a_delegate_acts_for_the_clients_it_is_granted_and_each_client_sees_only_its_own() {
    let stack = stack();
    let site = unique("acct");
    // The key-account service starts a run for bob and an execution for alice.
    let r = stack.post_as(KAM, "/api/orchestration/run", &run_request(&site, Some("bob")));
    assert_eq!(r.status, 202, "{}", r.text());
    let bobs_run = r.json()["run_id"].as_str().expect("run_id").to_string();
    let r = stack.post_as(KAM, "/execute", &json!({"template_name": "course_creation", "client_id": "alice"}));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!((r.json()["client_id"].as_str(), r.json()["acted_by"].as_str()), (Some("alice"), Some("key-accounts")));
    let alices_execution = r.json()["execution_id"].as_str().expect("execution_id").to_string();

    // Each belongs to its client, who sees who acted; the other client does not see it.
    let run_path = format!("/api/orchestration/runs/{bobs_run}");
    let seen = stack.get_as(BOB, &run_path);
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(
        (seen.json()["client_id"].as_str(), seen.json()["acted_by"].as_str()),
        (Some("bob"), Some("key-accounts"))
    );
    assert_eq!(stack.get_as(ALICE, &run_path).status, 404);
    assert_eq!(stack.get_as(AGENCY, &run_path).status, 404, "the agency may not act for bob");
    assert_eq!(stack.get_as(KAM, &run_path).status, 200, "the delegate follows what it started");
    let events = stack.get_as(BOB, &format!("{run_path}/events")).json();
    let start =
        events["events"].as_array().and_then(|e| e.iter().find(|e| e["payload"]["status"] == "started").cloned());
    assert_eq!(start.map(|e| e["payload"]["acted_by"].clone()), Some(json!("key-accounts")), "{events}");
    let execution_path = format!("/executions/{alices_execution}");
    let seen = stack.get_as(ALICE, &execution_path);
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(seen.json()["acted_by"], "key-accounts");
    assert_eq!(stack.get_as(BOB, &execution_path).status, 404);
    let (rows, _) = stack.sql("SELECT client_id, acted_by FROM runs WHERE run_id = ?1", &[json!(bobs_run)]);
    assert_eq!(rows[0], json!({"client_id": "bob", "acted_by": "key-accounts"}));

    // Listing: bob's own list has the run started for him; alice's does not.
    let listed = |token: &str| -> Vec<String> {
        let r = stack.get_as(token, &format!("/api/orchestration/runs?website_id={site}"));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["runId"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(listed(BOB), vec![bobs_run.clone()]);
    assert!(listed(ALICE).is_empty());

    // A run a client starts itself records no delegate.
    let r = stack.post_as(ALICE, "/api/orchestration/run", &run_request(&site, Some("alice")));
    assert_eq!(r.status, 202, "{}", r.text());
    let own =
        stack.get_as(ALICE, &format!("/api/orchestration/runs/{}", r.json()["run_id"].as_str().unwrap_or_default()));
    assert_eq!((own.json()["client_id"].as_str(), own.json()["acted_by"].clone()), (Some("alice"), Value::Null));

    // The agency acts for alice only; a client without a grant for no one else.
    let r = stack.post_as(AGENCY, "/api/orchestration/run", &run_request(&site, Some("alice")));
    assert_eq!(r.status, 202, "{}", r.text());
    for (token, path, body) in [
        (AGENCY, "/api/orchestration/run", run_request(&site, Some("bob"))),
        (AGENCY, "/execute", json!({"template_name": "course_creation", "client_id": "bob"})),
        (ALICE, "/api/orchestration/run", run_request(&site, Some("bob"))),
        (BOB, "/execute", json!({"template_name": "course_creation", "client_id": "alice"})),
    ] {
        assert_eq!(
            refused(stack, token, path, &body),
            (403, "forbidden".into(), json!("client_id")),
            "{token} {path} {body}"
        );
    }

    // The CLI acts for a client with --for.
    let submitted = cli::run(stack, KAM, &["--json", "execute", "course_creation", "--for", "bob"]);
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    assert_eq!(submitted.json()["acted_by"], "key-accounts");
    let refused_cli = cli::run(stack, ALICE, &["execute", "course_creation", "--for", "bob"]);
    assert_eq!(refused_cli.code, 3, "{}", refused_cli.stderr);
    assert!(refused_cli.stderr.contains("forbidden"), "{}", refused_cli.stderr);

    poll_until("bob's run to end", Duration::from_secs(60), || {
        (stack.get_as(BOB, &run_path).json()["terminal"] == true).then_some(())
    });
}

/// Sends requests as `token` until one is refused (a fixed window may end during the burst,
/// so at most two windows' worth are allowed); returns the refusal.
fn burst_until_refused(stack: &Stack, token: &str) -> baton_e2e::HttpResponse {
    let mut allowed = 0;
    loop {
        let r = stack.get_as(token, "/api/orchestration/runs");
        if r.status == 429 {
            assert!(allowed >= 1, "the first request of a window is allowed");
            return r;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        allowed += 1;
        assert!(allowed <= 2 * LIMIT, "{allowed} requests were allowed; the limit is {LIMIT} a minute");
    }
}

#[test]
fn a_client_over_its_rate_limit_gets_429_with_retry_after_and_others_are_unaffected() {
    let stack = stack();
    let limited = burst_until_refused(stack, LIMITED);
    let retry_after: u32 = limited.header("retry-after").and_then(|v| v.parse().ok()).expect("a Retry-After header");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body = limited.json();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(body["error"]["details"]["retry_after_s"], retry_after);
    assert_eq!(body["error"]["details"]["requests"], LIMIT);

    // Other clients are not limited, and nor are requests without a client token.
    for _ in 0..(2 * LIMIT) {
        assert_eq!(stack.get_as(BOB, "/api/orchestration/runs").status, 200);
    }
    assert_eq!(stack.get("/health").status, 200);
    if retry_after > 1 {
        assert_eq!(stack.get_as(LIMITED, "/api/orchestration/runs").status, 429);
    }
}

#[test]
fn a_limit_that_names_a_rate_limiting_binding_is_counted_by_it() {
    let stack = stack();
    let refused = burst_until_refused(stack, METERED);
    // The binding does not say when its window ends: the client waits a whole period.
    assert_eq!(refused.header("retry-after"), Some("60"));
    assert_eq!(refused.json()["error"]["code"], "rate_limited");
    let (rows, _) = stack.sql("SELECT COUNT(*) AS n FROM rate_limit_windows WHERE client_id = 'metered'", &[]);
    assert_eq!(rows[0]["n"], 0, "counted by the binding, not in D1");
}
