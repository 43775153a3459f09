//! A service reached by base URL (not a service binding) for `SERVICE_URLS`: answers the
//! handshake protocol on loopback and counts what it received.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::http::{read_request, write_json};

/// A running fake service; its thread ends with the test process.
pub struct FakeService {
    port: u16,
    received: Arc<Mutex<Vec<(String, Value)>>>,
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
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake service");
        let port = listener.local_addr().expect("fake service address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = answer(stream, &log, mode);
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
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn answer(stream: TcpStream, log: &Mutex<Vec<(String, Value)>>, mode: Mode) -> std::io::Result<()> {
    let (path, body) = read_request(&stream)?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut log) = log.lock() {
        log.push((path.clone(), body.clone()));
    }
    let long_running = mode == Mode::LongRunning;
    let (status, payload) = if path.ends_with("/api/handshake") {
        let capabilities = if long_running { json!({"progress": true}) } else { json!({}) };
        (
            "200 OK",
            json!({"executionId": body["executionId"], "workerId": "fake-by-url", "accepted": true,
               "estimatedCompletionMs": 0, "resourceRequirements": {}, "capabilities": capabilities}),
        )
    } else if path.contains("/api/progress/") {
        ("200 OK", json!({"progress": 0.25, "status": "running", "served_by": "url"}))
    } else if long_running {
        ("202 Accepted", json!({"accepted": true}))
    } else {
        (
            "200 OK",
            json!({"status": "completed", "output": {"served_by": "url", "lcp_ms": 1200, "cls": 0.01, "inp_ms": 90, "performance_score": 97},
               "usage": {"tokens": 1}}),
        )
    };
    write_json(stream, status, &payload.to_string())
}
