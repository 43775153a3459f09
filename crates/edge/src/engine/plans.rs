//! The plans a client can use: core's built-in plans, then the client's own (`custom_plans`).
//! A built-in plan's id is never a custom plan's, and a custom plan is never replaced.
//!
//! Without a client only the built-in plans are visible, and the database is not opened.

use baton_core::plan::{builtin_plan, builtin_plans, Plan};
use worker::Env;

use super::run::Engine;
use crate::d1::{plans, Db};
use crate::{clock, Result};

/// Where a plan comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanSource {
    /// One of core's built-in plans.
    Builtin,
    /// A plan the client created.
    Custom,
}

impl PlanSource {
    /// `builtin` or `custom`.
    pub fn as_str(self) -> &'static str {
        match self {
            PlanSource::Builtin => "builtin",
            PlanSource::Custom => "custom",
        }
    }
}

/// What storing a client's plan did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanCreated {
    /// Stored.
    Created,
    /// Its id is a built-in plan's.
    BuiltinId,
    /// The client already has a plan with this id (plans are never replaced).
    AlreadyExists,
}

impl Engine<'_> {
    /// The plan `plan_id` as `client_id` may use it: a built-in plan, else the client's own.
    pub async fn plan_for_client(&self, plan_id: &str, client_id: &str) -> Result<Option<Plan>> {
        match builtin_plan(plan_id) {
            Some(plan) => Ok(Some(plan)),
            None => plans::get(&self.db, plan_id, client_id).await,
        }
    }
}

/// The plans the caller sees: the built-in ones, then (with a client) its own, oldest first.
pub async fn visible_plans(env: &Env, client_id: Option<&str>) -> Result<Vec<(Plan, PlanSource)>> {
    let mut visible: Vec<(Plan, PlanSource)> = builtin_plans().into_iter().map(|p| (p, PlanSource::Builtin)).collect();
    if let Some(client_id) = client_id {
        let custom = plans::of_client(&Db::from_env(env)?, client_id).await?;
        visible.extend(custom.into_iter().map(|p| (p, PlanSource::Custom)));
    }
    Ok(visible)
}

/// The plan `plan_id` as the caller sees it: a built-in plan, else (with a client) its own.
pub async fn visible_plan(env: &Env, plan_id: &str, client_id: Option<&str>) -> Result<Option<(Plan, PlanSource)>> {
    if let Some(plan) = builtin_plan(plan_id) {
        return Ok(Some((plan, PlanSource::Builtin)));
    }
    let Some(client_id) = client_id else { return Ok(None) };
    let custom = plans::get(&Db::from_env(env)?, plan_id, client_id).await?;
    Ok(custom.map(|plan| (plan, PlanSource::Custom)))
}

/// Stores `client_id`'s plan, unless its id is a built-in plan's or the client already has it.
pub async fn create_plan(env: &Env, client_id: &str, plan: &Plan) -> Result<PlanCreated> {
    if builtin_plan(plan.plan_id().as_str()).is_some() {
        return Ok(PlanCreated::BuiltinId);
    }
    if plans::insert(&Db::from_env(env)?, client_id, plan, clock::now_ms() as i64).await? {
        Ok(PlanCreated::Created)
    } else {
        Ok(PlanCreated::AlreadyExists)
    }
}
