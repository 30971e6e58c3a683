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

mod backend;
mod bindings;
mod calls;
mod capability;
mod error;
mod instances;
pub mod keyvalue;
mod ledger;
mod memo;
mod observe;
mod plugin;
mod precompiled;
mod runtime;
mod tenant_cache;
mod usage;

#[cfg(feature = "bench")]
pub mod bench_seam;

pub use backend::memcached::{MemcachedOptions, PoolReport};
pub use backend::{Backend, EmbeddedOptions, USAGE_TOP, USAGE_WINDOW};
pub use calls::{LeaseOptions, LeaseToken, Lookup, SwapToken, Swappable};
pub use capability::{BatchLimits, Budgets, Grant, MAX_RELATIVE_KEY, Rate, add_to_linker, add_to_linker_async};
pub use error::{Budget, CacheError, Limit, OverBudget};
pub use instances::RuntimeOptions;
pub use memo::{MEMO_ENTRIES, MEMO_VALUE};
pub use plugin::Plugin;
pub use runtime::{COMPONENT, Runtime};
pub use tenant_cache::{AsyncTenantCache, ComputeError, TenantCache};
