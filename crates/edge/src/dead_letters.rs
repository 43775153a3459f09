//! Dead-lettered messages their consumer could not handle: every failed delivery is counted in
//! D1 before the message is retried, and a message given up stays there (table `dead_letters`).
//! The queue's own retry count is not readable from Rust, so D1 keeps the count.

use crate::d1::{dead_letters, Db};
use crate::Result;

pub use crate::d1::dead_letters::{Failure, Recorded};

/// Counts a failed delivery in `db` (the shard of the run or delivery the message is about);
/// once `give_up_after` is reached the row is marked given up.
pub async fn record_failure(db: &Db, failure: &Failure<'_>, give_up_after: u32) -> Result<Recorded> {
    dead_letters::record_failure(db, failure, give_up_after).await
}

/// Forgets a message handled after all (nothing happens when it never failed).
pub async fn forget(db: &Db, queue: &str, message_id: &str) -> Result<()> {
    dead_letters::forget(db, queue, message_id).await
}
