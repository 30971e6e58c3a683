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
    // A fixed-size array and a table lookup: the loop unrolls into straight
    // code, with no branch per digit.
    let digits: &[u8; 16] = stored.try_into().ok()?;
    let mut version = 0u64;
    let mut invalid = 0u8;
    for &digit in digits {
        let nibble = HEX_VALUE[usize::from(digit)];
        invalid |= nibble;
        version = version << 4 | u64::from(nibble & 15);
    }
    (invalid & 0x80 == 0).then_some(version)
}

/// The value of each lowercase hex digit; `0x80` for any other byte.
static HEX_VALUE: [u8; 256] = {
    let mut table = [0x80u8; 256];
    let mut digit = 0;
    while digit < 16 {
        table[b"0123456789abcdef"[digit] as usize] = digit as u8;
        digit += 1;
    }
    table
};

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
        assert_eq!(parse_record(b"0000000000000000 "), None);
        for byte in 0..=255u8 {
            let mut record = *b"0123456789abcdef";
            record[7] = byte;
            let valid = byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte);
            assert_eq!(parse_record(&record).is_some(), valid, "byte {byte:#04x}");
        }
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
