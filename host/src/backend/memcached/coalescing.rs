//! Coalescing on the tokio driver: the batches of concurrent calls bound
//! for one server share one connection. A batch with nothing ahead of it
//! is written at once; batches that queue while a write is in flight, or
//! while the tasks already runnable run, go out together in the next
//! write, and their replies, which memcached sends in order, are read
//! together and handed back to each caller. No timer is ever waited on.
//!
//! One task per connection moves its bytes, through the same protocol core
//! as every other exchange. A caller only waits for its answer, so a
//! caller whose future is dropped leaves its replies to be read and
//! discarded: no reply ever goes to another caller, and the connection
//! stays in step. Each batch keeps its own limits; the oldest batch's
//! deadline bounds the connection (replies come in order, so nothing
//! behind it can be answered first).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::blocking::nothing_arrived;
use super::protocol::{Answer, Exchange, Expected, Failure, Input, ReadLimits, Request};
use super::tokio_driver::{connect, current_runtime};

/// A write buffer larger than this is given back once written (a large
/// value passed through).
const KEPT_CAPACITY: usize = 256 * 1024;

/// A server's shared connections: one per tokio runtime (a connection
/// works only on the runtime whose reactor it is registered with).
#[derive(Default)]
pub(crate) struct Shared(Mutex<Vec<(tokio::runtime::Id, Arc<Pipe>)>>);

/// One shared connection, as its callers see it.
struct Pipe {
    queue: Mutex<Queue>,
    /// Wakes the connection's task when a batch queues on an empty queue.
    wake: Notify,
}

/// Batches queued for the next write.
#[derive(Default)]
struct Queue {
    /// Their bytes, in order.
    bytes: Vec<u8>,
    calls: Vec<Call>,
    /// Opaque tokens handed out so far on the connection.
    tokens: u64,
    /// The connection's task ended: batches go to a new connection.
    closed: bool,
}

/// A batch written or to be written, and its caller.
struct Call {
    expected: Expected,
    deadline: Instant,
    answer: oneshot::Sender<Reply>,
}

/// What a caller is answered.
enum Reply {
    Answered(Result<Answer, Failure>),
    /// The connection closed before the batch was written: it may go to
    /// another connection.
    Unsent,
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
        // Once more on a new connection if the one found closed before the
        // batch was written (a server restarted since the last call).
        for _ in 0..2 {
            let pipe = self.pipe(addrs, timeout).map_err(Failure::Connect)?;
            let Some(answer) = pipe.enqueue(request, now, limits, deadline) else {
                continue;
            };
            match tokio::time::timeout_at(deadline, answer).await {
                Err(_) => return Err(Failure::Io(io::ErrorKind::TimedOut.into())),
                Ok(Ok(Reply::Answered(result))) => return result,
                Ok(Ok(Reply::Unsent)) => continue,
                Ok(Err(_)) => return Err(Failure::Io(io::Error::other("the connection's task ended"))),
            }
        }
        Err(Failure::Io(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "the connection closed twice before the request was sent",
        )))
    }

    /// This runtime's open connection, or a new one to `addrs`, connected
    /// by its task: calls made meanwhile queue on it, so concurrent first
    /// calls dial one connection, not one each.
    fn pipe(&self, addrs: &[SocketAddr], timeout: Duration) -> io::Result<Arc<Pipe>> {
        let runtime = current_runtime()?;
        let mut pipes = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some((_, pipe)) = pipes
            .iter()
            .find(|(owner, pipe)| *owner == runtime && !pipe.is_closed())
        {
            return Ok(pipe.clone());
        }
        pipes.retain(|(_, pipe)| !pipe.is_closed());
        let pipe = Arc::new(Pipe {
            queue: Mutex::default(),
            wake: Notify::new(),
        });
        pipes.push((runtime, pipe.clone()));
        tokio::spawn(open(pipe.clone(), addrs.to_vec(), timeout));
        Ok(pipe)
    }
}

/// The task of a shared connection: dials it, then moves its bytes. However
/// it ends, even dropped with its runtime, every batch queued on it is
/// answered and the connection is not used again.
async fn open(pipe: Arc<Pipe>, addrs: Vec<SocketAddr>, timeout: Duration) {
    let _closing = Closing(pipe.clone());
    let stream = match connect(&addrs, timeout).await.and_then(|stream| {
        stream.set_nodelay(true)?;
        Ok(stream)
    }) {
        Ok(stream) => stream,
        Err(error) => {
            // Nothing was sent: the calls waiting for this connection fail
            // as unreachable.
            let message = error.to_string();
            pipe.close(|| Reply::Answered(Err(Failure::Connect(io::Error::new(error.kind(), message.clone())))));
            return;
        }
    };
    Connection::new(pipe, stream).run().await;
}

/// Closes its pipe when dropped: batches still queued go to a new
/// connection.
struct Closing(Arc<Pipe>);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.close(|| Reply::Unsent);
    }
}

impl Pipe {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Takes no more batches, and answers those queued with `reply`.
    fn close(&self, reply: impl Fn() -> Reply) {
        let calls = {
            let mut queue = self.lock();
            queue.closed = true;
            std::mem::take(&mut queue.calls)
        };
        for call in calls {
            let _ = call.answer.send(reply());
        }
    }

    /// Queues `request` for the next write; `None` if the connection
    /// closed.
    fn enqueue(
        &self,
        request: &Request<'_>,
        now: u64,
        limits: ReadLimits,
        deadline: Instant,
    ) -> Option<oneshot::Receiver<Reply>> {
        let (sender, receiver) = oneshot::channel();
        let was_empty = {
            let mut queue = self.lock();
            if queue.closed {
                return None;
            }
            let Queue {
                bytes, calls, tokens, ..
            } = &mut *queue;
            let expected = Expected::encode(request, *tokens, now, limits, bytes);
            *tokens += expected.tokens();
            calls.push(Call {
                expected,
                deadline,
                answer: sender,
            });
            calls.len() == 1
        };
        // The task takes the whole queue whenever it takes it: only a batch
        // queued on an empty queue needs to wake it.
        if was_empty {
            self.wake.notify_one();
        }
        Some(receiver)
    }
}

/// A batch whose replies are being read.
struct Reading {
    exchange: Exchange,
    deadline: Instant,
    answer: oneshot::Sender<Reply>,
}

/// The connection's task: writes what queued, reads replies in order.
/// However it ends, every batch on it is answered (on drop).
struct Connection {
    pipe: Arc<Pipe>,
    stream: TcpStream,
    /// The bytes being written, and how many are out.
    output: Vec<u8>,
    written: usize,
    /// Batches written (or being written) whose replies are not read yet,
    /// after `reading`.
    sent: VecDeque<Call>,
    reading: Option<Reading>,
    /// The read buffer, while no batch is being read.
    input: Input,
}

/// What the task waits for.
enum Event {
    Readable,
    Writable,
    Queued,
    Overdue,
}

impl Connection {
    fn new(pipe: Arc<Pipe>, stream: TcpStream) -> Connection {
        Connection {
            pipe,
            stream,
            output: Vec::with_capacity(4096),
            written: 0,
            sent: VecDeque::new(),
            reading: None,
            input: Input::new(),
        }
    }

    async fn run(mut self) {
        let failure = self.serve().await;
        self.fail(failure);
    }

    /// Moves bytes until the connection fails, and says why.
    async fn serve(&mut self) -> Failure {
        loop {
            let writing = self.written < self.output.len();
            if !writing && let Err(failure) = self.take_queued().await {
                return failure;
            }
            let writing = self.written < self.output.len();
            let deadline = self
                .reading
                .as_ref()
                .map(|reading| reading.deadline)
                .or_else(|| self.sent.front().map(|call| call.deadline));
            let event = {
                let mut queued = pin!(self.pipe.wake.notified());
                let mut overdue = pin!(deadline.map(tokio::time::sleep_until));
                let stream = &self.stream;
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
            let result = match event {
                Err(error) => Err(Failure::Io(error)),
                Ok(Event::Readable) => self.read(),
                Ok(Event::Writable) => self.write(),
                Ok(Event::Queued) => Ok(()),
                Ok(Event::Overdue) => Err(Failure::Io(io::ErrorKind::TimedOut.into())),
            };
            if let Err(failure) = result {
                return failure;
            }
        }
    }

    /// Takes every queued batch into the next write, first letting the
    /// tasks already runnable queue theirs. Before writing to a connection
    /// with nothing in flight, checks that nothing arrived on it (a server
    /// that restarted closed it): the batches then stay queued, unsent.
    async fn take_queued(&mut self) -> Result<(), Failure> {
        if self.pipe.lock().calls.is_empty() {
            return Ok(());
        }
        tokio::task::yield_now().await;
        let idle = self.reading.is_none() && self.sent.is_empty();
        if idle && !nothing_arrived(&self.stream) {
            return Err(Failure::Io(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the idle connection was closed or sent bytes unasked",
            )));
        }
        if self.output.capacity() > KEPT_CAPACITY {
            self.output = Vec::with_capacity(4096);
        }
        self.output.clear();
        self.written = 0;
        let mut queue = self.pipe.lock();
        std::mem::swap(&mut self.output, &mut queue.bytes);
        self.sent.extend(queue.calls.drain(..));
        Ok(())
    }

    fn write(&mut self) -> Result<(), Failure> {
        match self.stream.try_write(&self.output[self.written..]) {
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
            let Some(reading) = self.reading.as_mut() else {
                return self.nothing_unasked();
            };
            match self.stream.try_read(reading.exchange.buffer()) {
                Ok(0) => return Err(Failure::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(read) => reading.exchange.received(read)?,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) => return Err(Failure::Io(error)),
            }
        }
    }

    /// With no batch to read: anything that arrived (bytes, or the end of
    /// the stream when a server restarts) ends the connection.
    fn nothing_unasked(&self) -> Result<(), Failure> {
        match self.stream.try_read(&mut [0u8; 1]) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(error) => Err(Failure::Io(error)),
            Ok(_) => Err(Failure::Io(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the connection was closed or sent bytes unasked",
            ))),
        }
    }

    /// Answers every batch whose replies are complete, and starts reading
    /// the next.
    fn answer_completed(&mut self) -> Result<(), Failure> {
        loop {
            if let Some(reading) = &self.reading {
                if !reading.exchange.is_done() {
                    return Ok(());
                }
                let Reading { exchange, answer, .. } = self.reading.take().expect("checked above");
                let (result, input) = exchange.finish();
                self.input = input;
                // A caller that stopped waiting drops its answer here.
                let _ = answer.send(Reply::Answered(result));
            }
            let Some(call) = self.sent.pop_front() else {
                if self.input.holds_bytes() {
                    return Err(Failure::Garbled("bytes beyond the replies of every batch sent"));
                }
                return Ok(());
            };
            let mut exchange = Exchange::reading(call.expected, std::mem::take(&mut self.input));
            // What arrived with the earlier batch's replies.
            let parsed = exchange.received(0);
            self.reading = Some(Reading {
                exchange,
                deadline: call.deadline,
                answer: call.answer,
            });
            parsed?;
        }
    }

    /// Ends the connection: the batch being read fails with `failure`, and
    /// the others written with it fail as it did. (Batches still queued go
    /// to a new connection: see [`Closing`].)
    fn fail(&mut self, failure: Failure) {
        let cause = format!("{failure:?}");
        if let Some(reading) = self.reading.take() {
            let _ = reading.answer.send(Reply::Answered(Err(failure)));
        } else if let Some(call) = self.sent.pop_front() {
            let _ = call.answer.send(Reply::Answered(Err(failure)));
        }
        for call in self.sent.drain(..) {
            let error = io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("the connection failed on an earlier request ({cause})"),
            );
            let _ = call.answer.send(Reply::Answered(Err(Failure::Io(error))));
        }
    }
}

impl Drop for Connection {
    /// A task dropped with its runtime still answers every batch written.
    fn drop(&mut self) {
        self.fail(Failure::Io(io::Error::other("the runtime shut down")));
    }
}
