//! The capability on real memcached servers: the pool of
//! `tenant_cache_memcached` (every route owned by one server, every batch
//! checking the membership record, over its protocol core), whose record
//! `pool set` changes by compare-and-swap (`pool_change`), and two drivers
//! that move its bytes (`blocking`, `tokio_driver`), each with calls to a
//! server coalesced on shared connections (`leader`, `coalescing`). Our own transport around the `memcache` crate's
//! reply codes, because its clients cost more system calls and allocations
//! per exchange than the whole rest of a call (docs/architecture.md, "The
//! memcached transport").

mod blocking;
mod coalescing;
mod leader;
mod pool_change;
mod tokio_driver;

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tenant_cache_memcached::membership::Membership;
use tenant_cache_memcached::pool::{Driver, Pool};
use tenant_cache_memcached::protocol::{Answer, Failure, ReadLimits, Request};
use tenant_cache_memcached::types::{Command, Error};

use super::{BatchResult, BoxFuture, Storage};

pub use tenant_cache_memcached::pool::PoolReport;

/// How a memcached pool is reached.
#[derive(Clone, Debug)]
pub struct MemcachedOptions {
    /// Deadline for connecting and for each exchange with a server.
    pub timeout: Duration,
    /// The servers' item size limit (memcached's `-I`, 1 MiB by default).
    /// Values that cannot fit are refused before they are sent; a stored
    /// value longer than this reads as a miss.
    pub item_size_limit: u64,
    /// Whether calls bound for one server share its connections: one per
    /// tokio runtime for async calls, two among threads for blocking
    /// calls. A batch that finds a connection free runs alone on it, and
    /// the batches that queue meanwhile go out together in one write (on
    /// by default). Off, each batch has a connection of its own for its
    /// exchange.
    pub coalesce: bool,
}

impl Default for MemcachedOptions {
    fn default() -> Self {
        MemcachedOptions {
            timeout: Duration::from_secs(1),
            item_size_limit: 1024 * 1024,
            coalesce: true,
        }
    }
}

/// One server of the pool.
pub(crate) struct Server {
    /// As configured: the name routing hashes and messages use.
    pub(crate) address: String,
    addrs: Vec<SocketAddr>,
    blocking: blocking::Idle,
    tokio: tokio_driver::Idle,
    coalesced: coalescing::Shared,
    led: leader::Shared,
}

/// A pool of memcached servers (a route always goes to the same server),
/// and the connections to each.
pub(crate) struct MemcachedPool {
    pub(crate) pool: Pool,
    pub(crate) servers: Vec<Server>,
    pub(crate) options: MemcachedOptions,
    exchanges: AtomicU64,
}

/// The blocking driver: `std::net`, with threads for requests to several
/// servers. Its futures are complete when first polled.
struct Blocking<'p>(&'p MemcachedPool);

impl Driver for Blocking<'_> {
    fn run<'a>(
        &'a self,
        requests: Vec<(usize, Request<'a>)>,
        reply_bytes: u64,
    ) -> impl Future<Output = Vec<Result<Answer, Failure>>> + Send + 'a {
        let pool = self.0;
        let results = match requests.len() {
            1 => requests
                .into_iter()
                .map(|(server, request)| pool.exchange_blocking(server, &request, reply_bytes))
                .collect(),
            _ => std::thread::scope(|scope| {
                let handles: Vec<_> = requests
                    .iter()
                    .map(|(server, request)| scope.spawn(move || pool.exchange_blocking(*server, request, reply_bytes)))
                    .collect();
                handles
                    .into_iter()
                    .map(|handle| {
                        handle
                            .join()
                            .unwrap_or(Err(Failure::Garbled("an exchange thread that panicked")))
                    })
                    .collect()
            }),
        };
        std::future::ready(results)
    }
}

/// The tokio driver: requests to several servers run concurrently on the
/// caller's task.
struct Tokio<'p>(&'p MemcachedPool);

impl Driver for Tokio<'_> {
    fn run<'a>(
        &'a self,
        requests: Vec<(usize, Request<'a>)>,
        reply_bytes: u64,
    ) -> impl Future<Output = Vec<Result<Answer, Failure>>> + Send + 'a {
        let pool = self.0;
        futures_util::future::join_all(
            requests
                .into_iter()
                .map(move |(server, request)| async move { pool.exchange_tokio(server, &request, reply_bytes).await }),
        )
    }
}

/// The time now, in unix seconds (long TTLs are sent as unix times).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl MemcachedPool {
    /// Prepares the pool for `addresses` (`HOST:PORT` each). Names are
    /// resolved now; connections are dialed on first use, so an
    /// unreachable server fails its first call.
    pub(crate) fn new(addresses: &[String], options: MemcachedOptions) -> anyhow::Result<MemcachedPool> {
        if addresses.is_empty() {
            bail!("no memcached server given (expected HOST:PORT[,HOST:PORT...])");
        }
        let mut servers = Vec::with_capacity(addresses.len());
        for address in addresses {
            if servers.iter().any(|server: &Server| &server.address == address) {
                bail!("memcached server {address} is listed twice");
            }
            if address.is_empty() || address.contains(|c: char| c.is_whitespace() || c == ',' || c == '@') {
                bail!("memcached address {address:?} is not HOST:PORT");
            }
            let addrs: Vec<SocketAddr> = address
                .to_socket_addrs()
                .with_context(|| format!("resolving memcached address {address:?} (expected HOST:PORT)"))?
                .collect();
            if addrs.is_empty() {
                bail!("memcached address {address:?} resolves to nothing");
            }
            servers.push(Server {
                address: address.clone(),
                addrs,
                blocking: blocking::Idle::default(),
                tokio: tokio_driver::Idle::default(),
                coalesced: coalescing::Shared::default(),
                led: leader::Shared::default(),
            });
        }
        Ok(MemcachedPool {
            pool: Pool::new(addresses.to_vec(), options.timeout),
            servers,
            options,
            exchanges: AtomicU64::new(0),
        })
    }

    /// Runs one request on server `index` over the blocking driver, on the
    /// shared connection if the options coalesce.
    fn exchange_blocking(&self, index: usize, request: &Request<'_>, reply_bytes: u64) -> Result<Answer, Failure> {
        if !self.options.coalesce {
            return self.exchange_blocking_alone(index, request, reply_bytes);
        }
        let server = &self.servers[index];
        let timeout = self.options.timeout;
        let deadline = Instant::now() + timeout;
        let limits = self.count_exchange(reply_bytes);
        server
            .led
            .exchange(&server.addrs, timeout, request, unix_now(), limits, deadline)
    }

    /// Runs one request on server `index` over a blocking connection of
    /// its own for the exchange.
    fn exchange_blocking_alone(
        &self,
        index: usize,
        request: &Request<'_>,
        reply_bytes: u64,
    ) -> Result<Answer, Failure> {
        let server = &self.servers[index];
        let timeout = self.options.timeout;
        let mut connection = server
            .blocking
            .checkout(&server.addrs, timeout)
            .map_err(Failure::Connect)?;
        let limits = self.count_exchange(reply_bytes);
        let (answer, in_step) = connection.exchange(request, unix_now(), limits, Instant::now() + timeout)?;
        if in_step {
            server.blocking.put_back(connection);
        }
        Ok(answer)
    }

    /// Runs one request on server `index` over the tokio driver, on the
    /// shared connection if the options coalesce.
    async fn exchange_tokio(&self, index: usize, request: &Request<'_>, reply_bytes: u64) -> Result<Answer, Failure> {
        match self.options.coalesce {
            true => self.exchange_coalesced(index, request, reply_bytes).await,
            false => self.exchange_alone(index, request, reply_bytes).await,
        }
    }

    /// Runs one request on server `index` on its shared connection.
    async fn exchange_coalesced(
        &self,
        index: usize,
        request: &Request<'_>,
        reply_bytes: u64,
    ) -> Result<Answer, Failure> {
        let server = &self.servers[index];
        let timeout = self.options.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let limits = self.count_exchange(reply_bytes);
        server
            .coalesced
            .exchange(&server.addrs, timeout, request, unix_now(), limits, deadline)
            .await
    }

    /// Runs one request on server `index` over a tokio connection of its
    /// own for the exchange.
    async fn exchange_alone(&self, index: usize, request: &Request<'_>, reply_bytes: u64) -> Result<Answer, Failure> {
        let server = &self.servers[index];
        let timeout = self.options.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut connection = server
            .tokio
            .checkout(&server.addrs, timeout)
            .await
            .map_err(Failure::Connect)?;
        let limits = self.count_exchange(reply_bytes);
        let (answer, in_step) = connection.exchange(request, unix_now(), limits, deadline).await?;
        if in_step {
            server.tokio.put_back(connection);
        }
        Ok(answer)
    }

    /// Counts an exchange about to run (for `batches_sent`), and gives the
    /// limits its replies are read under.
    fn count_exchange(&self, reply_bytes: u64) -> ReadLimits {
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        ReadLimits {
            item_size: self.options.item_size_limit,
            reply_bytes,
        }
    }

    /// The pool records every server holds (for `tenant-cache pool show`).
    pub(crate) fn report(&self) -> Vec<PoolReport> {
        pollster::block_on(self.pool.report_with(&Blocking(self)))
    }

    /// Makes `self`'s server list the pool's (for `tenant-cache pool set`).
    pub(crate) fn set_membership(&self, force: bool) -> Result<Membership, Error> {
        pollster::block_on(self.set_membership_with(force))
    }
}

impl Storage for MemcachedPool {
    fn execute(&self, prefix: &str, route: &[u8], commands: Vec<Command>, reply_bytes: u64) -> BatchResult {
        pollster::block_on(
            self.pool
                .execute_with(&Blocking(self), prefix, route, &commands, reply_bytes),
        )
    }

    fn broadcast(&self, prefix: &str, commands: Vec<Command>) -> Result<(), Error> {
        pollster::block_on(self.pool.broadcast_with(&Blocking(self), prefix, &commands))
    }

    fn execute_async<'a>(
        &'a self,
        prefix: &'a str,
        route: &'a [u8],
        commands: Vec<Command>,
        reply_bytes: u64,
    ) -> BoxFuture<'a, BatchResult> {
        Box::pin(async move {
            self.pool
                .execute_with(&Tokio(self), prefix, route, &commands, reply_bytes)
                .await
        })
    }

    fn broadcast_async<'a>(&'a self, prefix: &'a str, commands: Vec<Command>) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { self.pool.broadcast_with(&Tokio(self), prefix, &commands).await })
    }

    fn servers(&self) -> usize {
        self.servers.len()
    }

    fn item_size_limit(&self) -> u64 {
        self.options.item_size_limit
    }

    fn batches_sent(&self) -> u64 {
        self.exchanges.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        format!("memcached at {}", self.pool.ids.join(","))
    }

    fn memcached(&self) -> Option<&MemcachedPool> {
        Some(self)
    }
}

#[cfg(feature = "bench")]
impl MemcachedPool {
    /// Runs meta commands as they are on the first server, as the
    /// capability's blocking batches go (see [`crate::bench_seam`]), or
    /// `alone`, on a connection of their own for the exchange.
    pub(crate) fn raw(&self, commands: Vec<memcache::exp::MetaCommand>, alone: bool) -> BatchResult {
        let request = Request {
            raw: commands,
            ..Request::default()
        };
        let answer = match alone {
            true => self.exchange_blocking_alone(0, &request, u64::MAX),
            false => self.exchange_blocking(0, &request, u64::MAX),
        };
        answer
            .map(|answer| answer.replies)
            .map_err(|failure| self.pool.error(0, failure, true))
    }

    /// [`raw`](Self::raw) over the tokio driver: as the capability's async
    /// batches go (on the shared connection, if the options coalesce), or
    /// `alone`, each batch on a connection of its own for its exchange
    /// (what a plain memcached client does).
    pub(crate) async fn raw_async(&self, commands: Vec<memcache::exp::MetaCommand>, alone: bool) -> BatchResult {
        let request = Request {
            raw: commands,
            ..Request::default()
        };
        let answer = match alone {
            true => self.exchange_alone(0, &request, u64::MAX).await,
            false => self.exchange_tokio(0, &request, u64::MAX).await,
        };
        answer
            .map(|answer| answer.replies)
            .map_err(|failure| self.pool.error(0, failure, true))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use tenant_cache_memcached::protocol::Group;

    use super::*;

    /// A server whose first connection gets half a reply and is then held
    /// open; later connections get `EN` for their first request.
    fn half_then_whole() -> (String, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut first, _) = listener.accept().unwrap();
            let mut request = [0u8; 4096];
            let _ = first.read(&mut request);
            let _ = first.write_all(b"VA 10 O0\r\nabc");
            let (mut second, _) = listener.accept().unwrap();
            let _ = second.read(&mut request);
            let _ = second.write_all(b"EN O0\r\n");
            let _ = second.read(&mut request);
            drop(first);
        });
        (address, server)
    }

    #[tokio::test]
    async fn a_future_dropped_mid_exchange_never_returns_its_connection() {
        let (address, server) = half_then_whole();
        let pool = MemcachedPool::new(&[address], MemcachedOptions::default()).unwrap();
        let commands = [Command::Get("a".into())];
        let request = || Request {
            groups: vec![Group {
                prefix: Vec::new(),
                commands: &commands,
            }],
            ..Request::default()
        };
        let first = request();
        let dropped = tokio::time::timeout(Duration::from_millis(100), pool.exchange_alone(0, &first, u64::MAX));
        assert!(dropped.await.is_err(), "the first exchange should still be waiting");
        // Its connection, with half a reply unread, went with the future.
        assert_eq!(pool.servers[0].tokio.len(), 0);
        let answer = pool.exchange_alone(0, &request(), u64::MAX).await.unwrap();
        assert_eq!(answer.replies.outcomes, [tenant_cache_memcached::types::Outcome::Miss]);
        assert_eq!(pool.servers[0].tokio.len(), 1);
        drop(pool);
        server.join().unwrap();
    }
}
