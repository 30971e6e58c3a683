//! What an operator sees: counters through the `metrics` facade (checked
//! with a test recorder), labelled by application always and by tenant
//! only when the grant asks for it.

use tenant_cache_host::{CacheError, Grant};
use tenant_cache_tests::{MemcachedProcess, backend, counters, runtime};

fn exercise(grant: Grant) -> anyhow::Result<()> {
    let mut cache = runtime().instantiate(grant)?;
    cache.set("Lisboa", "/info", b"2 days", None)?;
    cache.set("Lisboa", "/other", b"xyz", None)?;
    assert!(cache.get("Lisboa", "/info")?.is_some());
    assert!(cache.get("Lisboa", "/none")?.is_none());
    cache.clear("Lisboa")?;
    assert!(matches!(
        cache.set("Lisboa", "/info", b"x", Some(0)),
        Err(CacheError::InvalidInput(_))
    ));
    Ok(())
}

#[test]
fn counters_count_calls_bytes_errors_and_round_trips_per_application() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let seen = counters(|| exercise(Grant::new(backend.clone(), "obs")))?;
    let count = |key: &str| {
        seen.get(key)
            .copied()
            .unwrap_or_else(|| panic!("{key} missing in {seen:#?}"))
    };
    assert_eq!(
        count("tenant_cache_calls_total{app=obs,operation=set,outcome=stored}"),
        2
    );
    assert_eq!(count("tenant_cache_calls_total{app=obs,operation=get,outcome=hit}"), 1);
    assert_eq!(count("tenant_cache_calls_total{app=obs,operation=get,outcome=miss}"), 1);
    assert_eq!(
        count("tenant_cache_calls_total{app=obs,operation=clear,outcome=cleared}"),
        1
    );
    assert_eq!(
        count("tenant_cache_calls_total{app=obs,operation=set,outcome=error}"),
        1
    );
    assert_eq!(
        count("tenant_cache_errors_total{app=obs,kind=invalid_input,operation=set}"),
        1
    );
    assert_eq!(count("tenant_cache_bytes_written_total{app=obs}"), 9);
    assert_eq!(count("tenant_cache_bytes_read_total{app=obs}"), 6);
    assert!(count("tenant_cache_round_trips_total{app=obs}") >= 5);
    // A million tenants must not make a million label sets by default.
    assert!(seen.keys().all(|key| !key.contains("tenant=")), "{seen:#?}");
    Ok(())
}

#[test]
fn tenants_are_labels_only_when_the_grant_asks() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let grant = Grant::new(backend.clone(), "obs").with_tenant_labels(true);
    let seen = counters(|| exercise(grant))?;
    assert_eq!(
        seen.get("tenant_cache_calls_total{app=obs,operation=get,outcome=hit,tenant=Lisboa}"),
        Some(&1),
        "{seen:#?}"
    );
    Ok(())
}

#[test]
fn a_refused_batch_is_counted_with_its_reason() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let seen = counters(|| {
        let mut cache = runtime().instantiate(Grant::new(backend.clone(), "obs"))?;
        let keys = vec![String::from("k"); 100_000];
        assert!(matches!(cache.get_many("t", &keys), Err(CacheError::OverLimit(_))));
        Ok(())
    })?;
    assert_eq!(
        seen.get("tenant_cache_refused_batches_total{app=obs,reason=over_limit}"),
        Some(&1),
        "{seen:#?}"
    );
    Ok(())
}
