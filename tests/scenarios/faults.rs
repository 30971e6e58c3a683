//! memcached going away, freezing, restarting, and servers that misbehave
//! on the wire: typed errors in bounded time, recovery without a host
//! restart, and never a value that belongs to another key or tenant.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tenant_cache_host::{CacheError, TenantCache};
use tenant_cache_tests::{Behaviour, FakeServer, MemcachedProcess, backend_with_timeout, cache};

const DEADLINE: Duration = Duration::from_millis(300);

fn unavailable<T: std::fmt::Debug>(result: Result<T, CacheError>, what: &str) {
    match result {
        Err(CacheError::Unavailable(_)) => {}
        other => panic!("{what}: expected unavailable, got {other:?}"),
    }
}

fn cache_at(address: String) -> anyhow::Result<TenantCache> {
    cache(&backend_with_timeout(&[address], DEADLINE)?, "app")
}

#[test]
fn memcached_killed_mid_run_fails_fast_and_recovers_on_restart() -> anyhow::Result<()> {
    let mut server = MemcachedProcess::start()?;
    let mut cache = cache_at(server.address())?;
    for n in 0..200 {
        cache.set("Lisboa", &format!("/k{n}"), b"v", None)?;
    }
    server.kill();
    let killed = Instant::now();
    let mut to_error = None;
    for n in 0..20 {
        let started = Instant::now();
        unavailable(cache.get("Lisboa", &format!("/k{n}")), "get after kill");
        unavailable(cache.set("Lisboa", "/k", b"v", None), "set after kill");
        unavailable(cache.clear("Lisboa"), "clear after kill");
        assert!(
            started.elapsed() < DEADLINE * 3 + Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
        to_error.get_or_insert(killed.elapsed());
    }
    server.restart()?;
    let restarted = Instant::now();
    let mut recovered = None;
    while restarted.elapsed() < Duration::from_secs(5) {
        if cache.set("Lisboa", "/k", b"back", None).is_ok() {
            recovered = Some(restarted.elapsed());
            break;
        }
    }
    let recovered = recovered.expect("operations succeed again within 5 s of the restart");
    assert_eq!(cache.get("Lisboa", "/k")?.as_deref(), Some(&b"back"[..]));
    eprintln!("killed: first error after {to_error:?}; recovered {recovered:?} after the restart");
    Ok(())
}

#[test]
fn frozen_memcached_times_out_then_works_again() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let mut cache = cache_at(server.address())?;
    cache.set("Lisboa", "/info", b"2 days", None)?;
    cache.set("Barcelona", "/info", b"3 days", None)?;
    server.signal("STOP")?;
    for (tenant, _) in [("Lisboa", 0), ("Barcelona", 1)] {
        let started = Instant::now();
        unavailable(cache.get(tenant, "/info"), "get while frozen");
        let elapsed = started.elapsed();
        assert!(elapsed >= DEADLINE / 2 && elapsed < DEADLINE * 4, "{elapsed:?}");
        eprintln!("frozen: get failed after {elapsed:?}");
    }
    server.signal("CONT")?;
    let resumed = Instant::now();
    // The late replies to the timed-out requests must never be taken for
    // the answers to these.
    assert_eq!(cache.get("Barcelona", "/info")?.as_deref(), Some(&b"3 days"[..]));
    assert_eq!(cache.get("Lisboa", "/info")?.as_deref(), Some(&b"2 days"[..]));
    eprintln!("frozen: served again {:?} after SIGCONT", resumed.elapsed());
    Ok(())
}

#[test]
fn a_server_that_never_answers_times_out() -> anyhow::Result<()> {
    let silent = FakeServer::start(Behaviour::Silent)?;
    let mut cache = cache_at(silent.address())?;
    for _ in 0..3 {
        let started = Instant::now();
        unavailable(cache.get("Lisboa", "/info"), "silent server");
        unavailable(cache.clear("Lisboa"), "silent server");
        assert!(started.elapsed() < DEADLINE * 4, "{:?}", started.elapsed());
    }
    Ok(())
}

#[test]
fn a_server_that_closes_every_connection_is_unavailable() -> anyhow::Result<()> {
    let slam = FakeServer::start(Behaviour::Slam)?;
    let mut cache = cache_at(slam.address())?;
    let started = Instant::now();
    unavailable(cache.get("Lisboa", "/info"), "slamming server");
    unavailable(cache.set("Lisboa", "/info", b"x", None), "slamming server");
    assert!(started.elapsed() < DEADLINE * 4, "{:?}", started.elapsed());
    Ok(())
}

#[test]
fn malformed_or_mismatched_replies_are_errors_never_values() -> anyhow::Result<()> {
    let replies: [&'static [u8]; 5] = [
        b"garbage\r\n",
        b"VA 6 O999\r\nforged\r\n",
        b"VA 6\r\nforged\r\nVA 6\r\nforged\r\nVA 6\r\nforged\r\n",
        b"EN\r\nEN\r\n",
        b"SERVER_ERROR out of memory\r\n",
    ];
    for reply in replies {
        let liar = FakeServer::start(Behaviour::Reply(reply))?;
        let mut cache = cache_at(liar.address())?;
        for _ in 0..3 {
            match cache.get("Lisboa", "/info") {
                Ok(Some(value)) => panic!(
                    "{:?}: returned a forged value {value:?}",
                    String::from_utf8_lossy(reply)
                ),
                Err(CacheError::Trap(error)) => panic!("trap: {error:#}"),
                // A reply set that cannot be matched is an error; one that
                // parses (all misses) is a miss.
                Ok(None) | Err(_) => {}
            }
        }
    }
    Ok(())
}

#[test]
fn a_late_reply_is_never_paired_with_the_next_request() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let slow = Arc::new(AtomicBool::new(false));
    let proxy = FakeServer::start(Behaviour::SlowProxy {
        upstream: server.address(),
        delay: DEADLINE * 2,
        slow: slow.clone(),
    })?;
    let mut cache = cache_at(proxy.address())?;
    let tenants: Vec<String> = (0..8).map(|n| format!("tenant-{n}")).collect();
    for tenant in &tenants {
        cache.set(tenant, "/info", tenant.as_bytes(), None)?;
    }
    for round in 0..6 {
        slow.store(true, Ordering::Relaxed);
        let victim = &tenants[round % tenants.len()];
        unavailable(cache.get(victim, "/info"), "slow reply");
        slow.store(false, Ordering::Relaxed);
        // The late reply may still be in flight: every answer now must be
        // the asked tenant's own value (or an error), never the victim's.
        thread::sleep(Duration::from_millis(20));
        for tenant in &tenants {
            match cache.get(tenant, "/info") {
                Ok(value) => assert_eq!(value.as_deref(), Some(tenant.as_bytes()), "round {round}"),
                Err(CacheError::Unavailable(_)) => {}
                Err(other) => panic!("round {round}: {other}"),
            }
        }
    }
    Ok(())
}
