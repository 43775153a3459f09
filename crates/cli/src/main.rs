//! `baton`: start and follow Baton runs, plans and executions from a terminal.
//!
//! Exit codes: 0 success; 1 a followed run ended without completing (failed, timed out,
//! cancelled) or outlived `--timeout`, or `check-config` found a bad variable; 2 a usage error; 3 the API refused the request (its
//! error code and message are printed); 4 the API could not be reached.

mod api;
mod args;
mod check_config;
mod commands;
mod render;
mod watch;

use std::process::ExitCode;

use clap::Parser;

use api::{Api, ApiError};
use args::Cli;
use commands::{Failure, Out};

fn main() -> ExitCode {
    // Usage errors exit with 2, --help and --version with 0 (clap's own codes).
    let cli = Cli::parse();
    if let args::Command::CheckConfig { env, root } = &cli.command {
        return match check_config::run(root, env.as_deref()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    let api = Api::new(&cli.url, &cli.token);
    let out = Out { json: cli.json };
    let exit = match commands::execute(&api, &out, cli.command) {
        Ok(exit) => exit,
        Err(failure) => {
            report(&failure, out.json);
            failure.exit()
        }
    };
    ExitCode::from(exit as u8)
}

/// Tells what went wrong: on standard error, and with `--json` the API's error body on
/// standard output as well.
fn report(failure: &Failure, json: bool) {
    match failure {
        Failure::Api(ApiError::Refused { status, code, message, body }) => {
            if json && !body.is_null() {
                println!("{}", serde_json::to_string_pretty(body).unwrap_or_default());
            }
            eprintln!("error: {code} ({status}): {message}");
        }
        Failure::Api(unreachable @ ApiError::Unreachable(_)) => eprintln!("error: {unreachable}"),
        Failure::Usage(message) => eprintln!("error: {message}"),
    }
}
