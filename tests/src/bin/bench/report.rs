//! What a run prints: the Markdown tables of BENCHMARKS.md, and the machine it ran on.

use std::fs;
use std::process::Command;

use serde_json::{json, Value};

fn ratio(a: &Value, b: &Value) -> String {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

pub fn num(v: &Value, digits: usize) -> String {
    v.as_f64().map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "–".into())
}

/// One table row: `key` of the Baton, Workflows and floor results, and Baton / Workflows.
fn row(t: &mut String, workload: &str, metric: &str, [b, w, f]: [&Value; 3], key: &str, digits: usize) {
    t.push_str(&format!(
        "| {workload} | {metric} | {} | {} | {} | {} |\n",
        num(&b[key], digits),
        num(&w[key], digits),
        num(&f[key], digits),
        ratio(&b[key], &w[key])
    ));
}

/// The latency rows of W1 and W5: p50 and p99, and how far each system is above the floor.
fn latency_rows(t: &mut String, workload: &str, rows: [&Value; 3]) {
    for (metric, key) in [
        ("p50 ms", "p50_ms"),
        ("p99 ms", "p99_ms"),
        ("above the floor p50 ms", "above_floor_p50_ms"),
        ("above the floor p99 ms", "above_floor_p99_ms"),
    ] {
        // The floor's own distance from itself is no information.
        let floor = if key.starts_with("above") { &Value::Null } else { rows[2] };
        row(t, workload, metric, [rows[0], rows[1], floor], key, 1);
    }
}

/// The tables printed at the end of a run (Markdown, as in BENCHMARKS.md).
pub fn table(results: &Value) -> String {
    let (b, w, f) = (&results["baton"], &results["workflows"], &results["floor"]);
    let mut t = String::from(
        "| workload | metric | Baton | Workflows | floor | Baton / Workflows |\n|---|---|---:|---:|---:|---:|\n",
    );
    for (i, r) in b["w1"].as_array().into_iter().flatten().enumerate() {
        latency_rows(&mut t, &format!("W1 d={} ms", r["latency_ms"]), [r, &w["w1"][i], &f["w1"][i]]);
    }
    if !b["w5"].is_null() {
        latency_rows(&mut t, &format!("W5 ({} steps)", b["w5"]["steps"]), [&b["w5"], &w["w5"], &f["w5"]]);
    }
    for (i, r) in b["w2"].as_array().into_iter().flatten().enumerate() {
        let workload = format!("W2 R={}", r["runs"]);
        for (metric, key, digits) in [
            ("wall s", "wall_s", 2),
            ("runs/s", "runs_per_s", 1),
            ("steps/s", "steps_per_s", 1),
            ("lost", "lost", 0),
            ("duplicated", "duplicated", 0),
        ] {
            row(&mut t, &workload, metric, [r, &w["w2"][i], &Value::Null], key, digits);
        }
    }
    let by_width = b["w5_cost"].as_array().cloned().unwrap_or_default();
    if !by_width.is_empty() {
        t.push_str("\n| Baton cost per run by width (`?wait=30`) | steps | D1 round trips | D1 statements | D1 rows read | D1 rows read per step | D1 rows written | KV reads | KV writes | subrequests |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for u in by_width {
            let p = &u["per_run"];
            t.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                u["plan"].as_str().unwrap_or(""),
                num(&u["steps"], 0),
                p["d1_round_trips"],
                p["d1_statements"],
                p["d1_rows_read"],
                u["d1_rows_read_per_step"],
                p["d1_rows_written"],
                p["kv_reads"],
                p["kv_writes"],
                p["subrequests"]
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

pub fn machine() -> Value {
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
