//! Where the capability's commands run: a memcached pool or the embedded
//! in-process store, behind one handle.

pub(crate) mod embedded;
pub(crate) mod memcached;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use crate::ledger::Ledger;
use crate::memo::{MEMO_ENTRIES, Memo};
use crate::usage::Usage;
use tenant_cache_memcached::types::{Command, Error, Replies};

/// A boxed future that may move between threads.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub use embedded::EmbeddedOptions;

/// The replies to a batch as the capability returns them (one outcome per
/// command, the values back to back), or an error that concerns the whole
/// batch.
pub(crate) type BatchResult = Result<Replies, Error>;

/// A memcached-like storage. Commands reaching it were checked by the
/// grant; their keys are relative to the grant's prefix.
pub(crate) trait Storage: Send + Sync {
    /// Runs `commands` as one pipelined batch on the server owning `route`;
    /// the values of its replies may total at most `reply_bytes`.
    fn execute(&self, prefix: &str, route: &[u8], commands: Vec<Command>, reply_bytes: u64) -> BatchResult;
    /// Runs `commands` on every server, visible to every route; fails if
    /// any server fails.
    fn broadcast(&self, prefix: &str, commands: Vec<Command>) -> Result<(), Error>;
    /// [`execute`](Self::execute) for async hosts: no thread blocks.
    fn execute_async<'a>(
        &'a self,
        prefix: &'a str,
        route: &'a [u8],
        commands: Vec<Command>,
        reply_bytes: u64,
    ) -> BoxFuture<'a, BatchResult>;
    /// [`broadcast`](Self::broadcast) for async hosts.
    fn broadcast_async<'a>(&'a self, prefix: &'a str, commands: Vec<Command>) -> BoxFuture<'a, Result<(), Error>>;
    /// How many servers a broadcast reaches.
    fn servers(&self) -> usize;
    /// The largest item the storage accepts (value, key and memcached's
    /// own overhead), in bytes.
    fn item_size_limit(&self) -> u64;
    /// Round trips made so far, one per server reached.
    fn batches_sent(&self) -> u64;
    /// Where entries go, for messages ("memcached at 127.0.0.1:11211").
    fn describe(&self) -> String;
    /// The memcached pool behind this storage, if it is one.
    fn memcached(&self) -> Option<&memcached::MemcachedPool> {
        None
    }
}

/// Where entries are stored: a memcached pool or the embedded store.
/// Cloning is cheap; clones share connections (or the embedded entries).
#[derive(Clone)]
pub struct Backend {
    storage: Arc<dyn Storage>,
    memo: Arc<Memo>,
    token_key: TokenKey,
    /// The buckets of grants with budgets.
    ledger: Arc<Ledger>,
    usage: Arc<Usage>,
}

/// How many tenants of each application get counters of their own in a
/// window of usage, by default (see [`Backend::with_usage`]).
pub const USAGE_TOP: usize = 10;

/// How long a window of usage lasts, by default.
pub const USAGE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// The key that seals the tokens the component hands out (swap and lease
/// tokens): 32 bytes.
pub(crate) type TokenKey = Arc<[u8; 32]>;

/// The token key of backends given no secret: one random key for the
/// process, so every backend of the process accepts the others' tokens.
fn process_token_key() -> TokenKey {
    static KEY: OnceLock<TokenKey> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(rand::random())).clone()
}

impl Backend {
    /// A pool of memcached servers, each `HOST:PORT`. Every tenant lives on
    /// one server, chosen by a stable hash of the tenant; the servers keep
    /// a record of the pool, and a process listing other servers than the
    /// pool's is refused (see [`Backend::set_pool`]).
    pub fn memcached(servers: &[impl AsRef<str>], options: memcached::MemcachedOptions) -> anyhow::Result<Backend> {
        let servers: Vec<String> = servers.iter().map(|server| server.as_ref().trim().to_owned()).collect();
        Ok(Backend {
            storage: Arc::new(memcached::MemcachedPool::new(&servers, options)?),
            memo: Arc::new(Memo::new(MEMO_ENTRIES)),
            token_key: process_token_key(),
            ledger: Arc::default(),
            usage: Arc::new(Usage::new(USAGE_TOP, USAGE_WINDOW)),
        })
    }

    /// The embedded in-process store with its defaults (entries last as
    /// long as the process).
    pub fn embedded() -> Backend {
        Backend::embedded_with(EmbeddedOptions::default())
    }

    /// The embedded in-process store with `options`.
    pub fn embedded_with(options: EmbeddedOptions) -> Backend {
        Backend {
            storage: Arc::new(embedded::Embedded::new(options)),
            memo: Arc::new(Memo::new(MEMO_ENTRIES)),
            token_key: process_token_key(),
            ledger: Arc::default(),
            usage: Arc::new(Usage::new(USAGE_TOP, USAGE_WINDOW)),
        }
    }

    /// The same backend, sealing the tokens its components hand out
    /// (`get-for-swap`'s and `get-or-lease`'s) with a key derived from
    /// `secret`. Without one, a random key of the process seals them, so a
    /// token is accepted only in the process that handed it out; give
    /// every process that may receive another's tokens (an HTTP service
    /// behind a load balancer handing them out as ETags) the same secret,
    /// of at least 16 bytes, kept from the callers. Refuses a shorter one.
    pub fn with_token_secret(self, secret: &[u8]) -> anyhow::Result<Backend> {
        let key = tenant_cache_memcached::tokens::key_from_secret(secret).ok_or_else(|| {
            anyhow::anyhow!(
                "a token secret must be at least {} bytes, not {}",
                tenant_cache_memcached::tokens::MIN_SECRET,
                secret.len()
            )
        })?;
        Ok(Backend {
            token_key: Arc::new(key),
            ..self
        })
    }

    /// The same backend, counting its grants' usage per tenant in windows
    /// of `window`, each published with the `top` tenants of each
    /// application (by bytes written) under their names and the rest
    /// summed as `tenant="(others)"` (defaults: [`USAGE_TOP`],
    /// [`USAGE_WINDOW`]). The counters: `tenant_cache_tenant_batches_total`,
    /// `_bytes_written_total`, `_hits_total`, `_misses_total` and
    /// `_budget_refusals_total`, labelled `app` and `tenant`.
    pub fn with_usage(self, top: usize, window: std::time::Duration) -> Backend {
        Backend {
            usage: Arc::new(Usage::new(top, window)),
            ..self
        }
    }

    /// Publishes the usage counted since the last window closed, now (at
    /// shutdown, or before a scrape that must see every call).
    pub fn publish_usage(&self) {
        self.usage.publish()
    }

    /// The buckets of this backend's grants with budgets.
    pub(crate) fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The usage of this backend's grants.
    pub(crate) fn usage(&self) -> &Usage {
        &self.usage
    }

    /// The key that seals this backend's tokens.
    pub(crate) fn token_key(&self) -> &[u8; 32] {
        &self.token_key
    }

    /// What the backend is, for messages: "memcached at 127.0.0.1:11211".
    pub fn describe(&self) -> String {
        self.storage.describe()
    }

    /// The largest item this backend stores, in bytes: a value, its key
    /// and memcached's per-item overhead together.
    pub fn item_size_limit(&self) -> u64 {
        self.storage.item_size_limit()
    }

    /// Round trips to memcached so far through this backend and its clones,
    /// one per server reached (batches to different servers run in
    /// parallel). The embedded store counts its batches.
    pub fn batches_sent(&self) -> u64 {
        self.storage.batches_sent()
    }

    /// Makes this backend's server list the pool's, as recorded on the
    /// servers: what an operator does after adding or removing a server
    /// (`tenant-cache pool set`). Tenants whose server changes start empty
    /// on their new server; the others keep their entries. A server leaving
    /// the pool must be reachable, so that it is fenced off, unless
    /// `force`. Returns the new record, as text.
    pub fn set_pool(&self, force: bool) -> anyhow::Result<String> {
        let pool = self.pool()?;
        let record = pool
            .set_membership(force)
            .map_err(|error| anyhow::anyhow!(tenant_cache_memcached::protocol::describe(&error)))?;
        Ok(String::from_utf8_lossy(&record.encode()).into_owned())
    }

    /// What every server of the pool holds as the pool record.
    pub fn pool_report(&self) -> anyhow::Result<Vec<memcached::PoolReport>> {
        Ok(self.pool()?.report())
    }

    fn pool(&self) -> anyhow::Result<&memcached::MemcachedPool> {
        self.storage
            .memcached()
            .ok_or_else(|| anyhow::anyhow!("{} has no pool of servers", self.describe()))
    }

    /// The memo the component's instances share (see `memo`).
    pub(crate) fn memo(&self) -> &Memo {
        &self.memo
    }

    pub(crate) fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }
}
