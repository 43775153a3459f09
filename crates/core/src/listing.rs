//! Listing a client's runs: the query (`website_id`, `status`, `plan_id`, `limit`, `cursor`), its
//! validation, and keyset pagination over `(created_at, run_id)`, newest first.
//!
//! A cursor is `{created_at}_{run_id}` of the last run of a page; the next page holds the
//! runs strictly older in that order. Clients treat it as opaque (pass `next_cursor` back);
//! a malformed one is refused naming `cursor`, never read as "from the start".

use std::fmt;
use std::str::FromStr;

use crate::ids::{PlanId, RunId, WebsiteId};
use crate::request::{RequestProblem, RequestProblems};
use crate::state::RunStatus;
use crate::time::Millis;

/// Runs per page when the query gives no `limit`.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Most runs per page (also keeps a page's `IN (...)` under D1's 100 bound parameters).
pub const MAX_PAGE_SIZE: u32 = 100;

const CURSOR_SHAPE: &str = "a next_cursor from a previous page";
const LIMIT_SHAPE: &str = "an integer from 1 to 100";
const STATUS_SHAPE: &str = "one of started, running, paused, aggregating, completed, failed, timeout, cancelled";

/// Where a page starts: just after the run `(created_at, run_id)` in newest-first order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCursor {
    /// The last listed run's creation time.
    pub created_at: Millis,
    /// The last listed run.
    pub run_id: RunId,
}

impl fmt::Display for RunCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.created_at.as_u64(), self.run_id)
    }
}

impl FromStr for RunCursor {
    type Err = RequestProblem;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || RequestProblem::InvalidValue {
            field: "cursor",
            expected: CURSOR_SHAPE,
            value: format!("{:?}", text.chars().take(100).collect::<String>()),
        };
        let (millis, run_id) = text.split_once('_').ok_or_else(invalid)?;
        if millis.is_empty() || millis.len() > 16 || !millis.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let created_at = millis.parse::<u64>().map_err(|_| invalid())?;
        let run_id = run_id.parse::<RunId>().map_err(|_| invalid())?;
        Ok(RunCursor { created_at: Millis::new(created_at), run_id })
    }
}

/// The query string of `GET /api/orchestration/runs`, unvalidated (empty values count as absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunListDraft {
    /// Only this website's runs.
    pub website_id: Option<String>,
    /// Only runs in this status.
    pub status: Option<String>,
    /// Only runs of this plan.
    pub plan_id: Option<String>,
    /// Page size, 1..=100.
    pub limit: Option<String>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// A valid run listing query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunListQuery {
    /// Only this website's runs.
    pub website_id: Option<WebsiteId>,
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs of this plan.
    pub plan_id: Option<PlanId>,
    /// Page size.
    pub limit: u32,
    /// Start after this run.
    pub after: Option<RunCursor>,
}

fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

fn quoted(text: &str) -> String {
    format!("{:?}", text.chars().take(100).collect::<String>())
}

/// Validates a listing query, reporting every problem.
pub fn validate_run_list(draft: &RunListDraft) -> Result<RunListQuery, RequestProblems> {
    let mut problems = Vec::new();
    let website_id = present(&draft.website_id).and_then(|w| {
        WebsiteId::new(w).map_err(|error| problems.push(RequestProblem::InvalidId { field: "website_id", error })).ok()
    });
    let status = present(&draft.status).and_then(|s| {
        s.parse::<RunStatus>()
            .map_err(|_| {
                problems.push(RequestProblem::InvalidValue {
                    field: "status",
                    expected: STATUS_SHAPE,
                    value: quoted(s),
                })
            })
            .ok()
    });
    let plan_id = present(&draft.plan_id).and_then(|p| {
        PlanId::new(p).map_err(|error| problems.push(RequestProblem::InvalidId { field: "plan_id", error })).ok()
    });
    let limit = match present(&draft.limit) {
        None => DEFAULT_PAGE_SIZE,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            _ => {
                problems.push(RequestProblem::InvalidValue {
                    field: "limit",
                    expected: LIMIT_SHAPE,
                    value: quoted(text),
                });
                DEFAULT_PAGE_SIZE
            }
        },
    };
    let after = present(&draft.cursor).and_then(|c| c.parse::<RunCursor>().map_err(|p| problems.push(p)).ok());
    if problems.is_empty() {
        Ok(RunListQuery { website_id, status, plan_id, limit, after })
    } else {
        Err(RequestProblems(problems))
    }
}

/// Cuts rows fetched with `LIMIT limit + 1` to a page: the first `limit` rows, and the
/// cursor after the last of them when a further row shows there is a next page.
pub fn page<T>(mut rows: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> RunCursor) -> (Vec<T>, Option<RunCursor>) {
    let limit = limit as usize;
    if rows.len() <= limit {
        return (rows, None);
    }
    rows.truncate(limit);
    let next = rows.last().map(cursor_of);
    (rows, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(website_id: &str, status: &str, limit: &str, cursor: &str) -> RunListDraft {
        let some = |s: &str| Some(s.to_string());
        RunListDraft {
            website_id: some(website_id),
            status: some(status),
            plan_id: None,
            limit: some(limit),
            cursor: some(cursor),
        }
    }

    fn check(d: RunListDraft, expected: &[(&str, &str)]) {
        let got: Vec<(&str, &str)> = match validate_run_list(&d) {
            Ok(_) => vec![],
            Err(problems) => problems.0.iter().map(|p| (p.code(), p.field())).collect(),
        };
        assert_eq!(got, expected, "{d:?}");
    }

    #[test]
    fn defaults_and_empty_values() {
        let q = validate_run_list(&RunListDraft::default()).unwrap();
        assert_eq!(q, RunListQuery { website_id: None, status: None, plan_id: None, limit: 20, after: None });
        let q = validate_run_list(&draft("", "", "", "")).unwrap();
        assert_eq!(q.limit, 20);
    }

    #[test]
    fn every_problem_names_its_field() {
        let cursor = "1732350000000_run_1732350000000_a1b2c3d4e5f60718";
        check(draft("site_1", "completed", "100", cursor), &[]);
        check(
            draft("site_1", "done", "0", "nope"),
            &[("invalid_value", "status"), ("invalid_value", "limit"), ("invalid_value", "cursor")],
        );
        check(draft("site/1", "", "101", ""), &[("invalid_id", "website_id"), ("invalid_value", "limit")]);
        check(draft("", "", "-1", "12_run_bad"), &[("invalid_value", "limit"), ("invalid_value", "cursor")]);
        check(draft("", "", "", "x_run_1732350000000_a1b2c3d4e5f60718"), &[("invalid_value", "cursor")]);
    }

    #[test]
    fn cursor_round_trips_with_run_and_execution_ids() {
        for id in ["run_1732350000000_a1b2c3d4e5f60718", "exec_1732350000000_a1b2c3d4e5f6"] {
            let cursor = RunCursor { created_at: Millis::new(1_732_350_000_123), run_id: id.parse().unwrap() };
            let text = cursor.to_string();
            assert_eq!(text, format!("1732350000123_{id}"));
            assert_eq!(text.parse::<RunCursor>().unwrap(), cursor);
        }
    }

    #[test]
    fn page_cuts_and_points_after_the_last_kept_row() {
        let id = |n: u64| RunId::from_parts(Millis::new(n), [0; 8]);
        let rows: Vec<(u64, RunId)> = (0..3).rev().map(|n| (n, id(n))).collect();
        let cursor_of = |r: &(u64, RunId)| RunCursor { created_at: Millis::new(r.0), run_id: r.1.clone() };
        let (kept, next) = page(rows.clone(), 2, cursor_of);
        assert_eq!(kept.len(), 2);
        assert_eq!(next, Some(RunCursor { created_at: Millis::new(1), run_id: id(1) }));
        let (kept, next) = page(rows, 3, cursor_of);
        assert_eq!((kept.len(), next), (3, None));
    }
}
