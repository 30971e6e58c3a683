//! Namespace versions: the application version and the tenant version an
//! entry is written under, and a small cache of the versions last seen per
//! tenant. (Their stored form is `tenant_cache_layout::version`.)

use alloc::collections::BTreeMap;
use alloc::string::String;

/// The pair of versions that makes an entry reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Versions {
    /// The application version (moved by `clear-all`).
    pub app: u64,
    /// The tenant version (moved by `clear`).
    pub tenant: u64,
}

/// The versions last seen per tenant, so that a steady-state write can be
/// tagged without first reading them. Entries may be stale: every write
/// re-reads the versions in the same batch and redoes itself on mismatch.
#[derive(Default)]
pub struct VersionCache {
    seen: BTreeMap<String, Versions>,
    /// The application version last seen for any tenant: the best guess
    /// for a tenant not seen yet (every server holds the same one unless a
    /// copy was lost).
    app: Option<u64>,
}

/// Tenants remembered at most; past that the cache starts over.
const CAPACITY: usize = 4096;

impl VersionCache {
    /// The versions last seen for `tenant`.
    pub fn get(&self, tenant: &str) -> Option<Versions> {
        self.seen.get(tenant).copied()
    }

    /// The application version last seen, if any.
    pub fn app(&self) -> Option<u64> {
        self.app
    }

    /// Remembers (or with `None`, forgets) the versions of `tenant`.
    pub fn put(&mut self, tenant: &str, versions: Option<Versions>) {
        match versions {
            Some(versions) => {
                self.app = Some(versions.app);
                if let Some(seen) = self.seen.get_mut(tenant) {
                    *seen = versions;
                    return;
                }
                if self.seen.len() >= CAPACITY && !self.seen.contains_key(tenant) {
                    self.seen.clear();
                }
                self.seen.insert(String::from(tenant), versions);
            }
            None => {
                self.seen.remove(tenant);
            }
        }
    }

    /// Remembers `app` as the application version last read.
    pub fn saw_app(&mut self, app: u64) {
        self.app = Some(app);
    }

    /// Records that this instance moved the application version to `app`.
    pub fn move_app(&mut self, app: u64) {
        self.app = Some(app);
        for versions in self.seen.values_mut() {
            versions.app = app;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_bounded() {
        let mut cache = VersionCache::default();
        let versions = Versions { app: 1, tenant: 2 };
        for n in 0..CAPACITY + 10 {
            cache.put(&alloc::format!("t{n}"), Some(versions));
        }
        assert!(cache.seen.len() <= CAPACITY);
        cache.put("x", None);
        assert_eq!(cache.get("x"), None);
        cache.put("x", Some(versions));
        assert_eq!(cache.get("x"), Some(versions));
        assert_eq!(cache.app(), Some(1));
        cache.move_app(9);
        assert_eq!(cache.get("x"), Some(Versions { app: 9, tenant: 2 }));
        assert_eq!(cache.app(), Some(9));
    }
}
