//! Where the budgets' buckets live: one per grant scope (an application,
//! or one tenant of it on a bound grant) in the backend, so every instance
//! serving the tenant in this process, on any thread or task, spends from
//! the same buckets. Other processes keep their own (docs/trust.md, "Fair
//! share").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tenant_cache_memcached::budget::{Buckets, Budgets, Cost};
use tenant_cache_memcached::types::OverBudget;

/// Past this many scopes, the ones whose buckets are full again are
/// forgotten (a full bucket is what a new one is), so the ledger holds the
/// scopes that spent within their last burst's refill time, and not every
/// tenant ever seen.
const FORGET_AT: usize = 4096;

/// The buckets of every scope with a budget.
#[derive(Default)]
pub(crate) struct Ledger {
    /// A scope's buckets, with the budgets they were last charged under
    /// (what tells when they are full again).
    scopes: Mutex<HashMap<Arc<str>, (Budgets, Buckets)>>,
}

impl Ledger {
    /// Pays `cost` from the buckets of `scope` under `budgets`, or refuses
    /// it and takes nothing.
    pub(crate) fn charge(&self, scope: &Arc<str>, budgets: &Budgets, cost: Cost) -> Result<(), OverBudget> {
        let now = Instant::now();
        // A poisoned lock held buckets mid-charge at worst: still buckets.
        let mut scopes = self.scopes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if scopes.len() >= FORGET_AT && !scopes.contains_key(scope) {
            scopes.retain(|_, (budgets, buckets)| !buckets.are_full(budgets, now));
        }
        let (charged_under, buckets) = scopes
            .entry(scope.clone())
            .or_insert_with(|| (*budgets, Buckets::new(now)));
        *charged_under = *budgets;
        buckets.charge(budgets, cost, now)
    }
}

#[cfg(test)]
mod tests {
    use tenant_cache_memcached::budget::Rate;

    use super::*;

    #[test]
    fn scopes_spend_from_their_own_buckets_and_idle_ones_are_forgotten() {
        let ledger = Ledger::default();
        let budgets = Budgets {
            commands: Some(Rate {
                per_second: 1,
                burst: 2,
            }),
            ..Budgets::default()
        };
        let cost = Cost {
            bytes_written: 0,
            commands: 2,
        };
        let first: Arc<str> = "first".into();
        assert!(ledger.charge(&first, &budgets, cost).is_ok());
        assert!(ledger.charge(&first, &budgets, cost).is_err());
        assert!(ledger.charge(&"second".into(), &budgets, cost).is_ok());
        // Scopes with full buckets (spent nothing) are forgotten past the
        // bound; the one still spent is kept.
        let idle = Budgets::default();
        for n in 0..FORGET_AT {
            ledger.charge(&format!("idle {n}").into(), &idle, cost).unwrap();
        }
        let scopes = ledger.scopes.lock().unwrap();
        assert!(scopes.len() < FORGET_AT, "{}", scopes.len());
        assert!(scopes.contains_key("first"));
    }
}
