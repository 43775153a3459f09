//! A real browser for the UI tests: Debian's `chromium` driven by `chromedriver` over the W3C
//! WebDriver protocol (JSON over HTTP, spoken with the harness's HTTP client).
//!
//! [`Browser::start`] runs chromedriver under `scripts/stack-guard.sh` as the leader of its
//! own process group, so chromedriver and every chromium process it starts are killed when
//! the browser is dropped, and also when the test process dies without unwinding.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::http::request;
use crate::stack::repo_root;

/// How long chromedriver may take to answer `/status`.
const DRIVER_STARTUP: Duration = Duration::from_secs(30);
/// Per WebDriver command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the browser and its driver are: `BATON_CHROMIUM` / `BATON_CHROMEDRIVER`, else
/// Debian's paths.
fn binaries() -> (PathBuf, PathBuf) {
    let path = |var: &str, default: &str| std::env::var(var).map(PathBuf::from).unwrap_or_else(|_| default.into());
    (path("BATON_CHROMIUM", "/usr/bin/chromium"), path("BATON_CHROMEDRIVER", "/usr/bin/chromedriver"))
}

/// Whether chromium and chromedriver are installed (`scripts/test.sh` installs them).
pub fn available() -> bool {
    let (chromium, driver) = binaries();
    chromium.exists() && driver.exists()
}

/// A headless chromium session. Dropping it ends the session and kills the driver's group.
pub struct Browser {
    port: u16,
    session: String,
    child: Child,
    _guard_pipe: ChildStdin,
    profile: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port for chromedriver")
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session (window 1400×1000).
    pub fn start() -> Browser {
        let (chromium, driver) = binaries();
        assert!(
            chromium.exists() && driver.exists(),
            "{} and {} are needed: `apt-get install chromium chromium-driver` (make test installs them)",
            chromium.display(),
            driver.display()
        );
        let port = free_port();
        let profile = std::env::temp_dir().join(format!("baton-chromium-{}-{port}", std::process::id()));
        fs::create_dir_all(&profile).expect("creating the browser profile directory");
        let log = fs::File::create(profile.with_extension("log")).expect("creating the chromedriver log");
        let mut command = Command::new("bash");
        command
            .arg(repo_root().join("scripts/stack-guard.sh"))
            .arg(&driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().expect("starting chromedriver");
        let guard_pipe = child.stdin.take().expect("the guard's stdin pipe");
        let mut browser = Browser { port, session: String::new(), child, _guard_pipe: guard_pipe, profile };
        browser.wait_ready();
        browser.session = browser.new_session(&chromium);
        browser
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + DRIVER_STARTUP;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromedriver exited ({status}):\n{}", self.driver_log());
            }
            if let Ok(r) = request(self.port, "GET", "/status", &[], None, Duration::from_secs(2)) {
                if r.json()["value"]["ready"] == true {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within {DRIVER_STARTUP:?}:\n{}",
                self.driver_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn driver_log(&self) -> String {
        fs::read_to_string(self.profile.with_extension("log")).unwrap_or_default()
    }

    fn new_session(&self, chromium: &Path) -> String {
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1400,1000", "--no-first-run", "--no-default-browser-check",
                    format!("--user-data-dir={}", self.profile.display()),
                ],
            },
        } } });
        let value = self.command("POST", "/session", Some(capabilities));
        value["sessionId"].as_str().expect("a WebDriver session id").to_string()
    }

    /// One WebDriver command; panics with the driver's error unless it succeeds.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let bytes = body.map(|b| serde_json::to_vec(&b).expect("serialising a WebDriver command"));
        let headers = [("Content-Type", "application/json")];
        let r = request(self.port, method, path, &headers, bytes.as_deref(), COMMAND_TIMEOUT)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}\n{}", self.driver_log()));
        let value = r.json()["value"].clone();
        assert!(r.status == 200, "WebDriver {method} {path}: {} {value}", r.status);
        value
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.command("POST", &self.session_path("/url"), Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    pub fn eval(&self, script: &str, args: Value) -> Value {
        self.command("POST", &self.session_path("/execute/sync"), Some(json!({ "script": script, "args": args })))
    }

    /// Polls `script` until it returns something other than `null`/`false`, or panics
    /// naming `what` (with the page's text) after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.eval(script, args.clone());
            if !value.is_null() && value != Value::Bool(false) {
                return value;
            }
            if Instant::now() >= deadline {
                let text = self.eval("return document.body ? document.body.innerText : ''", json!([]));
                panic!(
                    "timed out after {timeout:?} waiting for {what}; the page says:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the viewport, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let encoded = self.command("GET", &self.session_path("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a base64 screenshot"))
            .expect("decoding the screenshot");
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).expect("creating the screenshot directory");
        }
        fs::write(path, png).expect("writing the screenshot");
    }

    /// Resizes the window (e.g. to fit a whole page before a screenshot).
    pub fn resize(&self, width: u32, height: u32) {
        self.command("POST", &self.session_path("/window/rect"), Some(json!({ "width": width, "height": height })));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = self.session_path("");
            let _ = request(self.port, "DELETE", &path, &[], None, Duration::from_secs(10));
        }
        // The guard kills chromedriver's whole group (and chromium's) once its pipe closes;
        // kill the group now as well and reap the guard.
        let pgid = self.child.id();
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{pgid}")]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
        let _ = self.child.wait();
        // A chromium process that left the group is still known by its own profile directory.
        if let Ok(out) = Command::new("pgrep").arg("-f").arg(self.profile.as_os_str()).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = fs::remove_dir_all(&self.profile);
        let _ = fs::remove_file(self.profile.with_extension("log"));
    }
}

/// Where tests write what they produce for people to look at (screenshots):
/// `target/e2e-output/`, or `BATON_E2E_OUTPUT`.
pub fn output_dir() -> PathBuf {
    std::env::var("BATON_E2E_OUTPUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target").join("e2e-output"))
}
