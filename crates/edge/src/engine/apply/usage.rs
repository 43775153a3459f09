//! The units runs used ([`crate::meter`]), added to their rows and to `/metrics`' totals by
//! client and plan. Accounting, not state: nothing decides on these columns, so they are added
//! outside the version gate, whoever wrote the run meanwhile (a gate lost would lose units that
//! were spent).

use std::collections::BTreeMap;

use baton_core::shard::Shard;
use worker::Env;

use crate::d1::{runs, Db};
use crate::meter::{self, Usage};

/// Adds every unit waiting in this isolate to its run: one D1 batch per shard, counted to no
/// run. Best effort: a batch that fails keeps its units for the next call in this isolate.
pub async fn record_usage(env: &Env) {
    let pending = meter::take_pending();
    if pending.is_empty() {
        return;
    }
    let mut by_shard: BTreeMap<Shard, Vec<(String, Usage)>> = BTreeMap::new();
    for (run, usage) in pending {
        by_shard.entry(Shard::of_id(&run)).or_default().push((run, usage));
    }
    for (shard, units) in by_shard {
        let written = async {
            let db = Db::of_shard(env, shard)?;
            let mut stmts = Vec::with_capacity(units.len() * 2);
            for (run, usage) in &units {
                stmts.extend(runs::add_usage(&db, run, usage)?);
            }
            db.batch(stmts).await
        };
        if let Err(e) = written.await {
            worker::console_warn!("units of {} runs not recorded yet: {e}", units.len());
            meter::put_back(units);
        }
    }
}
