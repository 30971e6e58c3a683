//! The capability's values between wasmtime's bindings (what a component
//! passes and reads) and `tenant_cache_memcached::types` (what the rules,
//! the pool and the protocol core take): the same shapes, field for field.
//! wasmtime's `bindgen!` cannot remap a record or variant to a type of
//! another crate, so the grant converts them here, once each way per call
//! (moves, no copies of keys or values).

use tenant_cache_memcached::types as core;

use crate::bindings::capability as wit;

/// A command as the component sent it.
pub(super) fn command(command: wit::Command) -> core::Command {
    let item = |item: wit::Item| core::Item {
        key: item.key,
        value: item.value,
        ttl: item.ttl,
    };
    match command {
        wit::Command::Get(key) => core::Command::Get(key),
        wit::Command::GetEarly(early) => core::Command::GetEarly(core::EarlyGet {
            key: early.key,
            window: early.window,
        }),
        wit::Command::Set(it) => core::Command::Set(item(it)),
        wit::Command::Add(it) => core::Command::Add(item(it)),
        wit::Command::Delete(key) => core::Command::Delete(key),
        wit::Command::GetWithCas(key) => core::Command::GetWithCas(key),
        wit::Command::SetIfCas(cas_item) => core::Command::SetIfCas(core::CasItem {
            item: item(cas_item.item),
            cas: cas_item.cas,
        }),
        wit::Command::Increment(delta) => core::Command::Increment(core::CounterDelta {
            key: delta.key,
            delta: delta.delta,
        }),
        wit::Command::NewVersion(new) => core::Command::NewVersion(core::NewVersion {
            key: new.key,
            write: match new.write {
                wit::VersionWrite::Overwrite => core::VersionWrite::Overwrite,
                wit::VersionWrite::Create => core::VersionWrite::Create,
                wit::VersionWrite::Replace(cas) => core::VersionWrite::Replace(cas),
            },
        }),
    }
}

/// A batch as the component sent it.
pub(super) fn commands(commands: Vec<wit::Command>) -> Vec<core::Command> {
    commands.into_iter().map(command).collect()
}

/// The replies as the component reads them.
pub(super) fn replies(replies: core::Replies) -> wit::Replies {
    let with_cas = |found: core::ValueWithCas| wit::ValueWithCas {
        len: found.len,
        cas: found.cas,
    };
    let outcomes = replies
        .outcomes
        .into_iter()
        .map(|outcome| match outcome {
            core::Outcome::Value(len) => wit::Outcome::Value(len),
            core::Outcome::Refresh(found) => wit::Outcome::Refresh(with_cas(found)),
            core::Outcome::Miss => wit::Outcome::Miss,
            core::Outcome::Done => wit::Outcome::Done,
            core::Outcome::Exists => wit::Outcome::Exists,
            core::Outcome::ValueWithCas(found) => wit::Outcome::ValueWithCas(with_cas(found)),
            core::Outcome::Minted(version) => wit::Outcome::Minted(version),
            core::Outcome::NotANumber => wit::Outcome::NotANumber,
            core::Outcome::Failed(failed) => wit::Outcome::Failed(error(failed)),
        })
        .collect();
    wit::Replies {
        outcomes,
        values: replies.values,
    }
}

/// An error as the component reads it.
pub(crate) fn error(error: core::Error) -> wit::Error {
    match error {
        core::Error::Unavailable(text) => wit::Error::Unavailable(text),
        core::Error::ValueTooLarge(limit) => wit::Error::ValueTooLarge(limit),
        core::Error::InvalidKey(text) => wit::Error::InvalidKey(text),
        core::Error::Protocol(text) => wit::Error::Protocol(text),
        core::Error::OverLimit(over) => wit::Error::OverLimit(limit(over)),
        core::Error::Denied(text) => wit::Error::Denied(text),
    }
}

/// A limit as the component reads it.
pub(crate) fn limit(limit: core::Limit) -> wit::Limit {
    match limit {
        core::Limit::CommandsPerBatch(commands) => wit::Limit::CommandsPerBatch(commands),
        core::Limit::ReplyBytes(bytes) => wit::Limit::ReplyBytes(bytes),
        core::Limit::Budget(over) => wit::Limit::Budget(wit::OverBudget {
            budget: match over.budget {
                core::Budget::BytesWritten => wit::Budget::BytesWritten,
                core::Budget::Commands => wit::Budget::Commands,
            },
            per_second: over.per_second,
            burst: over.burst,
            retry_after_ms: over.retry_after_ms,
        }),
    }
}
