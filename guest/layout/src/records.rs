//! The records of one tenant, relative to the application prefix. All of
//! them live on the server the tenant's part (its *route*) picks:
//!
//! - `a`: the application version (one copy per server, shared by every
//!   tenant on it);
//! - `n:<tenant>`: the tenant version;
//! - `d:<tenant>:<key>`: the tenant's entries;
//! - `c:<tenant>:<digest>`: the count of one counter of one key, under
//!   one pair of versions (see [`counter_record`]).
//!
//! Parts never hold `:`, so `n:<tenant>` and the `d:<tenant>:` or
//! `c:<tenant>:` in front of an entry or a count name exactly one tenant:
//! [`record_of`] tells, for a key and a tenant, which of the tenant's
//! records the key is, if any.

use alloc::string::String;
use core::fmt::Write;

use sha2::{Digest, Sha256};

use crate::parts::{MAX_PART, encode_part, push_part};

/// The application-version record. One copy lives on every server; a
/// tenant reads the copy on its own server.
pub const APP_RECORD: &str = "a";

/// The longest relative key of a record (`d:` + part + `:` + part).
pub const MAX_KEY: usize = 2 + MAX_PART + 1 + MAX_PART;

/// The version record of a tenant (given as its part).
pub fn tenant_record(tenant: &str) -> String {
    let mut key = String::with_capacity(2 + tenant.len());
    key.push_str("n:");
    key.push_str(tenant);
    key
}

/// The record of `key` (raw) of a tenant (given as its part).
pub fn data_record(tenant: &str, key: &str) -> String {
    let mut record = String::with_capacity(3 + tenant.len() + key.len().min(MAX_PART));
    record.push_str("d:");
    record.push_str(tenant);
    record.push(':');
    push_part(&mut record, key);
    record
}

/// The count record of `key` (raw) of a tenant (given as its part), for
/// the counter `era` (a random value drawn when the counter was made)
/// under `versions` (application, tenant): `c:<tenant>:` and 32 hex digits
/// of the SHA-256 of the versions, the era and the key's part. Every
/// counter made (after a clear, a `set` or an eviction) counts in a record
/// of its own, so no count outlives the counter it belonged to.
pub fn counter_record(tenant: &str, (app, tenant_version): (u64, u64), era: u64, key: &str) -> String {
    let parts: [&[u8]; 3] = [&app.to_le_bytes(), &tenant_version.to_le_bytes(), &era.to_le_bytes()];
    digest_record("c:", tenant, &parts, key)
}

/// `<kind><tenant>:` and 32 hex digits of the SHA-256 of `fields` and the
/// key's part.
fn digest_record(kind: &str, tenant: &str, fields: &[&[u8]], key: &str) -> String {
    let mut hasher = Sha256::new();
    for field in fields {
        hasher.update(field);
    }
    hasher.update(encode_part(key).as_bytes());
    let mut record = String::with_capacity(3 + tenant.len() + 32);
    record.push_str(kind);
    record.push_str(tenant);
    record.push(':');
    for byte in &hasher.finalize()[..16] {
        // Writing into a String cannot fail.
        let _ = write!(record, "{byte:02x}");
    }
    record
}

/// Which record of a tenant a key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// `a`, the application version: shared with every tenant.
    App,
    /// `n:<tenant>`, the tenant version.
    Tenant,
    /// `d:<tenant>:<key>`, one of the tenant's entries.
    Entry,
    /// `c:<tenant>:<digest>`, the count of one of the tenant's counters.
    Counter,
}

/// Which record of the tenant whose part is `tenant` the relative `key`
/// is; `None` for a key that is none of them (another tenant's records
/// among them).
pub fn record_of(tenant: &str, key: &str) -> Option<Record> {
    if key == APP_RECORD {
        return Some(Record::App);
    }
    if key.strip_prefix("n:") == Some(tenant) {
        return Some(Record::Tenant);
    }
    let (kind, rest) = key.split_at_checked(2)?;
    let record = match kind {
        "d:" => Record::Entry,
        "c:" => Record::Counter,
        _ => return None,
    };
    rest.strip_prefix(tenant)?.starts_with(':').then_some(record)
}

/// The two records a read of one key names besides the application
/// record, built in one buffer: `n:<tenant>` and `d:<tenant>:<key>`.
pub struct ReadKeys {
    buffer: String,
    /// Where the data record starts.
    data: usize,
}

impl ReadKeys {
    /// The records of `key` (raw) of `tenant` (raw).
    pub fn new(tenant: &str, key: &str) -> ReadKeys {
        let mut buffer = String::with_capacity(2 + MAX_PART + MAX_KEY);
        buffer.push_str("n:");
        push_part(&mut buffer, tenant);
        let data = buffer.len();
        buffer.push_str("d:");
        if &buffer[2..data] == tenant {
            // A plain tenant is its own part.
            buffer.push_str(tenant);
        } else {
            // The part again, copied rather than encoded twice (a long
            // tenant would be hashed twice). A part is ASCII, so it splits
            // anywhere.
            let mut part = [0u8; MAX_PART];
            let len = data - 2;
            part[..len].copy_from_slice(&buffer.as_bytes()[2..data]);
            buffer.push_str(core::str::from_utf8(&part[..len]).unwrap_or_default());
        }
        buffer.push(':');
        push_part(&mut buffer, key);
        ReadKeys { buffer, data }
    }

    /// The tenant's part: the route of its records.
    pub fn tenant(&self) -> &str {
        &self.buffer[2..self.data]
    }

    /// `n:<tenant>`.
    pub fn tenant_record(&self) -> &str {
        &self.buffer[..self.data]
    }

    /// `d:<tenant>:<key>`.
    pub fn data_record(&self) -> &str {
        &self.buffer[self.data..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parts::encode_part;
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;

    fn wire_valid(key: &str) -> bool {
        !key.is_empty() && key.len() <= MAX_KEY && key.bytes().all(|b| b.is_ascii_graphic())
    }

    /// Tenants and keys a hostile caller would try.
    fn samples() -> Vec<String> {
        [
            "",
            " ",
            ":",
            "%",
            "#",
            "a",
            "a:",
            ":a",
            "%3A",
            "#abc",
            "\0",
            "\r\n",
            "flush_all",
            "\u{202e}rtl",
            "e\u{301}",
            "🦀",
            "a b c",
            "/",
            "a/b",
            "acme",
            "acm",
            "acme:x",
            "d:acme",
            "n:acme",
        ]
        .iter()
        .map(|s| String::from(*s))
        .chain([250, 251, 1000, 100_000].iter().map(|n| "k".repeat(*n)))
        .collect()
    }

    #[test]
    fn plain_text_stays_readable() {
        assert_eq!(data_record("Lisboa", "/info"), "d:Lisboa:/info");
        assert_eq!(tenant_record("Lisboa"), "n:Lisboa");
    }

    #[test]
    fn delimiter_games_do_not_collide() {
        // (a, x:5/y) and (a:1/x, y) collide under a naive "tenant:key" scheme.
        assert_ne!(
            data_record(&encode_part("a"), "x:5/y"),
            data_record(&encode_part("a:1/x"), "y")
        );
        assert_ne!(
            data_record(&encode_part("a:b"), "c"),
            data_record(&encode_part("a"), "b:c")
        );
        assert_ne!(
            data_record(&encode_part("a%3Ab"), "c"),
            data_record(&encode_part("a:b"), "c")
        );
    }

    #[test]
    fn every_key_is_distinct_and_wire_valid() {
        let samples = samples();
        let mut seen = BTreeSet::new();
        for tenant in &samples {
            for key in &samples {
                let record = data_record(&encode_part(tenant), key);
                assert!(wire_valid(&record), "{record:?}");
                assert!(seen.insert(record), "collision for {tenant:?}/{key:?}");
            }
            assert!(wire_valid(&tenant_record(&encode_part(tenant))));
        }
    }

    #[test]
    fn a_tenant_owns_its_records_and_no_other_tenants() {
        let samples = samples();
        for tenant in &samples {
            let part = encode_part(tenant);
            assert_eq!(record_of(&part, APP_RECORD), Some(Record::App));
            assert_eq!(record_of(&part, &tenant_record(&part)), Some(Record::Tenant));
            for other in &samples {
                let other_part = encode_part(other);
                for key in &samples {
                    let entry = data_record(&other_part, key);
                    let expected = (other == tenant).then_some(Record::Entry);
                    assert_eq!(record_of(&part, &entry), expected, "{tenant:?} and {other:?}/{key:?}");
                }
                let expected = (other == tenant).then_some(Record::Tenant);
                assert_eq!(record_of(&part, &tenant_record(&other_part)), expected);
                let count = counter_record(&other_part, (1, 2), 3, "k");
                let expected = (other == tenant).then_some(Record::Counter);
                assert_eq!(record_of(&part, &count), expected);
            }
        }
        // Keys of no layout at all are no tenant's.
        for stray in [
            "", "a:", "aa", "n:", "d:", "d:acme", "n:acme:", "x:acme:k", "l:acme:k", "~a",
        ] {
            assert_eq!(record_of("acme", stray), None, "{stray:?}");
        }
        assert_eq!(record_of("", "d::k"), Some(Record::Entry));
        assert_eq!(record_of("", "d:x:k"), None);
    }

    #[test]
    fn counts_differ_by_key_versions_and_era_and_fit_the_key_budget() {
        let samples = samples();
        let mut seen = BTreeSet::new();
        for key in &samples {
            for (versions, era) in [((1, 2), 3), ((2, 1), 3), ((1, 3), 3), ((1, 2), 4)] {
                let count = counter_record(&"t".repeat(MAX_PART), versions, era, key);
                assert!(wire_valid(&count) && count.len() <= MAX_KEY, "{count:?}");
                assert!(seen.insert(count), "{key:?} {versions:?} {era}");
            }
        }
    }

    #[test]
    fn read_keys_are_the_records_built_one_by_one() {
        let samples = [
            "",
            "Lisboa",
            "/info",
            "a:b",
            "é",
            "%",
            &"x".repeat(96),
            &"x".repeat(97),
            &"é".repeat(100),
        ];
        for tenant in samples {
            for key in samples {
                let keys = ReadKeys::new(tenant, key);
                let part = encode_part(tenant);
                assert_eq!(keys.tenant(), part);
                assert_eq!(keys.tenant_record(), tenant_record(&part));
                assert_eq!(keys.data_record(), data_record(&part, key));
            }
        }
    }
}
