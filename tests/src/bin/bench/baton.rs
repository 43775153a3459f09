//! Baton as the bench drives it: runs through the API, checks and costs through the test hooks
//! (`/__test/sql`, `/__test/meter`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use baton_e2e::http::request;
use baton_e2e::Stack;
use serde_json::{json, Value};

use crate::{ms, params, percentile, Bulk, Plan, System, W2Check, WAVE_ONE, WIDE_STEPS};

pub const TERMINAL: &str = "('completed','failed','timeout','cancelled')";
const STEPS_PER_RUN: usize = 5;

/// The custom plan W5 runs on Baton (created by [`Baton::create_wide_plan`]).
pub const WIDE_PLAN_ID: &str = "bench-wide";
/// The plan of W4.
pub const W4_PLAN_ID: &str = "bench-w4";

/// The wide plan as a plan draft: the same steps as `WIDE_STEPS` in bench/shared/plans.js.
/// Each step names the sample service it calls by `worker_key`, so one service serves
/// several steps.
fn wide_plan() -> Value {
    let names: Vec<String> = (1..=WIDE_STEPS).map(|i| format!("wide-{i:02}")).collect();
    let mut services: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| json!({"service": name, "worker_key": WAVE_ONE[i % WAVE_ONE.len()]}))
        .collect();
    services.push(json!({"service": "wide-join", "worker_key": "competitive-intelligence", "depends_on": names}));
    json!({
        "plan_id": WIDE_PLAN_ID, "name": "Bench: wide",
        "description": format!("{WIDE_STEPS} independent steps, then one depending on all of them"),
        "max_run_duration_ms": 300_000, "services": services,
    })
}

pub struct Baton {
    stack: Stack,
    token: String,
    /// W1 and W5 observe completion by polling `GET /runs/:id` every 5 ms (as the Workflows
    /// peer polls its status) instead of `?wait`.
    poll: bool,
}

impl Baton {
    pub fn new(stack: Stack, poll: bool) -> Baton {
        Baton { token: stack.token(0).to_string(), stack, poll }
    }

    /// Creates the wide plan (W5) for the bench's client.
    pub fn create_wide_plan(&self) {
        let r = self.stack.post_as(&self.token, "/api/orchestration/plans", &wide_plan());
        assert_eq!(r.status, 201, "creating the wide plan: {}", r.text());
    }

    fn body(plan: Plan, site: &str, latency_ms: u64) -> Value {
        let mut body = json!({"website_id": site, "domain": "bench.example", "parameters": params(latency_ms)});
        if plan == Plan::Wide {
            body["plan_id"] = json!(WIDE_PLAN_ID); // standard-v1 is the default
        }
        body
    }

    /// Starts a run with a plain 202; returns its id.
    fn start(&self, plan: Plan, site: &str, latency_ms: u64) -> Option<String> {
        let body = serde_json::to_vec(&Self::body(plan, site, latency_ms)).ok()?;
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
}

impl System for Baton {
    fn key(&self) -> &'static str {
        "baton"
    }

    fn name(&self) -> &'static str {
        "Baton"
    }

    fn run_to_end(&self, plan: Plan, site: &str, latency_ms: u64) {
        if self.poll {
            let id = self.start(plan, site, latency_ms).expect("starting a run");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let r = self.stack.get_as(&self.token, &format!("/api/orchestration/runs/{id}"));
                if r.json()["terminal"] == true {
                    assert_every_step_completed(&r.json()["summary"]);
                    return;
                }
                assert!(Instant::now() < deadline, "run {id} did not finish");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let body = Self::body(plan, site, latency_ms);
        let r = self.stack.post_as(&self.token, "/api/orchestration/run?wait=30", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_every_step_completed(&r.json()["summary"]);
    }
}

/// A measured run counts only if it did all its work: completed, every step completed (a
/// run "completed" with failed steps, e.g. refused calls, would be measured doing less).
fn assert_every_step_completed(summary: &Value) {
    assert_eq!(summary["status"], "completed", "a measured run did not complete: {summary}");
    assert_eq!(
        summary["servicesCompleted"], summary["servicesTotal"],
        "a measured run completed without all its steps: {summary}"
    );
}

impl Bulk for Baton {
    fn submit(&self, site: &str, latency_ms: u64) -> Option<String> {
        self.start(Plan::Standard, site, latency_ms)
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
    pub fn phases(&self, site: &str) -> Value {
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

// ---- Baton only: W3 fan-in latency and cost ------------------------------------------------

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
    pub fn w3(&self, runs: usize) -> Value {
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

    /// W4, deadline overshoot: `runs` runs at once of a plan whose three steps each time out
    /// one attempt (a held-open connection; a service that accepted and reports progress; one
    /// that accepted and does not), whose fourth step outlives the run's deadline and whose
    /// fifth completes (so the run is analysed and ends `timeout`, not `failed`).
    /// Overshoot = when the deadline took effect − when it was due: for an attempt, its
    /// step's end − (dispatch + timeout); for a run, its fan-in claim − its deadline.
    pub fn w4(&self, runs: usize) -> Value {
        let plan = json!({
            "plan_id": W4_PLAN_ID, "name": "Deadline overshoot", "max_run_duration_ms": 8_000,
            "services": [
                {"service": "technical-seo", "timeout_ms": 2_000, "retry": {"max_attempts": 1}},
                {"service": "serp-intelligence", "timeout_ms": 3_000, "retry": {"max_attempts": 1}},
                {"service": "vitals-monitor", "timeout_ms": 4_000, "retry": {"max_attempts": 1}},
                {"service": "domain-authority", "timeout_ms": 8_000},
                {"service": "competitive-intelligence"},
            ],
        });
        let r = self.stack.post_as(&self.token, "/api/orchestration/plans", &plan);
        assert!(r.status == 201 || r.status == 409, "creating the W4 plan: {}", r.text());
        let behaviour = json!({
            "technical-seo": {"hold_open": true},
            "serp-intelligence": {"never_answer": true},
            "vitals-monitor": {"never_answer": true, "no_progress": true},
            "domain-authority": {"never_answer": true, "no_progress": true},
        });
        let site = format!("bench-w4-{}", std::process::id());
        let body = json!({"website_id": site, "domain": "bench.example", "plan_id": W4_PLAN_ID,
                          "parameters": {"sample_behaviour": behaviour}});
        for _ in 0..runs {
            let r = self.stack.post_as(&self.token, "/api/orchestration/run", &body);
            assert_eq!(r.status, 202, "{}", r.text());
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (rows, _) = self.stack.sql(
                &format!("SELECT COUNT(*) AS n FROM runs WHERE website_id = ?1 AND status IN {TERMINAL}"),
                &[json!(site)],
            );
            if rows.first().and_then(|r| r["n"].as_u64()) == Some(runs as u64) {
                break;
            }
            assert!(Instant::now() < deadline, "W4 runs did not all end within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let (attempts, _) = self.stack.sql(
            "SELECT s.service, s.finished_at - (s.started_at + CASE s.service WHEN 'technical-seo' THEN 2000              WHEN 'serp-intelligence' THEN 3000 ELSE 4000 END) AS late FROM steps s JOIN runs r ON r.run_id = s.run_id              WHERE r.website_id = ?1 AND s.service IN ('technical-seo', 'serp-intelligence', 'vitals-monitor') \
             AND s.status = 'timeout'",
            &[json!(site)],
        );
        let (ends, _) = self
            .stack
            .sql("SELECT claimed_at - deadline_at AS late, status FROM runs WHERE website_id = ?1", &[json!(site)]);
        let summary = |rows: &[Value]| {
            let mut v: Vec<f64> = rows.iter().filter_map(|r| r["late"].as_f64()).collect();
            v.sort_by(f64::total_cmp);
            json!({"n": v.len(), "p50_ms": percentile(&v, 50.0), "p99_ms": percentile(&v, 99.0),
                   "max_ms": v.last(), "min_ms": v.first()})
        };
        let by =
            |service: &str| summary(&attempts.iter().filter(|r| r["service"] == service).cloned().collect::<Vec<_>>());
        json!({
            "runs": runs,
            "timed_out_runs": ends.iter().filter(|r| r["status"] == "timeout").count(),
            "attempts": summary(&attempts),
            "attempts_by_kind": {
                "held_open_connection": by("technical-seo"),
                "accepted_with_progress": by("serp-intelligence"),
                "accepted_without_progress": by("vitals-monitor"),
            },
            "runs_deadline": summary(&ends),
            "polling_interval_minutes": 5,
            "ticks_sent": 0,
        })
    }

    /// Rows changed in D1 per run: the delta of SQLite's `total_changes()` (local D1 is one
    /// connection) across sequential runs, divided by the runs. Index writes are not counted,
    /// so D1's billed rows_written is at least this.
    pub fn rows_changed_per_run(&self, plan: &str, runs: usize) -> Option<f64> {
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

    /// Billed units per run over `runs` sequential runs, as Baton records them with each run
    /// (`cost` of `GET /runs/:id`), beside the workers' own counters over the same time
    /// (`isolate_per_run`: also what no run is charged for, such as recording the units and this
    /// bench's reads). `waited` runs are started with `?wait=30`, the others with a plain 202
    /// (completion seen through the unmetered test SQL hook); both run their first wave in the
    /// orchestrator.
    pub fn usage_per_run(&self, plan: &str, runs: usize, waited: bool) -> Value {
        let site = format!("bench-usage-{plan}-{}", if waited { "wait" } else { "202" });
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
        // Each run's units as recorded with it, once they stop changing (recorded after the
        // answer).
        let recorded = || -> (BTreeMap<String, f64>, f64) {
            let mut sum = BTreeMap::new();
            let mut usd = 0.0;
            for id in &ids {
                let r = self.stack.get_as(&self.token, &format!("/api/orchestration/runs/{id}"));
                let cost = &r.json()["cost"];
                usd += cost["usd"].as_f64().unwrap_or(0.0);
                for (unit, n) in cost["units"].as_object().cloned().unwrap_or_default() {
                    *sum.entry(unit).or_insert(0.0) += n.as_f64().unwrap_or(0.0);
                }
            }
            (sum, usd)
        };
        let mut last = recorded();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            let now = recorded();
            if now == last {
                break;
            }
            last = now;
        }
        let round = |v: f64| (v / runs as f64 * 10.0).round() / 10.0;
        let per_run: serde_json::Map<String, Value> =
            last.0.iter().map(|(u, n)| (u.clone(), json!(round(*n)))).collect();
        let usd_per_run = last.1 / runs as f64;
        let mut isolate = serde_json::Map::new();
        for unit in baton_core::cost::UNIT_NAMES {
            let sum: f64 =
                ["orchestrator", "consumer", "poller"].iter().map(|w| usage[w][unit].as_f64().unwrap_or(0.0)).sum();
            isolate.insert(unit.to_string(), json!(round(sum)));
        }
        // Rows read per step shows how the cost grows with the width of a plan (W5).
        let steps = c.steps as f64 / runs as f64;
        let rows_read_per_step =
            per_run.get("d1_rows_read").and_then(Value::as_f64).map(|r| (r / steps * 10.0).round() / 10.0);
        json!({"plan": plan, "started_with": if waited { "?wait=30" } else { "202" }, "runs": runs,
               "steps": steps, "per_run": per_run, "usd_per_run": usd_per_run, "isolate_per_run": isolate,
               "d1_rows_read_per_step": rows_read_per_step,
               "by_worker_total": usage, "lost": c.lost, "duplicated": c.duplicated, "completed": c.completed})
    }

    /// Poller cost: rows read by one tick with `active` runs in flight, before and after
    /// `history` finished runs (with their steps) are added.
    pub fn poller_rows(&self, active: usize, history: usize) -> Value {
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
