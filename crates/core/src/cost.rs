//! What a run cost: the units Cloudflare bills for that Baton's workers used on the run's behalf
//! ([`Units`]), and their price ([`UnitPrices`], `COST_PRICES`). The edge counts the units as it
//! works (each piece of work for a run is attributed to that run explicitly) and adds them to the
//! run's row; the API, the run page and `baton show` convert them with the configured prices, and
//! `/metrics` sums them by client and plan ([`units_totals`]).

use std::collections::BTreeMap;
use std::ops::AddAssign;

use serde::{Deserialize, Serialize};

use crate::metrics::Total;

/// Units used, in what the platform bills (and two it does not, for reading: D1 round trips
/// and statements).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Units {
    /// D1 calls (a batch is one).
    pub d1_round_trips: u64,
    /// D1 statements.
    pub d1_statements: u64,
    /// D1 rows read (`meta.rows_read`): billed.
    pub d1_rows_read: u64,
    /// D1 rows written (`meta.rows_written`): billed.
    pub d1_rows_written: u64,
    /// KV reads: billed.
    pub kv_reads: u64,
    /// KV writes and deletes: billed.
    pub kv_writes: u64,
    /// Queue messages sent: billed (as operations).
    pub queue_messages: u64,
    /// Outgoing requests (services, service bindings, the LLM, webhooks).
    pub subrequests: u64,
    /// R2 reads (class B operations).
    pub r2_reads: u64,
    /// R2 writes (class A operations).
    pub r2_writes: u64,
}

/// The names of [`Units`]' fields, in [`Units::values`]' order.
pub const UNIT_NAMES: [&str; 10] = [
    "d1_round_trips",
    "d1_statements",
    "d1_rows_read",
    "d1_rows_written",
    "kv_reads",
    "kv_writes",
    "queue_messages",
    "subrequests",
    "r2_reads",
    "r2_writes",
];

impl Units {
    /// Every count, in [`UNIT_NAMES`]' order.
    pub fn values(&self) -> [u64; 10] {
        [
            self.d1_round_trips,
            self.d1_statements,
            self.d1_rows_read,
            self.d1_rows_written,
            self.kv_reads,
            self.kv_writes,
            self.queue_messages,
            self.subrequests,
            self.r2_reads,
            self.r2_writes,
        ]
    }

    /// The units of `values`, in [`UNIT_NAMES`]' order.
    pub fn from_values(v: [u64; 10]) -> Units {
        Units {
            d1_round_trips: v[0],
            d1_statements: v[1],
            d1_rows_read: v[2],
            d1_rows_written: v[3],
            kv_reads: v[4],
            kv_writes: v[5],
            queue_messages: v[6],
            subrequests: v[7],
            r2_reads: v[8],
            r2_writes: v[9],
        }
    }

    /// Whether nothing was used.
    pub fn is_empty(&self) -> bool {
        self.values().iter().all(|v| *v == 0)
    }

    /// The count of the unit named `name` ([`UNIT_NAMES`]).
    pub fn get(&self, name: &str) -> Option<u64> {
        UNIT_NAMES.iter().position(|n| *n == name).map(|i| self.values()[i])
    }
}

impl AddAssign for Units {
    fn add_assign(&mut self, other: Units) {
        let mut sum = self.values();
        for (s, o) in sum.iter_mut().zip(other.values()) {
            *s = s.saturating_add(o);
        }
        *self = Units::from_values(sum);
    }
}

/// The variable that sets [`UnitPrices`].
pub const PRICES_VAR: &str = "COST_PRICES";

/// The billed units' prices, USD per million. The defaults are Cloudflare's list prices on
/// the Workers Paid plan beyond its included amounts; units without a price cost nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitPrices(BTreeMap<String, f64>);

/// The default prices, USD per million units.
pub const DEFAULT_PRICES: [(&str, f64); 7] = [
    ("d1_rows_read", 0.001),
    ("d1_rows_written", 1.0),
    ("kv_reads", 0.5),
    ("kv_writes", 5.0),
    // A message is written, read and acknowledged: three operations at $0.40 a million.
    ("queue_messages", 1.2),
    ("r2_reads", 0.36),
    ("r2_writes", 4.5),
];

impl Default for UnitPrices {
    fn default() -> Self {
        UnitPrices(DEFAULT_PRICES.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }
}

impl UnitPrices {
    /// Reads `COST_PRICES`: `{"unit": usd per million, ...}` over the defaults (unset or blank:
    /// the defaults). Every problem names the variable and, for a bad entry, the unit.
    pub fn parse(text: Option<&str>) -> Result<UnitPrices, String> {
        let mut prices = UnitPrices::default();
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(prices) };
        let given: BTreeMap<String, f64> = serde_json::from_str(text)
            .map_err(|e| format!("{PRICES_VAR} must be a JSON object of unit → USD per million units: {e}"))?;
        for (unit, price) in given {
            if !UNIT_NAMES.contains(&unit.as_str()) {
                return Err(format!("{PRICES_VAR}.{unit}: not a unit; the units are {}", UNIT_NAMES.join(", ")));
            }
            if !price.is_finite() || price < 0.0 {
                return Err(format!("{PRICES_VAR}.{unit}: a price must be a number of at least 0"));
            }
            prices.0.insert(unit, price);
        }
        Ok(prices)
    }

    /// What `units` cost, USD.
    pub fn cost_usd(&self, units: &Units) -> f64 {
        UNIT_NAMES
            .iter()
            .zip(units.values())
            .map(|(name, n)| self.0.get(*name).copied().unwrap_or(0.0) * n as f64 / 1_000_000.0)
            .sum()
    }

    /// The price of each unit that has one, USD per million.
    pub fn per_million(&self) -> &BTreeMap<String, f64> {
        &self.0
    }
}

/// The totals metric of runs' units: label `{client}\u{1f}{plan}\u{1f}{unit}`.
pub const UNITS_METRIC: &str = "units";

/// What `units` used for a run of `client`'s plan `plan` add to `/metrics`' totals.
pub fn units_totals(client: &str, plan: &str, units: &Units) -> Vec<Total> {
    UNIT_NAMES
        .iter()
        .zip(units.values())
        .filter(|(_, n)| *n != 0)
        .map(|(name, n)| (UNITS_METRIC.to_string(), format!("{client}\u{1f}{plan}\u{1f}{name}"), n as i64))
        .collect()
}

/// A [`UNITS_METRIC`] label read back: `(client, plan, unit)`.
pub fn units_label(label: &str) -> Option<(&str, &str, &str)> {
    let mut parts = label.split('\u{1f}');
    let (client, plan, unit) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none() && UNIT_NAMES.contains(&unit)).then_some((client, plan, unit))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_default_prices_cost_a_run_what_cloudflare_lists() {
        let units = Units {
            d1_rows_read: 1_000_000,
            d1_rows_written: 1_000,
            kv_reads: 2,
            kv_writes: 1,
            queue_messages: 10,
            subrequests: 12,
            ..Units::default()
        };
        let usd = UnitPrices::default().cost_usd(&units);
        let expected = 0.001 + 1_000.0 * 1.0 / 1e6 + 2.0 * 0.5 / 1e6 + 5.0 / 1e6 + 10.0 * 1.2 / 1e6;
        assert!((usd - expected).abs() < 1e-12, "{usd} vs {expected}");
    }

    #[test]
    fn prices_override_the_defaults_and_bad_ones_name_the_variable_and_the_unit() {
        let prices = UnitPrices::parse(Some(r#"{"subrequests": 0.3, "d1_rows_read": 0}"#)).unwrap();
        assert_eq!(prices.cost_usd(&Units { subrequests: 1_000_000, d1_rows_read: 5, ..Units::default() }), 0.3);
        assert_eq!(UnitPrices::parse(None).unwrap(), UnitPrices::default());
        assert_eq!(UnitPrices::parse(Some(" ")).unwrap(), UnitPrices::default());
        for (bad, names) in [
            ("[1]", "COST_PRICES must be"),
            (r#"{"d1_rows": 1}"#, "COST_PRICES.d1_rows: not a unit"),
            (r#"{"kv_reads": -1}"#, "COST_PRICES.kv_reads: a price"),
        ] {
            let e = UnitPrices::parse(Some(bad)).unwrap_err();
            assert!(e.starts_with(names), "{bad}: {e}");
        }
    }

    #[test]
    fn totals_labels_read_back() {
        let totals = units_totals("acme", "standard-v1", &Units { kv_reads: 2, r2_writes: 1, ..Units::default() });
        assert_eq!(totals.len(), 2);
        let labels: Vec<_> = totals.iter().map(|(_, l, v)| (units_label(l).unwrap(), *v)).collect();
        assert_eq!(labels, [(("acme", "standard-v1", "kv_reads"), 2), (("acme", "standard-v1", "r2_writes"), 1)]);
        assert_eq!(units_label("a\u{1f}b\u{1f}nothing"), None);
    }

    proptest! {
        #[test]
        fn units_add_field_by_field_and_cost_is_linear(a in proptest::array::uniform10(0u64..1 << 40), b in proptest::array::uniform10(0u64..1 << 40)) {
            let (ua, ub) = (Units::from_values(a), Units::from_values(b));
            let mut sum = ua;
            sum += ub;
            for (i, name) in UNIT_NAMES.iter().enumerate() {
                prop_assert_eq!(sum.get(name), Some(a[i] + b[i]));
            }
            let prices = UnitPrices::default();
            let (ca, cb, cs) = (prices.cost_usd(&ua), prices.cost_usd(&ub), prices.cost_usd(&sum));
            prop_assert!((cs - (ca + cb)).abs() <= 1e-9 * cs.max(1.0));
        }
    }
}
