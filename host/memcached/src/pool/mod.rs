//! A pool of memcached servers: every route is owned by one server
//! (`routing`), every batch checks the membership record (`fencing`), and a
//! process learns that record (`learning`). Written once, as async code over
//! a [`Driver`] that moves the bytes: the blocking drivers' futures complete
//! when first polled.

mod fencing;
mod learning;

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use self::learning::{Learned, PoolReport};
use crate::membership::Membership;
use crate::protocol::{self, Answer, Failure, Request};
use crate::types::Error;

/// Moves the bytes of requests to servers and back. Requests to several
/// servers may run at once; the results come in the order of the requests.
pub trait Driver: Sync {
    /// Runs each request on its server (an index into the pool's list);
    /// the values of each one's replies may total at most `reply_bytes`.
    fn run<'a>(
        &'a self,
        requests: Vec<(usize, Request<'a>)>,
        reply_bytes: u64,
    ) -> impl Future<Output = Vec<Result<Answer, Failure>>> + Send + 'a;
}

/// The pool record this process last found, and its stored bytes.
pub struct Known {
    /// The record.
    pub record: Membership,
    /// Its bytes, as stored.
    pub stored: Vec<u8>,
}

/// A pool of memcached servers as one process sees it: the servers it
/// lists and the pool record it last found there.
pub struct Pool {
    /// The servers' addresses, as configured: what routing hashes and
    /// messages name.
    pub ids: Vec<String>,
    /// The deadline of an exchange, for messages.
    timeout: Duration,
    known: RwLock<Option<Arc<Known>>>,
}

impl Pool {
    /// The pool of `ids` (`HOST:PORT` each, checked by the caller), whose
    /// exchanges time out after `timeout`.
    pub fn new(ids: Vec<String>, timeout: Duration) -> Pool {
        Pool {
            ids,
            timeout,
            known: RwLock::new(None),
        }
    }

    /// The pool record last found, if any.
    pub fn known(&self) -> Option<Arc<Known>> {
        self.known.read().unwrap_or_else(|poison| poison.into_inner()).clone()
    }

    /// Remembers the pool record just found.
    pub fn remember(&self, record: Membership) -> Arc<Known> {
        let known = Arc::new(Known {
            stored: record.encode(),
            record,
        });
        *self.known.write().unwrap_or_else(|poison| poison.into_inner()) = Some(known.clone());
        known
    }

    /// A failed exchange with server `index`, as the capability's error.
    /// The connection it ran on is gone: an event says why.
    pub fn error(&self, index: usize, failure: Failure, writes: bool) -> Error {
        let error = protocol::to_error(&self.ids[index], failure, self.timeout, writes);
        tracing::warn!(
            server = %self.ids[index],
            "exchange failed, connection dropped: {}",
            protocol::describe(&error)
        );
        error
    }
}
