//! Following a run as it goes: on a terminal, one live line per step (wave, status, attempt,
//! duration) under a line for the run; elsewhere (a pipe, a log), one line per change.
//! Everything goes to standard error, so standard output keeps only the result.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::render::{self, StepView};

/// How a run is shown while it goes.
enum Display {
    /// Live lines that update in place.
    Live { multi: MultiProgress, run: ProgressBar, steps: BTreeMap<String, ProgressBar> },
    /// One line per change.
    Lines,
    /// Nothing (`--json`).
    Quiet,
}

/// The display of one run being followed.
pub struct Watch {
    display: Display,
    run_id: String,
    last: Vec<StepView>,
    started: Instant,
}

impl Watch {
    /// Follows `run_id`: live on a terminal, line by line elsewhere, silent when `quiet`.
    pub fn new(run_id: &str, quiet: bool) -> Watch {
        let display = if quiet {
            Display::Quiet
        } else if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let run = multi.add(ProgressBar::new_spinner());
            run.set_style(style("{spinner} {msg} [{elapsed}]"));
            run.set_message(format!("run {run_id}: starting"));
            run.enable_steady_tick(Duration::from_millis(120));
            Display::Live { multi, run, steps: BTreeMap::new() }
        } else {
            Display::Lines
        };
        Watch { display, run_id: run_id.to_string(), last: Vec::new(), started: Instant::now() }
    }

    /// Shows the run as `GET /api/orchestration/runs/:id` now answers.
    pub fn update(&mut self, run: &Value) {
        let steps = render::steps_of(run);
        let status = run["status"].as_str().unwrap_or("unknown");
        match &mut self.display {
            Display::Quiet => {}
            Display::Lines => {
                let elapsed = render::duration(self.started.elapsed().as_millis() as u64);
                for line in render::step_changes(&self.last, &steps) {
                    eprintln!("[{elapsed:>8}] {line}");
                }
            }
            Display::Live { multi, run: run_bar, steps: bars } => {
                run_bar.set_message(format!("run {}: {status}", self.run_id));
                for step in &steps {
                    let bar = bars.entry(step.service.clone()).or_insert_with(|| {
                        let bar = multi.add(ProgressBar::new_spinner());
                        bar.set_style(style("  {spinner} {msg}"));
                        bar.enable_steady_tick(Duration::from_millis(120));
                        bar
                    });
                    if bar.is_finished() {
                        continue;
                    }
                    let line = render::step_line(step);
                    if step.ended() {
                        let mark = if step.status == "completed" { "✓" } else { "✗" };
                        bar.set_style(style("  {msg}"));
                        bar.finish_with_message(format!("{mark} {line}"));
                    } else {
                        bar.set_message(line);
                    }
                }
            }
        }
        self.last = steps;
    }

    /// Stops the live display (its last state stays on the screen).
    pub fn finish(&self) {
        if let Display::Live { run, steps, .. } = &self.display {
            for bar in steps.values().filter(|b| !b.is_finished()) {
                bar.finish();
            }
            run.finish();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}
