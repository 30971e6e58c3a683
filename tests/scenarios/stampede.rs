//! docs/semantics.md, guarantee 12: stampede protection. After a clear, or
//! when a hot key expires, one caller per key computes its value, across
//! instances and processes (here: separate backends, each with its own
//! connections and memo, as separate processes have); the others wait for
//! it, or take the entry from before the clear if they ask to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tenant_cache_host::{AsyncTenantCache, Backend, CacheError, Grant, LeaseOptions, Lookup, TenantCache};
use tenant_cache_tests::{MemcachedProcess, backend, cache, runtime};

/// What "computing" a key gives: the same bytes every time.
fn computed(key: &str) -> Vec<u8> {
    format!("value of {key}").into_bytes()
}

/// How often each key was computed.
#[derive(Clone, Default)]
struct Computes(Arc<Mutex<HashMap<String, usize>>>);

impl Computes {
    fn count(&self, key: &str) {
        *self.0.lock().expect("counts").entry(key.to_owned()).or_default() += 1;
    }
    fn per_key(&self) -> Vec<usize> {
        self.0.lock().expect("counts").values().copied().collect()
    }
}

async fn instance(backend: &Backend) -> anyhow::Result<AsyncTenantCache> {
    runtime().instantiate_async(Grant::new(backend.clone(), "app")).await
}

const KEYS: usize = 50;
const PROCESSES: usize = 4;
const TASKS: usize = 16;

/// `PROCESSES` × `TASKS` callers read every key of `tenant` at once, each
/// miss computing for 20 ms; with `leases`, through `get_or_compute`, else
/// as a plain cache-aside (get, compute on a miss, set). Every caller must
/// get each key's value. Returns the computes of each key and the slowest
/// read.
fn stampede(backends: &[Backend], tenant: &'static str, leases: bool) -> anyhow::Result<(Vec<usize>, Duration)> {
    let computes = Computes::default();
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let threads = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    threads.block_on(async {
        let tasks: Vec<_> = (0..PROCESSES * TASKS)
            .map(|task| {
                let backend = backends[task % backends.len()].clone();
                let (computes, slowest) = (computes.clone(), slowest.clone());
                tokio::spawn(async move {
                    let mut cache = instance(&backend).await?;
                    for n in 0..KEYS {
                        // Every task reads the keys in the same order:
                        // all of them miss each key at once.
                        let key = format!("k{n}");
                        let started = Instant::now();
                        let compute = || async {
                            computes.count(&key);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok::<_, std::convert::Infallible>(computed(&key))
                        };
                        let value = match leases {
                            true => cache
                                .get_or_compute(tenant, &key, None, &LeaseOptions::default(), compute)
                                .await
                                .map_err(|error| anyhow::anyhow!("{error}"))?,
                            false => match cache.get(tenant, &key).await? {
                                Some(value) => value,
                                None => {
                                    let value = compute().await?;
                                    cache.set(tenant, &key, &value, None).await?;
                                    value
                                }
                            },
                        };
                        anyhow::ensure!(value == computed(&key), "{key} read {value:?}");
                        let took = started.elapsed();
                        let mut slowest = slowest.lock().expect("slowest");
                        *slowest = (*slowest).max(took);
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
    let slowest = *slowest.lock().expect("slowest");
    Ok((computes.per_key(), slowest))
}

#[test]
fn after_a_clear_one_caller_per_key_computes_across_processes() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backends: Vec<Backend> = (0..PROCESSES).map(|_| backend(&[&server])).collect::<Result<_, _>>()?;
    // Without leases, the same readers send a key to the database many
    // times: the test's readers really do miss at once.
    let (without, _) = stampede(&backends, "t", false)?;
    let mean = without.iter().sum::<usize>() as f64 / KEYS as f64;
    assert!(mean > 8.0, "without leases each key was computed {mean:.1} times");
    cache(&backends[0], "app")?.clear("t")?;
    let (with, slowest) = stampede(&backends, "t", true)?;
    eprintln!(
        "after a clear, 64 readers of 50 keys: {mean:.1} computes per key without leases, {:?} with; slowest \
         read {slowest:?}",
        with.iter().max()
    );
    assert_eq!(with.len(), KEYS);
    assert!(with.iter().all(|&count| count == 1), "{with:?}");
    // A tenant never written: the callers also race to create its versions.
    let (fresh, _) = stampede(&backends, "never-written", true)?;
    assert!(
        fresh.len() == KEYS && fresh.iter().all(|&count| count == 1),
        "{fresh:?}"
    );
    Ok(())
}

#[test]
fn a_hot_key_expiring_is_computed_once_per_expiry() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backends: Vec<Backend> = (0..PROCESSES).map(|_| backend(&[&server])).collect::<Result<_, _>>()?;
    let computes = Arc::new(AtomicUsize::new(0));
    let options = LeaseOptions::default();
    let threads = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ended = Instant::now() + Duration::from_millis(4500);
    threads.block_on(async {
        let tasks: Vec<_> = (0..32)
            .map(|task| {
                let (backend, computes, options) =
                    (backends[task % PROCESSES].clone(), computes.clone(), options.clone());
                tokio::spawn(async move {
                    let mut cache = instance(&backend).await?;
                    while Instant::now() < ended {
                        let compute = || async {
                            computes.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok::<_, std::convert::Infallible>(b"hot".to_vec())
                        };
                        let value = cache
                            .get_or_compute("t", "hot", Some(2), &options, compute)
                            .await
                            .map_err(|error| anyhow::anyhow!("{error}"))?;
                        anyhow::ensure!(value == b"hot", "read {value:?}");
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
    // A 2 s TTL over 4.5 s: the first compute and one per expiry (memcached
    // counts whole seconds, so one or two expiries).
    let computes = computes.load(Ordering::SeqCst);
    eprintln!("32 readers of a key expiring every 2 s for 4.5 s: {computes} computes");
    assert!((2..=4).contains(&computes), "{computes} computes");
    Ok(())
}

#[test]
fn with_an_early_refresh_window_a_hot_key_never_misses() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backends: Vec<Backend> = (0..2).map(|_| backend(&[&server])).collect::<Result<_, _>>()?;
    let options = LeaseOptions {
        refresh_window: 2,
        ..LeaseOptions::default()
    };
    let mut writer = cache(&backends[0], "app")?;
    writer.set("t", "hot", b"v0", Some(3))?;
    let mut readers = [cache(&backends[0], "app")?, cache(&backends[1], "app")?];
    let (mut refreshes, mut misses) = (0, 0);
    let ended = Instant::now() + Duration::from_millis(4500);
    while Instant::now() < ended {
        for reader in &mut readers {
            match reader.get_or_lease("t", "hot", &options)? {
                Lookup::Hit(_) => {}
                Lookup::Lease(token) => {
                    refreshes += 1;
                    reader.fill("t", "hot", format!("v{refreshes}").as_bytes(), Some(3), &token)?;
                }
                Lookup::Stale(_) | Lookup::Busy => misses += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("an entry living 3 s, refreshed 2 s early, read for 4.5 s: {refreshes} refreshes, {misses} misses");
    assert_eq!(misses, 0);
    assert!((1..=3).contains(&refreshes), "{refreshes} refreshes");
    Ok(())
}

#[test]
fn only_callers_that_accept_stale_read_the_entry_from_before_the_clear() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let (mut holder, mut tolerant, mut strict) = (
        cache(&backend, "app")?,
        cache(&backend, "app")?,
        cache(&backend, "app")?,
    );
    holder.set("t", "k", b"before", None)?;
    holder.clear("t")?;
    let stale_ok = LeaseOptions {
        accept_stale: true,
        ..LeaseOptions::default()
    };
    let Lookup::Lease(token) = holder.get_or_lease("t", "k", &LeaseOptions::default())? else {
        panic!("the first caller after the clear takes the lease");
    };
    assert_eq!(
        tolerant.get_or_lease("t", "k", &stale_ok)?,
        Lookup::Stale(b"before".to_vec())
    );
    assert_eq!(strict.get_or_lease("t", "k", &LeaseOptions::default())?, Lookup::Busy);
    assert_eq!(
        strict.get("t", "k")?,
        None,
        "a clear still hides the entry from plain reads"
    );
    holder.fill("t", "k", b"after", None, &token)?;
    for reader in [&mut tolerant, &mut strict] {
        assert_eq!(
            reader.get_or_lease("t", "k", &stale_ok)?,
            Lookup::Hit(b"after".to_vec())
        );
    }
    Ok(())
}

#[test]
fn a_lease_holder_that_never_fills_blocks_nobody_past_the_lease_ttl() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let options = LeaseOptions {
        lease_ttl: 2,
        ..LeaseOptions::default()
    };
    let (mut dead, mut next) = (cache(&backend, "app")?, cache(&backend, "app")?);
    assert!(matches!(dead.get_or_lease("t", "k", &options)?, Lookup::Lease(_)));
    assert_eq!(next.get_or_lease("t", "k", &options)?, Lookup::Busy);
    // memcached ends a 2 s lease between 1 and 2 s after it was taken.
    let started = Instant::now();
    let token = loop {
        match next.get_or_lease("t", "k", &options)? {
            Lookup::Lease(token) => break token,
            Lookup::Busy => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("unexpected {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(3), "still blocked");
    };
    next.fill("t", "k", b"v", None, &token)?;
    assert_eq!(dead.get("t", "k")?.as_deref(), Some(&b"v"[..]));
    Ok(())
}

#[test]
fn a_value_computed_from_before_a_clear_is_never_read_after_it() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let (mut slow, mut other) = (cache(&backend, "app")?, cache(&backend, "app")?);
    let Lookup::Lease(token) = slow.get_or_lease("t", "k", &LeaseOptions::default())? else {
        panic!("a miss takes the lease");
    };
    // The tenant is cleared while the value is computed (from data the
    // clear was meant to hide), by another instance and by this one.
    for by_the_holder in [false, true] {
        match by_the_holder {
            true => slow.clear("t")?,
            false => other.clear("t")?,
        }
        assert!(!slow.fill("t", "k", b"from before the clear", None, &token)?);
        assert_eq!(other.get("t", "k")?, None);
        assert_eq!(cache(&backend, "app")?.get("t", "k")?, None);
    }
    // The next reader takes a lease of its own.
    assert!(matches!(
        other.get_or_lease("t", "k", &LeaseOptions::default())?,
        Lookup::Lease(_)
    ));
    Ok(())
}

#[test]
fn a_hit_costs_one_round_trip_a_miss_two_and_a_fill_one_and_a_taken_lease_one() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let (mut first, mut second) = (cache(&backend, "app")?, cache(&backend, "app")?);
    first.set("t", "warm", b"w", None)?;
    second.get("t", "warm")?;
    let options = LeaseOptions::default();
    let cost = |call: &mut dyn FnMut() -> Result<(), CacheError>| -> anyhow::Result<u64> {
        let before = backend.batches_sent();
        call()?;
        Ok(backend.batches_sent() - before)
    };
    let mut token = None;
    assert_eq!(
        cost(&mut || first.get_or_lease("t", "warm", &options).map(drop))?,
        1,
        "a hit"
    );
    assert_eq!(
        cost(&mut || {
            token = match first.get_or_lease("t", "k", &options)? {
                Lookup::Lease(token) => Some(token),
                other => panic!("expected a lease, got {other:?}"),
            };
            Ok(())
        })?,
        2,
        "a miss that takes the lease"
    );
    assert_eq!(
        cost(&mut || second.get_or_lease("t", "k", &options).map(drop))?,
        1,
        "a miss that finds it taken (the lease is in the entry's place)"
    );
    let token = token.expect("a lease");
    assert_eq!(
        cost(&mut || first.fill("t", "k", b"v", None, &token).map(drop))?,
        1,
        "a fill"
    );
    assert_eq!(second.get("t", "k")?.as_deref(), Some(&b"v"[..]));
    Ok(())
}

#[test]
fn leases_work_on_the_embedded_store_and_on_a_bound_grant() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    for (backend, bound) in [
        (Backend::embedded(), false),
        (backend(&[&server])?, true),
        (Backend::embedded(), true),
    ] {
        let computes = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for _ in 0..8 {
                let (backend, computes) = (backend.clone(), computes.clone());
                scope.spawn(move || {
                    let grant = match bound {
                        true => Grant::new(backend, "app").bound_to("t"),
                        false => Grant::new(backend, "app"),
                    };
                    let mut cache: TenantCache = runtime().instantiate(grant).expect("an instance");
                    for n in 0..10 {
                        let key = format!("k{n}");
                        let value = cache
                            .get_or_compute("t", &key, None, &LeaseOptions::default(), || {
                                computes.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(20));
                                Ok::<_, std::convert::Infallible>(computed(&key))
                            })
                            .expect("a value");
                        assert_eq!(value, computed(&key));
                    }
                });
            }
        });
        assert_eq!(computes.load(Ordering::SeqCst), 10, "bound: {bound}");
    }
    Ok(())
}

#[test]
fn lease_options_out_of_range_are_refused() -> anyhow::Result<()> {
    let mut cache = cache(&Backend::embedded(), "app")?;
    for lease_ttl in [0, 1, 3601] {
        let options = LeaseOptions {
            lease_ttl,
            ..LeaseOptions::default()
        };
        assert!(
            matches!(cache.get_or_lease("t", "k", &options), Err(CacheError::InvalidInput(_))),
            "{lease_ttl}"
        );
    }
    let forged = tenant_cache_host::LeaseToken::from(String::from("not a token"));
    assert!(matches!(
        cache.fill("t", "k", b"v", None, &forged),
        Err(CacheError::InvalidInput(_))
    ));
    Ok(())
}

/// The review's case: a lease taken, the tenant cleared, a new value set;
/// the old holder's fill (from another instance) must not destroy it.
#[test]
fn a_stale_fill_never_replaces_a_value_written_after_its_lease_was_taken() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let (mut holder, mut writer, mut filler) = (
        cache(&backend, "app")?,
        cache(&backend, "app")?,
        cache(&backend, "app")?,
    );
    // Cleared and rewritten, or only rewritten, or deleted, while the lease is held.
    for clear_first in [true, false] {
        let Lookup::Lease(token) = holder.get_or_lease("acme", "f", &LeaseOptions::default())? else {
            panic!("a miss takes the lease");
        };
        if clear_first {
            writer.clear("acme")?;
        }
        writer.set("acme", "f", b"new", None)?;
        assert!(!filler.fill("acme", "f", b"old", None, &token)?);
        assert_eq!(
            writer.get("acme", "f")?.as_deref(),
            Some(&b"new"[..]),
            "clear first: {clear_first}"
        );
        writer.delete("acme", "f")?;
    }
    let Lookup::Lease(token) = holder.get_or_lease("acme", "f", &LeaseOptions::default())? else {
        panic!("a miss takes the lease");
    };
    writer.delete("acme", "f")?;
    assert!(!filler.fill("acme", "f", b"old", None, &token)?);
    assert_eq!(writer.get("acme", "f")?, None, "a delete since the lease stands");
    Ok(())
}

/// A token fills its own key only, and only while its lease is its
/// holder's: once it ran out and another caller took it, the late fill
/// stores nothing and leaves the new holder's lease as it was.
#[test]
fn a_fill_needs_the_lease_it_names_for_the_key_it_names() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let options = LeaseOptions {
        lease_ttl: 2,
        ..LeaseOptions::default()
    };
    let (mut first, mut second, mut third) = (
        cache(&backend, "app")?,
        cache(&backend, "app")?,
        cache(&backend, "app")?,
    );
    let Lookup::Lease(token) = first.get_or_lease("acme", "f", &options)? else {
        panic!("a miss takes the lease");
    };
    // Another key, another tenant, another application: refused.
    for (tenant, key) in [("acme", "g"), ("globex", "f")] {
        let result = second.fill(tenant, key, b"x", None, &token);
        assert!(
            matches!(result, Err(CacheError::InvalidInput(_))),
            "{tenant}/{key}: {result:?}"
        );
    }
    let result = tenant_cache_tests::cache(&backend, "other-app")?.fill("acme", "f", b"x", None, &token);
    assert!(matches!(result, Err(CacheError::InvalidInput(_))), "{result:?}");
    for forged in ["lease1:0123456789abcdef0000000000000007", "", "lease2:m:x"] {
        let result = second.fill(
            "acme",
            "f",
            b"x",
            None,
            &tenant_cache_host::LeaseToken::from(forged.to_owned()),
        );
        assert!(
            matches!(result, Err(CacheError::InvalidInput(_))),
            "{forged:?}: {result:?}"
        );
    }
    assert_eq!(
        third.get_or_lease("acme", "f", &options)?,
        Lookup::Busy,
        "still the first's"
    );
    // The lease runs out; another caller takes it.
    let started = Instant::now();
    let renewed = loop {
        match second.get_or_lease("acme", "f", &options)? {
            Lookup::Lease(token) => break token,
            Lookup::Busy => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("unexpected {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(3), "still blocked");
    };
    assert!(!first.fill("acme", "f", b"late", None, &token)?, "no longer its lease");
    assert_eq!(
        third.get_or_lease("acme", "f", &options)?,
        Lookup::Busy,
        "the new lease stands"
    );
    assert!(second.fill("acme", "f", b"fresh", None, &renewed)?);
    assert_eq!(third.get("acme", "f")?.as_deref(), Some(&b"fresh"[..]));
    // A token filled once fills no more.
    assert!(!second.fill("acme", "f", b"again", None, &renewed)?);
    assert_eq!(third.get("acme", "f")?.as_deref(), Some(&b"fresh"[..]));
    Ok(())
}

/// A holder whose computation failed gives the lease back: the next reader
/// takes it at once, and the released token fills nothing.
#[test]
fn a_released_lease_goes_to_the_next_reader_at_once() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let stale_ok = LeaseOptions {
        accept_stale: true,
        lease_ttl: 60,
        ..LeaseOptions::default()
    };
    let (mut failing, mut next) = (cache(&backend, "app")?, cache(&backend, "app")?);
    failing.set("acme", "f", b"before", None)?;
    failing.clear("acme")?;
    let Lookup::Lease(token) = failing.get_or_lease("acme", "f", &stale_ok)? else {
        panic!("a miss takes the lease");
    };
    assert_eq!(
        next.get_or_lease("acme", "f", &stale_ok)?,
        Lookup::Stale(b"before".to_vec())
    );
    failing.release("acme", "f", &token)?;
    let Lookup::Lease(renewed) = next.get_or_lease("acme", "f", &stale_ok)? else {
        panic!("a released lease is taken at once, not after its 60 s");
    };
    assert!(!failing.fill("acme", "f", b"late", None, &token)?);
    // Releasing a lease that is no longer one's own changes nothing.
    failing.release("acme", "f", &token)?;
    assert_eq!(
        failing.get_or_lease("acme", "f", &stale_ok)?,
        Lookup::Stale(b"before".to_vec())
    );
    assert!(next.fill("acme", "f", b"after", None, &renewed)?);
    assert_eq!(failing.get("acme", "f")?.as_deref(), Some(&b"after"[..]));
    // get_or_compute gives the lease back when its computation fails.
    let failed = failing.get_or_compute("acme", "g", None, &stale_ok, || Err::<Vec<u8>, _>("no"));
    assert!(failed.is_err());
    assert!(matches!(next.get_or_lease("acme", "g", &stale_ok)?, Lookup::Lease(_)));
    Ok(())
}

#[test]
fn refresh_windows_out_of_range_are_refused() -> anyhow::Result<()> {
    let mut cache = cache(&Backend::embedded(), "app")?;
    for refresh_window in [315_360_001, 1 << 31, u32::MAX] {
        let options = LeaseOptions {
            refresh_window,
            ..LeaseOptions::default()
        };
        let result = cache.get_or_lease("t", "k", &options);
        assert!(
            matches!(result, Err(CacheError::InvalidInput(_))),
            "{refresh_window}: {result:?}"
        );
    }
    Ok(())
}

/// A value that passes the host's first check but not memcached's item
/// limit once framed: a fill or a swap with a stale token must fail
/// without removing the newer value (a conditional store is never turned
/// into a removal).
#[test]
fn a_stale_fill_or_swap_too_large_to_store_removes_nothing() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let (mut stale, mut writer) = (cache(&backend, "app")?, cache(&backend, "app")?);
    let big = vec![b'x'; backend.item_size_limit() as usize - 8];
    let Lookup::Lease(token) = stale.get_or_lease("acme", "f", &LeaseOptions::default())? else {
        panic!("a miss takes the lease");
    };
    writer.set("acme", "f", b"newer", None)?;
    let result = stale.fill("acme", "f", &big, None, &token);
    assert!(matches!(result, Err(CacheError::ValueTooLarge { .. })), "{result:?}");
    assert_eq!(writer.get("acme", "f")?.as_deref(), Some(&b"newer"[..]));
    writer.set("acme", "s", b"read", None)?;
    let read = stale.get_for_swap("acme", "s")?;
    writer.set("acme", "s", b"newer", None)?;
    let result = stale.compare_and_swap("acme", "s", &big, &read.token);
    assert!(matches!(result, Err(CacheError::ValueTooLarge { .. })), "{result:?}");
    assert_eq!(writer.get("acme", "s")?.as_deref(), Some(&b"newer"[..]));
    Ok(())
}
