//! Misbehaving servers written for the tests, in the spirit of mcrouter's
//! mock servers: each listens on a free loopback port and stops when
//! dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// How a fake server treats each connection.
#[derive(Clone)]
pub enum Behaviour {
    /// Accepts, reads, never answers.
    Silent,
    /// Closes every connection at once.
    Slam,
    /// Answers every request chunk with these bytes.
    Reply(&'static [u8]),
    /// Forwards to `upstream`, holding each reply back by `delay` while
    /// `slow` is set.
    SlowProxy {
        /// The real server behind the proxy.
        upstream: String,
        /// How long each reply is held back.
        delay: Duration,
        /// Whether replies are held back right now.
        slow: Arc<AtomicBool>,
    },
    /// Forwards to `upstream`, holding back one request at `gate` until the
    /// gate opens (the request is not sent before) or is cut (the request
    /// is never sent, its connection is closed): a process stalled at a
    /// chosen step while others run, or cut off there.
    Gate {
        /// The real server behind the proxy.
        upstream: String,
        /// Which request to hold.
        gate: Arc<Gate>,
    },
    /// Forwards to `upstream`, passing replies on in pieces of 1 to
    /// `largest` bytes, each its own write: a slow network, where a read
    /// may return any part of a reply.
    Trickle {
        /// The real server behind the proxy.
        upstream: String,
        /// The largest piece written at once.
        largest: usize,
    },
}

/// Where a [`Behaviour::Gate`] proxy holds a request back: the `nth`
/// request (counting from 1, over every connection) holding `pattern`.
pub struct Gate {
    pattern: Vec<u8>,
    nth: usize,
    seen: AtomicUsize,
    reached: AtomicBool,
    open: AtomicBool,
    cut: AtomicBool,
}

impl Gate {
    /// A closed gate for the `nth` request holding `pattern`.
    pub fn new(pattern: &[u8], nth: usize) -> Arc<Gate> {
        Arc::new(Gate {
            pattern: pattern.to_vec(),
            nth,
            seen: AtomicUsize::new(0),
            reached: AtomicBool::new(false),
            open: AtomicBool::new(false),
            cut: AtomicBool::new(false),
        })
    }

    /// Waits until the request is held back, for at most `timeout`;
    /// whether it is.
    pub fn reached(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !self.reached.load(Ordering::SeqCst) {
            if std::time::Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Lets the request (and every later one) through.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Drops the request held back, closing its connection; later ones
    /// pass.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Returns once `request` may go on (true), or must be dropped with its
    /// connection (false).
    fn pass(&self, request: &[u8], stop: &AtomicBool) -> bool {
        let matches = request.windows(self.pattern.len()).any(|window| window == self.pattern);
        if !matches || self.seen.fetch_add(1, Ordering::SeqCst) + 1 != self.nth {
            return true;
        }
        self.reached.store(true, Ordering::SeqCst);
        loop {
            if self.open.load(Ordering::SeqCst) {
                return true;
            }
            if self.cut.load(Ordering::SeqCst) || stop.load(Ordering::Relaxed) {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }
}

/// A fake server on a free loopback port.
pub struct FakeServer {
    address: String,
    stop: Arc<AtomicBool>,
}

impl FakeServer {
    /// Starts a server with `behaviour`.
    pub fn start(behaviour: Behaviour) -> anyhow::Result<FakeServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (behaviour, stopped) = (behaviour.clone(), stopped.clone());
                        thread::spawn(move || serve(client, behaviour, stopped));
                    }
                    Err(error) if error.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
        });
        Ok(FakeServer { address, stop })
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        self.address.clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut client: TcpStream, behaviour: Behaviour, stop: Arc<AtomicBool>) {
    let _ = client.set_nonblocking(false);
    let _ = client.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buffer = [0u8; 64 * 1024];
    match behaviour {
        Behaviour::Slam => drop(client),
        Behaviour::Silent | Behaviour::Reply(_) => {
            while !stop.load(Ordering::Relaxed) {
                match client.read(&mut buffer) {
                    Ok(0) => return,
                    Ok(_) => {
                        if let Behaviour::Reply(reply) = behaviour
                            && client.write_all(reply).is_err()
                        {
                            return;
                        }
                    }
                    Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => return,
                }
            }
        }
        Behaviour::Gate { upstream, gate } => proxy(client, &upstream, stop, Some(gate), |client, reply| {
            client.write_all(reply)
        }),
        Behaviour::SlowProxy { upstream, delay, slow } => proxy(client, &upstream, stop, None, move |client, reply| {
            if slow.load(Ordering::Relaxed) {
                thread::sleep(delay);
            }
            client.write_all(reply)
        }),
        Behaviour::Trickle { upstream, largest } => {
            // A fixed-seed generator: each run trickles the same way.
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            proxy(client, &upstream, stop, None, move |client, mut reply| {
                while !reply.is_empty() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let piece = (1 + (state % largest as u64) as usize).min(reply.len());
                    client.write_all(&reply[..piece])?;
                    reply = &reply[piece..];
                }
                Ok(())
            })
        }
    }
}

/// Forwards requests from `client` to `upstream` as they come (held at
/// `gate`, if any), and passes each chunk of replies to `forward`.
fn proxy(
    mut client: TcpStream,
    upstream: &str,
    stop: Arc<AtomicBool>,
    gate: Option<Arc<Gate>>,
    mut forward: impl FnMut(&mut TcpStream, &[u8]) -> std::io::Result<()> + Send + 'static,
) {
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    let _ = server.set_read_timeout(Some(Duration::from_millis(20)));
    let _ = client.set_nodelay(true);
    let (Ok(mut client_out), Ok(mut server_in)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let stop_replies = stop.clone();
    // Replies: upstream → client.
    thread::spawn(move || {
        let mut chunk = vec![0u8; 64 * 1024];
        while !stop_replies.load(Ordering::Relaxed) {
            match server_in.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    if forward(&mut client_out, &chunk[..n]).is_err() {
                        return;
                    }
                }
                Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    });
    // Requests: client → upstream.
    let mut buffer = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match client.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => {
                if let Some(gate) = &gate
                    && !gate.pass(&buffer[..n], &stop)
                {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    return;
                }
                if server.write_all(&buffer[..n]).is_err() {
                    return;
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}
