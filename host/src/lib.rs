//! A wasmtime host for the tenant-cache component.
//!
//! The component holds all namespacing logic; this crate grants it the
//! memcached capability for one application (every key prefixed and
//! validated here, no flush) and calls it.
//!
//! ```no_run
//! use tenant_cache_host::{Backend, Grant, Runtime};
//!
//! # fn main() -> anyhow::Result<()> {
//! let backend = Backend::memcached(&["127.0.0.1:11211"], Default::default())?;
//! let runtime = Runtime::new()?; // the component built with this crate
//! let mut cache = runtime.instantiate(Grant::new(backend, "shop"))?;
//! cache.set("Lisboa", "/info", b"2 days", None)?;
//! assert_eq!(cache.get("Lisboa", "/info")?.as_deref(), Some(&b"2 days"[..]));
//! cache.clear("Lisboa")?;
//! assert_eq!(cache.get("Lisboa", "/info")?, None);
//! # Ok(())
//! # }
//! ```
//!
//! Embedders with their own `Store<T>` call [`add_to_linker`] with a
//! projection from `T` to a [`Grant`] instead.
#![deny(missing_docs)]

mod capability;
mod embedded;
mod error;
mod memcached;
mod plugin;
mod precompiled;
mod routing;
mod runtime;
mod store;

#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit",
        additional_derives: [PartialEq, Eq],
    });
    pub(crate) use self::tenant_cache::cache::memcached;
    pub(crate) mod exported {
        pub(crate) use super::exports::tenant_cache::cache::tenant_cache::*;
    }
}

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use capability::{Grant, MAX_RELATIVE_KEY, add_to_linker};
pub use error::CacheError;
pub use memcached::MemcachedOptions;
pub use plugin::Plugin;
pub use runtime::{COMPONENT, Runtime, RuntimeOptions, TenantCache};

/// The first 128 bits of the SHA-256 of `bytes`, as 32 hex digits: names
/// derived from content (a long application name, a compiled artifact).
fn short_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The reply to one command of [`Backend::raw_exchange`], by its code:
/// `VA` a value, `HD` done, `EN`/`NF` a miss, `NS`/`EX` exists.
#[doc(hidden)]
#[derive(Debug, PartialEq, Eq)]
pub enum RawReply {
    Value(Vec<u8>),
    Done,
    Miss,
    Exists,
    Failed(String),
}

/// Where entries are stored: a memcached pool or the embedded store.
/// Cloning is cheap; clones share connections (or the embedded entries).
#[derive(Clone)]
pub struct Backend {
    store: Arc<dyn store::Store>,
    batches: Arc<AtomicU64>,
}

impl Backend {
    /// A pool of memcached servers, each `HOST:PORT`. Every tenant lives on
    /// one server, chosen by a stable hash of the tenant.
    pub fn memcached(servers: &[impl AsRef<str>], options: MemcachedOptions) -> anyhow::Result<Backend> {
        let servers: Vec<String> = servers.iter().map(|server| server.as_ref().trim().to_owned()).collect();
        Ok(Backend::with_store(Arc::new(memcached::Memcached::new(
            &servers, options,
        )?)))
    }

    /// The embedded in-process store (entries last as long as the process).
    pub fn embedded() -> Backend {
        Backend::with_store(Arc::new(embedded::Embedded::default()))
    }

    /// What the backend is, for messages: "memcached at 127.0.0.1:11211".
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// The largest value this backend stores, in bytes.
    pub fn item_size_limit(&self) -> u64 {
        self.store.item_size_limit()
    }

    /// Pipelined batches sent so far through this backend and its clones,
    /// one per server reached: the number of memcached round trips
    /// (batches to different servers run in parallel).
    pub fn batches_sent(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Runs meta commands as they are, outside any application's prefix,
    /// on the first server and over the same connections the capability
    /// uses: the raw baseline `tenant-cache bench` compares against.
    #[doc(hidden)]
    pub fn raw_exchange(&self, commands: Vec<memcache::exp::MetaCommand>) -> anyhow::Result<Vec<RawReply>> {
        use bindings::memcached::{Error, Reply};
        let message = |error| match error {
            Error::Unavailable(text) | Error::InvalidKey(text) | Error::Protocol(text) => text,
            Error::ValueTooLarge(limit) => format!("the value exceeds the item size limit of {limit} bytes"),
        };
        let replies = self
            .store
            .raw(commands)
            .map_err(|error| anyhow::anyhow!(message(error)))?;
        let mut values = replies.values.as_slice();
        Ok(replies
            .outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Reply::Value(len) => match values.split_at_checked(len as usize) {
                    Some((value, rest)) => {
                        values = rest;
                        RawReply::Value(value.to_vec())
                    }
                    None => RawReply::Failed(String::from("value lengths exceed the values")),
                },
                Reply::Miss => RawReply::Miss,
                Reply::Done => RawReply::Done,
                Reply::Exists => RawReply::Exists,
                Reply::Failed(error) => RawReply::Failed(message(error)),
            })
            .collect())
    }

    fn with_store(store: Arc<dyn store::Store>) -> Backend {
        Backend {
            store,
            batches: Arc::default(),
        }
    }

    fn store(&self) -> &dyn store::Store {
        self.store.as_ref()
    }

    fn count_batches(&self, batches: u64) {
        self.batches.fetch_add(batches, Ordering::Relaxed);
    }
}
