//! docs/semantics.md, guarantee 8: failures are typed values, never traps or panics.

use std::time::{Duration, Instant};

use tenant_cache_host::{Backend, CacheError, MemcachedOptions};
use tenant_cache_tests::{MemcachedProcess, cache, cache_on};

#[test]
fn errors_when_memcached_is_down() -> anyhow::Result<()> {
    let mut server = MemcachedProcess::start()?;
    let address = server.address();
    server.kill();
    let backend = Backend::memcached(std::slice::from_ref(&address), MemcachedOptions::default())?;
    let mut cache = cache(&backend, "app")?;
    let started = Instant::now();
    for result in [
        cache.get("Lisboa", "/info").map(drop),
        cache.set("Lisboa", "/info", b"x", None),
        cache.clear("Lisboa"),
        cache.clear_all(),
    ] {
        match result {
            Err(CacheError::Unavailable(message)) => assert!(message.contains(&address), "{message}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // Once memcached is back on the same port, the same instance works.
    server.restart()?;
    cache.set("Lisboa", "/info", b"back", None)?;
    assert_eq!(cache.get("Lisboa", "/info")?.as_deref(), Some(&b"back"[..]));
    Ok(())
}

#[test]
fn oversized_values_are_a_typed_error_and_nothing_is_lost() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let mut cache = cache_on(&server, "app")?;
    cache.set("Lisboa", "/big", b"old", None)?;
    // Up to far past the component's 64 MiB memory limit: refused before
    // the value is even copied into it.
    for size in [1024 * 1024 + 1, 10 * 1024 * 1024, 100 * 1024 * 1024] {
        match cache.set("Lisboa", "/big", &vec![7u8; size], None) {
            Err(CacheError::ValueTooLarge { size: reported, limit }) => {
                assert_eq!((reported, limit), (size as u64, 1024 * 1024));
            }
            other => panic!("expected value-too-large for {size} bytes, got {other:?}"),
        }
        // As memcached does for a too-large set: the old value is gone.
        assert_eq!(cache.get("Lisboa", "/big")?, None, "{size} bytes");
        cache.set("Lisboa", "/big", b"old", None)?;
    }
    // A value just under the limit, framed, exceeds what memcached stores
    // once the item header and key are counted: still a typed error.
    match cache.set("Lisboa", "/big", &vec![7u8; 1024 * 1024 - 1], None) {
        Ok(()) | Err(CacheError::ValueTooLarge { .. }) => {}
        other => panic!("expected success or value-too-large, got {other:?}"),
    }
    // Values well inside the limit, and empty values, round-trip.
    for size in [0, 1, 1000, 512 * 1024] {
        let value = vec![b'v'; size];
        cache.set("Lisboa", "/sized", &value, None)?;
        assert_eq!(cache.get("Lisboa", "/sized")?, Some(value));
    }
    Ok(())
}
