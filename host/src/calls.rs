//! What the lease and compare-and-swap calls take and hand back, for
//! [`TenantCache`](crate::TenantCache), [`AsyncTenantCache`](crate::AsyncTenantCache)
//! and [`Plugin`](crate::Plugin) alike: options, what a read found, and the
//! tokens a caller keeps between two calls.

use std::time::Duration;

use crate::bindings::exported::{LeaseOptions as WitLeaseOptions, Lookup as WitLookup, Swappable as WitSwappable};

/// How a read that may hand out a lease behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseOptions {
    /// On a miss, accept the entry from before the tenant's (or the
    /// application's) last clear while another caller computes the value
    /// ([`Lookup::Stale`]). Off by default: a clear hides its entries from
    /// every caller that does not opt in.
    pub accept_stale: bool,
    /// Seconds before an entry with a TTL expires from which one reader is
    /// handed the lease to refresh it early, while the others keep reading
    /// it; 0 (the default) for none, at most 315 360 000 (ten years).
    pub refresh_window: u32,
    /// Seconds a lease lasts, 2 to 3600 (default 10): a holder that neither
    /// fills nor releases holds the key back for no longer (memcached counts whole
    /// seconds: a lease of N ends between N-1 and N seconds after it is
    /// taken).
    pub lease_ttl: u32,
    /// How long [`TenantCache::get_or_compute`](crate::TenantCache::get_or_compute) waits for another caller's
    /// value before computing it itself (default 10 s).
    pub wait: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            accept_stale: false,
            refresh_window: 0,
            lease_ttl: 10,
            wait: Duration::from_secs(10),
        }
    }
}

impl LeaseOptions {
    pub(crate) fn wit(&self) -> WitLeaseOptions {
        WitLeaseOptions {
            accept_stale: self.accept_stale,
            refresh_window: self.refresh_window,
            lease_ttl: self.lease_ttl,
        }
    }
}

/// The right to compute one key's value and [`fill`](crate::TenantCache::fill)
/// it, from [`Lookup::Lease`]. It names the namespace versions it was
/// taken under and its place in the key's history, sealed for that tenant
/// and key, so it can be kept as text and used from another instance, or
/// from another process whose backend has the same token secret
/// ([`Backend::with_token_secret`](crate::Backend::with_token_secret)).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LeaseToken(String);

impl LeaseToken {
    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for LeaseToken {
    fn from(text: String) -> LeaseToken {
        LeaseToken(text)
    }
}

/// What [`TenantCache::get_or_lease`](crate::TenantCache::get_or_lease) found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The entry.
    Hit(Vec<u8>),
    /// A miss (or an entry due for an early refresh), and this caller
    /// holds the lease: compute the value and fill it.
    Lease(LeaseToken),
    /// A miss while another caller holds the lease, and the entry from
    /// before the last clear, which the caller accepted.
    Stale(Vec<u8>),
    /// A miss while another caller holds the lease: read again shortly.
    Busy,
}

impl From<WitLookup> for Lookup {
    fn from(found: WitLookup) -> Lookup {
        match found {
            WitLookup::Hit(value) => Lookup::Hit(value),
            WitLookup::Lease(token) => Lookup::Lease(LeaseToken(token)),
            WitLookup::Stale(value) => Lookup::Stale(value),
            WitLookup::Busy => Lookup::Busy,
        }
    }
}

/// Where an entry stood when [`TenantCache::get_for_swap`](crate::TenantCache::get_for_swap) read it: what
/// [`TenantCache::compare_and_swap`](crate::TenantCache::compare_and_swap) checks. It is text, sealed for the
/// tenant and key it was read from, so it can be handed to callers and
/// taken back (an ETag, say): one the component did not hand out for that
/// tenant and key (forged, altered, another key's) fails with
/// [`CacheError::InvalidInput`](crate::CacheError::InvalidInput) and stores nothing. Another instance
/// accepts it, and so does another process whose backend has the same
/// token secret ([`Backend::with_token_secret`](crate::Backend::with_token_secret)).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SwapToken(String);

impl SwapToken {
    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for SwapToken {
    fn from(text: String) -> SwapToken {
        SwapToken(text)
    }
}

/// What [`TenantCache::get_for_swap`](crate::TenantCache::get_for_swap) read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swappable {
    /// The value, as [`get`](crate::TenantCache::get) reads it.
    pub value: Option<Vec<u8>>,
    /// What a compare-and-swap of this key checks.
    pub token: SwapToken,
}

impl From<WitSwappable> for Swappable {
    fn from(read: WitSwappable) -> Swappable {
        Swappable {
            value: read.value,
            token: SwapToken(read.token),
        }
    }
}
