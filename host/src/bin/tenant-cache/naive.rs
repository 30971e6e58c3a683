//! The naive namespacing algorithm, ported natively for comparison: read
//! the tenant's counter, set it back to refresh it, then use it in the key.
//! Three round trips per call (and the bugs tenant-cache exists to fix).

use memcache::exp::{MetaCommand, MetaOp, ReturnCode};
use tenant_cache_host::Backend;

/// The naive cache of one tenant prefix, on the raw memcached client that
/// tenant-cache itself uses (same connections, no component).
pub struct Naive<'a> {
    pub backend: &'a Backend,
    pub prefix: String,
}

/// One raw command, one round trip.
pub fn raw(backend: &Backend, command: MetaCommand) -> anyhow::Result<memcache::exp::MetaResponse> {
    backend
        .raw_exchange(vec![command])?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("memcached sent no reply"))
}

/// `mg KEY v`: the value, if any.
pub fn raw_get(backend: &Backend, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let reply = raw(backend, MetaCommand::new(MetaOp::Get, key).flag("v"))?;
    Ok(match reply.rc() {
        ReturnCode::Va => reply.into_value(),
        _ => None,
    })
}

/// `ms KEY` with a value and an optional ttl.
pub fn raw_set(backend: &Backend, key: &str, value: &[u8], ttl: Option<u32>) -> anyhow::Result<()> {
    let mut command = MetaCommand::new(MetaOp::Set, key).value(value);
    if let Some(ttl) = ttl {
        command = command.flag(format!("T{ttl}"));
    }
    match raw(backend, command)?.rc() {
        ReturnCode::Hd => Ok(()),
        other => anyhow::bail!("memcached did not store {key}: {other:?}"),
    }
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
