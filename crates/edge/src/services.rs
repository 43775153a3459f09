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
use baton_core::trace::{RunTrace, SpanOf};
use wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{web_sys, Env, Fetcher, Headers, Method};

use crate::concurrency::with_timeout;
use crate::{bindings, clock, settings, Error};

/// A service binding to another Baton worker (`bindings::POLLER`, `bindings::CONSUMER`, ...),
/// or an error naming the binding.
pub fn worker(env: &Env, name: &'static str) -> crate::Result<Fetcher> {
    env.service(name).map_err(|e| Error::Binding { name: name.into(), cause: e.to_string() })
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

/// A call to a service.
pub struct Call<'a> {
    /// Its method.
    pub method: Method,
    /// Its path, below the service's base.
    pub path: &'a str,
    /// The attempt it is about.
    pub attempt: Option<u32>,
    /// Its JSON body (`None`: no body).
    pub body: Option<&'a str>,
    /// The run's trace, which it carries (`traceparent`, `tracestate`) ...
    pub trace: &'a RunTrace,
    /// ... from this span of the run.
    pub span: SpanOf<'a>,
}

impl<'a> Call<'a> {
    /// A `GET` of `path` about `attempt`, from `span` of `trace`.
    pub fn get(path: &'a str, attempt: u32, trace: &'a RunTrace, span: SpanOf<'a>) -> Call<'a> {
        Call { method: Method::Get, path, attempt: Some(attempt), body: None, trace, span }
    }
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

    /// Makes `call`, signed with the service's key (its trace context included), and reads
    /// the whole answer within `limit`; past it the request is aborted.
    pub async fn call(&self, env: &Env, call: Call<'_>, limit: Duration) -> Result<Answer, CallError> {
        let Call { method, path, attempt, body, trace: run_trace, span } = call;
        let traceparent = run_trace.traceparent(span);
        let trace = (traceparent.as_str(), run_trace.state.as_deref());
        let headers = Headers::new();
        let payload = body.unwrap_or("");
        if body.is_some() {
            let _ = headers.set("Content-Type", "application/json");
        }
        let url = self.url(path);
        let signed_path = match worker::Url::parse(&url) {
            Ok(parsed) => parsed.path().to_string(),
            Err(e) => {
                worker::console_warn!("calling {url}: invalid URL: {e}");
                return Err(CallError::InvalidUrl { worker: self.worker.clone(), cause: e.to_string() });
            }
        };
        let method_name = method.to_string();
        if let Some(key) = settings::service_keys(env, &self.worker).first() {
            let request = signature::Signed {
                purpose: signature::Purpose::Call,
                method: &method_name,
                path: &signed_path,
                attempt,
                body: payload.as_bytes(),
                trace: Some(trace),
            };
            for (name, value) in signature::headers(key, &request, Millis::new(clock::now_ms())) {
                let _ = headers.set(name, &value);
            }
        } else {
            for (name, value) in run_trace.headers(span) {
                let _ = headers.set(name, &value);
            }
        }
        // The platform's own request and response objects, end to end: no copy of either on
        // the way, and the answer read by the runtime in one call (`Response.text()`; reading
        // the body's stream chunk by chunk through wasm costs far more CPU for the same bytes).
        let init = web_sys::RequestInit::new();
        init.set_method(&method_name);
        init.set_headers(&headers.0);
        if let Some(body) = body {
            init.set_body(&JsValue::from_str(body));
        }
        let controller = worker::AbortController::default();
        init.set_signal(Some(&controller.signal()));
        let exchange = async {
            let response = self.send(env, &url, &init).await?;
            let status = response.status();
            let text = match response.text() {
                Ok(promise) => JsFuture::from(promise).await.ok().and_then(|t| t.as_string()).unwrap_or_default(),
                Err(_) => String::new(),
            };
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

    async fn send(&self, env: &Env, url: &str, init: &web_sys::RequestInit) -> Result<web_sys::Response, CallError> {
        crate::meter::subrequest();
        let worker = self.worker.clone();
        let logged = |what: &str, cause: String| {
            worker::console_warn!("calling {url}: {what}: {cause}");
            cause
        };
        let network = |e: JsValue| {
            // The platform's own message (`TypeError: ...`) when it gives one.
            let text =
                e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.to_string())).unwrap_or_else(|| format!("{e:?}"));
            CallError::Network { worker: worker.clone(), cause: logged("network", text) }
        };
        let promise = match &self.base {
            Base::Binding(_) => {
                let fetcher = env.service(bindings::SERVICES).map_err(|e| CallError::NoBinding {
                    worker: worker.clone(),
                    cause: logged("binding", e.to_string()),
                })?;
                let fetcher: &worker::worker_sys::Fetcher = fetcher.as_ref().unchecked_ref();
                fetcher.fetch_with_str_and_init(url, init).map_err(network)?
            }
            Base::Url(_) => {
                js_sys::global().unchecked_into::<web_sys::WorkerGlobalScope>().fetch_with_str_and_init(url, init)
            }
        };
        JsFuture::from(promise).await.map_err(network)?.dyn_into::<web_sys::Response>().map_err(network)
    }
}
