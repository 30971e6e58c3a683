//! memcached processes started (and stopped) by the tests themselves, on
//! free loopback ports.
#![deny(missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A memcached process on a free loopback port, killed when dropped.
pub struct MemcachedProcess {
    port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

impl MemcachedProcess {
    /// Starts memcached on a free port with its defaults (64 MiB, `-I 1m`).
    pub fn start() -> anyhow::Result<MemcachedProcess> {
        MemcachedProcess::start_with(&[])
    }

    /// Starts memcached with extra command-line arguments.
    pub fn start_with(extra: &[&str]) -> anyhow::Result<MemcachedProcess> {
        let extra: Vec<String> = extra.iter().map(|arg| arg.to_string()).collect();
        let mut last_error = None;
        // A port found free can be taken before memcached binds it: retry.
        for _ in 0..10 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut server = MemcachedProcess {
                port,
                extra: extra.clone(),
                child: None,
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no free port")))
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let port = self.port.to_string();
        let mut child = Command::new("memcached")
            // `-u root` is required when running as root and ignored otherwise.
            .args(["-u", "root", "-U", "0", "-l", "127.0.0.1", "-p", &port])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting memcached (is it installed? the test script installs it)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                bail!("memcached exited at start on port {port}: {status}");
            }
            // Something answers on the port: it must be this child, not a
            // server another test started on the same port first (then
            // this child fails to bind and exits).
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                if self.pid_on_port()? == Some(child.id()) {
                    self.child = Some(child);
                    return Ok(());
                }
                let _ = child.kill();
                let _ = child.wait();
                bail!("port {port} was taken by another memcached");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        bail!("memcached did not listen on port {port} within 10 s")
    }

    /// The pid of the memcached answering on this port (from `stats`).
    fn pid_on_port(&self) -> anyhow::Result<Option<u32>> {
        let stats = self.raw("stats\r\n")?;
        Ok(stats
            .lines()
            .find_map(|line| line.strip_prefix("STAT pid "))
            .and_then(|pid| pid.trim().parse().ok()))
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the process (all data is lost).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process and starts a new one, empty, on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() > deadline => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process. `STOP` and
    /// `CONT` return once every thread of it is stopped, or none is: `kill`
    /// returns before a busy machine gets round to stopping them, and a
    /// test that froze the server must not be served by it.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.as_ref().context("memcached is not running")?.id();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        let stopped = match signal {
            "STOP" => true,
            "CONT" => false,
            _ => return Ok(()),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while threads_stopped(pid)? != stopped {
            anyhow::ensure!(
                Instant::now() < deadline,
                "memcached {pid} did not take SIG{signal} within 5 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// One of memcached's `stats` counters (`total_connections`,
    /// `curr_connections`, `cmd_get`, ...).
    pub fn stat(&self, name: &str) -> anyhow::Result<u64> {
        let stats = self.raw("stats\r\n")?;
        let value = stats
            .lines()
            .find_map(|line| line.strip_prefix("STAT ")?.strip_prefix(name)?.strip_prefix(' '))
            .with_context(|| format!("no {name} in memcached's stats"))?;
        Ok(value.trim().parse()?)
    }

    /// Sends one classic text-protocol command behind the component's back
    /// and returns the reply, up to its terminating line.
    pub fn raw(&self, command: &str) -> anyhow::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(command.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(reply);
            }
            reply.push_str(&line);
            let end = line.trim_end();
            let terminal = matches!(
                end,
                "STORED" | "NOT_STORED" | "EXISTS" | "NOT_FOUND" | "DELETED" | "END" | "OK" | "ERROR"
            ) || end.starts_with("CLIENT_ERROR")
                || end.starts_with("SERVER_ERROR");
            if terminal {
                return Ok(reply);
            }
        }
    }

    /// Stores a raw item behind the component's back.
    pub fn raw_set(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let reply = self.raw(&format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()))?;
        anyhow::ensure!(reply == "STORED\r\n", "raw set of {key} answered {reply:?}");
        Ok(())
    }

    /// Reads a raw item behind the component's back.
    pub fn raw_get(&self, key: &str) -> anyhow::Result<Option<String>> {
        let reply = self.raw(&format!("get {key}\r\n"))?;
        Ok(reply
            .lines()
            .nth(1)
            .filter(|_| reply.starts_with("VALUE "))
            .map(str::to_owned))
    }

    /// Reads a raw item's bytes behind the component's back (entries are
    /// binary frames, which [`raw_get`](Self::raw_get) cannot show).
    pub fn raw_get_bytes(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        use std::io::Read;
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(format!("get {key}\r\n").as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header == "END\r\n" {
            return Ok(None);
        }
        let len: usize = header
            .split_whitespace()
            .nth(3)
            .and_then(|len| len.parse().ok())
            .with_context(|| format!("raw get of {key} answered {header:?}"))?;
        let mut value = vec![0; len + 7];
        reader.read_exact(&mut value)?;
        anyhow::ensure!(value.ends_with(b"\r\nEND\r\n"), "raw get of {key} ended oddly");
        value.truncate(len);
        Ok(Some(value))
    }

    /// Deletes an item behind the component's back; true if it existed.
    pub fn raw_delete(&self, key: &str) -> anyhow::Result<bool> {
        Ok(self.raw(&format!("delete {key}\r\n"))? == "DELETED\r\n")
    }

    /// Every key the server holds (from `lru_crawler metadump all`). The
    /// crawler skips items the LRU maintainer is moving at that moment, so
    /// one dump can miss a key just written: dumps are repeated until one
    /// adds nothing to what the others found.
    pub fn keys(&self) -> anyhow::Result<Vec<String>> {
        let mut keys = self.dump_keys()?;
        for _ in 0..10 {
            let before = keys.len();
            for key in self.dump_keys()? {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            if keys.len() == before {
                break;
            }
        }
        Ok(keys)
    }

    fn dump_keys(&self) -> anyhow::Result<Vec<String>> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"lru_crawler metadump all\r\n")?;
        let mut keys = Vec::new();
        for line in BufReader::new(stream).lines() {
            let line = line?;
            if line == "END" {
                break;
            }
            if let Some(rest) = line.strip_prefix("key=") {
                keys.push(url_decode(rest.split(' ').next().unwrap_or_default()));
            } else if line.starts_with("BUSY") || line.starts_with("ERROR") {
                bail!("metadump refused: {line}");
            }
        }
        Ok(keys)
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in
/// `/proc/<pid>/task/*/stat`).
fn threads_stopped(pid: u32) -> anyhow::Result<bool> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        let state = stat
            .rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().next());
        if state != Some("T") && state != Some("t") {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A key as `metadump` prints it: URL-encoded.
fn url_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

impl Drop for MemcachedProcess {
    fn drop(&mut self) {
        // A stopped process must be resumed to die cleanly.
        let _ = self.signal("CONT");
        self.kill();
    }
}
