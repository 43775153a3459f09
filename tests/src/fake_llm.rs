//! A small OpenAI-compatible chat-completions server on loopback for the LLM tests.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::http::{read_request, write_json};

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

/// The narrative the server returns.
pub const NARRATIVE: &str = "The site is mostly healthy; fix the slow pages first.";

/// A running fake server; stops on drop.
pub struct FakeLlm {
    port: u16,
    mode: Arc<Mutex<LlmMode>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeLlm {
    /// Starts the server on a free loopback port.
    pub fn start(mode: LlmMode) -> FakeLlm {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake LLM");
        let port = listener.local_addr().expect("fake LLM address").port();
        let server = FakeLlm {
            port,
            mode: Arc::new(Mutex::new(mode)),
            requests: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (mode, requests, stop) = (server.mode.clone(), server.requests.clone(), server.stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let current = *mode.lock().unwrap_or_else(|p| p.into_inner());
                    let n = requests.fetch_add(1, Ordering::SeqCst);
                    let _ = answer(stream, current, n);
                }
            }
        });
        server
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
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn answer(stream: TcpStream, mode: LlmMode, n: usize) -> std::io::Result<()> {
    read_request(&stream)?;
    let (status, payload) = match mode {
        LlmMode::RateLimitedFirst(limit) if n < limit => ("429 Too Many Requests", json!({"error": {"message": "slow down"}}).to_string()),
        LlmMode::Garbage => ("200 OK", "{\"unexpected\": \"shape\"}".to_string()),
        _ => (
            "200 OK",
            json!({"id": "chatcmpl-1", "object": "chat.completion",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": NARRATIVE}, "finish_reason": "stop"}]})
            .to_string(),
        ),
    };
    write_json(stream, status, &payload)
}
