//! Queue producers. Only core's message structs are sent.

use serde::Serialize;
use worker::Queue;

use crate::{bindings, Error, Result};

/// Opens a queue producer binding.
pub fn producer(env: &worker::Env, name: &'static str) -> Result<Queue> {
    env.queue(name).map_err(|e| Error::Binding { name: name.into(), cause: e.to_string() })
}

/// Sends one message.
pub async fn send<T: Serialize>(queue: &Queue, message: &T) -> Result<()> {
    crate::meter::add(|u| u.queue_messages += 1);
    queue.send(message).await.map_err(|e| Error::Queue(e.to_string()))
}

/// Sends one message, delivered no sooner than `delay_seconds` from now.
pub async fn send_delayed<T: Serialize>(queue: &Queue, message: T, delay_seconds: u32) -> Result<()> {
    crate::meter::add(|u| u.queue_messages += 1);
    let message = worker::MessageBuilder::new(message).delay_seconds(delay_seconds).build();
    queue.send(message).await.map_err(|e| Error::Queue(e.to_string()))
}

/// Sends messages in batches of at most 100 (the platform's limit per sendBatch).
pub async fn send_all<T: Serialize + Clone>(queue: &Queue, messages: &[T]) -> Result<()> {
    for chunk in messages.chunks(100) {
        if chunk.len() == 1 {
            send(queue, &chunk[0]).await?;
            continue;
        }
        crate::meter::add(|u| u.queue_messages += chunk.len() as u64);
        let batch: Vec<worker::SendMessage<T>> = chunk.iter().cloned().map(worker::SendMessage::from).collect();
        queue.send_batch(batch).await.map_err(|e| Error::Queue(e.to_string()))?;
    }
    Ok(())
}

/// Sends messages, each delivered no sooner than its own delay (seconds) from now, in
/// batches of at most 100.
pub async fn send_all_delayed<T: Serialize + Clone>(queue: &Queue, messages: &[(T, u32)]) -> Result<()> {
    for chunk in messages.chunks(100) {
        if let [(message, delay)] = chunk {
            send_delayed(queue, message.clone(), *delay).await?;
            continue;
        }
        crate::meter::add(|u| u.queue_messages += chunk.len() as u64);
        let batch: Vec<worker::SendMessage<T>> = chunk
            .iter()
            .map(|(message, delay)| worker::MessageBuilder::new(message.clone()).delay_seconds(*delay).build())
            .collect();
        queue.send_batch(batch).await.map_err(|e| Error::Queue(e.to_string()))?;
    }
    Ok(())
}

/// The task queue producer.
pub fn task_queue(env: &worker::Env) -> Result<Queue> {
    producer(env, bindings::TASK_QUEUE)
}

/// The analysis queue producer.
pub fn analysis_queue(env: &worker::Env) -> Result<Queue> {
    producer(env, bindings::LLM_ANALYSIS_QUEUE)
}

/// Sends arbitrary JSON values as JSON messages (serde's maps would otherwise reach JS as
/// `Map`s, which do not survive JSON). For test hooks and replays.
pub async fn send_json_values(queue: &Queue, messages: &[serde_json::Value]) -> Result<()> {
    for message in messages {
        let js = js_sys::JSON::parse(&message.to_string()).map_err(|_| Error::Internal("unparseable JSON".into()))?;
        let raw = worker::RawMessageBuilder::new(js).build_with_content_type(worker::QueueContentType::Json);
        queue.send_raw(raw).await.map_err(|e| Error::Queue(e.to_string()))?;
    }
    Ok(())
}
