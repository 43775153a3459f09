//! The `baton` CLI binary, run against a stack. The test command builds it before the e2e
//! tests (`cargo build -p baton-cli`) and passes its path in `BATON_CLI`; without that
//! variable it is looked for in the target directory.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::stack::{repo_root, Stack};

/// What one run of the CLI did.
#[derive(Debug, Clone)]
pub struct CliRun {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliRun {
    /// Standard output parsed as JSON (panics, showing both streams, when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

/// The path of the `baton` binary.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("BATON_CLI").map(PathBuf::from).unwrap_or_else(|| {
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
        target.join("debug").join("baton")
    });
    assert!(path.exists(), "the baton CLI is not built at {}: run `cargo build -p baton-cli` first", path.display());
    path
}

/// Runs `baton --url <stack> --token <token> args...` to its end.
pub fn run(stack: &Stack, token: &str, args: &[&str]) -> CliRun {
    let output = Command::new(binary())
        .args(["--url", &stack.base_url(), "--token", token])
        .args(args)
        .env_remove("BATON_URL")
        .env_remove("BATON_TOKEN")
        .output()
        .expect("running the baton CLI");
    CliRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
