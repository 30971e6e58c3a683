//! `tenant-cache noisy-neighbour`: what one tenant writing without end
//! does to every other tenant's hit ratio on one memcached, without a
//! budget and with one (docs/benchmark.md, "Fair share").
//!
//! Neighbours read a working set that fits the server and refill what they
//! miss; their hit ratio is measured before any flood, during a flood of
//! a tenant with a budget, then during the same flood without one. The
//! budgeted flood runs first, on the memory the baseline left: the
//! unbudgeted one leaves the server full of its entries.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tenant_cache_host::{Backend, Budgets, CacheError, Grant, Limit, MemcachedOptions, Rate, TenantCache};

use crate::pooled::pooled_runtime;

/// What the measure is made of.
#[derive(clap::Args, Debug)]
pub struct Shape {
    /// Neighbour tenants.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    tenants: u32,
    /// Entries in each neighbour's working set (by default the 50 sets
    /// take 31 MB: half of `-m 64`).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    keys: u32,
    /// Bytes of each neighbour entry. memcached keeps items of different
    /// sizes in different memory (slab classes), so a flood evicts first
    /// the entries of its own size: by default the flood's.
    #[arg(long, value_name = "SIZE", default_value = "100k", value_parser = tenant_cache_memcached::rules::parse_size)]
    value_size: u64,
    /// Threads reading (and refilling) the neighbours' entries, each with
    /// its instance.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    readers: u32,
    /// Reads per second of all the neighbours together (0: as fast as the
    /// readers go).
    #[arg(long, default_value_t = 1000)]
    reads_per_second: u64,
    /// Seconds of the baseline.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    baseline_seconds: u64,
    /// Seconds of each flood.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    flood_seconds: u64,
    /// Bytes of each flooding entry.
    #[arg(long, value_name = "SIZE", default_value = "100k", value_parser = tenant_cache_memcached::rules::parse_size)]
    flood_value_size: u64,
    /// The flooding tenant's write budget, per second (with a burst of
    /// one second of it, or of two flood entries if that is more).
    #[arg(long, value_name = "SIZE", default_value = "2m", value_parser = tenant_cache_memcached::rules::parse_size)]
    flood_budget: u64,
    /// The flooding tenant's TTL cap, in seconds: with the write budget,
    /// it bounds what the tenant keeps in memory.
    #[arg(long, value_name = "S", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    flood_max_ttl: u32,
}

/// Hits and misses of the neighbours since the phase began.
#[derive(Default)]
struct Reads {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Reads {
    /// The hit ratio since the last reset, and resets.
    fn take_ratio(&self) -> f64 {
        let hits = self.hits.swap(0, Ordering::Relaxed) as f64;
        let misses = self.misses.swap(0, Ordering::Relaxed) as f64;
        hits / (hits + misses).max(1.0)
    }
}

/// What a flood wrote.
struct Flood {
    bytes_written: u64,
    refusals: u64,
}

/// One phase's figures.
struct Phase {
    hit_ratio: f64,
    flood: Option<Flood>,
}

/// Runs the measure on the first of `servers`.
pub fn run(servers: &[String], options: MemcachedOptions, shape: &Shape, json: bool) -> anyhow::Result<()> {
    let server = servers.first().context("noisy-neighbour needs --memcached HOST:PORT")?;
    let backend = Backend::memcached(std::slice::from_ref(server), options)?;
    let runtime = pooled_runtime()?;
    let app = format!("noisy-{:x}", rand::random::<u32>());
    let grant = Grant::new(backend.clone(), &app);
    let value = vec![b'n'; shape.value_size as usize];
    let tenants: Vec<String> = (0..shape.tenants).map(|n| format!("neighbour-{n}")).collect();
    eprintln!(
        "noisy-neighbour: filling {} working sets of {} entries",
        shape.tenants, shape.keys
    );
    let mut filler = runtime.instantiate(grant.clone())?;
    // A flood entry the server cannot hold fails here, not after the baseline.
    filler
        .set("flood-probe", "/", &vec![0; shape.flood_value_size as usize], None)
        .context("a flood entry (--flood-value-size)")?;
    for tenant in &tenants {
        for key in 0..shape.keys {
            filler.set(tenant, &format!("/{key}"), &value, None)?;
        }
    }

    let reads = Reads::default();
    let stop = AtomicBool::new(false);
    let phases = std::thread::scope(|scope| -> anyhow::Result<Vec<Phase>> {
        let readers: Vec<_> = (0..shape.readers)
            .map(|_| {
                let mut cache = runtime.instantiate(grant.clone())?;
                let (reads, stop, tenants, value) = (&reads, &stop, &tenants, &value);
                let pace = (shape.reads_per_second > 0)
                    .then(|| Duration::from_secs_f64(shape.readers as f64 / shape.reads_per_second as f64));
                let keys = shape.keys as usize;
                Ok(scope.spawn(move || read_and_refill(&mut cache, tenants, keys, value, pace, reads, stop)))
            })
            .collect::<anyhow::Result<_>>()?;
        let phases = phases(&runtime, &grant, shape, &reads);
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            reader.join().expect("a reader panicked")?;
        }
        phases
    })?;
    report(shape, &phases, json);
    Ok(())
}

/// The baseline, the budgeted flood, the unbudgeted flood.
fn phases(
    runtime: &tenant_cache_host::Runtime,
    grant: &Grant,
    shape: &Shape,
    reads: &Reads,
) -> anyhow::Result<Vec<Phase>> {
    // The readers' first second warms their instances.
    std::thread::sleep(Duration::from_secs(1));
    reads.take_ratio();
    eprintln!("noisy-neighbour: baseline, {} s", shape.baseline_seconds);
    std::thread::sleep(Duration::from_secs(shape.baseline_seconds));
    let baseline = Phase {
        hit_ratio: reads.take_ratio(),
        flood: None,
    };
    let budgets = Budgets {
        bytes_written: Some(Rate {
            per_second: shape.flood_budget,
            burst: shape.flood_budget.max(shape.flood_value_size * 2),
        }),
        commands: None,
        max_ttl: Some(shape.flood_max_ttl),
    };
    let mut phases = vec![baseline];
    for (name, budgets) in [("budgeted", budgets), ("unbudgeted", Budgets::default())] {
        eprintln!("noisy-neighbour: flood, {name}, {} s", shape.flood_seconds);
        let mut cache = runtime.instantiate(grant.clone().bound_to("flood").with_budgets(budgets))?;
        reads.take_ratio();
        let flood = flood(&mut cache, shape)?;
        phases.push(Phase {
            hit_ratio: reads.take_ratio(),
            flood: Some(flood),
        });
    }
    Ok(phases)
}

/// Reads random entries of random neighbours, one every `pace` (or as fast
/// as it can), refilling each miss, until `stop`.
fn read_and_refill(
    cache: &mut TenantCache,
    tenants: &[String],
    keys: usize,
    value: &[u8],
    pace: Option<Duration>,
    reads: &Reads,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(pace) = pace {
            next += pace;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        let tenant = &tenants[rand::random_range(0..tenants.len())];
        let key = format!("/{}", rand::random_range(0..keys));
        match cache.get(tenant, &key)? {
            Some(_) => reads.hits.fetch_add(1, Ordering::Relaxed),
            None => {
                cache.set(tenant, &key, value, None)?;
                reads.misses.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
    Ok(())
}

/// Writes new large entries of the flooding tenant as fast as the budget
/// lets it (waiting as long as a refusal says), for the flood's seconds.
fn flood(cache: &mut TenantCache, shape: &Shape) -> anyhow::Result<Flood> {
    let value = vec![b'f'; shape.flood_value_size as usize];
    let until = Instant::now() + Duration::from_secs(shape.flood_seconds);
    let mut flood = Flood {
        bytes_written: 0,
        refusals: 0,
    };
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        match cache.set("flood", &format!("/{n}"), &value, None) {
            Ok(()) => flood.bytes_written += value.len() as u64,
            Err(CacheError::OverLimit(Limit::Budget(over))) => {
                flood.refusals += 1;
                let wait = over
                    .retry_after_ms
                    .context("the flood's entries cost more than its burst")?;
                std::thread::sleep(Duration::from_millis(wait).min(until.saturating_duration_since(Instant::now())));
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(flood)
}

fn report(shape: &Shape, phases: &[Phase], json: bool) {
    let [baseline, budgeted, unbudgeted] = phases else {
        unreachable!("three phases")
    };
    let (Some(budgeted_flood), Some(unbudgeted_flood)) = (&budgeted.flood, &unbudgeted.flood) else {
        unreachable!("two floods")
    };
    let rounded = |value: f64| serde_json::json!((value * 1000.0).round() / 1000.0);
    if json {
        let fields = serde_json::json!({
            "neighbour_hit_ratio_baseline": rounded(baseline.hit_ratio),
            "neighbour_hit_ratio_flood_unbudgeted": rounded(unbudgeted.hit_ratio),
            "neighbour_hit_ratio_flood_budgeted": rounded(budgeted.hit_ratio),
            "budgeted_vs_baseline": rounded(budgeted.hit_ratio / baseline.hit_ratio),
            "flood_mb_written_unbudgeted": rounded(unbudgeted_flood.bytes_written as f64 / 1e6),
            "flood_mb_written_budgeted": rounded(budgeted_flood.bytes_written as f64 / 1e6),
            "flood_refusals_budgeted": budgeted_flood.refusals,
            "neighbours": shape.tenants,
            "working_set_mb": rounded((f64::from(shape.tenants) * f64::from(shape.keys)) * shape.value_size as f64 / 1e6),
            "flood_seconds": shape.flood_seconds,
            "flood_budget_bytes_per_second": shape.flood_budget,
            "flood_max_ttl": shape.flood_max_ttl,
        });
        println!("{fields}");
        return;
    }
    println!(
        "{} neighbours, {} entries of {} bytes each ({:.1} MB in all); a flood of {}-byte entries for {} s",
        shape.tenants,
        shape.keys,
        shape.value_size,
        (f64::from(shape.tenants) * f64::from(shape.keys)) * shape.value_size as f64 / 1e6,
        shape.flood_value_size,
        shape.flood_seconds
    );
    println!("{:<44} {:>10} {:>14}", "phase", "hit ratio", "flood wrote");
    println!("{:<44} {:>10.3} {:>14}", "baseline", baseline.hit_ratio, "-");
    println!(
        "{:<44} {:>10.3} {:>11.1} MB",
        format!(
            "flood, budget {} B/s, TTL cap {} s",
            shape.flood_budget, shape.flood_max_ttl
        ),
        budgeted.hit_ratio,
        budgeted_flood.bytes_written as f64 / 1e6
    );
    println!(
        "{:<44} {:>10.3} {:>11.1} MB",
        "flood, no budget",
        unbudgeted.hit_ratio,
        unbudgeted_flood.bytes_written as f64 / 1e6
    );
    println!(
        "budgeted / baseline: {:.3}; the budgeted flood was refused {} times",
        budgeted.hit_ratio / baseline.hit_ratio,
        budgeted_flood.refusals
    );
}
