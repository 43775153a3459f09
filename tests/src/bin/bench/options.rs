//! The bench's command line.

use std::ffi::OsString;
use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;

/// What `--help` prints.
pub const USAGE: &str = "\
Usage: make bench ARGS=\"[OPTIONS]\"
   or: cargo run --release -p baton-e2e --bin bench -- [OPTIONS]

Baton against the Cloudflare Workflows peer and the floor, on `wrangler dev`. See BENCHMARKS.md.

Options:
  --runs N          W1 runs per latency and system [default: 100; p99 is then the second slowest]
  --warmup N        warm-up runs per system before W1 and before W5 [default: 10]
  --latencies LIST  W1 service latencies d in ms, comma-separated [default: 0,50]
  --w2 LIST         W2 sizes R (runs submitted at once), comma-separated [default: 100,1000,5000]
  --w2-rounds N     W2 rounds per size up to 1000, the systems taking turns (larger sizes run
                    once) [default: 3]
  --w5 N            W5 (wide plan) runs per system; 0 skips W5 [default: as --runs]
  --w4 N            W4 (deadline overshoot) runs, 3 timed-out attempts each; 0 skips W4 [default: 20]
  --threads N       client threads submitting W2 runs [default: 32]
  --skip-workflows  do not start the Workflows peer
  --skip-floor      do not start the floor
  --skip-extras     skip W3 and the cost section (Baton only)
  --history N       finished runs of history the soak loads (W1, the runs list, /metrics and a
                    poller tick measured before and after, on a stack of its own); 0 skips the
                    soak [default: 200000]
  --history-chunk N history runs loaded per INSERT statement [default: 20000]
  --archive-runs N  runs created, then archived by back-to-back poller ticks, for D1 bytes per
                    run live and archived, R2 bytes per object and archive throughput; 0 skips
                    them [default: 1000]
  --skip-history    skip the whole history section (as --history 0 --archive-runs 0)
  --poll            Baton's W1 and W5 poll GET /runs/:id every 5 ms instead of ?wait=30
  --local-observability
                    keep wrangler's local trace collector on for every system (off by default:
                    it records every span and log line of every invocation into SQLite on the
                    runtime's thread, which a deployed worker does not pay)
  --out PATH        where the JSON results go [default: bench-results/latest.json]
  -h, --help        print this
";

/// The bench's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// W1 runs per latency and system.
    pub runs: usize,
    /// Warm-up runs per system before W1 (per latency) and before W5.
    pub warmup: usize,
    /// W1 service latencies, in ms.
    pub latencies: Vec<u64>,
    /// W2 sizes.
    pub w2: Vec<usize>,
    /// W2 rounds per size up to [`ROUNDS_UP_TO`] (larger sizes run once).
    pub w2_rounds: usize,
    /// W5 runs per system (0: no W5).
    pub w5: usize,
    /// W4 runs (0: no W4).
    pub w4: usize,
    /// Client threads for W2.
    pub threads: usize,
    /// Start the Workflows peer.
    pub workflows: bool,
    /// Start the floor.
    pub floor: bool,
    /// Run W3 and the cost section.
    pub extras: bool,
    /// Baton's W1 and W5 poll the run instead of `?wait`.
    pub poll: bool,
    /// Finished runs the history soak loads (0: no soak).
    pub history: usize,
    /// History runs per `INSERT` statement.
    pub history_chunk: usize,
    /// Runs created and archived for the bytes and the archive throughput (0: none).
    pub archive_runs: usize,
    /// Keep wrangler's local trace collector on (`X_LOCAL_OBSERVABILITY`) for every system.
    pub local_observability: bool,
    /// The JSON results file.
    pub out: PathBuf,
}

impl Options {
    /// Whether the history section runs at all.
    pub fn history_section(&self) -> bool {
        self.history > 0 || self.archive_runs > 0
    }
}

/// The largest W2 size measured in [`Options::w2_rounds`] rounds; larger sizes (minutes per
/// system) run once.
pub const ROUNDS_UP_TO: usize = 1000;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the bench.
    Run(Options),
    /// Print [`USAGE`].
    Help,
}

/// Parses the arguments (without the program name); `out` is the default results file.
pub fn parse(args: impl IntoIterator<Item = impl Into<OsString>>, out: PathBuf) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;

    let mut o = Options {
        runs: 100,
        warmup: 10,
        latencies: vec![0, 50],
        w2: vec![100, 1000, 5000],
        w2_rounds: 3,
        w5: 0,
        w4: 20,
        threads: 32,
        workflows: true,
        floor: true,
        extras: true,
        poll: false,
        local_observability: false,
        history: 200_000,
        history_chunk: 20_000,
        archive_runs: 1000,
        out,
    };
    let mut w5 = None;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("runs") => o.runs = parser.value()?.parse()?,
            Long("warmup") => o.warmup = parser.value()?.parse()?,
            Long("latencies") => o.latencies = parser.value()?.parse_with(list)?,
            Long("w2") => o.w2 = parser.value()?.parse_with(list)?,
            Long("w2-rounds") => o.w2_rounds = parser.value()?.parse()?,
            Long("w5") => w5 = Some(parser.value()?.parse()?),
            Long("w4") => o.w4 = parser.value()?.parse()?,
            Long("threads") => o.threads = parser.value()?.parse()?,
            Long("skip-workflows") => o.workflows = false,
            Long("skip-floor") => o.floor = false,
            Long("skip-extras") => o.extras = false,
            Long("poll") => o.poll = true,
            Long("local-observability") => o.local_observability = true,
            Long("history") => o.history = parser.value()?.parse()?,
            Long("history-chunk") => o.history_chunk = parser.value()?.parse()?,
            Long("archive-runs") => o.archive_runs = parser.value()?.parse()?,
            Long("skip-history") => (o.history, o.archive_runs) = (0, 0),
            Long("out") => o.out = parser.value()?.into(),
            Short('h') | Long("help") => return Ok(Command::Help),
            _ => return Err(arg.unexpected()),
        }
    }
    o.w5 = w5.unwrap_or(o.runs);
    if o.history_chunk == 0 {
        return Err("--history-chunk must be at least 1".into());
    }
    if o.w2_rounds == 0 {
        return Err("--w2-rounds must be at least 1 (an empty --w2 skips W2)".into());
    }
    Ok(Command::Run(o))
}

/// `0,50` → `[0, 50]`; an empty value is an empty list (that workload is skipped).
fn list<T: FromStr>(value: &str) -> Result<Vec<T>, String>
where
    T::Err: Display,
{
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| item.parse().map_err(|e| format!("{item:?}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, String> {
        match parse(args.iter().copied(), PathBuf::from("out.json")) {
            Ok(Command::Run(o)) => Ok(o),
            Ok(Command::Help) => Err("help".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn defaults() {
        let o = run(&[]).expect("no arguments is valid");
        assert_eq!((o.runs, o.warmup, o.w5, o.threads), (100, 10, 100, 32));
        assert_eq!((o.latencies, o.w2, o.w2_rounds), (vec![0, 50], vec![100, 1000, 5000], 3));
        assert_eq!((o.workflows, o.floor, o.extras, o.poll), (true, true, true, false));
        assert!(!o.local_observability);
        assert_eq!((o.history, o.history_chunk, o.archive_runs), (200_000, 20_000, 1000));
        assert_eq!(o.out, PathBuf::from("out.json"));
    }

    #[test]
    fn every_option() {
        let o = run(&[
            "--runs",
            "5",
            "--warmup=2",
            "--latencies",
            "0, 20",
            "--w2",
            "",
            "--w2-rounds",
            "5",
            "--w5",
            "0",
            "--threads",
            "4",
            "--skip-workflows",
            "--skip-floor",
            "--skip-extras",
            "--poll",
            "--local-observability",
            "--history",
            "5000",
            "--history-chunk",
            "1000",
            "--archive-runs",
            "50",
            "--out",
            "x.json",
        ])
        .expect("valid");
        assert_eq!((o.runs, o.warmup, o.w5, o.threads), (5, 2, 0, 4));
        assert_eq!((o.latencies, o.w2, o.w2_rounds), (vec![0, 20], vec![], 5));
        assert_eq!((o.workflows, o.floor, o.extras, o.poll), (false, false, false, true));
        assert!(o.local_observability);
        assert_eq!((o.history, o.history_chunk, o.archive_runs), (5000, 1000, 50));
        assert_eq!(o.out, PathBuf::from("x.json"));
        let skipped = run(&["--archive-runs", "7", "--skip-history"]).expect("valid");
        assert!(!skipped.history_section(), "{skipped:?}");
        assert_eq!(run(&["--runs", "7"]).expect("valid").w5, 7, "W5 follows --runs unless given");
    }

    #[test]
    fn help_and_bad_input() {
        assert_eq!(run(&["--help"]), Err("help".into()));
        assert_eq!(run(&["-h"]), Err("help".into()));
        let check = |args: &[&str], expected: &str| {
            let error = run(args).expect_err("must be rejected");
            assert!(error.contains(expected), "{args:?}: {error}");
        };
        check(&["--rusn", "5"], "--rusn");
        check(&["--runs"], "--runs");
        check(&["--runs", "many"], "many");
        check(&["--w2", "100,lots"], "lots");
        check(&["--skip-floor=yes"], "--skip-floor");
        check(&["--w2-rounds", "0"], "--w2-rounds");
        check(&["--history-chunk", "0"], "--history-chunk");
        check(&["extra"], "extra");
    }
}
