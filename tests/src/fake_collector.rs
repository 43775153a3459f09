//! An OpenTelemetry collector on loopback for the span export tests: it takes OTLP/HTTP JSON
//! posts at `/v1/traces` and keeps what it received (or fails, or does not answer in time).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::otlp::ExportTraceServiceRequest;
use tiny_http::{Request, Server};

use crate::http::respond_json;

/// How the collector answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectorMode {
    /// 200 with an empty `ExportTraceServiceResponse`; the request is kept.
    Accept,
    /// 500; the request is not kept.
    Fail,
    /// Holds the request this long before answering 200; the request is not kept.
    Hang(Duration),
}

/// One export the collector received.
#[derive(Debug, Clone)]
pub struct Export {
    /// The path posted to.
    pub path: String,
    /// The headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body, decoded.
    pub request: ExportTraceServiceRequest,
}

impl Export {
    /// The value of header `name` (any case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// A running fake collector; stops on drop.
pub struct FakeCollector {
    port: u16,
    server: Arc<Server>,
    mode: Arc<Mutex<CollectorMode>>,
    received: Arc<Mutex<Vec<Export>>>,
    requests: Arc<Mutex<usize>>,
}

impl FakeCollector {
    /// Starts on a free loopback port.
    pub fn start(mode: CollectorMode) -> FakeCollector {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("binding the fake collector"));
        let port = server.server_addr().to_ip().expect("fake collector address").port();
        let fake = FakeCollector {
            port,
            server,
            mode: Arc::new(Mutex::new(mode)),
            received: Arc::new(Mutex::new(Vec::new())),
            requests: Arc::new(Mutex::new(0)),
        };
        let (server, mode, received, requests) =
            (fake.server.clone(), fake.mode.clone(), fake.received.clone(), fake.requests.clone());
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                *requests.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                let current = *mode.lock().unwrap_or_else(|p| p.into_inner());
                let received = received.clone();
                // Each on its own thread: a held request does not hold up the next.
                std::thread::spawn(move || answer(request, current, &received));
            }
        });
        fake
    }

    /// The base URL to configure as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches the mode.
    pub fn set_mode(&self, mode: CollectorMode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    /// The exports kept so far.
    pub fn received(&self) -> Vec<Export> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests received in any mode.
    pub fn requests(&self) -> usize {
        *self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for FakeCollector {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn answer(mut request: Request, mode: CollectorMode, received: &Mutex<Vec<Export>>) {
    let mut body = Vec::new();
    let _ = std::io::Read::read_to_end(request.as_reader(), &mut body);
    let path = request.url().to_string();
    let headers = request
        .headers()
        .iter()
        .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_string()))
        .collect();
    match mode {
        CollectorMode::Accept => {
            let decoded = serde_json::from_slice::<ExportTraceServiceRequest>(&body);
            let (status, payload) = match (request.method().as_str(), path.as_str(), decoded) {
                ("POST", "/v1/traces", Ok(export)) => {
                    received.lock().unwrap_or_else(|p| p.into_inner()).push(Export { path, headers, request: export });
                    (200, "{}".to_string())
                }
                (_, _, Err(e)) => (400, serde_json::json!({ "message": e.to_string() }).to_string()),
                _ => (404, "{}".to_string()),
            };
            respond_json(request, status, payload);
        }
        CollectorMode::Fail => respond_json(request, 500, r#"{"message": "collector down"}"#.to_string()),
        CollectorMode::Hang(hold) => {
            std::thread::sleep(hold);
            respond_json(request, 200, "{}".to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request;

    #[test]
    fn keeps_what_it_accepts_and_fails_when_told() {
        let fake = FakeCollector::start(CollectorMode::Accept);
        let body = br#"{"resourceSpans": []}"#;
        let post = |path: &str, body: &[u8]| {
            request(fake.port, "POST", path, &[("x-key", "k")], Some(body), Duration::from_secs(5)).expect("answered")
        };
        assert_eq!(post("/v1/traces", body).status, 200);
        assert_eq!(post("/v1/traces", b"not json").status, 400);
        let kept = fake.received();
        assert_eq!(kept.len(), 1);
        assert_eq!((kept[0].path.as_str(), kept[0].header("X-Key")), ("/v1/traces", Some("k")));
        fake.set_mode(CollectorMode::Fail);
        assert_eq!(post("/v1/traces", body).status, 500);
        assert_eq!((fake.received().len(), fake.requests()), (1, 3));
    }
}
