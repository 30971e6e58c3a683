//! The tokio driver: the protocol core over `tokio::net`, for hosts that
//! call the component from async code. No executor thread ever blocks on a
//! socket; each exchange is bounded by one deadline (tokio's timer).
//!
//! A connection is owned by the exchange using it and goes back to the
//! pool only once every reply was read: a future dropped mid-exchange drops
//! its connection with it, so no later request can read its replies.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use tenant_cache_memcached::protocol::{Answer, Exchange, Failure, Input, ReadLimits, Request};

/// Idle connections kept per server, of every runtime together; past
/// that, the one idle longest is closed.
const MAX_IDLE: usize = 64;

/// One connection to a server.
pub(crate) struct Connection {
    pub(super) stream: TcpStream,
    /// The read buffer; empty between exchanges.
    pub(super) input: Input,
    /// The request being written, kept to reuse its capacity.
    pub(super) output: Vec<u8>,
    /// Opaque tokens handed out so far on this connection.
    pub(super) tokens: u64,
}

/// A server's idle connections, each with the tokio runtime whose reactor
/// it is registered with: a connection only works on that runtime, and a
/// backend may serve several. Oldest first: connections of a runtime that
/// was dropped are never taken again, and go first when room is needed.
#[derive(Default)]
pub(crate) struct Idle(Mutex<VecDeque<(tokio::runtime::Id, Connection)>>);

/// The runtime this task runs on; an error outside of one.
pub(super) fn current_runtime() -> io::Result<tokio::runtime::Id> {
    tokio::runtime::Handle::try_current()
        .map(|handle| handle.id())
        .map_err(|_| io::Error::other("the async API runs on a tokio runtime, and this call is outside of one"))
}

impl Idle {
    /// An idle connection of this runtime that passes the probe, or a new
    /// one to `addrs`.
    pub(crate) async fn checkout(&self, addrs: &[SocketAddr], timeout: Duration) -> io::Result<Connection> {
        let runtime = current_runtime()?;
        loop {
            let connection = {
                let mut idle = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
                match idle.iter().rposition(|(owner, _)| *owner == runtime) {
                    Some(at) => idle.remove(at).map(|(_, connection)| connection),
                    None => break,
                }
            };
            if let Some(connection) = connection
                && connection.is_reusable()
            {
                return Ok(connection);
            }
        }
        dial(addrs, timeout).await
    }

    /// Keeps a connection that is in step with its server for reuse,
    /// closing the one idle longest if the server has too many.
    pub(crate) fn put_back(&self, connection: Connection) {
        let Ok(runtime) = current_runtime() else { return };
        let evicted = {
            let mut idle = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
            idle.push_back((runtime, connection));
            (idle.len() > MAX_IDLE).then(|| idle.pop_front())
        };
        // Closed outside the lock.
        drop(evicted);
    }

    /// How many connections are idle.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner()).len()
    }
}

/// A new connection to the first of `addrs` that accepts one within
/// `timeout`.
pub(super) async fn dial(addrs: &[SocketAddr], timeout: Duration) -> io::Result<Connection> {
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Connection::new(stream),
            Ok(Err(error)) => last = Some(error),
            Err(_) => last = Some(io::ErrorKind::TimedOut.into()),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no address to connect to")))
}

impl Connection {
    fn new(stream: TcpStream) -> io::Result<Connection> {
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            input: Input::new(),
            output: Vec::with_capacity(1024),
            tokens: 0,
        })
    }

    /// Whether an idle connection can carry a request: nothing may have
    /// arrived since its last exchange (see the blocking driver). A peek
    /// on the socket itself: tokio's readiness may not have seen it yet.
    pub(super) fn is_reusable(&self) -> bool {
        super::blocking::nothing_arrived(&self.stream)
    }

    /// Runs one batch: writes the request and reads its replies at once,
    /// by `deadline`. The second part of the answer says whether the
    /// connection is still in step (and may be reused).
    pub(crate) async fn exchange(
        &mut self,
        request: &Request<'_>,
        now: u64,
        limits: ReadLimits,
        deadline: Instant,
    ) -> Result<(Answer, bool), Failure> {
        let input = std::mem::take(&mut self.input);
        let mut exchange = Exchange::new(request, self.tokens, now, limits, &mut self.output, input);
        self.tokens += exchange.tokens();
        let (stream, output) = (&self.stream, &self.output);
        let mut written = 0;
        let work = async {
            while !exchange.is_done() {
                let interest = match written < output.len() {
                    true => Interest::READABLE | Interest::WRITABLE,
                    false => Interest::READABLE,
                };
                let ready = stream.ready(interest).await.map_err(Failure::Io)?;
                if ready.is_writable() && written < output.len() {
                    match stream.try_write(&output[written..]) {
                        Ok(0) => return Err(Failure::Io(io::ErrorKind::WriteZero.into())),
                        Ok(sent) => written += sent,
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                        Err(error) => return Err(Failure::Io(error)),
                    }
                }
                if ready.is_readable() {
                    match stream.try_read(exchange.buffer()) {
                        Ok(0) => return Err(Failure::Io(io::ErrorKind::UnexpectedEof.into())),
                        Ok(read) => exchange.received(read)?,
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                        Err(error) => return Err(Failure::Io(error)),
                    }
                }
            }
            Ok(())
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(result) => result?,
            Err(_) => return Err(Failure::Io(io::ErrorKind::TimedOut.into())),
        }
        let (answer, input) = exchange.finish();
        self.input = input;
        Ok((answer?, !self.input.holds_bytes()))
    }
}
