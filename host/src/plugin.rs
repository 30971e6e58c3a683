//! The component's exports, callable in any wasmtime store: for embedders
//! that bring their own `Engine`, `Linker<T>` and `Store<T>`.

use wasmtime::AsContextMut;
use wasmtime::component::{Component, Linker};

use crate::CacheError;
use crate::bindings::exported::Error as WitError;

/// An instantiated tenant-cache component.
pub struct Plugin(crate::bindings::Plugin);

/// A call's outcome: a trap (outer) or the component's answer (inner).
fn settle<R>(result: wasmtime::Result<Result<R, WitError>>, size: u64) -> Result<R, CacheError> {
    match result {
        Ok(answer) => answer.map_err(|error| CacheError::from_wit(error, size)),
        Err(trap) => {
            let interrupted = trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt);
            let trap = anyhow::Error::from(trap);
            Err(CacheError::Trap(match interrupted {
                true => trap.context("it ran past its call deadline and was stopped"),
                false => trap,
            }))
        }
    }
}

impl Plugin {
    /// Instantiates `component` in `store`; `linker` must hold the
    /// capability (see [`add_to_linker`](crate::add_to_linker)).
    pub fn instantiate<T: 'static>(
        store: impl AsContextMut<Data = T>,
        component: &Component,
        linker: &Linker<T>,
    ) -> anyhow::Result<Plugin> {
        Ok(Plugin(
            crate::bindings::Plugin::instantiate(store, component, linker).map_err(anyhow::Error::from)?,
        ))
    }

    pub(crate) fn from_bindings(plugin: crate::bindings::Plugin) -> Plugin {
        Plugin(plugin)
    }

    fn exports(&self) -> &crate::bindings::exports::tenant_cache::cache::tenant_cache::Guest {
        self.0.tenant_cache_cache_tenant_cache()
    }

    /// Reads `key` of `tenant`; `None` on a miss or after a clear.
    pub fn get(&self, store: impl AsContextMut, tenant: &str, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        settle(self.exports().call_get(store, tenant, key), 0)
    }

    /// Stores `value` under `key` of `tenant`; `ttl` in seconds (≥ 1),
    /// `None` to keep it until memcached evicts it.
    pub fn set(
        &self,
        store: impl AsContextMut,
        tenant: &str,
        key: &str,
        value: &[u8],
        ttl: Option<u32>,
    ) -> Result<(), CacheError> {
        settle(
            self.exports().call_set(store, tenant, key, value, ttl),
            value.len() as u64,
        )
    }

    /// Removes `key` of `tenant`; removing a missing entry is not an error.
    pub fn delete(&self, store: impl AsContextMut, tenant: &str, key: &str) -> Result<(), CacheError> {
        settle(self.exports().call_delete(store, tenant, key), 0)
    }

    /// Makes every entry of `tenant` written so far unreachable.
    pub fn clear(&self, store: impl AsContextMut, tenant: &str) -> Result<(), CacheError> {
        settle(self.exports().call_clear(store, tenant), 0)
    }

    /// Makes every entry of every tenant of the application unreachable.
    pub fn clear_all(&self, store: impl AsContextMut) -> Result<(), CacheError> {
        settle(self.exports().call_clear_all(store), 0)
    }

    /// Reads several keys of one tenant in one round trip.
    pub fn get_many(
        &self,
        store: impl AsContextMut,
        tenant: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        settle(self.exports().call_get_many(store, tenant, keys), 0)
    }

    /// Stores several entries of one tenant in one round trip.
    pub fn set_many(
        &self,
        store: impl AsContextMut,
        tenant: &str,
        entries: &[(String, Vec<u8>)],
        ttl: Option<u32>,
    ) -> Result<(), CacheError> {
        let size = entries.iter().map(|(_, value)| value.len() as u64).max().unwrap_or(0);
        settle(self.exports().call_set_many(store, tenant, entries, ttl), size)
    }
}
