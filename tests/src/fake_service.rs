//! A service reached by base URL (not a service binding) for the consumer's `SERVICE_URLS`:
//! answers the handshake protocol on loopback and counts what it received.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::http::{read_request, write_json};

/// A running fake service; its thread ends with the test process.
pub struct FakeService {
    port: u16,
    received: Arc<Mutex<Vec<(String, Value)>>>,
}

impl FakeService {
    /// Starts on a free loopback port.
    pub fn start() -> FakeService {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake service");
        let port = listener.local_addr().expect("fake service address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = answer(stream, &log);
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

fn answer(stream: TcpStream, log: &Mutex<Vec<(String, Value)>>) -> std::io::Result<()> {
    let (path, body) = read_request(&stream)?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut log) = log.lock() {
        log.push((path.clone(), body.clone()));
    }
    let payload = if path.ends_with("/api/handshake") {
        json!({"executionId": body["executionId"], "workerId": "fake-by-url", "accepted": true,
               "estimatedCompletionMs": 0, "resourceRequirements": {}, "capabilities": {}})
    } else {
        json!({"status": "completed", "output": {"served_by": "url", "lcp_ms": 1200, "cls": 0.01, "inp_ms": 90, "performance_score": 97},
               "usage": {"tokens": 1}})
    };
    write_json(stream, "200 OK", &payload.to_string())
}
