//! docs/semantics.md, guarantee 4: losing namespace records never makes cleared data visible again.
//! (A counter that restarts at 0 after eviction does exactly that.)

use tenant_cache_tests::{MemcachedProcess, cache_on};

#[test]
fn deleting_namespace_records_after_a_clear_never_resurrects_data() -> anyhow::Result<()> {
    // Every subset of the two records of the tenant, deleted after a clear.
    for lost in [
        &["tc:app:n:Lisboa"][..],
        &["tc:app:a"],
        &["tc:app:a", "tc:app:n:Lisboa"],
    ] {
        let server = MemcachedProcess::start()?;
        let mut cache = cache_on(&server, "app")?;
        cache.set("Lisboa", "/info", b"before", None)?;
        cache.clear("Lisboa")?;
        for record in lost {
            // Read directly: `lru_crawler metadump` can miss an item that is
            // being bumped in the LRU at that moment.
            assert!(server.raw_get(record)?.is_some(), "{record} is not there");
            assert!(server.raw_delete(record)?);
        }
        assert_eq!(
            cache.get("Lisboa", "/info")?,
            None,
            "resurrected after deleting {lost:?}"
        );
        // New writes recreate the records; the old entry stays hidden, in
        // this instance and in a fresh one, through further clears too.
        for round in 0..20 {
            cache.set("Lisboa", "/other", b"new", None)?;
            let mut fresh = cache_on(&server, "app")?;
            assert_eq!(fresh.get("Lisboa", "/info")?, None, "resurrected in round {round}");
            assert_eq!(fresh.get("Lisboa", "/other")?.as_deref(), Some(&b"new"[..]));
            for record in lost {
                server.raw_delete(record)?;
            }
        }
    }
    Ok(())
}

#[test]
fn deleting_the_records_before_any_clear_only_hides_data() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let mut cache = cache_on(&server, "app")?;
    cache.set("Lisboa", "/info", b"2 days", None)?;
    server.raw_delete("tc:app:n:Lisboa")?;
    // Unverifiable entries are misses, never guesses.
    assert_eq!(cache.get("Lisboa", "/info")?, None);
    cache.set("Lisboa", "/info", b"3 days", None)?;
    assert_eq!(cache.get("Lisboa", "/info")?.as_deref(), Some(&b"3 days"[..]));
    Ok(())
}

#[test]
fn a_memcached_restart_after_clears_brings_nothing_back() -> anyhow::Result<()> {
    let mut server = MemcachedProcess::start()?;
    let mut cache = cache_on(&server, "app")?;
    cache.set("Lisboa", "/info", b"before", None)?;
    cache.clear("Lisboa")?;
    server.restart()?;
    // The first call after the restart may meet the dead pooled connection.
    let _ = cache.get("Lisboa", "/info");
    assert_eq!(cache.get("Lisboa", "/info")?, None);
    cache.set("Lisboa", "/info", b"after", None)?;
    assert_eq!(cache.get("Lisboa", "/info")?.as_deref(), Some(&b"after"[..]));
    Ok(())
}

#[test]
fn a_foreign_value_in_a_version_record_is_replaced_not_trusted() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let mut cache = cache_on(&server, "app")?;
    cache.set("Lisboa", "/info", b"before", None)?;
    // Someone else overwrites the tenant's version record with junk.
    server.raw_set("tc:app:n:Lisboa", "not-a-version")?;
    let mut fresh = cache_on(&server, "app")?;
    assert_eq!(fresh.get("Lisboa", "/info")?, None);
    // Writes still work (the record is replaced), and the old entry stays hidden.
    fresh.set("Lisboa", "/other", b"after", None)?;
    assert_eq!(fresh.get("Lisboa", "/other")?.as_deref(), Some(&b"after"[..]));
    assert_eq!(cache.get("Lisboa", "/info")?, None);
    Ok(())
}
