//! The seam `tenant-cache bench` measures through: raw meta commands,
//! outside any application's prefix, on the very connections the
//! capability uses. memcached hands each connection to one of its worker
//! threads, and one worker can answer several microseconds faster than
//! another; sharing the connection takes that out of the bench's ratios.
//!
//! Only with the `bench` feature (part of `cli`); not meant for embedders
//! and not covered by any stability promise.

use anyhow::{Context, bail};
use memcache::exp::MetaCommand;

use crate::backend::Backend;
use tenant_cache_memcached::protocol::describe;
use tenant_cache_memcached::types::{Outcome, ValueWithCas};

/// The reply to one raw command, by its code: `VA` a value, `HD` done,
/// `EN`/`NF` a miss, `NS`/`EX` exists.
#[derive(Debug, PartialEq, Eq)]
pub enum RawReply {
    /// `VA`: the value.
    Value(Vec<u8>),
    /// `HD`.
    Done,
    /// `EN` or `NF`.
    Miss,
    /// `NS` or `EX`.
    Exists,
    /// An error line, as text.
    Failed(String),
}

/// Runs `commands` as one pipelined batch on the first server of
/// `backend`'s memcached pool, as they are, over the blocking driver's
/// connection that `TenantCache` uses: shared, and coalesced with
/// concurrent batches (unless the options turn coalescing off).
pub fn raw_exchange(backend: &Backend, commands: Vec<MetaCommand>) -> anyhow::Result<Vec<RawReply>> {
    let replies = pool(backend)?.raw(commands, false);
    read(replies)
}

/// [`raw_exchange`] on a connection of its own for the exchange: what a
/// plain memcached client does, one request at a time per connection.
pub fn raw_exchange_alone(backend: &Backend, commands: Vec<MetaCommand>) -> anyhow::Result<Vec<RawReply>> {
    let replies = pool(backend)?.raw(commands, true);
    read(replies)
}

/// [`raw_exchange`] over the tokio driver's connection that
/// `AsyncTenantCache` uses: shared, and coalesced with concurrent batches
/// (unless the options turn coalescing off).
pub async fn raw_exchange_async(backend: &Backend, commands: Vec<MetaCommand>) -> anyhow::Result<Vec<RawReply>> {
    let replies = pool(backend)?.raw_async(commands, false).await;
    read(replies)
}

/// [`raw_exchange`] over the tokio driver, each batch on a connection of
/// its own for its exchange: what a plain memcached client does, one
/// request at a time per connection.
pub async fn raw_exchange_async_alone(backend: &Backend, commands: Vec<MetaCommand>) -> anyhow::Result<Vec<RawReply>> {
    let replies = pool(backend)?.raw_async(commands, true).await;
    read(replies)
}

fn pool(backend: &Backend) -> anyhow::Result<&crate::backend::memcached::MemcachedPool> {
    match backend.storage().memcached() {
        Some(pool) => Ok(pool),
        None => bail!("{} takes no raw memcached commands", backend.describe()),
    }
}

fn read(replies: crate::backend::BatchResult) -> anyhow::Result<Vec<RawReply>> {
    let replies = replies
        .map_err(|error| anyhow::anyhow!(describe(&error)))
        .context("raw memcached exchange")?;
    let mut values = replies.values.as_slice();
    Ok(replies
        .outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Outcome::Value(len)
            | Outcome::Refresh(ValueWithCas { len, .. })
            | Outcome::ValueWithCas(ValueWithCas { len, .. }) => match values.split_at_checked(len as usize) {
                Some((value, rest)) => {
                    values = rest;
                    RawReply::Value(value.to_vec())
                }
                None => RawReply::Failed(String::from("value lengths exceed the values")),
            },
            Outcome::Miss => RawReply::Miss,
            Outcome::Done | Outcome::Minted(_) => RawReply::Done,
            Outcome::Exists => RawReply::Exists,
            Outcome::NotANumber => RawReply::Failed(String::from("not a number")),
            Outcome::Failed(error) => RawReply::Failed(describe(&error)),
        })
        .collect())
}
