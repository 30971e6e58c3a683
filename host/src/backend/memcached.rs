//! The capability on real memcached servers, in the meta protocol: our
//! own pool and transport around the `memcache` crate's commands, because
//! its clients cost more system calls and allocations per exchange than the
//! whole rest of a call (docs/architecture.md, "The memcached transport").

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use memcache::exp::{MetaCommand, MetaOp, ReturnCode};

use super::routing;
use super::{BatchResult, Storage};
use crate::bindings::capability::{Command, Error, Item, Outcome, Replies};

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

/// The read buffer of a connection. A reply line longer than this is not
/// from memcached; values are read past it, straight into the batch.
const INPUT_BUFFER: usize = 16 * 1024;

/// One connection to a server.
struct Connection {
    stream: TcpStream,
    /// Bytes received and not parsed yet are `input[start..end]`; none
    /// are left between exchanges.
    input: Box<[u8]>,
    start: usize,
    end: usize,
    /// The request being written, kept to reuse its capacity.
    output: Vec<u8>,
    /// The send timeout the socket holds: the configured timeout, unless
    /// the last exchange needed several writes.
    write_timeout: Duration,
    /// Opaque tokens handed out so far on this connection.
    tokens: u64,
}

impl Connection {
    fn new(stream: TcpStream, timeout: Duration) -> io::Result<Connection> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Connection {
            stream,
            input: vec![0; INPUT_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            output: Vec::with_capacity(1024),
            write_timeout: timeout,
            tokens: 0,
        })
    }

    /// Whether an idle connection can carry a request: nothing may have
    /// arrived since its last exchange, neither bytes (a desynchronized
    /// stream) nor the end of the stream (the server closed it, as on a
    /// restart). One non-blocking peek, no round trip.
    fn is_reusable(&self) -> bool {
        use rustix::io::Errno;
        use rustix::net::{RecvFlags, recv};
        let mut probe = [0u8; 1];
        self.start == self.end
            && matches!(
                recv(&self.stream, &mut probe, RecvFlags::PEEK | RecvFlags::DONTWAIT),
                Err(Errno::AGAIN)
            )
    }

    /// Writes the request in `output` by `deadline`. The socket's send
    /// timeout is the whole timeout, which bounds a first write; a further
    /// write (a request larger than the socket buffer) is bounded by what
    /// is left.
    fn send(&mut self, deadline: Instant, timeout: Duration) -> io::Result<()> {
        if self.write_timeout != timeout {
            self.stream.set_write_timeout(Some(timeout))?;
            self.write_timeout = timeout;
        }
        let mut sent = 0;
        while sent < self.output.len() {
            if sent > 0 {
                self.write_timeout = remaining(deadline)?;
                self.stream.set_write_timeout(Some(self.write_timeout))?;
            }
            match (&self.stream).write(&self.output[sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => sent += written,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(timed_out(error)),
            }
        }
        Ok(())
    }

    /// Reads into `buffer` once, by `deadline`; end of stream is an error.
    fn read_into(stream: &TcpStream, buffer: &mut [u8], deadline: Instant) -> io::Result<usize> {
        loop {
            stream.set_read_timeout(Some(remaining(deadline)?))?;
            match (&*stream).read(buffer) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(read) => return Ok(read),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(timed_out(error)),
            }
        }
    }

    /// Reads more of the stream into the input buffer, making room first.
    fn fill(&mut self, deadline: Instant) -> io::Result<()> {
        if self.start > 0 {
            self.input.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.end += Self::read_into(&self.stream, &mut self.input[self.end..], deadline)?;
        Ok(())
    }

    /// The next reply line, without its line end, as a range of `input`.
    fn line(&mut self, deadline: Instant) -> Result<Range<usize>, Failure> {
        // Bytes of `input[start..end]` known to hold no line end.
        let mut searched = 0;
        loop {
            let pending = &self.input[self.start + searched..self.end];
            if let Some(at) = pending.iter().position(|&byte| byte == b'\n') {
                let newline = self.start + searched + at;
                let mut stop = newline;
                if stop > self.start && self.input[stop - 1] == b'\r' {
                    stop -= 1;
                }
                let line = self.start..stop;
                self.start = newline + 1;
                return Ok(line);
            }
            searched = self.end - self.start;
            if searched == self.input.len() {
                return Err(Failure::Garbled("a reply line longer than 16 KiB"));
            }
            self.fill(deadline).map_err(Failure::Io)?;
        }
    }

    /// Appends the `len` bytes of a value and takes its line end: what is
    /// buffered comes from the input buffer, the rest straight from the
    /// socket into `values`.
    fn value_into(&mut self, len: usize, values: &mut Vec<u8>, deadline: Instant) -> Result<(), Failure> {
        let buffered = len.min(self.end - self.start);
        if values.capacity() == 0 {
            // The rest of this read holds this value and any after it: one
            // allocation for the batch, not one per value.
            values.reserve(self.end - self.start);
        }
        values.extend_from_slice(&self.input[self.start..self.start + buffered]);
        self.start += buffered;
        if buffered < len {
            let mut filled = values.len();
            values.resize(filled + len - buffered, 0);
            while filled < values.len() {
                filled += Self::read_into(&self.stream, &mut values[filled..], deadline).map_err(Failure::Io)?;
            }
        }
        while self.end - self.start < 2 {
            self.fill(deadline).map_err(Failure::Io)?;
        }
        if &self.input[self.start..self.start + 2] != b"\r\n" {
            return Err(Failure::Garbled("a value not followed by CRLF"));
        }
        self.start += 2;
        Ok(())
    }
}

/// The time left until `deadline`; none left is a timeout (a zero socket
/// timeout would mean none at all).
fn remaining(deadline: Instant) -> io::Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left),
        _ => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// A socket timeout surfaces as `WouldBlock`: report it as the timeout it
/// is.
fn timed_out(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::WouldBlock {
        return io::ErrorKind::TimedOut.into();
    }
    error
}

/// One server of the pool and its idle connections.
struct Server {
    address: String,
    addrs: Vec<SocketAddr>,
    idle: Mutex<Vec<Connection>>,
}

/// A pool of memcached servers; a route always goes to the same server.
pub(crate) struct MemcachedPool {
    servers: Vec<Server>,
    ids: Vec<String>,
    options: MemcachedOptions,
}

/// Why an exchange failed, for the capability's error.
enum Failure {
    /// No connection could be made: nothing was sent.
    Connect(io::Error),
    /// Writing or reading failed after a connection was up.
    Io(io::Error),
    /// memcached answered `SERVER_ERROR` with this message.
    Server(String),
    /// memcached refused a command: its `CLIENT_ERROR` or `ERROR` line.
    Rejected(String),
    /// The reply stream is not memcached's meta protocol.
    Garbled(&'static str),
    /// A reply did not echo its command's opaque token.
    Mismatch,
    /// A command could not be made: nothing was sent.
    Refused(Error),
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
        Ok(MemcachedPool { servers, ids, options })
    }

    /// An idle connection to `server` that passes the probe, or a new one.
    fn checkout(&self, server: &Server) -> io::Result<Connection> {
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
                Ok(stream) => return Connection::new(stream, self.options.timeout),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no address to connect to")))
    }

    /// Sends a batch to `server` in one payload and reads one reply per
    /// command, each checked against its command's opaque token.
    /// - `encode` writes the commands into the request, stamped with the
    ///   tokens from the one it is given on, in order, and says how many
    ///   it wrote;
    /// - `fits` says whether a reply code answers the command at an index;
    ///   a reply that does not is that command's failure.
    fn exchange(
        &self,
        server: &Server,
        encode: impl FnOnce(u64, &mut Vec<u8>) -> Result<usize, Error>,
        fits: impl Fn(usize, ReturnCode) -> bool,
    ) -> Result<Replies, Failure> {
        let mut connection = self.checkout(server).map_err(Failure::Connect)?;
        let first = connection.tokens;
        connection.output.clear();
        let count = match encode(first, &mut connection.output) {
            Ok(count) => count,
            Err(error) => {
                self.put_back(server, connection);
                return Err(Failure::Refused(error));
            }
        };
        connection.tokens += count as u64;
        let deadline = Instant::now() + self.options.timeout;
        connection.send(deadline, self.options.timeout).map_err(Failure::Io)?;
        let mut replies = Replies {
            outcomes: Vec::with_capacity(count),
            values: Vec::new(),
        };
        for (index, token) in (first..).take(count).enumerate() {
            let line = connection.line(deadline)?;
            let (code, len) = header(&connection.input[line], opaque(token).as_slice())?;
            let outcome = if let Some(len) = len {
                if len as u64 > self.options.item_size_limit {
                    return Err(Failure::Garbled("a value longer than the item size limit"));
                }
                let at = replies.values.len();
                connection.value_into(len, &mut replies.values, deadline)?;
                if fits(index, code) {
                    Outcome::Value(len as u32)
                } else {
                    replies.values.truncate(at);
                    unexpected(code)
                }
            } else if fits(index, code) {
                match code {
                    ReturnCode::En | ReturnCode::Nf => Outcome::Miss,
                    ReturnCode::Ns | ReturnCode::Ex => Outcome::Exists,
                    _ => Outcome::Done,
                }
            } else {
                unexpected(code)
            };
            replies.outcomes.push(outcome);
        }
        // Bytes beyond the replies asked for: the stream is out of step,
        // so the connection goes (the replies read are answers: they
        // echoed their tokens).
        if connection.start == connection.end {
            self.put_back(server, connection);
        }
        Ok(replies)
    }

    /// Returns a connection that is in step with its server to the pool.
    fn put_back(&self, server: &Server, mut connection: Connection) {
        connection.start = 0;
        connection.end = 0;
        let mut idle = server.idle.lock().unwrap_or_else(|poison| poison.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(connection);
        }
    }

    fn run(&self, server: &Server, commands: Vec<Command>) -> BatchResult {
        let kinds: Vec<MetaOp> = commands.iter().map(op_of).collect();
        let writes = kinds.iter().any(|&kind| kind != MetaOp::Get);
        let encode = |first, output: &mut Vec<u8>| {
            for (command, token) in commands.into_iter().zip(first..) {
                match command {
                    Command::Get(key) => encode_get(key.as_bytes(), token, output),
                    command => encode_meta(meta_command(command, token)?, output)?,
                }
            }
            Ok(kinds.len())
        };
        self.exchange(server, encode, |index, code| fits(kinds[index], code))
            .map_err(|failure| self.error(server, failure, writes))
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
            Failure::Io(error) if error.kind() == io::ErrorKind::TimedOut => Error::Unavailable(format!(
                "memcached at {address} did not answer within {:?}{unknown}",
                self.options.timeout
            )),
            Failure::Io(error) => {
                Error::Unavailable(format!("memcached at {address} failed mid-request: {error}{unknown}"))
            }
            Failure::Server(message) if message.contains("too large") => {
                Error::ValueTooLarge(self.options.item_size_limit)
            }
            Failure::Server(message) => Error::Protocol(format!(
                "memcached at {address} failed the request: SERVER_ERROR {message}{unknown}"
            )),
            Failure::Rejected(message) => Error::Protocol(format!(
                "memcached at {address} refused the request: {message}{unknown}"
            )),
            Failure::Garbled(what) => Error::Protocol(format!(
                "memcached at {address} sent {what}; connection dropped{unknown}"
            )),
            Failure::Refused(error) => error,
            Failure::Mismatch => Error::Protocol(format!(
                "memcached at {address} sent a reply that does not match the request; connection dropped{unknown}"
            )),
        }
    }
}

/// Reads a reply line: its code and, for `VA`, the data length. The line
/// must carry exactly one opaque token, `opaque`. Error lines fail the
/// batch.
fn header(line: &[u8], opaque: &[u8]) -> Result<(ReturnCode, Option<usize>), Failure> {
    // What memcached sends for our commands, `XX[ LENGTH] OPAQUE`, read
    // without splitting the line; anything else goes the general way.
    let usual = line
        .strip_suffix(opaque)
        .and_then(|rest| rest.strip_suffix(b" "))
        .and_then(|rest| match rest {
            [b'V', b'A', b' ', digits @ ..] => Some((ReturnCode::Va, Some(length(digits)?))),
            [_, _] => Some((ReturnCode::from_wire(rest).ok()?, None)),
            _ => None,
        });
    match usual {
        Some((ReturnCode::Va, None)) | None => any_header(line, opaque),
        Some(usual) => Ok(usual),
    }
}

/// [`header`] for any reply line: tokens separated by spaces, flags in any
/// order.
fn any_header(line: &[u8], opaque: &[u8]) -> Result<(ReturnCode, Option<usize>), Failure> {
    let mut tokens = Tokens(line);
    let first = tokens.next().ok_or(Failure::Garbled("an empty reply line"))?;
    let rest = || String::from_utf8_lossy(tokens.0).trim().to_owned();
    let code = match first {
        b"SERVER_ERROR" => return Err(Failure::Server(rest())),
        b"CLIENT_ERROR" | b"ERROR" => return Err(Failure::Rejected(String::from_utf8_lossy(line).trim().to_owned())),
        code => ReturnCode::from_wire(code).map_err(|_| Failure::Garbled("an unknown reply code"))?,
    };
    let len = match code {
        ReturnCode::Va => Some(
            tokens
                .next()
                .and_then(length)
                .ok_or(Failure::Garbled("a VA reply without a length"))?,
        ),
        _ => None,
    };
    let mut opaques = tokens.filter(|flag| flag.first() == Some(&b'O'));
    if opaques.next() != Some(opaque) || opaques.next().is_some() {
        return Err(Failure::Mismatch);
    }
    Ok((code, len))
}

/// The space-separated tokens of a reply line.
struct Tokens<'a>(&'a [u8]);

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let line = self.0;
        let mut start = 0;
        while start < line.len() && line[start] == b' ' {
            start += 1;
        }
        let mut end = start;
        while end < line.len() && line[end] != b' ' {
            end += 1;
        }
        self.0 = &line[end..];
        (end > start).then(|| &line[start..end])
    }
}

/// A data length: decimal digits, at most ten (memcached's items are at
/// most 1 GiB).
fn length(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0, |length, &digit| length * 10 + usize::from(digit - b'0')),
    )
}

/// The outcome for a reply code that does not answer its command.
fn unexpected(code: ReturnCode) -> Outcome {
    Outcome::Failed(Error::Protocol(format!("unexpected reply {code:?} to the command")))
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

fn op_of(command: &Command) -> MetaOp {
    match command {
        Command::Get(_) => MetaOp::Get,
        Command::Set(_) | Command::Add(_) => MetaOp::Set,
        Command::Delete(_) => MetaOp::Delete,
    }
}

/// Appends `command` as `MetaCommand` encodes it; a key it cannot encode
/// (empty, or too long even in base64) is refused.
fn encode_meta(command: MetaCommand, output: &mut Vec<u8>) -> Result<(), Error> {
    command
        .encode_into(output)
        .map_err(|error| Error::InvalidKey(error.to_string()))
}

/// Appends `mg <key> v <opaque>`: what `MetaCommand` writes for it (a
/// unit test compares the two), without its allocations and its second
/// pass over the key (a read is three gets, so this is the host's hottest
/// path). The grant has checked the key: printable ASCII, short enough.
fn encode_get(key: &[u8], token: u64, output: &mut Vec<u8>) {
    output.extend_from_slice(b"mg ");
    output.extend_from_slice(key);
    output.extend_from_slice(b" v ");
    output.extend_from_slice(opaque(token).as_slice());
    output.extend_from_slice(b"\r\n");
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

/// Whether a reply code answers a command of `kind`.
fn fits(kind: MetaOp, code: ReturnCode) -> bool {
    matches!(
        (kind, code),
        (MetaOp::Get, ReturnCode::Va | ReturnCode::En)
            | (MetaOp::Set | MetaOp::Delete, ReturnCode::Hd)
            | (MetaOp::Set, ReturnCode::Ns)
            | (MetaOp::Delete, ReturnCode::Nf)
    )
}

impl Storage for MemcachedPool {
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
            for outcome in result?.outcomes {
                if let Outcome::Failed(error) = outcome {
                    return Err(error);
                }
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

    #[cfg(feature = "bench")]
    fn memcached(&self) -> Option<&MemcachedPool> {
        Some(self)
    }
}

#[cfg(feature = "bench")]
impl MemcachedPool {
    /// Runs meta commands as they are on the first server, over the
    /// connections the capability uses (see [`crate::bench_seam`]).
    pub(crate) fn raw(&self, commands: Vec<MetaCommand>) -> BatchResult {
        let server = &self.servers[0];
        let encode = |first, output: &mut Vec<u8>| {
            let count = commands.len();
            for (command, token) in commands.into_iter().zip(first..) {
                encode_meta(command.flag(opaque(token).as_slice()), output)?;
            }
            Ok(count)
        };
        self.exchange(server, encode, |_, _| true)
            .map_err(|failure| self.error(server, failure, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memcache::exp::MAX_KEY_LENGTH;

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

    /// A one-connection server on loopback that reads a request, then
    /// writes `reply` a few bytes at a time.
    fn dribbling_server(reply: Vec<u8>) -> anyhow::Result<(String, std::thread::JoinHandle<()>)> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?.to_string();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_nodelay(true).unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).unwrap();
            for (index, chunk) in reply.chunks(7).enumerate() {
                if stream.write_all(chunk).is_err() {
                    return;
                }
                if index % 300 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            // Hold the connection until the client is done with it.
            let _ = stream.read(&mut request);
        });
        Ok((address, server))
    }

    /// Runs `test` on a pool of one [`dribbling_server`] answering
    /// `reply`, then waits for the server to finish.
    fn with_server<R>(
        reply: &[u8],
        options: MemcachedOptions,
        test: impl FnOnce(&MemcachedPool) -> R,
    ) -> anyhow::Result<R> {
        let (address, server) = dribbling_server(reply.to_vec())?;
        let pool = MemcachedPool::new(&[address], options)?;
        let result = test(&pool);
        drop(pool);
        server.join().map_err(|_| anyhow::anyhow!("the test server panicked"))?;
        Ok(result)
    }

    fn gets(keys: &[&str]) -> Vec<Command> {
        keys.iter().map(|key| Command::Get((*key).into())).collect()
    }

    #[test]
    fn replies_split_anywhere_are_read_whole() -> anyhow::Result<()> {
        let big: Vec<u8> = (0..20_000u32).map(|n| (n % 251) as u8).collect();
        let mut reply = b"VA 3 O0\r\nabc\r\nEN O1\r\nVA 20000 O2\r\n".to_vec();
        reply.extend_from_slice(&big);
        reply.extend_from_slice(b"\r\nVA 0 O3\r\n\r\n");
        let replies = with_server(&reply, MemcachedOptions::default(), |pool| {
            pool.execute(b"", gets(&["a", "b", "c", "d"]))
        })?
        .unwrap();
        assert_eq!(
            replies.outcomes,
            [
                Outcome::Value(3),
                Outcome::Miss,
                Outcome::Value(20_000),
                Outcome::Value(0)
            ]
        );
        assert_eq!(&replies.values[..3], b"abc");
        assert!(replies.values[3..] == big[..]);
        Ok(())
    }

    #[test]
    fn a_reply_that_stops_mid_value_times_out_within_the_deadline() -> anyhow::Result<()> {
        // The server holds the connection open after half a value.
        let timeout = Duration::from_millis(150);
        let options = MemcachedOptions {
            timeout,
            ..MemcachedOptions::default()
        };
        let (error, waited, pooled) = with_server(b"VA 10 O0\r\nabcde", options, |pool| {
            let started = Instant::now();
            let error = pool.execute(b"", gets(&["a"])).unwrap_err();
            (error, started.elapsed(), pool.servers[0].idle.lock().unwrap().len())
        })?;
        assert!(
            matches!(&error, Error::Unavailable(text) if text.contains("did not answer")),
            "{error:?}"
        );
        assert!(waited < timeout * 4, "{waited:?}");
        // The half-read connection is not reused: the pool is empty.
        assert_eq!(pooled, 0);
        Ok(())
    }

    #[test]
    fn a_value_beyond_the_item_size_limit_is_refused_unread() -> anyhow::Result<()> {
        let error = with_server(b"VA 2000000 O0\r\n", MemcachedOptions::default(), |pool| {
            pool.execute(b"", gets(&["a"]))
        })?
        .unwrap_err();
        assert!(
            matches!(&error, Error::Protocol(text) if text.contains("item size limit")),
            "{error:?}"
        );
        Ok(())
    }

    #[test]
    fn reply_lines_give_code_length_and_echo() {
        let read = |line: &[u8]| {
            header(line, b"O1f").map_err(|failure| match failure {
                Failure::Server(message) => format!("server {message}"),
                Failure::Rejected(message) => format!("rejected {message}"),
                Failure::Garbled(what) => format!("garbled {what}"),
                Failure::Mismatch => String::from("mismatch"),
                _ => String::from("other"),
            })
        };
        assert_eq!(read(b"VA 16 O1f"), Ok((ReturnCode::Va, Some(16))));
        assert_eq!(read(b"VA  1048576 c7 O1f"), Ok((ReturnCode::Va, Some(1_048_576))));
        assert_eq!(read(b"VA 9999999999 O1f"), Ok((ReturnCode::Va, Some(9_999_999_999))));
        assert_eq!(read(b"EN O1f"), Ok((ReturnCode::En, None)));
        assert_eq!(read(b"HD O1f"), Ok((ReturnCode::Hd, None)));
        assert_eq!(read(b"NS O1f"), Ok((ReturnCode::Ns, None)));
        assert_eq!(read(b"NF O1f"), Ok((ReturnCode::Nf, None)));
        assert_eq!(read(b"HD c7 O1f"), Ok((ReturnCode::Hd, None)));
        assert_eq!(read(b"HD O1f c7"), Ok((ReturnCode::Hd, None)));
        assert_eq!(
            read(b"SERVER_ERROR object too large for cache"),
            Err("server object too large for cache".into())
        );
        assert_eq!(
            read(b"CLIENT_ERROR bad data chunk"),
            Err("rejected CLIENT_ERROR bad data chunk".into())
        );
        assert_eq!(read(b"ERROR"), Err("rejected ERROR".into()));
        for garbled in [
            &b""[..],
            b"  ",
            b"XX O1f",
            b"VA O1f",
            b"VA -1 O1f",
            b"VA 1x O1f",
            b"VA 99999999999 O1f",
        ] {
            assert!(
                read(garbled).is_err_and(|error| error.starts_with("garbled")),
                "{:?}",
                String::from_utf8_lossy(garbled)
            );
        }
        for mismatched in [&b"EN"[..], b"EN O1", b"EN O1f0", b"EN O1f O1f", b"VA 2 O2"] {
            assert_eq!(
                read(mismatched),
                Err("mismatch".into()),
                "{:?}",
                String::from_utf8_lossy(mismatched)
            );
        }
    }

    #[test]
    fn reply_codes_fit_their_commands() {
        assert!(fits(MetaOp::Get, ReturnCode::Va));
        assert!(fits(MetaOp::Get, ReturnCode::En));
        assert!(fits(MetaOp::Set, ReturnCode::Hd));
        assert!(fits(MetaOp::Set, ReturnCode::Ns));
        assert!(fits(MetaOp::Delete, ReturnCode::Hd));
        assert!(fits(MetaOp::Delete, ReturnCode::Nf));
        assert!(!fits(MetaOp::Get, ReturnCode::Hd));
        assert!(!fits(MetaOp::Delete, ReturnCode::En));
        assert!(!fits(MetaOp::Set, ReturnCode::Va));
    }

    #[test]
    fn gets_are_encoded_as_memcache_encodes_them() {
        let long = "k".repeat(MAX_KEY_LENGTH);
        for key in ["k", "tc:shop:d:Lisboa:/info", "~!%#:", long.as_str()] {
            for token in [0, 9, 0x1f, 0xabcdef, u64::MAX] {
                let mut ours = Vec::new();
                encode_get(key.as_bytes(), token, &mut ours);
                let theirs = meta_command(Command::Get(key.into()), token).unwrap().encode().unwrap();
                assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(theirs).unwrap());
            }
        }
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
