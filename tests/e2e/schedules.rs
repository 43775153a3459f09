//! Schedules: a slot fires one run however many ticks race for it, a paused schedule fires
//! none, and a client sees only its own schedules. The ticking test takes its turn on the
//! poller tests' stack, so its ticks never race another test's run.

use std::time::Duration;

use baton_core::time::Millis;
use baton_e2e::{poll_until, shared_stack, Stack};
use serde_json::{json, Value};

fn create(stack: &Stack, body: &Value) -> Value {
    let r = stack.post_as(stack.token(0), "/api/orchestration/schedules", body);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["schedule"].clone()
}

fn count(stack: &Stack, sql: &str, id: &str) -> i64 {
    let (rows, _) = stack.sql(sql, &[json!(id)]);
    rows[0]["n"].as_i64().unwrap_or(-1)
}

fn runs_of(stack: &Stack, schedule_id: &str) -> i64 {
    count(
        stack,
        "SELECT COUNT(*) AS n FROM schedule_fires f JOIN runs r ON r.run_id = f.run_id WHERE f.schedule_id = ?1",
        schedule_id,
    )
}

fn fires_of(stack: &Stack, schedule_id: &str) -> i64 {
    count(stack, "SELECT COUNT(*) AS n FROM schedule_fires WHERE schedule_id = ?1", schedule_id)
}

fn racing_ticks(stack: &'static Stack) {
    let ticks: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let r = stack.admin_post("/admin/poller/tick", &json!({}));
                assert_eq!(r.status, 200, "{}", r.text());
            })
        })
        .collect();
    for tick in ticks {
        tick.join().expect("a tick thread");
    }
}

#[test]
fn racing_ticks_fire_one_run_per_slot_and_a_paused_schedule_fires_none() {
    let (stack, _turn) = crate::poller::poller_stack();
    let base = json!({ "website_id": "site-sched", "domain": "sched.example", "plan_id": "quick-v1",
                       "interval_seconds": 3600, "missed": "latest" });
    let active = create(stack, &base);
    let mut paused_body = base.clone();
    paused_body["paused"] = json!(true);
    let paused = create(stack, &paused_body);
    let (active_id, paused_id) = (active["schedule_id"].as_str().unwrap(), paused["schedule_id"].as_str().unwrap());
    assert_eq!(active["next_fire_times"].as_array().map(Vec::len), Some(3), "{active}");
    assert_eq!(paused["next_fire_times"], json!([]), "a paused schedule shows no fire times");

    // Make a slot due now on both, without waiting for the hour.
    let slot = baton_e2e::now_ms() as i64 - 5_000;
    stack.sql(
        "UPDATE schedules SET next_slot = ?1 WHERE schedule_id IN (?2, ?3)",
        &[json!(slot), json!(active_id), json!(paused_id)],
    );
    racing_ticks(stack);
    racing_ticks(stack);

    assert_eq!(fires_of(stack, active_id), 1, "one fired slot");
    let run_id = poll_until("the scheduled run to exist", Duration::from_secs(20), || {
        (runs_of(stack, active_id) == 1).then(|| {
            let (rows, _) = stack.sql("SELECT run_id FROM schedule_fires WHERE schedule_id = ?1", &[json!(active_id)]);
            rows[0]["run_id"].as_str().unwrap_or_default().to_string()
        })
    });
    assert_eq!(fires_of(stack, paused_id), 0, "a paused schedule fires nothing");

    // The run says which schedule and slot started it.
    let r = stack.get_as(stack.token(0), &format!("/api/orchestration/runs/{run_id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let run = r.json();
    assert_eq!(run["schedule_id"], json!(active_id));
    assert_eq!(run["schedule_slot"], json!(Millis::new(slot as u64).to_rfc3339()));

    // The schedule moved on to the next hour and names its last run.
    let r = stack.get_as(stack.token(0), &format!("/api/orchestration/schedules/{active_id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let read = r.json()["schedule"].clone();
    assert_eq!(read["last_run_id"], json!(run_id));
    let next = Millis::parse_rfc3339(read["next_slot"].as_str().unwrap()).unwrap();
    assert!(next.as_u64() > baton_e2e::now_ms(), "{read}");
    assert_eq!(next.as_u64() % 3_600_000, 0, "interval slots fall on the hour: {read}");

    // Resuming does not run what passed while paused; the paused one has its fire times back.
    let auth = format!("Bearer {}", stack.token(0));
    let r = stack.send(
        "PATCH",
        &format!("/api/orchestration/schedules/{paused_id}"),
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        Some(br#"{"paused": false}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["schedule"]["next_fire_times"].as_array().map(Vec::len), Some(3));
    racing_ticks(stack);
    assert_eq!(fires_of(stack, paused_id), 0);

    for id in [active_id, paused_id] {
        let r = stack.send("DELETE", &format!("/api/orchestration/schedules/{id}"), &[("Authorization", &auth)], None);
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[test]
fn schedules_are_validated_field_by_field_and_private_to_their_client() {
    let stack = shared_stack();
    let base = json!({ "website_id": "site-sched", "domain": "sched.example" });
    for (patch, field) in [
        (json!({"cron": "every day"}), "cron"),
        (json!({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}), "timezone"),
        (json!({"interval_seconds": 0}), "interval_seconds"),
        (json!({"cron": "0 9 * * *", "interval_seconds": 60}), "cron"),
        (json!({"cron": "0 9 * * *", "missed": "all"}), "missed"),
        (json!({"cron": "0 9 * * *", "plan_id": "no-such-plan"}), "plan_id"),
    ] {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = stack.post_as(stack.token(0), "/api/orchestration/schedules", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["details"]["field"], json!(field), "{body}: {}", r.text());
    }
    let mut body = base.clone();
    body["cron"] = json!("0 9 * * 1-5");
    body["timezone"] = json!("Europe/Paris");
    let created = create(stack, &body);
    let id = created["schedule_id"].as_str().unwrap();
    assert_eq!(created["timezone"], json!("Europe/Paris"));
    let r = stack.get_as(stack.token(1), &format!("/api/orchestration/schedules/{id}"));
    assert_eq!(r.status, 404, "another client's schedule is not found: {}", r.text());
    let r = stack.get_as(stack.token(1), "/api/orchestration/schedules");
    assert!(!r.text().contains(id), "another client's list does not show it");
    let r = stack.get_as(stack.token(0), "/api/orchestration/schedules");
    assert!(r.text().contains(id), "{}", r.text());
}
