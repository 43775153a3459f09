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

/// A client's custom plans, oldest first.
pub async fn of_client(db: &Db, client_id: &str) -> Result<Vec<Plan>> {
    let (rows, _) = db
        .all::<Row>(
            "SELECT plan_id, plan_json FROM custom_plans WHERE client_id = ?1 ORDER BY created_at, plan_id",
            &[Arg::from(client_id)],
        )
        .await?;
    rows.into_iter().map(decode).collect()
}

/// Stores a client's plan; `false` when the client already has a plan with this id.
pub async fn insert(db: &Db, client_id: &str, plan: &Plan, now: i64) -> Result<bool> {
    let plan_json = serde_json::to_string(plan).map_err(|e| Error::Internal(e.to_string()))?;
    let meta = db
        .run(
            "INSERT INTO custom_plans (client_id, plan_id, plan_json, created_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (client_id, plan_id) DO NOTHING",
            &[Arg::from(client_id), Arg::from(plan.plan_id().as_str()), Arg::from(plan_json), Arg::Int(now)],
        )
        .await?;
    Ok(meta.changes == 1)
}
