//! The memo a backend keeps for the component: a few bytes per key, per
//! application, shared by every instance in the process (`memo-get` and
//! `memo-put` of the capability). The component keeps the namespace
//! versions it read there, so a fresh instance, or one serving more
//! tenants than it remembers itself, writes in one round trip.
//!
//! Bounded: [`MEMO_ENTRIES`] entries in all, least recently used first
//! out. An entry is a 64-bit digest of its application prefix and key
//! (SipHash with a per-process random key, so no component can aim at
//! another application's entries) and up to 16 bytes: about 90 bytes with
//! the LRU's links and table slot, so at most about 11 MiB per backend.
//! A digest collision makes one key read another's bytes; the component
//! never trusts the memo (every write is checked against memcached in its
//! own batch), so that costs a round trip, never correctness.

use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use lru::LruCache;

/// Entries a backend's memo holds at most, across its applications.
pub const MEMO_ENTRIES: usize = 131_072;

/// The longest value kept, in bytes.
pub const MEMO_VALUE: usize = 16;

/// The longest key kept, in bytes (keys are hashed, but a bound keeps what
/// a component can make the host hash small).
const MEMO_KEY: usize = 250;

/// A value of up to [`MEMO_VALUE`] bytes, inline.
#[derive(Clone, Copy)]
struct Value {
    bytes: [u8; MEMO_VALUE],
    len: u8,
}

/// The memo of one backend.
pub(crate) struct Memo {
    hasher: RandomState,
    entries: Mutex<LruCache<u64, Value>>,
    capacity: usize,
}

impl Memo {
    /// An empty memo of `capacity` entries (its table grows as it fills).
    pub(crate) fn new(capacity: usize) -> Memo {
        Memo {
            hasher: RandomState::new(),
            entries: Mutex::new(LruCache::unbounded()),
            capacity,
        }
    }

    fn digest(&self, prefix: &str, key: &str) -> u64 {
        self.hasher.hash_one((prefix, key))
    }

    /// The bytes last put under `key` of the application with `prefix`.
    pub(crate) fn get(&self, prefix: &str, key: &str) -> Option<Vec<u8>> {
        if key.len() > MEMO_KEY {
            return None;
        }
        let digest = self.digest(prefix, key);
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let value = entries.get(&digest)?;
        Some(value.bytes[..usize::from(value.len)].to_vec())
    }

    /// Puts `value` under `key` of the application with `prefix`, or with
    /// `None` forgets it. Keys and values past the bounds are not kept.
    pub(crate) fn put(&self, prefix: &str, key: &str, value: Option<&[u8]>) {
        if key.len() > MEMO_KEY {
            return;
        }
        let digest = self.digest(prefix, key);
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match value {
            Some(value) if value.len() <= MEMO_VALUE => {
                let mut bytes = [0; MEMO_VALUE];
                bytes[..value.len()].copy_from_slice(value);
                let value = Value {
                    bytes,
                    len: value.len() as u8,
                };
                if entries.len() >= self.capacity && !entries.contains(&digest) {
                    entries.pop_lru();
                }
                entries.put(digest, value);
            }
            _ => {
                entries.pop(&digest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_kept_per_application_and_key() {
        let memo = Memo::new(8);
        memo.put("tc:a:", "t", Some(b"12345678"));
        memo.put("tc:b:", "t", Some(b"other"));
        assert_eq!(memo.get("tc:a:", "t").as_deref(), Some(&b"12345678"[..]));
        assert_eq!(memo.get("tc:b:", "t").as_deref(), Some(&b"other"[..]));
        assert_eq!(memo.get("tc:a:", "u"), None);
        memo.put("tc:a:", "t", None);
        assert_eq!(memo.get("tc:a:", "t"), None);
    }

    #[test]
    fn the_memo_is_bounded_and_forgets_the_least_recently_used() {
        let memo = Memo::new(3);
        for key in ["1", "2", "3"] {
            memo.put("p", key, Some(key.as_bytes()));
        }
        assert!(memo.get("p", "1").is_some());
        memo.put("p", "4", Some(b"4"));
        assert_eq!(memo.get("p", "2"), None, "the least recently used goes");
        assert!(memo.get("p", "1").is_some() && memo.get("p", "4").is_some());
        assert_eq!(memo.entries.lock().unwrap().len(), 3);
    }

    #[test]
    fn oversized_keys_and_values_are_not_kept() {
        let memo = Memo::new(8);
        memo.put("p", "k", Some(&[0; MEMO_VALUE + 1]));
        assert_eq!(memo.get("p", "k"), None);
        let long = "k".repeat(MEMO_KEY + 1);
        memo.put("p", &long, Some(b"v"));
        assert_eq!(memo.get("p", &long), None);
        // An oversized value also forgets what the key held.
        memo.put("p", "k", Some(b"v"));
        memo.put("p", "k", Some(&[0; MEMO_VALUE + 1]));
        assert_eq!(memo.get("p", "k"), None);
    }
}
