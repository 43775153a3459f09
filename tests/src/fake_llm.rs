//! A small OpenAI-compatible chat-completions server on loopback for the LLM tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tiny_http::{Request, Server};

use crate::http::respond_json;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmMode {
    /// 200 with a narrative.
    Answer,
    /// 429 for the first `n` requests since the mode was set, then answers.
    RateLimitedFirst(usize),
    /// 200 with a body that is not a chat completion.
    Garbage,
}

/// The tokens each answer says it read.
pub const INPUT_TOKENS: u64 = 1_200;
/// The tokens each answer says it wrote.
pub const OUTPUT_TOKENS: u64 = 150;

/// The narrative the server returns.
pub const NARRATIVE: &str = "The site is mostly healthy; fix the slow pages first.";

/// A running fake server; stops on drop.
pub struct FakeLlm {
    port: u16,
    server: Arc<Server>,
    mode: Arc<Mutex<LlmMode>>,
    requests: Arc<AtomicUsize>,
}

impl FakeLlm {
    /// Starts the server on a free loopback port.
    pub fn start(mode: LlmMode) -> FakeLlm {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("binding the fake LLM"));
        let port = server.server_addr().to_ip().expect("fake LLM address").port();
        let fake = FakeLlm { port, server, mode: Arc::new(Mutex::new(mode)), requests: Arc::new(AtomicUsize::new(0)) };
        let (server, mode, requests) = (fake.server.clone(), fake.mode.clone(), fake.requests.clone());
        std::thread::spawn(move || {
            // Ends when the server is unblocked (on drop).
            for request in server.incoming_requests() {
                let current = *mode.lock().unwrap_or_else(|p| p.into_inner());
                let n = requests.fetch_add(1, Ordering::SeqCst);
                answer(request, current, n);
            }
        });
        fake
    }

    /// The base URL to configure as `LLM_API_URL`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Switches the mode and resets the request count.
    pub fn set_mode(&self, mode: LlmMode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
        self.requests.store(0, Ordering::SeqCst);
    }

    /// Requests received since the mode was last set.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn answer(mut request: Request, mode: LlmMode, n: usize) {
    let _ = std::io::copy(request.as_reader(), &mut std::io::sink());
    let (status, payload) = match mode {
        LlmMode::RateLimitedFirst(limit) if n < limit => (429, json!({"error": {"message": "slow down"}}).to_string()),
        LlmMode::Garbage => (200, "{\"unexpected\": \"shape\"}".to_string()),
        _ => (
            200,
            json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "fake-model",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": NARRATIVE}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS}})
            .to_string(),
        ),
    };
    respond_json(request, status, payload);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::http::request;

    fn chat(fake: &FakeLlm) -> (u16, serde_json::Value) {
        let body = br#"{"model": "m", "messages": []}"#;
        let r = request(fake.port, "POST", "/v1/chat/completions", &[], Some(body), Duration::from_secs(5))
            .expect("the fake LLM answers");
        (r.status, r.json())
    }

    #[test]
    fn rate_limits_then_answers_and_counts_requests() {
        let fake = FakeLlm::start(LlmMode::RateLimitedFirst(2));
        assert_eq!(chat(&fake).0, 429);
        assert_eq!(chat(&fake).0, 429);
        let (status, body) = chat(&fake);
        assert_eq!((status, body["choices"][0]["message"]["content"].as_str()), (200, Some(NARRATIVE)));
        assert_eq!(fake.requests(), 3);

        fake.set_mode(LlmMode::Garbage);
        assert_eq!(chat(&fake), (200, json!({"unexpected": "shape"})));
        assert_eq!(fake.requests(), 1);
    }
}
