//! The naive namespacing algorithm, ported natively for comparison: read
//! the tenant's counter, set it back to refresh it, then use it in the key.
//! Three round trips per call (and the bugs tenant-cache exists to fix).

use tenant_cache_host::Backend;

use crate::raw::{raw_get, raw_set};

/// The naive cache of one tenant prefix, on the raw memcached client that
/// tenant-cache itself uses (same connections, no component).
pub struct Naive<'a> {
    pub backend: &'a Backend,
    pub prefix: String,
}

impl Naive<'_> {
    fn namespace(&self, tenant: &str) -> anyhow::Result<String> {
        let counter = format!("{}ns:{tenant}", self.prefix);
        let version = raw_get(self.backend, &counter)?
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
            .unwrap_or(0u64);
        raw_set(self.backend, &counter, version.to_string().as_bytes(), Some(3600))?;
        Ok(format!("{}{tenant}:{version}:", self.prefix))
    }

    /// get: counter, refresh, data.
    pub fn get(&self, tenant: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let namespace = self.namespace(tenant)?;
        raw_get(self.backend, &format!("{namespace}{key}"))
    }

    /// set: counter, refresh, data.
    pub fn set(&self, tenant: &str, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let namespace = self.namespace(tenant)?;
        raw_set(self.backend, &format!("{namespace}{key}"), value, Some(3600))
    }
}
