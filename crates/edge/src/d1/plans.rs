//! `custom_plans`: plans clients created.

use baton_core::plan::Plan;
use serde::Deserialize;

use super::{Arg, Db};
use crate::{Error, Result};

/// A client's custom plan by id.
pub async fn get(db: &Db, plan_id: &str, client_id: &str) -> Result<Option<Plan>> {
    #[derive(Deserialize)]
    struct Row {
        plan_json: String,
    }
    let row = db
        .first::<Row>(
            "SELECT plan_json FROM custom_plans WHERE plan_id = ?1 AND client_id = ?2",
            &[Arg::from(plan_id), Arg::from(client_id)],
        )
        .await?;
    row.map(|r| serde_json::from_str(&r.plan_json).map_err(|e| Error::Storage(format!("custom plan {plan_id}: {e}"))))
        .transpose()
}
