//! Where the capability's commands run: a memcached pool or the embedded
//! in-process store, behind one handle.

pub(crate) mod embedded;
pub(crate) mod memcached;
pub(crate) mod routing;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::bindings::capability::{Command, Error, Outcome, Replies};

/// The replies to a batch as the capability returns them (one outcome per
/// command, the values back to back), or an error that concerns the whole
/// batch.
pub(crate) type BatchResult = Result<Replies, Error>;

/// Appends a value outcome: `bytes` go at the end of the batch's values.
/// Values are below memcached's 1 GiB item limit, so the length fits.
pub(crate) fn push_value(replies: &mut Replies, bytes: &[u8]) {
    replies.values.extend_from_slice(bytes);
    replies.outcomes.push(Outcome::Value(bytes.len() as u32));
}

/// A memcached-like storage. Commands reaching it are already scoped to an
/// application and checked by the grant.
pub(crate) trait Storage: Send + Sync {
    /// Runs `commands` as one pipelined batch on the server owning `route`.
    fn execute(&self, route: &[u8], commands: Vec<Command>) -> BatchResult;
    /// Runs `commands` on every server; fails if any server fails.
    fn broadcast(&self, commands: Vec<Command>) -> Result<(), Error>;
    /// How many servers a broadcast reaches.
    fn servers(&self) -> usize;
    /// The largest value the storage accepts, in bytes.
    fn item_size_limit(&self) -> u64;
    /// Where entries go, for messages ("memcached at 127.0.0.1:11211").
    fn describe(&self) -> String;
    /// The memcached pool behind this storage, if it is one (the bench's
    /// raw baseline runs on its connections).
    #[cfg(feature = "bench")]
    fn memcached(&self) -> Option<&memcached::MemcachedPool> {
        None
    }
}

/// Where entries are stored: a memcached pool or the embedded store.
/// Cloning is cheap; clones share connections (or the embedded entries).
#[derive(Clone)]
pub struct Backend {
    storage: Arc<dyn Storage>,
    batches: Arc<AtomicU64>,
}

impl Backend {
    /// A pool of memcached servers, each `HOST:PORT`. Every tenant lives on
    /// one server, chosen by a stable hash of the tenant.
    pub fn memcached(servers: &[impl AsRef<str>], options: memcached::MemcachedOptions) -> anyhow::Result<Backend> {
        let servers: Vec<String> = servers.iter().map(|server| server.as_ref().trim().to_owned()).collect();
        Ok(Backend::with_storage(Arc::new(memcached::MemcachedPool::new(
            &servers, options,
        )?)))
    }

    /// The embedded in-process store (entries last as long as the process).
    pub fn embedded() -> Backend {
        Backend::with_storage(Arc::new(embedded::Embedded::default()))
    }

    /// What the backend is, for messages: "memcached at 127.0.0.1:11211".
    pub fn describe(&self) -> String {
        self.storage.describe()
    }

    /// The largest value this backend stores, in bytes.
    pub fn item_size_limit(&self) -> u64 {
        self.storage.item_size_limit()
    }

    /// Pipelined batches sent so far through this backend and its clones,
    /// one per server reached: the number of memcached round trips
    /// (batches to different servers run in parallel).
    pub fn batches_sent(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    fn with_storage(storage: Arc<dyn Storage>) -> Backend {
        Backend {
            storage,
            batches: Arc::default(),
        }
    }

    pub(crate) fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    pub(crate) fn count_batches(&self, batches: u64) {
        self.batches.fetch_add(batches, Ordering::Relaxed);
    }
}
