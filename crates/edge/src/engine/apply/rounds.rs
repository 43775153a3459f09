//! A run's rounds: the first (a new run, its first wave dispatched in the insert) and each
//! retry of an ended run ([`lifecycle::restart`]), which also takes the last ending's count out
//! of the metric totals. Core decides both; these write them.

use baton_core::events::{RunStartedPayload, RUN_STATUS_EVENT_TYPE};
use baton_core::lifecycle::{self, Effect, Observer, Restart};
use baton_core::messages::{TaskMessage, TasksQueueMessage, TimerKind, TimerMessage};
use baton_core::metrics;
use baton_core::state::{RunStatus, StepStatus};

use super::super::rows::row_with_record;
use super::super::run::{Dispatch, Engine, Loaded};
use super::Write;
use crate::d1::events::EventRow;
use crate::d1::steps::{self, StepRow};
use crate::{clock, log, Error, Result};

impl Engine<'_> {
    /// Writes a new run (`new`: its row, plan and pending steps) in one transaction: counted against its client's quota of runs in
    /// progress (`max_active`; the transaction fails above it), the run, its steps as the first
    /// wave leaves them, the start event. Attempts the caller runs itself ([`Dispatch::Inline`])
    /// are claimed in the insert. Returns the run as written; an error leaves nothing written.
    pub(in crate::engine) async fn insert_run(
        &self,
        new: Loaded,
        event: EventRow,
        first_wave: &lifecycle::Decision,
        dispatch: Dispatch,
        max_active: u32,
    ) -> Result<Loaded> {
        let now = self.now();
        let effects = lifecycle::effects(first_wave, &self.carry(now, dispatch));
        let handed_over = |service: &str| {
            effects.iter().any(|e| matches!(e, Effect::HandOver { service: s, .. } if s.as_str() == service))
        };
        let at = now.as_u64() as i64;
        let Loaded { run, plan, steps: pending } = new;
        let rows: Vec<StepRow> = pending
            .iter()
            .map(|row| match first_wave.steps.iter().find(|r| r.service.as_str() == row.service) {
                Some(record) if record.status == StepStatus::Running && handed_over(&row.service) => {
                    StepRow { claimed_at: Some(at), ..row_with_record(row, record) }
                }
                Some(record) => row_with_record(row, record),
                None => row.clone(),
            })
            .collect();
        let mut writes = vec![
            Write::CountStarted { client_id: run.client_id.clone(), max: max_active },
            Write::InsertRun(Box::new(run.clone())),
        ];
        writes.extend(rows.chunks(steps::ROWS_PER_INSERT).map(|group| Write::InsertSteps(group.to_vec())));
        writes.push(Write::Event(Box::new(event)));
        self.write(&run.run_id, &writes).await?;
        Ok(Loaded { run, plan, steps: rows })
    }

    /// What follows a new run's insert: its log lines, then its first wave and deadline timer
    /// on the task queue in one send (if that fails the wave is put back and the run made due,
    /// so the poller dispatches it), or, for a caller that runs the wave itself, the wave's
    /// messages handed back unsent.
    pub(in crate::engine) async fn after_insert(
        &self,
        written: &Loaded,
        first_wave: &lifecycle::Decision,
        dispatch: Dispatch,
    ) -> Result<Vec<TaskMessage>> {
        let run_id = written.run_id()?;
        log::emit(log::Event::RunStarted, &log::Line::run(&written.run.run_id));
        let inline = matches!(dispatch, Dispatch::Inline { .. });
        for record in first_wave.dispatched() {
            let service = record.service.as_str();
            let line = log::Line {
                service: Some(service),
                attempt: Some(record.attempts),
                worker: written.plan.step(service).map(|spec| spec.worker_key.as_str()),
                ..log::Line::run(&written.run.run_id)
            };
            log::emit(log::Event::StepDispatched, &line);
            if inline {
                log::emit(log::Event::StepClaimed, &line);
            }
        }
        let messages: Vec<TaskMessage> =
            first_wave.dispatched().map(|r| TaskMessage::new(run_id.clone(), r.service.clone(), r.attempts)).collect();
        // A wait of the first wave: its timeout's timer.
        let waits: Vec<TimerMessage> = lifecycle::effects(first_wave, &self.carry(self.now(), dispatch))
            .into_iter()
            .filter_map(|e| match e {
                Effect::AwaitEvent { service, attempt, until } => {
                    Some(TimerMessage::attempt(TimerKind::AttemptDeadline, run_id.clone(), service, attempt, until))
                }
                _ => None,
            })
            .collect();
        if inline {
            if let Err(e) = self.send_timers(waits).await {
                worker::console_warn!("run {run_id}: wait timers not sent ({e}); the poller keeps their timeouts");
            }
            return Ok(messages);
        }
        let mut queued: Vec<(TasksQueueMessage, u32)> = messages.into_iter().map(|m| (m.into(), 0)).collect();
        queued.extend(self.with_delays(vec![self.run_deadline_timer(written)?]));
        queued.extend(self.with_delays(waits));
        if let Err(e) = self.send_task_queue(&queued).await {
            worker::console_error!("run {run_id}: first wave not sent ({e}); leaving it to the poller");
            self.undo_dispatch(written, first_wave).await?;
        }
        Ok(Vec::new())
    }

    /// Writes a retry of the ended run `loaded` as core decided it, in one gated batch: the
    /// steps that start over, the run back to `running` for the new round, the client's quota
    /// of runs in progress (`max_active`), the round's start event. `Ok(None)`: a racing writer
    /// changed the run first. Then the round's deadline timer, and a look that dispatches what
    /// is ready.
    pub(in crate::engine) async fn write_restart(
        &self,
        loaded: &Loaded,
        restart: &Restart,
        max_active: u32,
    ) -> Result<Option<(Loaded, super::super::run::AdvanceReport)>> {
        let token = self.token();
        let mut after = restarted(loaded, restart);
        after.run.version = token;
        let mut writes = vec![Write::Gate { read: loaded.run.version, token }];
        for write in &restart.writes {
            let Some(row) = loaded.step(write.after.service.as_str()) else { continue };
            let new_row = row_with_record(row, &write.after);
            writes.push(Write::Step {
                read_status: row.status,
                read_attempts: row.attempts,
                row: Box::new(new_row.clone()),
                claim: None,
                gate: Some(token),
            });
            after.replace_step(new_row);
        }
        writes.push(Write::Restart { token, run: Box::new(after.run.clone()) });
        // The last ending's count comes out of the totals: the run is live again.
        let history = crate::d1::views::attempts_of_run(&self.db, &loaded.run.run_id).await?;
        writes.extend(taken_back(loaded, &history, token));
        writes.push(Write::CountStarted { client_id: loaded.run.client_id.clone(), max: max_active });
        let now = restart.started_at;
        let payload = RunStartedPayload::new(&loaded.plan, &loaded.run.domain, now, restart.deadline_at);
        let run_id = &loaded.run.run_id;
        let event = EventRow {
            id: baton_core::ids::EventId::from_parts(now, clock::random_bytes::<8>()?).as_str().to_string(),
            website_id: loaded.run.website_id.clone(),
            run_id: run_id.clone(),
            service: loaded.run.events_service.clone().unwrap_or_else(|| self.orchestrator_service_name()),
            kind: RUN_STATUS_EVENT_TYPE.to_string(),
            payload: serde_json::to_string(&payload).map_err(|e| Error::Internal(e.to_string()))?,
            created_at: now.as_u64() as i64,
            dedupe_key: Some(format!("run:{run_id}:start:{}", restart.round)),
        };
        writes.push(Write::EventIfVersion { event: Box::new(event), token });
        let metas = self.write(run_id, &writes).await?;
        if metas.first().is_none_or(|m| m.changes == 0) {
            return Ok(None);
        }
        log::emit(log::Event::RunStarted, &log::Line::run(run_id));
        let timer = self.run_deadline_timer(&after)?;
        if let Err(e) = self.send_timers(vec![timer]).await {
            worker::console_warn!("run {run_id}: deadline timer of the retry not sent ({e}); the poller keeps it");
        }
        let advance = self.advance(&after, Observer::EventDriven, Dispatch::Queue).await?;
        Ok(Some((after, advance)))
    }
}

/// The totals writes that take back what `loaded`'s last ending counted (`history`: its
/// attempts as read), applied only while the run carries the restart's `token`.
pub(crate) fn taken_back(loaded: &Loaded, history: &[crate::d1::views::AttemptRow], token: i64) -> Vec<Write> {
    super::totals::writes(
        &super::totals::of_run(loaded, &super::totals::ran(history), metrics::restart_totals),
        token,
        false,
    )
}

/// The run as a restart leaves it: `running` from the round's start with its deadline (also
/// when the poller looks), the last round's ending cleared, one more retry counted. The steps
/// are the caller's to replace.
pub(crate) fn restarted(loaded: &Loaded, restart: &Restart) -> Loaded {
    let mut after = loaded.clone();
    let run = &mut after.run;
    run.status = RunStatus::Running;
    run.started_at = restart.started_at.as_u64() as i64;
    run.deadline_at = restart.deadline_at.as_u64() as i64;
    run.due_at = Some(run.deadline_at);
    run.claimed_at = None;
    run.completed_at = None;
    run.partial = None;
    run.missing = None;
    run.diagnosis_event_id = None;
    run.synthesis_error = None;
    run.error = None;
    run.retries = i64::from(restart.round);
    after
}
