//! A component that implements the tenant-cache world badly on purpose.
//! `get(tenant, key)` does what `tenant` names:
//! - `loop`: spins forever; `alloc`: allocates until refused;
//!   `panic`: panics; `recurse`: overflows its stack;
//! - `escape`: sends `key` to the capability as a raw `get` and returns
//!   what comes back (`set` with tenant `escape` stores raw too);
//! - `amplify`: one batch of 1 000 gets of `key` (`set` with tenant
//!   `amplify`: one batch of 1 000 sets borrowing the one value);
//! - `many`: `key` is `N:LEN`: one batch of N gets of distinct LEN-byte
//!   keys; answers how many came back, in decimal;
//! - anything else: answers `ok`.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        world: "cache",
        path: "../../../wit",
        // Commands borrow their keys and values: many commands can share
        // one buffer, as a hostile component would.
        ownership: Borrowing { duplicate_if_necessary: false },
    });
}

use alloc::string::String;
use alloc::vec::Vec;

use bindings::exports::tenant_cache::cache::tenant_cache::{Error, Guest, LeaseOptions, Lookup, Swappable};
use bindings::tenant_cache::cache::memcached::{self, Command, Item, Outcome};

struct Component;

/// Runs `commands` as one batch; a failure is an error naming it.
fn batch(commands: &[Command<'_>]) -> Result<memcached::Replies, Error> {
    memcached::execute("escape", commands).map_err(|error| Error::Internal(alloc::format!("{error:?}")))
}

fn raw(command: Command<'_>) -> Result<Option<Vec<u8>>, Error> {
    match memcached::execute("escape", &[command]) {
        Ok(replies) => match replies.outcomes.first() {
            Some(Outcome::Value(_)) => Ok(Some(replies.values)),
            Some(Outcome::Failed(error)) => Err(Error::Internal(alloc::format!("{error:?}"))),
            Some(_) => Ok(None),
            None => Err(Error::Internal(String::from("no reply"))),
        },
        Err(error) => Err(Error::Internal(alloc::format!("{error:?}"))),
    }
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 64]);
    recurse(frame[3] + 1) + frame[7]
}

impl Guest for Component {
    fn get(tenant: String, key: String) -> Result<Option<Vec<u8>>, Error> {
        match tenant.as_str() {
            "loop" => {
                let mut spins = 0u64;
                loop {
                    spins = core::hint::black_box(spins.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut kept: Vec<Vec<u8>> = Vec::new();
                loop {
                    kept.push(core::hint::black_box(alloc::vec![1u8; 1024 * 1024]));
                }
            }
            "panic" => panic!("on purpose"),
            "recurse" => Ok(Some(recurse(0).to_le_bytes().to_vec())),
            "escape" => raw(Command::Get(&key)),
            "amplify" => {
                let commands: Vec<Command<'_>> = (0..1000).map(|_| Command::Get(&key)).collect();
                batch(&commands).map(|replies| Some(replies.values))
            }
            "many" => {
                let (count, len) = key.split_once(':').unwrap_or(("0", "0"));
                let (count, len): (usize, usize) = (count.parse().unwrap_or(0), len.parse().unwrap_or(1));
                let keys: Vec<String> = (0..count).map(|n| alloc::format!("{n:0>len$}")).collect();
                let commands: Vec<Command<'_>> = keys.iter().map(|key| Command::Get(key)).collect();
                let replies = batch(&commands)?;
                Ok(Some(alloc::format!("{}", replies.outcomes.len()).into_bytes()))
            }
            _ => Ok(Some(b"ok".to_vec())),
        }
    }
    fn set(tenant: String, key: String, value: Vec<u8>, ttl: Option<u32>) -> Result<(), Error> {
        let item = Item {
            key: &key,
            value: &value,
            ttl,
        };
        match tenant.as_str() {
            "escape" => drop(raw(Command::Set(item))?),
            "amplify" => drop(batch(&alloc::vec![Command::Set(item); 1000])?),
            _ => {}
        }
        Ok(())
    }
    fn delete(_: String, _: String) -> Result<(), Error> {
        Ok(())
    }
    fn clear(_: String) -> Result<(), Error> {
        Ok(())
    }
    fn clear_all() -> Result<(), Error> {
        Ok(())
    }
    fn get_many(_: String, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, Error> {
        Ok(keys.iter().map(|_| None).collect())
    }
    fn set_many(_: String, _: Vec<(String, Vec<u8>)>, _: Option<u32>) -> Result<(), Error> {
        Ok(())
    }
    fn get_or_lease(_: String, _: String, _: LeaseOptions) -> Result<Lookup, Error> {
        Ok(Lookup::Busy)
    }
    fn fill(_: String, _: String, _: Vec<u8>, _: Option<u32>, _: String) -> Result<bool, Error> {
        Ok(false)
    }
    fn release(_: String, _: String, _: String) -> Result<(), Error> {
        Ok(())
    }
    fn increment(_: String, _: String, delta: i64) -> Result<i64, Error> {
        Ok(delta)
    }
    fn get_for_swap(_: String, _: String) -> Result<Swappable, Error> {
        Ok(Swappable {
            value: None,
            token: String::new(),
        })
    }
    fn compare_and_swap(_: String, _: String, _: Vec<u8>, _: String) -> Result<bool, Error> {
        Ok(false)
    }
}

#[cfg(target_arch = "wasm32")]
bindings::export!(Component with_types_in bindings);

// The allocator and panic handler a component without WASI needs.
use tenant_cache_guest_runtime as _;
