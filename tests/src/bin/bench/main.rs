//! `make bench`: Baton against a Cloudflare Workflows implementation of the same plans and a
//! floor that makes the same service calls with no durable state, all on the same local runtime
//! (`wrangler dev`) with state on disk. See BENCHMARKS.md; the options are in [`options::USAGE`].
//!
//! W1: sequential standard-v1 runs, end-to-end latency seen by the client (p50/p99), and the
//!     overhead above the floor.
//! W2: R runs submitted concurrently; wall time, runs/s, steps/s, lost and duplicated runs, in
//!     rounds the systems take turns at (so both see the same machine), medians reported.
//! W3 (Baton): last result callback → fan-in claim, event-driven and by the poller alone.
//! W5: a wide plan, 20 independent steps then one depending on all 20: latency, and Baton's
//!     D1 cost per run next to standard-v1's.
//! Cost (Baton): usage per run; rows read by a poller tick before and after history.
//! History (Baton, a stack of its own): D1 bytes per run live and archived, R2 bytes per
//!     object, archive throughput, W1 / runs list / `/metrics` / tick with a large history,
//!     and a D1 shard on paper.

mod baton;
mod history;
mod options;
mod peers;
mod report;

use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_e2e::{repo_root, Stack, StackOptions};
use serde_json::{json, Value};

use crate::baton::Baton;
use crate::options::{Command, Options, USAGE};
use crate::peers::{Floor, Workflows};

/// Independent steps of the wide plan (W5); one more step depends on all of them.
const WIDE_STEPS: usize = 20;
/// The services of standard-v1's first wave, in order; the wide plan's steps call them in turn.
const WAVE_ONE: [&str; 4] = ["serp-intelligence", "technical-seo", "domain-authority", "vitals-monitor"];

/// The plan a run follows. Every system runs the same calls for each: bench/shared/plans.js
/// for the JavaScript peers, standard-v1 and the custom plan of [`baton::wide_plan`] for Baton.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Baton's standard-v1: four independent steps, then one after the first of them.
    Standard,
    /// [`WIDE_STEPS`] independent steps, then one depending on all of them.
    Wide,
}

impl Plan {
    fn steps(self) -> usize {
        match self {
            Plan::Standard => 5,
            Plan::Wide => WIDE_STEPS + 1,
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median (nearest rank: the lower middle of an even count) of unsorted values.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(&values, 50.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn params(latency_ms: u64) -> Value {
    json!({"sample_behaviour": {"*": {"latency_ms": latency_ms}}})
}

/// A system under test, as the latency workloads (W1, W5) drive it.
trait System: Sync {
    /// Its key in the results (`baton`, `workflows`, `floor`).
    fn key(&self) -> &'static str;
    fn name(&self) -> &'static str;
    /// Starts one run and returns when the client sees it finished; panics if it did not complete.
    fn run_to_end(&self, plan: Plan, site: &str, latency_ms: u64);
}

/// A system that takes runs to finish later (W2). The floor is not one: it keeps no runs.
trait Bulk: System {
    /// Starts a standard run without waiting; returns its id.
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

// ---- Workloads -----------------------------------------------------------------------------

/// Latency of `runs` runs of `plan` for every system, interleaved run by run (Baton, then the
/// Workflows peer, then the floor, then Baton...) so that all see the same machine: on a shared
/// 2-core machine the background load drifts more between two consecutive minutes than
/// between two consecutive runs. One result per system, in the order of `systems`; `workload`
/// names them in the progress lines.
fn latency(
    systems: &[&dyn System],
    workload: &str,
    plan: Plan,
    site: &str,
    latency_ms: u64,
    runs: usize,
    warmup: usize,
) -> Vec<Value> {
    for _ in 0..warmup {
        for system in systems {
            system.run_to_end(plan, &format!("{site}-warmup"), latency_ms);
        }
    }
    let mut samples: Vec<Vec<f64>> = systems.iter().map(|_| Vec::with_capacity(runs)).collect();
    for _ in 0..runs {
        for (system, samples) in systems.iter().zip(samples.iter_mut()) {
            let t = Instant::now();
            system.run_to_end(plan, site, latency_ms);
            samples.push(ms(t.elapsed()));
        }
    }
    // Both plans have two waves of service calls.
    let critical = 2.0 * latency_ms as f64;
    let mut rows: Vec<Value> = samples
        .into_iter()
        .map(|mut samples| {
            samples.sort_by(f64::total_cmp);
            let (p50, p99) = (percentile(&samples, 50.0), percentile(&samples, 99.0));
            json!({
                "latency_ms": latency_ms, "runs": runs, "steps": plan.steps(), "p50_ms": p50, "p99_ms": p99,
                "mean_ms": samples.iter().sum::<f64>() / samples.len() as f64,
                "overhead_p50_ms": p50 - critical, "overhead_p99_ms": p99 - critical,
            })
        })
        .collect();
    let floor = systems.iter().position(|s| s.key() == "floor").map(|i| rows[i].clone());
    for (system, row) in systems.iter().zip(rows.iter_mut()) {
        if let Some(floor) = floor.as_ref().filter(|_| system.key() != "floor") {
            for p in ["p50", "p99"] {
                let (own, base) = (row[format!("{p}_ms")].as_f64(), floor[format!("{p}_ms")].as_f64());
                if let (Some(own), Some(base)) = (own, base) {
                    row[format!("above_floor_{p}_ms")] = json!(own - base);
                }
            }
        }
        eprintln!(
            "  {} {workload}: p50 {:.1} ms, p99 {:.1} ms (above the floor: {} / {} ms)",
            system.name(),
            row["p50_ms"].as_f64().unwrap_or(f64::NAN),
            row["p99_ms"].as_f64().unwrap_or(f64::NAN),
            report::num(&row["above_floor_p50_ms"], 1),
            report::num(&row["above_floor_p99_ms"], 1),
        );
    }
    rows
}

/// W2 at size `runs` for every system, in rounds: each round runs every system once, the order
/// turning each round (Baton then the peer, then the peer then Baton...). On this shared
/// machine the background load drifts from one minute to the next, so one system measured
/// after the other can differ by a fifth on unchanged code; taking turns gives both the same
/// machine. Returns each system's row (medians of the rounds, losses summed, every round kept)
/// and the ratio of the first system to the second in each round.
fn w2_rounds(systems: &[&dyn Bulk], o: &Options, runs: usize) -> (Vec<Value>, Vec<f64>) {
    let rounds = if runs <= options::ROUNDS_UP_TO { o.w2_rounds } else { 1 };
    let mut by_system: Vec<Vec<Value>> = vec![Vec::new(); systems.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..systems.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            by_system[i].push(w2(systems[i], o, runs, round));
        }
    }
    let ratios: Vec<f64> = match by_system.as_slice() {
        [first, second, ..] => first
            .iter()
            .zip(second)
            .map(|(a, b)| a["runs_per_s"].as_f64().unwrap_or(f64::NAN) / b["runs_per_s"].as_f64().unwrap_or(f64::NAN))
            .collect(),
        _ => Vec::new(),
    };
    (by_system.into_iter().map(|rounds| w2_summary(runs, o, rounds)).collect(), ratios)
}

/// One system's W2 row over its rounds: the median round's times and rates, every loss and
/// duplicate of every round, and the rounds themselves.
fn w2_summary(runs: usize, o: &Options, rounds: Vec<Value>) -> Value {
    let middle = |key: &str| median(rounds.iter().filter_map(|r| r[key].as_f64()).collect());
    let sum = |key: &str| rounds.iter().filter_map(|r| r[key].as_u64()).sum::<u64>();
    json!({
        "runs": runs, "client_threads": o.threads, "rounds": rounds.len(),
        "submit_s": middle("submit_s"), "wall_s": middle("wall_s"),
        "runs_per_s": middle("runs_per_s"), "steps_per_s": middle("steps_per_s"),
        "terminal": sum("terminal"), "completed": sum("completed"), "submit_failures": sum("submit_failures"),
        "lost": sum("lost"), "duplicated": sum("duplicated"), "by_round": rounds,
    })
}

fn w2(system: &dyn Bulk, o: &Options, runs: usize, round: usize) -> Value {
    let site = format!("bench-w2-{runs}-{round}-{}", std::process::id());
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
    // Ten minutes, or a quarter of a second per run for the largest sizes (both systems did
    // fewer than 25 runs/s here).
    let deadline = started + Duration::from_secs(600).max(Duration::from_millis(250) * runs as u32);
    let check = system.wait_all(&site, &ids, deadline);
    let wall = started.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::SeqCst);
    let lost = check.lost + failed;
    eprintln!(
        "  {} W2 R={runs} (round {}): {wall:.2} s, {:.1} runs/s, {} lost, {} duplicated",
        system.name(),
        round + 1,
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

fn main() {
    let o = match options::parse(std::env::args_os().skip(1), repo_root().join("bench-results/latest.json")) {
        Ok(Command::Run(o)) => o,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("bench: {e}\nRun with --help for the options.");
            std::process::exit(2);
        }
    };
    // wrangler's local trace collector stores every span and log line of every invocation in
    // SQLite, on the same thread as the workers: a cost of `wrangler dev` alone (deployed,
    // Workers Logs and traces are collected outside the worker). Off for every system alike
    // unless asked for; the three `wrangler dev` processes inherit the setting.
    std::env::set_var("X_LOCAL_OBSERVABILITY", if o.local_observability { "true" } else { "false" });
    let mut results = json!({"machine": report::machine(), "state": "disk (wrangler dev --persist-to)",
                             "local_observability": o.local_observability});

    eprintln!("starting Baton (wrangler dev)");
    // The consumer and the poller answer `/__test/meter` too (their usage counters).
    let hooks = vec![("BATON_TEST_HOOKS".to_string(), "true".to_string())];
    let stack =
        Stack::start(StackOptions { consumer_vars: hooks.clone(), poller_vars: hooks, ..StackOptions::default() });
    let baton = Baton::new(stack, o.poll);
    if o.w5 > 0 {
        baton.create_wide_plan();
    }
    let peer = o.workflows.then(|| {
        eprintln!("starting the Workflows peer (wrangler dev)");
        Workflows::start()
    });
    let floor = o.floor.then(|| {
        eprintln!("starting the floor (wrangler dev)");
        Floor::start()
    });
    let mut systems: Vec<&dyn System> = vec![&baton];
    if let Some(peer) = &peer {
        systems.push(peer);
    }
    if let Some(floor) = &floor {
        systems.push(floor);
    }
    for system in &systems {
        results[system.key()] = json!({"w1": [], "w2": []});
    }

    for &d in &o.latencies {
        let rows =
            latency(&systems, &format!("W1 d={d}"), Plan::Standard, &format!("bench-w1-d{d}"), d, o.runs, o.warmup);
        for (system, row) in systems.iter().zip(rows) {
            results[system.key()]["w1"].as_array_mut().expect("w1 list").push(row);
        }
    }
    if o.w5 > 0 {
        let rows = latency(&systems, "W5", Plan::Wide, "bench-w5", 0, o.w5, o.warmup);
        for (system, row) in systems.iter().zip(rows) {
            results[system.key()]["w5"] = row;
        }
    }
    // The peer's local engine keeps every workflow instance's SQLite files open (three per
    // instance) while it runs, and fails its instances once the process runs out of files
    // (20,000 here: about 6,600 instances). So each W2 size gets a peer of its own, started
    // afresh (unless nothing has used it yet) and warmed up as before W1; Baton keeps its state
    // throughout.
    let mut peer = peer;
    let mut peer_used = (!o.latencies.is_empty() && o.runs + o.warmup > 0) || o.w5 > 0;
    let mut w2_ratios = Vec::new();
    for &r in &o.w2 {
        if peer.is_some() && std::mem::replace(&mut peer_used, true) {
            drop(peer.take());
            eprintln!("starting the Workflows peer afresh for W2 R={r}");
            peer = Some(Workflows::start());
        }
        let mut bulk: Vec<&dyn Bulk> = vec![&baton];
        if let Some(peer) = &peer {
            for _ in 0..o.warmup {
                peer.run_to_end(Plan::Standard, &format!("bench-w2-{r}-warmup"), 0);
            }
            bulk.push(peer);
        }
        let (rows, ratios) = w2_rounds(&bulk, &o, r);
        for (system, row) in bulk.iter().zip(rows) {
            results[system.key()]["w2"].as_array_mut().expect("w2 list").push(row);
        }
        if !ratios.is_empty() {
            let middle = median(ratios.clone());
            eprintln!("  W2 R={r}: Baton / Workflows by round {ratios:.2?}, median {middle:.2}");
            w2_ratios.push(json!({"runs": r, "by_round": ratios, "median": middle}));
        }
    }
    if !w2_ratios.is_empty() {
        results["w2_ratio_by_round"] = json!(w2_ratios);
    }
    drop(floor);
    drop(peer); // what follows measures Baton alone

    results["baton"]["w1_observed_by"] =
        json!(if o.poll { "polling GET /runs/:id every 5 ms" } else { "POST /run?wait=30" });
    results["baton"]["w1_phases"] = json!(o
        .latencies
        .iter()
        .map(|d| json!({"latency_ms": d, "phases": baton.phases(&format!("bench-w1-d{d}"))}))
        .collect::<Vec<_>>());
    if o.w5 > 0 {
        // The cost growth with width: the same counters for standard-v1 and the wide plan.
        results["baton"]["w5_cost"] =
            json!([baton.usage_per_run("standard-v1", 20, true), baton.usage_per_run(baton::WIDE_PLAN_ID, 20, true),]);
        eprintln!("  Baton W5 cost: {}", results["baton"]["w5_cost"]);
    }
    if o.w4 > 0 {
        results["baton"]["w4"] = baton.w4(o.w4);
        eprintln!("  Baton W4: {}", results["baton"]["w4"]);
    }
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
    if o.history_section() {
        results["baton"]["history"] = history::run(&o);
    }

    let t = report::table(&results);
    println!("{t}");
    if let Some(dir) = o.out.parent() {
        let _ = fs::create_dir_all(dir);
    }
    fs::write(&o.out, serde_json::to_string_pretty(&results).expect("serialising results"))
        .expect("writing the results");
    eprintln!("results written to {}", o.out.display());
}
