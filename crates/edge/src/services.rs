//! Where Baton reaches a service worker: a base URL from `SERVICE_URLS` (a JSON object of
//! worker key → base URL, e.g. `{"serp_intelligence": "https://serp.example.com"}`), else the
//! `SERVICES` service binding with the worker key as path prefix. Every call Baton makes to a
//! service (handshake, process, progress, result, cancel) goes through [`Endpoint::call`]:
//! signed, so the service can check that Baton calls, and bounded in time, so a hung
//! connection becomes an attempt time-out.
//!
//! The signature: `X-Baton-Timestamp` (ms since the epoch) and `X-Baton-Signature`
//! (lowercase hex HMAC-SHA256 with `WORKER_SECRET` over `"{timestamp}." + body`, the body
//! empty for a `GET`) — the same scheme services use for their result callbacks.

use std::time::Duration;

use baton_core::signature;
use baton_core::time::Millis;
use worker::{Env, Fetch, Fetcher, Headers, Method, Request, RequestInit, Response};

use crate::concurrency::with_timeout;
use crate::{bindings, clock, settings, Error};

/// A service binding to another Baton worker (`bindings::POLLER`, `bindings::CONSUMER`, ...),
/// or an error naming the binding.
pub fn worker(env: &Env, name: &'static str) -> crate::Result<Fetcher> {
    env.service(name).map_err(|e| Error::Binding { name, cause: e.to_string() })
}

/// A service worker's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A base URL (no trailing slash).
    Url(String),
    /// `https://services.internal/{worker_key}` over the `SERVICES` binding.
    Binding(String),
}

/// Why a request to a service did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The configured base URL does not make a request URL.
    #[error("invalid service URL {url}: {cause}")]
    InvalidUrl { url: String, cause: String },
    /// The `SERVICES` binding is missing.
    #[error("service binding SERVICES unavailable: {0}")]
    NoBinding(String),
    /// The request failed on the way (connection, DNS, reset).
    #[error("network error calling {url}: {cause}")]
    Network { url: String, cause: String },
    /// No whole answer within the time allowed.
    #[error("no answer from {url} within {limit_ms} ms")]
    TimedOut { url: String, limit_ms: u64 },
}

/// A service's whole answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body as text.
    pub body: String,
}

/// The endpoint of `worker` (a step's worker key).
pub fn endpoint(env: &Env, worker: &str) -> Endpoint {
    match settings::service_urls(env).remove(worker) {
        Some(base) => Endpoint::Url(base),
        None => Endpoint::Binding(format!("https://services.internal/{worker}")),
    }
}

impl Endpoint {
    /// The full URL of `path` (starting with `/`).
    pub fn url(&self, path: &str) -> String {
        match self {
            Endpoint::Url(base) | Endpoint::Binding(base) => format!("{base}{path}"),
        }
    }

    /// Calls `path` with `method` and a JSON `body` (`None`: no body), signed, and reads the
    /// whole answer within `limit`; past it the request is aborted.
    pub async fn call(
        &self,
        env: &Env,
        method: Method,
        path: &str,
        body: Option<&str>,
        limit: Duration,
    ) -> Result<Answer, CallError> {
        let headers = Headers::new();
        let payload = body.unwrap_or("");
        if body.is_some() {
            let _ = headers.set("Content-Type", "application/json");
        }
        if let Some(secret) = settings::worker_secret(env) {
            let now = Millis::new(clock::now_ms());
            let _ = headers.set(signature::TIMESTAMP_HEADER, &now.as_u64().to_string());
            let _ = headers.set(signature::SIGNATURE_HEADER, &signature::sign(&secret, now, payload.as_bytes()));
        }
        let mut init = RequestInit::new();
        init.with_method(method).with_headers(headers);
        if let Some(body) = body {
            init.with_body(Some(body.into()));
        }
        let controller = worker::AbortController::default();
        let exchange = async {
            let mut response = self.send(env, path, &init, Some(&controller.signal())).await?;
            let status = response.status_code();
            let text = response.text().await.unwrap_or_default();
            Ok(Answer { status, body: text })
        };
        match with_timeout(exchange, limit).await {
            Some(answer) => answer,
            None => {
                controller.abort();
                Err(CallError::TimedOut { url: self.url(path), limit_ms: limit.as_millis() as u64 })
            }
        }
    }

    /// Sends a request to `path` (counted as a subrequest).
    pub async fn fetch(&self, env: &Env, path: &str, init: RequestInit) -> Result<Response, CallError> {
        self.send(env, path, &init, None).await
    }

    async fn send(
        &self,
        env: &Env,
        path: &str,
        init: &RequestInit,
        signal: Option<&worker::AbortSignal>,
    ) -> Result<Response, CallError> {
        let url = self.url(path);
        crate::meter::subrequest();
        let network = |e: worker::Error| CallError::Network { url: url.clone(), cause: e.to_string() };
        let invalid = |cause: String| CallError::InvalidUrl { url: url.clone(), cause };
        let raw: worker::web_sys::RequestInit = init.into();
        if let Some(signal) = signal {
            let signal: &worker::web_sys::AbortSignal = signal;
            raw.set_signal(Some(signal));
        }
        let request = worker::web_sys::Request::new_with_str_and_init(&url, &raw)
            .map(Request::from)
            .map_err(|e| invalid(format!("{e:?}")))?;
        match self {
            Endpoint::Binding(_) => {
                let fetcher = env.service(bindings::SERVICES).map_err(|e| CallError::NoBinding(e.to_string()))?;
                fetcher.fetch_request(request).await.map_err(network)
            }
            Endpoint::Url(_) => Fetch::Request(request).send().await.map_err(network),
        }
    }
}
