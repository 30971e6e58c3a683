//! Namespace versions: the application version and the tenant version an
//! entry is written under, their record format, and a small cache of the
//! versions last seen per tenant.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// The pair of versions that makes an entry reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Versions {
    /// The application version (moved by `clear-all`).
    pub app: u64,
    /// The tenant version (moved by `clear`).
    pub tenant: u64,
}

/// The stored form of a version record: 16 lowercase hex digits (fixed
/// width, so parsing needs no overflow checks, which are slow on wasm32).
pub fn record_value(version: u64) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..16)
        .rev()
        .map(|nibble| HEX[((version >> (nibble * 4)) & 15) as usize])
        .collect()
}

/// Parses a version record; `None` for bytes that are not one.
pub fn parse_record(stored: &[u8]) -> Option<u64> {
    if stored.len() != 16 {
        return None;
    }
    stored.iter().try_fold(0u64, |version, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some(version << 4 | u64::from(nibble))
    })
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
    fn records_round_trip() {
        for version in [0, 1, 42, 0x0123_4567_89ab_cdef, u64::MAX] {
            assert_eq!(parse_record(&record_value(version)), Some(version));
        }
        assert_eq!(record_value(0x2a), b"000000000000002a");
        assert_eq!(parse_record(b""), None);
        assert_eq!(parse_record(b"2a"), None);
        assert_eq!(parse_record(b"000000000000002A"), None);
        assert_eq!(parse_record(b"00000000000000g0"), None);
        assert_eq!(parse_record(b"\xff"), None);
    }

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
