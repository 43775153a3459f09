//! Starts the whole Baton suite under one `wrangler dev` process on a free port with a
//! throwaway persistence directory, and stops it (the whole process group) on drop.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::{request, HttpResponse};

/// How long wrangler may take to come up.
const STARTUP_DEADLINE: Duration = Duration::from_secs(120);
/// Per-request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(70);

/// The worker crates, in the order their configs are given to wrangler (the first owns the port).
const WORKER_CONFIGS: [&str; 4] = [
    "wrangler.toml",
    "crates/poller/wrangler.toml",
    "crates/consumer/wrangler.toml",
    "crates/sample-services/wrangler.toml",
];

/// Options for starting a stack.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Extra `--var NAME:VALUE` for the orchestrator (the primary worker).
    pub vars: Vec<(String, String)>,
    /// Reuse this persistence directory instead of a fresh one (restart tests).
    pub persist_dir: Option<PathBuf>,
    /// Extra variables for the consumer worker (e.g. `LLM_API_URL`). `--var` only reaches
    /// the primary worker, so the harness writes a copy of the consumer's config with them.
    pub consumer_vars: Vec<(String, String)>,
    /// Extra variables for the poller worker (e.g. `BATON_FAULT_INJECTION`).
    pub poller_vars: Vec<(String, String)>,
    /// wrangler's `--log-level` (default `warn`, or `BATON_E2E_LOG_LEVEL`); `log` shows the
    /// workers' own lines, the structured lifecycle logs among them.
    pub log_level: Option<String>,
}

/// A running stack. Dropping it kills every process it started.
pub struct Stack {
    port: u16,
    persist_dir: PathBuf,
    owns_persist_dir: bool,
    log_path: PathBuf,
    child: Child,
    _guard_pipe: ChildStdin,
    secrets: Secrets,
}

/// The dev credentials the stack was started with (from `.dev.vars`).
#[derive(Debug, Clone)]
pub struct Secrets {
    /// token -> client id
    pub api_tokens: Vec<(String, String)>,
    /// The operator token for /admin routes.
    pub admin_token: String,
    /// The HMAC key of services without one of their own.
    pub worker_secret: String,
    /// Services' own keys (worker key → keys, the first signs).
    pub service_keys: std::collections::BTreeMap<String, Vec<String>>,
    /// The key of calls between Baton's workers.
    pub internal_key: String,
}

impl Secrets {
    /// The key a service (by worker key) signs with.
    pub fn key_for(&self, worker: &str) -> String {
        self.service_keys
            .get(worker)
            .and_then(|keys| keys.first().cloned())
            .unwrap_or_else(|| self.worker_secret.clone())
    }
}

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    listener.local_addr().expect("reading the ephemeral port").port()
}

fn read_dev_vars(path: &Path) -> Vec<(String, String)> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').trim_matches('\'').to_string()))
        .collect()
}

impl Secrets {
    /// The credentials a stack started from `root` gets (its `.dev.vars`, else the example).
    pub fn load(root: &Path) -> Secrets {
        let mut path = root.join(".dev.vars");
        if !path.exists() {
            path = root.join(".dev.vars.example");
        }
        let vars = read_dev_vars(&path);
        let get = |k: &str| vars.iter().find(|(name, _)| name == k).map(|(_, v)| v.clone()).unwrap_or_default();
        let api_tokens = get("API_TOKENS")
            .split(',')
            .filter_map(|pair| pair.split_once(':'))
            .map(|(t, c)| (t.trim().to_string(), c.trim().to_string()))
            .collect();
        let service_keys = baton_core::signature::parse_service_keys(&get("SERVICE_KEYS")).unwrap_or_default();
        Secrets {
            api_tokens,
            admin_token: get("ADMIN_TOKEN"),
            worker_secret: get("WORKER_SECRET"),
            service_keys,
            internal_key: get("INTERNAL_KEY"),
        }
    }
}

static STACK_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The D1 bindings of the local stack (one per shard): the `[[d1_databases]]` of the
/// orchestrator's config before its first `[env.…]` section.
pub fn local_d1_bindings(root: &Path) -> Vec<String> {
    let config = fs::read_to_string(root.join("wrangler.toml")).expect("reading wrangler.toml");
    let local = config.split("\n[env.").next().unwrap_or_default();
    let bindings: Vec<String> = local
        .split("[[d1_databases]]")
        .skip(1)
        .filter_map(|block| {
            block
                .lines()
                .find_map(|line| line.trim().strip_prefix("binding = ").map(|v| v.trim().trim_matches('"').to_string()))
        })
        .collect();
    assert!(!bindings.is_empty(), "wrangler.toml declares no [[d1_databases]]");
    bindings
}

/// A copy of a worker's wrangler config with extra `[vars]`, beside its own `.dev.vars`.
fn write_worker_config(root: &Path, scratch: &Path, worker: &str, vars: &[(String, String)]) -> PathBuf {
    let crate_dir = root.join("crates").join(worker);
    let original = fs::read_to_string(crate_dir.join("wrangler.toml")).expect("reading the worker config");
    let mut out = String::new();
    let mut skipping_build = false;
    for line in original.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            skipping_build = trimmed == "[build]";
        }
        if skipping_build {
            continue; // the workers are built already
        }
        if let Some(rest) = trimmed.strip_prefix("main = ") {
            out.push_str(&format!("main = {:?}\n", crate_dir.join(rest.trim_matches('"')).display().to_string()));
        } else if trimmed.starts_with("migrations_dir = ") {
            out.push_str(&format!("migrations_dir = {:?}\n", root.join("migrations").display().to_string()));
        } else {
            out.push_str(line);
            out.push('\n');
            if trimmed == "[vars]" {
                for (k, v) in vars {
                    out.push_str(&format!("{k} = {v:?}\n"));
                }
            }
        }
    }
    let dir = scratch.join(worker);
    fs::create_dir_all(&dir).expect("creating the worker config directory");
    let dev_vars = fs::read_to_string(crate_dir.join(".dev.vars"))
        .or_else(|_| fs::read_to_string(crate_dir.join(".dev.vars.example")))
        .unwrap_or_default();
    fs::write(dir.join(".dev.vars"), dev_vars).expect("writing the worker's .dev.vars");
    let path = dir.join("wrangler.toml");
    fs::write(&path, out).expect("writing the worker config");
    path
}

impl Stack {
    /// Starts a fresh stack (fresh D1/KV/queues) and waits until `/health` answers 200.
    /// Panics with wrangler's own output if it does not come up.
    pub fn start(options: StackOptions) -> Stack {
        // wrangler picks some ports of its own: when stacks start side by side it can lose a
        // race for one ("Address already in use"). That start is thrown away and tried again.
        const STARTS: u32 = 3;
        for start in 1..=STARTS {
            match Stack::try_start(&options) {
                Ok(stack) => return stack,
                Err(e) if start < STARTS && e.contains("Address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the last start either returns or panics")
    }

    fn try_start(options: &StackOptions) -> Result<Stack, String> {
        let root = repo_root();
        let wrangler =
            std::env::var("WRANGLER").map(PathBuf::from).unwrap_or_else(|_| root.join("node_modules/.bin/wrangler"));
        assert!(
            wrangler.exists(),
            "wrangler not found at {}: run the test command from the README (it installs the toolchain)",
            wrangler.display()
        );
        let n = STACK_COUNTER.fetch_add(1, Ordering::SeqCst);
        let scratch = std::env::temp_dir().join(format!("baton-e2e-{}-{n}", std::process::id()));
        fs::create_dir_all(&scratch).expect("creating the scratch directory");
        let (persist_dir, owns_persist_dir) = match options.persist_dir.clone() {
            Some(dir) => (dir, false),
            None => (scratch.join("state"), true),
        };
        let log_path = scratch.join("wrangler.log");

        for binding in local_d1_bindings(&root) {
            let migrate = Command::new(&wrangler)
                .current_dir(&root)
                .args(["d1", "migrations", "apply", &binding, "--local", "--persist-to"])
                .arg(&persist_dir)
                .env("CI", "true")
                .output()
                .expect("running wrangler d1 migrations apply");
            assert!(
                migrate.status.success(),
                "applying D1 migrations to {binding} failed:\n{}\n{}",
                String::from_utf8_lossy(&migrate.stdout),
                String::from_utf8_lossy(&migrate.stderr)
            );
        }

        let port = free_port();
        let inspector_port = free_port();
        let log = fs::File::create(&log_path).expect("creating the wrangler log");
        let mut command = Command::new("bash");
        command.current_dir(&root).arg(root.join("scripts/stack-guard.sh")).arg(&wrangler).arg("dev");
        for config in WORKER_CONFIGS {
            let extra = match config {
                c if c.contains("consumer") => Some(("consumer", &options.consumer_vars)),
                c if c.contains("poller") => Some(("poller", &options.poller_vars)),
                _ => None,
            };
            match extra {
                Some((worker, vars)) if !vars.is_empty() => {
                    command.arg("-c").arg(write_worker_config(&root, &scratch, worker, vars));
                }
                _ => {
                    command.args(["-c", config]);
                }
            }
        }
        command
            .args(["--port", &port.to_string(), "--inspector-port", &inspector_port.to_string()])
            .args(["--ip", "127.0.0.1", "--show-interactive-dev-session=false", "--log-level"])
            .arg(
                options
                    .log_level
                    .clone()
                    .or_else(|| std::env::var("BATON_E2E_LOG_LEVEL").ok())
                    .unwrap_or_else(|| "warn".into()),
            )
            .arg("--persist-to")
            .arg(&persist_dir)
            .args(["--var", "BATON_TEST_HOOKS:true"]);
        for (k, v) in &options.vars {
            command.args(["--var", &format!("{k}:{v}")]);
        }
        if owns_persist_dir {
            command.env("BATON_GUARD_CLEANUP", &scratch);
        }
        command
            .env("CI", "true")
            .env("BATON_SKIP_BUILD", "1")
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().expect("starting wrangler dev");
        let guard_pipe = child.stdin.take().expect("the guard's stdin pipe");

        let mut stack = Stack {
            port,
            persist_dir,
            owns_persist_dir,
            log_path,
            child,
            _guard_pipe: guard_pipe,
            secrets: Secrets::load(&root),
        };
        stack.wait_ready()?;
        Ok(stack)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("wrangler dev exited ({status}) before becoming ready:\n{}", self.log()));
            }
            match request(self.port, "GET", "/health", &[], None, Duration::from_secs(5)) {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => last = format!("{} {}", r.status, r.text()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("wrangler dev did not become ready within {STARTUP_DEADLINE:?} (last: {last}):\n{}", self.log());
    }

    /// wrangler's output so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The port the orchestrator listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The persistence directory (D1, KV, queues).
    pub fn persist_dir(&self) -> &Path {
        &self.persist_dir
    }

    /// `http://127.0.0.1:{port}`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The credentials from `.dev.vars`.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// The API token of the n-th dev client (0 = alice, 1 = bob).
    pub fn token(&self, n: usize) -> &str {
        &self.secrets.api_tokens[n].0
    }

    /// The client id of the n-th dev client.
    pub fn client_id(&self, n: usize) -> &str {
        &self.secrets.api_tokens[n].1
    }

    /// Any request.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> HttpResponse {
        request(self.port, method, path, headers, body, REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("{method} {path} failed: {e}\nwrangler log:\n{}", self.log()))
    }

    /// GET without credentials.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.send("GET", path, &[], None)
    }

    /// GET with a bearer token.
    pub fn get_as(&self, token: &str, path: &str) -> HttpResponse {
        let auth = format!("Bearer {token}");
        self.send("GET", path, &[("Authorization", &auth)], None)
    }

    /// POST a JSON body with a bearer token.
    pub fn post_as(&self, token: &str, path: &str, body: &Value) -> HttpResponse {
        let auth = format!("Bearer {token}");
        let body = serde_json::to_vec(body).expect("serialising the body");
        self.send("POST", path, &[("Authorization", &auth), ("Content-Type", "application/json")], Some(&body))
    }

    /// POST to an admin route with the admin token.
    /// `GET path` with the admin token.
    pub fn admin_get(&self, path: &str) -> HttpResponse {
        let token = self.secrets.admin_token.clone();
        self.get_as(&token, path)
    }

    pub fn admin_post(&self, path: &str, body: &Value) -> HttpResponse {
        let token = self.secrets.admin_token.clone();
        self.post_as(&token, path, body)
    }

    /// Runs SQL against every shard's D1 through the test-only route; returns rows and meta
    /// (rows of every shard in shard order; a one-row answer of numbers from each, such as
    /// `COUNT(*)`, summed).
    pub fn sql(&self, sql: &str, params: &[Value]) -> (Vec<Value>, Value) {
        let r = self.admin_post("/__test/sql", &json!({ "sql": sql, "params": params }));
        assert_eq!(r.status, 200, "SQL {sql:?} failed: {}", r.text());
        let body = r.json();
        (body["rows"].as_array().cloned().unwrap_or_default(), body["meta"].clone())
    }

    /// [`sql`](Self::sql) on one shard's database only (`DB_{shard}`).
    pub fn sql_on(&self, shard: u32, sql: &str, params: &[Value]) -> Vec<Value> {
        let r = self.admin_post("/__test/sql", &json!({ "sql": sql, "params": params, "shard": shard }));
        assert_eq!(r.status, 200, "SQL {sql:?} on shard {shard} failed: {}", r.text());
        r.json()["rows"].as_array().cloned().unwrap_or_default()
    }

    /// Reads a KV value through the test-only route.
    pub fn kv_get(&self, key: &str) -> Option<String> {
        let auth = format!("Bearer {}", self.secrets.admin_token);
        let r = self.send("GET", &format!("/__test/kv/{key}"), &[("Authorization", &auth)], None);
        match r.status {
            200 => r.json()["value"].as_str().map(str::to_string),
            404 => None,
            other => panic!("reading KV {key}: {other} {}", r.text()),
        }
    }

    /// Writes a KV value through the test-only route.
    pub fn kv_put(&self, key: &str, value: &str) {
        let auth = format!("Bearer {}", self.secrets.admin_token);
        let r = self.send("PUT", &format!("/__test/kv/{key}"), &[("Authorization", &auth)], Some(value.as_bytes()));
        assert_eq!(r.status, 200, "writing KV {key}: {}", r.text());
    }

    /// Runs one poller cron tick (the same code path as the cron trigger).
    pub fn cron_tick(&self) -> HttpResponse {
        self.admin_post("/admin/poller/cron", &json!({}))
    }

    /// Kills every process of the stack with SIGKILL, as a crash or an OOM kill would: no
    /// handler gets to finish. The persistence directory stays for a restart.
    pub fn kill(&mut self) {
        let pgid = self.child.id();
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
        let _ = self.child.wait();
    }

    /// Stops the stack now (also done on drop).
    pub fn stop(&mut self) {
        let pgid = self.child.id();
        // Quietly: a stack already stopped has no group left to signal.
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{pgid}")]).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
        if self.owns_persist_dir {
            if let Some(scratch) = self.persist_dir.parent() {
                let _ = fs::remove_dir_all(scratch);
            }
        } else {
            let _ = fs::remove_file(&self.log_path);
        }
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub fn poll_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
