//! The tenant-cache component.
//!
//! All namespacing logic lives in plain modules ([`keys`], [`frame`],
//! [`versions`], [`cache`]) that are unit-tested natively; this file is
//! only the wit-bindgen glue. On wasm the crate is `no_std`, so the
//! component imports nothing but the memcached capability.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

pub mod cache;
pub mod frame;
pub mod keys;
pub mod small_blocks;
pub mod versions;

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ world: "plugin", path: "../wit" });
}

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use bindings::exports::tenant_cache::cache::tenant_cache::{Error, Guest};
use bindings::tenant_cache::cache::memcached::{self, Command, Replies, Reply as Outcome};
use cache::{Batch, Memcached, Reply, TenantCache};

/// The imported capability.
struct Imports;

impl Memcached for Imports {
    fn execute(&self, route: &str, commands: &[Command]) -> Result<Batch, memcached::Error> {
        memcached::execute(route, commands).and_then(unpack)
    }
    fn broadcast(&self, commands: &[Command]) -> Result<(), memcached::Error> {
        memcached::broadcast(commands)
    }
    fn random_u64(&self) -> u64 {
        memcached::random_u64()
    }
}

/// The capability's replies as the algorithm takes them: each value a
/// range of the one buffer, checked to lie inside it.
fn unpack(replies: Replies) -> Result<Batch, memcached::Error> {
    let Replies { outcomes, values } = replies;
    let mut start = 0usize;
    let mut unpacked = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        unpacked.push(match outcome {
            Outcome::Value(len) => {
                let end = start
                    .checked_add(len as usize)
                    .filter(|&end| end <= values.len())
                    .ok_or_else(|| memcached::Error::Protocol(String::from("value lengths exceed the values")))?;
                let range = start..end;
                start = end;
                Ok(Reply::Value(range))
            }
            Outcome::Miss => Ok(Reply::Miss),
            Outcome::Done => Ok(Reply::Done),
            Outcome::Exists => Ok(Reply::Exists),
            Outcome::Failed(error) => Err(error),
        });
    }
    Ok(Batch {
        replies: unpacked,
        values,
    })
}

/// One instance runs one call at a time, so one cache per instance.
struct Instance(RefCell<Option<TenantCache<Imports>>>);

// SAFETY: a component instance runs one call at a time on one thread, and
// only the exports touch `INSTANCE` (native builds, the unit tests, never
// call them).
unsafe impl Sync for Instance {}

static INSTANCE: Instance = Instance(RefCell::new(None));

fn with_cache<T>(call: impl FnOnce(&mut TenantCache<Imports>) -> Result<T, Error>) -> Result<T, Error> {
    let mut cache = INSTANCE
        .0
        .try_borrow_mut()
        .map_err(|_| Error::Internal(String::from("re-entrant call")))?;
    call(cache.get_or_insert_with(|| TenantCache::new(Imports)))
}

struct Component;

impl Guest for Component {
    fn get(tenant: String, key: String) -> Result<Option<Vec<u8>>, Error> {
        let mut values = with_cache(|cache| cache.get_many(&tenant, core::slice::from_ref(&key)))?;
        Ok(values.pop().flatten())
    }
    fn set(tenant: String, key: String, value: Vec<u8>, ttl: Option<u32>) -> Result<(), Error> {
        with_cache(|cache| cache.set_many(&tenant, &[(key, value)], ttl))
    }
    fn delete(tenant: String, key: String) -> Result<(), Error> {
        with_cache(|cache| cache.delete(&tenant, &key))
    }
    fn clear(tenant: String) -> Result<(), Error> {
        with_cache(|cache| cache.clear(&tenant))
    }
    fn clear_all() -> Result<(), Error> {
        with_cache(|cache| cache.clear_all())
    }
    fn get_many(tenant: String, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, Error> {
        with_cache(|cache| cache.get_many(&tenant, &keys))
    }
    fn set_many(tenant: String, entries: Vec<(String, Vec<u8>)>, ttl: Option<u32>) -> Result<(), Error> {
        with_cache(|cache| cache.set_many(&tenant, &entries, ttl))
    }
}

// Native builds (unit tests) skip the exports: their symbol names are not
// valid in a native shared library.
#[cfg(target_arch = "wasm32")]
bindings::export!(Component with_types_in bindings);

#[cfg(target_arch = "wasm32")]
mod wasm_runtime;

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(outcomes: Vec<Outcome>, values: &[u8]) -> Replies {
        Replies {
            outcomes,
            values: values.to_vec(),
        }
    }

    /// The bindings' error has no `PartialEq`: compare what it shows.
    fn shown(unpacked: Result<Batch, memcached::Error>) -> String {
        alloc::format!("{unpacked:?}")
    }

    #[test]
    fn values_become_ranges_in_order() {
        let unpacked = unpack(replies(
            vec![
                Outcome::Value(2),
                Outcome::Miss,
                Outcome::Value(0),
                Outcome::Value(3),
                Outcome::Done,
            ],
            b"abcde",
        ));
        assert_eq!(
            shown(unpacked),
            shown(Ok(Batch {
                replies: vec![
                    Ok(Reply::Value(0..2)),
                    Ok(Reply::Miss),
                    Ok(Reply::Value(2..2)),
                    Ok(Reply::Value(2..5)),
                    Ok(Reply::Done),
                ],
                values: b"abcde".to_vec(),
            }))
        );
        let failed = unpack(replies(vec![Outcome::Failed(memcached::Error::ValueTooLarge(9))], b""));
        assert_eq!(
            shown(failed),
            shown(Ok(Batch {
                replies: vec![Err(memcached::Error::ValueTooLarge(9))],
                values: Vec::new(),
            }))
        );
    }

    #[test]
    fn lengths_beyond_the_values_are_a_protocol_error() {
        for (outcomes, values) in [
            (vec![Outcome::Value(4)], &b"abc"[..]),
            (vec![Outcome::Value(2), Outcome::Value(2)], b"abc"),
            (vec![Outcome::Value(1), Outcome::Value(u32::MAX)], b"abc"),
        ] {
            assert!(matches!(
                unpack(replies(outcomes, values)),
                Err(memcached::Error::Protocol(_))
            ));
        }
    }
}
