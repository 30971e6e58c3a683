//! The memcached capability of tenant-cache, without I/O and without
//! wasmtime: what every grant of it does to a batch, wherever it runs.
//!
//! - [`types`]: the capability's values, as the WIT defines them.
//! - [`rules`]: the rules every batch passes before anything is sent (keys,
//!   limits, item sizes, the versions the grant draws) and the
//!   application's key prefix; [`confinement`]: those of a grant bound to
//!   one tenant; [`tokens`]: the codes that authenticate tokens;
//!   [`budget`]: a tenant's share (bytes and commands per second, TTLs).
//! - [`pool`]: a pool of servers, each route owned by one ([`routing`]),
//!   every batch checked against the pool record ([`membership`]).
//! - [`protocol`]: the meta protocol's bytes, both ways.
//!
//! What moves the bytes is a [`pool::Driver`]: the wasmtime host has a
//! blocking one and a tokio one, the memcached provider component one over
//! `wasi:sockets`. All of them run this crate's code, so a host and a
//! provider sharing a memcached pool store the same records under the same
//! keys.

pub mod budget;
pub mod confinement;
pub mod digest;
pub mod membership;
pub mod pool;
pub mod protocol;
mod rewrites;
pub mod routing;
pub mod rules;
pub mod tokens;
pub mod types;

pub use rewrites::Rewrites;
