//! `baton check-config`: the workers' variables as `make dev` or `make deploy` would give
//! them, checked by core's own parsers ([`baton_core::vars`]) before anything starts.
//!
//! The variables of each worker config (`wrangler.toml`, `crates/*/wrangler.toml`): its
//! `[vars]` and, for local development, its `.dev.vars` beside it (which wins); for a deploy
//! (`--env NAME`), its `[env.NAME.vars]` (wrangler does not inherit `[vars]` into an
//! environment).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use baton_core::vars::{self, VarProblem};

/// One worker config's variables, and where they were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The config and table (and `.dev.vars`) read, for messages.
    pub name: String,
    /// Name → value.
    pub vars: BTreeMap<String, String>,
}

/// Every worker config under `root`: the root `wrangler.toml`, then `crates/*/wrangler.toml`.
pub fn configs(root: &Path) -> Result<Vec<PathBuf>, String> {
    let mut found = vec![root.join("wrangler.toml")];
    let crates = root.join("crates");
    let entries = std::fs::read_dir(&crates).map_err(|e| format!("{}: {e}", crates.display()))?;
    let mut workers: Vec<PathBuf> =
        entries.filter_map(|e| e.ok()).map(|e| e.path().join("wrangler.toml")).filter(|p| p.is_file()).collect();
    workers.sort();
    found.extend(workers);
    found.retain(|p| p.is_file());
    Ok(found)
}

/// The variables of the config at `path` for `env` (`None`: local development).
pub fn source(root: &Path, path: &Path, env: Option<&str>) -> Result<Source, String> {
    let shown = path.strip_prefix(root).unwrap_or(path).display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let config: toml::Table = text.parse().map_err(|e| format!("{shown}: not TOML: {e}"))?;
    let (table, name) = match env {
        None => (config.get("vars"), format!("{shown} [vars]")),
        Some(env) => (
            config.get("env").and_then(|e| e.get(env)).and_then(|e| e.get("vars")),
            format!("{shown} [env.{env}.vars]"),
        ),
    };
    let mut vars = BTreeMap::new();
    if let Some(table) = table.and_then(toml::Value::as_table) {
        for (key, value) in table {
            // wrangler gives a worker strings as they are, other values as JSON.
            let text = match value {
                toml::Value::String(s) => s.clone(),
                other => serde_json::to_string(&toml_to_json(other)).unwrap_or_default(),
            };
            vars.insert(key.clone(), text);
        }
    }
    let mut name = name;
    if env.is_none() {
        let dev_vars = path.with_file_name(".dev.vars");
        if let Ok(text) = std::fs::read_to_string(&dev_vars) {
            vars.extend(dotenv(&text));
            name.push_str(&format!(" + {}", dev_vars.strip_prefix(root).unwrap_or(&dev_vars).display()));
        }
    }
    Ok(Source { name, vars })
}

fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Value::from(*f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect())
        }
    }
}

/// `NAME=value` lines (a `#` line is a comment; quotes around a value are dropped).
fn dotenv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let unquoted =
                ['"', '\''].iter().find_map(|q| v.strip_prefix(*q).and_then(|rest| rest.strip_suffix(*q))).unwrap_or(v);
            (k.trim().to_string(), unquoted.to_string())
        })
        .collect()
}

/// The problems core finds in `source`'s variables.
pub fn problems(source: &Source) -> Vec<VarProblem> {
    vars::check(&|name: &str| source.vars.get(name).cloned())
}

/// Checks every config under `root` for `env`: each problem on standard error, naming its
/// config and variable. Whether all passed.
pub fn run(root: &Path, env: Option<&str>) -> Result<bool, String> {
    let mut ok = true;
    for path in configs(root)? {
        let source = source(root, &path, env)?;
        for problem in problems(&source) {
            eprintln!("error: {}: {problem}", source.name);
            ok = false;
        }
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> PathBuf {
        let root = std::env::temp_dir().join(format!(
            "baton-check-config-{}-{}",
            std::process::id(),
            files.iter().map(|(p, c)| p.len() + c.len()).sum::<usize>()
        ));
        let _ = std::fs::remove_dir_all(&root);
        for (path, content) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(path, content).expect("write");
        }
        root
    }

    fn named(root: &Path, env: Option<&str>) -> Vec<String> {
        configs(root)
            .expect("configs")
            .iter()
            .flat_map(|p| {
                let s = source(root, p, env).expect("source");
                problems(&s).into_iter().map(move |pr| format!("{}: {}", s.name, pr.variable))
            })
            .collect()
    }

    #[test]
    fn a_bad_value_is_named_with_its_config_and_table_and_dev_vars_win() {
        let root = tree(&[
            (
                "wrangler.toml",
                "name = \"o\"\n[vars]\nRETENTION_DAYS = \"30\"\n[env.production.vars]\nRETENTION_DAYS = \"a month\"\n",
            ),
            ("crates/poller/wrangler.toml", "name = \"p\"\n[vars]\nPOLLER_BATCH_SIZE = 0\n"),
            (".dev.vars", "# local\nRETENTION_DAYS_BY_CLIENT='[1]'\n"),
            ("crates/poller/.dev.vars", "POLLER_BATCH_SIZE=50\n"),
        ]);
        assert_eq!(named(&root, None), ["wrangler.toml [vars] + .dev.vars: RETENTION_DAYS_BY_CLIENT"]);
        assert_eq!(named(&root, Some("production")), ["wrangler.toml [env.production.vars]: RETENTION_DAYS"]);
        assert!(named(&root, Some("staging")).is_empty(), "no [env.staging.vars]: nothing set");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_span_exporters_variables_are_checked_in_every_config() {
        let root = tree(&[
            ("wrangler.toml", "name = \"o\"\n[vars]\nOTEL_EXPORTER_OTLP_ENDPOINT = \"collector:4318\"\n"),
            (
                "crates/consumer/wrangler.toml",
                "name = \"c\"\n[vars]\nOTEL_EXPORTER_OTLP_ENDPOINT = \"https://otel.example.com\"\n",
            ),
            ("crates/consumer/.dev.vars", "OTEL_EXPORTER_OTLP_HEADERS=api-key\n"),
        ]);
        assert_eq!(
            named(&root, None),
            [
                "wrangler.toml [vars]: OTEL_EXPORTER_OTLP_ENDPOINT",
                "crates/consumer/wrangler.toml [vars] + crates/consumer/.dev.vars: OTEL_EXPORTER_OTLP_HEADERS"
            ]
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn dev_vars_lines_are_read_as_wrangler_reads_them() {
        assert_eq!(
            dotenv("# c\nA=1\n\nB=\"x y\"\nC='{\"a\": 1}'\n"),
            [("A".into(), "1".into()), ("B".into(), "x y".into()), ("C".into(), "{\"a\": 1}".into())]
        );
    }
}
