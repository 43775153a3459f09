//! Conversions between D1 step rows and core step records.

use baton_core::ids::ServiceSlug;
use baton_core::state::{ErrorKind, StepRecord, StepStatus};
use baton_core::time::Millis;

use crate::d1::steps::StepRow;
use crate::{Error, Result};

fn millis(v: Option<i64>) -> Option<Millis> {
    v.map(|ms| Millis::new(ms.max(0) as u64))
}

fn int(v: Option<Millis>) -> Option<i64> {
    v.map(|m| m.as_u64() as i64)
}

/// The core record held in a step row.
pub fn record_of(row: &StepRow) -> Result<StepRecord> {
    let corrupt = |what: String| Error::Storage(format!("step {}/{}: {what}", row.run_id, row.service));
    Ok(StepRecord {
        service: row.service.parse::<ServiceSlug>().map_err(|e| corrupt(e.to_string()))?,
        status: row.status.parse::<StepStatus>().map_err(|e| corrupt(e.to_string()))?,
        attempts: row.attempts.max(0) as u32,
        started_at: millis(row.started_at),
        finished_at: millis(row.finished_at),
        deadline_at: millis(row.deadline_at),
        next_attempt_at: millis(row.next_attempt_at),
        error: row.error.clone(),
        error_kind: row.error_kind.as_deref().map(ErrorKind::from),
    })
}

/// `row` with the scheduling columns of `record` (payload columns are kept).
pub fn row_with_record(row: &StepRow, record: &StepRecord) -> StepRow {
    StepRow {
        status: record.status.as_str().to_string(),
        attempts: i64::from(record.attempts),
        started_at: int(record.started_at),
        finished_at: int(record.finished_at),
        deadline_at: int(record.deadline_at),
        next_attempt_at: int(record.next_attempt_at),
        duration_ms: record.duration_ms().map(|d| d as i64).or(row.duration_ms),
        error: record.error.clone(),
        error_kind: record.error_kind.as_ref().map(|k| k.as_str().to_string()),
        ..row.clone()
    }
}
