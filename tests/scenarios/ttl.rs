//! docs/semantics.md, guarantee 6: entries honour their time-to-live; namespace records do not expire
//! while they are in use.

use std::thread::sleep;
use std::time::Duration;

use tenant_cache_host::CacheError;
use tenant_cache_tests::{MemcachedProcess, cache_on};

#[test]
fn entries_with_a_ttl_expire_and_others_stay() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let mut cache = cache_on(&server, "app")?;
    cache.set("Lisboa", "/short", b"1 s", Some(1))?;
    cache.set("Lisboa", "/long", b"1 h", Some(3600))?;
    cache.set("Lisboa", "/forever", b"no ttl", None)?;
    cache.set_many("Lisboa", &[("/many".into(), b"1 s".to_vec())], Some(1))?;
    assert_eq!(cache.get("Lisboa", "/short")?.as_deref(), Some(&b"1 s"[..]));
    sleep(Duration::from_millis(2100));
    assert_eq!(cache.get("Lisboa", "/short")?, None);
    assert_eq!(cache.get("Lisboa", "/many")?, None);
    assert_eq!(cache.get("Lisboa", "/long")?.as_deref(), Some(&b"1 h"[..]));
    assert_eq!(cache.get("Lisboa", "/forever")?.as_deref(), Some(&b"no ttl"[..]));
    Ok(())
}

#[test]
fn namespace_records_outlive_short_lived_entries() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let mut cache = cache_on(&server, "app")?;
    cache.set("Lisboa", "/short", b"x", Some(1))?;
    sleep(Duration::from_millis(2100));
    // The entry expired; the records it was written under did not.
    let keys = server.keys()?;
    assert!(
        keys.contains(&"tc:app:n:Lisboa".to_string()) && keys.contains(&"tc:app:a".to_string()),
        "{keys:?}"
    );
    Ok(())
}

#[test]
fn a_ttl_beyond_30_days_is_not_read_as_a_past_timestamp() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let mut cache = cache_on(&server, "app")?;
    // memcached reads a raw TTL above 30 days as an absolute time (here:
    // 1970, already expired); the host must convert it.
    cache.set("Lisboa", "/year", b"365 days", Some(365 * 24 * 3600))?;
    assert_eq!(cache.get("Lisboa", "/year")?.as_deref(), Some(&b"365 days"[..]));
    Ok(())
}

#[test]
fn a_zero_ttl_is_refused() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let mut cache = cache_on(&server, "app")?;
    match cache.set("Lisboa", "/info", b"x", Some(0)) {
        Err(CacheError::InvalidInput(message)) => assert!(message.contains("ttl"), "{message}"),
        other => panic!("expected invalid input, got {other:?}"),
    }
    assert_eq!(cache.get("Lisboa", "/info")?, None);
    Ok(())
}

#[test]
fn a_ttl_beyond_ten_years_is_refused_with_a_reason() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let mut cache = cache_on(&server, "app")?;
    cache.set("Lisboa", "/ten-years", b"ok", Some(10 * 365 * 24 * 3600))?;
    assert_eq!(cache.get("Lisboa", "/ten-years")?.as_deref(), Some(&b"ok"[..]));
    for ttl in [10 * 365 * 24 * 3600 + 1, u32::MAX] {
        match cache.set("Lisboa", "/info", b"x", Some(ttl)) {
            Err(CacheError::InvalidInput(message)) => assert!(message.contains("at most"), "{message}"),
            other => panic!("ttl {ttl}: expected invalid input, got {other:?}"),
        }
    }
    Ok(())
}
