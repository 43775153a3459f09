//! `rate_limit_windows`: requests per client per fixed window, where `RATE_LIMITS` is counted
//! without the platform's rate-limiting binding.

use super::{Arg, Db};
use crate::{Error, Result};

/// Counts one request of `client_id` in the window starting at `window_start` and returns how
/// many it has made in that window, this one included. One transaction: the client's earlier
/// windows are deleted, then the count is incremented (a client holds at most one row).
pub async fn count_request(db: &Db, client_id: &str, window_start: i64) -> Result<u64> {
    let client = Arg::from(client_id);
    let window = Arg::Int(window_start);
    let results = db
        .batch_rows(vec![
            db.stmt(
                "DELETE FROM rate_limit_windows WHERE client_id = ?1 AND window_start < ?2",
                &[client.clone(), window.clone()],
            )?,
            db.stmt(
                "INSERT INTO rate_limit_windows (client_id, window_start, count) VALUES (?1, ?2, 1) \
                 ON CONFLICT (client_id, window_start) DO UPDATE SET count = count + 1 RETURNING count",
                &[client, window],
            )?,
        ])
        .await?;
    results
        .get(1)
        .and_then(|(rows, _)| rows.first())
        .and_then(|row| row["count"].as_u64())
        .ok_or_else(|| Error::Storage("rate_limit_windows: the count returned no row".into()))
}
