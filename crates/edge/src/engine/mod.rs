//! The run engine: carries out core's decisions against D1 and the queues. Shared by every
//! worker so a result, a timeout and a dispatch go through the same transitions whoever
//! observes them (orchestrator callbacks, consumer, poller).
//!
//! The pattern for every change: read → core decides → compare-and-set in D1 (guarded by the
//! state that was read) → act only on the writes this caller won (`changes` = 1).
//!
//! [`Engine`] is the run lifecycle. Plans, schedules, webhooks and executions are services
//! with their own types ([`Plans`], [`Schedules`], [`Webhooks`], [`Executions`]), reached as
//! `engine.plans()`, `engine.schedules()`, `engine.webhooks()` and `engine.executions()`.

pub mod admission;
mod analysis;
mod apply;
mod archive;
pub mod attempts;
mod bulk;
mod cancel;
mod children;
mod claim;
mod due;
mod events;
mod executions;
mod finish;
mod list;
mod pause;
mod plans;
mod retry;
mod rows;
mod run;
mod schedules;
mod start;
mod timers;
mod views;
mod wait;
mod webhooks;

pub use crate::d1::schedules::{FireRow as ScheduleFire, ScheduleRow as Schedule};
pub use analysis::Analysis;
pub use apply::{record_usage, Delivered, Reported, MAX_ROUNDS};
pub use archive::{summary_of_archived, ArchiveCounts, ArchivedRun, Kept, RunRecord};
pub use bulk::BulkReport;
pub use cancel::CancelOutcome;
pub use claim::{seconds_until, AttemptClaim};
pub use due::{DueRun, DueWork, PollableStep};
pub use executions::{ExecutionDetail, Executions, NewExecution, Submitted};
pub use finish::{rule_based_diagnosis, DIAGNOSIS_EVENT_TYPE};
pub use pause::HoldOutcome;
pub use plans::{create_plan, visible_plan, visible_plans, PlanCreated, PlanSource, Plans};
pub use retry::RetryOutcome;
pub use rows::{record_of, row_with_record};
pub use run::{
    snapshot_of, summary_of, AdvanceReport, Dispatch, Engine, FanInClaim, Loaded, RecordOutcome, Report, RETRY_GRACE_MS,
};
pub use schedules::{new_schedule_id, timing_of, ScheduleCounts, ScheduleFields, ScheduleView, Schedules};
pub use start::{NewRun, ParentLink, Started};
pub use timers::TimerOutcome;
pub use views::{blocked_by, depends_on, Attempt};
pub use wait::DRIVE_PATH;
pub use webhooks::{
    DeliveryOutcome, Webhook, WebhookAttempt, WebhookDelivery, Webhooks, DELIVERY_LOG_LIMIT, MAX_WEBHOOKS_PER_CLIENT,
};
