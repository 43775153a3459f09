//! A webhook receiver on loopback: records every delivery attempt (headers and body) and
//! answers 500 to the first `failures` attempts of each delivery (by its id), 200 after.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tiny_http::Server;

use crate::http::respond_json;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Header name (lowercase) → value.
    pub headers: BTreeMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    /// A header, by its name in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A running receiver; its thread ends with the test process.
pub struct WebhookReceiver {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl WebhookReceiver {
    /// Starts on a free loopback port, failing the first `failures` attempts of each delivery.
    pub fn start(failures: usize) -> WebhookReceiver {
        let server = Server::http("127.0.0.1:0").expect("binding the webhook receiver");
        let port = server.server_addr().to_ip().expect("webhook receiver address").port();
        let received: Arc<Mutex<Vec<Received>>> = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let headers: BTreeMap<String, String> = request
                    .headers()
                    .iter()
                    .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_string()))
                    .collect();
                let mut body = Vec::new();
                let _ = request.as_reader().read_to_end(&mut body);
                let id = headers.get("x-baton-webhook-id").cloned().unwrap_or_default();
                let Ok(mut log) = log.lock() else { return };
                let earlier = log.iter().filter(|r| r.header("x-baton-webhook-id") == Some(id.as_str())).count();
                let status = if earlier < failures { 500 } else { 200 };
                log.push(Received { headers, body, status });
                drop(log);
                respond_json(request, status, "{}".to_string());
            }
        });
        WebhookReceiver { port, received }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/baton", self.port)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}
