//! The capability on real memcached servers, through the meta protocol of
//! the `memcache` crate: its commands (`MetaCommand`) and its transport
//! (`MetaConnection`, which writes a batch in one payload and reads the
//! replies under one deadline per exchange).
//!
//! The pool and the checks around each exchange are ours. The crate's
//! pooled `MetaClient` costs nine system calls per exchange (three of them
//! probing the idle connection) and about 6.7k instructions per extra
//! command in a batch; here an exchange is seven calls (one of them the
//! probe), and an extra command about 2.5k instructions. The crate's legacy
//! `Client` is out of the question: it probes every checkout with a
//! `version` round trip, writes keys into the command line unchecked and
//! can pair a reply with the wrong request after a timeout.
//!
//! What every exchange guarantees:
//! - every command carries an opaque token never used before on its
//!   connection, and every reply must echo its own: a late, extra or
//!   forged reply fails the batch instead of answering another key;
//! - a connection that failed in any way is dropped, never reused;
//! - an idle connection is probed before reuse, so a server restart is
//!   noticed before a request is written to a dead connection (bytes
//!   already buffered from an earlier reply cannot pass for a new one:
//!   their tokens are stale);
//! - connecting, and then each exchange as a whole, are bounded by the
//!   configured timeout.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use memcache::exp::{self, MetaCommand, MetaConnection, MetaOp, MetaResponse, ReturnCode};

use crate::bindings::memcached::{Command, Error, Store as Item};
use crate::routing;
use crate::store::{BatchResult, Reply, Store};

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

/// Idle connections kept per server; more are closed when returned.
const MAX_IDLE: usize = 64;

/// One connection to a server.
struct Connection {
    meta: MetaConnection,
    /// The same socket, to probe while the connection is idle.
    socket: TcpStream,
    /// Opaque tokens handed out so far on this connection.
    tokens: u64,
}

impl Connection {
    /// Whether an idle connection can carry a request: nothing may have
    /// arrived since its last exchange, neither bytes (a desynchronized
    /// stream) nor the end of the stream (the server closed it, as on a
    /// restart). One non-blocking peek, no round trip.
    fn is_reusable(&self) -> bool {
        use rustix::io::Errno;
        use rustix::net::{RecvFlags, recv};
        let mut probe = [0u8; 1];
        matches!(
            recv(&self.socket, &mut probe, RecvFlags::PEEK | RecvFlags::DONTWAIT),
            Err(Errno::AGAIN)
        )
    }
}

/// One server of the pool and its idle connections.
struct Server {
    address: String,
    addrs: Vec<SocketAddr>,
    idle: Mutex<Vec<Connection>>,
}

/// A pool of memcached servers; a route always goes to the same server.
pub(crate) struct Memcached {
    servers: Vec<Server>,
    ids: Vec<String>,
    options: MemcachedOptions,
}

/// Why an exchange failed, for the capability's error.
enum Failure {
    /// No connection could be made: nothing was sent.
    Connect(std::io::Error),
    /// The exchange failed after a connection was up.
    Exchange(exp::Error),
    /// A reply did not echo its command's opaque token.
    Mismatch,
    /// A command could not be made: nothing was sent.
    Refused(Error),
}

impl Memcached {
    /// Prepares the pool for `addresses` (`HOST:PORT` each). Names are
    /// resolved now; connections are dialed on first use, so an
    /// unreachable server fails its first call.
    pub(crate) fn new(addresses: &[String], options: MemcachedOptions) -> anyhow::Result<Memcached> {
        if addresses.is_empty() {
            bail!("no memcached server given (expected HOST:PORT[,HOST:PORT...])");
        }
        let mut servers = Vec::with_capacity(addresses.len());
        for address in addresses {
            if servers.iter().any(|server: &Server| &server.address == address) {
                bail!("memcached server {address} is listed twice");
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
                idle: Mutex::new(Vec::new()),
            });
        }
        let ids = addresses.to_vec();
        Ok(Memcached { servers, ids, options })
    }

    /// An idle connection to `server` that passes the probe, or a new one.
    fn checkout(&self, server: &Server) -> Result<Connection, std::io::Error> {
        loop {
            let Some(connection) = server.idle.lock().unwrap_or_else(|poison| poison.into_inner()).pop() else {
                break;
            };
            if connection.is_reusable() {
                return Ok(connection);
            }
        }
        let mut last = None;
        for addr in &server.addrs {
            match TcpStream::connect_timeout(addr, self.options.timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    let socket = stream.try_clone()?;
                    let mut meta = MetaConnection::from_stream(stream);
                    meta.set_io_timeout(Some(self.options.timeout));
                    return Ok(Connection {
                        meta,
                        socket,
                        tokens: 0,
                    });
                }
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no address to connect to")))
    }

    /// Sends the commands `build` makes to `server` in one payload and
    /// reads one reply per command, each checked against its command's
    /// opaque token. `build` is given the first token of the batch and
    /// stamps the commands with it and the ones after, in order.
    fn exchange(
        &self,
        server: &Server,
        build: impl FnOnce(u64) -> Result<Vec<MetaCommand>, Error>,
    ) -> Result<Vec<MetaResponse>, Failure> {
        let mut connection = self.checkout(server).map_err(Failure::Connect)?;
        let first = connection.tokens;
        let commands = match build(first) {
            Ok(commands) => commands,
            Err(error) => {
                self.put_back(server, connection);
                return Err(Failure::Refused(error));
            }
        };
        connection.tokens += commands.len() as u64;
        let replies = connection.meta.execute_batch(&commands).map_err(Failure::Exchange)?;
        let echoed = replies.len() == commands.len()
            && replies.iter().zip(first..).all(|(reply, token)| {
                let mut opaques = reply.flags().filter(|flag| flag.first() == Some(&b'O'));
                opaques.next() == Some(opaque(token).as_slice()) && opaques.next().is_none()
            });
        if !echoed {
            return Err(Failure::Mismatch);
        }
        self.put_back(server, connection);
        Ok(replies)
    }

    /// Returns a connection that is in step with its server to the pool.
    fn put_back(&self, server: &Server, connection: Connection) {
        let mut idle = server.idle.lock().unwrap_or_else(|poison| poison.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(connection);
        }
    }

    fn run(&self, server: &Server, commands: Vec<Command>) -> BatchResult {
        let writes = commands.iter().any(|command| !matches!(command, Command::Get(_)));
        let kinds: Vec<MetaOp> = commands.iter().map(op_of).collect();
        let replies = self
            .exchange(server, |first| {
                commands
                    .into_iter()
                    .zip(first..)
                    .map(|(command, token)| meta_command(command, token))
                    .collect()
            })
            .map_err(|failure| self.error(server, failure, writes))?;
        Ok(replies
            .into_iter()
            .zip(kinds)
            .map(|(reply, kind)| reply_of(kind, reply))
            .collect())
    }

    /// The one place transport failures become capability errors. A batch
    /// with writes that failed once connected may or may not have been
    /// applied, and the message says so.
    fn error(&self, server: &Server, failure: Failure, writes: bool) -> Error {
        let address = &server.address;
        let unknown = if writes {
            "; its writes may or may not have been applied"
        } else {
            ""
        };
        match failure {
            Failure::Connect(error) => Error::Unavailable(format!("memcached at {address} is unreachable: {error}")),
            Failure::Exchange(exp::Error::Io(error)) if is_timeout(&error) => Error::Unavailable(format!(
                "memcached at {address} did not answer within {:?}{unknown}",
                self.options.timeout
            )),
            Failure::Exchange(exp::Error::Io(error)) => {
                Error::Unavailable(format!("memcached at {address} failed mid-request: {error}{unknown}"))
            }
            Failure::Exchange(exp::Error::Server(message)) if message.contains("too large") => {
                Error::ValueTooLarge(self.options.item_size_limit)
            }
            Failure::Exchange(other) => Error::Protocol(format!("memcached at {address}: {other}{unknown}")),
            Failure::Refused(error) => error,
            Failure::Mismatch => Error::Protocol(format!(
                "memcached at {address} sent a reply that does not match the request; connection dropped{unknown}"
            )),
        }
    }
}

/// The opaque flag for `token`: `O` and the token in hex.
fn opaque(token: u64) -> Opaque {
    let digits = (64 - token.leading_zeros()).div_ceil(4).max(1) as usize;
    let mut bytes = [b'O'; 17];
    for (index, byte) in bytes[1..=digits].iter_mut().enumerate() {
        let nibble = (token >> (4 * (digits - 1 - index))) & 0xf;
        *byte = b"0123456789abcdef"[nibble as usize];
    }
    Opaque { bytes, len: 1 + digits }
}

/// An opaque flag, without an allocation.
struct Opaque {
    bytes: [u8; 17],
    len: usize,
}

impl Opaque {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

fn op_of(command: &Command) -> MetaOp {
    match command {
        Command::Get(_) => MetaOp::Get,
        Command::Set(_) | Command::Add(_) => MetaOp::Set,
        Command::Delete(_) => MetaOp::Delete,
    }
}

/// The meta command for one capability command, stamped with `token`. Its
/// flags travel as one token (`v O1f`): one allocation, not one per flag.
fn meta_command(command: Command, token: u64) -> Result<MetaCommand, Error> {
    let opaque = opaque(token);
    let store = |item: Item, add: bool| -> Result<MetaCommand, Error> {
        let mut flags = Vec::with_capacity(24);
        match item.ttl {
            Some(0) => return Err(Error::Protocol("a ttl of 0 seconds is not a ttl".into())),
            Some(secs) => {
                flags.push(b'T');
                flags.extend_from_slice(wire_ttl(secs)?.to_string().as_bytes());
                flags.push(b' ');
            }
            None => {}
        }
        if add {
            flags.extend_from_slice(b"ME ");
        }
        flags.extend_from_slice(opaque.as_slice());
        Ok(MetaCommand::new(MetaOp::Set, item.key).value(item.value).flag(flags))
    };
    Ok(match command {
        Command::Get(key) => {
            let mut flags = Vec::with_capacity(2 + opaque.as_slice().len());
            flags.extend_from_slice(b"v ");
            flags.extend_from_slice(opaque.as_slice());
            MetaCommand::new(MetaOp::Get, key).flag(flags)
        }
        Command::Set(item) => store(item, false)?,
        Command::Add(item) => store(item, true)?,
        Command::Delete(key) => MetaCommand::new(MetaOp::Delete, key).flag(opaque.as_slice()),
    })
}

/// memcached reads a TTL above 30 days as a unix time: a longer TTL is
/// sent as the time it ends.
fn wire_ttl(secs: u32) -> Result<u64, Error> {
    const MAX_RELATIVE: u32 = 30 * 24 * 3600;
    if secs <= MAX_RELATIVE {
        return Ok(u64::from(secs));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| Error::Protocol("the system clock is before 1970".into()))?;
    Ok(now.as_secs() + u64::from(secs))
}

/// The capability's reply for the reply to a command of `kind`.
fn reply_of(kind: MetaOp, reply: MetaResponse) -> Result<Reply, Error> {
    Ok(match (kind, reply.rc()) {
        (MetaOp::Get, ReturnCode::Va) => Reply::Value(reply.into_value().unwrap_or_default()),
        (MetaOp::Get, ReturnCode::En) => Reply::Miss,
        (MetaOp::Set | MetaOp::Delete, ReturnCode::Hd) => Reply::Done,
        (MetaOp::Set, ReturnCode::Ns) => Reply::Exists,
        (MetaOp::Delete, ReturnCode::Nf) => Reply::Miss,
        (_, code) => return Err(Error::Protocol(format!("unexpected reply {code:?} to {kind:?}"))),
    })
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

    fn raw(&self, commands: Vec<MetaCommand>) -> Result<Vec<MetaResponse>, Error> {
        let server = &self.servers[0];
        let stamp = |first| {
            Ok(commands
                .into_iter()
                .zip(first..)
                .map(|(command, token)| command.flag(opaque(token).as_slice()))
                .collect())
        };
        self.exchange(server, stamp)
            .map_err(|failure| self.error(server, failure, true))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_tokens_are_hex_and_distinct() {
        assert_eq!(opaque(0).as_slice(), b"O0");
        assert_eq!(opaque(9).as_slice(), b"O9");
        assert_eq!(opaque(0xab).as_slice(), b"Oab");
        assert_eq!(opaque(0x100).as_slice(), b"O100");
        assert_eq!(opaque(u64::MAX).as_slice(), b"Offffffffffffffff");
        for token in 0..5000u64 {
            assert_eq!(opaque(token).as_slice(), format!("O{token:x}").as_bytes());
        }
    }

    #[test]
    fn replies_map_per_command_kind() {
        let reply = |line: &[u8]| MetaResponse::parse_header(line).unwrap();
        assert_eq!(reply_of(MetaOp::Get, reply(b"EN O1")), Ok(Reply::Miss));
        assert_eq!(reply_of(MetaOp::Set, reply(b"HD O1")), Ok(Reply::Done));
        assert_eq!(reply_of(MetaOp::Set, reply(b"NS O1")), Ok(Reply::Exists));
        assert_eq!(reply_of(MetaOp::Delete, reply(b"NF O1")), Ok(Reply::Miss));
        assert!(matches!(
            reply_of(MetaOp::Get, reply(b"HD O1")),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            reply_of(MetaOp::Delete, reply(b"EN O1")),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn commands_carry_ttl_and_add_mode() {
        let item = |ttl| Item {
            key: "k".into(),
            value: b"vv".to_vec(),
            ttl,
        };
        let wire =
            |command: Command| String::from_utf8(meta_command(command, 0x1f).unwrap().encode().unwrap()).unwrap();
        assert_eq!(wire(Command::Get("k".into())), "mg k v O1f\r\n");
        assert_eq!(wire(Command::Set(item(None))), "ms k 2 O1f\r\nvv\r\n");
        assert_eq!(wire(Command::Add(item(None))), "ms k 2 ME O1f\r\nvv\r\n");
        assert_eq!(wire(Command::Add(item(Some(60)))), "ms k 2 T60 ME O1f\r\nvv\r\n");
        assert_eq!(wire(Command::Delete("k".into())), "md k O1f\r\n");
        assert!(meta_command(Command::Set(item(Some(0))), 0).is_err());
        let year = wire(Command::Set(item(Some(365 * 24 * 3600))));
        let end: u64 = year["ms k 2 T".len()..].split_once(' ').unwrap().0.parse().unwrap();
        assert!(end > 1_700_000_000 + 365 * 24 * 3600, "{year:?}");
    }
}
