//! The plans service ([`Plans`], reached as `engine.plans()`): the plans a client can use —
//! core's built-in plans, then the client's own (`custom_plans`). A built-in plan's id is never
//! a custom plan's, and a custom plan is never replaced.
//!
//! The API's plan routes use the free functions ([`visible_plans`], [`visible_plan`],
//! [`create_plan`]), which need no engine: without a client only the built-in plans are
//! visible, and the database is not opened.

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
    /// The client holds as many plans as its quota allows.
    OverQuota(u32),
}

/// The plans service: the plans a client may start runs with. Reached through
/// [`Engine::plans`].
#[derive(Clone, Copy)]
pub struct Plans<'e> {
    engine: &'e Engine<'e>,
}

impl Engine<'_> {
    /// The plans service, working with this engine.
    pub fn plans(&self) -> Plans<'_> {
        Plans { engine: self }
    }
}

impl Plans<'_> {
    /// The plan `plan_id` as `client_id` may use it: a built-in plan, else the client's own.
    pub async fn for_client(&self, plan_id: &str, client_id: &str) -> Result<Option<Plan>> {
        match builtin_plan(plan_id) {
            Some(plan) => Ok(Some(plan)),
            None => plans::get(&self.engine.db, plan_id, client_id).await,
        }
    }
}

/// A page of the plans the caller sees — the built-in ones, then (with a client) its own,
/// oldest first — from position `offset`, at most `limit`; and whether more follow.
pub async fn visible_plans(
    env: &Env,
    client_id: Option<&str>,
    offset: u32,
    limit: u32,
) -> Result<(Vec<(Plan, PlanSource)>, bool)> {
    let builtin = builtin_plans();
    let builtin_count = builtin.len() as u32;
    let mut visible: Vec<(Plan, PlanSource)> =
        builtin.into_iter().skip(offset as usize).take(limit as usize).map(|p| (p, PlanSource::Builtin)).collect();
    let Some(client_id) = client_id else { return Ok((visible, offset + limit < builtin_count)) };
    let wanted = limit.saturating_sub(visible.len() as u32);
    // One more than asked for says whether another page follows.
    let custom_offset = offset.saturating_sub(builtin_count);
    let mut custom = plans::of_client(&Db::of_client(env, client_id)?, client_id, custom_offset, wanted + 1).await?;
    let more = custom.len() as u32 > wanted;
    custom.truncate(wanted as usize);
    visible.extend(custom.into_iter().map(|p| (p, PlanSource::Custom)));
    Ok((visible, more))
}

/// The plan `plan_id` as the caller sees it: a built-in plan, else (with a client) its own.
pub async fn visible_plan(env: &Env, plan_id: &str, client_id: Option<&str>) -> Result<Option<(Plan, PlanSource)>> {
    if let Some(plan) = builtin_plan(plan_id) {
        return Ok(Some((plan, PlanSource::Builtin)));
    }
    let Some(client_id) = client_id else { return Ok(None) };
    let custom = plans::get(&Db::of_client(env, client_id)?, plan_id, client_id).await?;
    Ok(custom.map(|plan| (plan, PlanSource::Custom)))
}

/// Stores `client_id`'s plan, unless its id is a built-in plan's, the client already has it,
/// or it holds `max` plans.
pub async fn create_plan(env: &Env, client_id: &str, plan: &Plan, max: u32) -> Result<PlanCreated> {
    if builtin_plan(plan.plan_id().as_str()).is_some() {
        return Ok(PlanCreated::BuiltinId);
    }
    let db = Db::of_client(env, client_id)?;
    if plans::insert(&db, client_id, plan, clock::now_ms() as i64, max).await? {
        return Ok(PlanCreated::Created);
    }
    if plans::get(&db, plan.plan_id().as_str(), client_id).await?.is_some() {
        Ok(PlanCreated::AlreadyExists)
    } else {
        Ok(PlanCreated::OverQuota(max))
    }
}
