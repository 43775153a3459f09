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
        let rounds = r["rounds"].as_u64().unwrap_or(1);
        let workload = if rounds > 1 {
            format!("W2 R={} (median of {rounds} rounds)", r["runs"])
        } else {
            format!("W2 R={}", r["runs"])
        };
        for (metric, key, digits) in [
            ("wall s", "wall_s", 2),
            ("runs/s", "runs_per_s", 1),
            ("steps/s", "steps_per_s", 1),
            ("lost", "lost", 0),
            ("duplicated", "duplicated", 0),
        ] {
            row(&mut t, &workload, metric, [r, &w["w2"][i], &Value::Null], key, digits);
        }
        // In rounds, Baton / Workflows is judged round by round (each round measures both on
        // the same machine): the median of those ratios, not the ratio of the two medians.
        if rounds > 1 {
            let by_round = |v: &Value| {
                let rates: Vec<String> =
                    v["by_round"].as_array().into_iter().flatten().map(|x| num(&x["runs_per_s"], 1)).collect();
                if rates.is_empty() {
                    "–".to_string()
                } else {
                    rates.join(", ")
                }
            };
            let ratios = results["w2_ratio_by_round"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["runs"] == r["runs"])
                .map(|x| {
                    let each: Vec<String> = x["by_round"].as_array().into_iter().flatten().map(|v| num(v, 2)).collect();
                    format!("{} (median {})", each.join(", "), num(&x["median"], 2))
                })
                .unwrap_or_else(|| "–".into());
            t.push_str(&format!(
                "| {workload} | runs/s by round, Baton / Workflows each round | {} | {} | – | {ratios} |\n",
                by_round(r),
                by_round(&w["w2"][i])
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w2_in_rounds_shows_the_medians_each_round_and_the_ratio_of_each_round() {
        let round = |rate: f64| json!({"runs_per_s": rate});
        let results = json!({
            "baton": {"w2": [{"runs": 1000, "rounds": 3, "runs_per_s": 90.0, "wall_s": 11.1, "lost": 0, "duplicated": 0,
                              "by_round": [round(80.0), round(90.0), round(100.0)]}]},
            "workflows": {"w2": [{"runs": 1000, "rounds": 3, "runs_per_s": 45.0, "wall_s": 22.2, "lost": 0, "duplicated": 0,
                                  "by_round": [round(50.0), round(45.0), round(40.0)]}]},
            "w2_ratio_by_round": [{"runs": 1000, "by_round": [1.6, 2.0, 2.5], "median": 2.0}],
        });
        let t = table(&results);
        assert!(t.contains("| W2 R=1000 (median of 3 rounds) | runs/s | 90.0 | 45.0 | – | 2.00 |"), "{t}");
        assert!(
            t.contains("| W2 R=1000 (median of 3 rounds) | runs/s by round, Baton / Workflows each round | 80.0, 90.0, 100.0 | 50.0, 45.0, 40.0 | – | 1.60, 2.00, 2.50 (median 2.00) |"),
            "{t}"
        );
    }

    #[test]
    fn w2_in_one_round_has_no_rows_by_round() {
        let results = json!({
            "baton": {"w2": [{"runs": 5000, "rounds": 1, "runs_per_s": 90.0, "by_round": [{"runs_per_s": 90.0}]}]},
            "workflows": {"w2": [{"runs": 5000, "rounds": 1, "runs_per_s": 45.0}]},
        });
        let t = table(&results);
        assert!(t.contains("| W2 R=5000 | runs/s | 90.0 | 45.0 | – | 2.00 |"), "{t}");
        assert!(!t.contains("by round"), "{t}");
    }
}
