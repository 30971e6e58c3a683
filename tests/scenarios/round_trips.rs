//! docs/semantics.md, guarantee 7: one round trip per get, set and clear in steady state; one per
//! get-many / set-many.

use tenant_cache_host::{Backend, CacheError};
use tenant_cache_tests::{MemcachedProcess, backend, cache};

/// Runs `call` and checks it sent exactly one batch to memcached.
fn one_trip<T>(backend: &Backend, what: &str, call: impl FnOnce() -> Result<T, CacheError>) -> anyhow::Result<T> {
    let before = backend.batches_sent();
    let value = call()?;
    assert_eq!(
        backend.batches_sent() - before,
        1,
        "{what} took more than one round trip"
    );
    Ok(value)
}

#[test]
fn steady_state_operations_cost_one_round_trip_each() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut cache = cache(&backend, "app")?;
    cache.set("Lisboa", "/warm-up", b"x", None)?;
    let keys: Vec<String> = (0..10).map(|k| format!("/m{k}")).collect();
    let entries: Vec<(String, Vec<u8>)> = keys.iter().map(|key| (key.clone(), b"v".to_vec())).collect();
    for n in 0..20 {
        let key = format!("/k{n}");
        one_trip(&backend, "set", || cache.set("Lisboa", &key, b"v", None))?;
        assert!(one_trip(&backend, "get (hit)", || cache.get("Lisboa", &key))?.is_some());
        assert!(one_trip(&backend, "get (miss)", || cache.get("Lisboa", "/none"))?.is_none());
        one_trip(&backend, "clear", || cache.clear("Lisboa"))?;
        // A write right after this instance's own clear is still one trip.
        one_trip(&backend, "set after clear", || cache.set("Lisboa", &key, b"v", None))?;
        one_trip(&backend, "set-many", || cache.set_many("Lisboa", &entries, None))?;
        let values = one_trip(&backend, "get-many", || cache.get_many("Lisboa", &keys))?;
        assert!(values.iter().all(|value| value.as_deref() == Some(&b"v"[..])));
        one_trip(&backend, "clear-all", || cache.clear_all())?;
        one_trip(&backend, "set after clear-all", || {
            cache.set("Lisboa", &key, b"v", None)
        })?;
    }
    Ok(())
}

/// Runs `call` and returns how many batches it sent.
fn trips<T>(backend: &Backend, call: impl FnOnce() -> Result<T, CacheError>) -> anyhow::Result<u64> {
    let before = backend.batches_sent();
    call()?;
    Ok(backend.batches_sent() - before)
}

#[test]
fn a_brand_new_tenant_costs_two_round_trips_once_then_one() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut cache = cache(&backend, "app")?;
    cache.set("first-tenant", "/k", b"v", None)?;
    // A tenant nobody wrote yet has no version: the host draws one as it
    // stores it (no component knows a version before it is stored), in a
    // batch before the write; from then on, one.
    for n in 0..10 {
        let tenant = format!("new-tenant-{n}");
        assert_eq!(
            trips(&backend, || cache.set(&tenant, "/k", b"v", None))?,
            2,
            "first set"
        );
        one_trip(&backend, "second set of a tenant", || {
            cache.set(&tenant, "/k", b"w", None)
        })?;
        assert_eq!(cache.get(&tenant, "/k")?.as_deref(), Some(&b"w"[..]));
    }
    Ok(())
}

#[test]
fn a_read_of_a_new_tenant_writes_nothing_and_its_first_write_makes_its_versions() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    cache(&backend, "app")?.set("first-tenant", "/k", b"v", None)?;
    for n in 0..10 {
        let mut fresh = cache(&backend, "app")?;
        let tenant = format!("read-first-{n}");
        assert!(one_trip(&backend, "get of a new tenant", || fresh.get(&tenant, "/k"))?.is_none());
        assert!(
            server.raw_get(&format!("tc:app:n:{tenant}"))?.is_none(),
            "a read creates no version"
        );
        assert_eq!(
            trips(&backend, || fresh.set(&tenant, "/k", b"v", None))?,
            2,
            "first set after it"
        );
        assert_eq!(fresh.get(&tenant, "/k")?.as_deref(), Some(&b"v"[..]));
    }
    Ok(())
}
