//! Running step attempts against their services, here, in this invocation: the consumer's
//! task messages, and the first wave of a run whose client waits for it (run by the
//! orchestrator itself, or handed to the consumer).
//!
//! The attempts of one run share one copy of it ([`RunCell`]): the service calls overlap;
//! the decisions on their outcomes are taken one at a time, each on the copy the last one
//! left, so each is written in one round trip without reading the run again. What a result
//! makes ready — the next steps, the analysis — runs here too, claimed in the same
//! transaction that dispatches it. What cannot finish here (a retry after its backoff, a
//! step waiting for a concurrency slot) goes back to the task queue; if the invocation dies,
//! the attempts' deadlines bring a timer or the poller.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;

use baton_core::lifecycle::{Event, Observer, ReportOutcome};
use baton_core::messages::TaskMessage;
use baton_core::state::{StepRecord, StepStatus};
use baton_core::time::Millis;
use futures_util::future::Either;
use futures_util::lock::Mutex;
use serde_json::{json, Map, Value};

use super::apply::Reported;
use super::children::ChildStart;
use super::claim::{seconds_until, AttemptClaim};
use super::rows::record_of;
use super::run::{AdvanceReport, Dispatch, Engine, Loaded, Report};
use crate::concurrency::{join_all, Sender};
use crate::kv::Kv;
use crate::llm::LlmConfig;
use crate::protocol::{run_attempt, Attempt, ServiceOutcome};
use crate::{Error, Result};

/// Inputs larger than this travel by reference through KV, never inline.
pub const INLINE_INPUT_LIMIT: usize = 64 * 1024;

/// What to do with a task message.
#[derive(Debug, Clone, Copy)]
pub enum Disposition {
    Ack,
    /// Deliver again after this many seconds.
    RetryAfter(u32),
    /// Its service is at its concurrency cap: acknowledge this message and send the attempt
    /// again, as a new message, after this many seconds (waiting does not use up the queue's
    /// retries).
    Requeue(u32),
}

/// How long an attempt waiting for a slot of its service waits before asking again.
const SLOT_WAIT_SECONDS: u32 = 1;

/// One run as this invocation knows it, shared by its attempts: decisions on it are taken
/// one at a time (`turn`), each on the copy the previous one left. Reports that arrive while a
/// decision is being written wait for their turn and are then decided and written together,
/// in one batch: results that come back at about the same time cost one round trip.
pub struct RunCell<'a> {
    copy: RefCell<Loaded>,
    on_end: Option<&'a EndSignal>,
    /// When this invocation must let go of the run's attempts (`None`: not before they
    /// expire): an attempt not started by then goes to the task queue, and a call still
    /// waiting then is left to its service as if accepted.
    until: Option<Millis>,
    turn: Mutex<()>,
    /// Reports waiting for a turn, by ticket.
    waiting: RefCell<Vec<(u64, Reported)>>,
    /// Outcomes of reports written by another caller's turn, by ticket.
    written: RefCell<BTreeMap<u64, Result<ReportOutcome>>>,
    tickets: Cell<u64>,
}

/// Tells whoever waits for a run (the hand-over's caller) how it ended, the moment it ends.
#[derive(Default)]
pub struct EndSignal {
    sender: RefCell<Option<Sender<Option<Loaded>>>>,
    ended: Cell<bool>,
}

impl EndSignal {
    /// A signal that sends on `sender`.
    pub fn new(sender: Sender<Option<Loaded>>) -> Self {
        EndSignal { sender: RefCell::new(Some(sender)), ended: Cell::new(false) }
    }

    /// Sends `ended` (`None`: nothing ended here), once; later calls do nothing. Whether a
    /// waiting side received it (the caller may have stopped waiting, or never waited).
    pub fn fire(&self, ended: Option<Loaded>) -> bool {
        let Some(sender) = self.sender.borrow_mut().take() else { return false };
        self.ended.set(ended.is_some());
        sender.send(ended).is_ok()
    }

    /// Whether the run ended here.
    pub fn ended(&self) -> bool {
        self.ended.get()
    }
}

/// How long the ending's tail (the KV mirror, webhook messages, admission) waits after a
/// waiting client has been told the run ended, so that the answer leaves before the tail's
/// writes: one turn of the event loop is not enough for a response to get out, and locally,
/// where every worker shares one thread, the tail would hold it up by milliseconds.
const ANSWER_FIRST: std::time::Duration = std::time::Duration::from_millis(5);

/// Lets `hold` go (its run's log lines are written) once an answer being sent now has had
/// time to leave: the lines are not written on the answer's way out.
pub fn release_after_answer(ctx: &worker::Context, hold: Option<crate::log::Hold>) {
    let Some(hold) = hold else { return };
    ctx.wait_until(async move {
        worker::Delay::from(ANSWER_FIRST).await;
        drop(hold);
    });
}

/// How long a run whose first wave runs in place may go without its own timer: one that ends
/// sooner never needs it (if the invocation dies first, the poller finds its expired attempts).
pub const RUN_TIMER_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl<'a> RunCell<'a> {
    fn new(copy: Loaded, on_end: Option<&'a EndSignal>, until: Option<Millis>) -> Self {
        RunCell {
            copy: RefCell::new(copy),
            on_end,
            until,
            turn: Mutex::new(()),
            waiting: RefCell::new(Vec::new()),
            written: RefCell::new(BTreeMap::new()),
            tickets: Cell::new(0),
        }
    }

    /// The run as this invocation last knew it.
    pub fn copy(&self) -> Loaded {
        self.copy.borrow().clone()
    }

    /// Records a report on the copy, in turn (with whatever reports wait with it), and keeps
    /// the copy current. Returns the report's outcome, and what the decision made ready for
    /// this caller to carry on (empty unless its own turn wrote the batch).
    async fn record(
        &self,
        engine: &Engine<'_>,
        service: &str,
        attempt: u32,
        report: Option<Report>,
    ) -> Result<(ReportOutcome, AdvanceReport)> {
        let ticket = self.tickets.get();
        self.tickets.set(ticket + 1);
        // No report: a look at the run (an attempt this invocation called has expired).
        if let Some(report) = report {
            let reported = Reported { service: service.to_string(), attempt: Some(attempt), report };
            self.waiting.borrow_mut().push((ticket, reported));
        }
        let _turn = self.turn.lock().await;
        if let Some(outcome) = self.written.borrow_mut().remove(&ticket) {
            return outcome.map(|o| (o, AdvanceReport::default()));
        }
        // Let the answers that have already arrived join this batch (one turn of the event
        // loop): attempts of one wave tend to finish together.
        worker::Delay::from(std::time::Duration::ZERO).await;
        let batch: Vec<(u64, Reported)> = self.waiting.borrow_mut().drain(..).collect();
        let (tickets, reports): (Vec<u64>, Vec<Reported>) = batch.into_iter().unzip();
        // With an LLM configured the analysis may take seconds: it stays on its own queue.
        let dispatch = Dispatch::Inline { analysis: LlmConfig::from_env(engine.env()).is_none() };
        let decided = engine.carry_out(self.copy(), reports, Event::Look, Observer::EventDriven, dispatch).await;
        let (outcomes, advance) = match decided {
            Ok(decided) => decided,
            Err(e) => {
                let message = e.to_string();
                for other in tickets.iter().filter(|t| **t != ticket) {
                    self.written.borrow_mut().insert(*other, Err(Error::Storage(message.clone())));
                }
                // Not known exactly: the next decision loses its gate and reads the run.
                self.copy.borrow_mut().run.version = -1;
                return Err(e);
            }
        };
        match &advance.after {
            Some(after) => *self.copy.borrow_mut() = after.clone(),
            None => self.copy.borrow_mut().run.version = -1,
        }
        if let (true, Some(ended)) = (advance.tail_pending, &advance.after) {
            // Answer whoever waits first; the KV mirror and admission follow once the answer
            // has had time to leave.
            if self.on_end.is_some_and(|signal| signal.fire(Some(ended.clone()))) {
                worker::Delay::from(ANSWER_FIRST).await;
            }
            engine.after_ending(ended, &advance.deliveries).await;
        }
        let mut mine = ReportOutcome::Stale;
        for (t, outcome) in tickets.into_iter().zip(outcomes) {
            if t == ticket {
                mine = outcome;
            } else {
                self.written.borrow_mut().insert(t, Ok(outcome));
            }
        }
        Ok((mine, advance))
    }
}

/// Runs task attempts, grouped by run (runs concurrently); the outcomes in input order, and
/// each run as this invocation left it. `known`: a run the caller has just read or written
/// (its tasks skip the read). `until`: when this invocation must let go (see [`RunCell`]).
pub async fn run_batch(
    engine: &Engine<'_>,
    tasks: &[TaskMessage],
    known: Option<&Loaded>,
    on_end: Option<&EndSignal>,
    until: Option<Millis>,
) -> (Vec<Result<Disposition>>, Vec<Loaded>) {
    let mut by_run: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, task) in tasks.iter().enumerate() {
        by_run.entry(task.run_id.as_str()).or_default().push(i);
    }
    let groups: Vec<Vec<usize>> = by_run.into_values().collect();
    let runs: Vec<_> = groups
        .iter()
        .map(|indices| {
            let group: Vec<TaskMessage> = indices.iter().map(|&i| tasks[i].clone()).collect();
            let known = known.filter(|k| group.first().is_some_and(|t| t.run_id.as_str() == k.run.run_id));
            let run_id = group.first().map(|t| t.run_id.as_str().to_string()).unwrap_or_default();
            crate::meter::for_run(&run_id, async move { run_tasks_of_run(engine, &group, known, on_end, until).await })
        })
        .collect();
    let mut outcomes: Vec<Option<Result<Disposition>>> = tasks.iter().map(|_| None).collect();
    let mut finals = Vec::new();
    for (indices, (results, last)) in groups.iter().zip(join_all(runs).await) {
        for (&i, result) in indices.iter().zip(results) {
            outcomes[i] = Some(result);
        }
        finals.extend(last);
    }
    (outcomes.into_iter().map(|o| o.unwrap_or(Ok(Disposition::Ack))).collect(), finals)
}

/// For an attempt run in place (no message of its own): queues what its outcome leaves to
/// do — the retry it asks for, or the attempt itself after an error.
pub async fn queue_what_remains(engine: &Engine<'_>, task: &TaskMessage, outcome: Result<Disposition>) {
    match outcome {
        Ok(Disposition::Ack) => {}
        Ok(Disposition::RetryAfter(seconds)) | Ok(Disposition::Requeue(seconds)) => {
            send_task(engine, task, seconds).await
        }
        Err(e) => {
            worker::console_warn!("baton-tasks: {}/{} in place: {e}; queueing it", task.run_id, task.service);
            send_task(engine, task, 1).await;
        }
    }
}

/// Sends a task message, after `delay` seconds (for work this invocation could not finish).
pub async fn send_task(engine: &Engine<'_>, task: &TaskMessage, delay: u32) {
    let send = async {
        let queue = crate::queues::task_queue(engine.env())?;
        crate::queues::send_delayed(&queue, task.clone(), delay).await
    };
    if let Err(e) = send.await {
        worker::console_error!(
            "baton-tasks: {}/{}: not queued ({e}); the poller dispatches it",
            task.run_id,
            task.service
        );
    }
}

/// One run's tasks: one read, one transaction of claims, then the claimed attempts
/// concurrently on one shared copy of the run.
async fn run_tasks_of_run(
    engine: &Engine<'_>,
    tasks: &[TaskMessage],
    known: Option<&Loaded>,
    on_end: Option<&EndSignal>,
    until: Option<Millis>,
) -> (Vec<Result<Disposition>>, Option<Loaded>) {
    let claimed = async {
        match (known, tasks.first()) {
            (Some(known), _) => engine.claim_attempts(Some(known.clone()), tasks, true).await,
            (None, Some(task)) => engine.claim_and_load(task.run_id.as_str(), tasks).await,
            (None, None) => Ok((None, Vec::new())),
        }
    };
    let (loaded, claims) = match claimed.await {
        Ok(claimed) => claimed,
        Err(e) => {
            let message = e.to_string();
            return (tasks.iter().map(|_| Err(Error::Storage(message.clone()))).collect(), None);
        }
    };
    let Some(loaded) = loaded else { return (tasks.iter().map(|_| Ok(Disposition::Ack)).collect(), None) };
    let cell = RunCell::new(loaded, on_end, until);
    let runs: Vec<_> = claims
        .into_iter()
        .zip(tasks)
        .map(|(claim, task)| {
            let cell = &cell;
            async move {
                match claim {
                    AttemptClaim::Run(attempt) => run_or_release(engine, cell, task.service.as_str(), attempt).await,
                    AttemptClaim::Done => Ok(Disposition::Ack),
                    AttemptClaim::RetryAfter(seconds) => Ok(Disposition::RetryAfter(seconds)),
                    AttemptClaim::Expired => {
                        let (_, advance) = cell.record(engine, task.service.as_str(), task.attempt, None).await?;
                        carry_on(engine, cell, advance).await;
                        Ok(Disposition::Ack)
                    }
                }
            }
        })
        .collect();
    let outcomes = join_all(runs).await;
    (outcomes, Some(cell.copy()))
}

/// [`run_claimed`]; on an error, gives the claim up so that the attempt's message (retried,
/// or sent by the caller) can claim it again instead of waiting for the attempt's deadline.
async fn run_or_release(engine: &Engine<'_>, cell: &RunCell<'_>, service: &str, attempt: u32) -> Result<Disposition> {
    let copy = cell.copy();
    let claimed_at = copy.step(service).and_then(|row| row.claimed_at);
    let run_id = copy.run.run_id.clone();
    // Boxed: running a step may run the steps it makes ready (recursion).
    let outcome = Box::pin(run_claimed(engine, cell, service, attempt)).await;
    if let (Err(_) | Ok(Disposition::Requeue(_)), Some(at)) = (&outcome, claimed_at) {
        if let Err(e) = engine.release_attempt(&run_id, service, attempt, at).await {
            worker::console_warn!("baton-tasks: {run_id}/{service}: claim not released ({e}); its deadline frees it");
        }
    }
    outcome
}

/// Runs an attempt this invocation has claimed and records its outcome. The calls are
/// bounded by the attempt's expiry and the run's deadline; an attempt that gets no answer by
/// then is looked at (core times it out: a retry, or a `timeout` step; past the run's
/// deadline, the run).
async fn run_claimed(engine: &Engine<'_>, cell: &RunCell<'_>, service: &str, attempt: u32) -> Result<Disposition> {
    let copy = cell.copy();
    let Some(spec) = copy.plan.step(service).cloned() else { return Ok(Disposition::Ack) };
    let record = copy.step(service).map(record_of).transpose()?;
    let Some(expires_at) = record.and_then(|r| r.gives_up_at(&spec, copy.deadline())) else {
        return Ok(Disposition::Ack);
    };
    // Past the attempt's expiry or the run's deadline: nothing to call, the run is looked at.
    if expires_at <= engine.now() {
        return settle(engine, cell, service, attempt, None).await;
    }
    // Past this invocation's own limit: the attempt is run from the task queue instead.
    let call_until = cell.until.map_or(expires_at, |until| until.min(expires_at));
    if call_until <= engine.now() {
        return Ok(Disposition::Requeue(0));
    }
    if let Some(child) = &spec.child {
        // A run step: its child run is its service (see `engine::children`).
        let report = match engine.start_child(&copy, service, attempt, child).await {
            Ok(ChildStart::Running) => {
                engine.accepted(&cell.copy(), service, spec.worker_key.as_str(), attempt, None).await?;
                return Ok(Disposition::Ack);
            }
            Ok(ChildStart::Report(report)) => report,
            Err(e) => Report::Failed(baton_core::state::StepError::transient(format!("child run not started: {e}"))),
        };
        return settle(engine, cell, service, attempt, Some(report)).await;
    }
    if !engine.take_slot(&copy, service, attempt, expires_at).await? {
        return Ok(Disposition::Requeue(SLOT_WAIT_SECONDS));
    }
    let run_id = copy.run.run_id.clone();
    let run_id = run_id.as_str();
    let input = build_input(engine, &copy, service, attempt).await?;
    let trace = copy.run.trace();
    let outcome = run_attempt(
        engine.env(),
        &Attempt {
            run_id,
            service,
            worker: spec.worker_key.as_str(),
            attempt,
            action: spec.action.as_deref(),
            timeout_ms: spec.timeout_ms,
            estimated_tokens: 1000,
            input,
            expires_at,
            call_until,
            trace: &trace,
        },
    )
    .await;
    let report = match outcome {
        // The result comes by callback, or from the service's progress answers.
        ServiceOutcome::Accepted { progress } => {
            engine.accepted(&cell.copy(), service, spec.worker_key.as_str(), attempt, progress).await?;
            return Ok(Disposition::Ack);
        }
        ServiceOutcome::NotStarted => return Ok(Disposition::Requeue(0)),
        ServiceOutcome::Done { output, usage, duration_ms } => Some(Report::Succeeded { output, usage, duration_ms }),
        ServiceOutcome::Failed(error) => Some(Report::Failed(error)),
        ServiceOutcome::TimedOut => {
            let left = expires_at.since(engine.now());
            if left > 0 {
                worker::Delay::from(std::time::Duration::from_millis(left)).await;
            }
            None
        }
    };
    settle(engine, cell, service, attempt, report).await
}

/// Records an attempt's outcome (`None`: it got no answer, so core looks at its expiry and the
/// run's deadline), carries out what that makes ready, and says what becomes of its message:
/// retried after core's backoff when the step will be retried, else acknowledged.
async fn settle(
    engine: &Engine<'_>,
    cell: &RunCell<'_>,
    service: &str,
    attempt: u32,
    report: Option<Report>,
) -> Result<Disposition> {
    let (outcome, advance) = cell.record(engine, service, attempt, report).await?;
    carry_on(engine, cell, advance).await;
    match outcome {
        ReportOutcome::Recorded(step) if step.status == StepStatus::Retrying => {
            Ok(Disposition::RetryAfter(retry_delay(&step, engine.now())))
        }
        _ => Ok(Disposition::Ack),
    }
}

/// Carries out here what a result made ready ([`Dispatch::Inline`] saves a queue hop each):
/// the steps it dispatched and claimed, concurrently on the same copy (a fan-in it won was
/// analysed in the claim's own write, or queued). What cannot be finished here goes to its
/// queue; if this invocation dies, the steps' deadlines bring the poller.
async fn carry_on(engine: &Engine<'_>, cell: &RunCell<'_>, advance: AdvanceReport) {
    let runs: Vec<_> = advance
        .unsent_tasks
        .iter()
        .map(|task| async move {
            let outcome = run_or_release(engine, cell, task.service.as_str(), task.attempt).await;
            queue_what_remains(engine, task, outcome).await;
        })
        .collect();
    join_all(runs).await;
}

fn retry_delay(step: &StepRecord, now: Millis) -> u32 {
    step.next_attempt_at.map(|at| seconds_until(at, now)).unwrap_or(0)
}

/// The step's input: the run's parameters and the outputs of the steps it depends on (and,
/// for an item of a map step, its element: `item` and `index`).
/// Over [`INLINE_INPUT_LIMIT`] it is stored in KV and passed as a `dataReference`.
async fn build_input(engine: &Engine<'_>, loaded: &Loaded, service: &str, attempt: u32) -> Result<Value> {
    let mut upstream = Map::new();
    if let Some(spec) = loaded.plan.step(service) {
        for dependency in &spec.depends_on {
            if let Some(output) = loaded.step(dependency.as_str()).and_then(|s| s.output.as_deref()) {
                upstream.insert(dependency.as_str().to_string(), serde_json::from_str(output).unwrap_or(Value::Null));
            }
        }
    }
    let mut data = json!({
        "website_id": loaded.run.website_id,
        "domain": loaded.run.domain,
        "parameters": serde_json::from_str::<Value>(&loaded.run.parameters).unwrap_or(Value::Null),
        "upstream": upstream,
    });
    // An item of a map step: its element of the list, and where it is in the list.
    if let Some((item, index)) = super::apply::maps::element(loaded, service) {
        data["item"] = item;
        data["index"] = json!(index);
    }
    let text = data.to_string();
    if text.len() <= INLINE_INPUT_LIMIT {
        return Ok(json!({ "inputData": data }));
    }
    let key = format!("input:{}:{service}:{attempt}", loaded.run.run_id);
    Kv::from_env(engine.env())?.put_text(&key, &text).await.map_err(|e| Error::Kv(e.to_string()))?;
    Ok(json!({ "dataReference": { "store": "kv", "key": key, "bytes": text.len() } }))
}

/// Runs a run's claimed first wave here, at once, and what it makes ready; queues what cannot
/// finish here. `known`: the run as just written or read (`None`: read it). `signal` is told
/// how the run ended the moment it ends, or `None` once nothing is left to run here.
/// `until`: when this invocation must let go (see [`RunCell`]).
pub async fn run_here(
    engine: &Engine<'_>,
    known: Option<&Loaded>,
    tasks: &[TaskMessage],
    signal: &EndSignal,
    until: Option<Millis>,
) {
    let (outcomes, finals) = run_batch(engine, tasks, known, Some(signal), until).await;
    for (task, outcome) in tasks.iter().zip(outcomes) {
        queue_what_remains(engine, task, outcome).await;
    }
    // The run as this invocation left it, if it has ended.
    signal.fire(finals.into_iter().find(|run| run.status().is_ok_and(|s| s.is_terminal())));
}

/// The run of a first wave about to run at once: as its insert wrote it (the orchestrator), or
/// to be read from D1 by its id (a hand-over, which trusts nothing but ids).
pub enum FirstWaveRun {
    Written(Box<Loaded>),
    Read(String),
}

/// [`run_here`] as work of its own (`ctx.wait_until`), so a caller that stops waiting (its
/// `?wait` expired, its client left) does not cut it short. The receiver gets the run as it
/// ended, the moment it ends, or `None` once nothing is left to run here. `config`: the
/// configuration already resolved (`None`: resolve it). `until`: when the invocation must let
/// go of the attempts (see [`RunCell`]). If no engine can be had, the wave goes to the task
/// queue.
pub fn run_first_wave(
    ctx: &worker::Context,
    env: &worker::Env,
    config: Option<baton_core::config::Config>,
    run: FirstWaveRun,
    tasks: Vec<TaskMessage>,
    until: Millis,
) -> crate::concurrency::Receiver<Option<Loaded>> {
    let (done, finished) = crate::concurrency::oneshot();
    let env = env.clone();
    let run_id = match &run {
        FirstWaveRun::Written(written) => written.run.run_id.clone(),
        FirstWaveRun::Read(run_id) => run_id.clone(),
    };
    let flushing = env.clone();
    let wave = async move {
        let signal = EndSignal::new(done);
        let shard = baton_core::shard::Shard::of_id(match &run {
            FirstWaveRun::Written(written) => &written.run.run_id,
            FirstWaveRun::Read(run_id) => run_id,
        });
        let engine = match config {
            Some(config) => Engine::with_config(&env, config, shard),
            None => Engine::for_shard(&env, shard).await,
        };
        match engine {
            Ok(engine) => {
                let (known, own) = match run {
                    FirstWaveRun::Written(written) => (Some(*written), true),
                    FirstWaveRun::Read(run_id) => (
                        engine.load(&run_id).await.unwrap_or_else(|e| {
                            worker::console_error!("reading {run_id} failed ({e}); its deadlines bring the poller");
                            None
                        }),
                        false,
                    ),
                };
                let work = async {
                    if crate::faults::injected(&env, "in-place") {
                        // The invocation "dies" two seconds in, its claimed attempts unrun.
                        worker::Delay::from(2 * RUN_TIMER_AFTER).await;
                        return worker::console_warn!("fault injected: {} claimed attempts dropped", tasks.len());
                    }
                    run_here(&engine, known.as_ref(), &tasks, &signal, Some(until)).await
                };
                match (own, &known) {
                    // The run's own timer, unless the run ends first (a hand-over's sender armed it).
                    (true, Some(written)) => with_run_timer(&engine, written, &signal, work).await,
                    _ => work.await,
                }
            }
            Err(e) => {
                worker::console_error!("cannot run a first wave of {} tasks here ({e}); queueing it", tasks.len());
                let sent = async { crate::queues::send_all(&crate::queues::task_queue(&env)?, &tasks).await };
                if let Err(e) = sent.await {
                    worker::console_error!("not queued either ({e}); the attempts' deadlines bring the poller");
                }
            }
        }
        signal.fire(None);
    };
    // What the wave uses is the run's; recorded once it is done.
    ctx.wait_until(async move {
        crate::meter::for_run(&run_id, wave).await;
        crate::meter::flush(&flushing).await;
    });
    finished
}

/// Runs `work` (the first wave of `written`, in place) and sends the run's own timer once
/// [`RUN_TIMER_AFTER`] has passed or `work` is done, whichever comes first, unless the run has
/// ended by then.
async fn with_run_timer(engine: &Engine<'_>, written: &Loaded, signal: &EndSignal, work: impl Future<Output = ()>) {
    let arm = || async {
        if !signal.ended() {
            engine.arm_run_deadline(written).await;
        }
    };
    let waited = worker::Delay::from(RUN_TIMER_AFTER);
    match futures_util::future::select(std::pin::pin!(work), std::pin::pin!(waited)).await {
        Either::Left(((), _)) => arm().await,
        Either::Right(((), work)) => {
            futures_util::future::join(work, arm()).await;
        }
    }
}

/// [`run_first_wave`] of the run as its insert wrote it (first wave claimed), waited for at
/// most `limit` (zero: not at all): the run as it ended, if it ended by then. The attempts
/// run here until `limit` and [`crate::settings::in_place_seconds`] after it have passed.
pub async fn run_waited(
    ctx: &worker::Context,
    env: &worker::Env,
    config: baton_core::config::Config,
    written: Loaded,
    tasks: Vec<TaskMessage>,
    limit: std::time::Duration,
) -> Option<Loaded> {
    let until = in_place_until(env, limit);
    let finished = run_first_wave(ctx, env, Some(config), FirstWaveRun::Written(Box::new(written)), tasks, until);
    if limit.is_zero() {
        return None;
    }
    crate::concurrency::with_timeout(finished, limit).await.and_then(|ended| ended.ok()).flatten()
}

/// When an invocation that answers within `limit` must let go of the attempts it runs in
/// place: [`crate::settings::in_place_seconds`] after that answer.
pub fn in_place_until(env: &worker::Env, limit: std::time::Duration) -> Millis {
    let after = std::time::Duration::from_secs(crate::settings::in_place_seconds(env));
    Millis::new(crate::clock::now_ms()).saturating_add((limit + after).as_millis() as u64)
}
