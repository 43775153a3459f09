//! Webhooks: a run's end is delivered once to its client's webhook, signed with the webhook's
//! secret, through retries; the delivery log shows every attempt.

use std::time::Duration;

use baton_core::time::Millis;
use baton_core::webhook;
use baton_e2e::webhook_receiver::WebhookReceiver;
use baton_e2e::{poll_until, shared_stack};
use serde_json::{json, Value};

#[test]
fn a_finished_run_is_delivered_once_signed_after_two_failed_attempts() {
    let stack = shared_stack();
    let receiver = WebhookReceiver::start(2);
    let r = stack.post_as(stack.token(0), "/api/orchestration/webhooks", &json!({ "url": receiver.url() }));
    assert_eq!(r.status, 201, "{}", r.text());
    let hook = r.json()["webhook"].clone();
    let (hook_id, secret) = (hook["webhook_id"].as_str().unwrap(), hook["secret"].as_str().unwrap());
    assert_eq!(hook["events"], json!(["run.finished", "execution.finished"]));

    let r = stack.post_as(
        stack.token(0),
        "/api/orchestration/run?wait=60",
        &json!({ "website_id": "site-hooks", "domain": "hooks.example", "plan_id": "quick-v1" }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let run_id = r.json()["run_id"].as_str().unwrap().to_string();

    // Other tests' runs of this client reach the receiver too: look at this run's only.
    let of_run = |run: &str| -> Vec<_> {
        receiver.received().into_iter().filter(|d| d.json()["data"]["run_id"] == json!(run)).collect()
    };
    let attempts = poll_until("three attempts, the last one answered 200", Duration::from_secs(60), || {
        let got = of_run(&run_id);
        got.iter().any(|d| d.status == 200).then_some(got)
    });
    assert_eq!(attempts.iter().map(|d| d.status).collect::<Vec<_>>(), [500, 500, 200]);
    let ids: Vec<_> = attempts.iter().map(|d| d.header(webhook::ID_HEADER).unwrap_or_default().to_string()).collect();
    assert!(ids.iter().all(|id| *id == ids[0] && !id.is_empty()), "one delivery, retried: {ids:?}");
    for delivery in &attempts {
        let timestamp =
            delivery.header(webhook::TIMESTAMP_HEADER).and_then(|t| t.parse().ok()).map(Millis::new).unwrap();
        let signature = delivery.header(webhook::SIGNATURE_HEADER).unwrap_or_default();
        let now = Millis::new(baton_e2e::now_ms());
        assert!(webhook::verify(secret, timestamp, signature, &delivery.body, now, 300_000), "signature {signature}");
        assert!(!webhook::verify("another-secret", timestamp, signature, &delivery.body, now, 300_000));
        assert_eq!(delivery.header(webhook::EVENT_HEADER), Some("run.finished"));
        assert_eq!(delivery.json()["data"]["summary"]["status"], delivery.json()["data"]["status"]);
        assert_eq!(
            delivery.json()["id"].as_str(),
            delivery.header(webhook::ID_HEADER),
            "the payload names its delivery"
        );
        assert_eq!(delivery.json()["event"], "run.finished");
    }

    // The delivery log: one delivery for the run, succeeded, with its three attempts.
    let path = format!("/api/orchestration/webhooks/{hook_id}/deliveries");
    let logged = poll_until("the delivery log to show the success", Duration::from_secs(20), || {
        let r = stack.get_as(stack.token(0), &path);
        assert_eq!(r.status, 200, "{}", r.text());
        let of_run: Vec<Value> = r.json()["deliveries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|d| d["run_id"] == json!(run_id))
            .collect();
        (of_run.len() == 1 && of_run[0]["status"] == "succeeded").then(|| of_run[0].clone())
    });
    assert_eq!(logged["attempts"], 3, "{logged}");
    let codes: Vec<Value> =
        logged["attempt_log"].as_array().unwrap().iter().map(|a| a["status_code"].clone()).collect();
    assert_eq!(codes, [json!(500), json!(500), json!(200)], "{logged}");
    assert_eq!(logged["delivery_id"], json!(ids[0]));
    assert_eq!(of_run(&run_id).iter().filter(|d| d.status == 200).count(), 1, "delivered once");

    // A replay sends the same payload again as a new delivery.
    let delivery_id = logged["delivery_id"].as_str().unwrap();
    let r = stack.post_as(stack.token(0), &format!("{path}/{delivery_id}/replay"), &json!({}));
    assert_eq!(r.status, 202, "{}", r.text());
    let replay_id = r.json()["delivery"]["delivery_id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["delivery"]["replay_of"], json!(delivery_id));
    poll_until("the replay to arrive", Duration::from_secs(60), || {
        receiver
            .received()
            .iter()
            .any(|d| d.header(webhook::ID_HEADER) == Some(replay_id.as_str()) && d.status == 200)
            .then_some(())
    });

    // Another client sees none of it; deleting the webhook stops its deliveries.
    let r = stack.get_as(stack.token(1), &path);
    assert_eq!(r.status, 404, "{}", r.text());
    let auth = format!("Bearer {}", stack.token(0));
    let r = stack.send("DELETE", &format!("/api/orchestration/webhooks/{hook_id}"), &[("Authorization", &auth)], None);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_webhook_url_must_be_https_or_local() {
    let stack = shared_stack();
    for (body, field) in [
        (json!({ "url": "http://hooks.example.com/baton" }), "url"),
        (json!({ "url": "not a url" }), "url"),
        (json!({}), "url"),
        (json!({ "url": "https://hooks.example.com/baton", "events": ["run.started"] }), "events"),
    ] {
        let r = stack.post_as(stack.token(1), "/api/orchestration/webhooks", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["details"]["field"], json!(field), "{body}: {}", r.text());
    }
}

#[test]
fn a_delivery_that_always_fails_is_dead_lettered_and_logged_as_failed() {
    let stack = shared_stack();
    // Every attempt answers 500.
    let receiver = WebhookReceiver::start(usize::MAX);
    let r = stack.post_as(stack.token(1), "/api/orchestration/webhooks", &json!({ "url": receiver.url() }));
    assert_eq!(r.status, 201, "{}", r.text());
    let hook_id = r.json()["webhook"]["webhook_id"].as_str().unwrap().to_string();
    let r = stack.post_as(
        stack.token(1),
        "/api/orchestration/run?wait=60",
        &json!({ "website_id": "site-hooks-dlq", "domain": "dlq.example", "plan_id": "quick-v1" }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let run_id = r.json()["run_id"].as_str().unwrap().to_string();

    // Six attempts, 1 + 2 + 4 + 8 + 16 s apart on the local stack, then the dead-letter queue.
    let path = format!("/api/orchestration/webhooks/{hook_id}/deliveries");
    let failed = poll_until("the delivery to be recorded failed", Duration::from_secs(90), || {
        let r = stack.get_as(stack.token(1), &path);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["deliveries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .find(|d| d["run_id"] == json!(run_id) && d["status"] == "failed")
    });
    assert_eq!(failed["attempts"], webhook::MAX_ATTEMPTS, "{failed}");
    assert_eq!(failed["attempt_log"].as_array().map(Vec::len), Some(webhook::MAX_ATTEMPTS as usize), "{failed}");
    assert!(failed["last_error"].as_str().unwrap_or_default().contains("dead-lettered"), "{failed}");
    let got = receiver.received().into_iter().filter(|d| d.json()["data"]["run_id"] == json!(run_id)).count();
    assert_eq!(got, webhook::MAX_ATTEMPTS as usize);

    let auth = format!("Bearer {}", stack.token(1));
    let r = stack.send("DELETE", &format!("/api/orchestration/webhooks/{hook_id}"), &[("Authorization", &auth)], None);
    assert_eq!(r.status, 200, "{}", r.text());
}
