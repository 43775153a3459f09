//! `baton-webhooks`: one attempt of a webhook delivery per message; `baton-webhooks-dlq`: a
//! delivery whose attempts are spent is recorded as failed.

use baton_core::webhook::DeliveryMessage;
use baton_edge::engine::{DeliveryOutcome, Engine};
use worker::{MessageExt, QueueRetryOptionsBuilder, RawMessage};

use crate::body_json;

fn decode(message: &RawMessage) -> Option<DeliveryMessage> {
    match body_json(message).and_then(|v| serde_json::from_value::<DeliveryMessage>(v).map_err(|e| e.to_string())) {
        Ok(decoded) => Some(decoded),
        Err(e) => {
            worker::console_error!("webhooks: malformed message ({e}); acknowledged");
            None
        }
    }
}

/// Attempts the delivery: acknowledged once it is done, retried after core's backoff if not
/// (the queue dead-letters it after its last attempt); a storage failure retries it too.
pub async fn handle(engine: &Engine<'_>, message: &RawMessage) {
    let Some(decoded) = decode(message) else {
        message.ack();
        return;
    };
    let outcome = match engine.on_id(&decoded.delivery_id) {
        Ok(on_shard) => on_shard.webhooks().deliver(&decoded.delivery_id).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(DeliveryOutcome::Done) => message.ack(),
        Ok(DeliveryOutcome::Retry { delay_seconds }) => {
            message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(delay_seconds).build())
        }
        Err(e) => {
            worker::console_error!("webhooks: delivery {}: {e}; retrying", decoded.delivery_id);
            message.retry();
        }
    }
}

/// Records a dead-lettered delivery as failed.
pub async fn dead_letter(engine: &Engine<'_>, message: &RawMessage) {
    let Some(decoded) = decode(message) else {
        message.ack();
        return;
    };
    let outcome = match engine.on_id(&decoded.delivery_id) {
        Ok(on_shard) => on_shard.webhooks().dead_lettered(&decoded.delivery_id).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => message.ack(),
        Err(e) => {
            worker::console_error!("webhooks: recording dead-lettered delivery {}: {e}; retrying", decoded.delivery_id);
            message.retry();
        }
    }
}
