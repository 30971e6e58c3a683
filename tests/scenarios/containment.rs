//! Runaway guests: a component that loops, allocates without bound,
//! panics or overflows its stack is stopped with an error, and the host
//! keeps serving, that component's next call and the real component.

use std::time::{Duration, Instant};

use tenant_cache_host::{CacheError, Grant, RuntimeOptions};
use tenant_cache_tests::{MemcachedProcess, backend, cache, misbehaving};

#[test]
fn runaway_guests_are_stopped_and_the_host_keeps_serving() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let options = RuntimeOptions {
        call_timeout: Duration::from_millis(300),
        memory_limit: 16 * 1024 * 1024,
        ..Default::default()
    };
    let runaway = misbehaving(options)?;
    let mut bad = runaway.instantiate(Grant::new(backend.clone(), "bad"))?;
    let mut good = cache(&backend, "good")?;
    good.set("Lisboa", "/info", b"2 days", None)?;
    for behaviour in ["loop", "alloc", "panic", "recurse"] {
        let started = Instant::now();
        match bad.get(behaviour, "k") {
            Err(CacheError::Trap(error)) => {
                eprintln!("{behaviour}: stopped in {:?}: {error:#}", started.elapsed());
                let out_of_memory = format!("{error:#}").contains("ran out of memory (its limit is 16 MiB)");
                assert_eq!(out_of_memory, behaviour == "alloc", "{behaviour}: {error:#}");
            }
            other => panic!("{behaviour}: expected a trap, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{behaviour} ran for {:?}",
            started.elapsed()
        );
        // The same handle is served again, on a fresh instance.
        assert_eq!(bad.get("fine", "k")?.as_deref(), Some(&b"ok"[..]), "after {behaviour}");
        // And so is the real component on the same host.
        assert_eq!(
            good.get("Lisboa", "/info")?.as_deref(),
            Some(&b"2 days"[..]),
            "after {behaviour}"
        );
    }
    Ok(())
}

#[test]
fn a_loop_is_stopped_at_the_configured_deadline() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let options = RuntimeOptions {
        call_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let mut bad = misbehaving(options)?.instantiate(Grant::new(backend, "bad"))?;
    let started = Instant::now();
    let error = bad.get("loop", "k").expect_err("a loop never returns");
    let elapsed = started.elapsed();
    assert!(matches!(error, CacheError::Trap(_)), "{error:?}");
    assert!(error.to_string().contains("deadline"), "{error}");
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    Ok(())
}
