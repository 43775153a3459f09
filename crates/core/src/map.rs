//! Map steps: a step with `for_each` runs once per element of a list found in an upstream
//! step's output. Each element is an *item*: a step record of its own (`audit.3` is item 3 of
//! step `audit`), with its own attempts, retries and time-outs, dispatched at most
//! `max_parallel` at a time. The map step itself calls nothing: it runs while its items do and
//! ends when they have all ended — `completed` if at least `min_completed` of them completed
//! (its output is then every item's output, in order, `null` where an item did not complete),
//! else `failed`.
//!
//! Step slugs are `[a-z0-9_-]`, so the `.` of an item's slug can never name a plan's own step.

use serde::Serialize;
use serde_json::Value;

use crate::ids::ServiceSlug;
use crate::plan::Threshold;

/// Between a map step's slug and an item's index in the item's slug.
pub const SEPARATOR: char = '.';
/// The most items a plan may allow one map step (`max_items`).
pub const MAX_ITEMS: u32 = 1000;
/// `max_items` when the plan leaves it out.
pub const DEFAULT_MAX_ITEMS: u32 = 100;
/// `max_parallel` when the plan leaves it out.
pub const DEFAULT_MAX_PARALLEL: u32 = 10;

/// What a map step maps over and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapSpec {
    /// The upstream step whose output holds the list (one of the step's dependencies).
    pub from: ServiceSlug,
    /// Where the list is in that output: object keys, or indices of lists (empty: the output
    /// itself is the list).
    pub path: Vec<String>,
    /// More items than this fails the step (1..=[`MAX_ITEMS`]).
    pub max_items: u32,
    /// At most this many items run (or back off) at once.
    pub max_parallel: u32,
    /// How many items must complete for the step to complete: a count or a share.
    pub min_completed: Threshold,
}

impl MapSpec {
    /// `for_each` as written in a plan: `from` and the path, joined by dots.
    pub fn for_each(&self) -> String {
        std::iter::once(self.from.as_str()).chain(self.path.iter().map(String::as_str)).collect::<Vec<_>>().join(".")
    }

    /// How many of `items` must complete.
    pub fn needed(&self, items: usize) -> u32 {
        match self.min_completed {
            Threshold::Count(count) => count.min(items as u32),
            Threshold::Ratio(ratio) => (ratio * items as f64).ceil() as u32,
        }
    }
}

/// `for_each` split into its step and path: `crawl.pages` → (`crawl`, [`pages`]). Every part
/// must be non-empty.
pub fn parse_for_each(text: &str) -> Result<(ServiceSlug, Vec<String>), String> {
    let mut parts = text.split('.');
    let head = parts.next().unwrap_or_default();
    let from = ServiceSlug::new(head).map_err(|e| format!("{text:?} must start with an upstream step: {e}"))?;
    let path: Vec<String> = parts.map(str::to_string).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!("{text:?} has an empty part"));
    }
    Ok((from, path))
}

/// The slug of item `index` of map step `step`.
pub fn item_slug(step: &ServiceSlug, index: u32) -> ServiceSlug {
    step.item(index)
}

/// The map step and index an item's slug names (`audit.3` → (`audit`, 3)); `None` for a
/// plan's own step.
pub fn item_of(service: &str) -> Option<(&str, u32)> {
    let (step, index) = service.rsplit_once(SEPARATOR)?;
    if index.is_empty() || (index.len() > 1 && index.starts_with('0')) {
        return None;
    }
    Some((step, index.parse().ok()?))
}

/// The list a map step maps over, in its upstream step's `output`; why not, if it is not there.
pub fn list<'a>(spec: &MapSpec, output: &'a Value) -> Result<&'a [Value], String> {
    let mut at = output;
    for (depth, key) in spec.path.iter().enumerate() {
        let next = match at {
            Value::Object(map) => map.get(key),
            Value::Array(list) => key.parse::<usize>().ok().and_then(|i| list.get(i)),
            _ => None,
        };
        at = next.ok_or_else(|| {
            let so_far = std::iter::once(spec.from.as_str())
                .chain(spec.path[..=depth].iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(".");
            format!("for_each {}: the output has no {so_far}", spec.for_each())
        })?;
    }
    match at {
        Value::Array(list) => Ok(list),
        other => Err(format!("for_each {}: not a list but {}", spec.for_each(), kind_of(other))),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// How many items a map step has, given its upstream step's `output`; why it has none, if the
/// list is missing or longer than `max_items`. What the engine reads for core to expand a map.
pub fn size(spec: &MapSpec, output: &Value) -> Result<u32, String> {
    let items = list(spec, output)?.len();
    if items > spec.max_items as usize {
        return Err(format!("for_each {}: {items} items, more than max_items {}", spec.for_each(), spec.max_items));
    }
    Ok(items as u32)
}

/// A map step's output: each item's output in order, `null` for an item that did not complete.
pub fn collect(outputs: impl IntoIterator<Item = Option<Value>>) -> Value {
    Value::Array(outputs.into_iter().map(|o| o.unwrap_or(Value::Null)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(for_each: &str) -> MapSpec {
        let (from, path) = parse_for_each(for_each).unwrap();
        MapSpec { from, path, max_items: 3, max_parallel: 2, min_completed: Threshold::Ratio(1.0) }
    }

    #[test]
    fn an_items_slug_names_its_step_and_index_and_a_plans_own_step_is_no_item() {
        let slug = item_slug(&"audit".parse().unwrap(), 12);
        assert_eq!(slug.as_str(), "audit.12");
        assert_eq!(item_of("audit.12"), Some(("audit", 12)));
        assert_eq!(item_of("audit"), None);
        assert_eq!(item_of("audit.x"), None);
        assert_eq!(item_of("audit.01"), None);
        assert_eq!(item_of("audit."), None);
    }

    #[test]
    fn the_list_is_found_by_its_path_and_every_miss_says_where() {
        let output = json!({"pages": [{"url": "/a"}, {"url": "/b"}], "nested": [{"x": [1, 2]}], "n": 3});
        assert_eq!(size(&spec("crawl.pages"), &output), Ok(2));
        assert_eq!(size(&spec("crawl.nested.0.x"), &output), Ok(2));
        assert_eq!(size(&spec("crawl"), &json!([1])), Ok(1));
        assert_eq!(
            size(&spec("crawl.links"), &output).unwrap_err(),
            "for_each crawl.links: the output has no crawl.links"
        );
        assert_eq!(size(&spec("crawl.n"), &output).unwrap_err(), "for_each crawl.n: not a list but a number");
        assert_eq!(
            size(&spec("crawl"), &json!([1, 2, 3, 4])).unwrap_err(),
            "for_each crawl: 4 items, more than max_items 3"
        );
        assert!(parse_for_each("crawl..pages").is_err());
        assert!(parse_for_each("Crawl.pages").is_err());
    }

    #[test]
    fn the_share_of_items_needed_rounds_up_and_a_count_is_capped_by_the_items() {
        let mut s = spec("crawl");
        assert_eq!(s.needed(3), 3);
        s.min_completed = Threshold::Ratio(0.5);
        assert_eq!(s.needed(3), 2);
        assert_eq!(s.needed(0), 0);
        s.min_completed = Threshold::Count(5);
        assert_eq!(s.needed(3), 3);
        assert_eq!(collect([Some(json!(1)), None]), json!([1, null]));
    }
}
