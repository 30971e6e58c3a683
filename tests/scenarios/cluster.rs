//! A pool of three memcached servers: one round trip per operation, losing
//! a server loses only its share, and a frozen server that comes back with
//! its old contents never brings cleared data back (clears that cannot
//! reach a tenant's server fail instead).

use std::time::Duration;

use tenant_cache_host::{Backend, CacheError, TenantCache};
use tenant_cache_tests::{MemcachedProcess, backend_with_timeout, cache};

const DEADLINE: Duration = Duration::from_millis(300);

fn pool() -> anyhow::Result<(Vec<MemcachedProcess>, Backend)> {
    let servers = vec![
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
    ];
    let addresses: Vec<String> = servers.iter().map(MemcachedProcess::address).collect();
    let backend = backend_with_timeout(&addresses, DEADLINE)?;
    Ok((servers, backend))
}

fn tenant(n: usize) -> String {
    format!("tenant-{n}")
}

fn fill(cache: &mut TenantCache, tenants: usize) -> anyhow::Result<()> {
    for n in 0..tenants {
        cache.set(&tenant(n), "/info", tenant(n).as_bytes(), None)?;
    }
    Ok(())
}

#[test]
fn on_a_pool_every_operation_is_still_one_round_trip() -> anyhow::Result<()> {
    let (servers, backend) = pool()?;
    let mut cache = cache(&backend, "app")?;
    fill(&mut cache, 30)?;
    for n in 0..30 {
        let before = backend.batches_sent();
        cache.set(&tenant(n), "/info", b"v", None)?;
        cache.get(&tenant(n), "/info")?;
        cache.get_many(&tenant(n), &["/a".into(), "/b".into(), "/info".into()])?;
        cache.clear(&tenant(n))?;
        assert_eq!(backend.batches_sent() - before, 4, "{}", tenant(n));
    }
    // clear-all reaches every server: one batch each, sent in parallel.
    let before = backend.batches_sent();
    cache.clear_all()?;
    assert_eq!(backend.batches_sent() - before, servers.len() as u64);
    // Tenants really are spread over the three servers.
    for server in &servers {
        assert!(
            server.keys()?.iter().any(|key| key.starts_with("tc:app:n:")),
            "a server holds no tenant"
        );
    }
    Ok(())
}

#[test]
fn losing_one_of_three_servers_loses_only_its_share() -> anyhow::Result<()> {
    const TENANTS: usize = 300;
    let (mut servers, backend) = pool()?;
    let mut cache = cache(&backend, "app")?;
    fill(&mut cache, TENANTS)?;
    servers[1].kill();
    let mut lost = Vec::new();
    for n in 0..TENANTS {
        match cache.get(&tenant(n), "/info") {
            Ok(value) => assert_eq!(value.as_deref(), Some(tenant(n).as_bytes())),
            Err(CacheError::Unavailable(_)) => lost.push(n),
            Err(other) => panic!("{other}"),
        }
    }
    let share = lost.len() as f64 / TENANTS as f64;
    eprintln!(
        "one of three servers killed: {} of {TENANTS} tenants' entries lost ({:.1}%)",
        lost.len(),
        share * 100.0
    );
    assert!((0.15..=0.55).contains(&share), "lost {share}");
    // Clears keep working for every tenant on a live server; those on the
    // dead one fail loudly instead of pretending.
    for n in 0..TENANTS {
        match cache.clear(&tenant(n)) {
            Ok(()) => assert_eq!(cache.get(&tenant(n), "/info")?, None),
            Err(CacheError::Unavailable(message)) => {
                assert!(
                    lost.contains(&n) && message.contains(&servers[1].address()),
                    "{message}"
                )
            }
            Err(other) => panic!("{other}"),
        }
    }
    // The server comes back empty: its tenants see nothing from before,
    // and work normally again.
    servers[1].restart()?;
    for &n in &lost {
        let _ = cache.get(&tenant(n), "/info"); // may meet a dead pooled connection once
        assert_eq!(cache.get(&tenant(n), "/info")?, None);
        cache.set(&tenant(n), "/info", b"again", None)?;
        cache.clear(&tenant(n))?;
        assert_eq!(cache.get(&tenant(n), "/info")?, None);
    }
    Ok(())
}

#[test]
fn a_frozen_server_that_resumes_never_resurrects_cleared_data() -> anyhow::Result<()> {
    const TENANTS: usize = 60;
    let (servers, backend) = pool()?;
    let mut cache = cache(&backend, "app")?;
    fill(&mut cache, TENANTS)?;
    servers[2].signal("STOP")?;
    let mut cleared = Vec::new();
    let mut refused = 0;
    for n in 0..TENANTS {
        match cache.clear(&tenant(n)) {
            Ok(()) => cleared.push(n),
            Err(CacheError::Unavailable(message)) => {
                assert!(message.contains(&servers[2].address()), "{message}");
                refused += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(
        refused > 0 && !cleared.is_empty(),
        "{refused} refused, {} cleared",
        cleared.len()
    );
    // clear-all cannot reach the frozen server: it fails loudly.
    assert!(matches!(cache.clear_all(), Err(CacheError::Unavailable(_))));
    servers[2].signal("CONT")?;
    std::thread::sleep(Duration::from_millis(50));
    // Everything whose clear succeeded stays cleared, with the frozen
    // server back and holding all its old records.
    for _ in 0..3 {
        let mut fresh = tenant_cache_tests::cache(&backend, "app")?;
        for &n in &cleared {
            assert_eq!(fresh.get(&tenant(n), "/info")?, None, "{} came back", tenant(n));
        }
    }
    // A clear-all retried now reaches every server.
    cache.clear_all()?;
    for n in 0..TENANTS {
        assert_eq!(cache.get(&tenant(n), "/info")?, None);
    }
    Ok(())
}
