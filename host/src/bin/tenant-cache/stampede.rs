//! `bench`'s stampede rows: real processes (this binary, started again as
//! a hidden `stampede-worker`) reading the same keys of one tenant at
//! once, each miss "computing" its value for 20 ms, as a database behind
//! the cache would. With leases (`get_or_compute`) and without (a plain
//! cache-aside: get, compute on a miss, set), on the same memcached, in one
//! run.
//!
//! - after a clear: `PROCESSES` × `TASKS` callers read `KEYS` keys of a
//!   tenant just cleared, every caller the keys in the same order;
//! - a hot key expiring: `PROCESSES` × `TASKS` callers read one key whose
//!   entry lives `HOT_TTL` seconds, for `HOT_FOR`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tenant_cache_host::{Backend, Grant, LeaseOptions, Runtime, RuntimeOptions};

/// Processes, tasks in each, keys read, and how long a compute takes.
pub const PROCESSES: usize = 4;
pub const TASKS: usize = 16;
pub const KEYS: usize = 50;
const COMPUTE: Duration = Duration::from_millis(20);

/// The hot key's TTL in seconds, and how long it is read.
const HOT_TTL: u32 = 2;
const HOT_FOR: Duration = Duration::from_millis(4500);

/// What the stampede rows found.
pub struct Stampede {
    /// Mean computes per key after a clear, with and without leases.
    pub computes_per_key: f64,
    pub computes_per_key_without: f64,
    /// The most computes of one key after a clear, with leases.
    pub most_computes: usize,
    /// The 99th percentile of a read (with leases), in milliseconds.
    pub p99_ms: f64,
    /// Computes of the hot key, with and without leases.
    pub hot_computes: usize,
    pub hot_computes_without: usize,
}

/// What one worker reports: how often it computed each key, and how long
/// each of its reads took.
#[derive(Default)]
struct Report {
    computes: BTreeMap<String, usize>,
    latencies_us: Vec<u64>,
}

/// How the workers read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    AfterClear,
    HotKey,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::AfterClear => "after-clear",
            Scenario::HotKey => "hot-key",
        }
    }

    pub fn parse(name: &str) -> anyhow::Result<Scenario> {
        match name {
            "after-clear" => Ok(Scenario::AfterClear),
            "hot-key" => Ok(Scenario::HotKey),
            other => bail!("no stampede scenario {other:?}"),
        }
    }
}

/// The report, locked (a task that panicked while holding it left whole
/// counts behind: each update is one statement).
fn lock(report: &Mutex<Report>) -> std::sync::MutexGuard<'_, Report> {
    report.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The milliseconds since the epoch: the workers' common start.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Runs every stampede row against `server`, in `app`.
pub fn run(server: &str, app: &str, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Stampede> {
    let backend = Backend::memcached(&[server], Default::default())?;
    let mut cache = Runtime::new()?.instantiate(Grant::new(backend, app))?;
    let mut after_clear = Vec::new();
    for leases in [false, true] {
        progress(match leases {
            true => "stampede after a clear, leases",
            false => "stampede after a clear, no leases",
        });
        // A tenant filled once, then cleared just before the readers come.
        let tenant = format!("stampede-{leases}");
        for key in 0..KEYS {
            cache.set(&tenant, &format!("k{key}"), b"before the clear", None)?;
        }
        cache.clear(&tenant)?;
        after_clear.push(workers(server, app, &tenant, Scenario::AfterClear, leases)?);
    }
    let mut hot = Vec::new();
    for leases in [false, true] {
        progress(match leases {
            true => "stampede on an expiring key, leases",
            false => "stampede on an expiring key, no leases",
        });
        hot.push(workers(
            server,
            app,
            &format!("hot-{leases}"),
            Scenario::HotKey,
            leases,
        )?);
    }
    let mean = |report: &Report| report.computes.values().sum::<usize>() as f64 / KEYS as f64;
    let mut latencies = after_clear[1].latencies_us.clone();
    latencies.sort_unstable();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0);
    let total = |report: &Report| report.computes.values().sum::<usize>();
    Ok(Stampede {
        computes_per_key: mean(&after_clear[1]),
        computes_per_key_without: mean(&after_clear[0]),
        most_computes: after_clear[1].computes.values().copied().max().unwrap_or(0),
        p99_ms: p99 as f64 / 1000.0,
        hot_computes: total(&hot[1]),
        hot_computes_without: total(&hot[0]),
    })
}

/// Starts `PROCESSES` workers reading `tenant`, all at one instant, and
/// sums what they report.
fn workers(server: &str, app: &str, tenant: &str, scenario: Scenario, leases: bool) -> anyhow::Result<Report> {
    let exe = std::env::current_exe().context("finding this binary to start the stampede's workers")?;
    // Late enough for every worker to be loaded and connected.
    let start_at = now_ms() + 1500;
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            let mut worker = Command::new(&exe);
            worker
                .args(["--memcached", server, "--app", app, "stampede-worker"])
                .args(["--tenant", tenant, "--scenario", scenario.name()])
                .args(["--start-at-ms", &start_at.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if leases {
                worker.arg("--leases");
            }
            worker.spawn().context("starting a stampede worker")
        })
        .collect::<anyhow::Result<_>>()?;
    let mut sum = Report::default();
    for child in children {
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!("a stampede worker failed ({})", output.status);
        }
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("reading a stampede worker's report")?;
        for (key, count) in report["computes"].as_object().into_iter().flatten() {
            *sum.computes.entry(key.clone()).or_default() += count.as_u64().unwrap_or(0) as usize;
        }
        sum.latencies_us.extend(
            report["latencies_us"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|value| value.as_u64()),
        );
    }
    Ok(sum)
}

/// One worker: `TASKS` tasks on one instance each, from `start_at_ms`;
/// prints its report as one JSON object.
pub fn worker(
    backend: Backend,
    app: &str,
    tenant: &str,
    scenario: Scenario,
    leases: bool,
    start_at_ms: u64,
) -> anyhow::Result<()> {
    let runtime = Runtime::from_bytes(tenant_cache_host::COMPONENT, RuntimeOptions::default())?;
    let report = Arc::new(Mutex::new(Report::default()));
    let threads = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    threads.block_on(async {
        let mut caches = Vec::new();
        for _ in 0..TASKS {
            caches.push(runtime.instantiate_async(Grant::new(backend.clone(), app)).await?);
        }
        let wait = start_at_ms.saturating_sub(now_ms());
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let ends = Instant::now() + HOT_FOR;
        let tasks: Vec<_> = caches
            .into_iter()
            .map(|mut cache| {
                let (report, tenant) = (report.clone(), tenant.to_owned());
                tokio::spawn(async move {
                    let keys: Vec<String> = match scenario {
                        Scenario::AfterClear => (0..KEYS).map(|key| format!("k{key}")).collect(),
                        Scenario::HotKey => vec![String::from("hot")],
                    };
                    let ttl = (scenario == Scenario::HotKey).then_some(HOT_TTL);
                    let options = LeaseOptions::default();
                    loop {
                        for key in &keys {
                            let started = Instant::now();
                            let compute = || async {
                                *lock(&report).computes.entry(key.clone()).or_default() += 1;
                                tokio::time::sleep(COMPUTE).await;
                                Ok::<_, std::convert::Infallible>(format!("value of {key}").into_bytes())
                            };
                            match leases {
                                true => {
                                    cache
                                        .get_or_compute(&tenant, key, ttl, &options, compute)
                                        .await
                                        .map_err(|error| anyhow::anyhow!("{error}"))?;
                                }
                                false => {
                                    if cache.get(&tenant, key).await?.is_none() {
                                        let value = compute().await?;
                                        cache.set(&tenant, key, &value, ttl).await?;
                                    }
                                }
                            }
                            let took = started.elapsed().as_micros() as u64;
                            lock(&report).latencies_us.push(took);
                        }
                        if scenario == Scenario::AfterClear || Instant::now() >= ends {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(())
    })?;
    let report = lock(&report);
    println!(
        "{}",
        serde_json::json!({
            "computes": report.computes,
            "latencies_us": report.latencies_us,
        })
    );
    Ok(())
}
