//! The key-account service (`KAM` service binding): master templates.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use baton_core::template::MasterTemplate;
use worker::Delay;

use crate::{bindings, Error, Result};

/// How long the key-account service may take to answer.
pub const TIMEOUT_MS: u64 = 10_000;

const SERVICE: &str = "key-account service";

/// `fut`, or `None` if it has not finished after `ms` (a stuck upstream never hangs a request).
pub async fn within<F: Future>(ms: u64, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut delay = pin!(Delay::from(Duration::from_millis(ms)));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(value) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(value));
        }
        if delay.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// `GET /api/master-templates/{name}`: the template, `None` when the service does not know
/// it (404). Unreachable, slow, failing or nonsensical answers are [`Error::Upstream`] (502).
/// `name` must already be validated (letters, digits, `_`, `-`).
pub async fn master_template(env: &worker::Env, name: &str) -> Result<Option<MasterTemplate>> {
    let upstream = |message: String| Error::Upstream { service: SERVICE.into(), message };
    let kam = crate::services::worker(env, bindings::KAM)?;
    let url = format!("https://kam.internal/api/master-templates/{name}");
    let answer = async {
        crate::meter::subrequest();
        let mut response = kam.fetch(url, None).await?;
        let status = response.status_code();
        let body = response.text().await?;
        Ok::<_, worker::Error>((status, body))
    };
    let (status, body) = within(TIMEOUT_MS, answer)
        .await
        .ok_or_else(|| upstream(format!("no answer within {TIMEOUT_MS} ms")))?
        .map_err(|e| upstream(e.to_string()))?;
    match status {
        404 => Ok(None),
        200..=299 => serde_json::from_str::<MasterTemplate>(&body)
            .map(Some)
            .map_err(|e| upstream(format!("the answer is not a master template: {e}"))),
        other => Err(upstream(format!("answered {other}"))),
    }
}
