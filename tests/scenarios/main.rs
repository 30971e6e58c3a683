//! Component tests: the real guest, in wasmtime, against memcached
//! processes each test starts on its own free loopback port. One file per
//! property of DESIGN.md §2.

mod atomic_clears;
mod errors;
mod isolation;
mod keys;
mod resurrection;
mod round_trips;
mod ttl;
mod two_levels;
