//! The async host: the same guarantees through `AsyncTenantCache` on tokio,
//! one round trip per operation, a future dropped mid-exchange never
//! leaving a reply for another request, and a frozen server never
//! stalling the executor thread that serves other tenants.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tenant_cache_host::{AsyncTenantCache, Backend, CacheError, Grant};
use tenant_cache_tests::{Behaviour, FakeServer, MemcachedProcess, backend, backend_with_timeout, runtime};

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

async fn instance(backend: &Backend, app: &str) -> anyhow::Result<AsyncTenantCache> {
    runtime().instantiate_async(Grant::new(backend.clone(), app)).await
}

#[test]
fn the_async_cache_keeps_every_guarantee_in_one_round_trip_each() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    current_thread()?.block_on(async {
        let mut cache = instance(&backend, "app").await?;
        let mut other_app = instance(&backend, "other").await?;
        cache.set("Lisboa", "/info", b"2 days", None).await?;
        cache.set("Barcelona", "/info", b"3 days", Some(60)).await?;
        other_app.set("Barcelona", "/info", b"other", None).await?;
        let before = backend.batches_sent();
        cache.clear("Barcelona").await?;
        assert_eq!(cache.get("Barcelona", "/info").await?, None);
        assert_eq!(cache.get("Lisboa", "/info").await?.as_deref(), Some(&b"2 days"[..]));
        assert_eq!(backend.batches_sent() - before, 3, "one round trip per operation");
        let entries = vec![("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())];
        cache.set_many("Lisboa", &entries, None).await?;
        let keys = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(
            cache.get_many("Lisboa", &keys).await?,
            [Some(b"1".to_vec()), Some(b"2".to_vec()), None]
        );
        cache.delete("Lisboa", "a").await?;
        assert_eq!(cache.get("Lisboa", "a").await?, None);
        cache.clear_all().await?;
        assert_eq!(cache.get("Lisboa", "/info").await?, None);
        assert_eq!(
            other_app.get("Barcelona", "/info").await?.as_deref(),
            Some(&b"other"[..])
        );
        match cache.set("Lisboa", "big", &vec![0u8; 2 * 1024 * 1024], None).await {
            Err(CacheError::ValueTooLarge { .. }) => {}
            other => panic!("expected value-too-large, got {other:?}"),
        }
        anyhow::Ok(())
    })
}

#[test]
fn an_async_call_dropped_mid_exchange_never_answers_another() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let slow = Arc::new(AtomicBool::new(false));
    let proxy = FakeServer::start(Behaviour::SlowProxy {
        upstream: server.address(),
        delay: Duration::from_millis(300),
        slow: slow.clone(),
    })?;
    let backend = backend_with_timeout(&[proxy.address()], Duration::from_secs(2))?;
    current_thread()?.block_on(async {
        let mut cache = instance(&backend, "app").await?;
        let tenants: Vec<String> = (0..8).map(|n| format!("tenant-{n}")).collect();
        for tenant in &tenants {
            cache.set(tenant, "/info", tenant.as_bytes(), None).await?;
        }
        for round in 0..6 {
            let victim = &tenants[round % tenants.len()];
            slow.store(true, Ordering::Relaxed);
            // The caller gives up: the future is dropped with its reply on
            // the way.
            let gave_up = tokio::time::timeout(Duration::from_millis(50), cache.get(victim, "/info")).await;
            assert!(gave_up.is_err(), "round {round}: the slow get finished");
            slow.store(false, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
            for tenant in &tenants {
                match cache.get(tenant, "/info").await {
                    Ok(value) => assert_eq!(value.as_deref(), Some(tenant.as_bytes()), "round {round}"),
                    Err(CacheError::Unavailable(_)) | Err(CacheError::Trap(_)) => {}
                    Err(other) => panic!("round {round}: {other}"),
                }
            }
        }
        anyhow::Ok(())
    })
}

#[test]
fn a_frozen_server_does_not_stall_other_tenants_on_one_executor_thread() -> anyhow::Result<()> {
    let (frozen, live) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
    let backend = backend_with_timeout(&[frozen.address(), live.address()], Duration::from_millis(800))?;
    // Tenants on each server, known by where their records land.
    let runtime_thread = current_thread()?;
    let (on_frozen, on_live) = runtime_thread.block_on(async {
        let mut cache = instance(&backend, "app").await?;
        let (mut on_frozen, mut on_live) = (Vec::new(), Vec::new());
        for n in 0..40 {
            let tenant = format!("t{n}");
            cache.set(&tenant, "/k", b"v", None).await?;
            match live.raw_get(&format!("tc:app:n:{tenant}"))?.is_some() {
                true => on_live.push(tenant),
                false => on_frozen.push(tenant),
            }
        }
        anyhow::Ok((on_frozen, on_live))
    })?;
    assert!(!on_frozen.is_empty() && !on_live.is_empty());
    frozen.signal("STOP")?;
    let result = runtime_thread.block_on(async {
        let started = Instant::now();
        let stuck: Vec<_> = on_frozen
            .iter()
            .take(4)
            .map(|tenant| {
                let (backend, tenant) = (backend.clone(), tenant.clone());
                tokio::spawn(async move {
                    let mut cache = instance(&backend, "app").await.expect("an instance");
                    cache.get(&tenant, "/k").await.map(drop)
                })
            })
            .collect();
        // Spawned tasks start once this one waits; let them send first.
        tokio::task::yield_now().await;
        // Tenants of the live server are served while those calls wait.
        for tenant in &on_live {
            let mut cache = instance(&backend, "app").await?;
            assert_eq!(cache.get(tenant, "/k").await?.as_deref(), Some(&b"v"[..]));
        }
        let served_by = started.elapsed();
        for task in stuck {
            assert!(matches!(task.await?, Err(CacheError::Unavailable(_))));
        }
        anyhow::Ok((served_by, started.elapsed()))
    });
    frozen.signal("CONT")?;
    let (served_by, all_done) = result?;
    eprintln!("live tenants served in {served_by:?}; the frozen server's calls failed after {all_done:?}");
    assert!(
        served_by < Duration::from_millis(400),
        "live tenants waited {served_by:?}"
    );
    assert!(all_done >= Duration::from_millis(700), "{all_done:?}");
    Ok(())
}

#[test]
fn a_host_that_creates_and_drops_runtimes_keeps_reusing_connections() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    // More runtimes than a server keeps idle connections, each dropped
    // with its connection left idle.
    for _ in 0..80 {
        current_thread()?.block_on(async {
            instance(&backend, "app").await?.get("t", "k").await?;
            anyhow::Ok(())
        })?;
    }
    let before = server.stat("total_connections")?;
    current_thread()?.block_on(async {
        for _ in 0..20 {
            instance(&backend, "app").await?.get("t", "k").await?;
        }
        anyhow::Ok(())
    })?;
    // One connection for the new runtime, one for `stats` itself.
    let dialed = server.stat("total_connections")? - before;
    assert!(dialed <= 2, "20 calls on one runtime dialed {dialed} connections");
    // The dropped runtimes' connections were closed past 64.
    let open = server.stat("curr_connections")?;
    assert!(open <= 64 + 4, "{open} connections open after 81 runtimes");
    Ok(())
}
