//! Acting on many runs at once (`POST /api/orchestration/runs/cancel` and `.../retry`): the
//! request (a filter, a page size and a cursor), its validation, which statuses each action
//! applies to, and why a matching run was left as it was.
//!
//! A filter must name runs: one with no field is refused (acting on every run is asked for
//! with `all: true`). Matching runs are taken a page at a time with the listing's keyset
//! order (`(created_at, run_id)`, newest first, see [`crate::listing`]); the answer's cursor
//! continues after the last run of the page, whatever became of it.

use crate::ids::{PlanId, WebsiteId};
use crate::lifecycle::{self, RetryRefused};
use crate::listing::{RunCursor, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::request::{RequestProblem, RequestProblems};
use crate::state::RunStatus;
use crate::time::{Millis, TimeError};

const INSTANT_SHAPE: &str = "an RFC 3339 instant such as 2026-12-06T08:35:49Z";
const LIMIT_SHAPE: &str = "an integer from 1 to 100";
const ALL_SHAPE: &str = "true (or absent)";

/// What to do to every matching run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    /// Cancel runs in progress.
    Cancel,
    /// Retry ended runs in place.
    Retry,
}

impl BulkAction {
    /// `cancel` or `retry`.
    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Cancel => "cancel",
            BulkAction::Retry => "retry",
        }
    }

    /// The statuses a run can be in for this action to apply: a run in progress is cancelled,
    /// an ended one retried. With a `status` asked for, only that one if it applies (none
    /// otherwise: the filter then matches no run).
    pub fn statuses(self, status: Option<RunStatus>) -> Vec<RunStatus> {
        let applies = match self {
            BulkAction::Cancel => lifecycle::UNFINISHED,
            BulkAction::Retry => lifecycle::ENDED,
        };
        applies.iter().copied().filter(|s| status.is_none_or(|asked| asked == *s)).collect()
    }
}

/// The body of a bulk action, unvalidated (the status is already one of [`RunStatus`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkDraft {
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs of this plan.
    pub plan_id: Option<String>,
    /// Only this website's runs.
    pub website_id: Option<String>,
    /// Only runs created at this instant or later (RFC 3339).
    pub created_after: Option<String>,
    /// Only runs created before this instant (RFC 3339).
    pub created_before: Option<String>,
    /// `Some(true)`: every run, whatever the other fields.
    pub all: Option<bool>,
    /// Runs taken per request, 1..=100.
    pub limit: Option<i64>,
    /// A previous answer's `next_cursor` (empty counts as absent).
    pub cursor: Option<String>,
}

impl BulkDraft {
    /// Whether the filter has no field at all (`all` other than `true` does not count).
    pub fn filter_is_empty(&self) -> bool {
        self.status.is_none()
            && self.plan_id.is_none()
            && self.website_id.is_none()
            && self.created_after.is_none()
            && self.created_before.is_none()
            && self.all != Some(true)
    }
}

/// Which of a client's runs a bulk action takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkFilter {
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs of this plan.
    pub plan_id: Option<PlanId>,
    /// Only this website's runs.
    pub website_id: Option<WebsiteId>,
    /// Only runs created at this instant or later.
    pub created_from: Option<Millis>,
    /// Only runs created before this instant.
    pub created_before: Option<Millis>,
}

/// A valid bulk action request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkQuery {
    /// Which runs.
    pub filter: BulkFilter,
    /// Runs taken per request.
    pub limit: u32,
    /// Start after this run.
    pub after: Option<RunCursor>,
}

fn quoted(text: &str) -> String {
    format!("{:?}", text.chars().take(100).collect::<String>())
}

/// An RFC 3339 instant; one before the epoch is the epoch (no run was created before it).
fn instant(field: &'static str, text: &str) -> Result<Millis, RequestProblem> {
    match Millis::parse_rfc3339(text) {
        Ok(ms) => Ok(ms),
        Err(TimeError::BeforeEpoch { .. }) => Ok(Millis::ZERO),
        Err(_) => Err(RequestProblem::InvalidValue { field, expected: INSTANT_SHAPE, value: quoted(text) }),
    }
}

/// Validates a bulk action's body, reporting every problem; a filter with no field (and no
/// `all: true`) is refused naming `filter`. An empty time range is valid and matches nothing.
pub fn validate_bulk(draft: &BulkDraft) -> Result<BulkQuery, RequestProblems> {
    let mut problems = Vec::new();
    if draft.filter_is_empty() {
        problems.push(RequestProblem::EmptyFilter { field: "filter" });
    }
    if draft.all == Some(false) {
        problems.push(RequestProblem::InvalidValue { field: "filter.all", expected: ALL_SHAPE, value: "false".into() });
    }
    let plan_id = draft.plan_id.as_deref().and_then(|p| {
        PlanId::new(p).map_err(|error| problems.push(RequestProblem::InvalidId { field: "filter.plan_id", error })).ok()
    });
    let website_id = draft.website_id.as_deref().and_then(|w| {
        WebsiteId::new(w)
            .map_err(|error| problems.push(RequestProblem::InvalidId { field: "filter.website_id", error }))
            .ok()
    });
    let created_from = draft
        .created_after
        .as_deref()
        .and_then(|t| instant("filter.created_after", t).map_err(|p| problems.push(p)).ok());
    let created_before = draft
        .created_before
        .as_deref()
        .and_then(|t| instant("filter.created_before", t).map_err(|p| problems.push(p)).ok());
    let limit = match draft.limit {
        None => DEFAULT_PAGE_SIZE,
        Some(n) if (1..=i64::from(MAX_PAGE_SIZE)).contains(&n) => n as u32,
        Some(n) => {
            problems.push(RequestProblem::InvalidValue { field: "limit", expected: LIMIT_SHAPE, value: n.to_string() });
            DEFAULT_PAGE_SIZE
        }
    };
    let after = draft
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .and_then(|c| c.parse::<RunCursor>().map_err(|p| problems.push(p)).ok());
    if !problems.is_empty() {
        return Err(RequestProblems(problems));
    }
    let filter = BulkFilter { status: draft.status, plan_id, website_id, created_from, created_before };
    Ok(BulkQuery { filter, limit, after })
}

/// Why a matching run was left as it was (the rest of the request goes on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skipped {
    /// Cancel: it had already ended (possibly just now).
    #[error("it has already ended: it is {0}")]
    Ended(RunStatus),
    /// Retry: it has not ended (it was retried or started again meanwhile).
    #[error("it is {0}: only a run that has ended can be retried")]
    InProgress(RunStatus),
    /// Retry: every step completed.
    #[error("every step of the run completed: nothing to retry")]
    NothingToRetry,
    /// Retry: an execution is submitted again with `POST /execute`, not retried.
    #[error("it is an execution: submit it again with POST /execute")]
    Execution,
    /// It left D1 meanwhile (archived, or deleted by its client).
    #[error("it is no longer in progress or kept in place (archived or deleted meanwhile)")]
    Gone,
    /// Another writer changed it while it was acted on.
    #[error("it changed while it was being acted on; try again")]
    Changed,
    /// Retry: the client has as many runs in progress as its quota allows.
    #[error("the client already has {limit} runs in progress, its quota")]
    OverQuota {
        /// The client's `active_runs` quota.
        limit: u32,
    },
    /// Acting on it failed (the message says why).
    #[error("{0}")]
    Failed(String),
}

impl Skipped {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Skipped::Ended(_) => "already_ended",
            Skipped::InProgress(_) => "in_progress",
            Skipped::NothingToRetry => "nothing_to_retry",
            Skipped::Execution => "execution",
            Skipped::Gone => "gone",
            Skipped::Changed => "changed",
            Skipped::OverQuota { .. } => "over_quota",
            Skipped::Failed(_) => "failed",
        }
    }
}

impl From<RetryRefused> for Skipped {
    fn from(refused: RetryRefused) -> Self {
        match refused {
            RetryRefused::InProgress(status) => Skipped::InProgress(status),
            RetryRefused::NothingToRetry => Skipped::NothingToRetry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    fn problems(d: &BulkDraft) -> Vec<(&'static str, &'static str)> {
        match validate_bulk(d) {
            Ok(_) => vec![],
            Err(problems) => problems.0.iter().map(|p| (p.code(), p.field())).collect(),
        }
    }

    #[test]
    fn an_empty_filter_is_refused_naming_the_filter() {
        assert_eq!(problems(&BulkDraft::default()), [("empty_filter", "filter")]);
        let paging_only = BulkDraft { limit: Some(5), cursor: some(""), ..BulkDraft::default() };
        assert_eq!(problems(&paging_only), [("empty_filter", "filter")]);
        let not_all = BulkDraft { all: Some(false), ..BulkDraft::default() };
        assert_eq!(problems(&not_all), [("empty_filter", "filter"), ("invalid_value", "filter.all")]);
        let message = validate_bulk(&BulkDraft::default()).unwrap_err().to_string();
        assert!(message.contains("\"all\": true"), "{message}");
    }

    #[test]
    fn all_or_any_field_makes_a_filter() {
        let all = validate_bulk(&BulkDraft { all: Some(true), ..BulkDraft::default() }).unwrap();
        assert_eq!(
            all,
            BulkQuery {
                filter: BulkFilter {
                    status: None,
                    plan_id: None,
                    website_id: None,
                    created_from: None,
                    created_before: None
                },
                limit: 20,
                after: None,
            }
        );
        let q = validate_bulk(&BulkDraft {
            status: Some(RunStatus::Running),
            plan_id: some("quick-v1"),
            website_id: some("site_1"),
            created_after: some("2026-12-06T08:00:00+01:00"),
            created_before: some("2026-12-06T08:00:00.250Z"),
            limit: Some(100),
            cursor: some("1732350000000_run_1732350000000_a1b2c3d4e5f60718"),
            all: None,
        })
        .unwrap();
        assert_eq!(q.filter.created_from, Some(Millis::parse_rfc3339("2026-12-06T07:00:00Z").unwrap()));
        assert_eq!(q.filter.created_before.map(|m| m.as_u64() % 1000), Some(250));
        assert_eq!((q.limit, q.after.map(|c| c.created_at.as_u64())), (100, Some(1_732_350_000_000)));
    }

    #[test]
    fn every_bad_field_is_named() {
        let d = BulkDraft {
            status: None,
            plan_id: some("Bad Plan"),
            website_id: some(""),
            created_after: some("yesterday"),
            created_before: some("2026-13-01T00:00:00Z"),
            all: None,
            limit: Some(0),
            cursor: some("nope"),
        };
        assert_eq!(
            problems(&d),
            [
                ("invalid_id", "filter.plan_id"),
                ("invalid_id", "filter.website_id"),
                ("invalid_value", "filter.created_after"),
                ("invalid_value", "filter.created_before"),
                ("invalid_value", "limit"),
                ("invalid_value", "cursor"),
            ]
        );
        let over = BulkDraft { all: Some(true), limit: Some(101), ..BulkDraft::default() };
        assert_eq!(problems(&over), [("invalid_value", "limit")]);
    }

    #[test]
    fn an_instant_before_the_epoch_is_the_epoch() {
        let d = BulkDraft { created_after: some("1969-12-31T23:59:59Z"), ..BulkDraft::default() };
        assert_eq!(validate_bulk(&d).unwrap().filter.created_from, Some(Millis::ZERO));
    }

    #[test]
    fn each_action_applies_to_its_statuses() {
        assert_eq!(BulkAction::Cancel.statuses(None), lifecycle::UNFINISHED);
        assert_eq!(BulkAction::Retry.statuses(None), lifecycle::ENDED);
        assert_eq!(BulkAction::Cancel.statuses(Some(RunStatus::Running)), [RunStatus::Running]);
        assert!(BulkAction::Cancel.statuses(Some(RunStatus::Completed)).is_empty());
        assert_eq!(BulkAction::Retry.statuses(Some(RunStatus::Failed)), [RunStatus::Failed]);
        assert!(BulkAction::Retry.statuses(Some(RunStatus::Running)).is_empty());
    }

    #[test]
    fn skips_have_codes_and_reasons() {
        assert_eq!(Skipped::from(RetryRefused::NothingToRetry).code(), "nothing_to_retry");
        let ended = Skipped::Ended(RunStatus::Completed);
        assert_eq!(
            (ended.code(), ended.to_string().as_str()),
            ("already_ended", "it has already ended: it is completed")
        );
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some(String::new())),
            "[a-z0-9_-]{1,8}".prop_map(Some),
            "\\PC{0,12}".prop_map(Some),
            (0u64..4_000_000_000_000).prop_map(|ms| Some(Millis::new(ms).to_rfc3339())),
        ]
    }

    fn status() -> impl Strategy<Value = Option<RunStatus>> {
        prop_oneof![Just(None), proptest::sample::select(RunStatus::ALL.to_vec()).prop_map(Some)]
    }

    fn draft() -> impl Strategy<Value = BulkDraft> {
        (
            status(),
            text(),
            text(),
            text(),
            text(),
            proptest::option::of(any::<bool>()),
            proptest::option::of(-5i64..200),
            text(),
        )
            .prop_map(|(status, plan_id, website_id, created_after, created_before, all, limit, cursor)| {
                BulkDraft { status, plan_id, website_id, created_after, created_before, all, limit, cursor }
            })
    }

    proptest! {
        /// An empty filter is always refused naming `filter`, a valid request never acts on
        /// more than 100 runs, and what is accepted is what was asked for.
        #[test]
        fn validation_refuses_empty_filters_and_bounds_pages(d in draft()) {
            match validate_bulk(&d) {
                Ok(q) => {
                    prop_assert!(!d.filter_is_empty());
                    prop_assert!((1..=MAX_PAGE_SIZE).contains(&q.limit));
                    prop_assert_eq!(q.filter.status, d.status);
                    prop_assert_eq!(q.filter.plan_id.map(|p| p.as_str().to_string()), d.plan_id);
                    prop_assert_eq!(q.filter.website_id.map(|w| w.as_str().to_string()), d.website_id);
                    prop_assert_eq!(q.after.is_some(), d.cursor.as_deref().is_some_and(|c| !c.is_empty()));
                }
                Err(problems) => {
                    prop_assert!(!problems.0.is_empty());
                    let empty = problems.0.iter().any(|p| p.code() == "empty_filter");
                    prop_assert_eq!(empty, d.filter_is_empty());
                    for p in &problems.0 {
                        prop_assert!(
                            ["filter", "filter.all", "filter.plan_id", "filter.website_id", "filter.created_after",
                             "filter.created_before", "limit", "cursor"].contains(&p.field()),
                            "{}", p.field()
                        );
                    }
                }
            }
        }
    }
}
