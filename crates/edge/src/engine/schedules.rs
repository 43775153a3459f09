//! The schedules service ([`Schedules`], reached as `engine.schedules()`): a client's runs
//! started on a cron expression or an interval — creating, reading, changing and deleting them
//! — and the poller's tick firing their due slots.
//!
//! Per due schedule, core decides ([`baton_core::schedule::due`]) which slot to fire, or to
//! skip; the claim ([`d1::schedules::claim`]) moves the schedule's `next_slot` from the value
//! read, and records the fired slot with the run id chosen for it, in one transaction that one
//! of racing ticks wins. The winner then starts the run through [`Engine::start_run`], with
//! the idempotency key `schedule:{schedule_id}:{slot}`: a fired slot whose run did not start
//! (the tick stopped in between) is started by a later tick under the same id and key, so a
//! slot never has two runs.

use baton_core::ids::RunId;
use baton_core::schedule::{self, Due, FireStatus, Missed, Timing};
use baton_core::state::RunKind;
use baton_core::time::Millis;
use serde::Serialize;

use super::run::Engine;
use super::start::NewRun;
use crate::d1::schedules::{self as rows, FireRow, ScheduleRow};
use crate::{clock, Error, Result};

/// How long a fired slot may stay `claimed` (its run not started) before a tick starts it.
/// A start takes a second or two; a minute leaves the claiming tick ample room.
const STRANDED_AFTER_MS: u64 = 60_000;

/// What one tick did about schedules.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ScheduleCounts {
    /// Slots fired (runs started, or tried).
    pub fired: u32,
    /// Slots skipped by the `skip` policy.
    pub skipped: u32,
    /// Claims another tick won.
    pub lost: u32,
    /// Fired slots whose run a later tick started.
    pub recovered: u32,
    /// Runs that could not start (the error is on the fired slot and the schedule).
    pub failed: u32,
    /// Rows read finding the due schedules.
    pub rows_read: u64,
}

/// A new schedule's id: `sch_` and the creation time and 8 random bytes.
pub fn new_schedule_id(now: Millis) -> Result<String> {
    Ok(format!("sch_{:013}_{}", now.as_u64(), hex::encode(clock::random_bytes::<8>()?)))
}

/// A stored schedule's timing and policy, as core reads them.
pub fn timing_of(row: &ScheduleRow) -> Result<(Timing, Missed)> {
    let timing = schedule::timing(row.cron.as_deref(), row.timezone.as_deref(), row.interval_seconds)
        .map_err(|e| Error::Internal(format!("schedule {}: {e}", row.schedule_id)))?;
    let missed = Missed::parse(&row.missed).unwrap_or(Missed::Skip);
    Ok((timing, missed))
}

/// The schedules service: a client's schedules, and the firing of their due slots. Reached
/// through [`Engine::schedules`]; it works with the engine's database, clock and run start.
#[derive(Clone, Copy)]
pub struct Schedules<'e> {
    engine: &'e Engine<'e>,
}

impl Engine<'_> {
    /// The schedules service, working with this engine.
    pub fn schedules(&self) -> Schedules<'_> {
        Schedules { engine: self }
    }
}

impl Schedules<'_> {
    /// Fires the due slots of at most `limit` schedules, and starts the runs of fired slots a
    /// stopped tick left behind. Every failure is counted and logged; none stops the tick.
    pub async fn fire_due(&self, limit: u32) -> Result<ScheduleCounts> {
        let mut counts = ScheduleCounts::default();
        let now = self.engine.now();
        // A slot reached within a poller period (and a minute of slack) is on time.
        let grace_ms = self.engine.config.polling_frequency_ms() + 60_000;
        let (due, meta) = rows::due(&self.engine.db, now.as_u64() as i64, limit).await?;
        counts.rows_read = meta.rows_read;
        for row in &due {
            if let Err(e) = self.fire_one(row, now, grace_ms, &mut counts).await {
                counts.failed += 1;
                worker::console_error!("schedule {}: {e}", row.schedule_id);
            }
        }
        let before = now.saturating_sub(STRANDED_AFTER_MS).as_u64() as i64;
        for fire in rows::stranded(&self.engine.db, before, limit).await? {
            let schedule = rows::by_id(&self.engine.db, &fire.schedule_id).await?;
            counts.recovered += 1;
            if !self.start_fired(schedule.as_ref(), &fire).await {
                counts.failed += 1;
            }
        }
        Ok(counts)
    }

    async fn fire_one(&self, row: &ScheduleRow, now: Millis, grace_ms: u64, counts: &mut ScheduleCounts) -> Result<()> {
        let Some(read) = row.next_slot else { return Ok(()) };
        let (timing, missed) = timing_of(row)?;
        let next_slot = Millis::new(read.max(0) as u64);
        let token = self.engine.token();
        let as_ms = |m: Option<Millis>| m.map(|m| m.as_u64() as i64);
        match schedule::due(&timing, next_slot, now, missed, grace_ms) {
            Due::NotYet => Ok(()),
            Due::Skip { latest, next_slot } => {
                let claim = rows::claim(&self.engine.db, &row.schedule_id, read, as_ms(next_slot), token, None)?;
                let won = self.engine.db.batch(claim).await?.first().is_some_and(|m| m.changes == 1);
                if won {
                    counts.skipped += 1;
                    worker::console_log!(
                        "{}",
                        serde_json::json!({ "event": "schedule_skipped", "schedule_id": row.schedule_id,
                                            "latest_missed": latest.to_rfc3339() })
                    );
                } else {
                    counts.lost += 1;
                }
                Ok(())
            }
            Due::Fire { slot, next_slot } => {
                let fire = FireRow {
                    schedule_id: row.schedule_id.clone(),
                    slot: slot.as_u64() as i64,
                    run_id: RunId::in_shard(now, clock::random_bytes::<8>()?, self.engine.shard()).as_str().to_string(),
                    status: FireStatus::Claimed,
                    error: None,
                    fired_at: now.as_u64() as i64,
                };
                let claim = rows::claim(&self.engine.db, &row.schedule_id, read, as_ms(next_slot), token, Some(&fire))?;
                let metas = self.engine.db.batch(claim).await?;
                // The slot is this tick's only if it moved the schedule and wrote the fired slot.
                if metas.iter().all(|m| m.changes == 1) {
                    counts.fired += 1;
                    if !self.start_fired(Some(row), &fire).await {
                        counts.failed += 1;
                    }
                } else {
                    counts.lost += 1;
                }
                Ok(())
            }
        }
    }

    /// Starts the run of a fired slot (the same run id and idempotency key however often this
    /// is called for it) and records how that went. Whether it started.
    async fn start_fired(&self, schedule: Option<&ScheduleRow>, fire: &FireRow) -> bool {
        let outcome = match schedule {
            Some(row) => self.start_scheduled_run(row, fire).await,
            None => Err(Error::NotFound { what: format!("schedule {}", fire.schedule_id) }),
        };
        let error = outcome.err().map(|e| {
            worker::console_warn!("schedule {}: slot {}: run not started: {e}", fire.schedule_id, fire.slot);
            e.to_string()
        });
        if let Err(e) = rows::settle_fire(&self.engine.db, fire, error.as_deref()).await {
            worker::console_error!("schedule {}: recording slot {}: {e}", fire.schedule_id, fire.slot);
        }
        error.is_none()
    }

    async fn start_scheduled_run(&self, row: &ScheduleRow, fire: &FireRow) -> Result<()> {
        let plan = self
            .engine
            .plans()
            .for_client(&row.plan_id, &row.client_id)
            .await?
            .ok_or_else(|| Error::NotFound { what: format!("plan {}", row.plan_id) })?;
        let run_id: RunId = fire.run_id.parse().map_err(|e| Error::Internal(format!("fired run id: {e}")))?;
        let parameters = serde_json::from_str(&row.parameters).unwrap_or_else(|_| serde_json::json!({}));
        let new = NewRun {
            run_id,
            kind: RunKind::Diagnostic,
            client_id: row.client_id.clone(),
            website_id: row.website_id.clone(),
            domain: row.domain.clone(),
            plan,
            parameters,
            idempotency_key: Some(format!("schedule:{}:{}", row.schedule_id, fire.slot)),
            priority: 1,
            acted_by: None,
            trace: None,
            parent: None,
        };
        self.engine.start_run(new).await.map(|_| ())
    }

    /// The fired slot that started `run_id`, if a schedule did.
    pub async fn fire_of(&self, run_id: &str) -> Result<Option<FireRow>> {
        rows::fire_of_run(&self.engine.db, run_id).await
    }
}

/// A schedule as a client writes it (a create, or a change: `None` leaves a field as it is).
#[derive(Debug, Clone, Default)]
pub struct ScheduleFields {
    /// A name for people (at most 200 characters).
    pub name: Option<String>,
    /// A cron expression (instead of `interval_seconds`).
    pub cron: Option<String>,
    /// The cron expression's time zone (IANA name).
    pub timezone: Option<String>,
    /// Seconds between slots (instead of `cron`).
    pub interval_seconds: Option<i64>,
    /// What to do with slots the poller reached late: `skip` them, or run the `latest` once.
    pub missed: Option<String>,
    /// The website the runs are for.
    pub website_id: Option<String>,
    /// The domain the runs work on.
    pub domain: Option<String>,
    /// The plan the runs follow (built-in, or the client's own).
    pub plan_id: Option<String>,
    /// A JSON object, serialised.
    pub parameters: Option<String>,
    /// Whether the schedule is paused (no slot fires).
    pub paused: Option<bool>,
}

/// A schedule, and its next slots.
#[derive(Debug, Clone)]
pub struct ScheduleView {
    /// The stored schedule.
    pub row: ScheduleRow,
    /// The next [`schedule::UPCOMING`] slots from now (none while paused).
    pub upcoming: Vec<Millis>,
}

fn bad(e: &schedule::ScheduleError) -> Error {
    Error::bad_request(e.code(), e.field(), e.to_string())
}

impl Schedules<'_> {
    /// Creates a schedule for `client_id` (every field checked, each problem naming its
    /// field); its first slot is the first after now.
    pub async fn create(&self, client_id: &str, fields: ScheduleFields) -> Result<ScheduleView> {
        let now = self.engine.now();
        let empty = ScheduleRow {
            schedule_id: new_schedule_id(now)?,
            client_id: client_id.to_string(),
            name: None,
            cron: None,
            timezone: None,
            interval_seconds: None,
            missed: Missed::Skip.as_str().to_string(),
            website_id: String::new(),
            domain: String::new(),
            plan_id: baton_core::plan::DEFAULT_PLAN_ID.to_string(),
            parameters: "{}".to_string(),
            paused: 0,
            next_slot: None,
            fire_token: None,
            last_slot: None,
            last_run_id: None,
            last_error: None,
            created_at: now.as_u64() as i64,
            updated_at: now.as_u64() as i64,
        };
        let (row, _) = self.merged(empty, fields, true, now).await?;
        rows::insert(&self.engine.db, &row).await?;
        Ok(self.view(row, now))
    }

    /// Changes one of `client_id`'s schedules. A new timing, or a resume, starts again from the
    /// first slot after now (slots that passed while paused are not run).
    pub async fn update(&self, client_id: &str, schedule_id: &str, fields: ScheduleFields) -> Result<ScheduleView> {
        let now = self.engine.now();
        let existing = self.visible_schedule(client_id, schedule_id).await?;
        let (row, reset_next) = self.merged(existing, fields, false, now).await?;
        if rows::update(&self.engine.db, &row, reset_next).await?.changes == 0 {
            return Err(Error::NotFound { what: format!("schedule {schedule_id}") });
        }
        let stored = rows::get(&self.engine.db, client_id, schedule_id).await?.unwrap_or(row);
        Ok(self.view(stored, now))
    }

    /// One of `client_id`'s schedules (another client's is 404).
    pub async fn get(&self, client_id: &str, schedule_id: &str) -> Result<ScheduleView> {
        let row = self.visible_schedule(client_id, schedule_id).await?;
        Ok(self.view(row, self.engine.now()))
    }

    /// A page of `client_id`'s schedules (oldest first) after the schedule id `after`.
    pub async fn list(&self, client_id: &str, after: Option<&str>, limit: u32) -> Result<Vec<ScheduleView>> {
        let now = self.engine.now();
        Ok(rows::page(&self.engine.db, client_id, after, limit)
            .await?
            .into_iter()
            .map(|row| self.view(row, now))
            .collect())
    }

    /// Deletes one of `client_id`'s schedules; 404 if there is none.
    pub async fn delete(&self, client_id: &str, schedule_id: &str) -> Result<()> {
        match rows::delete(&self.engine.db, client_id, schedule_id).await?.changes {
            0 => Err(Error::NotFound { what: format!("schedule {schedule_id}") }),
            _ => Ok(()),
        }
    }

    async fn visible_schedule(&self, client_id: &str, schedule_id: &str) -> Result<ScheduleRow> {
        rows::get(&self.engine.db, client_id, schedule_id)
            .await?
            .ok_or_else(|| Error::NotFound { what: format!("schedule {schedule_id}") })
    }

    fn view(&self, row: ScheduleRow, now: Millis) -> ScheduleView {
        let upcoming = match (row.paused, timing_of(&row)) {
            (0, Ok((timing, _))) => {
                // From the next unhandled slot, if it is still ahead.
                let from = row.next_slot.map(|n| Millis::new(n.max(0) as u64).saturating_sub(1)).filter(|f| *f > now);
                timing.upcoming(from.unwrap_or(now), schedule::UPCOMING)
            }
            _ => Vec::new(),
        };
        ScheduleView { row, upcoming }
    }

    /// `row` with `fields` applied and checked; and whether its next slot starts again.
    async fn merged(
        &self,
        mut row: ScheduleRow,
        fields: ScheduleFields,
        creating: bool,
        now: Millis,
    ) -> Result<(ScheduleRow, bool)> {
        let timing_changed = fields.cron.is_some() || fields.interval_seconds.is_some() || fields.timezone.is_some();
        let fields_interval = fields.interval_seconds;
        if fields.cron.is_some() {
            row.interval_seconds = None;
        }
        if fields.interval_seconds.is_some() {
            row.cron = None;
            row.timezone = None;
        }
        row.cron = fields.cron.or(row.cron);
        row.timezone = fields.timezone.or(row.timezone);
        row.interval_seconds = fields.interval_seconds.or(row.interval_seconds);
        let timing =
            schedule::timing(row.cron.as_deref(), row.timezone.as_deref(), row.interval_seconds).map_err(|e| {
                match e {
                    // A time zone alone, for a schedule that stays on its interval: the change is
                    // well formed but conflicts with the schedule as it is.
                    schedule::ScheduleError::TimezoneWithInterval if !creating && fields_interval.is_none() => {
                        Error::Conflict(format!(
                            "{e}: this schedule runs every {} s; give `cron` too",
                            row.interval_seconds.unwrap_or_default()
                        ))
                    }
                    e => bad(&e),
                }
            })?;
        if let Timing::Cron { .. } = timing {
            row.timezone = Some(row.timezone.unwrap_or_else(|| schedule::DEFAULT_TIMEZONE.to_string()));
        }
        if let Some(missed) = fields.missed {
            row.missed = schedule::missed_policy(Some(&missed)).map_err(|e| bad(&e))?.as_str().to_string();
        }
        row.name = fields.name.or(row.name);
        if row.name.as_ref().is_some_and(|n| n.chars().count() > 200) {
            return Err(Error::bad_request("too_long", "name", "`name` is longer than 200 characters"));
        }
        let draft = baton_core::request::RunRequestDraft {
            website_id: fields.website_id.unwrap_or(row.website_id),
            domain: fields.domain.unwrap_or(row.domain),
            plan_id: Some(fields.plan_id.unwrap_or(row.plan_id)),
            idempotency_key: None,
        };
        let request = baton_core::request::validate_run_request(&draft).map_err(|problems| {
            let list: Vec<serde_json::Value> = problems
                .0
                .iter()
                .map(|p| serde_json::json!({ "field": p.field(), "code": p.code(), "message": p.to_string() }))
                .collect();
            let field = problems.0.first().map(|p| p.field()).unwrap_or("body");
            Error::BadRequest {
                code: "invalid_request",
                message: problems.to_string(),
                details: serde_json::json!({ "field": field, "problems": list }),
            }
        })?;
        row.website_id = request.website_id.as_str().to_string();
        row.domain = request.domain;
        row.plan_id = request.plan_id.as_str().to_string();
        if self.engine.plans().for_client(&row.plan_id, &row.client_id).await?.is_none() {
            return Err(Error::BadRequest {
                code: "unknown_plan",
                message: format!("no plan named {:?} (built-in, or one you created)", row.plan_id),
                details: serde_json::json!({ "field": "plan_id" }),
            });
        }
        row.parameters = fields.parameters.unwrap_or(row.parameters);
        let was_paused = row.paused != 0;
        if let Some(paused) = fields.paused {
            row.paused = i64::from(paused);
        }
        let resumed = was_paused && row.paused == 0;
        let reset_next = creating || timing_changed || resumed;
        if reset_next {
            row.next_slot = timing.next_after(now).map(|m| m.as_u64() as i64);
        }
        row.updated_at = now.as_u64() as i64;
        Ok((row, reset_next))
    }
}
