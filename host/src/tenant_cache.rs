//! One instance of the component: the tenant cache of one application,
//! for blocking callers ([`TenantCache`]) and async ones
//! ([`AsyncTenantCache`]). Both run each call under the deadline, replace
//! the instance after a trap, never copy a value that cannot be stored
//! into the component, and observe the call (`observe`).

use tracing::Instrument;
use wasmtime::Store;

use crate::capability::Grant;
use crate::error::CacheError;
use crate::instances::{Instances, State};
use crate::observe::{Call, Meter, Outcome};
use crate::plugin::Plugin;

pub use lease::ComputeError;

/// An instance, its store, and whether it trapped.
struct Slot {
    instances: Instances,
    store: Store<State>,
    plugin: Plugin,
    /// A trapped instance cannot be entered again.
    broken: bool,
    meter: Meter,
}

impl Slot {
    fn new(instances: Instances, (store, plugin): (Store<State>, Plugin)) -> Slot {
        let grant = &store.data().grant;
        let meter = Meter::new(grant.app(), grant.tenant_labels());
        Slot {
            instances,
            store,
            plugin,
            broken: false,
            meter,
        }
    }

    fn grant(&self) -> &Grant {
        &self.store.data().grant
    }

    /// Starts observing a call of `operation`.
    fn observe(&self, operation: &'static str, tenant: Option<&str>) -> Call {
        Call::start(operation, self.grant().app(), tenant)
    }

    /// Readies the instance for a blocking call: a fresh one after a trap,
    /// the deadline set.
    fn prepare(&mut self) -> Result<(), CacheError> {
        if self.broken {
            let fresh = self.instances.fresh(self.grant().clone()).map_err(CacheError::Trap)?;
            self.replace(fresh);
        }
        self.store.set_epoch_deadline(self.instances.deadline_ticks);
        Ok(())
    }

    /// [`prepare`](Self::prepare) for an async call.
    async fn prepare_async(&mut self) -> Result<(), CacheError> {
        if self.broken {
            let fresh = self.instances.fresh_async(self.grant().clone()).await;
            self.replace(fresh.map_err(CacheError::Trap)?);
        }
        self.store.set_epoch_deadline(self.instances.deadline_ticks);
        Ok(())
    }

    fn replace(&mut self, (store, plugin): (Store<State>, Plugin)) {
        (self.store, self.plugin, self.broken) = (store, plugin, false);
    }

    /// Takes a call's result: a trap breaks the instance, and says so when
    /// the memory limit caused it.
    fn settle<R>(&mut self, result: Result<R, CacheError>) -> Result<R, CacheError> {
        self.broken = matches!(result, Err(CacheError::Trap(_)));
        let limits = &self.store.data().limits;
        match result {
            Err(CacheError::Trap(trap)) if limits.refused => Err(CacheError::Trap(trap.context(format!(
                "it ran out of memory (its limit is {} MiB): split the call, or raise the memory limit",
                limits.bytes / (1024 * 1024)
            )))),
            result => result,
        }
    }

    /// The error for a value of `size` bytes the grant refuses whatever
    /// its key: such a value is not even copied into the component (it
    /// could exceed the component's memory).
    fn too_large(&self, size: usize) -> Option<CacheError> {
        let limit = self.grant().refuses_value(size)?;
        Some(CacheError::ValueTooLarge {
            size: size as u64,
            limit,
        })
    }

    /// For `set-many`: the error for its largest refused value, the keys of
    /// the refused values, and the entries that may fit.
    fn split_oversized(&self, entries: &[(String, Vec<u8>)]) -> Option<Oversized> {
        let largest = entries.iter().map(|(_, value)| value.len()).max().unwrap_or(0);
        let error = self.too_large(largest)?;
        let (oversized, fitting): (Vec<_>, Vec<_>) = entries
            .iter()
            .cloned()
            .partition(|(_, value)| self.grant().refuses_value(value.len()).is_some());
        Some((error, oversized.into_iter().map(|(key, _)| key).collect(), fitting))
    }
}

/// A `set-many` with values refused whatever their keys: the error, the
/// keys to remove, the entries to store.
type Oversized = (CacheError, Vec<String>, Vec<(String, Vec<u8>)>);

fn read(value: &Option<Vec<u8>>) -> Outcome {
    match value {
        Some(value) => Outcome::Hit {
            bytes: value.len() as u64,
        },
        None => Outcome::Miss,
    }
}

fn read_many(values: &[Option<Vec<u8>>]) -> Outcome {
    let hits = values.iter().filter(|value| value.is_some()).count() as u64;
    Outcome::Read {
        hits,
        misses: values.len() as u64 - hits,
        bytes: values.iter().flatten().map(|value| value.len() as u64).sum(),
    }
}

fn stored(entries: &[(String, Vec<u8>)]) -> Outcome {
    Outcome::Stored {
        bytes: entries.iter().map(|(_, value)| value.len() as u64).sum(),
    }
}

/// One instance of the component for blocking callers: the tenant cache of
/// one application. Reuse it across calls (it remembers namespace
/// versions, which saves round trips); it is `Send` but not `Sync`: use one
/// per thread.
pub struct TenantCache {
    slot: Slot,
}

impl TenantCache {
    pub(crate) fn new(instances: Instances, grant: Grant) -> anyhow::Result<TenantCache> {
        let fresh = instances.fresh(grant)?;
        Ok(TenantCache {
            slot: Slot::new(instances, fresh),
        })
    }

    /// Runs `call` observed as `operation` on `tenant`.
    fn observed<R>(
        &mut self,
        operation: &'static str,
        tenant: Option<&str>,
        outcome: impl FnOnce(&R) -> Outcome,
        call: impl FnOnce(&mut Slot) -> Result<R, CacheError>,
    ) -> Result<R, CacheError> {
        let observed = self.slot.observe(operation, tenant);
        let result = observed.span().in_scope(|| call(&mut self.slot));
        observed.finish(&mut self.slot.meter, &result, outcome);
        result
    }

    /// Runs one export under the deadline, on a fresh instance if the last
    /// one trapped.
    fn run<R>(
        slot: &mut Slot,
        call: impl FnOnce(&Plugin, &mut Store<State>) -> Result<R, CacheError>,
    ) -> Result<R, CacheError> {
        slot.prepare()?;
        let result = call(&slot.plugin, &mut slot.store);
        slot.settle(result)
    }

    /// Reads `key` of `tenant`; `None` on a miss or after a clear.
    pub fn get(&mut self, tenant: &str, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.observed("get", Some(tenant), read, |slot| {
            Self::run(slot, |plugin, store| plugin.get(store, tenant, key))
        })
    }

    /// Stores `value` under `key` of `tenant`; `ttl` in seconds (≥ 1),
    /// `None` to keep it until memcached evicts it. A value too large for
    /// the backend fails with [`CacheError::ValueTooLarge`] and removes the
    /// key, as memcached itself does.
    pub fn set(&mut self, tenant: &str, key: &str, value: &[u8], ttl: Option<u32>) -> Result<(), CacheError> {
        let bytes = value.len() as u64;
        self.observed(
            "set",
            Some(tenant),
            |_| Outcome::Stored { bytes },
            |slot| {
                if let Some(error) = slot.too_large(value.len()) {
                    Self::run(slot, |plugin, store| plugin.delete(store, tenant, key))?;
                    return Err(error);
                }
                Self::run(slot, |plugin, store| plugin.set(store, tenant, key, value, ttl))
            },
        )
    }

    /// Removes `key` of `tenant`; removing a missing entry is not an error.
    pub fn delete(&mut self, tenant: &str, key: &str) -> Result<(), CacheError> {
        self.observed(
            "delete",
            Some(tenant),
            |_| Outcome::Removed,
            |slot| Self::run(slot, |plugin, store| plugin.delete(store, tenant, key)),
        )
    }

    /// Makes every entry of `tenant` written so far unreachable.
    pub fn clear(&mut self, tenant: &str) -> Result<(), CacheError> {
        self.observed(
            "clear",
            Some(tenant),
            |_| Outcome::Cleared,
            |slot| Self::run(slot, |plugin, store| plugin.clear(store, tenant)),
        )
    }

    /// Makes every entry of every tenant of the application unreachable.
    pub fn clear_all(&mut self) -> Result<(), CacheError> {
        self.observed(
            "clear-all",
            None,
            |_| Outcome::Cleared,
            |slot| Self::run(slot, |plugin, store| plugin.clear_all(store)),
        )
    }

    /// Reads several keys of one tenant in one round trip.
    pub fn get_many(&mut self, tenant: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        self.observed(
            "get-many",
            Some(tenant),
            |values: &Vec<_>| read_many(values),
            |slot| Self::run(slot, |plugin, store| plugin.get_many(store, tenant, keys)),
        )
    }

    /// Stores several entries of one tenant in one round trip. If some
    /// values are too large, the others are stored, the large ones' keys
    /// removed, and the call fails with [`CacheError::ValueTooLarge`].
    pub fn set_many(
        &mut self,
        tenant: &str,
        entries: &[(String, Vec<u8>)],
        ttl: Option<u32>,
    ) -> Result<(), CacheError> {
        self.observed(
            "set-many",
            Some(tenant),
            |_| stored(entries),
            |slot| {
                let Some((error, oversized, fitting)) = slot.split_oversized(entries) else {
                    return Self::run(slot, |plugin, store| plugin.set_many(store, tenant, entries, ttl));
                };
                for key in &oversized {
                    Self::run(slot, |plugin, store| plugin.delete(store, tenant, key))?;
                }
                if !fitting.is_empty() {
                    Self::run(slot, |plugin, store| plugin.set_many(store, tenant, &fitting, ttl))?;
                }
                Err(error)
            },
        )
    }

    /// The grant this instance runs with.
    pub fn grant(&self) -> &Grant {
        self.slot.grant()
    }
}

/// One instance of the component for async callers: [`TenantCache`]'s
/// calls, awaited. Its capability waits for memcached on tokio without
/// blocking a thread, and its exports are called with `call_async`; it
/// needs a tokio runtime with I/O and time enabled. `Send`, not `Sync`: a
/// task at a time.
pub struct AsyncTenantCache {
    slot: Slot,
}

/// Runs one export of an async instance under the deadline, observed: the
/// async twin of [`TenantCache`]'s `observed` + `run`.
macro_rules! run_async {
    ($self:ident, $operation:literal, $tenant:expr, $outcome:expr, |$plugin:ident, $store:ident| $call:expr) => {{
        let observed = $self.slot.observe($operation, $tenant);
        let span = observed.span().clone();
        let result = async {
            $self.slot.prepare_async().await?;
            let Slot {
                plugin: $plugin,
                store: $store,
                ..
            } = &mut $self.slot;
            let result = $call.await;
            $self.slot.settle(result)
        }
        .instrument(span)
        .await;
        observed.finish(&mut $self.slot.meter, &result, $outcome);
        result
    }};
}

impl AsyncTenantCache {
    pub(crate) async fn new(instances: Instances, grant: Grant) -> anyhow::Result<AsyncTenantCache> {
        let fresh = instances.fresh_async(grant).await?;
        Ok(AsyncTenantCache {
            slot: Slot::new(instances, fresh),
        })
    }

    /// Reads `key` of `tenant`; `None` on a miss or after a clear.
    pub async fn get(&mut self, tenant: &str, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        run_async!(self, "get", Some(tenant), read, |plugin, store| plugin
            .get_async(store, tenant, key))
    }

    /// Stores `value` under `key` of `tenant` (see [`TenantCache::set`]).
    pub async fn set(&mut self, tenant: &str, key: &str, value: &[u8], ttl: Option<u32>) -> Result<(), CacheError> {
        if let Some(error) = self.slot.too_large(value.len()) {
            self.delete(tenant, key).await?;
            return Err(error);
        }
        let bytes = value.len() as u64;
        run_async!(
            self,
            "set",
            Some(tenant),
            |_: &()| Outcome::Stored { bytes },
            |plugin, store| { plugin.set_async(store, tenant, key, value, ttl) }
        )
    }

    /// Removes `key` of `tenant`; removing a missing entry is not an error.
    pub async fn delete(&mut self, tenant: &str, key: &str) -> Result<(), CacheError> {
        run_async!(
            self,
            "delete",
            Some(tenant),
            |_: &()| Outcome::Removed,
            |plugin, store| { plugin.delete_async(store, tenant, key) }
        )
    }

    /// Makes every entry of `tenant` written so far unreachable.
    pub async fn clear(&mut self, tenant: &str) -> Result<(), CacheError> {
        run_async!(
            self,
            "clear",
            Some(tenant),
            |_: &()| Outcome::Cleared,
            |plugin, store| { plugin.clear_async(store, tenant) }
        )
    }

    /// Makes every entry of every tenant of the application unreachable.
    pub async fn clear_all(&mut self) -> Result<(), CacheError> {
        run_async!(self, "clear-all", None, |_: &()| Outcome::Cleared, |plugin, store| {
            plugin.clear_all_async(store)
        })
    }

    /// Reads several keys of one tenant in one round trip.
    pub async fn get_many(&mut self, tenant: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        run_async!(
            self,
            "get-many",
            Some(tenant),
            |values: &Vec<_>| read_many(values),
            |plugin, store| { plugin.get_many_async(store, tenant, keys) }
        )
    }

    /// Stores several entries of one tenant in one round trip (see
    /// [`TenantCache::set_many`]).
    pub async fn set_many(
        &mut self,
        tenant: &str,
        entries: &[(String, Vec<u8>)],
        ttl: Option<u32>,
    ) -> Result<(), CacheError> {
        if let Some((error, oversized, fitting)) = self.slot.split_oversized(entries) {
            for key in &oversized {
                self.delete(tenant, key).await?;
            }
            if !fitting.is_empty() {
                Box::pin(self.set_many(tenant, &fitting, ttl)).await?;
            }
            return Err(error);
        }
        run_async!(
            self,
            "set-many",
            Some(tenant),
            |_: &()| stored(entries),
            |plugin, store| { plugin.set_many_async(store, tenant, entries, ttl) }
        )
    }

    /// The grant this instance runs with.
    pub fn grant(&self) -> &Grant {
        self.slot.grant()
    }
}

// After `run_async!`, which they use.
mod atomics;
mod lease;
