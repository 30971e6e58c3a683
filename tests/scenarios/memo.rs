//! The versions memo the host keeps per application (`memo-get`/`memo-put`
//! of the capability): a fresh instance in a warm process, and one
//! instance serving more tenants than it remembers itself, write in one
//! round trip; and what the memo recalls is never trusted, so a clear by
//! another process, a restarted server, an evicted version record or a
//! memo entry gone stale cannot make a cleared entry visible.

use tenant_cache_host::{Backend, CacheError, TenantCache};
use tenant_cache_tests::{MemcachedProcess, backend, cache};

/// Runs `call` and returns how many batches it sent.
fn trips<T>(backend: &Backend, call: impl FnOnce() -> Result<T, CacheError>) -> anyhow::Result<u64> {
    let before = backend.batches_sent();
    call()?;
    Ok(backend.batches_sent() - before)
}

fn value(cache: &mut TenantCache, tenant: &str, key: &str) -> anyhow::Result<Option<String>> {
    Ok(cache
        .get(tenant, key)?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

#[test]
fn a_fresh_instance_in_a_warm_process_sets_in_one_round_trip() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut warm = cache(&backend, "app")?;
    warm.set("Lisboa", "/info", b"v0", None)?;
    for n in 1..=10 {
        let new_value = format!("v{n}");
        let mut fresh = cache(&backend, "app")?;
        assert_eq!(
            trips(&backend, || fresh.set("Lisboa", "/info", new_value.as_bytes(), None))?,
            1,
            "set of an existing key"
        );
        let mut fresh = cache(&backend, "app")?;
        assert_eq!(trips(&backend, || fresh.clear("Lisboa"))?, 1, "clear");
        let mut fresh = cache(&backend, "app")?;
        assert_eq!(
            trips(&backend, || fresh.set("Lisboa", "/info", new_value.as_bytes(), None))?,
            1,
            "set after a clear"
        );
        let mut fresh = cache(&backend, "app")?;
        let tenant = format!("new-tenant-{n}");
        // A tenant nobody wrote yet: its versions are drawn by the host as
        // they are stored, in a batch of their own before the write.
        assert_eq!(
            trips(&backend, || fresh.set(&tenant, "/k", b"v", None))?,
            2,
            "first set of a tenant"
        );
        let mut fresh = cache(&backend, "app")?;
        let entries = vec![
            ("/a".to_string(), b"1".to_vec()),
            ("/info".to_string(), new_value.clone().into_bytes()),
        ];
        assert_eq!(
            trips(&backend, || fresh.set_many("Lisboa", &entries, None))?,
            1,
            "set-many"
        );
        assert_eq!(value(&mut cache(&backend, "app")?, "Lisboa", "/info")?, Some(new_value));
        assert_eq!(
            value(&mut cache(&backend, "app")?, &tenant, "/k")?.as_deref(),
            Some("v")
        );
    }
    Ok(())
}

#[test]
fn one_instance_serving_100_000_tenants_sets_in_one_round_trip() -> anyhow::Result<()> {
    const TENANTS: usize = 100_000;
    // The embedded store counts batches as memcached would, and keeps a
    // hundred thousand tenants quickly.
    let backend = Backend::embedded();
    let mut cache = cache(&backend, "app")?;
    for n in 0..TENANTS {
        cache.set(&format!("tenant-{n}"), "/k", b"warm-up", None)?;
    }
    // Round-robin again: no tenant is among the few thousand the instance
    // remembers itself by the time it comes round.
    let before = backend.batches_sent();
    for n in (0..TENANTS).step_by(50) {
        cache.set(&format!("tenant-{n}"), "/k", b"again", None)?;
    }
    assert_eq!(backend.batches_sent() - before, (TENANTS / 50) as u64);
    for n in (0..TENANTS).step_by(5000) {
        assert_eq!(
            value(&mut cache, &format!("tenant-{n}"), "/k")?.as_deref(),
            Some("again")
        );
    }
    Ok(())
}

#[test]
fn a_clear_by_another_process_is_not_undone_by_the_memo() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    // Two processes: two backends, so two memos, on one server.
    let (here, there) = (backend(&[&server])?, backend(&[&server])?);
    cache(&here, "app")?.set("Lisboa", "/old", b"before", None)?;
    cache(&here, "app")?.set("Lisboa", "/info", b"before", None)?;
    // Cleared elsewhere: this process's memo now holds stale versions.
    cache(&there, "app")?.clear("Lisboa")?;
    let mut fresh = cache(&here, "app")?;
    // The stale guess costs a second round trip, and hides nothing it
    // should not show.
    assert_eq!(trips(&here, || fresh.set("Lisboa", "/info", b"after", None))?, 2);
    let mut reader = cache(&here, "app")?;
    assert_eq!(value(&mut reader, "Lisboa", "/old")?, None);
    assert_eq!(value(&mut reader, "Lisboa", "/info")?.as_deref(), Some("after"));
    // The same after a clear-all elsewhere.
    cache(&there, "app")?.clear_all()?;
    let mut fresh = cache(&here, "app")?;
    fresh.set("Lisboa", "/new", b"new", None)?;
    assert_eq!(value(&mut fresh, "Lisboa", "/info")?, None);
    assert_eq!(
        value(&mut cache(&here, "app")?, "Lisboa", "/new")?.as_deref(),
        Some("new")
    );
    Ok(())
}

#[test]
fn a_restarted_server_or_an_evicted_record_is_not_papered_over_by_the_memo() -> anyhow::Result<()> {
    let mut server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    // An evicted tenant record: what was written under it stays hidden,
    // though the memo still holds its version.
    cache(&backend, "app")?.set("Lisboa", "/info", b"before", None)?;
    assert!(server.raw_delete("tc:app:n:Lisboa")?);
    let mut fresh = cache(&backend, "app")?;
    fresh.set("Lisboa", "/other", b"after", None)?;
    let mut reader = cache(&backend, "app")?;
    assert_eq!(value(&mut reader, "Lisboa", "/info")?, None);
    assert_eq!(value(&mut reader, "Lisboa", "/other")?.as_deref(), Some("after"));
    // A restart loses every record; the memo remembers versions no server
    // holds any more.
    server.restart()?;
    let mut fresh = cache(&backend, "app")?;
    // The first call after the restart may meet the dead pooled connection.
    let _ = fresh.set("Lisboa", "/new", b"new", None);
    fresh.set("Lisboa", "/new", b"new", None)?;
    let mut reader = cache(&backend, "app")?;
    assert_eq!(value(&mut reader, "Lisboa", "/new")?.as_deref(), Some("new"));
    assert_eq!(value(&mut reader, "Lisboa", "/other")?, None);
    Ok(())
}

#[test]
fn a_memo_entry_gone_stale_before_use_hides_the_write_until_it_is_redone() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut writer = cache(&backend, "app")?;
    writer.set("Lisboa", "/info", b"v1", None)?;
    // A fresh instance recalls the versions...
    let mut fresh = cache(&backend, "app")?;
    // ...which go stale behind every memo: the record is replaced by hand
    // with a version nobody wrote an entry under.
    server.raw_set("tc:app:n:Lisboa", "00000000000000aa")?;
    assert_eq!(trips(&backend, || fresh.set("Lisboa", "/info", b"v2", None))?, 2);
    let mut reader = cache(&backend, "app")?;
    assert_eq!(value(&mut reader, "Lisboa", "/info")?.as_deref(), Some("v2"));
    // An entry written before the version moved stays hidden.
    server.raw_set("tc:app:n:Lisboa", "00000000000000bb")?;
    assert_eq!(value(&mut cache(&backend, "app")?, "Lisboa", "/info")?, None);
    Ok(())
}
