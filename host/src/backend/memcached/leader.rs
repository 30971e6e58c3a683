//! Coalescing on the blocking driver: the batches of threads sharing a
//! backend, bound for one server, share two connections.
//!
//! - A thread that finds a connection to spare takes it and runs its own
//!   exchange on it, as if it were alone.
//! - Threads that come while both are taken queue their batches and sleep.
//!   When a connection is handed on, one of them leads: it writes every
//!   queued batch in one write, reads the replies in order, leaves each
//!   thread its answer and wakes them; what queued meanwhile is the next
//!   leader's. A batch whose thread stopped waiting before it was written
//!   is not written.
//!
//! Two connections, not one: with one, two threads took turns, each
//! waiting out the other's whole round trip (docs/architecture.md,
//! "Coalescing concurrent async batches").
//!
//! Each batch keeps its own limits and its caller waits until its own
//! deadline; a round is bounded by its oldest batch's. A failure fails the
//! batch it happened on and those behind it in the round; the connection
//! is then dropped.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::blocking::{Connection, dial};
use tenant_cache_memcached::protocol::{Answer, Expected, Failure, ReadLimits, Request};

/// A server's shared blocking connection, and its queue.
#[derive(Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the queued threads: answers were left, or the connection was
    /// handed on.
    turn: Condvar,
}

/// Connections a server's threads run on at once before their batches
/// queue for a shared round.
const CONNECTIONS: usize = 2;

#[derive(Default)]
struct State {
    /// Connections no thread is using.
    free: Vec<Connection>,
    /// Threads running their exchange or leading a round, each on a
    /// connection (at most [`CONNECTIONS`]).
    busy: usize,
    /// The queued batches' bytes, in order, and the batches.
    bytes: Vec<u8>,
    calls: Vec<Call>,
    /// Opaque tokens handed out so far: each batch's replies echo tokens
    /// of their own.
    tokens: u64,
    tickets: u64,
    /// Answers left by a leader for the threads they belong to.
    answers: HashMap<u64, Result<Answer, Failure>>,
    /// Threads that stopped waiting: their answers are dropped.
    abandoned: HashSet<u64>,
}

/// A queued batch.
struct Call {
    ticket: u64,
    expected: Expected,
    deadline: Instant,
    /// Where its bytes end in the queue's.
    end: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Runs `request` on the shared connection, by `deadline`.
    pub(crate) fn exchange(
        &self,
        addrs: &[SocketAddr],
        timeout: Duration,
        request: &Request<'_>,
        now: u64,
        limits: ReadLimits,
        deadline: Instant,
    ) -> Result<Answer, Failure> {
        let mut state = self.lock();
        if state.calls.is_empty() && state.busy < CONNECTIONS {
            // A connection to spare: this batch's own exchange, as if alone.
            let free = state.take();
            let first = state.tokens;
            state.tokens += request.tokens();
            drop(state);
            let (result, connection) = match connect(free, addrs, timeout) {
                Err(error) => (Err(Failure::Connect(error)), None),
                Ok(mut connection) => {
                    connection.tokens = first;
                    match connection.exchange(request, now, limits, deadline) {
                        Ok((answer, in_step)) => (Ok(answer), in_step.then_some(connection)),
                        Err(failure) => (Err(failure), None),
                    }
                }
            };
            self.hand_on(self.lock(), connection);
            return result;
        }
        let ticket = state.tickets;
        state.tickets += 1;
        let State { bytes, tokens, .. } = &mut *state;
        let expected = Expected::encode(request, *tokens, now, limits, bytes);
        *tokens += expected.tokens();
        let end = bytes.len();
        state.calls.push(Call {
            ticket,
            expected,
            deadline,
            end,
        });
        loop {
            if let Some(answer) = state.answers.remove(&ticket) {
                return answer;
            }
            if state.busy < CONNECTIONS && state.calls.iter().any(|call| call.ticket == ticket) {
                // A connection to spare, and this batch still queued (not
                // in another thread's round): lead.
                return self.lead(state, ticket, addrs, timeout);
            }
            let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())
            else {
                state.abandoned.insert(ticket);
                return Err(Failure::Io(io::ErrorKind::TimedOut.into()));
            };
            state = self
                .turn
                .wait_timeout(state, left)
                .unwrap_or_else(|poison| poison.into_inner())
                .0;
        }
    }

    /// Writes every queued batch in one round and leaves each thread its
    /// answer; returns `ticket`'s.
    fn lead(
        &self,
        mut state: MutexGuard<'_, State>,
        ticket: u64,
        addrs: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        let free = state.take();
        let mut bytes = std::mem::take(&mut state.bytes);
        let mut calls = std::mem::take(&mut state.calls);
        if calls.iter().any(|call| state.abandoned.contains(&call.ticket)) {
            // A thread that stopped waiting before its batch was written:
            // the batch is not written.
            let (queued, mut start) = (std::mem::take(&mut bytes), 0);
            calls.retain(|call| {
                let (from, end) = (start, call.end);
                start = end;
                let live = !state.abandoned.remove(&call.ticket);
                if live {
                    bytes.extend_from_slice(&queued[from..end]);
                }
                live
            });
        }
        drop(state);
        let deadline = calls
            .iter()
            .map(|call| call.deadline)
            .min()
            .unwrap_or_else(Instant::now);
        let (tickets, batches): (Vec<u64>, Vec<Expected>) =
            calls.into_iter().map(|call| (call.ticket, call.expected)).unzip();
        let (answers, connection) = match connect(free, addrs, timeout) {
            Err(error) => {
                let answers = tickets
                    .iter()
                    .map(|_| Err(Failure::Connect(io::Error::new(error.kind(), error.to_string()))))
                    .collect();
                (answers, None)
            }
            Ok(mut connection) => {
                std::mem::swap(&mut connection.output, &mut bytes);
                let (mut answers, failure) = connection.round(batches, deadline);
                let in_step = failure.is_none() && !connection.holds_bytes();
                if let Some(failure) = failure {
                    let cause = format!("{failure:?}");
                    answers.push(Err(failure));
                    while answers.len() < tickets.len() {
                        answers.push(Err(Failure::Io(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            format!("the connection failed on an earlier request ({cause})"),
                        ))));
                    }
                }
                std::mem::swap(&mut connection.output, &mut bytes);
                (answers, in_step.then_some(connection))
            }
        };
        let mut state = self.lock();
        let mut mine = Err(Failure::Garbled("no answer to the batch"));
        for (owner, answer) in tickets.into_iter().zip(answers) {
            if owner == ticket {
                mine = answer;
            } else if !state.abandoned.remove(&owner) {
                state.answers.insert(owner, answer);
            }
        }
        // The queue's buffer goes back, emptied, for its capacity.
        if state.bytes.is_empty() && bytes.capacity() <= 256 * 1024 {
            bytes.clear();
            state.bytes = bytes;
        }
        self.hand_on(state, connection);
        mine
    }

    /// The connection is free again (or gone); the queued threads wake to
    /// take their answers, and one of them leads what queued meanwhile.
    fn hand_on(&self, mut state: MutexGuard<'_, State>, connection: Option<Connection>) {
        state.busy -= 1;
        state.free.extend(connection);
        let waiting = !state.calls.is_empty() || !state.answers.is_empty();
        drop(state);
        if waiting {
            self.turn.notify_all();
        }
    }
}

impl State {
    /// Takes a free connection, if there is one (otherwise the taker
    /// dials one), counting it busy.
    fn take(&mut self) -> Option<Connection> {
        self.busy += 1;
        self.free.pop()
    }
}

/// `free` if it can carry a request, else a new connection.
fn connect(free: Option<Connection>, addrs: &[SocketAddr], timeout: Duration) -> io::Result<Connection> {
    match free {
        Some(connection) if connection.is_reusable() => Ok(connection),
        _ => dial(addrs, timeout),
    }
}
