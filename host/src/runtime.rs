//! Compiling the component once and calling it.

use std::path::Path;

use anyhow::Context;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};

use crate::bindings::exported::Error as WitError;
use crate::bindings::{Plugin, PluginPre};
use crate::{CacheError, Grant};

/// The tenant-cache component built with this crate.
pub const COMPONENT: &[u8] = include_bytes!(env!("TENANT_CACHE_COMPONENT"));

/// A compiled component, ready to be instantiated many times: compile
/// once per process, then [`instantiate`](Runtime::instantiate) per grant.
#[derive(Clone)]
pub struct Runtime {
    pre: PluginPre<Grant>,
}

impl Runtime {
    /// Compiles the component built with this crate.
    pub fn new() -> anyhow::Result<Runtime> {
        Runtime::from_bytes(COMPONENT)
    }

    /// Compiles the component in the file at `path`.
    pub fn from_file(path: &Path) -> anyhow::Result<Runtime> {
        let bytes = std::fs::read(path).with_context(|| format!("reading the component {}", path.display()))?;
        Runtime::from_bytes(&bytes).with_context(|| format!("loading the component {}", path.display()))
    }

    /// Compiles a component from its bytes.
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Runtime> {
        let engine = Engine::new(&Self::config())?;
        let component = Component::new(&engine, bytes)
            .map_err(anyhow::Error::from)
            .context("compiling the component")?;
        Runtime::with_component(&engine, &component)
    }

    /// Links an already compiled component, for embedders that manage
    /// their own [`Engine`].
    pub fn with_component(engine: &Engine, component: &Component) -> anyhow::Result<Runtime> {
        let mut linker = Linker::new(engine);
        crate::add_to_linker(&mut linker, |grant| grant)?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .context("the component needs imports this host does not grant")?;
        Ok(Runtime {
            pre: PluginPre::new(pre)?,
        })
    }

    /// The engine configuration this crate uses.
    pub fn config() -> Config {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // No component-model async is used: cheaper calls in both directions.
        config.concurrency_support(false);
        config
    }

    /// A fresh instance of the component holding `grant`.
    pub fn instantiate(&self, grant: Grant) -> anyhow::Result<TenantCache> {
        let (store, plugin) = self.fresh(grant)?;
        Ok(TenantCache {
            runtime: self.clone(),
            store,
            plugin,
            broken: false,
        })
    }

    fn fresh(&self, grant: Grant) -> anyhow::Result<(Store<Grant>, Plugin)> {
        let mut store = Store::new(self.pre.engine(), grant);
        let plugin = self
            .pre
            .instantiate(&mut store)
            .map_err(anyhow::Error::from)
            .context("instantiating the component")?;
        Ok((store, plugin))
    }
}

/// One instance of the component: the tenant cache of one application.
/// Reuse it across calls (it remembers namespace versions, which saves
/// round trips); it is not `Sync`, so use one per thread.
pub struct TenantCache {
    runtime: Runtime,
    store: Store<Grant>,
    plugin: Plugin,
    /// A trapped instance cannot be entered again.
    broken: bool,
}

impl TenantCache {
    /// Reads `key` of `tenant`; `None` on a miss or after a clear.
    pub fn get(&mut self, tenant: &str, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.call(0, |plugin, store| {
            plugin.tenant_cache_cache_tenant_cache().call_get(store, tenant, key)
        })
    }

    /// Stores `value` under `key` of `tenant`; `ttl` in seconds (≥ 1),
    /// `None` to keep it until memcached evicts it.
    pub fn set(&mut self, tenant: &str, key: &str, value: &[u8], ttl: Option<u32>) -> Result<(), CacheError> {
        let size = value.len() as u64;
        self.call(size, |plugin, store| {
            plugin
                .tenant_cache_cache_tenant_cache()
                .call_set(store, tenant, key, value, ttl)
        })
    }

    /// Makes every entry of `tenant` written so far unreachable.
    pub fn clear(&mut self, tenant: &str) -> Result<(), CacheError> {
        self.call(0, |plugin, store| {
            plugin.tenant_cache_cache_tenant_cache().call_clear(store, tenant)
        })
    }

    /// Makes every entry of every tenant of the application unreachable.
    pub fn clear_all(&mut self) -> Result<(), CacheError> {
        self.call(0, |plugin, store| {
            plugin.tenant_cache_cache_tenant_cache().call_clear_all(store)
        })
    }

    /// Reads several keys of one tenant in one round trip.
    pub fn get_many(&mut self, tenant: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        self.call(0, |plugin, store| {
            plugin
                .tenant_cache_cache_tenant_cache()
                .call_get_many(store, tenant, keys)
        })
    }

    /// Stores several entries of one tenant in one round trip.
    pub fn set_many(
        &mut self,
        tenant: &str,
        entries: &[(String, Vec<u8>)],
        ttl: Option<u32>,
    ) -> Result<(), CacheError> {
        let size = entries.iter().map(|(_, value)| value.len() as u64).max().unwrap_or(0);
        self.call(size, |plugin, store| {
            plugin
                .tenant_cache_cache_tenant_cache()
                .call_set_many(store, tenant, entries, ttl)
        })
    }

    /// The grant this instance runs with.
    pub fn grant(&self) -> &Grant {
        self.store.data()
    }

    fn call<R>(
        &mut self,
        size: u64,
        call: impl FnOnce(&Plugin, &mut Store<Grant>) -> wasmtime::Result<Result<R, WitError>>,
    ) -> Result<R, CacheError> {
        if self.broken {
            let (store, plugin) = self
                .runtime
                .fresh(self.store.data().clone())
                .map_err(CacheError::Trap)?;
            (self.store, self.plugin, self.broken) = (store, plugin, false);
        }
        match call(&self.plugin, &mut self.store) {
            Ok(result) => result.map_err(|error| CacheError::from_wit(error, size)),
            Err(trap) => {
                self.broken = true;
                Err(CacheError::Trap(trap.into()))
            }
        }
    }
}
