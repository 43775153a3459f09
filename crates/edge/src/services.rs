//! Where Baton reaches a service worker: a base URL from `SERVICE_URLS` (a JSON object of
//! worker key → base URL, e.g. `{"serp_intelligence": "https://serp.example.com"}`), else the
//! `SERVICES` service binding with the worker key as path prefix. Every call Baton makes to a
//! service (handshake, process, progress, result, cancel) goes through [`Endpoint::call`]:
//! signed, so the service can check that Baton calls, and bounded in time, so a hung
//! connection becomes an attempt time-out.
//!
//! The signature is [`baton_core::signature`]'s, purpose `call`, keyed with the service's own
//! key (`SERVICE_KEYS`, else `WORKER_SECRET`).

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
pub struct Endpoint {
    /// The worker key (whose keys sign the calls).
    worker: String,
    /// Where it is.
    base: Base,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Base {
    /// A base URL (no trailing slash).
    Url(String),
    /// `https://services.internal/{worker_key}` over the `SERVICES` binding.
    Binding(String),
}

/// Why a request to a service did not get an answer. The messages name the service, never
/// its address or the platform's own words (those go to the log): they reach clients as step
/// errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The configured base URL does not make a request URL.
    #[error("the address configured for service {worker} is not a valid URL")]
    InvalidUrl { worker: String, cause: String },
    /// The `SERVICES` binding is missing.
    #[error("service {worker} is unreachable: the SERVICES binding is not configured")]
    NoBinding { worker: String, cause: String },
    /// The request failed on the way (connection, DNS, reset).
    #[error("network error calling service {worker}")]
    Network { worker: String, cause: String },
    /// No whole answer within the time allowed.
    #[error("no answer from service {worker} within {limit_ms} ms")]
    TimedOut { worker: String, limit_ms: u64 },
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
    let base = match settings::service_urls(env).remove(worker) {
        Some(base) => Base::Url(base),
        None => Base::Binding(format!("https://services.internal/{worker}")),
    };
    Endpoint { worker: worker.to_string(), base }
}

/// Whether this worker can reach every one of `workers`: each has a `SERVICE_URLS` address,
/// or the `SERVICES` binding is there.
pub fn reachable<'a>(env: &Env, mut workers: impl Iterator<Item = &'a str>) -> bool {
    let urls = settings::service_urls(env);
    let binding = env.service(bindings::SERVICES).is_ok();
    workers.all(|worker| binding || urls.contains_key(worker))
}

impl Endpoint {
    /// The full URL of `path` (starting with `/`).
    pub fn url(&self, path: &str) -> String {
        match &self.base {
            Base::Url(base) | Base::Binding(base) => format!("{base}{path}"),
        }
    }

    /// Calls `path` with `method` and a JSON `body` (`None`: no body) about `attempt`, signed
    /// with the service's key, and reads the whole answer within `limit`; past it the request
    /// is aborted.
    pub async fn call(
        &self,
        env: &Env,
        method: Method,
        path: &str,
        attempt: Option<u32>,
        body: Option<&str>,
        limit: Duration,
    ) -> Result<Answer, CallError> {
        let headers = Headers::new();
        let payload = body.unwrap_or("");
        if body.is_some() {
            let _ = headers.set("Content-Type", "application/json");
        }
        let url = self.url(path);
        let signed_path = worker::Url::parse(&url).map(|u| u.path().to_string()).unwrap_or_else(|_| path.to_string());
        if let Some(key) = settings::service_keys(env, &self.worker).first() {
            let method_name = method.to_string();
            let request = signature::Signed {
                purpose: signature::Purpose::Call,
                method: &method_name,
                path: &signed_path,
                attempt,
                body: payload.as_bytes(),
            };
            for (name, value) in signature::headers(key, &request, Millis::new(clock::now_ms())) {
                let _ = headers.set(name, &value);
            }
        }
        let mut init = RequestInit::new();
        init.with_method(method).with_headers(headers);
        if let Some(body) = body {
            init.with_body(Some(body.into()));
        }
        let controller = worker::AbortController::default();
        let exchange = async {
            let response = self.send(env, path, &init, Some(&controller.signal())).await?;
            let status = response.status_code();
            let text = crate::http::response_text(response).await.unwrap_or_default();
            Ok(Answer { status, body: text })
        };
        match with_timeout(exchange, limit).await {
            Some(answer) => answer,
            None => {
                controller.abort();
                Err(CallError::TimedOut { worker: self.worker.clone(), limit_ms: limit.as_millis() as u64 })
            }
        }
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
        let worker = self.worker.clone();
        let logged = |what: &str, cause: String| {
            worker::console_warn!("calling {url}: {what}: {cause}");
            cause
        };
        let raw: worker::web_sys::RequestInit = init.into();
        if let Some(signal) = signal {
            let signal: &worker::web_sys::AbortSignal = signal;
            raw.set_signal(Some(signal));
        }
        let request = worker::web_sys::Request::new_with_str_and_init(&url, &raw).map(Request::from).map_err(|e| {
            CallError::InvalidUrl { worker: worker.clone(), cause: logged("invalid URL", format!("{e:?}")) }
        })?;
        let network =
            |e: worker::Error| CallError::Network { worker: worker.clone(), cause: logged("network", e.to_string()) };
        match &self.base {
            Base::Binding(_) => {
                let fetcher = env.service(bindings::SERVICES).map_err(|e| CallError::NoBinding {
                    worker: worker.clone(),
                    cause: logged("binding", e.to_string()),
                })?;
                fetcher.fetch_request(request).await.map_err(network)
            }
            Base::Url(_) => Fetch::Request(request).send().await.map_err(network),
        }
    }
}
