//! `bench`'s async get throughput: raw single gets (each on a connection
//! of its own for its exchange, and coalesced on a shared one), raw
//! batches of the commands a tenant-cache get sends, and tenant-cache
//! gets, on many tasks of two executor threads; and `async-load`, one such
//! run alone, for a profiler or a CPU clock to watch.

use std::time::{Duration, Instant};

use anyhow::Context;
use tenant_cache_host::{Backend, Grant, MemcachedOptions, Runtime};

use crate::raw::{raw_get_async, raw_get_async_alone, raw_get_batch_async, raw_set};

/// Concurrent tasks in the async throughput runs.
pub const ASYNC_TASKS: [usize; 4] = [1, 16, 64, 256];

/// Async get throughput at some number of tasks: raw single gets, each on
/// a connection of its own for its exchange and coalesced on a shared one,
/// raw batches of the commands a tenant-cache get sends, and tenant-cache
/// gets.
pub struct AsyncRate {
    pub tasks: usize,
    pub raw: f64,
    pub raw_coalesced: f64,
    pub raw4: f64,
    pub component: f64,
}

/// What the async throughput runs call.
#[derive(Clone, Copy)]
enum AsyncCalls<'a> {
    /// `mg KEY v`, on a connection of its own for the exchange.
    Raw(&'a str),
    /// `mg KEY v`, coalesced on the shared connection.
    RawCoalesced(&'a str),
    /// One batch of `mg KEY v` per key.
    RawBatch(&'a [String]),
    /// A tenant-cache get, on an instance per task.
    Component(&'a Runtime, &'a Grant),
}

/// Runs `per_task` calls on each of `tasks` tasks of `workers`, each with
/// its own instance (made before the clock starts) for tenant-cache gets;
/// returns the time from the first call to the last.
fn async_throughput(
    workers: &tokio::runtime::Runtime,
    tasks: usize,
    per_task: usize,
    backend: &Backend,
    calls: AsyncCalls<'_>,
) -> anyhow::Result<Duration> {
    workers.block_on(async {
        let mut instances = Vec::new();
        if let AsyncCalls::Component(runtime, grant) = calls {
            for _ in 0..tasks {
                let mut instance = runtime.instantiate_async(grant.clone()).await?;
                // A fresh instance's first call touches memory no call has
                // yet: warmed before the clock, as raw connections are.
                instance.get("bench", "/k").await?;
                instances.push(Some(instance));
            }
        } else {
            instances.resize_with(tasks, || None);
        }
        let coalesced = matches!(calls, AsyncCalls::RawCoalesced(_));
        let (raw_key, batch) = match calls {
            AsyncCalls::Raw(key) | AsyncCalls::RawCoalesced(key) => (key.to_owned(), Vec::new()),
            AsyncCalls::RawBatch(keys) => (String::new(), keys.to_vec()),
            AsyncCalls::Component(..) => (String::new(), Vec::new()),
        };
        let started = Instant::now();
        let handles: Vec<_> = instances
            .into_iter()
            .map(|instance| {
                let (backend, raw_key, batch) = (backend.clone(), raw_key.clone(), batch.clone());
                tokio::spawn(async move {
                    match instance {
                        Some(mut cache) => {
                            for _ in 0..per_task {
                                cache.get("bench", "/k").await?;
                            }
                        }
                        None if coalesced => {
                            for _ in 0..per_task {
                                raw_get_async(&backend, &raw_key).await?;
                            }
                        }
                        None if batch.is_empty() => {
                            for _ in 0..per_task {
                                raw_get_async_alone(&backend, &raw_key).await?;
                            }
                        }
                        None => {
                            for _ in 0..per_task {
                                raw_get_batch_async(&backend, &batch).await?;
                            }
                        }
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle.await??;
        }
        Ok(started.elapsed())
    })
}

/// What a tenant-cache get reads, raw, next to `raw_key` (the entry): two
/// 16-byte version records, the entry, and the pool record (the check every
/// batch ends with). The version records are written now, for an hour.
pub fn raw_get4_keys(backend: &Backend, raw_key: &str) -> anyhow::Result<[String; 4]> {
    let keys = [
        format!("{raw_key}:a"),
        format!("{raw_key}:t"),
        raw_key.to_owned(),
        String::from("tc:pool"),
    ];
    for key in &keys[..2] {
        raw_set(backend, key, b"0123456789abcdef", Some(3600))?;
    }
    Ok(keys)
}

/// Two executor threads: the machine's cores, shared with memcached.
fn workers() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The async throughputs at every number of [`ASYNC_TASKS`]: about `calls`
/// calls of each kind per round, `rounds` rounds alternating between the
/// kinds so a slow moment weighs on all. One runtime for every run: raw
/// and tenant-cache draw from the same connections.
pub fn measure(
    backend: &Backend,
    (runtime, grant): (&Runtime, &Grant),
    (raw_key, get4_keys): (&str, &[String]),
    calls: usize,
    rounds: usize,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<AsyncRate>> {
    let workers = workers()?;
    let mut rates = Vec::new();
    for tasks in ASYNC_TASKS {
        progress(&format!("async throughput, {tasks} tasks"));
        // At least 50 calls a task: a task's first calls wait for the
        // others to start, which a short run would measure instead.
        let per_task = calls.div_ceil(tasks).max(50);
        let (mut raw, mut raw_coalesced) = (Duration::ZERO, Duration::ZERO);
        let (mut raw4, mut component) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..rounds {
            let run = |calls| async_throughput(&workers, tasks, per_task, backend, calls);
            raw += run(AsyncCalls::Raw(raw_key))?;
            raw_coalesced += run(AsyncCalls::RawCoalesced(raw_key))?;
            raw4 += run(AsyncCalls::RawBatch(get4_keys))?;
            component += run(AsyncCalls::Component(runtime, grant))?;
        }
        let calls = (tasks * per_task * rounds) as f64;
        rates.push(AsyncRate {
            tasks,
            raw: calls / raw.as_secs_f64(),
            raw_coalesced: calls / raw_coalesced.as_secs_f64(),
            raw4: calls / raw4.as_secs_f64(),
            component: calls / component.as_secs_f64(),
        });
    }
    Ok(rates)
}

/// `tenant-cache async-load`: one async throughput run (`calls`:
/// `tenant-cache`, `raw`, `raw-coalesced` or `raw4`) on two worker threads,
/// printed as calls per second.
pub fn load(
    servers: &[String],
    options: MemcachedOptions,
    calls: &str,
    tasks: usize,
    per_task: usize,
) -> anyhow::Result<()> {
    let server = servers.first().context("async-load needs --memcached HOST:PORT")?;
    let backend = Backend::memcached(std::slice::from_ref(server), options)?;
    let run_id: u64 = rand::random();
    let raw_key = format!("tc-bench:{run_id:x}:raw");
    raw_set(&backend, &raw_key, &[b'v'; 117], Some(3600))?;
    let get4_keys = raw_get4_keys(&backend, &raw_key)?;
    let runtime = crate::pooled::pooled_runtime()?;
    let grant = Grant::new(backend.clone(), &format!("tenant-cache-bench-{run_id:x}"));
    runtime
        .instantiate(grant.clone())?
        .set("bench", "/k", &[b'v'; 100], Some(3600))?;
    let workers = workers()?;
    let kind = match calls {
        "tenant-cache" => AsyncCalls::Component(&runtime, &grant),
        "raw" => AsyncCalls::Raw(&raw_key),
        "raw-coalesced" => AsyncCalls::RawCoalesced(&raw_key),
        "raw4" => AsyncCalls::RawBatch(&get4_keys),
        other => anyhow::bail!("--calls is tenant-cache, raw, raw-coalesced or raw4, not {other:?}"),
    };
    let took = async_throughput(&workers, tasks, per_task, &backend, kind)?;
    println!("{:.0} calls/s", (tasks * per_task) as f64 / took.as_secs_f64());
    Ok(())
}
