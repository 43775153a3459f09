//! The history section (Baton only, on a stack of its own so that nothing the other sections
//! did is in its numbers):
//!
//! 1. **Bytes**: what a standard-v1 run takes of D1 while it lives and once archived, and its
//!    archive object in R2. `--archive-runs` runs of the second dev client (whose retention is a
//!    few seconds) are created as W2 creates them; the D1 size (`meta.size_after`: the pages in
//!    use) is read before, once they have ended, and once the poller has archived them.
//! 2. **Archive throughput**: the bench plays the poller, ticking back to back on that backlog,
//!    first with the default `POLLER_BATCH_SIZE`, then with the largest.
//! 3. **Soak**: W1, the runs list's first page, a `/metrics` scrape and one poller tick, on the
//!    empty database and again after `--history` finished runs of the first client are loaded
//!    (server-side, `INSERT … SELECT` over a recursive CTE, `--history-chunk` runs a statement).
//! 4. **A shard on paper**: days until one D1 database is full, every run kept and with the
//!    default retention, from the measured bytes; runs/s within D1's published query rate, from
//!    the measured statements and round trips.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use baton_e2e::{now_ms, Stack, StackOptions};
use serde_json::{json, Value};

use crate::baton::TERMINAL;
use crate::options::Options;
use crate::{ms, percentile};

/// The retention of the archive batch's client: its runs are due this long after they end.
const SHORT_RETENTION_S: f64 = 20.0;
/// The default retention (`RETENTION_DAYS`), for the shard's days on paper.
const RETENTION_DAYS: f64 = 30.0;
/// A short retention, for what a client that keeps a day of live history gets from a shard.
const SHORT_RETENTION_DAYS: f64 = 1.0;
/// W1 runs per soak measurement, after [`W1_WARMUP`] runs.
const W1_RUNS: usize = 50;
const W1_WARMUP: usize = 10;
/// Requests per latency of the runs list.
const LIST_REQUESTS: usize = 20;
/// `/metrics` scrapes per measurement.
const SCRAPES: usize = 3;
/// Loaded history runs are this far apart (`created_at`), ending 20 ms after they start.
const SPACING_MS: u64 = 10;
/// The largest `POLLER_BATCH_SIZE`.
const MAX_BATCH: u64 = 1000;
/// The default `POLLER_BATCH_SIZE`: a tick archives at most this many runs.
const DEFAULT_BATCH: u64 = 100;
/// Most rounds of `POLLER_BATCH_SIZE` runs one cron firing archives per shard (the poller's
/// `ARCHIVE_MAX_ROUNDS`).
const ARCHIVE_MAX_ROUNDS: u64 = 5;
/// How long one firing keeps archiving per shard, in seconds (the poller's `ARCHIVE_BUDGET_MS`).
const ARCHIVE_BUDGET_S: f64 = 10.0;
/// D1's published figures: a database runs one query at a time, ~1 ms each.
const D1_QUERIES_PER_S: f64 = 1000.0;
/// A D1 database's size limit, paid and Free plans, in bytes.
const SHARD_BYTES: [(&str, f64); 2] = [("10 GB", 10e9), ("500 MB (Free)", 500e6)];
/// Sustained creation rates the shard table is computed for.
const RATES: [f64; 3] = [1.0, 10.0, 100.0];
const DAY_S: f64 = 86_400.0;

struct History<'a> {
    stack: &'a Stack,
    admin: String,
}

/// The whole section's results (`results.baton.history`).
pub fn run(o: &Options) -> Value {
    let started = Instant::now();
    eprintln!("starting Baton for the history section (wrangler dev)");
    let secrets = baton_e2e::stack::Secrets::load(&baton_e2e::repo_root());
    let archived_client = secrets.api_tokens[1].1.clone();
    let hooks = ("BATON_TEST_HOOKS".to_string(), "true".to_string());
    let retention = format!(r#"{{"{archived_client}": {:.8}}}"#, SHORT_RETENTION_S / DAY_S);
    let stack = Stack::start(StackOptions {
        consumer_vars: vec![hooks.clone()],
        poller_vars: vec![hooks, ("RETENTION_DAYS_BY_CLIENT".into(), retention)],
        ..StackOptions::default()
    });
    let h = History { admin: stack.secrets().admin_token.clone(), stack: &stack };
    let mut out = json!({"machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)});

    if o.history > 0 {
        eprintln!("  history: measuring on the empty database");
        out["empty"] = h.measure();
        eprintln!("  history: empty {}", out["empty"]);
    }
    if o.archive_runs > 0 {
        out["bytes"] = h.bytes_and_archive(o.archive_runs, o.threads);
        eprintln!("  history: bytes and archive {}", out["bytes"]);
    }
    if o.history > 0 {
        out["load"] = h.load(o.history, o.history_chunk);
        eprintln!("  history: loaded {}", out["load"]);
        out["with_history"] = h.measure();
        eprintln!("  history: with history {}", out["with_history"]);
        let ratio = |key: &str| {
            let (a, b) = (out["with_history"][key].as_f64(), out["empty"][key].as_f64());
            a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b)
        };
        let ratios = json!({
            "w1_p50_ms": ratio("w1_p50_ms"), "runs_list_p50_ms": ratio("runs_list_p50_ms"),
            "metrics_p50_ms": ratio("metrics_p50_ms"), "tick_rows_read": ratio("tick_rows_read"),
        });
        out["ratio"] = ratios;
    }
    if !out["bytes"].is_null() {
        out["shard"] = shard(&out["bytes"]);
    }
    out["seconds"] = json!(started.elapsed().as_secs_f64());
    eprintln!("  history: the section took {:.0} s", started.elapsed().as_secs_f64());
    out
}

impl History<'_> {
    fn admin_get(&self, path: &str) -> Value {
        let r = self.stack.get_as(&self.admin, path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    /// The D1 database's size in bytes (its pages in use).
    fn d1_bytes(&self) -> f64 {
        self.admin_get("/__test/d1-size")["bytes"].as_f64().expect("D1 reports its size")
    }

    /// The three workers' usage counters summed, reset afterwards.
    fn usage(&self) -> Value {
        let by_worker = self.admin_get("/__test/meter?reset=true");
        let mut total = serde_json::Map::new();
        for unit in ["d1_round_trips", "d1_statements", "d1_rows_read", "d1_rows_written"] {
            let sum: f64 =
                ["orchestrator", "consumer", "poller"].iter().map(|w| by_worker[w][unit].as_f64().unwrap_or(0.0)).sum();
            total.insert(unit.to_string(), json!(sum));
        }
        Value::Object(total)
    }

    /// One poller tick now: its `last_run` and how long the request took.
    fn tick(&self) -> (Value, f64) {
        let t = Instant::now();
        let r = self.stack.admin_post("/admin/poller/tick", &json!({}));
        assert_eq!(r.status, 200, "{}", r.text());
        (r.json()["last_run"].clone(), ms(t.elapsed()))
    }

    fn count(&self, sql: &str, site: &str) -> u64 {
        self.stack.sql(sql, &[json!(site)]).0.first().and_then(|r| r["n"].as_u64()).unwrap_or(0)
    }

    /// W1 p50 and p99, the runs list's and a `/metrics` scrape's p50, one tick's rows read and
    /// time, the database's size.
    fn measure(&self) -> Value {
        let token = self.stack.token(0).to_string();
        let body = json!({"website_id": "bench-history-w1", "domain": "bench.example", "parameters": crate::params(0)});
        let mut w1 = Vec::with_capacity(W1_RUNS);
        for i in 0..W1_RUNS + W1_WARMUP {
            let t = Instant::now();
            let r = self.stack.post_as(&token, "/api/orchestration/run?wait=30", &body);
            let elapsed = ms(t.elapsed());
            assert_eq!((r.status, &r.json()["status"]), (200, &json!("completed")), "{}", r.text());
            if i >= W1_WARMUP {
                w1.push(elapsed);
            }
        }
        let timed = |n: usize, f: &dyn Fn()| {
            let mut v: Vec<f64> = (0..n)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    ms(t.elapsed())
                })
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let list = timed(LIST_REQUESTS, &|| {
            let r = self.stack.get_as(&token, "/api/orchestration/runs");
            assert_eq!(r.status, 200, "{}", r.text());
        });
        let scrape = timed(SCRAPES, &|| {
            let r = self.stack.get_as(&self.admin, "/metrics");
            assert_eq!(r.status, 200, "{}", r.text());
        });
        std::thread::sleep(Duration::from_millis(300)); // the last W1 run's background writes
        let (tick, tick_ms) = self.tick();
        w1.sort_by(f64::total_cmp);
        json!({
            "w1_runs": W1_RUNS, "w1_p50_ms": percentile(&w1, 50.0), "w1_p99_ms": percentile(&w1, 99.0),
            "runs_list_requests": LIST_REQUESTS, "runs_list_p50_ms": percentile(&list, 50.0),
            "metrics_scrapes": SCRAPES, "metrics_p50_ms": percentile(&scrape, 50.0), "metrics_max_ms": scrape.last(),
            "tick_rows_read": tick["counts"]["rows_read"], "tick_ms": tick_ms, "d1_bytes": self.d1_bytes(),
        })
    }

    /// Starts `runs` standard-v1 runs of the second client from `threads` threads at once (as W2
    /// does) and waits for all to end: seconds from the first submit until the last ended.
    fn create(&self, site: &str, runs: usize, threads: usize) -> f64 {
        let token = self.stack.token(1).to_string();
        let body = json!({"website_id": site, "domain": "bench.example", "parameters": crate::params(0)});
        let next = AtomicUsize::new(0);
        let failed = Mutex::new(Vec::new());
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads.clamp(1, runs) {
                s.spawn(|| {
                    while next.fetch_add(1, Ordering::SeqCst) < runs {
                        let r = self.stack.post_as(&token, "/api/orchestration/run", &body);
                        if r.status != 202 {
                            failed.lock().expect("failures").push(r.text());
                        }
                    }
                });
            }
        });
        let failed = failed.into_inner().expect("failures");
        assert!(failed.is_empty(), "{} submits failed, e.g. {}", failed.len(), failed[0]);
        let deadline = started + Duration::from_secs(600);
        let terminal = format!("SELECT COUNT(*) AS n FROM runs WHERE website_id = ?1 AND status IN {TERMINAL}");
        while self.count(&terminal, site) < runs as u64 {
            assert!(Instant::now() < deadline, "the archive batch's runs did not end within 10 minutes");
            std::thread::sleep(Duration::from_millis(25));
        }
        started.elapsed().as_secs_f64()
    }

    /// Items 1 and 2: `runs` runs created and ended, then archived by back-to-back ticks.
    fn bytes_and_archive(&self, runs: usize, threads: usize) -> Value {
        let site = format!("bench-archive-{}", std::process::id());
        eprintln!("  history: {runs} runs to archive");
        let before = self.d1_bytes();
        self.usage();
        let wall = self.create(&site, runs, threads);
        std::thread::sleep(Duration::from_millis(500)); // the last runs' background writes
        let live = self.d1_bytes();
        let created = self.usage();

        // Due once the last one ended SHORT_RETENTION_S ago.
        let (rows, _) = self.stack.sql("SELECT MAX(completed_at) AS t FROM runs WHERE website_id = ?1", &[json!(site)]);
        let last_end = rows.first().and_then(|r| r["t"].as_u64()).unwrap_or(0);
        let due_at = last_end + (SHORT_RETENTION_S * 1000.0) as u64 + 1000;
        std::thread::sleep(Duration::from_millis(due_at.saturating_sub(now_ms())));

        // Back-to-back ticks: the default batch for the first half, then the largest.
        let left = |h: &History| h.count("SELECT COUNT(*) AS n FROM runs WHERE website_id = ?1", &site);
        let mut by_setting = Vec::new();
        let mut r2_bytes = 0.0;
        let mut archived_total = 0.0;
        for (batch, until_left) in [(None, runs as u64 / 2), (Some(MAX_BATCH), 0)] {
            if let Some(batch) = batch {
                self.stack.kv_put("orchestration:config", &json!({"POLLER_BATCH_SIZE": batch}).to_string());
            }
            let (mut ticks, mut archived, mut tick_ms) = (Vec::new(), 0.0, 0.0);
            while left(self) > until_left {
                let (tick, took) = self.tick();
                let n = tick["archive"]["archived"].as_f64().unwrap_or(0.0);
                assert!(n > 0.0, "a tick archived nothing with runs due: {tick}");
                archived += n;
                tick_ms += took;
                r2_bytes += tick["archive"]["bytes"].as_f64().unwrap_or(0.0);
                ticks.push(json!({"archived": n, "ms": took, "failed": tick["archive"]["failed"]}));
            }
            archived_total += archived;
            by_setting.push(json!({
                "poller_batch_size": batch.unwrap_or(DEFAULT_BATCH), "ticks": ticks.len(), "archived": archived,
                "ticks_ms": tick_ms, "runs_per_s": archived / (tick_ms / 1000.0), "by_tick": ticks,
            }));
        }
        self.stack.kv_put("orchestration:config", "{}");
        let archiving = self.usage();
        let archived = self.d1_bytes();
        let per_run = |v: &Value, n: f64| -> Value {
            let mut m = serde_json::Map::new();
            for (k, x) in v.as_object().into_iter().flatten() {
                m.insert(k.clone(), json!(x.as_f64().unwrap_or(0.0) / n));
            }
            Value::Object(m)
        };
        let created_per_s = runs as f64 / wall;
        let default_rate = by_setting[0]["runs_per_s"].as_f64().unwrap_or(f64::NAN);
        let max_rate = by_setting[1]["runs_per_s"].as_f64().unwrap_or(f64::NAN);
        // What the cron sustains in one shard: every firing (once a minute) archives up to
        // ARCHIVE_MAX_ROUNDS batches within ARCHIVE_BUDGET_S, at most the rate measured here.
        let cron = [(DEFAULT_BATCH, default_rate), (MAX_BATCH, max_rate)].map(|(batch, rate)| {
            let per_firing = ((batch * ARCHIVE_MAX_ROUNDS) as f64).min(rate * ARCHIVE_BUDGET_S);
            json!({"poller_batch_size": batch, "per_firing": per_firing, "runs_per_s": per_firing / 60.0})
        });
        json!({
            "runs": runs, "client_retention_s": SHORT_RETENTION_S,
            "d1_bytes_before": before, "d1_bytes_live": live, "d1_bytes_archived": archived,
            "d1_bytes_per_run_live": (live - before) / runs as f64,
            "d1_bytes_per_run_archived": (archived - before) / runs as f64,
            "r2_bytes_per_object": r2_bytes / archived_total,
            "created_wall_s": wall, "created_per_s": created_per_s,
            "usage_per_run_created": per_run(&created, runs as f64),
            "usage_per_run_archived": per_run(&archiving, archived_total),
            "archive": by_setting,
            "archive_per_s_default": default_rate,
            "archive_to_created_ratio": default_rate / created_per_s,
            "archive_per_s_by_cron": cron,
        })
    }

    /// Loads `runs` finished standard-v1 runs of the first client with their steps, in
    /// statements of `chunk` runs: copies of one real run (its plan, its steps' times and
    /// states) under new ids, each step's output cut to a few bytes, spread over the minutes
    /// before now (so they are live history, within the retention).
    fn load(&self, runs: usize, chunk: usize) -> Value {
        let token = self.stack.token(0).to_string();
        let body =
            json!({"website_id": "bench-history-template", "domain": "bench.example", "parameters": crate::params(0)});
        let r = self.stack.post_as(&token, "/api/orchestration/run?wait=30", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        let template = r.json()["run_id"].as_str().expect("run_id").to_string();
        let base = now_ms() - 60_000 - runs as u64 * SPACING_MS;
        let runs_sql = clone_sql("runs", &self.columns("runs"));
        let steps_sql = clone_sql("steps", &self.columns("steps"));
        eprintln!("  history: loading {runs} finished runs, {chunk} a statement");
        let started = Instant::now();
        let mut first = 1;
        while first <= runs {
            let last = (first + chunk - 1).min(runs);
            let params = [json!(first), json!(last), json!(base), json!(template), json!(SPACING_MS)];
            for sql in [&runs_sql, &steps_sql] {
                self.stack.sql(sql, &params);
            }
            first = last + 1;
        }
        let seconds = started.elapsed().as_secs_f64();
        let loaded = self.count("SELECT COUNT(*) AS n FROM runs WHERE client_id = ?1", self.stack.client_id(0));
        json!({"runs": runs, "chunk": chunk, "seconds": seconds, "runs_per_s": runs as f64 / seconds,
               "client_runs_after": loaded, "d1_bytes_after": self.d1_bytes()})
    }

    fn columns(&self, table: &str) -> Vec<String> {
        let rows = self.stack.sql_on(0, "SELECT name FROM pragma_table_info(?1)", &[json!(table)]);
        rows.iter().filter_map(|r| r["name"].as_str().map(str::to_string)).collect()
    }
}

/// `INSERT … SELECT` of copies ?1..=?2 of run ?4 (runs or steps), created ?5 ms apart from ?3:
/// new run ids in the template's shard, every time shifted, no idempotency key, the sites spread over 100, the steps'
/// outputs a few bytes.
fn clone_sql(table: &str, columns: &[String]) -> String {
    let exprs: Vec<String> = columns
        .iter()
        .map(|c| match (table, c.as_str()) {
            (_, "run_id") => "n.run_id".to_string(),
            ("runs", "website_id") => "'bench-history-' || (n.i % 100)".to_string(),
            ("runs", "idempotency_key" | "diagnosis_event_id") => "NULL".to_string(),
            ("steps", "output") => "json_object('score', n.i % 100)".to_string(),
            (_, c) if c.ends_with("_at") => format!("t.{c} + n.shift"),
            (_, c) => format!("t.{c}"),
        })
        .collect();
    format!(
        "INSERT INTO {table} ({}) \
         WITH RECURSIVE c(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM c WHERE i < ?2), \
           n(i, run_id, shift) AS (SELECT c.i, 'run_' || (?3 + c.i * ?5) || '_' || printf('%016x', c.i) \
             || CASE WHEN instr(?4, '_s') > 0 THEN substr(?4, instr(?4, '_s')) ELSE '' END, \
             ?3 + c.i * ?5 - t.created_at FROM c, runs t WHERE t.run_id = ?4) \
         SELECT {} FROM n, {table} t WHERE t.run_id = ?4",
        columns.join(", "),
        exprs.join(", ")
    )
}

/// Days until `capacity` bytes of D1 are full at `rate` runs/s, each run taking `live` bytes
/// while it lives and `archived` bytes after `retention_days` (`None`: every run kept).
pub fn days_until_full(capacity: f64, rate: f64, live: f64, archived: f64, retention_days: Option<f64>) -> f64 {
    let per_day = rate * DAY_S;
    match retention_days {
        Some(window) if per_day * window * live < capacity => {
            window + (capacity - per_day * window * live) / (per_day * archived)
        }
        _ => capacity / (per_day * live),
    }
}

/// Item 4: days until a shard is full, and runs/s one shard takes within D1's query rate.
fn shard(bytes: &Value) -> Value {
    let live = bytes["d1_bytes_per_run_live"].as_f64().unwrap_or(f64::NAN);
    let archived = bytes["d1_bytes_per_run_archived"].as_f64().unwrap_or(f64::NAN);
    let days: Vec<Value> = SHARD_BYTES
        .iter()
        .flat_map(|&(name, capacity)| {
            RATES.iter().map(move |&rate| {
                json!({"shard": name, "capacity_bytes": capacity, "runs_per_s": rate,
                       "days_every_run_kept": days_until_full(capacity, rate, live, archived, None),
                       "days_retention_30": days_until_full(capacity, rate, live, archived, Some(RETENTION_DAYS)),
                       "days_retention_1": days_until_full(capacity, rate, live, archived, Some(SHORT_RETENTION_DAYS))})
            })
        })
        .collect();
    let created = &bytes["usage_per_run_created"];
    let archiving = &bytes["usage_per_run_archived"];
    let rate = |unit: &str, with_archive: bool| {
        let per_run = created[unit].as_f64().unwrap_or(f64::NAN)
            + if with_archive { archiving[unit].as_f64().unwrap_or(f64::NAN) } else { 0.0 };
        D1_QUERIES_PER_S / per_run
    };
    json!({
        "live_bytes_per_run": live, "archived_bytes_per_run": archived, "retention_days": RETENTION_DAYS,
        "days": days, "d1_queries_per_s": D1_QUERIES_PER_S,
        "runs_per_s_if_a_statement_takes_1ms": rate("d1_statements", false),
        "runs_per_s_if_a_round_trip_takes_1ms": rate("d1_round_trips", false),
        "runs_per_s_with_archiving_if_a_statement_takes_1ms": rate("d1_statements", true),
        "runs_per_s_with_archiving_if_a_round_trip_takes_1ms": rate("d1_round_trips", true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_fills_at_the_live_rate_then_at_the_archived_rate() {
        // 1 run/s, 1,000 bytes live, 10 archived, 100 MB: kept, 1157.4 days; with 30 days of
        // retention the window holds 2.592 GB > 100 MB, so it fills within the window too.
        let kept = days_until_full(100e6, 1.0, 1000.0, 10.0, None);
        assert!((kept - 100e6 / 86_400_000.0).abs() < 1e-9, "{kept}");
        assert_eq!(days_until_full(100e6, 1.0, 1000.0, 10.0, Some(30.0)), kept);
        // 10 GB: the window takes 2.592 GB, the rest fills at 864,000 bytes a day.
        let bounded = days_until_full(10e9, 1.0, 1000.0, 10.0, Some(30.0));
        assert!((bounded - (30.0 + (10e9 - 2.592e9) / 864_000.0)).abs() < 1e-6, "{bounded}");
    }

    #[test]
    fn the_copies_get_new_ids_shifted_times_and_small_outputs() {
        let columns: Vec<String> =
            ["run_id", "service", "started_at", "output", "status"].iter().map(|c| c.to_string()).collect();
        let sql = clone_sql("steps", &columns);
        assert!(sql.starts_with("INSERT INTO steps (run_id, service, started_at, output, status) WITH RECURSIVE"));
        assert!(sql.ends_with(
            "SELECT n.run_id, t.service, t.started_at + n.shift, json_object('score', n.i % 100), t.status \
             FROM n, steps t WHERE t.run_id = ?4"
        ));
    }
}
