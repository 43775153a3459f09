//! A run's map items within one decision ([`crate::map`]): read beside the plan's own steps,
//! changed by the same events (a report on an item, a cancel, a look), and written as step
//! writes of their own. An item follows its map step's spec; the map step calls nothing: it
//! is expanded into items once its list is known, runs while they do, and ends when they have
//! all ended (or can no longer reach its `min_completed`).

use crate::failure::{ErrorKind, StepError};
use crate::ids::ServiceSlug;
use crate::map::{self, MapSpec};
use crate::plan::{Plan, StepSpec};
use crate::retry::RandomSource;
use crate::state::{apply, StepEvent, StepOutcome, StepRecord, StepStatus};
use crate::time::Millis;

use super::{Cause, Observer, Report, ReportOutcome, Rules, StepWrite};

/// One item as the decision goes.
#[derive(Debug, Clone)]
struct Item {
    /// Its map step's position in the plan.
    map: usize,
    /// Its index in the list.
    index: u32,
    /// As read (`None`: created by this decision).
    read: Option<StepRecord>,
    /// As it is now.
    now: StepRecord,
    /// Why it changed, if it did.
    cause: Option<Cause>,
}

/// The items of a run's map steps, by map step and index.
#[derive(Debug, Clone, Default)]
pub(super) struct Items {
    items: Vec<Item>,
    /// A map step ended as it was expanded (an empty list, or none): its dependents are
    /// looked at again.
    ended_at_once: bool,
}

/// The items' part of a decision.
pub(super) struct ItemWrites {
    /// Their writes (a created item that is dispatched at once is written from `pending`).
    pub writes: Vec<StepWrite>,
    /// Items created by the decision: their rows are inserted, `pending`, before the writes.
    pub created: Vec<StepRecord>,
    /// Every item after the decision.
    pub records: Vec<StepRecord>,
}

impl Items {
    /// The records among `steps` that are items of `plan`'s map steps.
    pub fn of(plan: &Plan, steps: &[StepRecord]) -> Self {
        let mut items: Vec<Item> = steps
            .iter()
            .filter_map(|record| {
                let (step, index) = map::item_of(record.service.as_str())?;
                let position = plan.position(step).filter(|&p| plan.steps()[p].is_map())?;
                Some(Item { map: position, index, read: Some(record.clone()), now: record.clone(), cause: None })
            })
            .collect();
        items.sort_by_key(|i| (i.map, i.index));
        Items { items, ended_at_once: false }
    }

    /// Whether a map step ended as it was expanded since this was last asked.
    pub fn take_ended(&mut self) -> bool {
        std::mem::take(&mut self.ended_at_once)
    }

    fn of_map(&self, map: usize) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(move |i| i.map == map)
    }

    /// Records a report on `service` if it is an item (`None`: it is not one).
    pub fn record_report(
        &mut self,
        plan: &Plan,
        service: &ServiceSlug,
        attempt: Option<u32>,
        report: &Report,
        now: Millis,
        rng: &mut dyn RandomSource,
    ) -> Option<ReportOutcome> {
        let spec = plan.step(service.as_str()).filter(|_| map::item_of(service.as_str()).is_some())?;
        let Some(item) = self.items.iter_mut().find(|i| i.now.service == *service) else {
            return Some(ReportOutcome::NotFound);
        };
        if item.now.status.is_terminal() {
            return Some(ReportOutcome::AlreadyTerminal);
        }
        if attempt.is_some_and(|a| a != item.now.attempts) {
            return Some(ReportOutcome::Stale);
        }
        let event = match report {
            Report::Succeeded => StepEvent::Succeeded,
            Report::Failed(error) => StepEvent::Failed { error: error.clone() },
        };
        Some(match apply(&item.now, event, now, spec, rng) {
            Ok(StepOutcome::Applied(next)) => {
                item.now = next.clone();
                item.cause = Some(Cause::Reported);
                ReportOutcome::Recorded(next)
            }
            Ok(StepOutcome::AlreadyTerminal) => ReportOutcome::AlreadyTerminal,
            Err(_) => ReportOutcome::Stale,
        })
    }

    /// Ends every open item with `event` (a cancel, the run's deadline), with `cause`.
    fn end_open(&mut self, plan: &Plan, which: impl Fn(&Item) -> bool, event: StepEvent, cause: Cause, now: Millis) {
        let mut rng = crate::retry::SplitMix64::new(0); // ending draws no backoff
        for item in self.items.iter_mut().filter(|i| !i.now.status.is_terminal() && which(i)) {
            if let Ok(StepOutcome::Applied(next)) =
                apply(&item.now, event.clone(), now, &plan.steps()[item.map], &mut rng)
            {
                item.now = next;
                item.cause = Some(cause);
            }
        }
    }

    /// A cancelled run's open items, cancelled.
    pub fn cancel(&mut self, plan: &Plan, now: Millis) {
        self.end_open(plan, |_| true, StepEvent::Cancelled, Cause::Cancelled, now);
    }

    /// Running items whose attempt has expired: retried by their policy, or timed out.
    pub fn settle(&mut self, plan: &Plan, now: Millis, rng: &mut dyn RandomSource) {
        for item in &mut self.items {
            let spec = &plan.steps()[item.map];
            if item.now.expires_at(spec).is_none_or(|at| at > now) {
                continue;
            }
            if let Ok(StepOutcome::Applied(next)) = apply(&item.now, StepEvent::AttemptTimedOut, now, spec, rng) {
                item.now = next;
                item.cause.get_or_insert(Cause::Settled);
            }
        }
    }

    /// The open items of map steps that have ended without completing (at the run's
    /// deadline, by its threshold, cancelled): timed out with a timed-out map, else cancelled.
    pub fn end_with_maps(&mut self, plan: &Plan, records: &[StepRecord], now: Millis) {
        for (position, record) in records.iter().enumerate() {
            if !record.status.is_missing() || !plan.steps()[position].is_map() {
                continue;
            }
            let event = if record.status == StepStatus::Timeout { StepEvent::TimedOut } else { StepEvent::Cancelled };
            let cause = if record.status == StepStatus::Cancelled { Cause::Cancelled } else { Cause::Settled };
            self.end_open(plan, |i| i.map == position, event, cause, now);
        }
    }

    /// Ends each running map step whose items have all ended — `completed` when enough
    /// completed — or that can no longer reach its `min_completed` (its open items are
    /// cancelled). Whether any ended.
    pub fn end_maps(
        &mut self,
        plan: &Plan,
        records: &mut [StepRecord],
        causes: &mut [Option<Cause>],
        now: Millis,
        rng: &mut dyn RandomSource,
    ) -> bool {
        let mut ended = false;
        for (position, spec) in plan.steps().iter().enumerate() {
            let Some(map) = &spec.map else { continue };
            if records[position].status != StepStatus::Running {
                continue;
            }
            let total = self.of_map(position).count();
            let completed = self.of_map(position).filter(|i| i.now.status == StepStatus::Completed).count() as u32;
            let open = self.of_map(position).filter(|i| !i.now.status.is_terminal()).count() as u32;
            let needed = map.needed(total);
            let event = if open == 0 && completed >= needed {
                StepEvent::Succeeded
            } else if completed + open < needed {
                let message = format!("{completed} of {total} items completed, {needed} needed (min_completed)");
                StepEvent::Failed { error: StepError::new(ErrorKind::Permanent, message) }
            } else {
                continue;
            };
            if let Ok(StepOutcome::Applied(next)) = apply(&records[position], event, now, spec, rng) {
                records[position] = next;
                causes[position] = Some(Cause::Settled);
                ended = true;
            }
            if records[position].status.is_missing() {
                self.end_open(plan, |i| i.map == position, StepEvent::Cancelled, Cause::Cancelled, now);
            }
        }
        ended
    }

    /// Starts map step `position`, now ready, over `size` (its list's length, or why there is
    /// no list): it runs with one `pending` item per element (those a retried run kept stay as
    /// they are); with no element it completes at once, and without a list it fails.
    pub fn expand(
        &mut self,
        spec: &StepSpec,
        position: usize,
        record: &StepRecord,
        size: Option<&Result<u32, String>>,
        now: Millis,
        rng: &mut dyn RandomSource,
    ) -> Option<(StepRecord, Cause)> {
        let Ok(StepOutcome::Applied(mut started)) = apply(record, StepEvent::Dispatched, now, spec, rng) else {
            return None;
        };
        let mut ended =
            |started: &StepRecord, event, rng: &mut dyn RandomSource| match apply(started, event, now, spec, rng) {
                Ok(StepOutcome::Applied(next)) => {
                    self.ended_at_once = true;
                    Some((next, Cause::Settled))
                }
                _ => None,
            };
        let failed = |why: String| StepEvent::Failed { error: StepError::new(ErrorKind::Permanent, why) };
        match size {
            None => {
                let why = format!("for_each {}: the list is not available", spec.map.as_ref()?.for_each());
                ended(&started, failed(why), rng)
            }
            Some(Err(why)) => ended(&started, failed(why.clone()), rng),
            Some(Ok(0)) => ended(&started, StepEvent::Succeeded, rng),
            Some(&Ok(size)) => {
                // A map step has no attempt timeout of its own: its items have theirs, and the
                // run's deadline bounds it.
                started.deadline_at = None;
                for index in 0..size {
                    if !self.of_map(position).any(|i| i.index == index) {
                        let now = StepRecord::pending(map::item_slug(&spec.service, index));
                        self.items.push(Item { map: position, index, read: None, now, cause: None });
                    }
                }
                self.items.sort_by_key(|i| (i.map, i.index));
                Some((started, Cause::Expanded))
            }
        }
    }

    /// Dispatches the items of running map steps, in order, while fewer than `max_parallel` of
    /// a step's items run or back off; a backing-off item only when its own message is lost
    /// (the poller, past the grace period) or its run was just resumed. Whether any was.
    pub fn dispatch(
        &mut self,
        plan: &Plan,
        records: &[StepRecord],
        rules: &Rules,
        resumed: bool,
        rng: &mut dyn RandomSource,
    ) -> bool {
        let mut dispatched = false;
        for (position, spec) in plan.steps().iter().enumerate() {
            let Some(MapSpec { max_parallel, .. }) = &spec.map else { continue };
            if records[position].status != StepStatus::Running {
                continue;
            }
            let in_flight = |items: &Items| {
                items
                    .of_map(position)
                    .filter(|i| matches!(i.now.status, StepStatus::Running | StepStatus::Retrying))
                    .count() as u32
            };
            for item in self.items.iter_mut().filter(|i| i.map == position && i.now.status == StepStatus::Retrying) {
                let overdue =
                    item.now.next_attempt_at.is_none_or(|at| at.saturating_add(rules.retry_grace_ms) <= rules.now);
                let ended = item.now.next_attempt_at.is_none_or(|at| at <= rules.now);
                if (rules.observer == Observer::Poller && overdue) || (resumed && ended) {
                    if let Ok(StepOutcome::Applied(next)) =
                        apply(&item.now, StepEvent::Dispatched, rules.now, spec, rng)
                    {
                        item.now = next;
                        item.cause = Some(Cause::Dispatched);
                        dispatched = true;
                    }
                }
            }
            let mut free = max_parallel.saturating_sub(in_flight(self));
            for item in self.items.iter_mut().filter(|i| i.map == position && i.now.status == StepStatus::Pending) {
                if free == 0 {
                    break;
                }
                if let Ok(StepOutcome::Applied(next)) = apply(&item.now, StepEvent::Dispatched, rules.now, spec, rng) {
                    item.now = next;
                    item.cause = Some(Cause::Dispatched);
                    dispatched = true;
                    free -= 1;
                }
            }
        }
        dispatched
    }

    /// The items' writes, the rows to create and every item as the decision leaves it.
    pub fn finish(self) -> ItemWrites {
        let mut out = ItemWrites { writes: Vec::new(), created: Vec::new(), records: Vec::new() };
        for item in self.items {
            let before = match item.read {
                Some(read) => read,
                None => {
                    let pending = StepRecord::pending(item.now.service.clone());
                    out.created.push(pending.clone());
                    pending
                }
            };
            if before != item.now {
                out.writes.push(StepWrite {
                    before,
                    after: item.now.clone(),
                    cause: item.cause.unwrap_or(Cause::Settled),
                });
            }
            out.records.push(item.now);
        }
        out
    }
}
