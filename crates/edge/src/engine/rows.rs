//! Conversions between D1 step rows and core step records.

use baton_core::ids::ServiceSlug;
use baton_core::state::{ErrorKind, StepRecord};
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
        status: row.status,
        attempts: row.attempts.max(0) as u32,
        started_at: millis(row.started_at),
        finished_at: millis(row.finished_at),
        deadline_at: millis(row.deadline_at),
        next_attempt_at: millis(row.next_attempt_at),
        heartbeat_at: millis(row.heartbeat_at),
        attempt_base: row.attempt_base.max(0) as u32,
        error: row.error.clone(),
        error_kind: row.error_kind.as_deref().map(ErrorKind::from),
    })
}

/// `row` with the scheduling columns of `record` (payload columns are kept).
pub fn row_with_record(row: &StepRow, record: &StepRecord) -> StepRow {
    StepRow {
        status: record.status,
        attempts: i64::from(record.attempts),
        started_at: int(record.started_at),
        finished_at: int(record.finished_at),
        deadline_at: int(record.deadline_at),
        next_attempt_at: int(record.next_attempt_at),
        heartbeat_at: int(record.heartbeat_at),
        attempt_base: i64::from(record.attempt_base),
        duration_ms: record.duration_ms().map(|d| d as i64).or(row.duration_ms),
        error: record.error.clone(),
        error_kind: record.error_kind.as_ref().map(|k| k.as_str().to_string()),
        ..row.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::state::StepStatus;

    fn row(status: StepStatus) -> StepRow {
        StepRow {
            run_id: "run_1795000000000_0123456789abcdef".into(),
            service: "technical-seo".into(),
            position: 1,
            wave: 1,
            status,
            attempts: 2,
            started_at: Some(1_000),
            claimed_at: Some(1_500),
            finished_at: None,
            deadline_at: Some(61_000),
            next_attempt_at: None,
            duration_ms: None,
            error: Some("503".into()),
            error_kind: Some("transient".into()),
            output: Some("{\"a\":1}".into()),
            usage: None,
            progress: None,
            heartbeat_at: None,
            attempt_base: 0,
        }
    }

    #[test]
    fn a_row_round_trips_through_its_record_keeping_payload_columns() {
        let original = row(StepStatus::Running);
        let record = record_of(&original).expect("a valid row");
        assert_eq!(record.status, StepStatus::Running);
        assert_eq!(record.attempts, 2);
        assert_eq!(record.error_kind, Some(ErrorKind::Transient));
        assert_eq!(row_with_record(&original, &record), original);
    }

    #[test]
    fn a_finished_record_sets_its_duration() {
        let original = row(StepStatus::Running);
        let mut record = record_of(&original).expect("a valid row");
        record.status = StepStatus::Completed;
        record.finished_at = Some(Millis::new(4_000));
        let updated = row_with_record(&original, &record);
        assert_eq!((updated.status, updated.duration_ms), (StepStatus::Completed, Some(3_000)));
        assert_eq!(updated.output, original.output, "payload columns are kept");
    }

    #[test]
    fn a_corrupt_row_is_a_storage_error_naming_the_step() {
        let corrupt = StepRow { service: "Not A Slug".into(), ..row(StepStatus::Running) };
        let error = record_of(&corrupt).expect_err("an invalid slug");
        assert!(error.to_string().contains("Not A Slug"), "{error}");
    }
}
