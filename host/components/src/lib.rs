//! The WebAssembly components `tenant-cache-host` carries, as bytes.
//!
//! A crate of their own, with no dependency but its build script's, so
//! that cargo builds them (a nested cargo for `wasm32-wasip2`, most of a
//! minute) while it compiles wasmtime, not after it: a build script runs
//! only once its package's dependencies are built.
#![no_std]
#![deny(missing_docs)]

/// The tenant-cache component (`guest/`).
pub const COMPONENT: &[u8] = include_bytes!(env!("TENANT_CACHE_COMPONENT"));

/// The memcached provider component (`guest/memcached-provider`).
#[cfg(feature = "provider")]
pub const PROVIDER: &[u8] = include_bytes!(env!("TENANT_CACHE_PROVIDER"));
