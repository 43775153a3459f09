//! The command line: every command, flag and default.

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};

/// The API of a local stack (`make dev`'s default port).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8787";
/// The first local development token (`.dev.vars.example`).
pub const DEFAULT_TOKEN: &str = "dev-token-alice";

/// Start and follow Baton runs, plans and executions.
#[derive(Debug, Parser)]
#[command(name = "baton", version, propagate_version = true)]
pub struct Cli {
    /// The API's base URL.
    #[arg(long, env = "BATON_URL", default_value = DEFAULT_URL, global = true)]
    pub url: String,
    /// Your API token (`Authorization: Bearer`).
    #[arg(long, env = "BATON_TOKEN", default_value = DEFAULT_TOKEN, global = true, hide_env_values = true)]
    pub token: String,
    /// Print the API's JSON answers instead of text (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a diagnostic run; with --wait, follow it step by step until it ends.
    Run(RunArgs),
    /// List your runs, newest first.
    Runs(RunsArgs),
    /// A run: its steps on a timeline, its summary and its diagnosis.
    Show {
        /// The run id.
        run_id: String,
    },
    /// A run's lifecycle events, oldest first.
    Events {
        /// The run id.
        run_id: String,
    },
    /// Cancel a run in progress; without a run id, every run of yours in progress that the
    /// filter matches.
    Cancel(ActArgs),
    /// Retry an ended run in place; without a run id, every ended run of yours that the
    /// filter matches.
    Retry(ActArgs),
    /// Deliver an event to a run's wait step (its payload becomes the step's output).
    Signal {
        /// The run id.
        run_id: String,
        /// The event's name (one a wait step of the run's plan waits for).
        name: String,
        /// The payload, as JSON (default null).
        #[arg(long)]
        data: Option<String>,
    },
    /// Pause a run: nothing new is dispatched until it is resumed (attempts in flight finish;
    /// the run's deadline keeps running).
    Pause {
        /// The run id.
        run_id: String,
    },
    /// Resume a paused run: what became ready while it was paused is dispatched now.
    Resume {
        /// The run id.
        run_id: String,
    },
    /// The plans you can run (without a subcommand: list them).
    Plans {
        #[command(subcommand)]
        command: Option<PlansCommand>,
    },
    /// Run a master template of the key-account service (a pipeline execution).
    Execute(ExecuteArgs),
    /// Pipeline executions.
    Executions {
        #[command(subcommand)]
        command: ExecutionsCommand,
    },
    /// Check the workers' variables (every wrangler.toml's vars, with .dev.vars for local
    /// development) with Baton's own parsers; exits 1 naming each bad one. No API call.
    CheckConfig {
        /// The environment to deploy (`[env.NAME.vars]`); without it, local development.
        #[arg(long)]
        env: Option<String>,
        /// The repository's root.
        #[arg(long, default_value = ".")]
        root: std::path::PathBuf,
    },
}

/// `baton run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plan (default: the API's, standard-v1).
    #[arg(long)]
    pub plan: Option<String>,
    /// The website id.
    #[arg(long)]
    pub site: String,
    /// The domain to diagnose.
    #[arg(long)]
    pub domain: String,
    /// A run parameter, `key=value`; a value that is JSON (`3`, `true`, `{"a":1}`) is sent as
    /// JSON, any other as a string. Repeat for more.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, Value)>,
    /// Start it for this client (your token must be allowed to act for it).
    #[arg(long = "for", value_name = "CLIENT")]
    pub for_client: Option<String>,
    /// Makes retries of this command start one run.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Follow the run until it ends, then print its summary and diagnosis.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up waiting after this many seconds.
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    pub timeout: u64,
}

/// `baton runs`
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only runs of this website id.
    #[arg(long)]
    pub site: Option<String>,
    /// Only runs with this status (started, running, paused, aggregating, completed, failed, timeout, cancelled).
    #[arg(long)]
    pub status: Option<String>,
    /// Only runs of this plan.
    #[arg(long)]
    pub plan: Option<String>,
    /// At most this many runs (1–100).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: u32,
}

/// `baton cancel` and `baton retry`: one run, or every run a filter matches.
#[derive(Debug, Args)]
pub struct ActArgs {
    /// The run id (without it: the runs the filter matches).
    #[arg(conflicts_with_all = ["status", "plan", "site", "since", "until", "all", "limit", "cursor", "all_pages"])]
    pub run_id: Option<String>,
    /// Only runs with this status.
    #[arg(long)]
    pub status: Option<String>,
    /// Only runs of this plan.
    #[arg(long)]
    pub plan: Option<String>,
    /// Only runs of this website id.
    #[arg(long)]
    pub site: Option<String>,
    /// Only runs created at this instant or later (RFC 3339, `2026-12-06T08:00:00Z`).
    #[arg(long, value_name = "INSTANT")]
    pub since: Option<String>,
    /// Only runs created before this instant (RFC 3339).
    #[arg(long, value_name = "INSTANT")]
    pub until: Option<String>,
    /// Every run of yours the action applies to (a filter is required otherwise).
    #[arg(long)]
    pub all: bool,
    /// Matching runs taken per request (1–100).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: u32,
    /// Continue after a previous answer (its `next_cursor`).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow the cursor until no matching run is left, then print the total.
    #[arg(long)]
    pub all_pages: bool,
}

impl ActArgs {
    /// The filter of a bulk action, as the API takes it; `None` when no field is given.
    pub fn filter(&self) -> Option<Map<String, Value>> {
        let mut filter = Map::new();
        let fields = [
            ("status", &self.status),
            ("plan_id", &self.plan),
            ("website_id", &self.site),
            ("created_after", &self.since),
            ("created_before", &self.until),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                filter.insert(name.to_string(), Value::String(value.clone()));
            }
        }
        if self.all {
            filter.insert("all".to_string(), Value::Bool(true));
        }
        (!filter.is_empty()).then_some(filter)
    }
}

/// `baton plans ...`
#[derive(Debug, Subcommand)]
pub enum PlansCommand {
    /// One plan: its steps, dependencies and time limits.
    Show {
        /// The plan id.
        plan_id: String,
    },
    /// Create a custom plan from a JSON file (a plan draft; `-` reads standard input).
    Create {
        /// The file.
        file: String,
    },
}

/// `baton execute`
#[derive(Debug, Args)]
pub struct ExecuteArgs {
    /// The master template's name.
    pub template: String,
    /// A parameter, `key=value` (as for `run`). Repeat for more.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, Value)>,
    /// Queue priority.
    #[arg(long, value_parser = ["low", "normal", "high", "critical"])]
    pub priority: Option<String>,
    /// Submit it for this client (your token must be allowed to act for it).
    #[arg(long = "for", value_name = "CLIENT")]
    pub for_client: Option<String>,
    /// Makes retries of this command submit one execution.
    #[arg(long)]
    pub request_id: Option<String>,
}

/// `baton executions ...`
#[derive(Debug, Subcommand)]
pub enum ExecutionsCommand {
    /// One execution: its queue state, stages, deliverables and costs.
    Show {
        /// The execution id.
        execution_id: String,
    },
}

/// `key=value`: the value as JSON when it parses as JSON, else as a string.
pub fn parse_param(text: &str) -> Result<(String, Value), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("the key before `=` is empty in {text:?}"));
    }
    let value = serde_json::from_str::<Value>(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

/// The parameters as a JSON object (a repeated key: the last wins).
pub fn parameters(params: &[(String, Value)]) -> Map<String, Value> {
    params.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use serde_json::json;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn params_are_json_when_they_parse_and_strings_otherwise() {
        for (text, expected) in [
            ("mode=fast", Ok(("mode".to_string(), json!("fast")))),
            ("n=3", Ok(("n".to_string(), json!(3)))),
            ("deep=true", Ok(("deep".to_string(), json!(true)))),
            (
                r#"sample_behaviour={"*":{"fail_permanent":true}}"#,
                Ok(("sample_behaviour".to_string(), json!({"*": {"fail_permanent": true}}))),
            ),
            ("url=https://x.test/?a=b", Ok(("url".to_string(), json!("https://x.test/?a=b")))),
            ("empty=", Ok(("empty".to_string(), json!("")))),
            ("novalue", Err("expected KEY=VALUE, got \"novalue\"".to_string())),
            ("=3", Err("the key before `=` is empty in \"=3\"".to_string())),
        ] {
            assert_eq!(parse_param(text), expected, "{text}");
        }
        let object = parameters(&[("a".into(), json!(1)), ("a".into(), json!(2)), ("b".into(), json!("x"))]);
        assert_eq!(Value::Object(object), json!({"a": 2, "b": "x"}));
    }

    #[test]
    fn defaults_reach_the_local_stack_with_the_dev_token() {
        let cli = Cli::try_parse_from(["baton", "runs"]).unwrap();
        if std::env::var_os("BATON_URL").is_none() && std::env::var_os("BATON_TOKEN").is_none() {
            assert_eq!((cli.url.as_str(), cli.token.as_str(), cli.json), (DEFAULT_URL, DEFAULT_TOKEN, false));
        }
        let cli =
            Cli::try_parse_from(["baton", "runs", "--json", "--url", "https://api.test", "--limit", "5"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.url, "https://api.test");
        assert!(matches!(cli.command, Command::Runs(RunsArgs { limit: 5, .. })));
        assert!(Cli::try_parse_from(["baton", "runs", "--limit", "0"]).is_err());
        assert!(Cli::try_parse_from(["baton", "run", "--site", "s"]).is_err(), "--domain is required");
        assert!(Cli::try_parse_from(["baton", "execute", "t", "--priority", "urgent"]).is_err());
    }

    fn act_args(args: &[&str]) -> ActArgs {
        match Cli::try_parse_from(args).map(|cli| cli.command) {
            Ok(Command::Cancel(a) | Command::Retry(a)) => a,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn cancel_and_retry_take_a_run_or_a_filter() {
        let one = act_args(&["baton", "cancel", "run_1"]);
        assert_eq!((one.run_id.as_deref(), one.filter()), (Some("run_1"), None));
        let bulk =
            act_args(&["baton", "retry", "--status", "failed", "--site", "s", "--since", "2026-12-06T08:00:00Z"]);
        assert_eq!(bulk.run_id, None);
        assert_eq!(
            bulk.filter().map(Value::Object),
            Some(json!({"status": "failed", "website_id": "s", "created_after": "2026-12-06T08:00:00Z"}))
        );
        assert_eq!(act_args(&["baton", "cancel"]).filter(), None, "no filter");
        assert_eq!(act_args(&["baton", "cancel", "--all"]).filter().map(Value::Object), Some(json!({"all": true})));
        assert!(Cli::try_parse_from(["baton", "cancel", "run_1", "--status", "running"]).is_err());
        assert!(Cli::try_parse_from(["baton", "retry", "--plan", "p", "--limit", "101"]).is_err());
    }
}
