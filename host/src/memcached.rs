//! The capability on real memcached servers, through the meta-protocol
//! client of the `memcache` crate (`memcache::exp::MetaClient`).
//!
//! Why that client and not the crate's legacy `Client`: the legacy client
//! probes every checkout with a `version` round trip, writes ASCII keys
//! into the command line unchecked, can pair a reply with the wrong
//! request after a timeout, and does not hold its timeouts. `MetaClient`
//! pipelines a batch in one write, stamps every command with an opaque
//! token and checks the echoes (a mismatched reply poisons the
//! connection instead of answering another key), enforces one deadline
//! per exchange, and drops a connection that failed mid-exchange.

use std::time::Duration;

use anyhow::{Context, bail};
use memcache::exp::{self, Delete, Get, MetaClient, Op, OpResult, Set, Ttl};

use crate::bindings::memcached::{Command, Error, Reply, Store as Item};
use crate::routing;
use crate::store::{BatchResult, Store};

/// How a memcached pool is reached.
#[derive(Clone, Debug)]
pub struct MemcachedOptions {
    /// Deadline for connecting and for each exchange with a server.
    pub timeout: Duration,
    /// The servers' item size limit (memcached's `-I`, 1 MiB by default):
    /// values that cannot fit are refused before they are sent.
    pub item_size_limit: u64,
}

impl Default for MemcachedOptions {
    fn default() -> Self {
        MemcachedOptions {
            timeout: Duration::from_secs(1),
            item_size_limit: 1024 * 1024,
        }
    }
}

struct Server {
    address: String,
    client: MetaClient,
}

/// Each `MetaClient` here talks to one server (routing across the pool is
/// ours, in `routing`), so its router need not hash anything.
struct OneServer;

impl exp::Router for OneServer {
    fn route(&self, _key: &[u8], _servers: &[String]) -> usize {
        0
    }
}

/// A pool of memcached servers; a route always goes to the same server.
pub(crate) struct Memcached {
    servers: Vec<Server>,
    ids: Vec<String>,
    options: MemcachedOptions,
}

impl Memcached {
    /// Prepares clients for `addresses` (`HOST:PORT` each). Connections are
    /// dialed on first use, so an unreachable server fails its first call.
    pub(crate) fn new(addresses: &[String], options: MemcachedOptions) -> anyhow::Result<Memcached> {
        if addresses.is_empty() {
            bail!("no memcached server given (expected HOST:PORT[,HOST:PORT...])");
        }
        let mut servers = Vec::with_capacity(addresses.len());
        for address in addresses {
            if servers.iter().any(|server: &Server| &server.address == address) {
                bail!("memcached server {address} is listed twice");
            }
            let client = MetaClient::builder()
                .router(OneServer)
                .connect_timeout(Some(options.timeout))
                .io_timeout(Some(options.timeout))
                .connect(address.as_str())
                .with_context(|| format!("resolving memcached address {address:?} (expected HOST:PORT)"))?;
            servers.push(Server {
                address: address.clone(),
                client,
            });
        }
        let ids = addresses.to_vec();
        Ok(Memcached { servers, ids, options })
    }

    fn run(&self, server: &Server, commands: Vec<Command>) -> BatchResult {
        let operations: Vec<Op> = commands.into_iter().map(operation).collect::<Result<_, _>>()?;
        let results = server
            .client
            .run_batch(operations)
            .map_err(|error| self.error(server, error))?;
        Ok(results
            .into_iter()
            .map(|result| match result {
                Ok(OpResult::Get(get)) => Ok(match (get.hit(), get.value) {
                    (true, Some(value)) => Reply::Value(value),
                    _ => Reply::Miss,
                }),
                Ok(OpResult::Mutation(mutation)) => Ok(match mutation.status {
                    exp::MutationStatus::Applied => Reply::Done,
                    exp::MutationStatus::AlreadyExists => Reply::Exists,
                    _ => Reply::Miss,
                }),
                Ok(other) => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
                Err(error) => Err(self.error(server, error)),
            })
            .collect())
    }

    /// The one place `memcache` errors become capability errors.
    fn error(&self, server: &Server, error: exp::Error) -> Error {
        let address = &server.address;
        match error {
            exp::Error::Io(error) => Error::Unavailable(format!("memcached at {address} is unreachable: {error}")),
            exp::Error::Timeout { .. } => Error::Unavailable(format!(
                "memcached at {address} did not answer within {:?}",
                self.options.timeout
            )),
            exp::Error::Ambiguous { source, .. } => Error::Unavailable(format!(
                "memcached at {address} failed mid-request, its outcome is unknown: {}",
                self.error(server, *source).message()
            )),
            exp::Error::Server(message) if message.contains("too large") => {
                Error::ValueTooLarge(self.options.item_size_limit)
            }
            exp::Error::Usage(message) => {
                Error::Protocol(format!("the memcached client refused the request: {message}"))
            }
            other => Error::Protocol(format!("memcached at {address}: {other}")),
        }
    }
}

/// The `memcache` operation for one command.
fn operation(command: Command) -> Result<Op, Error> {
    let store = |item: Item| -> Result<Set, Error> {
        let set = Set::new(item.key, item.value);
        Ok(match item.ttl {
            Some(0) => return Err(Error::Protocol("a ttl of 0 seconds is not a ttl".into())),
            Some(secs) => set.ttl(Ttl::secs(secs)),
            None => set,
        })
    };
    Ok(match command {
        Command::Get(key) => Get::new(key).into(),
        Command::Set(item) => store(item)?.into(),
        Command::Add(item) => store(item)?.add().into(),
        Command::Delete(key) => Delete::new(key).into(),
    })
}

impl Error {
    /// The text of an error, for nesting one in another.
    pub(crate) fn message(&self) -> String {
        match self {
            Error::Unavailable(text) | Error::InvalidKey(text) | Error::Protocol(text) => text.clone(),
            Error::ValueTooLarge(limit) => format!("value larger than the item size limit of {limit} bytes"),
        }
    }
}

impl Store for Memcached {
    fn execute(&self, route: &[u8], commands: Vec<Command>) -> BatchResult {
        self.run(&self.servers[routing::owner(route, &self.ids)], commands)
    }

    fn broadcast(&self, commands: Vec<Command>) -> Result<(), Error> {
        // One batch per server, all at once: a broadcast costs one round
        // trip however large the pool.
        let results: Vec<BatchResult> = std::thread::scope(|scope| {
            let handles: Vec<_> = self.servers[1..]
                .iter()
                .map(|server| scope.spawn(|| self.run(server, commands.clone())))
                .collect();
            let mut results = vec![self.run(&self.servers[0], commands.clone())];
            results.extend(handles.into_iter().map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(Error::Protocol("broadcast thread panicked".into())))
            }));
            results
        });
        for result in results {
            for reply in result? {
                reply?;
            }
        }
        Ok(())
    }

    fn servers(&self) -> usize {
        self.servers.len()
    }

    fn item_size_limit(&self) -> u64 {
        self.options.item_size_limit
    }

    fn describe(&self) -> String {
        format!("memcached at {}", self.ids.join(","))
    }
}
