//! `custom_plans`: plans clients created, per client.

use baton_core::plan::Plan;
use serde::Deserialize;

use super::{Arg, Db};
use crate::{Error, Result};

#[derive(Deserialize)]
struct Row {
    plan_id: String,
    plan_json: String,
}

fn decode(row: Row) -> Result<Plan> {
    serde_json::from_str(&row.plan_json).map_err(|e| Error::Storage(format!("custom plan {}: {e}", row.plan_id)))
}

/// A client's custom plan by id.
pub async fn get(db: &Db, plan_id: &str, client_id: &str) -> Result<Option<Plan>> {
    let row = db
        .first::<Row>(
            "SELECT plan_id, plan_json FROM custom_plans WHERE client_id = ?1 AND plan_id = ?2",
            &[Arg::from(client_id), Arg::from(plan_id)],
        )
        .await?;
    row.map(decode).transpose()
}

/// A page of a client's custom plans, oldest first: at most `limit` after the first `offset`.
pub async fn of_client(db: &Db, client_id: &str, offset: u32, limit: u32) -> Result<Vec<Plan>> {
    let (rows, _) = db
        .all::<Row>(
            "SELECT plan_id, plan_json FROM custom_plans WHERE client_id = ?1 ORDER BY created_at, plan_id \
             LIMIT ?2 OFFSET ?3",
            &[Arg::from(client_id), Arg::from(limit), Arg::from(offset)],
        )
        .await?;
    rows.into_iter().map(decode).collect()
}

/// Stores a client's plan while it holds fewer than `max` (one statement: two racing creates
/// cannot both pass the quota); `false` when the client already has a plan with this id or is
/// at its quota.
pub async fn insert(db: &Db, client_id: &str, plan: &Plan, now: i64, max: u32) -> Result<bool> {
    let plan_json = serde_json::to_string(plan).map_err(|e| Error::Internal(e.to_string()))?;
    let meta = db
        .run(
            "INSERT INTO custom_plans (client_id, plan_id, plan_json, created_at) SELECT ?1, ?2, ?3, ?4 \
             WHERE (SELECT COUNT(*) FROM custom_plans WHERE client_id = ?1) < ?5 \
             ON CONFLICT (client_id, plan_id) DO NOTHING",
            &[
                Arg::from(client_id),
                Arg::from(plan.plan_id().as_str()),
                Arg::from(plan_json),
                Arg::Int(now),
                Arg::from(max),
            ],
        )
        .await?;
    Ok(meta.changes == 1)
}
