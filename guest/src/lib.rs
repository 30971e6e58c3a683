//! The tenant-cache component.
//!
//! All namespacing logic lives in plain modules ([`frame`], [`versions`],
//! [`batch`], [`cache`], [`binding`]) and in the layout of its records
//! (`tenant_cache_layout`, shared with the host), unit-tested
//! natively; this file is only the wit-bindgen glue: the `tenant-cache`
//! exports and the `wasi:keyvalue` ones call the same [`Cache`]. On wasm
//! the crate is `no_std`, so the component imports nothing but the
//! memcached capability.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

pub mod batch;
pub mod binding;
pub mod cache;
pub mod frame;
pub mod tokens;
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

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use binding::{Binding, Bucket};
use bindings::exports::tenant_cache::cache::tenant_cache::{
    Budget, Error, Guest, LeaseOptions, Limit, Lookup, Swappable,
};
use bindings::exports::wasi::keyvalue0_2_0_draft::{atomics, batch as keyvalue_batch, store};
use bindings::exports::wasi::keyvalue0_2_0_draft2::{atomics as atomics2, batch as keyvalue_batch2, store as store2};
use bindings::tenant_cache::cache::memcached::{self, Command, Replies};
use cache::{Cache, Capability, SwapBasis};

/// The imported capability.
struct Imports;

impl Capability for Imports {
    fn execute(&self, route: &str, commands: &[Command<'_>]) -> Result<Replies, memcached::Error> {
        memcached::execute(route, commands)
    }
    fn broadcast(&self, commands: &[Command<'_>]) -> Result<Vec<u64>, memcached::Error> {
        memcached::broadcast(commands)
    }
    fn random_u64(&self) -> u64 {
        memcached::random_u64()
    }
    fn memo_get(&self, key: &str) -> Option<Vec<u8>> {
        memcached::memo_get(key)
    }
    fn memo_put(&self, key: &str, value: Option<&[u8]>) {
        memcached::memo_put(key, value)
    }
    fn mac(&self, route: &str, message: &[u8]) -> Result<Vec<u8>, memcached::Error> {
        memcached::mac(route, message)
    }
}

/// What an instance keeps between calls: the cache, and the binding the
/// host reported (asked on first use).
struct State {
    cache: Cache<Imports>,
    binding: Binding,
}

/// One instance runs one call at a time, so one state per instance.
struct Instance(RefCell<Option<State>>);

// SAFETY: a component instance runs one call at a time on one thread, and
// only the exports touch `INSTANCE` (native builds, the unit tests, never
// call them).
unsafe impl Sync for Instance {}

static INSTANCE: Instance = Instance(RefCell::new(None));

fn with_state<T>(call: impl FnOnce(&mut State) -> Result<T, Error>) -> Result<T, Error> {
    let mut state = INSTANCE
        .0
        .try_borrow_mut()
        .map_err(|_| Error::Internal(String::from("re-entrant call")))?;
    call(state.get_or_insert_with(|| State {
        cache: Cache::new(Imports),
        binding: Binding::new(memcached::bound_tenant()),
    }))
}

/// Runs `call` on the cache if the binding admits `tenant`.
fn with_cache<T>(tenant: &str, call: impl FnOnce(&mut Cache<Imports>) -> Result<T, Error>) -> Result<T, Error> {
    with_state(|state| {
        state.binding.admits(tenant)?;
        call(&mut state.cache)
    })
}

struct Component;

impl Guest for Component {
    fn get(tenant: String, key: String) -> Result<Option<Vec<u8>>, Error> {
        with_cache(&tenant, |cache| cache.get(&tenant, &key))
    }
    fn set(tenant: String, key: String, value: Vec<u8>, ttl: Option<u32>) -> Result<(), Error> {
        with_cache(&tenant, |cache| cache.set(&tenant, &key, &value, ttl))
    }
    fn delete(tenant: String, key: String) -> Result<(), Error> {
        with_cache(&tenant, |cache| cache.delete(&tenant, &key))
    }
    fn clear(tenant: String) -> Result<(), Error> {
        with_cache(&tenant, |cache| cache.clear(&tenant))
    }
    fn clear_all() -> Result<(), Error> {
        with_state(|state| {
            state.binding.admits_all()?;
            state.cache.clear_all()
        })
    }
    fn get_many(tenant: String, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, Error> {
        with_cache(&tenant, |cache| cache.get_many(&tenant, &keys))
    }
    fn set_many(tenant: String, entries: Vec<(String, Vec<u8>)>, ttl: Option<u32>) -> Result<(), Error> {
        with_cache(&tenant, |cache| cache.set_many(&tenant, &entries, ttl))
    }
    fn get_or_lease(tenant: String, key: String, options: LeaseOptions) -> Result<Lookup, Error> {
        with_cache(&tenant, |cache| cache.get_or_lease(&tenant, &key, &options))
    }
    fn fill(tenant: String, key: String, value: Vec<u8>, ttl: Option<u32>, token: String) -> Result<bool, Error> {
        with_cache(&tenant, |cache| cache.fill(&tenant, &key, &value, ttl, &token))
    }
    fn release(tenant: String, key: String, token: String) -> Result<(), Error> {
        with_cache(&tenant, |cache| cache.release(&tenant, &key, &token))
    }
    fn increment(tenant: String, key: String, delta: i64) -> Result<i64, Error> {
        // Counted as two's complement: the same bits as a u64 count.
        with_cache(&tenant, |cache| cache.increment(&tenant, &key, delta as u64, true)).map(|count| count as i64)
    }
    fn get_for_swap(tenant: String, key: String) -> Result<Swappable, Error> {
        with_cache(&tenant, |cache| {
            let (value, basis) = cache.get_for_swap(&tenant, &key)?;
            let token = cache.swap_token(&tenant, &key, &basis)?;
            Ok(Swappable { value, token })
        })
    }
    fn compare_and_swap(tenant: String, key: String, value: Vec<u8>, token: String) -> Result<bool, Error> {
        with_cache(&tenant, |cache| {
            let basis = cache.swap_basis(&tenant, &key, &token)?;
            cache.compare_and_swap(&tenant, &key, &value, &basis)
        })
    }
}

/// A tenant-cache error as `wasi:keyvalue` reports it (in its one open
/// case, `other`): the cause in words.
fn keyvalue_error(error: Error) -> String {
    match error {
        Error::Unavailable(text) => format!("memcached unavailable: {text}"),
        Error::ValueTooLarge(too_large) => format!(
            "value too large: {} bytes, memcached's item size limit is {} bytes",
            too_large.size, too_large.limit
        ),
        Error::InvalidInput(text) => format!("invalid input: {text}"),
        Error::Contention(text) => format!("contention: {text}"),
        Error::OverLimit(limit) => over_limit(limit),
        Error::Internal(text) => format!("internal error: {text}"),
        Error::NotACounter(text) => text,
    }
}

/// A limit the host held a call to, in words.
fn over_limit(limit: Limit) -> String {
    match limit {
        Limit::CommandsPerBatch(most) => format!("over the host's limit on one call: more than {most} commands"),
        Limit::ReplyBytes(most) => format!("over the host's limit on one call: replies over {most} bytes"),
        Limit::Budget(over) => {
            let what = match over.budget {
                Budget::BytesWritten => "bytes written",
                Budget::Commands => "commands",
            };
            let then = match over.retry_after_ms {
                Some(ms) => format!("retry in {ms} ms"),
                None => String::from("it needs more than the burst: split the call, or raise the burst"),
            };
            format!(
                "over the budget of {} {what} per second (burst {}): refused before anything was sent; {then}",
                over.per_second, over.burst
            )
        }
    }
}

/// Runs a `wasi:keyvalue` call on `bucket`'s tenant.
fn in_bucket<T>(
    bucket: &Bucket,
    call: impl FnOnce(&mut Cache<Imports>, &str) -> Result<T, Error>,
) -> Result<T, String> {
    with_state(|state| call(&mut state.cache, bucket.tenant())).map_err(keyvalue_error)
}

/// Why `list-keys` fails.
const NO_LIST_KEYS: &str = "list-keys is not supported: memcached cannot enumerate the keys it holds";

/// The `wasi:keyvalue` exports of one version (`store` and `batch`
/// modules, `list-keys`'s cursor type), all on the same [`Bucket`] and
/// [`Cache`]: the versions differ only in that cursor.
macro_rules! keyvalue_exports {
    ($store:ident, $batch:ident, $cursor:ty) => {
        impl $store::Guest for Component {
            type Bucket = Bucket;

            fn open(identifier: String) -> Result<$store::Bucket, $store::Error> {
                with_state(|state| Ok(state.binding.open(&identifier)))
                    .map($store::Bucket::new)
                    .map_err(|error| $store::Error::Other(keyvalue_error(error)))
            }
        }

        impl $store::GuestBucket for Bucket {
            fn get(&self, key: String) -> Result<Option<Vec<u8>>, $store::Error> {
                in_bucket(self, |cache, tenant| cache.get(tenant, &self.key(&key))).map_err($store::Error::Other)
            }
            fn set(&self, key: String, value: Vec<u8>) -> Result<(), $store::Error> {
                in_bucket(self, |cache, tenant| {
                    cache.set(tenant, &self.key(&key), &value, None)
                })
                .map_err($store::Error::Other)
            }
            fn delete(&self, key: String) -> Result<(), $store::Error> {
                in_bucket(self, |cache, tenant| cache.delete(tenant, &self.key(&key))).map_err($store::Error::Other)
            }
            fn exists(&self, key: String) -> Result<bool, $store::Error> {
                in_bucket(self, |cache, tenant| cache.get(tenant, &self.key(&key)))
                    .map(|value| value.is_some())
                    .map_err($store::Error::Other)
            }
            fn list_keys(&self, _cursor: $cursor) -> Result<$store::KeyResponse, $store::Error> {
                Err($store::Error::Other(String::from(NO_LIST_KEYS)))
            }
        }

        impl $batch::Guest for Component {
            fn get_many(
                bucket: $store::BucketBorrow<'_>,
                keys: Vec<String>,
            ) -> Result<Vec<Option<(String, Vec<u8>)>>, $store::Error> {
                let bucket: &Bucket = bucket.get();
                let values = in_bucket(bucket, |cache, tenant| {
                    cache.get_many(tenant, &bucket.keys(&keys))
                })
                .map_err($store::Error::Other)?;
                Ok(keys
                    .into_iter()
                    .zip(values)
                    .map(|(key, value)| value.map(|value| (key, value)))
                    .collect())
            }
            fn set_many(
                bucket: $store::BucketBorrow<'_>,
                entries: Vec<(String, Vec<u8>)>,
            ) -> Result<(), $store::Error> {
                let bucket: &Bucket = bucket.get();
                let entries: Vec<(String, Vec<u8>)> = entries
                    .into_iter()
                    .map(|(key, value)| (bucket.own_key(key), value))
                    .collect();
                in_bucket(bucket, |cache, tenant| cache.set_many(tenant, &entries, None)).map_err($store::Error::Other)
            }
            fn delete_many(bucket: $store::BucketBorrow<'_>, keys: Vec<String>) -> Result<(), $store::Error> {
                let bucket: &Bucket = bucket.get();
                in_bucket(bucket, |cache, tenant| {
                    cache.delete_many(tenant, &bucket.keys(&keys))
                })
                .map_err($store::Error::Other)
            }
        }
    };
}

keyvalue_exports!(store, keyvalue_batch, Option<u64>);
keyvalue_exports!(store2, keyvalue_batch2, Option<String>);

/// `wasi:keyvalue/atomics@0.2.0-draft`: an unsigned counter.
impl atomics::Guest for Component {
    fn increment(bucket: store::BucketBorrow<'_>, key: String, delta: u64) -> Result<u64, store::Error> {
        let bucket: &Bucket = bucket.get();
        in_bucket(bucket, |cache, tenant| {
            cache.increment(tenant, &bucket.key(&key), delta, false)
        })
        .map_err(store::Error::Other)
    }
}

/// A `wasi:keyvalue/atomics@0.2.0-draft2` compare-and-swap handle: the key
/// in its tenant, the value read, and where the entry stood.
pub struct CasHandle {
    tenant: String,
    key: String,
    value: Option<Vec<u8>>,
    basis: SwapBasis,
}

/// Reads `key` of `tenant` for a compare-and-swap.
fn read_for_swap(tenant: String, key: String) -> Result<CasHandle, String> {
    let (value, basis) = with_state(|state| state.cache.get_for_swap(&tenant, &key)).map_err(keyvalue_error)?;
    Ok(CasHandle {
        tenant,
        key,
        value,
        basis,
    })
}

/// `wasi:keyvalue/atomics@0.2.0-draft2`: a signed counter, and
/// compare-and-swap.
impl atomics2::Guest for Component {
    type Cas = CasHandle;

    fn increment(bucket: store2::BucketBorrow<'_>, key: String, delta: i64) -> Result<i64, store2::Error> {
        let bucket: &Bucket = bucket.get();
        in_bucket(bucket, |cache, tenant| {
            cache.increment(tenant, &bucket.key(&key), delta as u64, true)
        })
        .map(|count| count as i64)
        .map_err(store2::Error::Other)
    }

    fn swap(cas: atomics2::Cas, value: Vec<u8>) -> Result<(), atomics2::CasError> {
        let handle: CasHandle = cas.into_inner();
        let swapped = with_state(|state| {
            state
                .cache
                .compare_and_swap(&handle.tenant, &handle.key, &value, &handle.basis)
        });
        let store_error = |text| atomics2::CasError::StoreError(store2::Error::Other(text));
        match swapped {
            Ok(true) => Ok(()),
            // The handle for the retry: read again, as the interface asks.
            Ok(false) => match read_for_swap(handle.tenant, handle.key) {
                Ok(fresh) => Err(atomics2::CasError::CasFailed(atomics2::Cas::new(fresh))),
                Err(text) => Err(store_error(text)),
            },
            Err(error) => Err(store_error(keyvalue_error(error))),
        }
    }
}

impl atomics2::GuestCas for CasHandle {
    fn new(bucket: store2::BucketBorrow<'_>, key: String) -> Result<atomics2::Cas, store2::Error> {
        let bucket: &Bucket = bucket.get();
        read_for_swap(String::from(bucket.tenant()), bucket.key(&key).into_owned())
            .map(atomics2::Cas::new)
            .map_err(store2::Error::Other)
    }

    fn current(&self) -> Result<Option<Vec<u8>>, store2::Error> {
        Ok(self.value.clone())
    }
}

// Native builds (unit tests) skip the exports: their symbol names are not
// valid in a native shared library.
#[cfg(target_arch = "wasm32")]
bindings::export!(Component with_types_in bindings);
