//! memcached's meta protocol without I/O: a batch encoded into bytes, and
//! its replies read from bytes as they arrive, with every check an
//! exchange makes. The blocking and the tokio drivers only move bytes.

use memcache::exp::ReturnCode;

use crate::bindings::capability::{Command, Error, Item, Limit, Outcome, Replies};

/// The host's record of the pool's membership, on every server.
pub(crate) const POOL_KEY: &[u8] = b"tc:pool";

/// memcached reads a TTL above 30 days as a unix time.
const MAX_RELATIVE_TTL: u64 = 30 * 24 * 3600;

/// The latest unix time memcached stores: its expiry field is a signed
/// 32-bit number (2038-01-19T03:14:07Z).
const MAX_EXPIRY: u64 = i32::MAX as u64;

/// A batch for one server: the capability's commands, in groups that
/// share a key prefix, then the host's own.
#[derive(Default)]
pub(crate) struct Request<'a> {
    pub(crate) groups: Vec<Group<'a>>,
    /// Meta commands as they are (the bench's raw baseline); their replies
    /// are read as the capability's, by code alone.
    #[cfg(feature = "bench")]
    pub(crate) raw: Vec<memcache::exp::MetaCommand>,
    pub(crate) own: Vec<Own>,
}

/// Commands whose keys all start with one prefix.
pub(crate) struct Group<'a> {
    /// Written before every key: `tc:<app>:` and the route's tag. (Keys of
    /// the host's own commands are written as they are.)
    pub(crate) prefix: Vec<u8>,
    pub(crate) commands: &'a [Command],
}

impl Request<'_> {
    /// How many commands the request holds besides the host's own.
    pub(crate) fn commands(&self) -> usize {
        #[cfg(feature = "bench")]
        let raw = self.raw.len();
        #[cfg(not(feature = "bench"))]
        let raw = 0;
        self.groups.iter().map(|group| group.commands.len()).sum::<usize>() + raw
    }

    /// Whether any command writes.
    pub(crate) fn writes(&self) -> bool {
        let capability = self.groups.iter().flat_map(|group| group.commands);
        capability.clone().any(|command| !matches!(command, Command::Get(_)))
            || self
                .own
                .iter()
                .any(|own| matches!(own, Own::AddPool(_) | Own::SetPool(_)))
    }
}

/// A command of the host's own, about the pool rather than an application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Own {
    /// Read the pool record.
    ReadPool,
    /// Store the pool record unless one exists.
    AddPool(Vec<u8>),
    /// Store the pool record.
    SetPool(Vec<u8>),
    /// memcached's `stats`: how many items the server holds.
    Stats,
}

/// What a command of the host's own answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OwnReply {
    /// The pool record, if the server holds one.
    Pool(Option<Vec<u8>>),
    /// Whether a store took effect.
    Stored(bool),
    /// Items the server holds now, and has stored since it started.
    Stats { current: u64, total: u64 },
}

/// The answer to a request: the capability's replies and the host's own.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) replies: Replies,
    pub(crate) own: Vec<OwnReply>,
}

/// How a reply is read: what the command it answers was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Get,
    Store,
    Delete,
    Stats,
    /// A raw meta command: any reply code answers it.
    #[cfg(feature = "bench")]
    Raw,
}

impl Kind {
    /// Whether `code` answers a command of this kind.
    fn fits(self, code: ReturnCode) -> bool {
        #[cfg(feature = "bench")]
        if self == Kind::Raw {
            return true;
        }
        matches!(
            (self, code),
            (Kind::Get, ReturnCode::Va | ReturnCode::En)
                | (Kind::Store, ReturnCode::Hd | ReturnCode::Ns | ReturnCode::Ex)
                | (Kind::Delete, ReturnCode::Hd | ReturnCode::Nf)
        )
    }
}

/// The expiry memcached is sent for a TTL of `secs`, set at unix time
/// `now`; `None` for no expiry. Up to 30 days it is the TTL itself; beyond,
/// memcached reads it as the unix time it ends, rounded up so the entry
/// never ends early. An end past memcached's last expressible time (the
/// year 2038) is clamped to that time, or, once that time is less than 30
/// days away, to the longest relative TTL (30 days).
pub(crate) fn wire_ttl(secs: u32, now: u64) -> u64 {
    let secs = u64::from(secs);
    if secs <= MAX_RELATIVE_TTL {
        return secs;
    }
    let end = now + secs + 1;
    if end <= MAX_EXPIRY {
        end
    } else if MAX_EXPIRY > now + MAX_RELATIVE_TTL {
        MAX_EXPIRY
    } else {
        MAX_RELATIVE_TTL
    }
}

/// Writes `request` into `out`, each command stamped with an opaque token
/// from `first` on, in order; `now` (unix time) turns long TTLs into
/// expiry times. The keys were checked by the grant: printable ASCII,
/// short enough with the prefix.
fn encode(request: &Request<'_>, first: u64, now: u64, out: &mut Vec<u8>) -> Vec<Kind> {
    let mut kinds = Vec::with_capacity(request.commands() + request.own.len());
    let mut tokens = first..;
    let mut token = || tokens.next().unwrap_or_default();
    let commands = request
        .groups
        .iter()
        .flat_map(|group| group.commands.iter().map(|command| (&group.prefix, command)));
    for (prefix, command) in commands {
        let key = |out: &mut Vec<u8>, key: &str| {
            out.extend_from_slice(prefix);
            out.extend_from_slice(key.as_bytes());
        };
        kinds.push(match command {
            Command::Get(rel) => {
                out.extend_from_slice(b"mg ");
                key(out, rel);
                get_flags(token(), out);
                Kind::Get
            }
            Command::Set(item) | Command::Add(item) => {
                out.extend_from_slice(b"ms ");
                key(out, &item.key);
                store_flags(item, matches!(command, Command::Add(_)), token(), now, out);
                Kind::Store
            }
            Command::Delete(rel) => {
                out.extend_from_slice(b"md ");
                key(out, rel);
                out.push(b' ');
                out.extend_from_slice(opaque(token()).as_slice());
                out.extend_from_slice(b"\r\n");
                Kind::Delete
            }
        });
    }
    #[cfg(feature = "bench")]
    for command in &request.raw {
        let command = command.clone().flag(opaque(token()).as_slice());
        // The bench's commands are known good; one that is not fails its
        // reply instead.
        let _ = command.encode_into(out);
        kinds.push(Kind::Raw);
    }
    for own in &request.own {
        kinds.push(match own {
            Own::ReadPool => {
                out.extend_from_slice(b"mg ");
                out.extend_from_slice(POOL_KEY);
                get_flags(token(), out);
                Kind::Get
            }
            Own::AddPool(value) | Own::SetPool(value) => {
                let item = Item {
                    key: String::new(),
                    value: value.clone(),
                    ttl: None,
                };
                out.extend_from_slice(b"ms ");
                out.extend_from_slice(POOL_KEY);
                store_flags(&item, matches!(own, Own::AddPool(_)), token(), now, out);
                Kind::Store
            }
            Own::Stats => {
                out.extend_from_slice(b"stats\r\n");
                Kind::Stats
            }
        });
    }
    kinds
}

/// ` v O<token>\r\n`: the flags of a get.
fn get_flags(token: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b" v ");
    out.extend_from_slice(opaque(token).as_slice());
    out.extend_from_slice(b"\r\n");
}

/// ` <len>[ T<ttl>][ ME] O<token>\r\n<value>\r\n`: the rest of a store.
fn store_flags(item: &Item, add: bool, token: u64, now: u64, out: &mut Vec<u8>) {
    out.push(b' ');
    out.extend_from_slice(item.value.len().to_string().as_bytes());
    if let Some(secs) = item.ttl {
        out.extend_from_slice(b" T");
        out.extend_from_slice(wire_ttl(secs, now).to_string().as_bytes());
    }
    if add {
        out.extend_from_slice(b" ME");
    }
    out.push(b' ');
    out.extend_from_slice(opaque(token).as_slice());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&item.value);
    out.extend_from_slice(b"\r\n");
}

/// The limits a reader enforces while replies arrive.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadLimits {
    /// A value longer than this is not this host's to read: it is skipped
    /// and its get answers `miss`.
    pub(crate) item_size: u64,
    /// The values of one batch together may not exceed this many bytes.
    pub(crate) reply_bytes: u64,
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No connection could be made: nothing was sent.
    Connect(std::io::Error),
    /// Writing or reading failed after a connection was up.
    Io(std::io::Error),
    /// memcached refused a command: its `CLIENT_ERROR` or `ERROR` line.
    Rejected(String),
    /// The reply stream is not memcached's meta protocol.
    Garbled(&'static str),
    /// A reply did not echo its command's opaque token.
    Mismatch,
    /// The replies exceeded the batch's reply-byte limit.
    ReplyTooLarge(u64),
}

/// The largest pool record a reader takes.
const MAX_OWN_VALUE: usize = 64 * 1024;

/// The read buffer of a connection. A reply line longer than this is not
/// from memcached; values are read past it, straight into the batch.
pub(crate) const INPUT_BUFFER: usize = 16 * 1024;

/// Where a reader is in the reply stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a reply line.
    Line,
    /// Inside a value of the capability's batch: `remaining` bytes go
    /// straight into the batch's values.
    Value { remaining: usize },
    /// Inside a value of the host's own command, or one too long to read:
    /// `remaining` bytes to take (into `own_value`) or skip.
    Aside { remaining: usize, keep: bool },
    /// After a value: its `\r\n`.
    ValueEnd,
    /// Reading `stats` lines until `END`.
    Stats { current: u64, total: u64 },
}

/// One batch on one connection: the request's bytes to write, then its
/// replies read incrementally from what the driver receives.
pub(crate) struct Exchange<'a> {
    /// The connection's read buffer: received bytes not parsed yet are
    /// `input[start..end]`.
    input: &'a mut [u8],
    start: usize,
    end: usize,
    kinds: Vec<Kind>,
    /// How many of `kinds` are the capability's commands.
    commands: usize,
    /// The reply being read, and the token it must echo.
    index: usize,
    first_token: u64,
    state: State,
    limits: ReadLimits,
    answer: Answer,
    /// The value of the host's own command being read.
    own_value: Vec<u8>,
}

impl<'a> Exchange<'a> {
    /// Encodes `request` into `output` (cleared first), with tokens from
    /// `first_token` on; replies will be read through `input`, which must
    /// hold no bytes of an earlier exchange.
    pub(crate) fn new(
        request: &Request<'_>,
        first_token: u64,
        now: u64,
        limits: ReadLimits,
        output: &mut Vec<u8>,
        input: &'a mut [u8],
    ) -> Exchange<'a> {
        output.clear();
        let kinds = encode(request, first_token, now, output);
        Exchange {
            input,
            start: 0,
            end: 0,
            commands: request.commands(),
            answer: Answer {
                replies: Replies {
                    outcomes: Vec::with_capacity(request.commands()),
                    values: Vec::new(),
                },
                own: Vec::with_capacity(request.own.len()),
            },
            kinds,
            index: 0,
            first_token,
            state: State::Line,
            limits,
            own_value: Vec::new(),
        }
    }

    /// How many opaque tokens the request used.
    pub(crate) fn tokens(&self) -> u64 {
        self.kinds.len() as u64
    }

    /// Whether every reply has been read.
    pub(crate) fn is_done(&self) -> bool {
        self.index == self.kinds.len()
    }

    /// Where the next bytes read from the socket go.
    pub(crate) fn buffer(&mut self) -> &mut [u8] {
        if let State::Value { remaining } = self.state {
            let values = &mut self.answer.replies.values;
            let filled = values.len();
            values.resize(filled + remaining, 0);
            return &mut values[filled..];
        }
        if self.start > 0 {
            self.input.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.input[self.end..]
    }

    /// Takes `read` bytes the driver put into [`buffer`](Self::buffer), and
    /// reads as many replies as they complete.
    pub(crate) fn received(&mut self, read: usize) -> Result<(), Failure> {
        if let State::Value { remaining } = self.state {
            // `buffer` grew the values by `remaining`; keep what came.
            let values = &mut self.answer.replies.values;
            values.truncate(values.len() - remaining + read);
            self.state = match remaining - read {
                0 => State::ValueEnd,
                remaining => State::Value { remaining },
            };
        } else {
            self.end += read;
        }
        self.parse()?;
        // A full buffer that holds no complete line would never make room.
        let waiting_for_line = matches!(self.state, State::Line | State::Stats { .. });
        if !self.is_done() && waiting_for_line && self.start == 0 && self.end == self.input.len() {
            return Err(Failure::Garbled("a reply line longer than 16 KiB"));
        }
        Ok(())
    }

    /// The replies, once every one has been read. The second part says
    /// whether bytes beyond them arrived: then the stream is out of step
    /// and the connection must go.
    pub(crate) fn finish(self) -> (Answer, bool) {
        (self.answer, self.start != self.end)
    }

    /// Reads replies from the buffered bytes until more are needed.
    fn parse(&mut self) -> Result<(), Failure> {
        loop {
            if self.is_done() {
                return Ok(());
            }
            let progressed = match self.state {
                State::Line => self.line()?,
                State::Value { .. } => return Ok(()),
                State::Aside { remaining, keep } => {
                    let take = remaining.min(self.end - self.start);
                    if keep {
                        self.own_value
                            .extend_from_slice(&self.input[self.start..self.start + take]);
                    }
                    self.start += take;
                    self.state = match remaining - take {
                        0 => State::ValueEnd,
                        remaining => State::Aside { remaining, keep },
                    };
                    take > 0
                }
                State::ValueEnd => {
                    if self.end - self.start < 2 {
                        return Ok(());
                    }
                    if &self.input[self.start..self.start + 2] != b"\r\n" {
                        return Err(Failure::Garbled("a value not followed by CRLF"));
                    }
                    self.start += 2;
                    self.state = State::Line;
                    if self.index >= self.commands {
                        let value = std::mem::take(&mut self.own_value);
                        self.answer.own.push(OwnReply::Pool(Some(value)));
                    }
                    self.index += 1;
                    true
                }
                State::Stats { .. } => self.stats_line()?,
            };
            if !progressed {
                return Ok(());
            }
        }
    }

    /// The next complete line of input, without its line end, if one is
    /// buffered.
    fn next_line(&mut self) -> Option<std::ops::Range<usize>> {
        let at = self.input[self.start..self.end]
            .iter()
            .position(|&byte| byte == b'\n')?;
        let newline = self.start + at;
        let mut stop = newline;
        if stop > self.start && self.input[stop - 1] == b'\r' {
            stop -= 1;
        }
        let line = self.start..stop;
        self.start = newline + 1;
        Some(line)
    }

    /// Reads one reply line; false if none is complete yet.
    fn line(&mut self) -> Result<bool, Failure> {
        let kind = self.kinds[self.index];
        if kind == Kind::Stats {
            self.state = State::Stats { current: 0, total: 0 };
            return Ok(true);
        }
        let Some(line) = self.next_line() else {
            return Ok(false);
        };
        let token = opaque(self.first_token + self.index as u64);
        let own = self.index >= self.commands;
        let (code, len) = match header(&self.input[line], token.as_slice()) {
            Ok(header) => header,
            // memcached answers a store it cannot keep with SERVER_ERROR in
            // its place (having read the value): that command failed, the
            // stream is still in step.
            Err(Failure::Rejected(line)) if line.starts_with("SERVER_ERROR") => {
                let error = match line.contains("too large") && kind == Kind::Store {
                    true => Error::ValueTooLarge(self.limits.item_size),
                    false => Error::Protocol(format!("memcached answered {line}")),
                };
                self.settle(Outcome::Failed(error), None);
                return Ok(true);
            }
            Err(failure) => return Err(failure),
        };
        if !kind.fits(code) {
            if len.is_some() {
                return Err(Failure::Garbled("a value in reply to a command that reads none"));
            }
            self.settle(
                Outcome::Failed(Error::Protocol(format!("unexpected reply {code:?} to the command"))),
                None,
            );
            return Ok(true);
        }
        let Some(len) = len else {
            let outcome = match code {
                ReturnCode::En | ReturnCode::Nf => Outcome::Miss,
                ReturnCode::Ns | ReturnCode::Ex => Outcome::Exists,
                _ => Outcome::Done,
            };
            self.settle(outcome, None);
            return Ok(true);
        };
        if own && len > MAX_OWN_VALUE {
            return Err(Failure::Garbled("a pool record larger than 64 KiB"));
        }
        if own || len as u64 > self.limits.item_size {
            // The host's own value, or one this host does not take: aside.
            self.own_value.clear();
            self.state = State::Aside {
                remaining: len,
                keep: own,
            };
            if !own {
                self.answer.replies.outcomes.push(Outcome::Miss);
            }
            return Ok(true);
        }
        let values = &mut self.answer.replies.values;
        let total = values.len() as u64 + len as u64;
        if total > self.limits.reply_bytes {
            return Err(Failure::ReplyTooLarge(self.limits.reply_bytes));
        }
        if values.capacity() == 0 {
            // The rest of this read holds this value and any after it: one
            // allocation for the batch, not one per value.
            values.reserve((self.end - self.start).max(len));
        }
        let buffered = len.min(self.end - self.start);
        values.extend_from_slice(&self.input[self.start..self.start + buffered]);
        self.start += buffered;
        self.answer.replies.outcomes.push(Outcome::Value(len as u32));
        self.state = match len - buffered {
            0 => State::ValueEnd,
            remaining => State::Value { remaining },
        };
        Ok(true)
    }

    /// Records the answer to the current command and moves to the next;
    /// `value` is the value of the host's own get, if it found one.
    fn settle(&mut self, outcome: Outcome, value: Option<Vec<u8>>) {
        if self.index < self.commands {
            self.answer.replies.outcomes.push(outcome);
        } else {
            self.answer.own.push(match (self.kinds[self.index], outcome) {
                (Kind::Get, _) => OwnReply::Pool(value),
                (_, Outcome::Done) => OwnReply::Stored(true),
                _ => OwnReply::Stored(false),
            });
        }
        self.index += 1;
    }

    /// Reads one line of a `stats` reply; false if none is complete yet.
    fn stats_line(&mut self) -> Result<bool, Failure> {
        let State::Stats { current, total } = self.state else {
            return Ok(false);
        };
        let Some(line) = self.next_line() else {
            return Ok(false);
        };
        let line = &self.input[line];
        if line == b"END" {
            self.answer.own.push(OwnReply::Stats { current, total });
            self.state = State::Line;
            self.index += 1;
            return Ok(true);
        }
        let mut tokens = Tokens(line);
        if tokens.next() != Some(b"STAT") {
            return Err(Failure::Garbled("a stats line without STAT"));
        }
        let (name, value) = (tokens.next(), tokens.next().and_then(number));
        self.state = match (name, value) {
            (Some(b"curr_items"), Some(value)) => State::Stats { current: value, total },
            (Some(b"total_items"), Some(value)) => State::Stats { current, total: value },
            _ => State::Stats { current, total },
        };
        Ok(true)
    }
}

/// Reads a reply line: its code and, for `VA`, the data length. The line
/// must carry exactly one opaque token, `opaque`. Error lines fail the
/// batch (`SERVER_ERROR` lines as `Rejected`, which the caller may take as
/// one command's failure).
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
    let code = match first {
        b"SERVER_ERROR" | b"CLIENT_ERROR" | b"ERROR" => {
            return Err(Failure::Rejected(String::from_utf8_lossy(line).trim().to_owned()));
        }
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
    if digits.len() > 10 {
        return None;
    }
    number(digits).and_then(|number| usize::try_from(number).ok())
}

/// Decimal digits, at most nineteen.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0, |number, &digit| number * 10 + u64::from(digit - b'0')),
    )
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

/// A capability error as a person reads it.
pub(crate) fn describe(error: &Error) -> String {
    match error {
        Error::Unavailable(text) | Error::InvalidKey(text) | Error::Protocol(text) => text.clone(),
        Error::ValueTooLarge(limit) => format!("the value exceeds the item size limit of {limit} bytes"),
        Error::OverLimit(Limit::CommandsPerBatch(limit)) => {
            format!("the batch has more commands than the host runs at once ({limit})")
        }
        Error::OverLimit(Limit::ReplyBytes(limit)) => {
            format!("the batch's replies exceed the {limit} bytes the host gathers for one call")
        }
    }
}

/// The one place exchange failures become capability errors. `writes`:
/// whether the batch held writes (which may or may not have been applied
/// when it failed once connected).
pub(crate) fn to_error(address: &str, failure: Failure, timeout: std::time::Duration, writes: bool) -> Error {
    let unknown = if writes {
        "; its writes may or may not have been applied"
    } else {
        ""
    };
    match failure {
        Failure::Connect(error) => Error::Unavailable(format!("memcached at {address} is unreachable: {error}")),
        Failure::Io(error) if error.kind() == std::io::ErrorKind::TimedOut => Error::Unavailable(format!(
            "memcached at {address} did not answer within {timeout:?}{unknown}"
        )),
        Failure::Io(error) => {
            Error::Unavailable(format!("memcached at {address} failed mid-request: {error}{unknown}"))
        }
        Failure::Rejected(message) => Error::Protocol(format!(
            "memcached at {address} refused the request: {message}{unknown}"
        )),
        Failure::Garbled(what) => Error::Protocol(format!(
            "memcached at {address} sent {what}; connection dropped{unknown}"
        )),
        Failure::Mismatch => Error::Protocol(format!(
            "memcached at {address} sent a reply that does not match the request; connection dropped{unknown}"
        )),
        Failure::ReplyTooLarge(limit) => Error::OverLimit(Limit::ReplyBytes(limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memcache::exp::{MetaCommand, MetaOp};

    const LIMITS: ReadLimits = ReadLimits {
        item_size: 1024 * 1024,
        reply_bytes: 64 * 1024 * 1024,
    };

    fn gets(keys: &[&str]) -> Vec<Command> {
        keys.iter().map(|key| Command::Get((*key).into())).collect()
    }

    fn item(ttl: Option<u32>) -> Item {
        Item {
            key: "k".into(),
            value: b"vv".to_vec(),
            ttl,
        }
    }

    /// The bytes `commands` (under `prefix`) are sent as, tokens from 0x1f.
    fn wire(prefix: &str, commands: &[Command], own: Vec<Own>) -> String {
        let request = Request {
            groups: vec![Group {
                prefix: prefix.as_bytes().to_vec(),
                commands,
            }],
            own,
            ..Request::default()
        };
        let mut out = Vec::new();
        encode(&request, 0x1f, 1_700_000_000, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// Feeds `reply` to an exchange for `request` in chunks of `chunk`
    /// bytes, as a driver would.
    fn read(request: &Request<'_>, reply: &[u8], chunk: usize, limits: ReadLimits) -> Result<(Answer, bool), Failure> {
        let (mut output, mut input) = (Vec::new(), vec![0u8; INPUT_BUFFER]);
        let mut exchange = Exchange::new(request, 0, 0, limits, &mut output, &mut input);
        let mut rest = reply;
        while !exchange.is_done() {
            if rest.is_empty() {
                return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let buffer = exchange.buffer();
            let take = chunk.min(rest.len()).min(buffer.len());
            buffer[..take].copy_from_slice(&rest[..take]);
            rest = &rest[take..];
            exchange.received(take)?;
        }
        let (answer, leftover) = exchange.finish();
        Ok((answer, leftover || !rest.is_empty()))
    }

    fn request(commands: &[Command], own: Vec<Own>) -> Request<'_> {
        Request {
            groups: vec![Group {
                prefix: Vec::new(),
                commands,
            }],
            own,
            ..Request::default()
        }
    }

    #[test]
    fn opaque_tokens_are_hex_and_distinct() {
        assert_eq!(opaque(0).as_slice(), b"O0");
        assert_eq!(opaque(0xab).as_slice(), b"Oab");
        assert_eq!(opaque(u64::MAX).as_slice(), b"Offffffffffffffff");
        for token in 0..5000u64 {
            assert_eq!(opaque(token).as_slice(), format!("O{token:x}").as_bytes());
        }
    }

    #[test]
    fn commands_are_encoded_as_memcache_encodes_them() {
        let theirs = |command: MetaCommand| String::from_utf8(command.flag("O1f").encode().unwrap()).unwrap();
        let long = "k".repeat(240);
        for key in ["k", "tc:shop:d:Lisboa:/info", "~!%#:", long.as_str()] {
            assert_eq!(
                wire("", &gets(&[key]), vec![]),
                theirs(MetaCommand::new(MetaOp::Get, key).flag("v"))
            );
        }
        assert_eq!(
            wire("", &[Command::Set(item(None))], vec![]),
            theirs(MetaCommand::new(MetaOp::Set, "k").value("vv"))
        );
        assert_eq!(
            wire("", &[Command::Delete("k".into())], vec![]),
            theirs(MetaCommand::new(MetaOp::Delete, "k"))
        );
    }

    #[test]
    fn keys_get_their_prefix_and_stores_their_ttl_and_mode() {
        assert_eq!(wire("tc:a:~1:", &gets(&["k"]), vec![]), "mg tc:a:~1:k v O1f\r\n");
        assert_eq!(
            wire("p:", &[Command::Add(item(None))], vec![]),
            "ms p:k 2 ME O1f\r\nvv\r\n"
        );
        assert_eq!(
            wire("p:", &[Command::Add(item(Some(60)))], vec![]),
            "ms p:k 2 T60 ME O1f\r\nvv\r\n"
        );
        assert_eq!(
            wire("p:", &gets(&["k"]), vec![Own::ReadPool, Own::Stats]),
            "mg p:k v O1f\r\nmg tc:pool v O20\r\nstats\r\n"
        );
    }

    #[test]
    fn long_ttls_never_end_early_and_fit_memcached_field() {
        let day = 24 * 3600;
        let now = 1_700_000_000;
        assert_eq!(wire_ttl(1, now), 1);
        assert_eq!(wire_ttl(30 * day, now), u64::from(30 * day));
        assert_eq!(wire_ttl(30 * day + 1, now), now + u64::from(30 * day) + 2);
        assert_eq!(wire_ttl(365 * day, now), now + u64::from(365 * day) + 1);
        // 2031: ten years would end after 2038; the field's last second.
        let in_2031 = 1_938_000_000;
        assert_eq!(wire_ttl(315_000_000, in_2031), MAX_EXPIRY);
        // Past 2038 no absolute time fits: the longest relative TTL.
        let in_2039 = 2_180_000_000;
        assert_eq!(wire_ttl(40 * day, in_2039), 30 * u64::from(day));
        assert_eq!(wire_ttl(u32::MAX, in_2039), 30 * u64::from(day));
        // Never a value memcached would wrap or read as the past.
        for now in [0, now, in_2031, MAX_EXPIRY - 10, in_2039, u64::from(u32::MAX) + 5] {
            for secs in [1, 30 * day, 30 * day + 1, 400 * day, u32::MAX] {
                let sent = wire_ttl(secs, now);
                assert!(sent <= MAX_EXPIRY, "{secs} at {now}: {sent}");
                assert!(sent <= u64::from(30 * day) || sent > now, "{secs} at {now}: {sent}");
            }
        }
    }

    #[test]
    fn replies_split_anywhere_are_read_whole() {
        let big: Vec<u8> = (0..20_000u32).map(|n| (n % 251) as u8).collect();
        let mut reply = b"VA 3 O0\r\nabc\r\nEN O1\r\nVA 20000 O2\r\n".to_vec();
        reply.extend_from_slice(&big);
        reply.extend_from_slice(b"\r\nVA 0 O3\r\n\r\nVA 4 O4\r\npool\r\n");
        let commands = gets(&["a", "b", "c", "d"]);
        let request = request(&commands, vec![Own::ReadPool]);
        for chunk in [1, 2, 7, 100, 5000, usize::MAX] {
            let (answer, leftover) = read(&request, &reply, chunk, LIMITS).unwrap();
            assert!(!leftover);
            assert_eq!(
                answer.replies.outcomes,
                [
                    Outcome::Value(3),
                    Outcome::Miss,
                    Outcome::Value(20_000),
                    Outcome::Value(0)
                ]
            );
            assert_eq!(&answer.replies.values[..3], b"abc");
            assert!(answer.replies.values[3..] == big[..]);
            assert_eq!(answer.own, [OwnReply::Pool(Some(b"pool".to_vec()))]);
        }
    }

    #[test]
    fn a_value_beyond_the_item_size_limit_reads_as_a_miss() {
        let mut reply = b"VA 2000 O0\r\n".to_vec();
        reply.extend_from_slice(&[b'x'; 2000]);
        reply.extend_from_slice(b"\r\nVA 2 O1\r\nok\r\n");
        let commands = gets(&["big", "small"]);
        let limits = ReadLimits {
            item_size: 1000,
            ..LIMITS
        };
        for chunk in [3, 64, usize::MAX] {
            let (answer, leftover) = read(&request(&commands, vec![]), &reply, chunk, limits).unwrap();
            assert!(!leftover);
            assert_eq!(answer.replies.outcomes, [Outcome::Miss, Outcome::Value(2)]);
            assert_eq!(answer.replies.values, b"ok");
        }
    }

    #[test]
    fn replies_past_the_reply_limit_fail_at_once() {
        let commands = gets(&["a", "b", "c"]);
        let limits = ReadLimits {
            reply_bytes: 150,
            ..LIMITS
        };
        // Only the first two headers arrive: the second already breaks it.
        let reply = b"VA 100 O0\r\n".iter().chain(&[b'x'; 100]).chain(b"\r\nVA 100 O1\r\n");
        let reply: Vec<u8> = reply.copied().collect();
        let failure = read(&request(&commands, vec![]), &reply, usize::MAX, limits).unwrap_err();
        assert!(matches!(failure, Failure::ReplyTooLarge(150)), "{failure:?}");
    }

    #[test]
    fn a_store_memcached_cannot_keep_fails_alone() {
        let commands = [Command::Set(item(None)), Command::Get("k".into())];
        let reply = b"SERVER_ERROR object too large for cache\r\nEN O1\r\n";
        let (answer, _) = read(&request(&commands, vec![]), reply, usize::MAX, LIMITS).unwrap();
        assert_eq!(
            answer.replies.outcomes,
            [Outcome::Failed(Error::ValueTooLarge(LIMITS.item_size)), Outcome::Miss]
        );
    }

    #[test]
    fn own_commands_and_stats_are_answered_apart() {
        let commands = gets(&["a"]);
        let own = vec![Own::AddPool(b"r".to_vec()), Own::ReadPool, Own::Stats];
        let reply = b"EN O0\r\nNS O1\r\nEN O2\r\nSTAT pid 1\r\nSTAT curr_items 3\r\nSTAT total_items 9\r\nEND\r\n";
        let (answer, leftover) = read(&request(&commands, own), reply, 5, LIMITS).unwrap();
        assert!(!leftover);
        assert_eq!(answer.replies.outcomes, [Outcome::Miss]);
        assert_eq!(
            answer.own,
            [
                OwnReply::Stored(false),
                OwnReply::Pool(None),
                OwnReply::Stats { current: 3, total: 9 }
            ]
        );
    }

    #[test]
    fn forged_late_or_extra_replies_are_caught() {
        let commands = gets(&["a"]);
        let request = request(&commands, vec![]);
        for forged in [
            &b"VA 6 O999\r\nforged\r\n"[..],
            b"VA 6\r\nforged\r\n",
            b"garbage\r\n",
            b"CLIENT_ERROR bad\r\n",
        ] {
            assert!(read(&request, forged, usize::MAX, LIMITS).is_err(), "{forged:?}");
        }
        let (_, leftover) = read(&request, b"EN O0\r\nEN O1\r\n", usize::MAX, LIMITS).unwrap();
        assert!(leftover, "an extra reply must mark the connection out of step");
        let long = vec![b'x'; INPUT_BUFFER + 10];
        assert!(matches!(
            read(&request, &long, usize::MAX, LIMITS),
            Err(Failure::Garbled(_))
        ));
    }

    #[test]
    fn reply_lines_give_code_length_and_echo() {
        let read = |line: &[u8]| {
            header(line, b"O1f").map_err(|failure| match failure {
                Failure::Rejected(message) => format!("rejected {message}"),
                Failure::Garbled(what) => format!("garbled {what}"),
                Failure::Mismatch => String::from("mismatch"),
                _ => String::from("other"),
            })
        };
        assert_eq!(read(b"VA 16 O1f"), Ok((ReturnCode::Va, Some(16))));
        assert_eq!(read(b"VA  1048576 c7 O1f"), Ok((ReturnCode::Va, Some(1_048_576))));
        assert_eq!(read(b"EN O1f"), Ok((ReturnCode::En, None)));
        assert_eq!(read(b"HD c7 O1f"), Ok((ReturnCode::Hd, None)));
        assert_eq!(read(b"HD O1f c7"), Ok((ReturnCode::Hd, None)));
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
                "{garbled:?}"
            );
        }
        for mismatched in [&b"EN"[..], b"EN O1", b"EN O1f0", b"EN O1f O1f", b"VA 2 O2"] {
            assert_eq!(read(mismatched), Err("mismatch".into()), "{mismatched:?}");
        }
    }
}
