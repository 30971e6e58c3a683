//! Relative memcached keys for the records of one tenant.
//!
//! Every tenant and key is encoded into a *part* that is printable ASCII,
//! never contains `:`, and is at most [`MAX_PART`] bytes, so that
//! `d:<tenant>:<key>` can be split back unambiguously: the mapping from
//! (tenant, key) to memcached key is injective.
//!
//! - Short parts are percent-encoded with the escape set the host shares
//!   ([`tenant_cache_key_parts::ESCAPED`]): every byte outside `!`..`~`, and
//!   the reserved `%`, `:` and `#`, becomes `%XX`.
//! - A part whose encoding would exceed [`MAX_PART`] bytes becomes `#`
//!   followed by the hex SHA-256 of the raw string. `#` never starts (or
//!   appears in) a percent-encoded part, so hashed and plain parts cannot
//!   collide; two long strings collide only if SHA-256 does.

use alloc::string::String;
use core::fmt::Write;
use sha2::{Digest, Sha256};
use tenant_cache_key_parts::{is_plain, push_escaped};

/// The longest encoded tenant or key part, in bytes.
pub const MAX_PART: usize = 96;

/// The longest relative key this module produces (`d:` + part + `:` + part).
pub const MAX_KEY: usize = 2 + MAX_PART + 1 + MAX_PART;

/// The application-version record. One copy lives on every server; a
/// tenant reads the copy on its own server.
pub const APP_RECORD: &str = "a";

/// Encodes one tenant or key into a part (see the module docs).
pub fn encode_part(raw: &str) -> String {
    let mut part = String::with_capacity(raw.len().min(MAX_PART));
    push_part(&mut part, raw);
    part
}

/// Appends the part for `raw` to `out`.
fn push_part(out: &mut String, raw: &str) {
    // The common case, a short plain string, is its own part.
    if raw.len() <= MAX_PART && is_plain(raw) {
        out.push_str(raw);
    } else if !push_escaped(out, raw, MAX_PART) {
        push_hashed(out, raw);
    }
}

fn push_hashed(out: &mut String, raw: &str) {
    let digest = Sha256::digest(raw.as_bytes());
    out.push('#');
    for byte in digest {
        // Writing into a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
}

/// The namespace-version record of a tenant (given as its encoded part).
pub fn tenant_record(tenant: &str) -> String {
    let mut key = String::with_capacity(2 + tenant.len());
    key.push_str("n:");
    key.push_str(tenant);
    key
}

/// The data record of `key` (raw) for a tenant (given as its encoded part).
pub fn data_record(tenant: &str, key: &str) -> String {
    let mut record = String::with_capacity(3 + tenant.len() + key.len().min(MAX_PART));
    record.push_str("d:");
    record.push_str(tenant);
    record.push(':');
    push_part(&mut record, key);
    record
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
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;

    fn wire_valid(key: &str) -> bool {
        !key.is_empty() && key.len() <= MAX_KEY && key.bytes().all(|b| b.is_ascii_graphic())
    }

    #[test]
    fn plain_text_stays_readable() {
        assert_eq!(encode_part("Lisboa"), "Lisboa");
        assert_eq!(data_record("Lisboa", "/info"), "d:Lisboa:/info");
    }

    #[test]
    fn reserved_and_invisible_bytes_are_escaped() {
        assert_eq!(encode_part(""), "");
        assert_eq!(encode_part("a b"), "a%20b");
        assert_eq!(encode_part("x\r\ny"), "x%0D%0Ay");
        assert_eq!(encode_part("a:1/x%#"), "a%3A1/x%25%23");
        assert_eq!(encode_part("é"), "%C3%A9");
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
    fn long_parts_are_hashed_not_truncated() {
        let long_a = "x".repeat(100_000);
        let mut long_b = long_a.clone();
        long_b.push('y');
        let a = encode_part(&long_a);
        let b = encode_part(&long_b);
        assert!(a.starts_with('#') && a.len() == 65);
        assert_ne!(a, b);
        // An encoding that just exceeds the limit is hashed too.
        assert!(encode_part(&"é".repeat(17)).starts_with('#'));
        assert_eq!(encode_part(&"z".repeat(MAX_PART)), "z".repeat(MAX_PART));
        assert!(encode_part(&"z".repeat(MAX_PART + 1)).starts_with('#'));
    }

    #[test]
    fn every_key_is_distinct_and_wire_valid() {
        let samples: Vec<String> = [
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
        ]
        .iter()
        .map(|s| String::from(*s))
        .chain([250, 251, 1000, 100_000].iter().map(|n| "k".repeat(*n)))
        .collect();
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
