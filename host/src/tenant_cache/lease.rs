//! Leases, for callers of [`TenantCache`] and [`AsyncTenantCache`]: on a
//! miss, one caller per key and lease period computes the value (across
//! every instance, process and host), the others wait for it. The logic is
//! the component's (`get-or-lease`, `fill`); this module gives it the
//! host's types and the loop most callers want, `get_or_compute`.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::{AsyncTenantCache, Slot, TenantCache};
use crate::calls::{LeaseOptions, LeaseToken, Lookup};
use crate::error::CacheError;
use crate::observe::Outcome;

/// Why [`TenantCache::get_or_compute`] failed: the cache, or the
/// computation.
#[derive(Debug)]
pub enum ComputeError<E> {
    /// The cache failed (memcached unreachable, say); nothing was computed.
    Cache(CacheError),
    /// The computation failed; nothing was stored.
    Compute(E),
}

impl<E: fmt::Display> fmt::Display for ComputeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComputeError::Cache(error) => write!(f, "{error}"),
            ComputeError::Compute(error) => write!(f, "computing the value failed: {error}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ComputeError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ComputeError::Cache(error) => Some(error),
            ComputeError::Compute(error) => Some(error),
        }
    }
}

/// Pauses between reads of a key another caller computes: from 2 ms,
/// doubling up to 50 ms, a little shorter or longer at random so waiters
/// spread out, until `wait` has passed.
struct Backoff {
    deadline: Instant,
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(2);
    const LONGEST: Duration = Duration::from_millis(50);

    fn new(wait: Duration) -> Backoff {
        Backoff {
            deadline: Instant::now() + wait,
            next: Backoff::FIRST,
        }
    }

    /// The next pause; `None` once the deadline has passed.
    fn next(&mut self) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(Instant::now())?;
        let spread = 0.75 + rand::random::<f64>() / 2.0;
        let pause = self.next.mul_f64(spread).min(left);
        self.next = (self.next * 2).min(Backoff::LONGEST);
        Some(pause)
    }
}

/// How a `get-or-lease` call ended, for its span and counters.
fn looked_up(found: &Lookup) -> Outcome {
    match found {
        Lookup::Hit(value) => Outcome::Hit {
            bytes: value.len() as u64,
        },
        Lookup::Lease(_) => Outcome::Leased,
        Lookup::Stale(value) => Outcome::Stale {
            bytes: value.len() as u64,
        },
        Lookup::Busy => Outcome::Busy,
    }
}

impl TenantCache {
    /// Reads `key` of `tenant` as [`get`](Self::get) does; on a miss,
    /// hands this caller the lease to compute the value
    /// ([`Lookup::Lease`]), or says another caller holds it. One round trip
    /// for a hit, two for a miss.
    pub fn get_or_lease(&mut self, tenant: &str, key: &str, options: &LeaseOptions) -> Result<Lookup, CacheError> {
        self.observed("get-or-lease", Some(tenant), looked_up, |slot| {
            Self::run(slot, |plugin, store| plugin.get_or_lease(store, tenant, key, options))
        })
    }

    /// Stores the value the holder of `token` computed for `key` of
    /// `tenant` over its lease, in one round trip: whether it is now the
    /// entry. `false` when nothing visible was stored: the lease is no
    /// longer this caller's (it ran out and another caller took it), the
    /// key was written, deleted or swapped since the lease was taken (the
    /// newer value stays), or the tenant was cleared since (the value was
    /// computed from before the clear). A token not handed out for this
    /// tenant and key fails with [`CacheError::InvalidInput`]. A value too
    /// large to store gives the lease back and fails.
    pub fn fill(
        &mut self,
        tenant: &str,
        key: &str,
        value: &[u8],
        ttl: Option<u32>,
        token: &LeaseToken,
    ) -> Result<bool, CacheError> {
        let bytes = value.len() as u64;
        self.observed("fill", Some(tenant), filled(bytes), |slot| {
            if let Some(error) = slot.too_large(value.len()) {
                Self::run(slot, |plugin, store| plugin.release(store, tenant, key, token))?;
                return Err(error);
            }
            Self::run(slot, |plugin, store| plugin.fill(store, tenant, key, value, ttl, token))
        })
    }

    /// Gives the lease `token` back, for a holder that could not compute
    /// the value: the next reader takes it at once instead of waiting for
    /// it to run out. Does nothing if the lease is no longer this
    /// caller's. Two round trips.
    pub fn release(&mut self, tenant: &str, key: &str, token: &LeaseToken) -> Result<(), CacheError> {
        self.observed(
            "release",
            Some(tenant),
            |_| Outcome::Removed,
            |slot| Self::run(slot, |plugin, store| plugin.release(store, tenant, key, token)),
        )
    }

    /// The value of `key` of `tenant`: the entry, or else `compute`'s value,
    /// stored with `ttl`. Of all callers missing the key at once, across
    /// every instance, process and host, one computes; the others wait for
    /// its value (reading again after 2 ms, then longer, up to 50 ms
    /// apart), take the entry from before the last clear if
    /// `options.accept_stale`, or compute it themselves once
    /// `options.wait` has passed. A value computed but not stored (the
    /// cache failed meanwhile) is still returned.
    pub fn get_or_compute<E>(
        &mut self,
        tenant: &str,
        key: &str,
        ttl: Option<u32>,
        options: &LeaseOptions,
        compute: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, ComputeError<E>> {
        let mut backoff = Backoff::new(options.wait);
        let token = loop {
            match self.get_or_lease(tenant, key, options).map_err(ComputeError::Cache)? {
                Lookup::Hit(value) | Lookup::Stale(value) => return Ok(value),
                Lookup::Lease(token) => break Some(token),
                Lookup::Busy => match backoff.next() {
                    Some(pause) => std::thread::sleep(pause),
                    None => break None,
                },
            }
        };
        let value = match compute() {
            Ok(value) => value,
            Err(error) => {
                // The lease goes back, so waiting callers need not wait it out.
                if let Some(token) = &token {
                    let _ = self.release(tenant, key, token);
                }
                return Err(ComputeError::Compute(error));
            }
        };
        // The call's own span and counters record a failure to store it.
        let _ = match &token {
            Some(token) => self.fill(tenant, key, &value, ttl, token).map(drop),
            None => self.set(tenant, key, &value, ttl),
        };
        Ok(value)
    }
}

impl AsyncTenantCache {
    /// [`TenantCache::get_or_lease`], awaited.
    pub async fn get_or_lease(
        &mut self,
        tenant: &str,
        key: &str,
        options: &LeaseOptions,
    ) -> Result<Lookup, CacheError> {
        run_async!(self, "get-or-lease", Some(tenant), looked_up, |plugin, store| plugin
            .get_or_lease_async(store, tenant, key, options))
    }

    /// [`TenantCache::fill`], awaited.
    pub async fn fill(
        &mut self,
        tenant: &str,
        key: &str,
        value: &[u8],
        ttl: Option<u32>,
        token: &LeaseToken,
    ) -> Result<bool, CacheError> {
        if let Some(error) = self.slot.too_large(value.len()) {
            self.release(tenant, key, token).await?;
            return Err(error);
        }
        let bytes = value.len() as u64;
        run_async!(self, "fill", Some(tenant), filled(bytes), |plugin, store| {
            plugin.fill_async(store, tenant, key, value, ttl, token)
        })
    }

    /// [`TenantCache::release`], awaited.
    pub async fn release(&mut self, tenant: &str, key: &str, token: &LeaseToken) -> Result<(), CacheError> {
        run_async!(
            self,
            "release",
            Some(tenant),
            |_: &()| Outcome::Removed,
            |plugin, store| { plugin.release_async(store, tenant, key, token) }
        )
    }

    /// [`TenantCache::get_or_compute`], awaited: waiting for another
    /// caller's value sleeps on tokio's timer, never blocking the thread.
    pub async fn get_or_compute<E, F>(
        &mut self,
        tenant: &str,
        key: &str,
        ttl: Option<u32>,
        options: &LeaseOptions,
        compute: impl FnOnce() -> F,
    ) -> Result<Vec<u8>, ComputeError<E>>
    where
        F: Future<Output = Result<Vec<u8>, E>>,
    {
        let mut backoff = Backoff::new(options.wait);
        let token = loop {
            match self
                .get_or_lease(tenant, key, options)
                .await
                .map_err(ComputeError::Cache)?
            {
                Lookup::Hit(value) | Lookup::Stale(value) => return Ok(value),
                Lookup::Lease(token) => break Some(token),
                Lookup::Busy => match backoff.next() {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => break None,
                },
            }
        };
        let value = match compute().await {
            Ok(value) => value,
            Err(error) => {
                if let Some(token) = &token {
                    let _ = self.release(tenant, key, token).await;
                }
                return Err(ComputeError::Compute(error));
            }
        };
        let _ = match &token {
            Some(token) => self.fill(tenant, key, &value, ttl, token).await.map(drop),
            None => self.set(tenant, key, &value, ttl).await,
        };
        Ok(value)
    }
}

/// The outcome a fill records: stored, or nothing visible stored.
fn filled(bytes: u64) -> impl Fn(&bool) -> Outcome {
    move |stored| match stored {
        true => Outcome::Stored { bytes },
        false => Outcome::Conflict,
    }
}
