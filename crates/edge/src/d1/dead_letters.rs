//! `dead_letters`: dead-lettered messages their consumer could not handle (see the migration).

use super::{Arg, Db, Stmt};
use crate::Result;

/// One failed delivery of a dead-lettered message.
pub struct Failure<'a> {
    /// The queue's name as the consumer knows it (`baton-tasks-dlq`, `llm-analysis-dlq`).
    pub queue: &'a str,
    /// The queue's id of the message: the same on every delivery.
    pub message_id: &'a str,
    /// The body as JSON text (cut to [`MAX_BODY_BYTES`]).
    pub body: &'a str,
    /// Why this delivery failed.
    pub error: &'a str,
    /// When.
    pub at: i64,
}

/// Bodies longer than this are cut: one D1 statement may carry at most 100 KB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What [`record_failure`] left in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct Recorded {
    /// Failed deliveries so far, this one included.
    pub failures: u32,
    /// When the message was given up, if it has been.
    pub given_up_at: Option<i64>,
}

/// Counts a failed delivery. The row is marked given up once `failures` reaches
/// `give_up_after`; the caller then acknowledges the message.
pub async fn record_failure(db: &Db, failure: &Failure<'_>, give_up_after: u32) -> Result<Recorded> {
    let row = db
        .first::<Recorded>(
            "INSERT INTO dead_letters \
             (queue, message_id, body, error, failures, first_failed_at, last_failed_at, given_up_at) \
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5, CASE WHEN 1 >= ?6 THEN ?5 END) \
             ON CONFLICT (queue, message_id) DO UPDATE SET error = excluded.error, failures = failures + 1, \
             last_failed_at = excluded.last_failed_at, \
             given_up_at = COALESCE(given_up_at, CASE WHEN failures + 1 >= ?6 THEN excluded.last_failed_at END) \
             RETURNING failures, given_up_at",
            &[
                Arg::from(failure.queue),
                Arg::from(failure.message_id),
                Arg::from(cut(failure.body, MAX_BODY_BYTES)),
                Arg::from(failure.error),
                Arg::Int(failure.at),
                Arg::from(give_up_after),
            ],
        )
        .await?;
    row.ok_or_else(|| crate::Error::Storage("dead_letters: the insert returned no row".into()))
}

/// Forgets a message that was handled after all (no row: nothing happens).
pub async fn forget(db: &Db, queue: &str, message_id: &str) -> Result<()> {
    db.run("DELETE FROM dead_letters WHERE queue = ?1 AND message_id = ?2", &[Arg::from(queue), Arg::from(message_id)])
        .await?;
    Ok(())
}

/// Deletes up to `limit` dead letters given up on before `before` (index
/// `dead_letters_given_up`).
pub fn prune_given_up(db: &Db, before: i64, limit: u32) -> Result<Stmt> {
    db.stmt(
        "DELETE FROM dead_letters WHERE rowid IN (SELECT rowid FROM dead_letters \
         WHERE given_up_at IS NOT NULL AND given_up_at < ?1 ORDER BY given_up_at LIMIT ?2)",
        &[Arg::Int(before), Arg::from(limit)],
    )
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn a_cut_body_ends_on_a_character_boundary() {
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(cut("abc", 2), "ab");
        assert_eq!(cut("aé", 2), "a");
    }
}
