//! Coalescing on the tokio driver: the async batches bound for one server
//! share one connection per runtime.
//!
//! - A batch that finds the connection free takes it and runs its own
//!   exchange on it, as if it were alone: no task, no hand-over, the
//!   latency of a plain client.
//! - Batches that come while the connection is taken queue. When the
//!   holder is done, a task takes the connection and writes every queued
//!   batch in one write; what queues while that write or the tasks already
//!   runnable run goes in the next. Replies, which memcached sends in
//!   order, are read together and handed to each caller. When nothing is
//!   left in flight, the task leaves the connection free again. No timer is
//!   ever waited on.
//!
//! Every exchange goes through the one protocol core. A caller waiting in
//! the queue only waits for its answer: if its future is dropped, its
//! replies are read and discarded, and no reply ever goes to another
//! caller. A caller dropped while it holds the connection drops the
//! connection (its stream is out of step), and the queue goes to a new
//! one. Each batch keeps its own limits and its caller its own deadline;
//! the task closes the connection if nothing arrives on it for the
//! timeout while batches are in flight (a server that stopped answering),
//! not when one batch is late: replies come in order, and a slow but
//! moving stream still answers those behind it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::tokio_driver::{Connection, current_runtime, dial};
use tenant_cache_memcached::protocol::{Answer, Exchange, Expected, Failure, ReadLimits, Request};

/// A write buffer larger than this is given back once written (a large
/// value passed through).
const KEPT_CAPACITY: usize = 256 * 1024;

/// Runtimes a server keeps a connection for; past that, the oldest that no
/// call is using is closed (a host that makes and drops runtimes would
/// otherwise keep a connection per runtime it ever had).
const MAX_PIPES: usize = 64;

/// A server's shared connections: one per tokio runtime (a connection
/// works only on the runtime whose reactor it is registered with).
#[derive(Default)]
pub(crate) struct Shared(Mutex<Vec<(tokio::runtime::Id, Arc<Pipe>)>>);

/// One runtime's shared connection to a server, and its queue.
struct Pipe {
    addrs: Vec<SocketAddr>,
    timeout: Duration,
    state: Mutex<State>,
    /// Wakes the task when a batch queues on an empty queue.
    wake: Notify,
}

/// Who has the connection.
enum Holder {
    /// No one, and there is no connection.
    Nobody,
    /// No one: it is free.
    Free(Connection),
    /// A caller running its own exchange (or dialing).
    Caller,
    /// The task writing the queue and reading its replies (or dialing).
    Task,
}

struct State {
    holder: Holder,
    /// Batches queued for the next write: their bytes, in order, and
    /// their callers. Never any while the holder is `Nobody` or `Free`.
    bytes: Vec<u8>,
    calls: Vec<Call>,
    /// Opaque tokens handed out so far on the pipe: each batch's replies
    /// echo tokens of their own, so a reply can never pass for another
    /// batch's.
    tokens: u64,
}

/// A batch queued or written, and its caller.
struct Call {
    expected: Expected,
    answer: oneshot::Sender<Result<Answer, Failure>>,
    /// Where its bytes end in the queue's.
    end: usize,
}

/// What a caller does with its batch.
enum Turn {
    /// Runs its exchange on the connection (or on a new one, if `None`),
    /// with tokens from the one given on.
    Hold(Option<Connection>, u64),
    /// Waits for the answer to its queued batch.
    Wait(oneshot::Receiver<Result<Answer, Failure>>),
}

impl Shared {
    /// Runs `request` on this server's shared connection, by `deadline`.
    pub(crate) async fn exchange(
        &self,
        addrs: &[SocketAddr],
        timeout: Duration,
        request: &Request<'_>,
        now: u64,
        limits: ReadLimits,
        deadline: Instant,
    ) -> Result<Answer, Failure> {
        let pipe = self.pipe(addrs, timeout).map_err(Failure::Connect)?;
        let (free, tokens) = match pipe.turn(request, now, limits) {
            Turn::Wait(answer) => {
                return match tokio::time::timeout_at(deadline, answer).await {
                    Err(_) => Err(Failure::Io(io::ErrorKind::TimedOut.into())),
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => Err(Failure::Io(io::Error::other("the connection's task ended"))),
                };
            }
            Turn::Hold(free, tokens) => (free, tokens),
        };
        // Hands the connection on however this ends: back, in step, only
        // once the exchange read every reply.
        let mut hold = Held { pipe, connection: None };
        let mut connection = match free {
            Some(connection) if connection.is_reusable() => connection,
            _ => dial(addrs, timeout).await.map_err(Failure::Connect)?,
        };
        connection.tokens = tokens;
        let (answer, in_step) = connection.exchange(request, now, limits, deadline).await?;
        if in_step {
            hold.connection = Some(connection);
        }
        Ok(answer)
    }

    /// This runtime's pipe to the server.
    fn pipe(&self, addrs: &[SocketAddr], timeout: Duration) -> io::Result<Arc<Pipe>> {
        let runtime = current_runtime()?;
        let mut pipes = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some((_, pipe)) = pipes.iter().find(|(owner, _)| *owner == runtime) {
            return Ok(pipe.clone());
        }
        // Pipes without a connection go; past the bound, the oldest free
        // one too (a dropped runtime's, most likely).
        pipes.retain(|(_, pipe)| !matches!(pipe.lock().holder, Holder::Nobody));
        if pipes.len() >= MAX_PIPES
            && let Some(oldest) = pipes
                .iter()
                .position(|(_, pipe)| matches!(pipe.lock().holder, Holder::Free(_)))
        {
            let (_, evicted) = pipes.remove(oldest);
            // Its connection closes here, unless a call took it meanwhile.
            let mut state = evicted.lock();
            if matches!(state.holder, Holder::Free(_)) {
                state.holder = Holder::Nobody;
            }
        }
        let pipe = Arc::new(Pipe {
            addrs: addrs.to_vec(),
            timeout,
            state: Mutex::new(State {
                holder: Holder::Nobody,
                bytes: Vec::new(),
                calls: Vec::new(),
                tokens: 0,
            }),
            wake: Notify::new(),
        });
        pipes.push((runtime, pipe.clone()));
        Ok(pipe)
    }
}

/// A caller's hold on the connection; handed on when dropped.
struct Held {
    pipe: Arc<Pipe>,
    /// The connection, once its exchange read every reply.
    connection: Option<Connection>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.pipe.hand_on(self.connection.take());
    }
}

impl Pipe {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Takes the connection if no one has it and nothing is queued, or
    /// queues `request`.
    fn turn(&self, request: &Request<'_>, now: u64, limits: ReadLimits) -> Turn {
        let mut state = self.lock();
        let first = state.tokens;
        match std::mem::replace(&mut state.holder, Holder::Caller) {
            Holder::Free(connection) => {
                state.tokens += request.tokens();
                return Turn::Hold(Some(connection), first);
            }
            Holder::Nobody => {
                state.tokens += request.tokens();
                return Turn::Hold(None, first);
            }
            holder => state.holder = holder,
        }
        let (sender, receiver) = oneshot::channel();
        let State { bytes, tokens, .. } = &mut *state;
        let expected = Expected::encode(request, first, now, limits, bytes);
        *tokens += expected.tokens();
        let end = bytes.len();
        state.calls.push(Call {
            expected,
            answer: sender,
            end,
        });
        // The task takes the whole queue whenever it takes it: only a batch
        // queued on an empty queue needs to wake it.
        let wake = state.calls.len() == 1 && matches!(state.holder, Holder::Task);
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        Turn::Wait(receiver)
    }

    /// A caller is done with the connection (`None`: it is gone): it is
    /// free again, or the task takes it for what queued meanwhile.
    fn hand_on(self: &Arc<Pipe>, connection: Option<Connection>) {
        let mut state = self.lock();
        if state.calls.is_empty() {
            state.holder = match connection {
                Some(connection) => Holder::Free(connection),
                None => Holder::Nobody,
            };
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                state.holder = Holder::Task;
                drop(state);
                runtime.spawn(serve(self.clone(), connection));
            }
            Err(_) => {
                // Dropped outside of its runtime (which is shutting down).
                state.holder = Holder::Nobody;
                let calls = std::mem::take(&mut state.calls);
                state.bytes.clear();
                drop(state);
                answer_all(calls, || io::Error::other("the runtime shut down"));
            }
        }
    }

    /// Ends the task's hold: the connection is free, or gone; batches
    /// still queued (never written) fail with `error`.
    fn release(&self, connection: Option<Connection>, error: impl Fn() -> io::Error) {
        let calls = {
            let mut state = self.lock();
            state.holder = match connection {
                Some(connection) => Holder::Free(connection),
                None => Holder::Nobody,
            };
            state.bytes.clear();
            std::mem::take(&mut state.calls)
        };
        answer_all(calls, error);
    }
}

/// Fails every one of `calls` with `error`.
fn answer_all(calls: impl IntoIterator<Item = Call>, error: impl Fn() -> io::Error) {
    for call in calls {
        let _ = call.answer.send(Err(Failure::Io(error())));
    }
}

/// The task: serves the queue on `connection` (or a new one) until
/// nothing is left in flight, dialing again while batches wait.
async fn serve(pipe: Arc<Pipe>, mut connection: Option<Connection>) {
    loop {
        let free = match connection.take() {
            Some(connection) => connection,
            None => match dial(&pipe.addrs, pipe.timeout).await {
                Ok(connection) => connection,
                Err(error) => {
                    // Nothing was sent: the waiting batches fail as
                    // unreachable.
                    let calls = std::mem::take(&mut pipe.lock().calls);
                    for call in calls {
                        let failure = Failure::Connect(io::Error::new(error.kind(), error.to_string()));
                        let _ = call.answer.send(Err(failure));
                    }
                    pipe.release(None, || io::Error::other("unreachable"));
                    return;
                }
            },
        };
        let mut task = Task::new(pipe.clone(), free);
        match task.run().await {
            Ok(()) => return,
            Err(failure) => {
                task.fail(failure);
                let mut state = pipe.lock();
                if state.calls.is_empty() {
                    state.holder = Holder::Nobody;
                    return;
                }
                // Batches queued after the failure were never written: a
                // new connection for them.
            }
        }
    }
}

/// A batch whose replies are being read.
struct Reading {
    exchange: Exchange,
    answer: oneshot::Sender<Result<Answer, Failure>>,
}

/// The task's hold on the connection: writes what queued, reads replies
/// in order. However it ends, even dropped with its runtime, every batch
/// written on it is answered.
struct Task {
    pipe: Arc<Pipe>,
    /// `None` once handed back.
    connection: Option<Connection>,
    /// How many bytes of the connection's output are written.
    written: usize,
    /// When bytes last arrived, or batches were sent with none in flight.
    progress: Instant,
    /// Batches written (or being written) whose replies are not read yet,
    /// after `reading`.
    sent: VecDeque<Call>,
    reading: Option<Reading>,
}

/// What the task waits for.
enum Event {
    Readable,
    Writable,
    Queued,
    Overdue,
}

impl Task {
    fn new(pipe: Arc<Pipe>, mut connection: Connection) -> Task {
        connection.output.clear();
        Task {
            pipe,
            connection: Some(connection),
            written: 0,
            progress: Instant::now(),
            sent: VecDeque::new(),
            reading: None,
        }
    }

    fn connection(&mut self) -> &mut Connection {
        self.connection
            .as_mut()
            .expect("the task holds its connection until it ends")
    }

    /// Moves bytes until nothing is in flight (the connection is then
    /// free again), or the connection fails.
    async fn run(&mut self) -> Result<(), Failure> {
        loop {
            let writing = self.written < self.connection().output.len();
            if !writing {
                self.take_queued().await;
                if self.connection.is_none() {
                    return Ok(());
                }
            }
            let writing = self.written < self.connection().output.len();
            let in_flight = self.reading.is_some() || !self.sent.is_empty();
            let deadline = in_flight.then(|| self.progress + self.pipe.timeout);
            let event = {
                let mut queued = pin!(self.pipe.wake.notified());
                let mut overdue = pin!(deadline.map(tokio::time::sleep_until));
                let stream = &self.connection.as_ref().expect("held").stream;
                poll_fn(|context| {
                    if let Poll::Ready(ready) = stream.poll_read_ready(context) {
                        return Poll::Ready(ready.map(|()| Event::Readable));
                    }
                    if writing && let Poll::Ready(ready) = stream.poll_write_ready(context) {
                        return Poll::Ready(ready.map(|()| Event::Writable));
                    }
                    if !writing && queued.as_mut().poll(context).is_ready() {
                        return Poll::Ready(Ok(Event::Queued));
                    }
                    if let Some(sleep) = overdue.as_mut().as_pin_mut()
                        && sleep.poll(context).is_ready()
                    {
                        return Poll::Ready(Ok(Event::Overdue));
                    }
                    Poll::Pending
                })
                .await
            };
            match event.map_err(Failure::Io)? {
                Event::Readable => self.read()?,
                Event::Writable => self.write()?,
                Event::Queued => {}
                Event::Overdue => return Err(Failure::Io(io::ErrorKind::TimedOut.into())),
            }
        }
    }

    /// Takes every queued batch into the next write, first letting the
    /// tasks already runnable queue theirs; with nothing queued and nothing
    /// in flight, frees the connection.
    async fn take_queued(&mut self) {
        if !self.pipe.lock().calls.is_empty() {
            tokio::task::yield_now().await;
        }
        let connection = self.connection.as_mut().expect("held");
        if connection.output.capacity() > KEPT_CAPACITY {
            connection.output = Vec::with_capacity(4096);
        }
        connection.output.clear();
        self.written = 0;
        let mut state = self.pipe.lock();
        let calls = std::mem::take(&mut state.calls);
        if self.reading.is_none() && self.sent.is_empty() {
            self.progress = Instant::now();
        }
        if calls.iter().all(|call| !call.answer.is_closed()) {
            std::mem::swap(&mut connection.output, &mut state.bytes);
            self.sent.extend(calls);
        } else {
            // A caller that stopped waiting before its batch was written:
            // the batch is not written (a flood of abandoned calls would
            // otherwise hold up the connection for the others).
            let mut start = 0;
            for call in calls {
                let end = call.end;
                if !call.answer.is_closed() {
                    connection.output.extend_from_slice(&state.bytes[start..end]);
                    self.sent.push_back(call);
                }
                start = end;
            }
            state.bytes.clear();
        }
        if connection.output.is_empty() && self.reading.is_none() && self.sent.is_empty() {
            state.holder = Holder::Free(self.connection.take().expect("held"));
        }
    }

    fn write(&mut self) -> Result<(), Failure> {
        let written = self.written;
        let connection = self.connection();
        match connection.stream.try_write(&connection.output[written..]) {
            Ok(0) => Err(Failure::Io(io::ErrorKind::WriteZero.into())),
            Ok(sent) => {
                self.written += sent;
                Ok(())
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(error) => Err(Failure::Io(error)),
        }
    }

    /// Reads what arrived into the batches being read, answering each as
    /// its replies complete.
    fn read(&mut self) -> Result<(), Failure> {
        loop {
            self.answer_completed()?;
            let connection = self.connection.as_mut().expect("held");
            let Some(reading) = self.reading.as_mut() else {
                // Nothing to read: anything that arrived (bytes, or the
                // end of the stream) ends the connection.
                return match connection.stream.try_read(&mut [0u8; 1]) {
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
                    Err(error) => Err(Failure::Io(error)),
                    Ok(_) => Err(Failure::Io(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "the connection was closed or sent bytes unasked",
                    ))),
                };
            };
            match connection.stream.try_read(reading.exchange.buffer()) {
                Ok(0) => return Err(Failure::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(read) => {
                    self.progress = Instant::now();
                    reading.exchange.received(read)?;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) => return Err(Failure::Io(error)),
            }
        }
    }

    /// Answers every batch whose replies are complete, and starts reading
    /// the next one written.
    fn answer_completed(&mut self) -> Result<(), Failure> {
        loop {
            if let Some(reading) = &self.reading {
                if !reading.exchange.is_done() {
                    return Ok(());
                }
                let Reading { exchange, answer, .. } = self.reading.take().expect("checked above");
                let (result, input) = exchange.finish();
                self.connection().input = input;
                // A caller that stopped waiting drops its answer here.
                let _ = answer.send(result);
            }
            let Some(call) = self.sent.pop_front() else {
                if self.connection().input.holds_bytes() {
                    return Err(Failure::Garbled("bytes beyond the replies of every batch sent"));
                }
                return Ok(());
            };
            let input = std::mem::take(&mut self.connection().input);
            let mut exchange = Exchange::reading(call.expected, input);
            // What arrived with the earlier batch's replies.
            let parsed = exchange.received(0);
            self.reading = Some(Reading {
                exchange,
                answer: call.answer,
            });
            parsed?;
        }
    }

    /// Ends the connection: the batch being read fails with `failure`, and
    /// the others written with it fail as it did.
    fn fail(&mut self, failure: Failure) {
        self.connection = None;
        let cause = format!("{failure:?}");
        if let Some(reading) = self.reading.take() {
            let _ = reading.answer.send(Err(failure));
        } else if let Some(call) = self.sent.pop_front() {
            let _ = call.answer.send(Err(failure));
        }
        answer_all(self.sent.drain(..), || {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("the connection failed on an earlier request ({cause})"),
            )
        });
    }
}

impl Drop for Task {
    /// Dropped with its runtime mid-way: every batch written or queued is
    /// answered, and the pipe has no connection.
    fn drop(&mut self) {
        if self.connection.is_some() {
            self.fail(Failure::Io(io::Error::other("the runtime shut down")));
            self.pipe.release(None, || io::Error::other("the runtime shut down"));
        }
    }
}
