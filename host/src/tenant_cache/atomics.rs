//! Counters and compare-and-swap, for callers of [`TenantCache`] and
//! [`AsyncTenantCache`]. The logic is the component's (`increment`,
//! `get-for-swap`, `compare-and-swap`); this module gives it the host's
//! types.

use tracing::Instrument;

use super::{AsyncTenantCache, Slot, TenantCache, read};
use crate::calls::{SwapToken, Swappable};
use crate::error::CacheError;
use crate::observe::Outcome;

fn swapped(stored: &bool) -> Outcome {
    match stored {
        true => Outcome::Stored { bytes: 0 },
        false => Outcome::Conflict,
    }
}

impl TenantCache {
    /// Adds `delta` to the counter under `key` of `tenant` and returns the
    /// new count, atomically across every instance, process and host. A
    /// missing entry, or one from before a clear, counts from 0; an entry
    /// set to a decimal number counts from it; any other value fails with
    /// [`CacheError::NotACounter`]. One round trip once this instance knows
    /// the tenant and the counter; [`get`](Self::get) reads the count as
    /// decimal text.
    pub fn increment(&mut self, tenant: &str, key: &str, delta: i64) -> Result<i64, CacheError> {
        self.observed(
            "increment",
            Some(tenant),
            |_| Outcome::Counted,
            |slot| Self::run(slot, |plugin, store| plugin.increment(store, tenant, key, delta)),
        )
    }

    /// Reads `key` of `tenant` as [`get`](Self::get) does, with the token
    /// to replace it by [`compare_and_swap`](Self::compare_and_swap).
    pub fn get_for_swap(&mut self, tenant: &str, key: &str) -> Result<Swappable, CacheError> {
        self.observed(
            "get-for-swap",
            Some(tenant),
            |read_value: &Swappable| read(&read_value.value),
            |slot| Self::run(slot, |plugin, store| plugin.get_for_swap(store, tenant, key)),
        )
    }

    /// Stores `value` under `key` of `tenant` if nothing changed the entry
    /// (no write, delete, increment or clear) since `token` was read:
    /// whether it did. One round trip; the value is kept until memcached
    /// evicts it.
    pub fn compare_and_swap(
        &mut self,
        tenant: &str,
        key: &str,
        value: &[u8],
        token: &SwapToken,
    ) -> Result<bool, CacheError> {
        self.observed("compare-and-swap", Some(tenant), swapped, |slot| {
            if let Some(error) = slot.too_large(value.len()) {
                return Err(error);
            }
            Self::run(slot, |plugin, store| {
                plugin.compare_and_swap(store, tenant, key, value, token)
            })
        })
    }
}

impl AsyncTenantCache {
    /// [`TenantCache::increment`], awaited.
    pub async fn increment(&mut self, tenant: &str, key: &str, delta: i64) -> Result<i64, CacheError> {
        run_async!(
            self,
            "increment",
            Some(tenant),
            |_: &i64| Outcome::Counted,
            |plugin, store| { plugin.increment_async(store, tenant, key, delta) }
        )
    }

    /// [`TenantCache::get_for_swap`], awaited.
    pub async fn get_for_swap(&mut self, tenant: &str, key: &str) -> Result<Swappable, CacheError> {
        run_async!(
            self,
            "get-for-swap",
            Some(tenant),
            |read_value: &Swappable| read(&read_value.value),
            |plugin, store| { plugin.get_for_swap_async(store, tenant, key) }
        )
    }

    /// [`TenantCache::compare_and_swap`], awaited.
    pub async fn compare_and_swap(
        &mut self,
        tenant: &str,
        key: &str,
        value: &[u8],
        token: &SwapToken,
    ) -> Result<bool, CacheError> {
        if let Some(error) = self.slot.too_large(value.len()) {
            return Err(error);
        }
        run_async!(self, "compare-and-swap", Some(tenant), swapped, |plugin, store| {
            plugin.compare_and_swap_async(store, tenant, key, value, token)
        })
    }
}
