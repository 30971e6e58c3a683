//! Reading a batch's replies from bytes as they arrive: every reply must
//! echo its command's opaque token, values are read straight into the
//! batch's buffer, and the batch's limits are checked on the way.

use super::line::Code;

use super::line::{Tokens, cas, header, number};
use super::{Answer, Kind, OwnReply, Request, encode, opaque};
use crate::types::{Error, Outcome, Replies, ValueWithCas};

/// The limits a reader enforces while replies arrive.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    /// A value longer than this is not this host's to read: it is skipped
    /// and its get answers `miss`.
    pub item_size: u64,
    /// The values of one batch together may not exceed this many bytes.
    pub reply_bytes: u64,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Failure {
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
pub const INPUT_BUFFER: usize = 16 * 1024;

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

/// A connection's read buffer: bytes received and not parsed yet are
/// `bytes[start..end]`. It goes from one exchange to the next: on a
/// pipelined connection the next batch's replies follow this one's in the
/// same reads.
#[derive(Default)]
pub struct Input {
    bytes: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Input {
    /// An empty buffer of [`INPUT_BUFFER`] bytes.
    pub fn new() -> Input {
        Input {
            bytes: vec![0; INPUT_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Whether it holds bytes not parsed yet.
    pub fn holds_bytes(&self) -> bool {
        self.start != self.end
    }
}

/// A batch encoded for a connection: what reading its replies needs.
pub struct Expected {
    kinds: Vec<Kind>,
    /// How many of `kinds` are the capability's commands.
    commands: usize,
    first_token: u64,
    limits: ReadLimits,
}

impl Expected {
    /// Appends `request` to `output`, with tokens from `first_token` on.
    pub fn encode(
        request: &Request<'_>,
        first_token: u64,
        now: u64,
        limits: ReadLimits,
        output: &mut Vec<u8>,
    ) -> Expected {
        Expected {
            kinds: encode(request, first_token, now, output),
            commands: request.commands(),
            first_token,
            limits,
        }
    }

    /// How many opaque tokens the request used.
    pub fn tokens(&self) -> u64 {
        self.kinds.len() as u64
    }
}

/// One batch on one connection: its replies read incrementally from what
/// the driver receives.
pub struct Exchange {
    /// The connection's read buffer, lent for the exchange.
    input: Input,
    kinds: Vec<Kind>,
    /// How many of `kinds` are the capability's commands.
    commands: usize,
    /// The reply being read, and the token it must echo.
    index: usize,
    first_token: u64,
    state: State,
    limits: ReadLimits,
    answer: Answer,
    /// Bytes of values announced so far (each checked against the
    /// reply-byte limit when announced): the values' capacity never
    /// exceeds it.
    announced: usize,
    /// Whether the values passed the reply-byte limit: the rest are
    /// skipped, so the stream stays in step, and the batch fails.
    over_limit: bool,
    /// Zeroed bytes at the end of the values, lent to the driver by the
    /// last [`buffer`](Self::buffer) and not yet received.
    lent: usize,
    /// The value of the host's own command being read.
    own_value: Vec<u8>,
    /// The CAS value the reply to the host's own command carried.
    own_cas: u64,
}

impl Exchange {
    /// Encodes `request` into `output` (cleared first), with tokens from
    /// `first_token` on; replies will be read through `input`.
    pub fn new(
        request: &Request<'_>,
        first_token: u64,
        now: u64,
        limits: ReadLimits,
        output: &mut Vec<u8>,
        input: Input,
    ) -> Exchange {
        output.clear();
        Exchange::reading(Expected::encode(request, first_token, now, limits, output), input)
    }

    /// Reads the replies of a batch sent as `expected` through `input`,
    /// from the bytes it holds on: those of earlier batches were read.
    pub fn reading(expected: Expected, input: Input) -> Exchange {
        let Expected {
            kinds,
            commands,
            first_token,
            limits,
        } = expected;
        Exchange {
            input,
            commands,
            answer: Answer {
                replies: Replies {
                    outcomes: Vec::with_capacity(commands),
                    values: Vec::new(),
                },
                own: Vec::with_capacity(kinds.len() - commands),
            },
            kinds,
            index: 0,
            first_token,
            state: State::Line,
            limits,
            announced: 0,
            over_limit: false,
            lent: 0,
            own_value: Vec::new(),
            own_cas: 0,
        }
    }

    /// How many opaque tokens the request used.
    pub fn tokens(&self) -> u64 {
        self.kinds.len() as u64
    }

    /// Whether every reply has been read.
    pub fn is_done(&self) -> bool {
        self.index == self.kinds.len()
    }

    /// Where the next bytes read from the socket go. A driver may ask any
    /// number of times before bytes arrive (a read that would block): the
    /// same room is lent each time, and only [`received`](Self::received)
    /// takes bytes from it.
    pub fn buffer(&mut self) -> &mut [u8] {
        if let State::Value { remaining } = self.state {
            // Inside a value of the batch: straight into its values, in
            // room lent once and taken back by `received`. The room grows
            // with what has arrived, never with what was announced: a
            // server announcing 60 MB and sending a byte at a time holds
            // kilobytes of the host, not 60 MB.
            let filled = self.answer.replies.values.len() - self.lent;
            let room = remaining.min(filled.max(INPUT_BUFFER));
            if self.lent != room {
                self.answer.replies.values.truncate(filled);
                self.make_room(room);
                self.answer.replies.values.resize(filled + room, 0);
                self.lent = room;
            }
            let values = &mut self.answer.replies.values;
            let filled = values.len() - self.lent;
            return &mut values[filled..];
        }
        if self.input.start > 0 {
            self.input.bytes.copy_within(self.input.start..self.input.end, 0);
            self.input.end -= self.input.start;
            self.input.start = 0;
        }
        &mut self.input.bytes[self.input.end..]
    }

    /// Takes `read` bytes the driver put at the start of the last
    /// [`buffer`](Self::buffer) (at most its length), and reads as many
    /// replies as they complete.
    pub fn received(&mut self, read: usize) -> Result<(), Failure> {
        if let State::Value { remaining } = self.state {
            // Keep what came of the room lent; give back the rest.
            let read = read.min(self.lent);
            let values = &mut self.answer.replies.values;
            values.truncate(values.len() - self.lent + read);
            self.lent = 0;
            self.state = match remaining - read {
                0 => State::ValueEnd,
                remaining => State::Value { remaining },
            };
        } else {
            self.input.end = (self.input.end + read).min(self.input.bytes.len());
        }
        self.parse()?;
        // A full buffer that holds no complete line would never make room.
        let waiting_for_line = matches!(self.state, State::Line | State::Stats { .. });
        if !self.is_done() && waiting_for_line && self.input.start == 0 && self.input.end == self.input.bytes.len() {
            return Err(Failure::Garbled("a reply line longer than 16 KiB"));
        }
        Ok(())
    }

    /// Makes the values' capacity hold `extra` more bytes (bytes that
    /// arrived, or room lent for them): doubling, so a large value is
    /// copied a few times at most, but never past what has been announced
    /// or has arrived. The values thus hold at most the reply-byte limit,
    /// and at most four times the bytes that arrived plus two read
    /// buffers.
    fn make_room(&mut self, extra: usize) {
        let values = &mut self.answer.replies.values;
        let needed = values.len() + extra;
        if needed > values.capacity() {
            let target = needed.max(values.capacity() * 2).min(self.announced.max(needed));
            values.reserve_exact(target - values.len());
        }
    }

    /// The bytes the batch's values hold in memory (for the tests of the
    /// memory bound).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.answer.replies.values.capacity()
    }

    /// The replies, once every one has been read, and the read buffer
    /// back, with any bytes that arrived beyond them: the next batch's on
    /// a pipelined connection; otherwise the stream is out of step and
    /// the connection must go.
    pub fn finish(self) -> (Result<Answer, Failure>, Input) {
        let answer = match self.over_limit {
            true => Err(Failure::ReplyTooLarge(self.limits.reply_bytes)),
            false => Ok(self.answer),
        };
        (answer, self.input)
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
                    let take = remaining.min(self.input.end - self.input.start);
                    if keep {
                        self.own_value
                            .extend_from_slice(&self.input.bytes[self.input.start..self.input.start + take]);
                    }
                    self.input.start += take;
                    self.state = match remaining - take {
                        0 => State::ValueEnd,
                        remaining => State::Aside { remaining, keep },
                    };
                    // An empty value is complete at once.
                    take > 0 || remaining == 0
                }
                State::ValueEnd => {
                    if self.input.end - self.input.start < 2 {
                        return Ok(());
                    }
                    if &self.input.bytes[self.input.start..self.input.start + 2] != b"\r\n" {
                        return Err(Failure::Garbled("a value not followed by CRLF"));
                    }
                    self.input.start += 2;
                    self.state = State::Line;
                    if self.index >= self.commands {
                        let value = std::mem::take(&mut self.own_value);
                        self.answer.own.push(match self.kinds[self.index] {
                            Kind::Survey => OwnReply::Surveyed(Some((value, self.own_cas))),
                            _ => OwnReply::Pool(Some(value)),
                        });
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
        let at = self.input.bytes[self.input.start..self.input.end]
            .iter()
            .position(|&byte| byte == b'\n')?;
        let newline = self.input.start + at;
        let mut stop = newline;
        if stop > self.input.start && self.input.bytes[stop - 1] == b'\r' {
            stop -= 1;
        }
        let line = self.input.start..stop;
        self.input.start = newline + 1;
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
        let (code, len) = match header(&self.input.bytes[line.clone()], token.as_slice()) {
            Ok(header) => header,
            // memcached answers a store it cannot keep with SERVER_ERROR in
            // its place (having read the value): that command failed, the
            // stream is still in step.
            Err(Failure::Rejected(line)) if line.starts_with("SERVER_ERROR") => {
                let error = match line.contains("too large") && kind == Kind::Store {
                    true => Error::ValueTooLarge(self.limits.item_size),
                    false => Error::Protocol(format!("memcached answered {line}")),
                };
                self.settle(Outcome::Failed(error));
                return Ok(true);
            }
            // `ma` on a value that is not a number: that command is
            // refused, the stream is still in step.
            Err(Failure::Rejected(line)) if kind == Kind::Arithmetic && line.contains("non-numeric") => {
                self.settle(Outcome::NotANumber);
                return Ok(true);
            }
            Err(failure) => return Err(failure),
        };
        if own {
            self.own_cas = cas(&self.input.bytes[line.clone()]).unwrap_or(0);
        }
        if !kind.fits(code) {
            if len.is_some() {
                return Err(Failure::Garbled("a value in reply to a command that reads none"));
            }
            self.settle(Outcome::Failed(Error::Protocol(format!(
                "unexpected reply {code:?} to the command"
            ))));
            return Ok(true);
        }
        let Some(len) = len else {
            let outcome = match code {
                Code::En | Code::Nf => Outcome::Miss,
                Code::Ns | Code::Ex => Outcome::Exists,
                _ => Outcome::Done,
            };
            self.settle(outcome);
            return Ok(true);
        };
        if own && len > MAX_OWN_VALUE {
            return Err(Failure::Garbled("a pool record larger than 64 KiB"));
        }
        let announced = self.announced as u64 + len as u64;
        if !own && len as u64 <= self.limits.item_size && announced > self.limits.reply_bytes {
            // Past the batch's limit: this value and every later one are
            // skipped, and the batch fails once its replies are read.
            self.over_limit = true;
        }
        if own || len as u64 > self.limits.item_size || self.over_limit {
            // The host's own value, one this host does not take, or one
            // past the batch's limit: aside.
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
        // Within the limit, which is at most a usize's worth of bytes.
        self.announced += len;
        let buffered = len.min(self.input.end - self.input.start);
        // What arrived with this read holds this value and maybe others:
        // room for all of it, so small values cost one allocation a batch.
        self.make_room(self.input.end - self.input.start);
        let values = &mut self.answer.replies.values;
        values.extend_from_slice(&self.input.bytes[self.input.start..self.input.start + buffered]);
        self.input.start += buffered;
        let line = &self.input.bytes[line];
        let outcome = match kind {
            Kind::GetEarly | Kind::Survey => {
                let read = ValueWithCas {
                    len: len as u32,
                    cas: cas(line).ok_or(Failure::Garbled("a value without the CAS value asked for"))?,
                };
                match kind == Kind::GetEarly && Tokens(line).skip(1).any(|flag| flag == b"W") {
                    true => Outcome::Refresh(read),
                    false => Outcome::ValueWithCas(read),
                }
            }
            _ => Outcome::Value(len as u32),
        };
        self.answer.replies.outcomes.push(outcome);
        self.state = match len - buffered {
            0 => State::ValueEnd,
            remaining => State::Value { remaining },
        };
        Ok(true)
    }

    /// Records the answer without a value to the current command, and
    /// moves to the next.
    fn settle(&mut self, outcome: Outcome) {
        if self.index < self.commands {
            self.answer.replies.outcomes.push(outcome);
        } else {
            let done = outcome == Outcome::Done;
            self.answer.own.push(match self.kinds[self.index] {
                Kind::Survey => OwnReply::Surveyed(None),
                Kind::Store => OwnReply::Stored(done.then_some(self.own_cas)),
                Kind::Delete => OwnReply::Removed(done),
                _ => OwnReply::Pool(None),
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
        let line = &self.input.bytes[line];
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
