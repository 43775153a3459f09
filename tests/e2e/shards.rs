//! Shards by client (`D1_SHARDS` = 2 in the local stack): two clients whose runs live in
//! different D1 databases, and every way to a run — the API, the runs list, result callbacks,
//! retries through the queue, timers, the analysis queue, the poller, webhooks — finds it in
//! its own database and never in the other.

use std::time::Duration;

use baton_e2e::{poll_until, shared_stack, Stack};
use serde_json::{json, Value};

/// alice's data lives in `DB_1` and bob's in `DB_0`: the hash of their ids.
const CLIENTS: [(usize, &str, u32); 2] = [(0, "alice", 1), (1, "bob", 0)];

fn get(stack: &Stack, client: usize, path: &str) -> (u16, Value) {
    let r = stack.get_as(stack.token(client), path);
    (r.status, r.json())
}

fn wait_end(stack: &Stack, client: usize, run_id: &str) -> Value {
    poll_until(&format!("run {run_id} to end"), Duration::from_secs(45), || {
        let (status, body) = get(stack, client, &format!("/api/orchestration/runs/{run_id}"));
        assert_eq!(status, 200, "{body}");
        (body["terminal"] == true).then_some(body)
    })
}

fn count_on(stack: &Stack, shard: u32, sql: &str, run_id: &str) -> i64 {
    stack.sql_on(shard, sql, &[json!(run_id)])[0]["n"].as_i64().unwrap_or(-1)
}

#[test]
fn each_clients_runs_live_in_its_own_shard_and_every_path_finds_them() {
    let stack = shared_stack();
    for (client, name, _) in CLIENTS {
        assert_eq!(stack.client_id(client), name);
    }
    // A webhook per client: its deliveries are written in the run's ending and sent through
    // the webhook queue, whose messages carry only the delivery's id.
    let mut webhooks = Vec::new();
    for (client, _, _) in CLIENTS {
        let r = stack.post_as(
            stack.token(client),
            "/api/orchestration/webhooks",
            &json!({ "url": "http://127.0.0.1:9/unreachable", "events": ["run.finished"] }),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        webhooks.push(r.json()["webhook"]["webhook_id"].as_str().expect("webhook_id").to_string());
    }
    // A result callback (async), a retry through the queue (fail_transient), and a first wave
    // that outlives its in-place second (its timer).
    let behaviour = json!({
        "technical-seo": { "async": true },
        "domain-authority": { "fail_transient": 1 },
        "*": { "latency_ms": 1200 }
    });
    let mut runs = Vec::new();
    for (client, _, shard) in CLIENTS {
        let body = json!({ "website_id": "site_shards", "domain": "shards.example",
                           "parameters": { "sample_behaviour": behaviour } });
        let r = stack.post_as(stack.token(client), "/api/orchestration/run", &body);
        assert_eq!(r.status, 202, "{}", r.text());
        let run_id = r.json()["run_id"].as_str().expect("run_id").to_string();
        // The id names the shard: every worker routes it without a lookup.
        assert_eq!(run_id.ends_with("_s1"), shard == 1, "{run_id}");
        runs.push(run_id);
    }
    for ((client, name, shard), run_id) in CLIENTS.iter().zip(&runs) {
        let ended = wait_end(stack, *client, run_id);
        assert_eq!(ended["status"], "completed", "{name}: {ended}");
        let other = 1 - shard;
        let rows = "SELECT COUNT(*) AS n FROM runs WHERE run_id = ?1";
        assert_eq!(count_on(stack, *shard, rows, run_id), 1, "{name}'s run is in DB_{shard}");
        assert_eq!(count_on(stack, other, rows, run_id), 0, "{name}'s run is not in DB_{other}");
        let steps = "SELECT COUNT(*) AS n FROM steps WHERE run_id = ?1 AND status = 'completed'";
        assert_eq!(count_on(stack, *shard, steps, run_id), 5, "{name}: every step completed in DB_{shard}");
        let retried = "SELECT attempts AS n FROM steps WHERE run_id = ?1 AND service = 'domain-authority'";
        assert_eq!(count_on(stack, *shard, retried, run_id), 2, "{name}: the retry found its run");
        let events = "SELECT COUNT(*) AS n FROM kbase_events WHERE run_id = ?1 AND type = 'diagnosis'";
        assert_eq!(count_on(stack, *shard, events, run_id), 1, "{name}: the analysis found its run");
        // The ending's webhook delivery, in the client's shard, tried through the queue.
        let delivery = "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE run_id = ?1";
        assert_eq!(count_on(stack, *shard, delivery, run_id), 1, "{name}: the delivery is in DB_{shard}");
        poll_until(&format!("{name}'s delivery to be tried"), Duration::from_secs(30), || {
            let tried = "SELECT COUNT(*) AS n FROM webhook_attempts a JOIN webhook_deliveries d \
                         ON d.delivery_id = a.delivery_id WHERE d.run_id = ?1";
            (count_on(stack, *shard, tried, run_id) > 0).then_some(())
        });
        // The API reads it from its shard: the run, its events, the list; the other client
        // does not see it.
        let (status, events) = get(stack, *client, &format!("/api/orchestration/runs/{run_id}/events"));
        assert_eq!(status, 200, "{events}");
        assert!(!events["events"].as_array().expect("events").is_empty(), "{events}");
        let (status, list) = get(stack, *client, "/api/orchestration/runs?website_id=site_shards&limit=100");
        assert_eq!(status, 200, "{list}");
        let listed: Vec<&str> =
            list["runs"].as_array().expect("runs").iter().filter_map(|r| r["runId"].as_str()).collect();
        assert!(listed.contains(&run_id.as_str()), "{name}'s list has its run: {list}");
        assert!(runs.iter().filter(|r| *r != run_id).all(|r| !listed.contains(&r.as_str())), "{list}");
        let (status, _) = get(stack, 1 - *client, &format!("/api/orchestration/runs/{run_id}"));
        assert_eq!(status, 404, "another client does not see {name}'s run");
    }
    // The poller walks both databases, each within its own bounds.
    let r = stack.admin_post("/admin/poller/tick", &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let tick = r.json();
    let shards: Vec<u64> = tick["last_run"]["shards"]
        .as_array()
        .unwrap_or_else(|| panic!("no shards in {tick}"))
        .iter()
        .filter_map(|s| s["shard"].as_u64())
        .collect();
    assert_eq!(shards, vec![0, 1], "{tick}");
    // A run id naming a shard this deployment does not have names nothing.
    let (status, body) = get(stack, 0, "/api/orchestration/runs/run_1795000000000_0123456789abcdef_s9");
    assert_eq!(status, 404, "{body}");
    for ((client, _, _), webhook) in CLIENTS.iter().zip(&webhooks) {
        let auth = format!("Bearer {}", stack.token(*client));
        let r = stack.send(
            "DELETE",
            &format!("/api/orchestration/webhooks/{webhook}"),
            &[("Authorization", auth.as_str())],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
}
