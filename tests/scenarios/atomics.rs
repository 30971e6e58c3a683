//! docs/semantics.md, guarantee 13: counters and compare-and-swap. An
//! increment is atomic across instances and processes and loses no update;
//! a clear hides counters like every other entry, and no pre-clear count
//! ever comes back; a compare-and-swap stores only over what it read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use tenant_cache_host::{Backend, CacheError, Grant, SwapToken};
use tenant_cache_tests::{MemcachedProcess, backend, cache, runtime};

/// Runs `call` and returns its value and how many batches it sent.
fn trips<T>(backend: &Backend, call: impl FnOnce() -> Result<T, CacheError>) -> anyhow::Result<(T, u64)> {
    let before = backend.batches_sent();
    let value = call()?;
    Ok((value, backend.batches_sent() - before))
}

#[test]
fn a_counter_counts_from_zero_and_reads_as_decimal_text() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut cache = cache(&backend, "app")?;
    assert_eq!(cache.increment("acme", "visits", 1)?, 1);
    assert_eq!(cache.increment("acme", "visits", 41)?, 42);
    assert_eq!(cache.get("acme", "visits")?.as_deref(), Some(&b"42"[..]));
    assert_eq!(cache.increment("acme", "visits", -50)?, -8);
    assert_eq!(cache.get("acme", "visits")?.as_deref(), Some(&b"-8"[..]));
    // Wrapping, as a signed 64-bit number.
    assert_eq!(cache.increment("acme", "edge", i64::MAX)?, i64::MAX);
    assert_eq!(cache.increment("acme", "edge", 1)?, i64::MIN);
    // Another tenant's key of the same name is another counter.
    assert_eq!(cache.increment("globex", "visits", 1)?, 1);
    let many = cache.get_many("acme", &["visits".into(), "none".into(), "edge".into()])?;
    assert_eq!(
        many,
        [Some(b"-8".to_vec()), None, Some(i64::MIN.to_string().into_bytes())]
    );
    // A fresh instance (nothing remembered) sees the same counter.
    let mut fresh = tenant_cache_tests::cache(&backend, "app")?;
    assert_eq!(fresh.increment("acme", "visits", 8)?, 0);
    Ok(())
}

#[test]
fn an_increment_costs_one_round_trip_once_the_counter_is_known_and_two_from_a_fresh_process() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut cache = cache(&backend, "app")?;
    cache.set("acme", "warm-up", b"x", None)?;
    // A new counter of a tenant whose versions are known: one.
    let (count, sent) = trips(&backend, || cache.increment("acme", "visits", 1))?;
    assert_eq!((count, sent), (1, 1));
    for n in 2..20 {
        let (count, sent) = trips(&backend, || cache.increment("acme", "visits", 1))?;
        assert_eq!((count, sent), (n, 1), "increment {n}");
    }
    // A swap, once read: one.
    let read = cache.get_for_swap("acme", "visits")?;
    let (stored, sent) = trips(&backend, || {
        cache.compare_and_swap("acme", "visits", b"100", &read.token)
    })?;
    assert!(stored);
    assert_eq!(sent, 1);
    // Another instance in this process starts from the host's memo: one.
    let mut other = tenant_cache_tests::cache(&backend, "app")?;
    assert_eq!(trips(&backend, || other.increment("acme", "visits", 1))?, (101, 1));
    // A process that knows nothing (another backend, so another memo): two.
    let fresh_backend = tenant_cache_tests::backend(&[&server])?;
    let mut fresh = tenant_cache_tests::cache(&fresh_backend, "app")?;
    let (count, sent) = trips(&fresh_backend, || fresh.increment("acme", "visits", 1))?;
    assert_eq!(count, 102);
    assert!(sent <= 2, "{sent} round trips from a fresh process");
    // A get of a counter reads its count in a second round trip.
    let (value, sent) = trips(&backend, || cache.get("acme", "visits"))?;
    assert_eq!((value.as_deref(), sent), (Some(&b"102"[..]), 2));
    Ok(())
}

#[test]
fn concurrent_increments_from_many_instances_lose_no_update() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let (threads, rounds) = (8, 250);
    let barrier = Arc::new(Barrier::new(threads));
    let counts = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (backend, barrier, counts) = (backend.clone(), barrier.clone(), counts.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut cache = cache(&backend, "app")?;
                barrier.wait();
                for _ in 0..rounds {
                    let count = cache.increment("acme", "hits", 1)?;
                    counts.lock().expect("no panic").push(count);
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("no panic")?;
    }
    let mut counts = counts.lock().expect("no panic").clone();
    counts.sort_unstable();
    let expected: Vec<i64> = (1..=(threads * rounds) as i64).collect();
    assert_eq!(counts, expected, "every increment returns a count of its own");
    let mut reader = cache(&backend, "app")?;
    assert_eq!(
        reader.get("acme", "hits")?,
        Some((threads * rounds).to_string().into_bytes())
    );
    Ok(())
}

#[test]
fn a_clear_hides_counters_and_they_count_again_from_zero() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut cache = cache(&backend, "app")?;
    let mut other = tenant_cache_tests::cache(&backend, "app")?;
    for _ in 0..5 {
        cache.increment("acme", "visits", 1)?;
    }
    cache.increment("globex", "visits", 7)?;
    other.clear("acme")?;
    assert_eq!(cache.get("acme", "visits")?, None);
    assert_eq!(
        cache.increment("acme", "visits", 1)?,
        1,
        "an instance that knew the counter"
    );
    assert_eq!(
        cache.get("globex", "visits")?.as_deref(),
        Some(&b"7"[..]),
        "another tenant's counter stays"
    );
    other.clear_all()?;
    assert_eq!(cache.increment("globex", "visits", 1)?, 1);
    // A server that loses everything: no counter comes back either.
    cache.increment("acme", "visits", 10)?;
    server.raw("flush_all\r\n")?;
    assert_eq!(cache.increment("acme", "visits", 1)?, 1);
    Ok(())
}

#[test]
fn increments_racing_clears_never_bring_back_a_pre_clear_count() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    // Started and finished increments, and for each clear the increments
    // finished before it began.
    let started = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let finished_before_clear = Arc::new(Mutex::new(Vec::<u64>::new()));
    let cleared = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut setup = cache(&backend, "app")?;
    for _ in 0..1000 {
        setup.increment("acme", "hits", 1)?;
    }
    finished.store(1000, Ordering::SeqCst);
    started.store(1000, Ordering::SeqCst);
    let clearer = {
        let (backend, finished, finished_before_clear, cleared, stop) = (
            backend.clone(),
            finished.clone(),
            finished_before_clear.clone(),
            cleared.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut cache = cache(&backend, "app")?;
            while !stop.load(Ordering::SeqCst) {
                finished_before_clear
                    .lock()
                    .expect("no panic")
                    .push(finished.load(Ordering::SeqCst));
                cache.clear("acme")?;
                cleared.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Ok(())
        })
    };
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (backend, started, finished, finished_before_clear, cleared) = (
                backend.clone(),
                started.clone(),
                finished.clone(),
                finished_before_clear.clone(),
                cleared.clone(),
            );
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut cache = cache(&backend, "app")?;
                let mut checked = 0;
                for _ in 0..1500 {
                    let clears = cleared.load(Ordering::SeqCst);
                    started.fetch_add(1, Ordering::SeqCst);
                    let count = cache.increment("acme", "hits", 1)? as u64;
                    let started_by_now = started.load(Ordering::SeqCst);
                    finished.fetch_add(1, Ordering::SeqCst);
                    if clears == 0 {
                        continue;
                    }
                    // The count restarted at that clear: at most the
                    // increments that had not finished when it began.
                    let before = finished_before_clear.lock().expect("no panic")[clears as usize - 1];
                    assert!(
                        count <= started_by_now - before,
                        "count {count} after clear {clears}: at most {} increments came after it",
                        started_by_now - before
                    );
                    checked += 1;
                }
                Ok(checked)
            })
        })
        .collect();
    let mut checked = 0;
    for worker in workers {
        checked += worker.join().expect("no panic")?;
    }
    stop.store(true, Ordering::SeqCst);
    clearer.join().expect("no panic")?;
    assert!(cleared.load(Ordering::SeqCst) > 10, "the clears raced the increments");
    assert!(checked > 100, "{checked} increments checked");
    Ok(())
}

#[test]
fn set_and_delete_replace_a_counter_and_an_increment_counts_on_from_a_number() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut cache = cache(&backend, "app")?;
    let mut other = tenant_cache_tests::cache(&backend, "app")?;
    cache.set("acme", "n", b"41", None)?;
    assert_eq!(cache.increment("acme", "n", 1)?, 42, "from a number set before");
    other.set("acme", "n", b"hello", None)?;
    assert_eq!(cache.get("acme", "n")?.as_deref(), Some(&b"hello"[..]));
    let error = cache.increment("acme", "n", 1).expect_err("hello is no counter");
    assert!(
        matches!(&error, CacheError::NotACounter(text) if text.contains("\"n\"")),
        "{error}"
    );
    assert_eq!(cache.get("acme", "n")?.as_deref(), Some(&b"hello"[..]), "unchanged");
    other.set("acme", "n", b"-3", None)?;
    assert_eq!(cache.increment("acme", "n", 1)?, -2);
    other.delete("acme", "n")?;
    assert_eq!(cache.get("acme", "n")?, None);
    assert_eq!(cache.increment("acme", "n", 5)?, 5, "a deleted counter counts from 0");
    // A count whose record memcached evicted: the counter starts over.
    for key in server.keys()? {
        if key.contains(":c:") {
            server.raw_delete(&key)?;
        }
    }
    assert_eq!(cache.get("acme", "n")?, None);
    assert_eq!(cache.increment("acme", "n", 1)?, 1);
    Ok(())
}

#[test]
fn a_compare_and_swap_stores_only_over_what_it_read() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut cache = cache(&backend, "app")?;
    let mut other = tenant_cache_tests::cache(&backend, "app")?;
    // A missing entry.
    let read = cache.get_for_swap("acme", "doc")?;
    assert_eq!(read.value, None);
    assert!(cache.compare_and_swap("acme", "doc", b"v1", &read.token)?);
    assert!(
        !cache.compare_and_swap("acme", "doc", b"again", &read.token)?,
        "used once"
    );
    // A write between the read and the swap.
    let read = cache.get_for_swap("acme", "doc")?;
    assert_eq!(read.value.as_deref(), Some(&b"v1"[..]));
    other.set("acme", "doc", b"other", None)?;
    assert!(!cache.compare_and_swap("acme", "doc", b"v2", &read.token)?);
    assert_eq!(cache.get("acme", "doc")?.as_deref(), Some(&b"other"[..]));
    // A clear between: the value read is gone, the swap fails.
    let read = cache.get_for_swap("acme", "doc")?;
    other.clear("acme")?;
    assert!(!cache.compare_and_swap("acme", "doc", b"v3", &read.token)?);
    assert_eq!(cache.get("acme", "doc")?, None);
    // A counter: an increment between fails the swap, none is lost.
    other.increment("acme", "hits", 5)?;
    let read = cache.get_for_swap("acme", "hits")?;
    assert_eq!(read.value.as_deref(), Some(&b"5"[..]));
    other.increment("acme", "hits", 1)?;
    assert!(!cache.compare_and_swap("acme", "hits", b"50", &read.token)?);
    let read = cache.get_for_swap("acme", "hits")?;
    assert!(cache.compare_and_swap("acme", "hits", b"50", &read.token)?);
    assert_eq!(
        other.increment("acme", "hits", 1)?,
        51,
        "a number swapped in stays a counter"
    );
    let read = cache.get_for_swap("acme", "hits")?;
    assert!(cache.compare_and_swap("acme", "hits", b"text", &read.token)?);
    assert_eq!(other.get("acme", "hits")?.as_deref(), Some(&b"text"[..]));
    assert!(matches!(
        other.increment("acme", "hits", 1),
        Err(CacheError::NotACounter(_))
    ));
    // A token the component never handed out.
    assert!(matches!(
        cache.compare_and_swap("acme", "doc", b"x", &String::from("swap1:forged").into()),
        Err(CacheError::InvalidInput(_))
    ));
    Ok(())
}

#[test]
fn compare_and_swap_loops_from_many_instances_lose_no_update() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let (threads, rounds) = (6, 40);
    let barrier = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (backend, barrier) = (backend.clone(), barrier.clone());
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut cache = cache(&backend, "app")?;
                barrier.wait();
                let mut conflicts = 0;
                for _ in 0..rounds {
                    loop {
                        let read = cache.get_for_swap("acme", "total")?;
                        let total: u64 = match read.value {
                            Some(value) => String::from_utf8(value)?.parse()?,
                            None => 0,
                        };
                        let next = (total + 1).to_string();
                        if cache.compare_and_swap("acme", "total", next.as_bytes(), &read.token)? {
                            break;
                        }
                        conflicts += 1;
                    }
                }
                Ok(conflicts)
            })
        })
        .collect();
    let mut conflicts = 0;
    for worker in workers {
        conflicts += worker.join().expect("no panic")?;
    }
    let mut reader = cache(&backend, "app")?;
    assert_eq!(
        reader.get("acme", "total")?,
        Some((threads * rounds).to_string().into_bytes())
    );
    assert!(conflicts > 0, "the swaps raced");
    Ok(())
}

#[test]
fn the_embedded_store_counts_and_swaps_too() -> anyhow::Result<()> {
    let mut cache = runtime().instantiate(Grant::new(Backend::embedded(), "app"))?;
    assert_eq!(cache.increment("acme", "visits", 2)?, 2);
    assert_eq!(cache.increment("acme", "visits", 3)?, 5);
    assert_eq!(cache.get("acme", "visits")?.as_deref(), Some(&b"5"[..]));
    let read = cache.get_for_swap("acme", "visits")?;
    cache.increment("acme", "visits", 1)?;
    assert!(!cache.compare_and_swap("acme", "visits", b"0", &read.token)?);
    cache.clear("acme")?;
    assert_eq!(cache.increment("acme", "visits", 1)?, 1);
    Ok(())
}

#[test]
fn get_or_lease_reads_a_counter_as_its_count() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut cache = cache(&backend, "app")?;
    cache.increment("acme", "hits", 3)?;
    let found = cache.get_or_lease("acme", "hits", &tenant_cache_host::LeaseOptions::default())?;
    assert_eq!(found, tenant_cache_host::Lookup::Hit(b"3".to_vec()));
    Ok(())
}

#[test]
fn async_instances_count_and_swap_as_blocking_ones_do() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    tokio.block_on(async {
        let mut cache = runtime().instantiate_async(Grant::new(backend.clone(), "app")).await?;
        assert_eq!(cache.increment("acme", "hits", 2).await?, 2);
        assert_eq!(cache.increment("acme", "hits", -1).await?, 1);
        let read = cache.get_for_swap("acme", "hits").await?;
        assert_eq!(read.value.as_deref(), Some(&b"1"[..]));
        assert!(cache.compare_and_swap("acme", "hits", b"10", &read.token).await?);
        assert!(!cache.compare_and_swap("acme", "hits", b"20", &read.token).await?);
        assert_eq!(cache.increment("acme", "hits", 1).await?, 11);
        anyhow::Ok(())
    })
}

#[test]
fn counters_and_swaps_read_right_when_replies_arrive_a_few_bytes_at_a_time() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let trickle = tenant_cache_tests::FakeServer::start(tenant_cache_tests::Behaviour::Trickle {
        upstream: server.address(),
        largest: 3,
    })?;
    let backend = tenant_cache_tests::backend_with_timeout(&[trickle.address()], std::time::Duration::from_secs(30))?;
    let mut cache = cache(&backend, "app")?;
    for n in 1..=20 {
        assert_eq!(cache.increment("acme", "hits", 1)?, n);
    }
    assert_eq!(cache.get("acme", "hits")?.as_deref(), Some(&b"20"[..]));
    let read = cache.get_for_swap("acme", "hits")?;
    assert!(cache.compare_and_swap("acme", "hits", b"text", &read.token)?);
    assert!(matches!(
        cache.increment("acme", "hits", 1),
        Err(CacheError::NotACounter(_))
    ));
    let read = cache.get_for_swap("acme", "doc")?;
    assert!(cache.compare_and_swap("acme", "doc", b"v", &read.token)?);
    assert!(!cache.compare_and_swap("acme", "doc", b"w", &read.token)?);
    Ok(())
}

#[test]
fn counters_on_a_pool_live_with_their_tenant_and_clear_all_hides_them_everywhere() -> anyhow::Result<()> {
    let (first, second) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
    let backend = backend(&[&first, &second])?;
    let mut cache = cache(&backend, "app")?;
    let tenants: Vec<String> = (0..16).map(|n| format!("tenant-{n}")).collect();
    for (n, tenant) in tenants.iter().enumerate() {
        for _ in 0..=n {
            cache.increment(tenant, "hits", 1)?;
        }
    }
    // Another instance reads every count, from whichever server holds it.
    let mut reader = tenant_cache_tests::cache(&backend, "app")?;
    for (n, tenant) in tenants.iter().enumerate() {
        assert_eq!(
            reader.get(tenant, "hits")?,
            Some((n + 1).to_string().into_bytes()),
            "{tenant}"
        );
    }
    let holding = |server: &MemcachedProcess| -> anyhow::Result<usize> {
        Ok(server.keys()?.iter().filter(|key| key.contains(":c:")).count())
    };
    assert!(holding(&first)? > 0 && holding(&second)? > 0, "counts on both servers");
    reader.clear_all()?;
    for tenant in &tenants {
        assert_eq!(cache.get(tenant, "hits")?, None, "{tenant}");
        assert_eq!(cache.increment(tenant, "hits", 1)?, 1, "{tenant}");
    }
    Ok(())
}

/// Tokens come back from outside (an HTTP service hands them to clients
/// as ETags): one the component did not hand out for that tenant and key
/// is refused and writes nothing, least of all a record every tenant
/// reads.
#[test]
fn forged_altered_and_misdirected_swap_tokens_are_refused_and_write_nothing() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut cache = cache(&backend, "app")?;
    for tenant in ["acme", "globex", "mallory"] {
        cache.set(tenant, "k", tenant.as_bytes(), None)?;
    }
    let read = cache.get_for_swap("acme", "k")?;
    let legit = read.token.as_str().to_owned();
    let (text, code) = legit.rsplit_once('.').expect("a sealed token");
    let flipped = format!("{text}.{}{}", if code.starts_with('0') { "1" } else { "0" }, &code[1..]);
    let forged = [
        String::from("swap1:e:x:x:-"),
        String::from("swap2:e:x:x:-"),
        String::from(""),
        String::from(text),
        flipped,
        legit.replacen("swap2:e:", "swap2:c:", 1),
        format!("{legit}0"),
    ];
    for token in &forged {
        let result = cache.compare_and_swap("mallory", "x", b"anything", &SwapToken::from(token.clone()));
        assert!(
            matches!(result, Err(CacheError::InvalidInput(_))),
            "{token:?}: {result:?}"
        );
        let result = cache.compare_and_swap("acme", "k", b"anything", &SwapToken::from(token.clone()));
        assert!(
            matches!(result, Err(CacheError::InvalidInput(_))),
            "{token:?}: {result:?}"
        );
    }
    // A real token, on another key or another tenant.
    for (tenant, key) in [("acme", "other"), ("globex", "k"), ("mallory", "x")] {
        let result = cache.compare_and_swap(tenant, key, b"anything", &read.token);
        assert!(
            matches!(result, Err(CacheError::InvalidInput(_))),
            "{tenant}/{key}: {result:?}"
        );
    }
    // Nothing moved: every tenant reads what it held, from a fresh instance.
    let mut fresh = tenant_cache_tests::cache(&backend, "app")?;
    for tenant in ["acme", "globex", "mallory"] {
        assert_eq!(fresh.get(tenant, "k")?.as_deref(), Some(tenant.as_bytes()), "{tenant}");
    }
    assert_eq!(fresh.get("mallory", "x")?, None);
    // The real token still works where it was handed out.
    assert!(cache.compare_and_swap("acme", "k", b"swapped", &read.token)?);
    // Another application (another prefix) does not take it either.
    let mut other_app = tenant_cache_tests::cache(&backend, "other-app")?;
    let result = other_app.compare_and_swap("acme", "k", b"x", &read.token);
    assert!(matches!(result, Err(CacheError::InvalidInput(_))), "{result:?}");
    Ok(())
}

/// A backend with the same token secret takes another's tokens (another
/// process, say); one without it refuses them.
#[test]
fn swap_tokens_travel_between_backends_that_share_the_token_secret() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let secret = b"a secret the platform keeps, 32b";
    let first = backend(&[&server])?.with_token_secret(secret)?;
    let second = backend(&[&server])?.with_token_secret(secret)?;
    let stranger = backend(&[&server])?.with_token_secret(b"another secret, just as long!!!!")?;
    let mut reader = cache(&first, "app")?;
    reader.set("acme", "k", b"v1", None)?;
    let read = reader.get_for_swap("acme", "k")?;
    let result = cache(&stranger, "app")?.compare_and_swap("acme", "k", b"x", &read.token);
    assert!(matches!(result, Err(CacheError::InvalidInput(_))), "{result:?}");
    assert!(cache(&second, "app")?.compare_and_swap("acme", "k", b"v2", &read.token)?);
    assert_eq!(reader.get("acme", "k")?.as_deref(), Some(&b"v2"[..]));
    assert!(backend(&[&server])?.with_token_secret(b"short").is_err());
    Ok(())
}

/// One rule for numbers swapped onto a counter: in its range, it counts on
/// from there and reads back as its count; out of it, the swap is refused
/// and stores nothing.
#[test]
fn a_number_swapped_onto_a_counter_counts_on_only_within_its_range() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut cache = cache(&backend, "app")?;
    cache.increment("acme", "n", 5)?;
    for (swapped, reads) in [
        (&b"007"[..], &b"7"[..]),
        (b"-12", b"-12"),
        (b"9223372036854775807", b"9223372036854775807"),
    ] {
        let read = cache.get_for_swap("acme", "n")?;
        assert!(cache.compare_and_swap("acme", "n", swapped, &read.token)?);
        assert_eq!(cache.get("acme", "n")?.as_deref(), Some(reads));
    }
    assert_eq!(cache.increment("acme", "n", 1)?, i64::MIN, "counts on, wrapping");
    for out_of_range in [
        &b"9223372036854775808"[..],
        b"-9223372036854775809",
        b"99999999999999999999",
    ] {
        let read = cache.get_for_swap("acme", "n")?;
        let result = cache.compare_and_swap("acme", "n", out_of_range, &read.token);
        assert!(matches!(result, Err(CacheError::InvalidInput(_))), "{result:?}");
        assert_eq!(cache.increment("acme", "n", 0)?, i64::MIN, "nothing stored");
    }
    // A set of a number out of range, then an increment: told why.
    cache.set("acme", "big", b"9223372036854775808", None)?;
    match cache.increment("acme", "big", 1) {
        Err(CacheError::NotACounter(message)) => assert!(message.contains("range"), "{message}"),
        other => panic!("{other:?}"),
    }
    Ok(())
}
