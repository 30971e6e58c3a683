//! The public face of a compiled component: compile once per process, then
//! an instance per grant, for blocking or async callers. How instances are
//! made and contained is `instances`; what one serves, `tenant_cache`.

use std::path::Path;

use anyhow::Context;

use crate::capability::Grant;
use crate::instances::{Instances, RuntimeOptions};
use crate::tenant_cache::{AsyncTenantCache, TenantCache};

/// The tenant-cache component this crate carries: built from `guest/` in
/// its repository, packaged with the crate outside it.
pub const COMPONENT: &[u8] = include_bytes!(env!("TENANT_CACHE_COMPONENT"));

/// A compiled component, ready to be instantiated many times: compile
/// once per process, then [`instantiate`](Runtime::instantiate) (or
/// [`instantiate_async`](Runtime::instantiate_async)) per grant. Cloning is
/// cheap.
#[derive(Clone)]
pub struct Runtime {
    instances: Instances,
}

impl Runtime {
    /// Compiles the component built with this crate, with default options.
    pub fn new() -> anyhow::Result<Runtime> {
        Runtime::from_bytes(COMPONENT, RuntimeOptions::default())
    }

    /// Compiles the component in the file at `path`.
    pub fn from_file(path: &Path, options: RuntimeOptions) -> anyhow::Result<Runtime> {
        let bytes = std::fs::read(path).with_context(|| format!("reading the component {}", path.display()))?;
        Runtime::from_bytes(&bytes, options).with_context(|| format!("loading the component {}", path.display()))
    }

    /// Compiles (or loads from `options.cache_dir`) a component from its bytes.
    pub fn from_bytes(bytes: &[u8], options: RuntimeOptions) -> anyhow::Result<Runtime> {
        Ok(Runtime {
            instances: Instances::new(bytes, options)?,
        })
    }

    /// A fresh instance of the component holding `grant`, for blocking
    /// callers.
    pub fn instantiate(&self, grant: Grant) -> anyhow::Result<TenantCache> {
        TenantCache::new(self.instances.clone(), grant)
    }

    /// A fresh instance of the component holding `grant`, for async callers
    /// (on a tokio runtime with I/O and time enabled): its calls wait for
    /// memcached without blocking a thread.
    pub async fn instantiate_async(&self, grant: Grant) -> anyhow::Result<AsyncTenantCache> {
        AsyncTenantCache::new(self.instances.clone(), grant).await
    }
}
