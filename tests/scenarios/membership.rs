//! docs/semantics.md, guarantee 4, for changes of the server list: no
//! sequence of removing, adding, re-adding a server with its old contents,
//! reordering, or processes holding different lists makes what a clear hid
//! readable again; a process whose list is not the pool's is refused with
//! an error that says what to do; a change moves only the tenants of the
//! servers it adds or removes.

use tenant_cache_host::{Backend, CacheError, TenantCache};
use tenant_cache_tests::{MemcachedProcess, backend, cache};

const TENANTS: usize = 40;

fn tenant(n: usize) -> String {
    format!("m{n}")
}

fn fill(cache: &mut TenantCache, tenants: usize, value: &str) -> anyhow::Result<()> {
    for n in 0..tenants {
        cache.set(&tenant(n), "/info", format!("{value}{n}").as_bytes(), None)?;
    }
    Ok(())
}

/// Asserts no tenant reads anything, through a fresh instance and `also`.
fn all_hidden(backend: &Backend, also: &mut TenantCache, tenants: usize) -> anyhow::Result<()> {
    let mut fresh = cache(backend, "app")?;
    for n in 0..tenants {
        assert_eq!(fresh.get(&tenant(n), "/info")?, None, "{} came back", tenant(n));
        assert_eq!(also.get(&tenant(n), "/info")?, None, "{} came back", tenant(n));
    }
    Ok(())
}

fn refused_naming(result: Result<impl std::fmt::Debug, CacheError>, needles: &[&str]) {
    match result {
        Err(CacheError::Unavailable(message)) => {
            for needle in needles {
                assert!(message.contains(needle), "{needle:?} not in {message}");
            }
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_server_removed_then_readded_with_its_contents_serves_nothing_cleared() -> anyhow::Result<()> {
    let (a, b) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
    let both = backend(&[&a, &b])?;
    let mut old = cache(&both, "app")?;
    fill(&mut old, TENANTS, "old")?;
    // A process started with a shorter list is refused, and told what to do.
    let only_a = backend(&[&a])?;
    let mut short = cache(&only_a, "app")?;
    refused_naming(short.clear(&tenant(0)), &[&a.address(), &b.address(), "pool set"]);
    // The operator makes A alone the pool: B is fenced off, the clears run.
    only_a.set_pool(false)?;
    for n in 0..TENANTS {
        short.clear(&tenant(n))?;
    }
    // A process still holding the old list is refused, even on B.
    for n in 0..TENANTS {
        refused_naming(old.get(&tenant(n), "/info"), &["pool set"]);
    }
    // B comes back with all its old contents.
    both.set_pool(false)?;
    all_hidden(&both, &mut old, TENANTS)?;
    // And works: its tenants store and read again.
    fill(&mut old, TENANTS, "new")?;
    for n in 0..TENANTS {
        let value = old.get(&tenant(n), "/info")?;
        assert_eq!(value, Some(format!("new{n}").into_bytes()));
    }
    Ok(())
}

#[test]
fn a_clear_all_without_a_server_stays_done_when_it_returns() -> anyhow::Result<()> {
    let (a, b) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
    let both = backend(&[&a, &b])?;
    let mut old = cache(&both, "app")?;
    fill(&mut old, TENANTS, "old")?;
    let only_a = backend(&[&a])?;
    refused_naming(cache(&only_a, "app")?.clear_all(), &["pool set"]);
    only_a.set_pool(false)?;
    cache(&only_a, "app")?.clear_all()?;
    both.set_pool(false)?;
    all_hidden(&both, &mut old, TENANTS)
}

#[test]
fn a_server_added_then_removed_brings_back_nothing_cleared_while_it_served() -> anyhow::Result<()> {
    let (a, b) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
    let only_a = backend(&[&a])?;
    fill(&mut cache(&only_a, "app")?, TENANTS, "old")?;
    // B joins: the tenants it takes start empty there, A keeps their old
    // entries and versions.
    let both = backend(&[&a, &b])?;
    both.set_pool(false)?;
    let mut with_b = cache(&both, "app")?;
    for n in 0..TENANTS {
        with_b.clear(&tenant(n))?;
    }
    // B leaves: its tenants go back to A, whose records predate the clears.
    only_a.set_pool(false)?;
    all_hidden(&only_a, &mut cache(&only_a, "app")?, TENANTS)
}

#[test]
fn a_frozen_server_removed_with_force_is_refused_when_it_thaws() -> anyhow::Result<()> {
    let (a, b) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
    let both =
        tenant_cache_tests::backend_with_timeout(&[a.address(), b.address()], std::time::Duration::from_millis(300))?;
    fill(&mut cache(&both, "app")?, TENANTS, "old")?;
    b.signal("STOP")?;
    let only_a = tenant_cache_tests::backend_with_timeout(&[a.address()], std::time::Duration::from_millis(300))?;
    // Leaving servers must be reachable to be fenced, unless forced.
    let refused = only_a.set_pool(false).expect_err("B cannot be fenced");
    assert!(format!("{refused:#}").contains("--force"), "{refused:#}");
    only_a.set_pool(true)?;
    for n in 0..TENANTS {
        cache(&only_a, "app")?.clear(&tenant(n))?;
    }
    b.signal("CONT")?;
    // B still holds the old record, but a process listing A and B (even a
    // brand-new one whose first batch goes to B) learns of the new pool.
    for n in 0..TENANTS {
        let fresh = backend(&[&a, &b])?;
        refused_naming(cache(&fresh, "app")?.get(&tenant(n), "/info"), &["pool set"]);
    }
    Ok(())
}

#[test]
fn the_order_of_the_list_does_not_matter() -> anyhow::Result<()> {
    let (a, b) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
    fill(&mut cache(&backend(&[&a, &b])?, "app")?, TENANTS, "v")?;
    let mut reordered = cache(&backend(&[&b, &a])?, "app")?;
    for n in 0..TENANTS {
        assert_eq!(reordered.get(&tenant(n), "/info")?, Some(format!("v{n}").into_bytes()));
    }
    Ok(())
}

/// The share of `tenants` whose entry a fresh instance on `backend` reads.
fn share_kept(backend: &Backend, tenants: usize) -> anyhow::Result<f64> {
    let mut fresh = cache(backend, "app")?;
    let mut kept = 0;
    for n in 0..tenants {
        if let Some(value) = fresh.get(&tenant(n), "/info")? {
            assert_eq!(value, format!("v{n}").into_bytes());
            kept += 1;
        }
    }
    Ok(kept as f64 / tenants as f64)
}

#[test]
fn adding_or_removing_one_server_moves_only_its_share() -> anyhow::Result<()> {
    const MANY: usize = 600;
    let servers: Vec<MemcachedProcess> = (0..4).map(|_| MemcachedProcess::start()).collect::<Result<_, _>>()?;
    let three = backend(&[&servers[0], &servers[1], &servers[2]])?;
    fill(&mut cache(&three, "app")?, MANY, "v")?;
    let four = backend(&servers.iter().collect::<Vec<_>>())?;
    four.set_pool(false)?;
    let lost_adding = 1.0 - share_kept(&four, MANY)?;
    // Removing the fourth again: its tenants' entries (none, it started
    // empty) are lost, every other tenant keeps its own.
    three.set_pool(false)?;
    let kept_removing = share_kept(&three, MANY)?;
    eprintln!(
        "adding a fourth server to three lost {:.1}% of {MANY} tenants' entries; removing it again kept {:.1}%",
        lost_adding * 100.0,
        kept_removing * 100.0
    );
    assert!((0.15..=0.35).contains(&lost_adding), "lost {lost_adding}");
    assert!(
        (kept_removing - (1.0 - lost_adding)).abs() < 1e-9,
        "kept {kept_removing}"
    );
    Ok(())
}
