//! The blocking driver: the protocol core over `std::net`, for hosts that
//! call the component from ordinary threads.
//!
//! Sockets are non-blocking and an exchange waits in `poll(2)` under one
//! deadline, writing and reading at once: memcached stops reading a
//! connection whose replies are not being read, so a large batch written
//! before reading would stall.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};

use tenant_cache_memcached::protocol::{Answer, Exchange, Expected, Failure, Input, ReadLimits, Request};

/// Idle connections kept per server; more are closed when returned.
const MAX_IDLE: usize = 64;

/// One connection to a server.
pub(crate) struct Connection {
    stream: TcpStream,
    /// The read buffer; empty between exchanges.
    input: Input,
    /// The request being written, kept to reuse its capacity.
    pub(super) output: Vec<u8>,
    /// Opaque tokens handed out so far on this connection.
    pub(super) tokens: u64,
}

/// A server's idle connections.
#[derive(Default)]
pub(crate) struct Idle(Mutex<Vec<Connection>>);

impl Idle {
    /// An idle connection that passes the probe, or a new one to `addrs`.
    pub(crate) fn checkout(&self, addrs: &[SocketAddr], timeout: Duration) -> io::Result<Connection> {
        loop {
            let Some(connection) = self.0.lock().unwrap_or_else(|poison| poison.into_inner()).pop() else {
                break;
            };
            if connection.is_reusable() {
                return Ok(connection);
            }
        }
        dial(addrs, timeout)
    }

    /// Keeps a connection that is in step with its server for reuse.
    pub(crate) fn put_back(&self, connection: Connection) {
        let mut idle = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(connection);
        }
    }

    /// How many connections are idle.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner()).len()
    }
}

/// A new connection to the first of `addrs` that accepts one within
/// `timeout`.
pub(super) fn dial(addrs: &[SocketAddr], timeout: Duration) -> io::Result<Connection> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => return Connection::new(stream),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no address to connect to")))
}

impl Connection {
    fn new(stream: TcpStream) -> io::Result<Connection> {
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(Connection {
            stream,
            input: Input::new(),
            output: Vec::with_capacity(1024),
            tokens: 0,
        })
    }

    /// Whether an idle connection can carry a request: nothing may have
    /// arrived since its last exchange, neither bytes (a desynchronized
    /// stream) nor the end of the stream (the server closed it, as on a
    /// restart). One non-blocking peek, no round trip.
    pub(super) fn is_reusable(&self) -> bool {
        nothing_arrived(&self.stream)
    }

    /// Whether bytes beyond the replies read so far arrived.
    pub(super) fn holds_bytes(&self) -> bool {
        self.input.holds_bytes()
    }

    /// Runs one batch: writes the request and reads its replies at once,
    /// by `deadline`. The second part of the answer says whether the
    /// connection is still in step (and may be reused).
    pub(crate) fn exchange(
        &mut self,
        request: &Request<'_>,
        now: u64,
        limits: ReadLimits,
        deadline: Instant,
    ) -> Result<(Answer, bool), Failure> {
        self.output.clear();
        let expected = Expected::encode(request, self.tokens, now, limits, &mut self.output);
        self.tokens += expected.tokens();
        let (mut answers, failure) = self.round(vec![expected], deadline);
        if let Some(failure) = failure {
            return Err(failure);
        }
        let answer = answers
            .pop()
            .unwrap_or(Err(Failure::Garbled("no answer to the batch")))?;
        Ok((answer, !self.input.holds_bytes()))
    }

    /// Writes the output, which holds `batches` in order, and reads their
    /// replies at once, by `deadline`: each batch's answer, in order, up to
    /// the failure that ended the round, if one did (the connection is
    /// then out of step). With no failure, the connection is in step if
    /// its input holds nothing more.
    pub(super) fn round(
        &mut self,
        batches: Vec<Expected>,
        deadline: Instant,
    ) -> (Vec<Result<Answer, Failure>>, Option<Failure>) {
        let mut answers = Vec::with_capacity(batches.len());
        let mut batches = batches.into_iter();
        let Some(first) = batches.next() else {
            return (answers, None);
        };
        let mut exchange = Exchange::reading(first, std::mem::take(&mut self.input));
        let mut written = 0;
        loop {
            while exchange.is_done() {
                let (answer, input) = exchange.finish();
                answers.push(answer);
                let Some(next) = batches.next() else {
                    self.input = input;
                    return (answers, None);
                };
                exchange = Exchange::reading(next, input);
                // What arrived with the earlier batch's replies.
                if let Err(failure) = exchange.received(0) {
                    return (answers, Some(failure));
                }
            }
            if let Err(failure) = self.step(&mut exchange, &mut written, deadline) {
                return (answers, Some(failure));
            }
        }
    }

    /// Writes what is left of the output, or waits, then reads what
    /// arrived into `exchange`.
    fn step(&mut self, exchange: &mut Exchange, written: &mut usize, deadline: Instant) -> Result<(), Failure> {
        let output = &self.output;
        if *written < output.len() {
            match (&self.stream).write(&output[*written..]) {
                Ok(0) => return Err(Failure::Io(io::ErrorKind::WriteZero.into())),
                Ok(sent) => *written += sent,
                Err(error) if retry(&error) => {}
                Err(error) => return Err(Failure::Io(error)),
            }
        }
        let writing = *written < output.len();
        if !writing {
            // The request is out: wait for replies (the usual case goes
            // probe, write, poll, read: four system calls).
            wait(&self.stream, false, deadline)?;
        }
        match (&self.stream).read(exchange.buffer()) {
            Ok(0) => Err(Failure::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(read) => exchange.received(read),
            Err(error) if retry(&error) => {
                if writing {
                    wait(&self.stream, true, deadline)?;
                }
                Ok(())
            }
            Err(error) => Err(Failure::Io(error)),
        }
    }
}

/// Whether nothing, neither bytes nor the end of the stream, has arrived
/// on an idle socket: one non-blocking peek, no round trip.
pub(crate) fn nothing_arrived(socket: impl std::os::fd::AsFd) -> bool {
    use rustix::io::Errno;
    use rustix::net::{RecvFlags, recv};
    let mut probe = [0u8; 1];
    matches!(
        recv(socket, &mut probe, RecvFlags::PEEK | RecvFlags::DONTWAIT),
        Err(Errno::AGAIN)
    )
}

/// Whether an I/O error only means "not now".
fn retry(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

/// Waits until `stream` can be read (or, when `writing`, written), or
/// `deadline` passes.
fn wait(stream: &TcpStream, writing: bool, deadline: Instant) -> Result<(), Failure> {
    let flags = match writing {
        true => PollFlags::IN | PollFlags::OUT,
        false => PollFlags::IN,
    };
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or(Failure::Io(io::ErrorKind::TimedOut.into()))?;
        let timeout = Timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(stream, flags)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(Failure::Io(error.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenant_cache_memcached::protocol::Group;
    use tenant_cache_memcached::types::Command;

    /// A one-connection server on loopback that reads a request, writes
    /// `reply` and then holds the connection open.
    fn stalling_server(reply: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(reply);
            let _ = stream.read(&mut request);
        });
        (address, server)
    }

    #[test]
    fn a_reply_that_stops_mid_value_times_out_within_the_deadline() {
        let (address, server) = stalling_server(b"VA 10 O0\r\nabcde");
        let idle = Idle::default();
        let timeout = Duration::from_millis(150);
        let mut connection = idle.checkout(&[address], timeout).unwrap();
        let commands = [Command::Get("a".into())];
        let request = Request {
            groups: vec![Group {
                prefix: Vec::new(),
                commands: &commands,
            }],
            ..Request::default()
        };
        let limits = ReadLimits {
            item_size: 1 << 20,
            reply_bytes: 1 << 20,
        };
        let started = Instant::now();
        let failure = connection
            .exchange(&request, 0, limits, started + timeout)
            .map(drop)
            .unwrap_err();
        assert!(
            matches!(&failure, Failure::Io(error) if error.kind() == io::ErrorKind::TimedOut),
            "{failure:?}"
        );
        assert!(started.elapsed() < timeout * 4, "{:?}", started.elapsed());
        // The caller drops a failed connection: nothing went back.
        drop(connection);
        assert_eq!(idle.len(), 0);
        server.join().unwrap();
    }
}
