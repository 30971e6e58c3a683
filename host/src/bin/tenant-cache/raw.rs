//! Single memcached commands on the capability's own client and
//! connection, without the component: the bench's raw baseline and the
//! naive algorithm's round trips.

use memcache::exp::{MetaCommand, MetaOp};
use tenant_cache_host::Backend;
use tenant_cache_host::bench_seam::{
    RawReply, raw_exchange, raw_exchange_alone, raw_exchange_async, raw_exchange_async_alone,
};

/// One raw command, one round trip.
pub fn raw(backend: &Backend, command: MetaCommand) -> anyhow::Result<RawReply> {
    raw_exchange(backend, vec![command])?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("memcached sent no reply"))
}

/// `mg KEY v`: the value, if any.
pub fn raw_get(backend: &Backend, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    value_of(
        key,
        raw_exchange(backend, vec![MetaCommand::new(MetaOp::Get, key).flag("v")])?,
    )
}

/// [`raw_get`] on a connection of its own for the exchange: one request
/// at a time per connection, as a plain memcached client sends it.
pub fn raw_get_alone(backend: &Backend, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    value_of(
        key,
        raw_exchange_alone(backend, vec![MetaCommand::new(MetaOp::Get, key).flag("v")])?,
    )
}

/// `ms KEY` with a value and an optional ttl.
pub fn raw_set(backend: &Backend, key: &str, value: &[u8], ttl: Option<u32>) -> anyhow::Result<()> {
    let mut command = MetaCommand::new(MetaOp::Set, key).value(value);
    if let Some(ttl) = ttl {
        command = command.flag(format!("T{ttl}"));
    }
    match raw(backend, command)? {
        RawReply::Done => Ok(()),
        other => anyhow::bail!("memcached did not store {key}: {other:?}"),
    }
}

/// [`raw_get`] on the async driver's shared connection (the one
/// tenant-cache's async calls use), coalesced with concurrent ones.
pub async fn raw_get_async(backend: &Backend, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let reply = raw_exchange_async(backend, vec![MetaCommand::new(MetaOp::Get, key).flag("v")]).await?;
    value_of(key, reply)
}

/// [`raw_get`] over the async driver, on a connection of its own for the
/// exchange: one request at a time per connection, as a plain memcached
/// client sends it.
pub async fn raw_get_async_alone(backend: &Backend, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let reply = raw_exchange_async_alone(backend, vec![MetaCommand::new(MetaOp::Get, key).flag("v")]).await?;
    value_of(key, reply)
}

fn value_of(key: &str, reply: Vec<RawReply>) -> anyhow::Result<Option<Vec<u8>>> {
    match reply.into_iter().next() {
        Some(RawReply::Value(value)) => Ok(Some(value)),
        Some(RawReply::Failed(message)) => anyhow::bail!("memcached did not read {key}: {message}"),
        _ => Ok(None),
    }
}

/// [`raw_set`] on the async driver's shared connection.
pub async fn raw_set_async(backend: &Backend, key: &str, value: &[u8]) -> anyhow::Result<()> {
    let reply = raw_exchange_async(backend, vec![MetaCommand::new(MetaOp::Set, key).value(value)]).await?;
    match reply.into_iter().next() {
        Some(RawReply::Done) => Ok(()),
        other => anyhow::bail!("memcached did not store {key}: {other:?}"),
    }
}

/// `mg KEY v` for every key of `keys`, in one pipelined batch over the
/// async driver, on a connection of its own for the exchange: how many
/// found a value.
pub async fn raw_get_batch_async(backend: &Backend, keys: &[String]) -> anyhow::Result<usize> {
    let commands = keys
        .iter()
        .map(|key| MetaCommand::new(MetaOp::Get, key.as_str()).flag("v"))
        .collect();
    let replies = raw_exchange_async_alone(backend, commands).await?;
    let mut found = 0;
    for reply in replies {
        match reply {
            RawReply::Value(_) => found += 1,
            RawReply::Failed(message) => anyhow::bail!("memcached did not read a batch: {message}"),
            _ => {}
        }
    }
    Ok(found)
}
