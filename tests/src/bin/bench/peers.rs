//! The systems Baton is measured against, each a `wrangler dev` of its own with the sample
//! services: the Cloudflare Workflows peer (bench/workflows) and the floor (bench/floor), the
//! same service calls with no durable state.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use baton_e2e::http::{request, HttpResponse};
use baton_e2e::repo_root;
use serde_json::json;

use crate::{params, Bulk, Plan, System, W2Check};

/// A bench worker and the sample services under one `wrangler dev`, on a free port with a
/// throwaway persistence directory. Dropping it kills the process group.
struct DevProcess {
    port: u16,
    child: Child,
    _guard: ChildStdin,
    scratch: PathBuf,
}

impl DevProcess {
    /// Starts `wrangler dev -c {config} -c crates/sample-services/wrangler.toml` and waits for
    /// `/health`; `what` names it in messages and in the scratch directory.
    fn start(what: &str, config: &str) -> DevProcess {
        let root = repo_root();
        let wrangler =
            std::env::var("WRANGLER").map(PathBuf::from).unwrap_or_else(|_| root.join("node_modules/.bin/wrangler"));
        // A directory of its own per start: a peer started afresh never sees the last one's state.
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let start = STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let scratch = std::env::temp_dir().join(format!("baton-bench-{what}-{}-{start}", std::process::id()));
        fs::create_dir_all(&scratch).expect("creating the scratch directory");
        let port = free_port();
        let inspector = free_port();
        let log = fs::File::create(scratch.join("wrangler.log")).expect("creating the log");
        let mut command = Command::new("bash");
        command
            .current_dir(&root)
            .arg(root.join("scripts/stack-guard.sh"))
            .arg(&wrangler)
            .args(["dev", "-c", config, "-c", "crates/sample-services/wrangler.toml"])
            .args(["--port", &port.to_string(), "--inspector-port", &inspector.to_string()])
            .args(["--ip", "127.0.0.1", "--show-interactive-dev-session=false", "--log-level", "warn"])
            .arg("--persist-to")
            .arg(scratch.join("state"))
            .env("CI", "true")
            .env("BATON_SKIP_BUILD", "1")
            .env("BATON_GUARD_CLEANUP", &scratch)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("cloning the log"))
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().unwrap_or_else(|e| panic!("starting wrangler dev for the {what}: {e}"));
        let guard = child.stdin.take().expect("the guard pipe");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = request(port, "GET", "/health", &[], None, Duration::from_secs(5)) {
                if r.status == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the {what} did not start:\n{}",
                fs::read_to_string(scratch.join("wrangler.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        DevProcess { port, child, _guard: guard, scratch }
    }

    fn post(&self, path: &str, body: &serde_json::Value) -> Option<HttpResponse> {
        let body = serde_json::to_vec(body).ok()?;
        request(self.port, "POST", path, &[("Content-Type", "application/json")], Some(&body), Duration::from_secs(60))
            .ok()
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let pgid = self.child.id();
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{pgid}")]).status();
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    l.local_addr().expect("the ephemeral port").port()
}

/// `?plan=wide` for the wide plan; the standard plan takes no query.
fn plan_query(plan: Plan) -> &'static str {
    match plan {
        Plan::Standard => "",
        Plan::Wide => "?plan=wide",
    }
}

fn input(site: &str, latency_ms: u64) -> serde_json::Value {
    json!({"website_id": site, "domain": "bench.example", "parameters": params(latency_ms)})
}

// ---- Cloudflare Workflows ------------------------------------------------------------------

/// The Workflows peer: `POST /start` creates an instance, `GET /status/:id` reads its status.
pub struct Workflows(DevProcess);

impl Workflows {
    pub fn start() -> Workflows {
        Workflows(DevProcess::start("workflows", "bench/workflows/wrangler.toml"))
    }

    fn create(&self, plan: Plan, site: &str, latency_ms: u64) -> Option<String> {
        let r = self.0.post(&format!("/start{}", plan_query(plan)), &input(site, latency_ms))?;
        (r.status == 200).then(|| r.json()["id"].as_str().map(str::to_string)).flatten()
    }

    fn status(&self, plan: Plan, id: &str) -> String {
        let path = format!("/status/{id}{}", plan_query(plan));
        request(self.0.port, "GET", &path, &[], None, Duration::from_secs(60))
            .ok()
            .and_then(|r| r.json()["status"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

fn is_terminal(status: &str) -> bool {
    matches!(status, "complete" | "errored" | "terminated")
}

impl System for Workflows {
    fn key(&self) -> &'static str {
        "workflows"
    }

    fn name(&self) -> &'static str {
        "Workflows"
    }

    fn run_to_end(&self, plan: Plan, site: &str, latency_ms: u64) {
        let id = self.create(plan, site, latency_ms).expect("starting a workflow instance");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status(plan, &id);
            if is_terminal(&status) {
                assert_eq!(status, "complete", "workflow {id}");
                return;
            }
            assert!(Instant::now() < deadline, "workflow {id} did not finish: {status}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Bulk for Workflows {
    fn submit(&self, site: &str, latency_ms: u64) -> Option<String> {
        self.create(Plan::Standard, site, latency_ms)
    }

    fn wait_all(&self, _site: &str, ids: &[String], deadline: Instant) -> W2Check {
        let mut pending: Vec<String> = ids.to_vec();
        let mut c = W2Check::default();
        while !pending.is_empty() && Instant::now() < deadline {
            let mut still = Vec::new();
            for id in pending {
                let status = self.status(Plan::Standard, &id);
                if is_terminal(&status) {
                    c.terminal += 1;
                    if status == "complete" {
                        c.completed += 1;
                        c.steps += Plan::Standard.steps();
                    }
                } else {
                    still.push(id);
                }
            }
            pending = still;
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        c.lost = ids.len() - c.terminal;
        c
    }
}

// ---- The floor -----------------------------------------------------------------------------

/// The floor: `POST /run` makes the plan's service calls and answers when they are done.
pub struct Floor(DevProcess);

impl Floor {
    pub fn start() -> Floor {
        Floor(DevProcess::start("floor", "bench/floor/wrangler.toml"))
    }
}

impl System for Floor {
    fn key(&self) -> &'static str {
        "floor"
    }

    fn name(&self) -> &'static str {
        "floor"
    }

    fn run_to_end(&self, plan: Plan, site: &str, latency_ms: u64) {
        let r = self.0.post(&format!("/run{}", plan_query(plan)), &input(site, latency_ms)).expect("a floor run");
        assert_eq!(r.status, 200, "floor run: {}", r.text());
        assert_eq!(r.json()["services"], plan.steps(), "floor run: {}", r.text());
    }
}
