//! docs/semantics.md, guarantee 4, for changes of the server list: no
//! sequence of removing, adding, re-adding a server with its old contents,
//! reordering, or processes holding different lists makes what a clear hid
//! readable again; a process whose list is not the pool's is refused with
//! an error that says what to do; a change moves only the tenants of the
//! servers it adds or removes. And guarantee 11: of concurrent `pool set`
//! runs at most one takes effect, an interrupted one is completed (or
//! replaced) by running `pool set` again, and no process ever uses a record
//! that does not list exactly its servers.

use std::sync::Arc;
use std::time::Duration;

use tenant_cache_host::{Backend, CacheError, TenantCache};
use tenant_cache_tests::{Behaviour, FakeServer, Gate, MemcachedProcess, backend, backend_with_timeout, cache};

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

/// A proxy to `server` that holds back the `nth` write of the pool record
/// sent through it.
fn gated(server: &MemcachedProcess, nth: usize) -> anyhow::Result<(FakeServer, Arc<Gate>)> {
    let gate = Gate::new(b"ms tc:pool", nth);
    let proxy = FakeServer::start(Behaviour::Gate {
        upstream: server.address(),
        gate: gate.clone(),
    })?;
    Ok((proxy, gate))
}

fn on(servers: &[String], timeout_ms: u64) -> anyhow::Result<Backend> {
    backend_with_timeout(servers, Duration::from_millis(timeout_ms))
}

/// Whether a fresh process listing `backend`'s servers can use the pool.
fn works(backend: &Backend) -> bool {
    cache(backend, "app").is_ok_and(|mut fresh| fresh.get("probe", "k").is_ok())
}

#[test]
fn of_two_pool_sets_with_different_lists_at_once_one_fails_and_one_list_serves() -> anyhow::Result<()> {
    let (a, b, c, d) = (
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
    );
    let (c_proxy, gate) = gated(&c, 1)?;
    let ab = backend(&[&a, &b])?;
    fill(&mut cache(&ab, "app")?, TENANTS, "old")?;
    // X adds C; its write to C is held back: X has claimed the pool and
    // waits, as it would on a slow or frozen server.
    let abc_list = vec![a.address(), b.address(), c_proxy.address()];
    let abc = on(&abc_list, 5000)?;
    let x = std::thread::spawn(move || abc.set_pool(false));
    assert!(gate.reached(Duration::from_secs(5)), "X never wrote to C");
    // Meanwhile Y makes A, B, D the pool.
    let abd = backend(&[&a, &b, &d])?;
    abd.set_pool(false)?;
    gate.open();
    let refused = x
        .join()
        .expect("X's thread")
        .expect_err("X must not succeed once Y changed the pool");
    assert!(format!("{refused:#}").contains("another `pool set`"), "{refused:#}");
    // One list serves; the other is refused, so a clear on one can never
    // be missed by a read on the other.
    assert!(works(&abd));
    let mut on_abd = cache(&abd, "app")?;
    on_abd.set("t", "k", b"before the clear", None)?;
    on_abd.clear("t")?;
    let abc = on(&abc_list, 1000)?;
    refused_naming(cache(&abc, "app")?.get("t", "k"), &["pool set"]);
    assert_eq!(on_abd.get("t", "k")?, None);
    Ok(())
}

#[test]
fn a_fresh_process_never_adopts_a_record_that_does_not_list_its_servers() -> anyhow::Result<()> {
    let (a, c) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
    let (a_proxy, gate) = gated(&a, 1)?;
    // P1 lists A (through the proxy) and B; A must be the first of its list,
    // where it records a new pool.
    let b = loop {
        let candidate = MemcachedProcess::start()?;
        if candidate.address() > a_proxy.address() {
            break candidate;
        }
    };
    let p1 = on(&[a_proxy.address(), b.address()], 5000)?;
    // (A write: reads never record a pool.)
    let p1_thread =
        std::thread::spawn(move || cache(&p1, "app").and_then(|mut fresh| Ok(fresh.set("t", "k", b"p1", None)?)));
    // P1 found no record anywhere and is about to record its pool on A...
    assert!(gate.reached(Duration::from_secs(5)), "P1 never recorded a pool");
    // ...when P2 records a pool of A and C there first.
    let p2 = backend(&[&a, &c])?;
    cache(&p2, "app")?.set("t", "k", b"p2", None)?;
    gate.open();
    let refused = p1_thread.join().expect("P1's thread");
    assert!(
        matches!(&refused, Err(error) if format!("{error:#}").contains("is a pool of")),
        "{refused:?}"
    );
    assert_eq!(b.raw_get("tc:pool")?, None, "P1 wrote the other pool's record to B");
    assert!(works(&p2));
    Ok(())
}

#[test]
fn an_interrupted_pool_set_is_completed_or_replaced_by_running_it_again() -> anyhow::Result<()> {
    // Interrupted before it commits (cut off from C at its first write
    // there) and after (at its second); run again with the new list in
    // another order, or with the old list.
    for (nth, rerun_new_list) in [(1, true), (1, false), (2, true), (2, false)] {
        let (a, b, c) = (
            MemcachedProcess::start()?,
            MemcachedProcess::start()?,
            MemcachedProcess::start()?,
        );
        let (c_proxy, gate) = gated(&c, nth)?;
        let ab = backend(&[&a, &b])?;
        fill(&mut cache(&ab, "app")?, TENANTS, "v")?;
        let abc = on(&[a.address(), b.address(), c_proxy.address()], 5000)?;
        let change = std::thread::spawn({
            let abc = abc.clone();
            move || abc.set_pool(false)
        });
        // The change is cut off from C at its write there.
        assert!(gate.reached(Duration::from_secs(5)), "case {nth}: no write reached C");
        gate.cut();
        let interrupted = change.join().expect("the change's thread").expect_err("cut off");
        assert!(format!("{interrupted:#}").contains("run again"), "{interrupted:#}");
        // Until it is run again, no process uses the pool.
        assert!(!works(&ab) && !works(&abc), "case {nth}/{rerun_new_list}");
        let (rerun, other) = match rerun_new_list {
            true => (on(&[c_proxy.address(), b.address(), a.address()], 1000)?, ab),
            false => (on(&[b.address(), a.address()], 1000)?, abc),
        };
        rerun.set_pool(false)?;
        assert!(works(&rerun), "case {nth}/{rerun_new_list}");
        assert!(!works(&other), "case {nth}/{rerun_new_list}: both lists serve");
        // Tenants the change did not move kept their entries.
        let kept = share_kept(&rerun, TENANTS)?;
        assert!(kept > 0.4, "case {nth}/{rerun_new_list}: kept {kept}");
    }
    Ok(())
}

#[test]
fn pool_set_refuses_servers_that_hold_no_pool_and_leaves_the_pool_serving() -> anyhow::Result<()> {
    let (a, b, c, d) = (
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
    );
    let ab = backend(&[&a, &b])?;
    fill(&mut cache(&ab, "app")?, TENANTS, "v")?;
    let refused = backend(&[&c, &d])?.set_pool(false).expect_err("a disjoint list");
    assert!(format!("{refused:#}").contains("no pool record"), "{refused:#}");
    assert_eq!((c.raw_get("tc:pool")?, d.raw_get("tc:pool")?), (None, None));
    assert_eq!(share_kept(&ab, TENANTS)?, 1.0);
    // The way to move: old and new together, then the new alone; the old
    // servers are fenced.
    backend(&[&a, &b, &c, &d])?.set_pool(false)?;
    let cd = backend(&[&c, &d])?;
    cd.set_pool(false)?;
    assert!(works(&cd) && !works(&ab));
    Ok(())
}

#[test]
fn concurrent_pool_sets_never_leave_two_lists_serving() -> anyhow::Result<()> {
    let servers: Vec<MemcachedProcess> = (0..4).map(|_| MemcachedProcess::start()).collect::<Result<_, _>>()?;
    let list = |members: &[usize]| members.iter().map(|&n| servers[n].address()).collect::<Vec<_>>();
    fill(&mut cache(&backend(&[&servers[0], &servers[1]])?, "app")?, 8, "v")?;
    let lists = [list(&[0, 1, 2]), list(&[0, 1, 3]), list(&[1, 2, 3]), list(&[0, 2])];
    let mut changes = 0;
    for round in 0..12 {
        let barrier = Arc::new(std::sync::Barrier::new(lists.len()));
        let results: Vec<Result<String, String>> = std::thread::scope(|scope| {
            let threads: Vec<_> = lists
                .iter()
                .map(|servers| {
                    let barrier = barrier.clone();
                    scope.spawn(move || {
                        let backend = on(servers, 1000).map_err(|error| format!("{error:#}"))?;
                        barrier.wait();
                        backend.set_pool(false).map_err(|error| format!("{error:#}"))
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|thread| thread.join().expect("a pool set thread"))
                .collect()
        });
        changes += results.iter().filter(|result| result.is_ok()).count();
        for error in results.iter().filter_map(|result| result.as_ref().err()) {
            assert!(
                error.contains("pool set") || error.contains("pool show"),
                "round {round}: {error}"
            );
        }
        let serving: Vec<&Vec<String>> = lists
            .iter()
            .filter(|servers| on(servers, 1000).is_ok_and(|backend| works(&backend)))
            .collect();
        assert!(serving.len() <= 1, "round {round}: {serving:?} all serve");
    }
    assert!(changes > 0, "no pool set ever succeeded");
    Ok(())
}

#[test]
fn two_pools_merged_by_pool_set_serve_as_one_and_their_old_lists_are_refused() -> anyhow::Result<()> {
    let servers: Vec<MemcachedProcess> = (0..4).map(|_| MemcachedProcess::start()).collect::<Result<_, _>>()?;
    let (first, second) = (
        backend(&[&servers[0], &servers[1]])?,
        backend(&[&servers[2], &servers[3]])?,
    );
    fill(&mut cache(&first, "app")?, TENANTS, "first")?;
    fill(&mut cache(&second, "app")?, TENANTS, "second")?;
    let all = backend(&servers.iter().collect::<Vec<_>>())?;
    refused_naming(cache(&all, "app")?.get("m0", "/info"), &["another pool", "pool set"]);
    all.set_pool(false)?;
    // One new pool: every route tagged anew, nothing either pool kept is read.
    all_hidden(&all, &mut cache(&all, "app")?, TENANTS)?;
    assert!(works(&all) && !works(&first) && !works(&second));
    Ok(())
}

#[test]
fn removing_the_server_a_change_commits_at_moves_the_next_changes_elsewhere() -> anyhow::Result<()> {
    let servers: Vec<MemcachedProcess> = (0..3).map(|_| MemcachedProcess::start()).collect::<Result<_, _>>()?;
    let mut sorted: Vec<&MemcachedProcess> = servers.iter().collect();
    sorted.sort_by_key(|server| server.address());
    let three = backend(&sorted)?;
    fill(&mut cache(&three, "app")?, TENANTS, "v")?;
    // The first server (sorted) is where changes of this pool commit; it
    // leaves, fenced, and later changes commit at the next.
    let two = backend(&sorted[1..])?;
    two.set_pool(false)?;
    assert!(works(&two) && !works(&three));
    let record = sorted[0]
        .raw_get("tc:pool")?
        .expect("the departed server keeps a record");
    assert!(
        record.contains(&format!("departed={}", sorted[0].address())),
        "{record}"
    );
    three.set_pool(false)?;
    assert!(works(&three) && !works(&two));
    Ok(())
}

#[test]
fn a_new_process_listing_the_wrong_servers_writes_nothing_before_it_is_refused() -> anyhow::Result<()> {
    let (a, b) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
    fill(&mut cache(&backend(&[&a, &b])?, "app")?, TENANTS, "v")?;
    let stored = (a.stat("total_items")?, b.stat("total_items")?);
    let only_a = backend(&[&a])?;
    for n in 0..TENANTS {
        refused_naming(
            cache(&only_a, "app")?.set(&tenant(n), "/info", b"x", None),
            &["pool set"],
        );
        refused_naming(cache(&backend(&[&a])?, "app")?.clear(&tenant(n)), &["pool set"]);
    }
    assert_eq!((a.stat("total_items")?, b.stat("total_items")?), stored);
    Ok(())
}

/// A read writes no pool record, not even on servers that hold none: a
/// process whose list is wrong cannot record its pool by reading.
#[test]
fn a_read_never_records_a_pool() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut reader = cache(&backend, "app")?;
    for n in 0..3 {
        assert_eq!(reader.get(&tenant(n), "/info")?, None);
        assert_eq!(reader.get_many(&tenant(n), &["/a".into(), "/b".into()])?, [None, None]);
    }
    assert_eq!(server.raw_get("tc:pool")?, None, "a read recorded a pool");
    // The first write does.
    reader.set(&tenant(0), "/info", b"v", None)?;
    assert!(server.raw_get("tc:pool")?.is_some());
    assert_eq!(reader.get(&tenant(0), "/info")?.as_deref(), Some(&b"v"[..]));
    Ok(())
}

/// The review's case: pool B,C with tenants on both; B restarts empty; a
/// process listing only B reads, then writes (so records a pool of B
/// alone there). Processes with the right list carry on without an
/// operator, give B the pool's record back, keep every tenant of C, and
/// the wrong process is fenced.
#[test]
fn a_wrong_list_process_after_a_restart_cannot_take_the_pool_down() -> anyhow::Result<()> {
    a_wrong_list_after_a_restart(false)
}

/// The same with a wrong list that is no subset of the pool's: B and a
/// server D outside the pool (a pool of B,D recorded on both).
#[test]
fn a_wrong_list_reaching_beyond_the_pool_after_a_restart_cannot_take_it_down() -> anyhow::Result<()> {
    a_wrong_list_after_a_restart(true)
}

fn a_wrong_list_after_a_restart(beyond: bool) -> anyhow::Result<()> {
    let (mut b, c, d) = (
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
    );
    let right = backend(&[&b, &c])?;
    let mut writer = cache(&right, "app")?;
    fill(&mut writer, TENANTS, "kept")?;
    let on_c = tenants_on(&c)?;
    assert!(!on_c.is_empty(), "some tenants live on C");
    let on_b = (0..TENANTS)
        .find(|n| !on_c.contains(n))
        .expect("some tenants live on B");
    b.restart()?;
    // A read of the right list on the restarted server writes nothing
    // either (its next write gives the record back), and misses.
    assert_eq!(cache(&backend(&[&b, &c])?, "app")?.get(&tenant(on_b), "/info")?, None);
    assert_eq!(b.raw_get("tc:pool")?, None, "a read gave the record back");
    let wrong_list = match beyond {
        true => backend(&[&b, &d])?,
        false => backend(&[&b])?,
    };
    let mut wrong = cache(&wrong_list, "app")?;
    assert_eq!(wrong.get(&tenant(0), "/info")?, None);
    assert_eq!(b.raw_get("tc:pool")?, None, "the wrong list's read recorded nothing");
    wrong.set("wrong-tenant", "/info", b"w", None)?;
    assert!(b.raw_get("tc:pool")?.is_some(), "its write recorded a pool of its list");
    // The right list serves, from a fresh process, without an operator,
    // and C's tenants kept their entries.
    let fresh = backend(&[&b, &c])?;
    let mut reader = cache(&fresh, "app")?;
    for &n in &on_c {
        assert_eq!(
            reader.get(&tenant(n), "/info")?,
            Some(format!("kept{n}").into_bytes()),
            "{} lives on C, which kept it",
            tenant(n)
        );
    }
    // A write on B, which held the stray until now, runs once: an
    // increment counts once.
    assert_eq!(reader.increment(&tenant(on_b), "hits", 1)?, 1);
    assert_eq!(reader.increment(&tenant(on_b), "hits", 1)?, 2);
    fill(&mut reader, TENANTS, "again")?;
    assert_eq!(writer.get(&tenant(1), "/info")?, Some(b"again1".to_vec()));
    // The wrong process is fenced now, and told why, as soon as a write of
    // its own reaches B (its other server, D, still holds its record).
    let refused = (0..20)
        .filter(|n| {
            matches!(
                wrong.set(&format!("wrong-{n}"), "/info", b"w", None),
                Err(CacheError::Unavailable(message)) if message.contains("pool set")
            )
        })
        .count();
    assert!(refused > 0, "the wrong list still writes everywhere");
    Ok(())
}

/// The tenants of each server, by the keys the server holds.
fn tenants_on(server: &MemcachedProcess) -> anyhow::Result<Vec<usize>> {
    let keys = server.keys()?;
    Ok((0..TENANTS)
        .filter(|&n| keys.iter().any(|key| key.ends_with(&format!(":n:{}", tenant(n)))))
        .collect())
}

/// The operator's way out, taken before any process of the pool wrote
/// again: `pool set` with the pool's own list, while a restarted member
/// holds the record a wrong list made there. The wrong record is replaced,
/// not merged: the pool keeps its id and every tenant its tag, so the
/// tenants of the server that kept its entries keep them.
#[test]
fn pool_set_over_a_wrong_lists_record_keeps_the_tenants_whose_server_kept_them() -> anyhow::Result<()> {
    let (mut b, c, d) = (
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
    );
    fill(&mut cache(&backend(&[&b, &c])?, "app")?, TENANTS, "kept")?;
    let on_c = tenants_on(&c)?;
    assert!(!on_c.is_empty(), "some tenants live on C");
    b.restart()?;
    cache(&backend(&[&b, &d])?, "app")?.set("wrong-tenant", "/info", b"w", None)?;
    let right = backend(&[&b, &c])?;
    right.set_pool(false)?;
    let mut reader = cache(&backend(&[&b, &c])?, "app")?;
    for &n in &on_c {
        assert_eq!(
            reader.get(&tenant(n), "/info")?,
            Some(format!("kept{n}").into_bytes()),
            "{} lives on C, which kept it",
            tenant(n)
        );
    }
    refused_naming(
        cache(&backend(&[&b, &d])?, "app")?.set("wrong-tenant", "/info", b"w", None),
        &["pool"],
    );
    Ok(())
}

/// While the pool's first server (its anchor) does not answer, a restarted
/// member holding a wrong list's record is not given the pool's back (only
/// the anchor tells that no change began), but it stops only its own
/// tenants: the other servers' tenants are written and read as before.
#[test]
fn a_wrong_lists_record_while_the_anchor_is_down_stops_only_its_servers_tenants() -> anyhow::Result<()> {
    let mut servers = [
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
    ];
    servers.sort_by_key(|server| server.address());
    let [anchor, mut restarted, healthy] = servers;
    let d = MemcachedProcess::start()?;
    let list = vec![anchor.address(), restarted.address(), healthy.address()];
    fill(&mut cache(&on(&list, 300)?, "app")?, TENANTS, "kept")?;
    let (on_healthy, on_restarted) = (tenants_on(&healthy)?, tenants_on(&restarted)?);
    assert!(!on_healthy.is_empty() && !on_restarted.is_empty());
    anchor.signal("STOP")?;
    restarted.restart()?;
    cache(&backend(&[&restarted, &d])?, "app")?.set("wrong-tenant", "/info", b"w", None)?;
    let mut right = cache(&on(&list, 300)?, "app")?;
    for &n in &on_healthy {
        right.set(&tenant(n), "/info", format!("again{n}").as_bytes(), None)?;
        assert_eq!(right.get(&tenant(n), "/info")?, Some(format!("again{n}").into_bytes()));
    }
    refused_naming(
        right.set(&tenant(on_restarted[0]), "/info", b"x", None),
        &["no record of this pool", &anchor.address()],
    );
    anchor.signal("CONT")?;
    // With the anchor back, the next write gives the member the record.
    right.set(&tenant(on_restarted[0]), "/info", b"back", None)?;
    assert_eq!(right.get(&tenant(on_restarted[0]), "/info")?, Some(b"back".to_vec()));
    Ok(())
}

/// Two forced `pool set`s, each finding another server out of reach, claim
/// different anchors; the first server they share lets one through and
/// refuses the other, so at most one list ever serves.
#[test]
fn two_forced_pool_sets_that_find_different_servers_down_are_arbitrated() -> anyhow::Result<()> {
    // A < B < the proxy to C, as the pool sorts them: A anchors the pool,
    // and B is where a change that cannot reach A commits instead.
    let mut tries = 0;
    let (a, b, _c, c_proxy, gate) = loop {
        tries += 1;
        anyhow::ensure!(tries <= 30, "no ports in the order the test needs");
        let c = MemcachedProcess::start()?;
        let (c_proxy, gate) = gated(&c, 2)?;
        let (first, second) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
        let (a, b) = match first.address() < second.address() {
            true => (first, second),
            false => (second, first),
        };
        if b.address() < c_proxy.address() {
            break (a, b, c, c_proxy, gate);
        }
    };
    let all = vec![a.address(), b.address(), c_proxy.address()];
    fill(&mut cache(&on(&all, 300)?, "app")?, TENANTS, "old")?;
    // X, with A frozen, removes A: it claims B and is held at C (long
    // enough for Y, within X's deadline).
    a.signal("STOP")?;
    let bc = on(&[b.address(), c_proxy.address()], 2500)?;
    let x = std::thread::spawn(move || bc.set_pool(true));
    assert!(gate.reached(Duration::from_secs(5)), "X never wrote to C");
    // Y, with A back and B frozen, removes B: it claims A, and gets to C
    // first.
    a.signal("CONT")?;
    b.signal("STOP")?;
    let ac = on(&[a.address(), c_proxy.address()], 300)?;
    ac.set_pool(true)?;
    // Every server answers again when X goes on.
    b.signal("CONT")?;
    gate.open();
    let refused = x.join().expect("X's thread").expect_err("X must not commit once Y did");
    assert!(format!("{refused:#}").contains("another `pool set`"), "{refused:#}");
    // One list serves; the other is refused.
    assert!(works(&ac));
    let bc = on(&[b.address(), c_proxy.address()], 300)?;
    refused_naming(cache(&bc, "app")?.get("t", "k"), &["pool"]);
    Ok(())
}
