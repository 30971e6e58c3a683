//! The tenant-cache component.
//!
//! All namespacing logic lives in plain modules ([`keys`], [`frame`],
//! [`versions`], [`batch`], [`cache`]) that are unit-tested natively; this
//! file is only the wit-bindgen glue. On wasm the crate is `no_std`, so the
//! component imports nothing but the memcached capability.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

pub mod batch;
pub mod cache;
pub mod frame;
pub mod keys;
pub mod versions;

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        // Commands borrow their keys and values: building a batch copies
        // nothing it does not have to.
        ownership: Borrowing {
            duplicate_if_necessary: false
        },
    });
}

// The allocator and panic handler of a component without WASI.
use tenant_cache_guest_runtime as _;

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use bindings::exports::tenant_cache::cache::tenant_cache::{Error, Guest};
use bindings::tenant_cache::cache::memcached::{self, Command, Replies};
use cache::{Cache, Capability};

/// The imported capability.
struct Imports;

impl Capability for Imports {
    fn execute(&self, route: &str, commands: &[Command<'_>]) -> Result<Replies, memcached::Error> {
        memcached::execute(route, commands)
    }
    fn broadcast(&self, commands: &[Command<'_>]) -> Result<(), memcached::Error> {
        memcached::broadcast(commands)
    }
    fn random_u64(&self) -> u64 {
        memcached::random_u64()
    }
}

/// One instance runs one call at a time, so one cache per instance.
struct Instance(RefCell<Option<Cache<Imports>>>);

// SAFETY: a component instance runs one call at a time on one thread, and
// only the exports touch `INSTANCE` (native builds, the unit tests, never
// call them).
unsafe impl Sync for Instance {}

static INSTANCE: Instance = Instance(RefCell::new(None));

fn with_cache<T>(call: impl FnOnce(&mut Cache<Imports>) -> Result<T, Error>) -> Result<T, Error> {
    let mut cache = INSTANCE
        .0
        .try_borrow_mut()
        .map_err(|_| Error::Internal(String::from("re-entrant call")))?;
    call(cache.get_or_insert_with(|| Cache::new(Imports)))
}

struct Component;

impl Guest for Component {
    fn get(tenant: String, key: String) -> Result<Option<Vec<u8>>, Error> {
        with_cache(|cache| cache.get(&tenant, &key))
    }
    fn set(tenant: String, key: String, value: Vec<u8>, ttl: Option<u32>) -> Result<(), Error> {
        with_cache(|cache| cache.set(&tenant, &key, &value, ttl))
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
