//! Where Baton reaches a service worker: a base URL from `SERVICE_URLS` (a JSON object of
//! worker key → base URL, e.g. `{"serp_intelligence": "https://serp.example.com"}`), else the
//! `SERVICES` service binding with the worker key as path prefix. The consumer (handshake,
//! process) and the poller (progress) use the same rule.

use worker::{Env, Fetch, Fetcher, Request, RequestInit, Response};

use crate::{bindings, settings, Error};

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

    /// Sends a request to `path` (counted as a subrequest).
    pub async fn fetch(&self, env: &Env, path: &str, init: RequestInit) -> Result<Response, CallError> {
        let url = self.url(path);
        crate::meter::subrequest();
        let network = |e: worker::Error| CallError::Network { url: url.clone(), cause: e.to_string() };
        match self {
            Endpoint::Binding(_) => {
                let fetcher = env.service(bindings::SERVICES).map_err(|e| CallError::NoBinding(e.to_string()))?;
                fetcher.fetch(&url, Some(init)).await.map_err(network)
            }
            Endpoint::Url(_) => {
                let request = Request::new_with_init(&url, &init)
                    .map_err(|e| CallError::InvalidUrl { url: url.clone(), cause: e.to_string() })?;
                Fetch::Request(request).send().await.map_err(network)
            }
        }
    }
}
