//! The harness's HTTP client: blocking requests to `127.0.0.1` (plain http) over `ureq`. Every
//! status comes back as a value, never as an error: tests assert on 4xx and 5xx answers. Also
//! the one answer the fakes (`tiny_http` servers) share.

use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use ureq::{http, Agent, AsSendBody};

/// A response: status, headers (lower-cased names) and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Raw body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body parsed as JSON (Null when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// One agent for the process, so connections to a stack are kept alive and reused.
fn agent() -> &'static Agent {
    static AGENT: OnceLock<Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        Agent::config_builder()
            .http_status_as_error(false)
            // Loopback only: no proxy from the environment, and a 3xx is an answer to assert on.
            .proxy(None)
            .max_redirects(0)
            // Below the usual 5 s keep-alive of servers, so a pooled connection is not reused
            // just as the server closes it.
            .max_idle_age(Duration::from_secs(2))
            .build()
            .into()
    })
}

/// Sends one request to `127.0.0.1:port` and reads the whole response. `Err` only when no
/// response came (connection refused, timeout, malformed answer).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let mut builder = http::Request::builder().method(method).uri(format!("http://127.0.0.1:{port}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let invalid = |e: http::Error| io::Error::new(io::ErrorKind::InvalidInput, e);
    match body {
        Some(body) => send(builder.body(body).map_err(invalid)?, timeout),
        // A POST without a body still says `Content-Length: 0`; a GET says nothing.
        None if matches!(method, "POST" | "PUT" | "PATCH") => send(builder.body(&[][..]).map_err(invalid)?, timeout),
        None => send(builder.body(()).map_err(invalid)?, timeout),
    }
}

fn send(request: http::Request<impl AsSendBody>, timeout: Duration) -> io::Result<HttpResponse> {
    let agent = agent();
    let request = agent.configure_request(request).timeout_global(Some(timeout)).build();
    let mut response = agent.run(request).map_err(ureq::Error::into_io)?;
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = response.body_mut().with_config().limit(u64::MAX).read_to_vec().map_err(ureq::Error::into_io)?;
    Ok(HttpResponse { status: response.status().as_u16(), headers, body })
}

/// Server side, for the fakes: answers `request` with a JSON `payload` and `status`.
pub(crate) fn respond_json(request: tiny_http::Request, status: u16, payload: String) {
    let content_type = tiny_http::Header::from_bytes("Content-Type", "application/json");
    let mut response = tiny_http::Response::from_string(payload).with_status_code(status);
    if let Ok(header) = content_type {
        response = response.with_header(header);
    }
    // The caller may have given up already (a timeout); nothing to do then.
    let _ = request.respond(response);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    /// A server that answers one request with `status` and echoes what it received.
    fn echo_once(status: u16) -> (u16, thread::JoinHandle<()>) {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("binding a test server");
        let port = server.server_addr().to_ip().map(|a| a.port()).expect("an IP address");
        let handle = thread::spawn(move || {
            let mut request = server.recv().expect("a request");
            let mut body = String::new();
            let _ = request.as_reader().read_to_string(&mut body);
            let length =
                request.headers().iter().find(|h| h.field.equiv("Content-Length")).map(|h| h.value.to_string());
            let echoed = serde_json::json!({
                "method": request.method().as_str(), "url": request.url(), "body": body,
                "content_length": length,
                "auth": request.headers().iter().find(|h| h.field.equiv("Authorization")).map(|h| h.value.to_string()),
            });
            let header = tiny_http::Header::from_bytes("X-Echo", "yes").expect("a header");
            let _ = request.respond(
                tiny_http::Response::from_string(echoed.to_string()).with_status_code(status).with_header(header),
            );
        });
        (port, handle)
    }

    #[test]
    fn error_statuses_come_back_as_responses() {
        let (port, server) = echo_once(418);
        let r = request(port, "DELETE", "/teapot?x=1", &[("Authorization", "Bearer t")], None, Duration::from_secs(5))
            .expect("a response");
        server.join().expect("the server thread");
        assert_eq!(r.status, 418);
        assert_eq!(r.header("x-echo"), Some("yes"));
        assert_eq!(r.header("X-ECHO"), Some("yes"));
        assert_eq!(r.json()["method"], "DELETE");
        assert_eq!(r.json()["url"], "/teapot?x=1");
        assert_eq!(r.json()["auth"], "Bearer t");
    }

    #[test]
    fn bodies_are_sent_and_an_empty_post_says_length_zero() {
        let (port, server) = echo_once(200);
        let r = request(port, "PUT", "/kv", &[], Some(b"hello"), Duration::from_secs(5)).expect("a response");
        server.join().expect("the server thread");
        assert_eq!((r.status, r.json()["body"].as_str()), (200, Some("hello")));

        let (port, server) = echo_once(202);
        let r = request(port, "POST", "/empty", &[], None, Duration::from_secs(5)).expect("a response");
        server.join().expect("the server thread");
        assert_eq!((r.status, r.json()["content_length"].as_str()), (202, Some("0")));
    }

    #[test]
    fn a_silent_server_times_out_and_a_closed_port_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
        let port = listener.local_addr().expect("address").port();
        let started = std::time::Instant::now();
        let r = request(port, "GET", "/", &[], None, Duration::from_millis(300));
        assert!(r.is_err(), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        drop(listener);
        assert!(request(port, "GET", "/", &[], None, Duration::from_secs(1)).is_err());
    }
}
