//! Which D1 database holds a client's data (`D1_SHARDS`, `SHARD_BY_CLIENT`).
//!
//! Runs never touch each other except through their client's admission pool, so the shard key
//! is the client id: every row of a client (its runs, steps, attempts, events, executions,
//! plans, schedules, webhooks, pools, rate limits) lives in one of `D1_SHARDS` databases, bound
//! as `DB_0`..`DB_{N-1}`. A client's shard is pinned in `SHARD_BY_CLIENT` or else a stable
//! hash of its id. A run or execution id names the shard it was created in (a `_s{k}` suffix;
//! none for shard 0), so a callback, a queue message or `/runs/:id` finds its database
//! without a lookup, even after its client moved to another shard.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// `D1_SHARDS`: how many D1 databases hold clients' data (bindings `DB_0`..`DB_{N-1}`).
pub const D1_SHARDS: &str = "D1_SHARDS";
/// `SHARD_BY_CLIENT`: a JSON object of client id → shard, overriding the hash.
pub const SHARD_BY_CLIENT: &str = "SHARD_BY_CLIENT";
/// The most shards a deployment may name.
pub const MAX_SHARDS: u32 = 64;

/// One of the databases: `DB_{index}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Shard(u32);

impl Shard {
    /// Shard 0: the database of a single-shard deployment, and of ids without a shard.
    pub const FIRST: Shard = Shard(0);

    /// The shard of index `index` (not checked against a deployment's count).
    pub fn new(index: u32) -> Shard {
        Shard(index)
    }

    /// Its index.
    pub fn index(self) -> u32 {
        self.0
    }

    /// Its D1 binding: `DB_{index}`.
    pub fn binding(self) -> String {
        format!("DB_{}", self.0)
    }

    /// What a generated id made in this shard ends with: nothing for shard 0, else `_s{k}`.
    pub fn id_suffix(self) -> String {
        if self.0 == 0 {
            String::new()
        } else {
            format!("_s{}", self.0)
        }
    }

    /// The shard an id names (its `_s{k}` suffix; shard 0 without one), and the id without it.
    pub fn split_id(id: &str) -> (&str, Shard) {
        if let Some((head, tail)) = id.rsplit_once("_s") {
            let canonical = !tail.is_empty()
                && tail.len() <= 2
                && tail.bytes().all(|b| b.is_ascii_digit())
                && !tail.starts_with('0');
            if canonical {
                if let Ok(index) = tail.parse::<u32>() {
                    if index < MAX_SHARDS {
                        return (head, Shard(index));
                    }
                }
            }
        }
        (id, Shard::FIRST)
    }

    /// The shard an id names (see [`Shard::split_id`]).
    pub fn of_id(id: &str) -> Shard {
        Shard::split_id(id).1
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a shard setting is refused: it names the variable and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ShardError {
    /// The variable.
    pub variable: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// The deployment's shards: how many, and the clients pinned to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shards {
    count: u32,
    pinned: BTreeMap<String, Shard>,
}

impl Default for Shards {
    fn default() -> Self {
        Shards { count: 1, pinned: BTreeMap::new() }
    }
}

impl Shards {
    /// The shards from `D1_SHARDS` (empty: 1) and `SHARD_BY_CLIENT` (empty: none pinned).
    /// Every problem names its variable.
    pub fn parse(count: Option<&str>, by_client: Option<&str>) -> Result<Shards, ShardError> {
        let count = match count.map(str::trim).filter(|t| !t.is_empty()) {
            None => 1,
            Some(text) => {
                text.parse::<u32>().ok().filter(|n| (1..=MAX_SHARDS).contains(n)).ok_or_else(|| ShardError {
                    variable: D1_SHARDS,
                    problem: format!("must be a whole number of databases from 1 to {MAX_SHARDS}, got {text:?}"),
                })?
            }
        };
        let mut pinned = BTreeMap::new();
        if let Some(text) = by_client.map(str::trim).filter(|t| !t.is_empty()) {
            let refuse = |problem: String| ShardError { variable: SHARD_BY_CLIENT, problem };
            let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(text)
                .map_err(|e| refuse(format!("must be a JSON object of client id → shard: {e}")))?;
            for (client, value) in map {
                let index = value.as_u64().filter(|n| *n < u64::from(count)).ok_or_else(|| {
                    refuse(format!("client {client:?}: shard must be from 0 to {}, got {value}", count - 1))
                })?;
                pinned.insert(client, Shard(index as u32));
            }
        }
        Ok(Shards { count, pinned })
    }

    /// How many databases.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Every shard, in order.
    pub fn all(&self) -> impl Iterator<Item = Shard> {
        (0..self.count).map(Shard)
    }

    /// Whether `shard` is one of this deployment's.
    pub fn contains(&self, shard: Shard) -> bool {
        shard.0 < self.count
    }

    /// Where `client`'s new rows go: its pinned shard, else a stable hash of its id.
    pub fn of_client(&self, client: &str) -> Shard {
        if let Some(shard) = self.pinned.get(client) {
            return *shard;
        }
        if self.count == 1 {
            return Shard::FIRST;
        }
        let digest = Sha256::digest(client.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Shard((u64::from_be_bytes(first) % u64::from(self.count)) as u32)
    }

    /// A service's concurrency cap as each shard enforces it: every shard keeps its own slots,
    /// so each takes an equal share (at least one), and together they hold at most the cap
    /// whenever the cap is at least the number of shards.
    pub fn share_of_cap(&self, cap: u32) -> u32 {
        (cap / self.count).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_database_is_the_default_and_puts_everyone_in_shard_0() {
        let shards = Shards::parse(None, Some("")).unwrap();
        assert_eq!(shards.count(), 1);
        assert_eq!(shards.of_client("acme"), Shard::FIRST);
        assert_eq!(shards.all().map(Shard::binding).collect::<Vec<_>>(), ["DB_0"]);
    }

    #[test]
    fn clients_spread_over_the_shards_stably_unless_pinned() {
        let shards = Shards::parse(Some("4"), None).unwrap();
        let placed: Vec<Shard> = (0..400).map(|i| shards.of_client(&format!("client-{i}"))).collect();
        for shard in shards.all() {
            let n = placed.iter().filter(|s| **s == shard).count();
            assert!((60..=140).contains(&n), "shard {shard} got {n} of 400 clients");
        }
        assert_eq!(shards.of_client("client-7"), Shards::parse(Some("4"), None).unwrap().of_client("client-7"));
        let pinned = Shards::parse(Some("4"), Some(r#"{"client-7": 3, "client-8": 0}"#)).unwrap();
        assert_eq!(pinned.of_client("client-7"), Shard::new(3));
        assert_eq!(pinned.of_client("client-8"), Shard::new(0));
    }

    #[test]
    fn bad_settings_name_their_variable() {
        for (count, by_client, variable, says) in [
            (Some("0"), None, D1_SHARDS, "from 1 to 64"),
            (Some("two"), None, D1_SHARDS, "\"two\""),
            (Some("65"), None, D1_SHARDS, "from 1 to 64"),
            (Some("2"), Some("[1]"), SHARD_BY_CLIENT, "JSON object"),
            (Some("2"), Some(r#"{"acme": 2}"#), SHARD_BY_CLIENT, "client \"acme\": shard must be from 0 to 1"),
            (None, Some(r#"{"acme": "0"}"#), SHARD_BY_CLIENT, "from 0 to 0"),
        ] {
            let error = Shards::parse(count, by_client).unwrap_err();
            assert_eq!(error.variable, variable);
            assert!(error.to_string().starts_with(variable), "{error}");
            assert!(error.problem.contains(says), "{error}");
        }
    }

    #[test]
    fn an_id_names_its_shard_and_ids_without_one_are_in_shard_0() {
        assert_eq!(Shard::split_id("run_1_ab_s3"), ("run_1_ab", Shard::new(3)));
        assert_eq!(Shard::split_id("run_1_ab_s12"), ("run_1_ab", Shard::new(12)));
        for plain in ["run_1_ab", "run_1_ab_s", "run_1_ab_s0", "run_1_ab_s03", "run_1_ab_s64", "run_1_ab_sx", "x_s123"]
        {
            assert_eq!(Shard::split_id(plain), (plain, Shard::FIRST), "{plain}");
        }
        assert_eq!(Shard::new(0).id_suffix(), "");
        assert_eq!(Shard::new(5).id_suffix(), "_s5");
    }

    #[test]
    fn a_services_cap_is_shared_among_the_shards() {
        let two = Shards::parse(Some("2"), None).unwrap();
        assert_eq!(two.share_of_cap(10), 5);
        assert_eq!(two.share_of_cap(1), 1);
        assert_eq!(Shards::default().share_of_cap(7), 7);
    }
}
