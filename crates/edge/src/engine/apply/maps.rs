//! What the interpreter reads and writes for map steps ([`baton_core::map`]): the length of a
//! ready map step's list (for core to expand it), its items' rows, and its output once it
//! completes — every item's output in order, so its dependents, the diagnosis and the run's
//! views read one list as any step's output.

use std::collections::BTreeMap;

use baton_core::ids::ServiceSlug;
use baton_core::map;
use baton_core::state::{StepRecord, StepStatus};
use serde_json::{json, Value};

use super::super::run::{Loaded, Report};
use crate::d1::steps::StepRow;

/// The output of step `service` as the decision sees it: reported now, else as read.
fn output_of(loaded: &Loaded, reported: &[(&str, &Report)], service: &str) -> Option<Value> {
    let now = reported.iter().find(|(s, _)| *s == service).and_then(|(_, report)| match report {
        Report::Succeeded { output, .. } => Some(output.clone()),
        Report::Failed(_) => None,
    });
    now.or_else(|| {
        let row = loaded.step(service).filter(|row| row.status == StepStatus::Completed)?;
        serde_json::from_str(row.output.as_deref()?).ok()
    })
}

/// For each map step that has not started, how many items its list has (or why none), from
/// its upstream step's output: read or `reported` in this decision. Nothing for a plan
/// without map steps.
pub(crate) fn sizes(loaded: &Loaded, reported: &[(&str, &Report)]) -> Vec<(ServiceSlug, Result<u32, String>)> {
    loaded
        .plan
        .steps()
        .iter()
        .filter(|spec| loaded.step(spec.service.as_str()).is_none_or(|row| row.status == StepStatus::Pending))
        .filter_map(|spec| {
            let map = spec.map.as_ref()?;
            let output = output_of(loaded, reported, map.from.as_str())?;
            Some((spec.service.clone(), map::size(map, &output)))
        })
        .collect()
}

/// The rows of the items a decision creates, `pending`, at their map step's position and wave.
pub(crate) fn created_rows(loaded: &Loaded, created: &[StepRecord]) -> Vec<StepRow> {
    created
        .iter()
        .filter_map(|item| {
            let (step, _) = map::item_of(item.service.as_str())?;
            let position = loaded.plan.position(step)?;
            Some(StepRow::pending(
                &loaded.run.run_id,
                item.service.as_str(),
                position as i64,
                i64::from(loaded.plan.waves()[position]),
            ))
        })
        .collect()
}

/// The items a decision creates, as one insert per map step: (step, position, wave, items
/// `0..count`; those there already are kept).
pub(crate) fn item_ranges(loaded: &Loaded, created: &[StepRecord]) -> Vec<(String, i64, i64, u32)> {
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    for item in created {
        if let Some((step, index)) = map::item_of(item.service.as_str()) {
            let count = counts.entry(step).or_default();
            *count = (*count).max(index + 1);
        }
    }
    counts
        .into_iter()
        .filter_map(|(step, count)| {
            let position = loaded.plan.position(step)?;
            Some((step.to_string(), position as i64, i64::from(loaded.plan.waves()[position]), count))
        })
        .collect()
}

/// The largest output a map step collects, as JSON: over it, the step's output says how large
/// the list was instead (`{"omitted": true, "items", "bytes"}`; each item keeps its own), so
/// the row that completes the map stays well within what one D1 row and statement hold.
pub(crate) const MAX_COLLECTED_BYTES: usize = 512 * 1024;

/// A map step's output when `record` completes it: its items' outputs in order, as `after`
/// holds them (this decision's own reports included), or what stands for a list over
/// [`MAX_COLLECTED_BYTES`]. `None` for any other write.
pub(crate) fn collected(after: &Loaded, record: &StepRecord) -> Option<Value> {
    let spec = after.plan.steps().iter().find(|s| s.service == record.service)?;
    if !spec.is_map() || record.status != StepStatus::Completed {
        return None;
    }
    let mut items: Vec<(u32, Option<Value>)> = after
        .steps
        .iter()
        .filter_map(|row| {
            let (step, index) = map::item_of(&row.service)?;
            (step == spec.service.as_str()).then_some(())?;
            let output = (row.status == StepStatus::Completed)
                .then(|| row.output.as_deref().and_then(|o| serde_json::from_str(o).ok()))
                .flatten();
            Some((index, output))
        })
        .collect();
    items.sort_by_key(|(index, _)| *index);
    let count = items.len();
    let list = map::collect(items.into_iter().map(|(_, output)| output));
    let bytes = list.to_string().len();
    Some(if bytes > MAX_COLLECTED_BYTES { json!({"omitted": true, "items": count, "bytes": bytes}) } else { list })
}

/// The element item `service` is called with, and its index (`None` if it is no item).
pub(crate) fn element(loaded: &Loaded, service: &str) -> Option<(Value, u32)> {
    let (step, index) = map::item_of(service)?;
    let spec = loaded.plan.step(step)?.map.as_ref()?;
    let output = output_of(loaded, &[], spec.from.as_str())?;
    let list = map::list(spec, &output).ok()?;
    Some((list.get(index as usize)?.clone(), index))
}
