//! The engine for one event: bindings, configuration, the clock; loading a run; the
//! types the interpreter ([`super::apply`]) works with; the KV snapshot.

use std::cell::RefCell;

use baton_core::config::{apply_override, Config};
use baton_core::ids::{RunId, ServiceSlug};
use baton_core::messages::TaskMessage;
use baton_core::plan::Plan;
use baton_core::retry::{RandomSource, SplitMix64};
use baton_core::shard::{Shard, Shards};
use baton_core::state::{RunStatus, StepError, StepRecord};
use baton_core::summary::{RunFacts, RunSummary};
use baton_core::time::Millis;
use serde_json::Value;
use worker::Env;

use super::rows::record_of;
use crate::d1::runs::{self, RunRow};
use crate::d1::steps::{self, StepRow};
use crate::d1::{Db, Stmt};
use crate::kv::Kv;
use crate::{bindings, clock, Error, Result};

/// How long after its backoff a retry's own message counts as lost (the poller then
/// dispatches the step anew).
pub const RETRY_GRACE_MS: u64 = 10_000;

/// A recorded result makes its run due for the poller this soon, unless it already is: if
/// the worker dies between recording a result and acting on it (dispatching the next wave,
/// claiming the fan-in), the poller carries on from there instead of waiting for the run's
/// deadline. Costs one row write per run per window, and nothing when the run ends first.
pub const RESULT_RECHECK_MS: u64 = 15_000;

/// A run with its plan and steps, as read from D1.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The run row.
    pub run: RunRow,
    /// Its plan (as it was when the run started).
    pub plan: Plan,
    /// Its steps in plan order.
    pub steps: Vec<StepRow>,
}

impl Loaded {
    /// A run from its rows (the plan is read from the run's `plan_json`).
    pub fn from_rows(run: RunRow, steps: Vec<StepRow>) -> Result<Loaded> {
        let plan: Plan = serde_json::from_str(&run.plan_json)
            .map_err(|e| Error::Storage(format!("run {} has an unreadable plan: {e}", run.run_id)))?;
        if run.traceparent.is_some() {
            crate::log::note_trace(&run.trace());
        }
        Ok(Loaded { run, plan, steps })
    }

    /// The run id.
    pub fn run_id(&self) -> Result<RunId> {
        self.run.run_id.parse().map_err(|e| Error::Storage(format!("run id {}: {e}", self.run.run_id)))
    }

    /// The run status.
    pub fn status(&self) -> Result<RunStatus> {
        Ok(self.run.status)
    }

    /// When the run times out: no call made for it may outlast this.
    pub fn deadline(&self) -> Millis {
        Millis::new(self.run.deadline_at.max(0) as u64)
    }

    /// The core records of every step.
    pub fn records(&self) -> Result<Vec<StepRecord>> {
        self.steps.iter().map(record_of).collect()
    }

    /// One step's row.
    pub fn step(&self, service: &str) -> Option<&StepRow> {
        self.steps.iter().find(|s| s.service == service)
    }

    /// Replaces the row of the same step (after this caller's own write to it).
    pub fn replace_step(&mut self, row: StepRow) {
        if let Some(slot) = self.steps.iter_mut().find(|s| s.service == row.service) {
            *slot = row;
        }
    }

    /// When the run started.
    pub fn started_at(&self) -> Millis {
        Millis::new(self.run.started_at.max(0) as u64)
    }
}

/// What a service reported for a step attempt.
#[derive(Debug, Clone)]
pub enum Report {
    /// It produced a result. `duration_ms` is what the service said its work took, if it
    /// said: the step's own duration is Baton's measure, from dispatch to the result.
    Succeeded { output: Value, usage: Option<Value>, duration_ms: Option<u64> },
    /// It failed.
    Failed(StepError),
}

/// What recording a report did.
// Returned once per call and never stored: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum RecordOutcome {
    /// The step changed; the run was advanced.
    Recorded { step: StepRecord, advance: AdvanceReport },
    /// The step had already ended: a duplicate or late report, acknowledged and ignored.
    AlreadyTerminal,
    /// The report is for another attempt, or another writer changed the step first.
    Stale,
    /// No such run or step.
    NotFound,
}

/// What advancing a run did.
/// A fan-in claim a caller won: whether every step completed, or the run goes to analysis
/// with some missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FanInClaim {
    /// Every step completed.
    Complete,
    /// Some steps ended without a result (the analysis names them).
    Partial,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AdvanceReport {
    /// Steps dispatched (messages sent).
    pub dispatched: Vec<String>,
    /// Steps skipped because a dependency did not complete.
    pub skipped: Vec<String>,
    /// Steps timed out.
    pub timed_out: Vec<String>,
    /// Steps whose timed-out attempt will be retried.
    pub retrying: Vec<String>,
    /// The fan-in claim this caller won, if it won one.
    pub claimed: Option<FanInClaim>,
    /// Fan-in is due but left to the poller (event-driven fan-in is off).
    pub deferred: bool,
    /// The run failed without analysis.
    pub failed: bool,
    /// The run ended in this change (failed, cancelled, or claimed and analysed at once).
    pub finished: Option<RunStatus>,
    /// Steps cancelled.
    pub cancelled: Vec<String>,
    /// The run was paused by this change.
    pub paused: bool,
    /// The run was resumed by this change.
    pub resumed: bool,
    /// [`Dispatch::Inline`]: the run ended in this change and the ending's tail (KV snapshot,
    /// admission) is the caller's to run (`Engine::after_ending`), once it has told whoever
    /// waits for the run.
    #[serde(skip)]
    pub tail_pending: bool,
    /// With `tail_pending`: the webhook deliveries the ending wrote, for the tail to queue.
    #[serde(skip)]
    pub deliveries: Vec<String>,
    /// [`Dispatch::Inline`]: the task messages of `dispatched`, not sent.
    #[serde(skip)]
    pub unsent_tasks: Vec<TaskMessage>,
    /// [`Dispatch::Inline`]: the run after this advance's writes (dispatched steps claimed by
    /// the caller, the fan-in claim), so the caller runs them without reading it again.
    /// `None` when a racing writer changed a step first: the caller reads the run.
    #[serde(skip)]
    pub after: Option<Loaded>,
}

pub use baton_core::lifecycle::Dispatch;

/// The engine for one event (request, queue batch, cron tick): bindings, config, clock, and
/// the run lifecycle. Plans, schedules, webhooks and executions are services of their own,
/// reached through it: [`Engine::plans`], [`Engine::schedules`], [`Engine::webhooks`],
/// [`Engine::executions`].
pub struct Engine<'a> {
    env: &'a Env,
    /// The database of this engine's shard: every run, execution and client it handles lives
    /// there (see [`Engine::on_id`], [`Engine::on_client`] for the others).
    pub db: Db,
    /// The deployment's shards (`D1_SHARDS`, `SHARD_BY_CLIENT`).
    shards: Shards,
    /// The effective configuration (env + KV override).
    pub config: Config,
    /// Why the KV override was ignored, if it was.
    pub rejected_override: Option<String>,
    // Core takes `&mut dyn RandomSource`; a cell lets concurrent handlers share one engine
    // (never borrowed across an await).
    rng: RefCell<SplitMix64>,
}

impl<'a> Engine<'a> {
    /// The engine of `shard`'s database. Resolves bindings and configuration once per event.
    /// A bad or unreadable override is ignored (and reported in `rejected_override`): it never
    /// stops work.
    pub async fn for_shard(env: &'a Env, shard: Shard) -> Result<Engine<'a>> {
        let (config, rejected_override) = resolve_config(env).await;
        Ok(Engine { rejected_override, ..Engine::with_config(env, config, shard)? })
    }

    /// The engine of the database holding what a run, execution or webhook delivery id names
    /// (its shard is in the id).
    pub async fn for_id(env: &'a Env, id: &str) -> Result<Engine<'a>> {
        let engine = Engine::for_shard(env, Shard::FIRST).await?;
        engine.on_id(id)
    }

    /// The engine of the database holding `client`'s data.
    pub async fn for_client(env: &'a Env, client: &str) -> Result<Engine<'a>> {
        let shard = crate::settings::shards(env)?.of_client(client);
        Engine::for_shard(env, shard).await
    }

    /// An engine of `shard` with a configuration handed over by another worker (which
    /// resolved it moments ago), saving the KV read.
    pub fn with_config(env: &'a Env, config: Config, shard: Shard) -> Result<Engine<'a>> {
        crate::log::configure(env);
        Engine::on(env, config, crate::settings::shards(env)?, shard)
    }

    /// The same event's engine on another shard's database (the shards and configuration as
    /// this engine resolved them).
    pub fn on_shard(&self, shard: Shard) -> Result<Engine<'a>> {
        Ok(Engine {
            rejected_override: self.rejected_override.clone(),
            ..Engine::on(self.env, self.config, self.shards.clone(), shard)?
        })
    }

    fn on(env: &'a Env, config: Config, shards: Shards, shard: Shard) -> Result<Engine<'a>> {
        if !shards.contains(shard) {
            return Err(Error::NotFound { what: format!("shard {shard} (D1_SHARDS is {})", shards.count()) });
        }
        let db = Db::of_shard(env, shard)?;
        let rng = RefCell::new(SplitMix64::new(clock::random_u64()?));
        Ok(Engine { env, db, shards, config, rejected_override: None, rng })
    }

    /// The engine of the database holding what `id` names (a run, execution or delivery id).
    /// An id naming a shard this deployment does not have names nothing: not found.
    pub fn on_id(&self, id: &str) -> Result<Engine<'a>> {
        let shard = Shard::of_id(id);
        if !self.shards.contains(shard) {
            return Err(Error::NotFound { what: id.chars().take(100).collect() });
        }
        self.on_shard(shard)
    }

    /// The engine of the database holding `client`'s data.
    pub fn on_client(&self, client: &str) -> Result<Engine<'a>> {
        self.on_shard(self.shards.of_client(client))
    }

    /// A fresh run id in this engine's shard.
    pub fn new_run_id(&self) -> Result<RunId> {
        Ok(RunId::in_shard(self.now(), clock::random_bytes::<8>()?, self.shard()))
    }

    /// This engine's shard.
    pub fn shard(&self) -> Shard {
        self.db.shard()
    }

    /// The deployment's shards.
    pub fn shards(&self) -> &Shards {
        &self.shards
    }

    /// The worker's environment.
    pub fn env(&self) -> &Env {
        self.env
    }

    /// Now, from the JS clock.
    pub fn now(&self) -> Millis {
        Millis::new(clock::now_ms())
    }

    /// A fresh version token for a run (see `d1::runs::gate`): random, and exact as a JS number.
    pub(super) fn token(&self) -> i64 {
        (self.rng.borrow_mut().next_u64() >> 11) as i64
    }

    /// Core's random source for this event (never borrowed across an await).
    pub(super) fn rng(&self) -> std::cell::RefMut<'_, SplitMix64> {
        self.rng.borrow_mut()
    }

    /// Loads a run, its plan and its steps in one round trip.
    pub async fn load(&self, run_id: &str) -> Result<Option<Loaded>> {
        Ok(self.load_after(run_id, Vec::new()).await?.0)
    }

    /// Runs `first` and then reads the run, in one transaction: the run as those statements
    /// left it, and their `changes`.
    pub(super) async fn load_after(&self, run_id: &str, first: Vec<Stmt>) -> Result<(Option<Loaded>, Vec<u64>)> {
        let count = first.len();
        let mut statements = first;
        statements.push(runs::select(&self.db, run_id)?);
        statements.push(steps::select_of_run(&self.db, run_id)?);
        let results = self.db.batch_rows(statements).await?;
        let changes = results.iter().take(count).map(|(_, meta)| meta.changes).collect();
        let mut results = results.into_iter().skip(count);
        let (run_rows, _) = results.next().unwrap_or_default();
        let (step_rows, _) = results.next().unwrap_or_default();
        let Some(run) = run_rows.into_iter().next() else { return Ok((None, changes)) };
        let run: RunRow = serde_json::from_value(run).map_err(|e| Error::Storage(format!("decoding run: {e}")))?;
        Ok((Some(Loaded::from_rows(run, decode_steps(step_rows)?)?), changes))
    }

    /// Mirrors the run's summary into KV (`job:{traceId}`) for fast reads. Best effort: KV
    /// never decides anything, so a failure is logged, not raised.
    pub(crate) async fn write_snapshot(&self, loaded: &Loaded) {
        let outcome = async {
            let snapshot = snapshot_of(loaded)?;
            Kv::from_env(self.env)?.put_json(&bindings::kv_keys::job(&loaded.run.run_id), &snapshot).await
        }
        .await;
        if let Err(e) = outcome {
            worker::console_warn!("run {}: KV snapshot not written: {e}", loaded.run.run_id);
        }
    }
}

/// The run's summary in core's shape (camelCase, RFC 3339 times).
pub fn summary_of(loaded: &Loaded) -> Result<RunSummary> {
    let corrupt = |what: &str, e: String| Error::Storage(format!("run {}: {what}: {e}", loaded.run.run_id));
    let facts = RunFacts {
        run_id: loaded.run_id()?,
        website_id: loaded
            .run
            .website_id
            .parse()
            .map_err(|e: baton_core::ids::IdError| corrupt("website_id", e.to_string()))?,
        domain: loaded.run.domain.clone(),
        plan_id: loaded.plan.plan_id().clone(),
        status: loaded.status()?,
        started_at: loaded.started_at(),
        completed_at: loaded.run.completed_at.map(|ms| Millis::new(ms.max(0) as u64)),
        diagnosis_event_id: match &loaded.run.diagnosis_event_id {
            Some(id) => {
                Some(id.parse().map_err(|e: baton_core::ids::IdError| corrupt("diagnosis_event_id", e.to_string()))?)
            }
            None => None,
        },
        error: loaded.run.error.clone(),
    };
    Ok(RunSummary::new(facts, &loaded.plan, &loaded.records()?))
}

/// The `job:{traceId}` snapshot: the run's summary and its steps' statuses (a map step's
/// items are not listed: the run's view has them).
pub fn snapshot_of(loaded: &Loaded) -> Result<Value> {
    let steps: Vec<Value> = loaded
        .steps
        .iter()
        .filter(|s| baton_core::map::item_of(&s.service).is_none())
        .map(|s| serde_json::json!({ "service": s.service, "status": s.status, "attempts": s.attempts }))
        .collect();
    Ok(serde_json::json!({ "traceId": loaded.run.run_id, "summary": summary_of(loaded)?, "steps": steps }))
}

/// The `runs.missing` column: a JSON array of step slugs.
pub(super) fn missing_json(missing: &[ServiceSlug]) -> String {
    Value::from(names(missing.iter())).to_string()
}

pub(super) fn names<'s>(services: impl IntoIterator<Item = &'s ServiceSlug>) -> Vec<String> {
    services.into_iter().map(|s| s.as_str().to_string()).collect()
}

fn decode_steps(rows: Vec<Value>) -> Result<Vec<StepRow>> {
    rows.into_iter()
        .map(|r| serde_json::from_value(r).map_err(|e| Error::Storage(format!("decoding step: {e}"))))
        .collect()
}

async fn resolve_config(env: &Env) -> (Config, Option<String>) {
    let base = crate::settings::base_config(env).unwrap_or_else(|e| {
        worker::console_error!("invalid configuration variable ({e}); using defaults");
        Config::default()
    });
    let override_text = match Kv::from_env(env) {
        Ok(kv) => kv.get_text(bindings::kv_keys::CONFIG).await,
        Err(e) => Err(e),
    };
    match override_text {
        Ok(None) => (base, None),
        Ok(Some(text)) => match apply_override(&base, &text) {
            Ok(config) => (config, None),
            Err(e) => {
                worker::console_warn!("ignoring KV orchestration:config: {e}");
                (base, Some(e.to_string()))
            }
        },
        Err(e) => {
            worker::console_warn!("could not read KV orchestration:config ({e}); using env config");
            (base, Some(format!("unreadable: {e}")))
        }
    }
}
