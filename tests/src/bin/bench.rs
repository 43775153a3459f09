//! `make bench`: Baton against a Cloudflare Workflows implementation of the same plan, on the
//! same local runtime (`wrangler dev`) with state on disk. See BENCHMARKS.md.
//!
//! W1: sequential standard-v1 runs, end-to-end latency seen by the client (p50/p99) and
//!     overhead over the critical path (2 × service latency).
//! W2: R runs submitted concurrently; wall time, runs/s, steps/s, lost and duplicated runs.
//! W3 (Baton): last result callback → fan-in claim, event-driven and by the poller alone.
//! Cost (Baton): D1 rows changed per run; rows read by a poller tick before and after history.
//!
//! Options: --runs N (W1 runs per latency and system, default 100: p99 is then the second slowest, not the slowest), --warmup N (default 10),
//! --latencies 0,50 (service latency in ms), --w2 100,1000 (W2 sizes), --threads N (client
//! threads for W2, default 32), --skip-workflows, --skip-extras (W3 and cost), --poll (Baton's W1
//! polls the run every 5 ms instead of `?wait`), --out PATH (default bench-results/latest.json).

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_e2e::http::request;
use baton_e2e::{repo_root, Stack, StackOptions};
use serde_json::{json, Value};

const TERMINAL: &str = "('completed','failed','timeout','cancelled')";
const STEPS_PER_RUN: usize = 5;

struct Options {
    runs: usize,
    warmup: usize,
    latencies: Vec<u64>,
    w2: Vec<usize>,
    threads: usize,
    workflows: bool,
    extras: bool,
    poll: bool,
    out: PathBuf,
}

fn list<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

fn parse_options() -> Options {
    let mut o = Options {
        runs: 100,
        warmup: 10,
        latencies: vec![0, 50],
        w2: vec![100, 1000],
        threads: 32,
        workflows: true,
        extras: true,
        poll: false,
        out: repo_root().join("bench-results/latest.json"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--runs" => o.runs = value().parse().expect("--runs N"),
            "--warmup" => o.warmup = value().parse().expect("--warmup N"),
            "--latencies" => o.latencies = list(&value()),
            "--w2" => o.w2 = list(&value()),
            "--threads" => o.threads = value().parse().expect("--threads N"),
            "--skip-workflows" => o.workflows = false,
            "--skip-extras" => o.extras = false,
            "--poll" => o.poll = true,
            "--out" => o.out = PathBuf::from(value()),
            other => panic!("unknown option {other} (see the top of tests/src/bin/bench.rs)"),
        }
    }
    o
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn params(latency_ms: u64) -> Value {
    json!({"sample_behaviour": {"*": {"latency_ms": latency_ms}}})
}

/// The system under test, as the benchmark drives it.
trait System: Sync {
    fn name(&self) -> &'static str;
    /// Starts one run and returns when the client sees it finished; panics if it did not complete.
    fn run_to_end(&self, site: &str, latency_ms: u64);
    /// Starts a run without waiting; returns its id.
    fn submit(&self, site: &str, latency_ms: u64) -> Option<String>;
    /// Polls until every id is terminal (or the deadline passes). Returns the W2 verdict.
    fn wait_all(&self, site: &str, ids: &[String], deadline: Instant) -> W2Check;
}

#[derive(Debug, Default)]
struct W2Check {
    terminal: usize,
    completed: usize,
    lost: usize,
    duplicated: usize,
    steps: usize,
}

// ---- Baton ---------------------------------------------------------------------------------

struct Baton {
    stack: Stack,
    token: String,
    /// W1 observes completion by polling `GET /runs/:id` every 5 ms (as the Workflows peer
    /// polls its status) instead of `?wait`.
    poll: bool,
}

impl Baton {
    fn body(site: &str, latency_ms: u64) -> Value {
        json!({"website_id": site, "domain": "bench.example", "parameters": params(latency_ms)})
    }
}

impl System for Baton {
    fn name(&self) -> &'static str {
        "Baton"
    }

    fn run_to_end(&self, site: &str, latency_ms: u64) {
        if self.poll {
            let id = self.submit(site, latency_ms).expect("starting a run");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let r = self.stack.get_as(&self.token, &format!("/api/orchestration/runs/{id}"));
                if r.json()["terminal"] == true {
                    assert_eq!(r.json()["summary"]["status"], "completed", "{}", r.text());
                    return;
                }
                assert!(Instant::now() < deadline, "run {id} did not finish");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let r = self.stack.post_as(&self.token, "/api/orchestration/run?wait=30", &Self::body(site, latency_ms));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["status"], "completed", "{}", r.text());
    }

    fn submit(&self, site: &str, latency_ms: u64) -> Option<String> {
        let body = serde_json::to_vec(&Self::body(site, latency_ms)).ok()?;
        let auth = format!("Bearer {}", self.token);
        let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
        let r = request(
            self.stack.port(),
            "POST",
            "/api/orchestration/run",
            &headers,
            Some(&body),
            Duration::from_secs(60),
        )
        .ok()?;
        (r.status == 202).then(|| r.json()["run_id"].as_str().map(str::to_string)).flatten()
    }

    fn wait_all(&self, site: &str, ids: &[String], deadline: Instant) -> W2Check {
        let count_sql = format!("SELECT COUNT(*) AS n FROM runs WHERE website_id = ?1 AND status IN {TERMINAL}");
        while Instant::now() < deadline {
            let (rows, _) = self.stack.sql(&count_sql, &[json!(site)]);
            if rows.first().and_then(|r| r["n"].as_u64()).unwrap_or(0) as usize >= ids.len() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.check(site, ids)
    }
}

impl Baton {
    /// Every submitted run terminal, with exactly one diagnosis and one finish event.
    fn check(&self, site: &str, ids: &[String]) -> W2Check {
        let (rows, _) = self.stack.sql(
            &format!(
                "SELECT r.run_id, r.status, \
                   (SELECT COUNT(*) FROM kbase_events e WHERE e.run_id = r.run_id AND e.type = 'diagnosis') AS diagnoses, \
                   (SELECT COUNT(*) FROM kbase_events e WHERE e.run_id = r.run_id AND e.dedupe_key = 'run:' || r.run_id || ':finish') AS finishes, \
                   (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.run_id AND s.status = 'completed') AS steps \
                 FROM runs r WHERE r.website_id = ?1 AND r.status IN {TERMINAL}"
            ),
            &[json!(site)],
        );
        let by_id: HashMap<String, &Value> =
            rows.iter().filter_map(|r| Some((r["run_id"].as_str()?.to_string(), r))).collect();
        let mut c = W2Check::default();
        for id in ids {
            match by_id.get(id) {
                None => c.lost += 1,
                Some(r) => {
                    c.terminal += 1;
                    if r["status"] == "completed" {
                        c.completed += 1;
                    }
                    let (d, f) = (r["diagnoses"].as_u64().unwrap_or(0), r["finishes"].as_u64().unwrap_or(0));
                    if d == 0 || f == 0 {
                        c.lost += 1;
                    }
                    if d > 1 || f > 1 {
                        c.duplicated += 1;
                    }
                    c.steps += r["steps"].as_u64().unwrap_or(0) as usize;
                }
            }
        }
        c
    }

    /// Phases of recent runs from D1 timestamps (ms), for "where the time goes".
    fn phases(&self, site: &str) -> Value {
        let (rows, _) = self.stack.sql(
            "SELECT r.created_at AS created, \
               (SELECT MIN(started_at) FROM steps s WHERE s.run_id = r.run_id) AS first_dispatch, \
               (SELECT MIN(claimed_at) FROM steps s WHERE s.run_id = r.run_id) AS first_consumer_claim, \
               (SELECT MAX(finished_at) FROM steps s WHERE s.run_id = r.run_id AND s.wave = 1) AS wave1_done, \
               (SELECT started_at FROM steps s WHERE s.run_id = r.run_id AND s.wave = 2) AS wave2_dispatch, \
               (SELECT claimed_at FROM steps s WHERE s.run_id = r.run_id AND s.wave = 2) AS wave2_consumer_claim, \
               (SELECT finished_at FROM steps s WHERE s.run_id = r.run_id AND s.wave = 2) AS wave2_done, \
               r.claimed_at AS fanin_claim, r.completed_at AS completed \
             FROM runs r WHERE r.website_id = ?1 AND r.status = 'completed'",
            &[json!(site)],
        );
        let keys = [
            "first_dispatch",
            "first_consumer_claim",
            "wave1_done",
            "wave2_dispatch",
            "wave2_consumer_claim",
            "wave2_done",
            "fanin_claim",
            "completed",
        ];
        let mut out = serde_json::Map::new();
        for k in keys {
            let mut v: Vec<f64> =
                rows.iter().filter_map(|r| Some((r[k].as_i64()? - r["created"].as_i64()?) as f64)).collect();
            v.sort_by(f64::total_cmp);
            out.insert(format!("{k}_p50_ms_after_create"), json!(percentile(&v, 50.0)));
        }
        Value::Object(out)
    }
}

// ---- Baton only: W3 fan-in latency and cost ----------------------------------------------

impl Baton {
    fn run_and_wait(&self, site: &str, plan: &str, behaviour: Value) -> String {
        let body = json!({"website_id": site, "domain": "bench.example", "plan_id": plan, "parameters": {"sample_behaviour": behaviour}});
        let r = self.stack.post_as(&self.token, "/api/orchestration/run?wait=30", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["status"], "completed", "{}", r.text());
        r.json()["run_id"].as_str().unwrap_or_default().to_string()
    }

    /// Last step result recorded → fan-in claimed (analysis started), per run of `site`.
    fn fanin_gaps(&self, site: &str) -> Vec<f64> {
        let (rows, _) = self.stack.sql(
            "SELECT r.claimed_at - MAX(s.finished_at) AS gap FROM runs r JOIN steps s ON s.run_id = r.run_id \
             WHERE r.website_id = ?1 AND r.claimed_at IS NOT NULL GROUP BY r.run_id",
            &[json!(site)],
        );
        let mut v: Vec<f64> = rows.iter().filter_map(|r| r["gap"].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// W3: results by signed callback (`async`), event-driven fan-in, then the poller alone.
    fn w3(&self, runs: usize) -> Value {
        let asynchronous = json!({"*": {"async": true}});
        let site = format!("bench-w3-event-{}", std::process::id());
        for _ in 0..runs {
            self.run_and_wait(&site, "standard-v1", asynchronous.clone());
        }
        let event = self.fanin_gaps(&site);

        // The poller alone: results are recorded, nothing fans in until a tick; the bench
        // ticks as soon as it sees every step finished, so this is the tick's own share only.
        self.stack.kv_put("orchestration:config", &json!({"EVENT_DRIVEN_FANIN": false}).to_string());
        let site_cron = format!("bench-w3-cron-{}", std::process::id());
        let mut ticks = Vec::new();
        for _ in 0..runs.min(20) {
            let body = json!({"website_id": site_cron, "domain": "bench.example", "parameters": {"sample_behaviour": asynchronous}});
            let r = self.stack.post_as(&self.token, "/api/orchestration/run", &body);
            assert_eq!(r.status, 202, "{}", r.text());
            let run_id = r.json()["run_id"].as_str().unwrap_or_default().to_string();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (rows, _) = self.stack.sql(
                    "SELECT COUNT(*) AS n FROM steps WHERE run_id = ?1 AND finished_at IS NOT NULL",
                    &[json!(run_id)],
                );
                if rows.first().and_then(|r| r["n"].as_u64()) == Some(STEPS_PER_RUN as u64) {
                    break;
                }
                assert!(Instant::now() < deadline, "run {run_id}: steps did not finish");
                std::thread::sleep(Duration::from_millis(10));
            }
            let t = Instant::now();
            let r = self.stack.admin_post("/admin/poller/tick", &json!({}));
            assert_eq!(r.status, 200, "{}", r.text());
            ticks.push(ms(t.elapsed()));
        }
        self.stack.kv_put("orchestration:config", "{}");
        let cron = self.fanin_gaps(&site_cron);
        ticks.sort_by(f64::total_cmp);
        let summary = |v: &[f64]| json!({"n": v.len(), "p50_ms": percentile(v, 50.0), "p99_ms": percentile(v, 99.0), "max_ms": v.last()});
        json!({
            "event_driven": summary(&event),
            "cron_path_tick_issued_when_steps_done": summary(&cron),
            "cron_tick_request_ms": summary(&ticks),
            "note": "the cron path waits for the next cron tick first: up to the polling interval (cron granularity is 1 minute)",
        })
    }

    /// Rows changed in D1 per run: the delta of SQLite's `total_changes()` (local D1 is one
    /// connection) across sequential runs, divided by the runs. Index writes are not counted,
    /// so D1's billed rows_written is at least this.
    fn rows_changed_per_run(&self, plan: &str, runs: usize) -> Option<f64> {
        let changes = || self.stack.sql("SELECT total_changes() AS n", &[]).0.first().and_then(|r| r["n"].as_f64());
        let site = format!("bench-cost-{plan}");
        self.run_and_wait(&site, plan, json!({}));
        std::thread::sleep(Duration::from_millis(300)); // background writes of the warm-up run
        let before = changes()?;
        for _ in 0..runs {
            self.run_and_wait(&site, plan, json!({}));
        }
        std::thread::sleep(Duration::from_millis(300));
        Some((changes()? - before) / runs as f64)
    }

    /// The usage counters of Baton's three workers (`GET /__test/meter`), reset afterwards.
    fn meter(&self) -> Value {
        let auth = format!("Bearer {}", self.stack.secrets().admin_token);
        let r = self.stack.send("GET", "/__test/meter?reset=true", &[("Authorization", auth.as_str())], None);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Billed units per run, from the workers' own counters over `runs` sequential runs:
    /// `waited` runs are started with `?wait=30` (the first wave handed to the consumer),
    /// the others with a plain 202 and the queue (completion seen through the unmetered
    /// test SQL hook).
    fn usage_per_run(&self, plan: &str, runs: usize, waited: bool) -> Value {
        let site = format!("bench-usage-{plan}-{}", if waited { "wait" } else { "queue" });
        self.run_and_wait(&site, plan, json!({}));
        std::thread::sleep(Duration::from_millis(300)); // the warm-up's background writes
        self.meter();
        let mut ids = Vec::new();
        for _ in 0..runs {
            if waited {
                ids.push(self.run_and_wait(&site, plan, json!({})));
            } else {
                let body = json!({"website_id": site, "domain": "bench.example", "plan_id": plan});
                let r = self.stack.post_as(&self.token, "/api/orchestration/run", &body);
                assert_eq!(r.status, 202, "{}", r.text());
                let id = r.json()["run_id"].as_str().unwrap_or_default().to_string();
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline {
                    let (rows, _) = self
                        .stack
                        .sql(&format!("SELECT status IN {TERMINAL} AS done FROM runs WHERE run_id = ?1"), &[json!(id)]);
                    if rows.first().is_some_and(|r| r["done"] == 1) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                ids.push(id);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let usage = self.meter();
        let c = self.check(&site, &ids);
        let units = [
            "d1_round_trips",
            "d1_statements",
            "d1_rows_read",
            "d1_rows_written",
            "kv_reads",
            "kv_writes",
            "queue_messages",
            "subrequests",
        ];
        let mut total = serde_json::Map::new();
        for unit in units {
            let sum: f64 =
                ["orchestrator", "consumer", "poller"].iter().map(|w| usage[w][unit].as_f64().unwrap_or(0.0)).sum();
            total.insert(unit.to_string(), json!((sum / runs as f64 * 10.0).round() / 10.0));
        }
        json!({"plan": plan, "started_with": if waited { "?wait=30" } else { "202 + queue" }, "runs": runs,
               "per_run": total, "by_worker_total": usage, "lost": c.lost, "duplicated": c.duplicated, "completed": c.completed})
    }

    /// Poller cost: rows read by one tick with `active` runs in flight, before and after
    /// `history` finished runs (with their steps) are added.
    fn poller_rows(&self, active: usize, history: usize) -> Value {
        let never = json!({"*": {"never_answer": true}});
        for _ in 0..active {
            let body = json!({"website_id": "bench-active", "domain": "bench.example", "parameters": {"sample_behaviour": never}});
            let r = self.stack.post_as(&self.token, "/api/orchestration/run", &body);
            assert_eq!(r.status, 202, "{}", r.text());
        }
        std::thread::sleep(Duration::from_secs(2));
        let tick = || self.stack.admin_post("/admin/poller/tick", &json!({})).json();
        let before = tick();
        self.stack.sql(
            "INSERT INTO runs (run_id, kind, client_id, website_id, domain, plan_id, plan_name, plan_json, status, created_at, started_at, deadline_at, completed_at) \
             WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?1) \
             SELECT 'run_bench_history_' || i, 'diagnostic', 'bench', 'bench-history', 'h.example', 'standard-v1', 'standard', '{}', 'completed', 1, 1, 2, 3 FROM c",
            &[json!(history)],
        );
        self.stack.sql(
            "INSERT INTO steps (run_id, service, position, wave, status, attempts, started_at, finished_at) \
             WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?1), \
               s(service, position) AS (VALUES ('a', 0), ('b', 1), ('c', 2), ('d', 3), ('e', 4)) \
             SELECT 'run_bench_history_' || i, service, position, 1, 'completed', 1, 1, 2 FROM c, s",
            &[json!(history)],
        );
        let after = tick();
        json!({"active_runs": active, "finished_runs_added": history, "tick_before": before, "tick_after": after,
               "rows_read_before": before["last_run"]["counts"]["rows_read"], "rows_read_after": after["last_run"]["counts"]["rows_read"],
               "admission_rows_read_before": before["last_run"]["admission"]["rows_read"], "admission_rows_read_after": after["last_run"]["admission"]["rows_read"]})
    }
}

// ---- Cloudflare Workflows ------------------------------------------------------------------

struct Workflows {
    port: u16,
    child: Child,
    _guard: ChildStdin,
    scratch: PathBuf,
}

impl Workflows {
    fn start() -> Workflows {
        let root = repo_root();
        let wrangler =
            std::env::var("WRANGLER").map(PathBuf::from).unwrap_or_else(|_| root.join("node_modules/.bin/wrangler"));
        let scratch = std::env::temp_dir().join(format!("baton-bench-wf-{}", std::process::id()));
        fs::create_dir_all(&scratch).expect("creating the scratch directory");
        let port = free_port();
        let inspector = free_port();
        let log = fs::File::create(scratch.join("wrangler.log")).expect("creating the log");
        let mut command = Command::new("bash");
        command
            .current_dir(&root)
            .arg(root.join("scripts/stack-guard.sh"))
            .arg(&wrangler)
            .args(["dev", "-c", "bench/workflows/wrangler.toml", "-c", "crates/sample-services/wrangler.toml"])
            .args(["--port", &port.to_string(), "--inspector-port", &inspector.to_string()])
            .args(["--ip", "127.0.0.1", "--show-interactive-dev-session=false", "--log-level", "warn"])
            .arg("--persist-to")
            .arg(scratch.join("state"))
            .env("CI", "true")
            .env("BATON_SKIP_BUILD", "1")
            .env("BATON_GUARD_CLEANUP", &scratch)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("cloning the log"))
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().expect("starting wrangler dev for the Workflows peer");
        let guard = child.stdin.take().expect("the guard pipe");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = request(port, "GET", "/health", &[], None, Duration::from_secs(5)) {
                if r.status == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the Workflows peer did not start:\n{}",
                fs::read_to_string(scratch.join("wrangler.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        Workflows { port, child, _guard: guard, scratch }
    }

    fn status(&self, id: &str) -> String {
        request(self.port, "GET", &format!("/status/{id}"), &[], None, Duration::from_secs(60))
            .ok()
            .and_then(|r| r.json()["status"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

fn is_terminal(status: &str) -> bool {
    matches!(status, "complete" | "errored" | "terminated")
}

impl System for Workflows {
    fn name(&self) -> &'static str {
        "Workflows"
    }

    fn run_to_end(&self, site: &str, latency_ms: u64) {
        let id = self.submit(site, latency_ms).expect("starting a workflow instance");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status(&id);
            if is_terminal(&status) {
                assert_eq!(status, "complete", "workflow {id}");
                return;
            }
            assert!(Instant::now() < deadline, "workflow {id} did not finish: {status}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn submit(&self, site: &str, latency_ms: u64) -> Option<String> {
        let body = serde_json::to_vec(
            &json!({"website_id": site, "domain": "bench.example", "parameters": params(latency_ms)}),
        )
        .ok()?;
        let r = request(
            self.port,
            "POST",
            "/start",
            &[("Content-Type", "application/json")],
            Some(&body),
            Duration::from_secs(60),
        )
        .ok()?;
        (r.status == 200).then(|| r.json()["id"].as_str().map(str::to_string)).flatten()
    }

    fn wait_all(&self, _site: &str, ids: &[String], deadline: Instant) -> W2Check {
        let mut pending: Vec<String> = ids.to_vec();
        let mut c = W2Check::default();
        while !pending.is_empty() && Instant::now() < deadline {
            let mut still = Vec::new();
            for id in pending {
                let status = self.status(&id);
                if is_terminal(&status) {
                    c.terminal += 1;
                    if status == "complete" {
                        c.completed += 1;
                        c.steps += STEPS_PER_RUN;
                    }
                } else {
                    still.push(id);
                }
            }
            pending = still;
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        c.lost = ids.len() - c.terminal;
        c
    }
}

impl Drop for Workflows {
    fn drop(&mut self) {
        let pgid = self.child.id();
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{pgid}")]).status();
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    l.local_addr().expect("the ephemeral port").port()
}

// ---- Workloads -----------------------------------------------------------------------------

/// W1 for every system, interleaved run by run (Baton, then the peer, then Baton...) so that
/// both see the same machine: on a shared 2-core machine the background load drifts more
/// between two consecutive minutes than between two consecutive runs.
fn w1(systems: &[&dyn System], o: &Options, latency_ms: u64) -> Vec<Value> {
    let site = format!("bench-w1-d{latency_ms}");
    for _ in 0..o.warmup {
        for system in systems {
            system.run_to_end(&format!("{site}-warmup"), latency_ms);
        }
    }
    let mut samples: Vec<Vec<f64>> = systems.iter().map(|_| Vec::with_capacity(o.runs)).collect();
    for _ in 0..o.runs {
        for (system, samples) in systems.iter().zip(samples.iter_mut()) {
            let t = Instant::now();
            system.run_to_end(&site, latency_ms);
            samples.push(ms(t.elapsed()));
        }
    }
    let critical = 2.0 * latency_ms as f64;
    systems
        .iter()
        .zip(samples)
        .map(|(system, mut samples)| {
            samples.sort_by(f64::total_cmp);
            let (p50, p99) = (percentile(&samples, 50.0), percentile(&samples, 99.0));
            eprintln!("  {} W1 d={latency_ms}: p50 {p50:.1} ms, p99 {p99:.1} ms", system.name());
            json!({
                "latency_ms": latency_ms, "runs": o.runs, "p50_ms": p50, "p99_ms": p99,
                "mean_ms": samples.iter().sum::<f64>() / samples.len() as f64,
                "overhead_p50_ms": p50 - critical, "overhead_p99_ms": p99 - critical,
            })
        })
        .collect()
}

fn w2(system: &dyn System, o: &Options, runs: usize) -> Value {
    let site = format!("bench-w2-{runs}-{}", std::process::id());
    let ids = Arc::new(Mutex::new(Vec::with_capacity(runs)));
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..o.threads.min(runs) {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::SeqCst) < runs {
                    match system.submit(&site, 0) {
                        Some(id) => ids.lock().expect("ids").push(id),
                        None => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    let submitted = started.elapsed();
    let ids = ids.lock().expect("ids").clone();
    let check = system.wait_all(&site, &ids, started + Duration::from_secs(600));
    let wall = started.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::SeqCst);
    let lost = check.lost + failed;
    eprintln!(
        "  {} W2 R={runs}: {wall:.2} s, {:.1} runs/s, {} lost, {} duplicated",
        system.name(),
        runs as f64 / wall,
        lost,
        check.duplicated
    );
    json!({
        "runs": runs, "client_threads": o.threads, "submit_s": submitted.as_secs_f64(), "wall_s": wall,
        "runs_per_s": runs as f64 / wall, "steps_per_s": check.steps as f64 / wall,
        "terminal": check.terminal, "completed": check.completed, "submit_failures": failed,
        "lost": lost, "duplicated": check.duplicated,
    })
}

/// W1 (interleaved) and W2 (one system after the other, per size) for every system; one
/// result object per system.
fn run_all(systems: &[&dyn System], o: &Options) -> Vec<Value> {
    let mut results: Vec<Value> = systems.iter().map(|_| json!({"w1": [], "w2": []})).collect();
    for &d in &o.latencies {
        for (result, w1) in results.iter_mut().zip(w1(systems, o, d)) {
            result["w1"].as_array_mut().expect("w1 list").push(w1);
        }
    }
    for &r in &o.w2 {
        for (result, system) in results.iter_mut().zip(systems) {
            result["w2"].as_array_mut().expect("w2 list").push(w2(*system, o, r));
        }
    }
    results
}

fn ratio(a: &Value, b: &Value) -> String {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64().map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "–".into())
}

fn table(results: &Value) -> String {
    let b = &results["baton"];
    let w = &results["workflows"];
    let mut t =
        String::from("| workload | metric | Baton | Workflows | Baton / Workflows |\n|---|---|---:|---:|---:|\n");
    for (i, row) in b["w1"].as_array().into_iter().flatten().enumerate() {
        let peer = &w["w1"][i];
        for (metric, key) in [
            ("p50 ms", "p50_ms"),
            ("p99 ms", "p99_ms"),
            ("overhead p50 ms", "overhead_p50_ms"),
            ("overhead p99 ms", "overhead_p99_ms"),
        ] {
            t.push_str(&format!(
                "| W1 d={} ms | {metric} | {} | {} | {} |\n",
                row["latency_ms"],
                num(&row[key], 1),
                num(&peer[key], 1),
                ratio(&row[key], &peer[key])
            ));
        }
    }
    for (i, row) in b["w2"].as_array().into_iter().flatten().enumerate() {
        let peer = &w["w2"][i];
        for (metric, key, d) in [
            ("wall s", "wall_s", 2),
            ("runs/s", "runs_per_s", 1),
            ("steps/s", "steps_per_s", 1),
            ("lost", "lost", 0),
            ("duplicated", "duplicated", 0),
        ] {
            t.push_str(&format!(
                "| W2 R={} | {metric} | {} | {} | {} |\n",
                row["runs"],
                num(&row[key], d),
                num(&peer[key], d),
                ratio(&row[key], &peer[key])
            ));
        }
    }
    let usage = b["cost"]["usage_per_run"].as_array().cloned().unwrap_or_default();
    if !usage.is_empty() {
        t.push_str("\n| Baton cost per run | D1 round trips | D1 statements | D1 rows read | D1 rows written | KV reads | KV writes | queue messages | subrequests |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for u in usage {
            let p = &u["per_run"];
            t.push_str(&format!(
                "| {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                u["plan"].as_str().unwrap_or(""),
                u["started_with"].as_str().unwrap_or(""),
                p["d1_round_trips"],
                p["d1_statements"],
                p["d1_rows_read"],
                p["d1_rows_written"],
                p["kv_reads"],
                p["kv_writes"],
                p["queue_messages"],
                p["subrequests"]
            ));
        }
    }
    t
}

fn machine() -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    json!({"cpu": cpu, "cores": cores, "date": date})
}

fn main() {
    let o = parse_options();
    let mut results = json!({"machine": machine(), "state": "disk (wrangler dev --persist-to)"});

    eprintln!("starting Baton (wrangler dev)");
    // The consumer and the poller answer `/__test/meter` too (their usage counters).
    let hooks = vec![("BATON_TEST_HOOKS".to_string(), "true".to_string())];
    let stack =
        Stack::start(StackOptions { consumer_vars: hooks.clone(), poller_vars: hooks, ..StackOptions::default() });
    let baton = Baton { token: stack.token(0).to_string(), stack, poll: o.poll };
    let peer = o.workflows.then(|| {
        eprintln!("starting the Workflows peer (wrangler dev)");
        Workflows::start()
    });
    let mut systems: Vec<&dyn System> = vec![&baton];
    if let Some(peer) = &peer {
        systems.push(peer);
    }
    let mut measured = run_all(&systems, &o).into_iter();
    results["baton"] = measured.next().unwrap_or(Value::Null);
    if peer.is_some() {
        results["workflows"] = measured.next().unwrap_or(Value::Null);
    }
    drop(peer); // the extras measure Baton alone
    results["baton"]["w1_observed_by"] =
        json!(if o.poll { "polling GET /runs/:id every 5 ms" } else { "POST /run?wait=30" });
    results["baton"]["w1_phases"] = json!(o
        .latencies
        .iter()
        .map(|d| json!({"latency_ms": d, "phases": baton.phases(&format!("bench-w1-d{d}"))}))
        .collect::<Vec<_>>());
    if o.extras {
        results["baton"]["w3"] = baton.w3(o.runs.min(50));
        eprintln!("  Baton W3: {}", results["baton"]["w3"]);
        results["baton"]["cost"] = json!({
            "method": "D1 rows changed per run = delta of SQLite total_changes() over sequential runs",
            "d1_rows_changed_per_run": {
                "quick-v1": baton.rows_changed_per_run("quick-v1", 20),
                "standard-v1": baton.rows_changed_per_run("standard-v1", 20),
            },
            "usage_per_run": [
                baton.usage_per_run("quick-v1", 20, true),
                baton.usage_per_run("standard-v1", 20, true),
                baton.usage_per_run("quick-v1", 20, false),
                baton.usage_per_run("standard-v1", 20, false),
            ],
            "poller": baton.poller_rows(100, 10_000),
        });
        eprintln!("  Baton cost: {}", results["baton"]["cost"]);
    }
    drop(baton);

    let t = table(&results);
    println!("{t}");
    if let Some(dir) = o.out.parent() {
        let _ = fs::create_dir_all(dir);
    }
    fs::write(&o.out, serde_json::to_string_pretty(&results).expect("serialising results"))
        .expect("writing the results");
    eprintln!("results written to {}", o.out.display());
}
