//! The provider's driver: the protocol core over `std::net`, which
//! `wasm32-wasip2` maps to `wasi:sockets` (the runtime must let the
//! component reach the servers: `wasmtime run -S inherit-network`, Spin's
//! `allowed_outbound_hosts`).
//!
//! An instance runs one call at a time, so requests to several servers run
//! one after the other, each server keeps one connection, and the
//! futures the pool awaits are complete when first polled. A socket is
//! non-blocking and an exchange waits in `poll` under one deadline,
//! writing and reading at once: memcached stops reading a connection
//! whose replies are not being read, so a large batch written before
//! reading would stall.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tenant_cache_memcached::pool::Driver;
use tenant_cache_memcached::protocol::{Answer, Exchange, Expected, Failure, Input, ReadLimits, Request};
use tenant_cache_memcached::types::Error;

/// The servers of the pool and a connection to each.
pub struct Sockets {
    servers: Vec<Server>,
    timeout: Duration,
    item_size_limit: u64,
}

struct Server {
    /// `HOST:PORT`, as configured; resolved when dialed.
    address: String,
    /// The connection kept between calls, in step with its server.
    connection: Mutex<Option<Connection>>,
}

struct Connection {
    stream: TcpStream,
    /// The read buffer; empty between exchanges.
    input: Input,
    /// The request being written, kept to reuse its capacity.
    output: Vec<u8>,
    /// Opaque tokens handed out so far on this connection.
    tokens: u64,
}

impl Sockets {
    /// The servers `ids` (each `HOST:PORT`, none twice), reached within
    /// `timeout` per exchange; replies of items over `item_size_limit`
    /// read as misses.
    pub fn new(ids: &[String], timeout: Duration, item_size_limit: u64) -> Result<Sockets, String> {
        let mut servers: Vec<Server> = Vec::with_capacity(ids.len());
        for address in ids {
            let port = address.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(_))) if !host.is_empty())
                || address.contains(|c: char| c.is_whitespace() || c == '@')
            {
                return Err(format!("memcached address {address:?} is not HOST:PORT"));
            }
            if servers.iter().any(|server| &server.address == address) {
                return Err(format!("memcached server {address} is listed twice"));
            }
            servers.push(Server {
                address: address.clone(),
                connection: Mutex::new(None),
            });
        }
        Ok(Sockets {
            servers,
            timeout,
            item_size_limit,
        })
    }

    /// Runs `request` on server `index`, on its kept connection if that is
    /// still in step, else on a new one.
    fn exchange(&self, index: usize, request: &Request<'_>, reply_bytes: u64) -> Result<Answer, Failure> {
        let server = &self.servers[index];
        let mut kept = server.connection.lock().unwrap_or_else(|poison| poison.into_inner());
        let mut connection = match kept.take() {
            Some(connection) if connection.is_reusable() => connection,
            _ => dial(&server.address, self.timeout).map_err(Failure::Connect)?,
        };
        let limits = ReadLimits {
            item_size: self.item_size_limit,
            reply_bytes,
        };
        let answer = connection.exchange(request, limits, Instant::now() + self.timeout)?;
        if !connection.input.holds_bytes() {
            *kept = Some(connection);
        }
        Ok(answer)
    }
}

impl Driver for Sockets {
    fn run<'a>(
        &'a self,
        requests: Vec<(usize, Request<'a>)>,
        reply_bytes: u64,
    ) -> impl Future<Output = Vec<Result<Answer, Failure>>> + Send + 'a {
        let answers = requests
            .iter()
            .map(|(server, request)| self.exchange(*server, request, reply_bytes))
            .collect();
        std::future::ready(answers)
    }
}

/// The output of a future of the pool run on [`Sockets`], whose every
/// await is complete when first polled.
pub fn complete<T>(future: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => Err(Error::Protocol(String::from(
            "a call of the provider waited on something other than its sockets",
        ))),
    }
}

/// A new connection to the first address of `address` that accepts one
/// within `timeout`.
fn dial(address: &str, timeout: Duration) -> io::Result<Connection> {
    let mut last = None;
    let addrs = address.to_socket_addrs().map_err(|error| {
        io::Error::new(
            error.kind(),
            format!(
                "resolving {address} failed ({error}): a name needs the runtime's leave to look names up \
                 (wasmtime -S allow-ip-name-lookup)"
            ),
        )
    })?;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                // wasi:sockets has no Nagle option to turn off; where there
                // is one, it is off.
                let _ = stream.set_nodelay(true);
                stream.set_nonblocking(true)?;
                return Ok(Connection {
                    stream,
                    input: Input::new(),
                    output: Vec::with_capacity(1024),
                    tokens: 0,
                });
            }
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no address to connect to")))
}

/// The time now, in unix seconds (long TTLs are sent as unix times).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl Connection {
    /// Whether a kept connection can carry a request: nothing may have
    /// arrived since its last exchange, neither bytes (a desynchronized
    /// stream) nor the end of the stream (the server closed it, as on a
    /// restart).
    fn is_reusable(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!((&self.stream).read(&mut probe), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes the request and reads its replies at once, by `deadline`.
    fn exchange(&mut self, request: &Request<'_>, limits: ReadLimits, deadline: Instant) -> Result<Answer, Failure> {
        self.output.clear();
        let expected = Expected::encode(request, self.tokens, unix_now(), limits, &mut self.output);
        self.tokens += expected.tokens();
        let mut exchange = Exchange::reading(expected, std::mem::take(&mut self.input));
        let mut written = 0;
        while !exchange.is_done() {
            if written < self.output.len() {
                match (&self.stream).write(&self.output[written..]) {
                    Ok(0) => return Err(Failure::Io(io::ErrorKind::WriteZero.into())),
                    Ok(sent) => written += sent,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Err(Failure::Io(error)),
                }
            }
            match (&self.stream).read(exchange.buffer()) {
                Ok(0) => return Err(Failure::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(read) => exchange.received(read)?,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    wait(&self.stream, written < self.output.len(), deadline)?;
                }
                Err(error) => return Err(Failure::Io(error)),
            }
        }
        let (answer, input) = exchange.finish();
        self.input = input;
        answer
    }
}

/// Waits until `stream` can be read (or written, while `writing`), or
/// fails with `TimedOut` at `deadline`.
fn wait(stream: &TcpStream, writing: bool, deadline: Instant) -> Result<(), Failure> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Failure::Io(io::ErrorKind::TimedOut.into()));
    }
    let mut events = libc::POLLIN;
    if writing {
        events |= libc::POLLOUT;
    }
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events,
        revents: 0,
    };
    // Whole milliseconds, rounded up: a wait never ends before its time.
    let millis = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: `fd` is one valid pollfd for the duration of the call, and
    // its descriptor stays open (the stream is borrowed).
    match unsafe { libc::poll(&mut fd, 1, millis) } {
        0 => Err(Failure::Io(io::ErrorKind::TimedOut.into())),
        ready if ready > 0 => Ok(()),
        _ => {
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::Interrupted => Ok(()),
                _ => Err(Failure::Io(error)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_are_checked_before_any_call() {
        let list = |ids: &[&str]| {
            let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
            Sockets::new(&ids, Duration::from_secs(1), 1024).map(|_| ())
        };
        assert!(list(&["127.0.0.1:11211", "[::1]:11211", "cache.internal:11211"]).is_ok());
        for bad in [
            &["127.0.0.1"][..],
            &[""],
            &[":11211"],
            &["127.0.0.1:port"],
            &["a b:1"],
            &["a:1", "a:1"],
        ] {
            assert!(list(bad).is_err(), "{bad:?}");
        }
    }
}
