//! The memcached provider component: the capability the tenant-cache
//! component imports, over `wasi:sockets`, for runtimes that link nothing
//! of ours (the `wasmtime` CLI's `run` and `serve`, Spin, other WASI 0.2
//! hosts).
//!
//! Every rule comes from `tenant_cache_memcached`, the crate the wasmtime
//! host runs: the grant's checks and rewrites (`rules`, `confinement`),
//! the pool (routing, membership, fencing) and the protocol core. This
//! crate adds the configuration, read from the environment ([`config`]),
//! and a driver over `std::net`, which `wasm32-wasip2` maps to
//! `wasi:sockets` ([`sockets`]). This file is the wit-bindgen glue.

pub mod config;
pub mod sockets;

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        world: "tenant-cache:provider/memcached-provider",
        path: ["../../wit", "wit"],
        // The capability's values are the shared crate's own types: the
        // same shapes wit-bindgen would generate, lifted and lowered in
        // place.
        with: {
            "tenant-cache:cache/memcached@0.8.0/limit": tenant_cache_memcached::types::Limit,
            "tenant-cache:cache/memcached@0.8.0/budget": tenant_cache_memcached::types::Budget,
            "tenant-cache:cache/memcached@0.8.0/over-budget": tenant_cache_memcached::types::OverBudget,
            "tenant-cache:cache/memcached@0.8.0/error": tenant_cache_memcached::types::Error,
            "tenant-cache:cache/memcached@0.8.0/command": tenant_cache_memcached::types::Command,
            "tenant-cache:cache/memcached@0.8.0/new-version": tenant_cache_memcached::types::NewVersion,
            "tenant-cache:cache/memcached@0.8.0/version-write": tenant_cache_memcached::types::VersionWrite,
            "tenant-cache:cache/memcached@0.8.0/cas-item": tenant_cache_memcached::types::CasItem,
            "tenant-cache:cache/memcached@0.8.0/counter-delta": tenant_cache_memcached::types::CounterDelta,
            "tenant-cache:cache/memcached@0.8.0/value-with-cas": tenant_cache_memcached::types::ValueWithCas,
            "tenant-cache:cache/memcached@0.8.0/early-get": tenant_cache_memcached::types::EarlyGet,
            "tenant-cache:cache/memcached@0.8.0/item": tenant_cache_memcached::types::Item,
            "tenant-cache:cache/memcached@0.8.0/outcome": tenant_cache_memcached::types::Outcome,
            "tenant-cache:cache/memcached@0.8.0/replies": tenant_cache_memcached::types::Replies,
        },
    });
}

use std::sync::OnceLock;

use bindings::exports::tenant_cache::cache::memcached::Guest;
use tenant_cache_memcached::types::{Command, Error, Replies};

use config::Provider;

/// The provider of this instance, configured on first use; a
/// configuration that cannot be used fails every call with its reason.
fn provider() -> Result<&'static Provider, Error> {
    static PROVIDER: OnceLock<Result<Provider, String>> = OnceLock::new();
    PROVIDER
        .get_or_init(Provider::from_environment)
        .as_ref()
        .map_err(|reason| Error::Unavailable(reason.clone()))
}

struct Component;

impl Guest for Component {
    fn execute(route: String, commands: Vec<Command>) -> Result<Replies, Error> {
        provider()?.execute(&route, commands)
    }

    fn broadcast(commands: Vec<Command>) -> Result<Vec<u64>, Error> {
        provider()?.broadcast(commands)
    }

    fn random_u64() -> u64 {
        rand::random()
    }

    fn mac(route: String, message: Vec<u8>) -> Result<Vec<u8>, Error> {
        provider()?.code(&route, &message)
    }

    /// No memo: an instance keeps what it learned for its own life, and
    /// nothing outlives it here (a fresh instance reads its tenants'
    /// versions before its first write, one round trip more).
    fn memo_get(_key: String) -> Option<Vec<u8>> {
        None
    }

    fn memo_put(_key: String, _value: Option<Vec<u8>>) {}

    fn bound_tenant() -> Option<String> {
        config::bound_tenant()
    }
}

bindings::export!(Component with_types_in bindings);
