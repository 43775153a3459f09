//! A client that waits for its run (`?wait`). The orchestrator claims the first wave in the
//! run's own insert and runs it, and what it makes ready, at once: itself when it reaches
//! every service of the plan (`attempts::run_waited`), else by handing it to the consumer
//! (`POST /internal/drive` over the `CONSUMER` binding), which answers with the run's summary
//! the moment the run ends there. The hand-over carries ids only (signed with the internal
//! key): the consumer reads the run, its plan and its parameters from D1.

use std::time::Duration;

use baton_core::messages::TaskMessage;
use serde_json::{json, Value};
use worker::{Delay, Headers, Method, Request, RequestInit};

use super::run::{Engine, Loaded};
use crate::concurrency::with_timeout;
use crate::{auth, bindings, clock, Error, Result};

/// The consumer's route for a hand-over.
pub const DRIVE_PATH: &str = "/internal/drive";

/// Why a hand-over did not answer.
enum Undelivered {
    /// The consumer refused it (4xx): it runs nothing, the claims can be given back.
    Refused(Error),
    /// Anything else: the consumer may be running the wave.
    Unknown(Error),
}

impl Engine<'_> {
    /// Hands the claimed first wave of `written` to the consumer and waits at most `limit`.
    /// Returns the run's summary if it ended there. A refused hand-over gives the claims
    /// back and queues the wave; any other failure leaves it to the attempts' deadlines (the
    /// consumer may be running it, and an attempt must never run twice at once).
    /// The run's deadline timer is sent meanwhile.
    pub async fn hand_over(&self, written: &Loaded, tasks: &[TaskMessage], limit: Duration) -> Option<Value> {
        let arm = self.arm_run_deadline(written);
        let until = super::attempts::in_place_until(self.env(), limit);
        let delivered = with_timeout(self.deliver(written, tasks, until), limit);
        let (delivered, ()) = futures_util::future::join(delivered, arm).await;
        match delivered {
            Some(Ok(ended)) => ended.filter(|summary| !summary.is_null()),
            None => None,
            Some(Err(Undelivered::Unknown(e))) => {
                worker::console_error!(
                    "hand-over of {}: {e}; the attempts' deadlines bring the poller",
                    written.run.run_id
                );
                None
            }
            Some(Err(Undelivered::Refused(e))) => {
                worker::console_warn!("hand-over of {} refused ({e}); queueing the first wave", written.run.run_id);
                if let Err(e) = self.give_back(written, tasks).await {
                    worker::console_error!("first wave not given back ({e}); its deadlines bring the poller");
                }
                None
            }
        }
    }

    /// Sends the run's deadline timer (best effort: if it cannot be sent, the poller keeps the
    /// deadline).
    pub(crate) async fn arm_run_deadline(&self, written: &Loaded) {
        let sent = match self.run_deadline_timer(written) {
            Ok(timer) => self.send_timers(vec![timer]).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            worker::console_error!("run {}: deadline timer not sent ({e}); the poller keeps it", written.run.run_id);
        }
    }

    async fn deliver(
        &self,
        written: &Loaded,
        tasks: &[TaskMessage],
        until: baton_core::time::Millis,
    ) -> std::result::Result<Option<Value>, Undelivered> {
        let unknown = Undelivered::Unknown;
        // Only ids: the consumer reads the run, its plan and its parameters from D1 itself.
        // The configuration just resolved saves it a KV read; `until`: when the consumer must
        // let go of the attempts (this side stops waiting before then).
        let body = json!({ "run_id": written.run.run_id, "tasks": tasks, "config": self.config.to_override(),
                           "until": until.as_u64() });
        let body = serde_json::to_vec(&body).map_err(|e| unknown(Error::Internal(e.to_string())))?;
        let headers = Headers::new();
        let _ = headers.set("Content-Type", "application/json");
        let signed = auth::internal_headers(self.env(), "POST", DRIVE_PATH, &body).map_err(Undelivered::Refused)?;
        for (name, value) in signed {
            let _ = headers.set(name, &value);
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
        let request = Request::new_with_init(&format!("https://consumer.internal{DRIVE_PATH}"), &init)
            .map_err(|e| Undelivered::Refused(e.into()))?;
        let consumer = crate::services::worker(self.env(), bindings::CONSUMER).map_err(Undelivered::Refused)?;
        crate::meter::subrequest();
        let mut response = consumer.fetch_request(request).await.map_err(|e| unknown(e.into()))?;
        match response.status_code() {
            200 => Ok(response.json::<Value>().await.ok().and_then(|answer| answer.get("ended").cloned())),
            status => {
                let error = Error::Internal(format!(
                    "consumer answered {status}: {}",
                    response.text().await.unwrap_or_default()
                ));
                Err(if (400..500).contains(&status) { Undelivered::Refused(error) } else { unknown(error) })
            }
        }
    }

    /// Gives back the claims the orchestrator made for a refused hand-over, then queues the
    /// wave (a send that fails leaves it to the poller, the run being due).
    async fn give_back(&self, written: &Loaded, tasks: &[TaskMessage]) -> Result<()> {
        for task in tasks {
            let service = task.service.as_str();
            if let Some(claimed_at) = written.step(service).and_then(|row| row.claimed_at) {
                self.release_attempt(&written.run.run_id, service, task.attempt, claimed_at).await?;
            }
        }
        self.send_tasks(tasks).await
    }

    /// Reads the run (D1, the authority) until it ends or `deadline` (ms) passes; the interval
    /// grows from 2 ms to 100 ms so short runs answer fast and long waits stay cheap.
    pub async fn wait_for_end(&self, run_id: &str, deadline: u64) -> Result<Loaded> {
        let mut interval = 2u64;
        loop {
            let loaded = self.load(run_id).await?.ok_or_else(|| Error::NotFound { what: format!("run {run_id}") })?;
            if loaded.status()?.is_terminal() || clock::now_ms() >= deadline {
                return Ok(loaded);
            }
            Delay::from(Duration::from_millis(interval)).await;
            interval = (interval * 3 / 2).min(100);
        }
    }
}
