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
        t.push_str("\n| Baton cost per run by width (`?wait=30`, as recorded with each run) | steps | D1 round trips | D1 statements | D1 rows read | D1 rows read per step | D1 rows written | KV reads | KV writes | subrequests | USD at COST_PRICES |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for u in by_width {
            let p = &u["per_run"];
            t.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.7} |\n",
                u["plan"].as_str().unwrap_or(""),
                num(&u["steps"], 0),
                p["d1_round_trips"],
                p["d1_statements"],
                p["d1_rows_read"],
                u["d1_rows_read_per_step"],
                p["d1_rows_written"],
                p["kv_reads"],
                p["kv_writes"],
                p["subrequests"],
                u["usd_per_run"].as_f64().unwrap_or(f64::NAN)
            ));
        }
    }
    let usage = b["cost"]["usage_per_run"].as_array().cloned().unwrap_or_default();
    if !usage.is_empty() {
        t.push_str("\n| Baton cost per run (as recorded with each run) | D1 round trips | D1 statements | D1 rows read | D1 rows written | KV reads | KV writes | queue messages | subrequests | USD at COST_PRICES |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for u in usage {
            let p = &u["per_run"];
            t.push_str(&format!(
                "| {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {:.7} |\n",
                u["plan"].as_str().unwrap_or(""),
                u["started_with"].as_str().unwrap_or(""),
                p["d1_round_trips"],
                p["d1_statements"],
                p["d1_rows_read"],
                p["d1_rows_written"],
                p["kv_reads"],
                p["kv_writes"],
                p["queue_messages"],
                p["subrequests"],
                u["usd_per_run"].as_f64().unwrap_or(f64::NAN)
            ));
        }
    }
    if !b["history"].is_null() {
        t.push_str(&history(&b["history"]));
    }
    t
}

/// The history section's tables: the soak (empty against loaded), bytes and archiving, and a
/// D1 shard on paper.
pub fn history(h: &Value) -> String {
    let mut t = format!("\nThe history section took {} s, on a stack of its own.\n", num(&h["seconds"], 0));
    if !h["with_history"].is_null() {
        let (e, w) = (&h["empty"], &h["with_history"]);
        t.push_str(&format!(
            "\n| history soak ({} finished runs loaded in {} s) | empty | with history | with / empty |\n|---|---:|---:|---:|\n",
            h["load"]["runs"],
            num(&h["load"]["seconds"], 1)
        ));
        let mb = |v: &Value| json!(v.as_f64().map(|b| b / 1e6));
        for (metric, key, digits) in [
            ("W1 d=0 p50 ms", "w1_p50_ms", 1),
            ("W1 d=0 p99 ms", "w1_p99_ms", 1),
            ("runs list, first page, p50 ms", "runs_list_p50_ms", 1),
            ("`/metrics` scrape p50 ms", "metrics_p50_ms", 1),
            ("rows read by one poller tick", "tick_rows_read", 0),
            ("one poller tick ms", "tick_ms", 1),
        ] {
            t.push_str(&format!(
                "| {metric} | {} | {} | {} |\n",
                num(&e[key], digits),
                num(&w[key], digits),
                ratio(&w[key], &e[key])
            ));
        }
        t.push_str(&format!(
            "| D1 size MB | {} | {} | {} |\n",
            num(&mb(&e["d1_bytes"]), 1),
            num(&mb(&w["d1_bytes"]), 1),
            ratio(&w["d1_bytes"], &e["d1_bytes"])
        ));
    }
    let b = &h["bytes"];
    if !b.is_null() {
        t.push_str(&format!("\n| bytes and archiving ({} standard-v1 runs) | measured |\n|---|---:|\n", b["runs"]));
        t.push_str(&format!("| D1 bytes per run, live | {} |\n", num(&b["d1_bytes_per_run_live"], 0)));
        t.push_str(&format!("| D1 bytes per run, archived | {} |\n", num(&b["d1_bytes_per_run_archived"], 0)));
        t.push_str(&format!("| R2 bytes per archive object | {} |\n", num(&b["r2_bytes_per_object"], 0)));
        t.push_str(&format!("| runs created per s (as W2) | {} |\n", num(&b["created_per_s"], 1)));
        for s in b["archive"].as_array().into_iter().flatten() {
            t.push_str(&format!(
                "| runs archived per s, ticks back to back, `POLLER_BATCH_SIZE` {} ({} ticks, {} runs) | {} |\n",
                s["poller_batch_size"],
                s["ticks"],
                num(&s["archived"], 0),
                num(&s["runs_per_s"], 1)
            ));
        }
        t.push_str(&format!(
            "| archived per s / created per s, default batch | {} |\n",
            num(&b["archive_to_created_ratio"], 2)
        ));
        for c in b["archive_per_s_by_cron"].as_array().into_iter().flatten() {
            t.push_str(&format!(
                "| runs archived per s by the cron (one firing a minute, per shard), `POLLER_BATCH_SIZE` {} | {} |\n",
                c["poller_batch_size"],
                num(&c["runs_per_s"], 2)
            ));
        }
        for (what, key) in [("created", "usage_per_run_created"), ("archived", "usage_per_run_archived")] {
            let u = &b[key];
            t.push_str(&format!(
                "| D1 per run {what}: round trips / statements / rows read / rows written | {} / {} / {} / {} |\n",
                num(&u["d1_round_trips"], 1),
                num(&u["d1_statements"], 1),
                num(&u["d1_rows_read"], 1),
                num(&u["d1_rows_written"], 1)
            ));
        }
    }
    let s = &h["shard"];
    if !s.is_null() {
        t.push_str(&format!(
            "\n| one D1 database | runs/s | full after, every run kept ({} B a run) | full after, retention {} days ({} B a run archived) | full after, retention 1 day |\n|---|---:|---:|---:|---:|\n",
            num(&s["live_bytes_per_run"], 0),
            s["retention_days"],
            num(&s["archived_bytes_per_run"], 0)
        ));
        for d in s["days"].as_array().into_iter().flatten() {
            t.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                d["shard"].as_str().unwrap_or(""),
                d["runs_per_s"],
                days(&d["days_every_run_kept"]),
                days(&d["days_retention_30"]),
                days(&d["days_retention_1"])
            ));
        }
        t.push_str(&format!(
            "\n| one D1 database on paper ({} queries/s) | runs/s |\n|---|---:|\n",
            s["d1_queries_per_s"]
        ));
        for (what, key) in [
            ("each statement a query of 1 ms", "runs_per_s_if_a_statement_takes_1ms"),
            ("each round trip a query of 1 ms", "runs_per_s_if_a_round_trip_takes_1ms"),
            ("each statement 1 ms, archiving included", "runs_per_s_with_archiving_if_a_statement_takes_1ms"),
            ("each round trip 1 ms, archiving included", "runs_per_s_with_archiving_if_a_round_trip_takes_1ms"),
        ] {
            t.push_str(&format!("| {what} | {} |\n", num(&s[key], 0)));
        }
    }
    t
}

/// A time to full: days, or hours under a day, or minutes under an hour.
fn days(v: &Value) -> String {
    match v.as_f64() {
        Some(d) if d >= 1.0 => format!("{d:.1} days"),
        Some(d) if d * 24.0 >= 1.0 => format!("{:.1} h", d * 24.0),
        Some(d) => format!("{:.0} min", d * 24.0 * 60.0),
        None => "–".into(),
    }
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
    fn the_history_tables_put_the_soak_side_by_side_and_the_shard_by_rate() {
        let h = json!({
            "load": {"runs": 200000, "seconds": 12.34},
            "empty": {"w1_p50_ms": 20.0, "metrics_p50_ms": 10.0, "tick_rows_read": 10, "d1_bytes": 1e6},
            "with_history": {"w1_p50_ms": 22.0, "metrics_p50_ms": 1000.0, "tick_rows_read": 10, "d1_bytes": 6e8},
            "bytes": {"runs": 1000, "d1_bytes_per_run_live": 13100.4, "d1_bytes_per_run_archived": 266.2,
                      "archive": [{"poller_batch_size": 100, "ticks": 5, "archived": 500.0, "runs_per_s": 60.0}]},
            "shard": {"live_bytes_per_run": 13100.4, "archived_bytes_per_run": 266.2, "retention_days": 30.0,
                      "d1_queries_per_s": 1000.0,
                      "days": [{"shard": "10 GB", "runs_per_s": 1.0, "days_every_run_kept": 8.8, "days_retention_30": 1234.5,
                                "days_retention_1": 0.01}]},
        });
        let t = history(&h);
        assert!(t.contains("| history soak (200000 finished runs loaded in 12.3 s) |"), "{t}");
        assert!(t.contains("| `/metrics` scrape p50 ms | 10.0 | 1000.0 | 100.00 |"), "{t}");
        assert!(t.contains("| D1 size MB | 1.0 | 600.0 | 600.00 |"), "{t}");
        assert!(t.contains("| D1 bytes per run, archived | 266 |"), "{t}");
        assert!(t.contains("`POLLER_BATCH_SIZE` 100 (5 ticks, 500 runs) | 60.0 |"), "{t}");
        assert!(t.contains("| 10 GB | 1.0 | 8.8 days | 1234.5 days | 14 min |"), "{t}");
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
