//! What a `no_std` component needs on `wasm32-wasip2` without importing
//! any WASI interface: a global allocator, the canonical ABI's
//! `cabi_realloc`, libc's memory functions and a panic handler. Depending
//! on this crate is all a component does to get them; on other targets it
//! is empty, so native unit tests use std's.
#![no_std]
#![deny(missing_docs)]

#[cfg(target_arch = "wasm32")]
mod wasm;
