//! A service reached by base URL (not a service binding) for `SERVICE_URLS`: answers the
//! handshake protocol on loopback and counts what it received.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tiny_http::{Request, Server};

use crate::http::respond_json;

/// A running fake service; its thread ends with the test process.
pub struct FakeService {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

/// A request as the fake service received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The method.
    pub method: String,
    /// The path (with its query, if any).
    pub path: String,
    /// The headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body as sent.
    pub body: Vec<u8>,
}

impl Received {
    /// The value of header `name` (any case), if sent.
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
    }
}

/// How the fake service works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answers `process` with the result at once.
    Synchronous,
    /// Accepts `process` (202), never calls back, and reports progress at `/api/progress/:id`.
    LongRunning,
}

impl FakeService {
    /// Starts on a free loopback port; answers at once.
    pub fn start() -> FakeService {
        FakeService::start_in(Mode::Synchronous)
    }

    /// Starts a service whose work never ends but which reports its progress.
    pub fn start_long_running() -> FakeService {
        FakeService::start_in(Mode::LongRunning)
    }

    fn start_in(mode: Mode) -> FakeService {
        let server = Server::http("127.0.0.1:0").expect("binding the fake service");
        let port = server.server_addr().to_ip().expect("fake service address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                answer(request, &log, mode);
            }
        });
        FakeService { port, received }
    }

    /// Its base URL.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `(path, body)` of every request so far.
    pub fn received(&self) -> Vec<(String, Value)> {
        self.requests().into_iter().map(|r| (r.path, serde_json::from_slice(&r.body).unwrap_or(Value::Null))).collect()
    }

    /// Every request so far, whole.
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn answer(mut request: Request, log: &Mutex<Vec<Received>>, mode: Mode) {
    let path = request.url().to_string();
    let mut raw = Vec::new();
    let _ = request.as_reader().read_to_end(&mut raw);
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let headers = request
        .headers()
        .iter()
        .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_string()))
        .collect();
    if let Ok(mut log) = log.lock() {
        log.push(Received { method: request.method().as_str().to_string(), path: path.clone(), headers, body: raw });
    }
    let long_running = mode == Mode::LongRunning;
    let (status, payload) = if path.ends_with("/api/handshake") {
        let capabilities = if long_running { json!({"progress": true}) } else { json!({}) };
        (
            200,
            json!({"executionId": body["executionId"], "workerId": "fake-by-url", "accepted": true,
               "estimatedCompletionMs": 0, "resourceRequirements": {}, "capabilities": capabilities}),
        )
    } else if path.contains("/api/progress/") {
        (200, json!({"progress": 0.25, "status": "running", "served_by": "url"}))
    } else if long_running {
        (202, json!({"accepted": true}))
    } else {
        (
            200,
            json!({"status": "completed", "output": {"served_by": "url", "lcp_ms": 1200, "cls": 0.01, "inp_ms": 90, "performance_score": 97},
               "usage": {"tokens": 1}}),
        )
    };
    respond_json(request, status, payload.to_string());
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::http::request;

    fn post(service: &FakeService, path: &str, body: Value) -> (u16, Value) {
        let body = body.to_string();
        let r = request(service.port, "POST", path, &[], Some(body.as_bytes()), Duration::from_secs(5))
            .expect("the fake service answers");
        (r.status, r.json())
    }

    #[test]
    fn answers_the_handshake_protocol_and_logs_requests() {
        let service = FakeService::start();
        let (status, handshake) = post(&service, "/api/handshake", json!({"executionId": "run_1"}));
        assert_eq!((status, &handshake["executionId"], &handshake["accepted"]), (200, &json!("run_1"), &json!(true)));
        let (status, result) = post(&service, "/api/process", json!({"executionId": "run_1"}));
        assert_eq!((status, result["output"]["served_by"].as_str()), (200, Some("url")));
        let paths: Vec<String> = service.received().into_iter().map(|(path, _)| path).collect();
        assert_eq!(paths, ["/api/handshake", "/api/process"]);
    }

    #[test]
    fn a_long_running_service_accepts_and_reports_progress() {
        let service = FakeService::start_long_running();
        let (_, handshake) = post(&service, "/api/handshake", json!({"executionId": "run_2"}));
        assert_eq!(handshake["capabilities"]["progress"], true);
        assert_eq!(post(&service, "/api/process", json!({})).0, 202);
        let r = request(service.port, "GET", "/api/progress/run_2", &[], None, Duration::from_secs(5))
            .expect("progress answers");
        assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("running")));
    }
}
