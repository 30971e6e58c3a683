//! The naive namespacing algorithm, ported natively for comparison: read
//! the tenant's counter, set it back to refresh it, then use it in the key.
//! Three round trips per call (and the bugs tenant-cache exists to fix).

use memcache::exp::{MetaClient, Ttl};

/// The naive cache of one tenant prefix on one client.
pub struct Naive<'a> {
    pub client: &'a MetaClient,
    pub prefix: String,
}

impl Naive<'_> {
    fn namespace(&self, tenant: &str) -> anyhow::Result<String> {
        let counter = format!("{}ns:{tenant}", self.prefix);
        let current = self.client.get(&counter).send()?;
        let version = current
            .value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0u64);
        self.client
            .set(&counter, version.to_string())
            .ttl(Ttl::secs(3600))
            .send()?;
        Ok(format!("{}{tenant}:{version}:", self.prefix))
    }

    /// get: counter, refresh, data.
    pub fn get(&self, tenant: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let namespace = self.namespace(tenant)?;
        Ok(self.client.get(format!("{namespace}{key}")).send()?.value)
    }

    /// set: counter, refresh, data.
    pub fn set(&self, tenant: &str, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let namespace = self.namespace(tenant)?;
        self.client.set(format!("{namespace}{key}"), value).send()?;
        Ok(())
    }
}
