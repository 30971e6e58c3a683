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
pub mod versions;

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ world: "plugin", path: "../wit" });
}

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use bindings::exports::tenant_cache::cache::tenant_cache::{Error, Guest};
use bindings::tenant_cache::cache::memcached::{self, Command, Reply};
use cache::{Memcached, TenantCache};

/// The imported capability.
struct Imports;

impl Memcached for Imports {
    fn execute(
        &self,
        route: &str,
        commands: &[Command],
    ) -> Result<Vec<Result<Reply, memcached::Error>>, memcached::Error> {
        memcached::execute(route, commands)
    }
    fn broadcast(&self, commands: &[Command]) -> Result<(), memcached::Error> {
        memcached::broadcast(commands)
    }
    fn random_u64(&self) -> u64 {
        memcached::random_u64()
    }
}

/// One instance runs one call at a time, so one cache per instance.
struct Instance(RefCell<Option<TenantCache<Imports>>>);

// SAFETY: a component instance is single-threaded.
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

// wasi-libc supplies the `memcmp`/`memcpy` family that `core` calls on
// this target; none of its WASI imports are linked in.
#[cfg(target_arch = "wasm32")]
#[link(name = "c")]
unsafe extern "C" {}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// The canonical ABI's allocator export. `std` provides it on this target;
/// a `no_std` component must, and it only forwards to the global allocator.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
unsafe extern "C" fn cabi_realloc(old: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    use alloc::alloc::{Layout, alloc, handle_alloc_error, realloc};
    if new_len == 0 {
        return align as *mut u8;
    }
    // SAFETY: the canonical ABI passes a valid power-of-two alignment and,
    // for a reallocation, the pointer and size of an earlier allocation.
    unsafe {
        let ptr = if old_len == 0 {
            alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            realloc(old, Layout::from_size_align_unchecked(old_len, align), new_len)
        };
        if ptr.is_null() {
            handle_alloc_error(Layout::from_size_align_unchecked(new_len, align));
        }
        ptr
    }
}

/// Nothing in this crate panics on purpose; should a bug do so, the call
/// traps and the host reports it instead of the component printing.
#[cfg(all(target_arch = "wasm32", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
