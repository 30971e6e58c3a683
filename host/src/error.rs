//! The errors a tenant cache call returns.

use std::fmt;

use crate::bindings::exported::{Error as WitError, TooLarge};

pub use crate::bindings::exported::{Budget, Limit, OverBudget};

/// Why a tenant cache call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CacheError {
    /// memcached could not be reached or did not answer in time; the text
    /// names the server.
    Unavailable(String),
    /// The value is larger than the item size limit (in bytes).
    ValueTooLarge {
        /// The value's size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// An argument was refused; the text says which and why.
    InvalidInput(String),
    /// Concurrent clears kept moving the namespace during a write.
    Contention(String),
    /// The call needed more of the host than one call may take.
    OverLimit(Limit),
    /// Something unexpected inside the component or the host.
    Internal(String),
    /// An increment found an entry that is not a counter (a value other
    /// than a decimal number); the text names the key.
    NotACounter(String),
    /// The component trapped (a bug in it, or a host limit it ran into);
    /// the next call runs on a fresh instance.
    Trap(anyhow::Error),
}

impl From<WitError> for CacheError {
    fn from(error: WitError) -> CacheError {
        match error {
            WitError::Unavailable(text) => CacheError::Unavailable(text),
            WitError::ValueTooLarge(TooLarge { size, limit }) => CacheError::ValueTooLarge { size, limit },
            WitError::InvalidInput(text) => CacheError::InvalidInput(text),
            WitError::Contention(text) => CacheError::Contention(text),
            WitError::OverLimit(limit) => CacheError::OverLimit(limit),
            WitError::Internal(text) => CacheError::Internal(text),
            WitError::NotACounter(text) => CacheError::NotACounter(text),
        }
    }
}

/// A budget's refusal in the one wording of the capability's crate.
fn describe_over_budget(over: &OverBudget) -> String {
    use tenant_cache_memcached::types as core;
    tenant_cache_memcached::budget::describe(&core::OverBudget {
        budget: match over.budget {
            Budget::BytesWritten => core::Budget::BytesWritten,
            Budget::Commands => core::Budget::Commands,
        },
        per_second: over.per_second,
        burst: over.burst,
        retry_after_ms: over.retry_after_ms,
    })
}

/// Sizes in the unit a person would use.
fn human(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let (amount, unit) = match bytes {
        b if b >= 1024 * 1024 => (b as f64 / MIB, "MiB"),
        b if b >= 1024 => (b as f64 / 1024.0, "KiB"),
        b => return format!("{b} bytes"),
    };
    let text = format!("{amount:.1}");
    format!("{} {unit}", text.strip_suffix(".0").unwrap_or(&text))
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Unavailable(text) if text.contains("unreachable") || text.contains("did not answer") => {
                write!(f, "{text}; is memcached running there?")
            }
            CacheError::Unavailable(text) => write!(f, "{text}"),
            CacheError::ValueTooLarge { size, limit } => write!(
                f,
                "value is {}; memcached's item limit is {} (memcached -I), and an entry also holds \
                 tenant-cache's 17-byte header, its key and 64 bytes of memcached's own: store a smaller value or \
                 raise -I",
                human(*size),
                human(*limit)
            ),
            CacheError::InvalidInput(text) => write!(f, "invalid input: {text}"),
            CacheError::Contention(text) => write!(f, "{text}"),
            CacheError::OverLimit(Limit::CommandsPerBatch(limit)) => write!(
                f,
                "the call needs a batch of more than {limit} commands, the host's limit: split it"
            ),
            CacheError::OverLimit(Limit::ReplyBytes(limit)) => write!(
                f,
                "the call's replies exceed {}, what the host gathers for one call: split it",
                human(*limit)
            ),
            CacheError::OverLimit(Limit::Budget(over)) => write!(f, "{}", describe_over_budget(over)),
            CacheError::Internal(text) => write!(f, "internal error: {text}"),
            CacheError::NotACounter(text) => write!(f, "{text}"),
            CacheError::Trap(error) => write!(f, "the component trapped: {error:#}"),
        }
    }
}

impl std::error::Error for CacheError {}
