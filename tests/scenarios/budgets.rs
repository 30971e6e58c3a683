//! Fair share (docs/trust.md): a platform's budgets on a grant bound to a
//! tenant refuse exactly what exceeds them, whole and before anything is
//! sent, across every instance and task of the process; they never touch
//! another tenant; a TTL cap shortens what the tenant stores; the usage of
//! each tenant is counted where every path meets, at the grant.

use std::time::Duration;

use tenant_cache_host::{Backend, Budget, Budgets, CacheError, Grant, Limit, OverBudget, Rate};
use tenant_cache_tests::{MemcachedProcess, backend, cache, counters, kv_app, run_app, runtime};

/// A budget that refills by one unit a second: within a test, what a
/// budget holds is its burst.
fn slow(burst: u64) -> Option<Rate> {
    Some(Rate { per_second: 1, burst })
}

fn bytes(burst: u64) -> Budgets {
    Budgets {
        bytes_written: slow(burst),
        ..Budgets::default()
    }
}

fn bound(backend: &Backend, tenant: &str, budgets: Budgets) -> Grant {
    Grant::new(backend.clone(), "app")
        .bound_to(tenant)
        .with_budgets(budgets)
}

/// The refusal in `result`, if a budget refused it.
fn refusal<T: std::fmt::Debug>(result: Result<T, CacheError>) -> OverBudget {
    match result {
        Err(CacheError::OverLimit(Limit::Budget(over))) => over,
        other => panic!("expected a budget's refusal, got {other:?}"),
    }
}

/// A value of 4000 bytes costs a little more once framed and keyed: two
/// fit a burst of 10 000 bytes, three do not.
const VALUE: usize = 4000;

#[test]
fn a_write_budget_pays_for_its_burst_then_refuses_with_which_budget_and_when() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut acme = runtime().instantiate(bound(&backend, "acme", bytes(10_000)))?;
    acme.set("acme", "/1", &[1; VALUE], None)?;
    acme.set("acme", "/2", &[2; VALUE], None)?;
    let over = refusal(acme.set("acme", "/3", &[3; VALUE], None));
    assert_eq!(
        (over.budget, over.per_second, over.burst),
        (Budget::BytesWritten, 1, 10_000)
    );
    // The wait is what the missing bytes take at one byte a second.
    let wait = over.retry_after_ms.expect("a write within the burst can wait");
    assert!((1_000_000..=3_000_000).contains(&wait), "{wait} ms");
    let message = CacheError::OverLimit(Limit::Budget(over)).to_string();
    assert!(
        message.contains("budget of 1 bytes written per second") && message.contains("retry in"),
        "{message}"
    );
    // Reads and clears store nothing: the budget of bytes lets them by.
    assert_eq!(acme.get("acme", "/1")?.as_deref(), Some(&[1; VALUE][..]));
    assert_eq!(acme.get("acme", "/3")?, None);
    acme.clear("acme")?;
    // A write larger than the burst is refused whatever the wait.
    let mut small = runtime().instantiate(bound(&backend, "small", bytes(1000)))?;
    let never = refusal(small.set("small", "/big", &[0; 2000], None));
    assert_eq!(never.retry_after_ms, None);
    Ok(())
}

#[test]
fn a_refused_write_stores_nothing() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut operator = cache(&backend, "app")?;
    operator.set("acme", "/kept", b"before", None)?;
    let mut acme = runtime().instantiate(bound(&backend, "acme", bytes(10_000)))?;
    acme.set("acme", "/1", &[1; VALUE], None)?;
    acme.set("acme", "/2", &[2; VALUE], None)?;
    refusal(acme.set("acme", "/kept", &[3; VALUE], None));
    refusal(acme.set_many("acme", &[("/new".into(), vec![4; VALUE])], None));
    assert_eq!(operator.get("acme", "/kept")?.as_deref(), Some(&b"before"[..]));
    assert_eq!(operator.get("acme", "/new")?, None);
    Ok(())
}

#[test]
fn a_command_budget_counts_every_command_and_spares_reads_nothing() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let budgets = Budgets {
        commands: slow(60),
        ..Budgets::default()
    };
    let mut acme = runtime().instantiate(bound(&backend, "acme", budgets))?;
    acme.set("acme", "/k", b"v", None)?;
    let mut gets = 0;
    let over = loop {
        match acme.get("acme", "/k") {
            Ok(value) => assert_eq!(value.as_deref(), Some(&b"v"[..])),
            Err(error) => break refusal::<()>(Err(error)),
        }
        gets += 1;
        assert!(gets < 60, "60 commands pay for fewer than 60 gets");
    };
    assert_eq!((over.budget, over.burst), (Budget::Commands, 60));
    // A warm get is one batch of a few commands: 60 pay for a dozen or more.
    assert!(gets >= 12, "only {gets} gets");
    Ok(())
}

#[test]
fn budgets_hold_across_instances_threads_and_async_tasks() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    // Warm the tenant's version, so every write below costs the same: an
    // instance that does not know it yet stores its first write twice,
    // and pays twice.
    cache(&backend, "app")?.set("acme", "/warm", b"", None)?;
    cache(&backend, "app")?.set("globex", "/warm", b"", None)?;
    // Three writes fit the burst, across three threads' instances.
    let burst = 3 * (VALUE as u64 + 100);
    let stored: usize = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..3)
            .map(|thread| {
                let backend = backend.clone();
                scope.spawn(move || -> anyhow::Result<usize> {
                    let mut acme = runtime().instantiate(bound(&backend, "acme", bytes(burst)))?;
                    acme.get("acme", "/warm")?;
                    let mut stored = 0;
                    for n in 0..3 {
                        match acme.set("acme", &format!("/{thread}/{n}"), &[0; VALUE], None) {
                            Ok(()) => stored += 1,
                            Err(CacheError::OverLimit(Limit::Budget(_))) => {}
                            Err(other) => return Err(other.into()),
                        }
                    }
                    Ok(stored)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .sum::<anyhow::Result<usize>>()
    })?;
    assert_eq!(stored, 3, "the tenant's budget is one, whatever the instance");

    // Eight tasks, each with its instance, on another tenant.
    let executor = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stored = executor.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..8 {
            let grant = bound(&backend, "globex", bytes(burst));
            tasks.push(tokio::spawn(async move {
                let mut globex = runtime().instantiate_async(grant).await?;
                globex.get("globex", "/warm").await?;
                match globex.set("globex", &format!("/{task}"), &[0; VALUE], None).await {
                    Ok(()) => anyhow::Ok(1),
                    Err(CacheError::OverLimit(Limit::Budget(_))) => Ok(0),
                    Err(other) => Err(other.into()),
                }
            }));
        }
        let mut stored = 0;
        for task in tasks {
            stored += task.await??;
        }
        anyhow::Ok(stored)
    })?;
    assert_eq!(stored, 3);
    Ok(())
}

#[test]
fn one_tenants_budget_never_touches_another_and_a_tenant_within_budget_sees_no_error() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut acme = runtime().instantiate(bound(&backend, "acme", bytes(10)))?;
    refusal(acme.set("acme", "/k", b"more than ten bytes", None));
    // The same budgets bind globex to buckets of its own, full.
    let generous = Budgets {
        bytes_written: Some(Rate {
            per_second: 1 << 20,
            burst: 1 << 20,
        }),
        commands: Some(Rate {
            per_second: 10_000,
            burst: 10_000,
        }),
        max_ttl: None,
    };
    let mut globex = runtime().instantiate(bound(&backend, "globex", generous))?;
    let mut operator = cache(&backend, "app")?;
    for n in 0..200 {
        let key = format!("/{n}");
        globex.set("globex", &key, &[7; 1000], None)?;
        assert_eq!(globex.get("globex", &key)?.as_deref(), Some(&[7; 1000][..]));
        // The operator's grant has no budget: the unbound path is bounded
        // only when asked.
        operator.set("acme", &key, &[8; 1000], None)?;
    }
    // A grant of another application with the tenant's name has its own.
    let mut other_app = runtime().instantiate(
        Grant::new(backend.clone(), "other")
            .bound_to("acme")
            .with_budgets(bytes(1000)),
    )?;
    other_app.set("acme", "/k", b"fits", None)?;
    Ok(())
}

#[test]
fn a_ttl_cap_makes_the_tenants_entries_expire_and_spares_its_version() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let capped = Budgets {
        max_ttl: Some(1),
        ..Budgets::default()
    };
    let mut acme = runtime().instantiate(bound(&backend, "acme", capped))?;
    let mut operator = cache(&backend, "app")?;
    acme.set("acme", "/forever", b"v", None)?;
    acme.set("acme", "/long", b"v", Some(3600))?;
    operator.set("globex", "/forever", b"v", None)?;
    let version = server.raw_get("tc:app:n:acme")?;
    assert!(version.is_some());
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(acme.get("acme", "/forever")?, None);
    assert_eq!(acme.get("acme", "/long")?, None);
    assert_eq!(operator.get("globex", "/forever")?.as_deref(), Some(&b"v"[..]));
    // The tenant's version is no entry: it lives on, and so does a clear.
    assert_eq!(server.raw_get("tc:app:n:acme")?, version);
    Ok(())
}

#[test]
fn a_keyvalue_app_is_held_to_its_budget_and_told_why() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let big = "x".repeat(2000);
    let run = run_app(
        &kv_app(),
        bound(&backend, "acme", bytes(1000)),
        &["set", "b", "k", &big],
    );
    assert_eq!(run.status, Ok(1), "{run:?}");
    assert!(run.stderr.contains("budget"), "{run:?}");
    let run = run_app(&kv_app(), bound(&backend, "acme", bytes(1000)), &["get", "b", "k"]);
    assert_eq!(run.stdout.trim(), "(none)", "{run:?}");
    Ok(())
}

#[test]
fn usage_counts_each_top_tenant_by_name_and_sums_the_rest() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    // One tenant by name; a window that closes only when published.
    let backend = backend(&[&server])?.with_usage(1, Duration::from_secs(3600));
    let seen = counters(|| {
        let mut acme = runtime().instantiate(bound(&backend, "acme", bytes(10_000)))?;
        acme.set("acme", "/1", &[1; VALUE], None)?;
        acme.set("acme", "/2", &[2; VALUE], None)?;
        refusal(acme.set("acme", "/3", &[3; VALUE], None));
        let mut globex = runtime().instantiate(bound(&backend, "globex", Budgets::default()))?;
        globex.set("globex", "/k", b"small", None)?;
        assert!(globex.get("globex", "/k")?.is_some());
        assert!(globex.get("globex", "/none")?.is_none());
        let mut initech = runtime().instantiate(bound(&backend, "initech", Budgets::default()))?;
        assert!(initech.get("initech", "/none")?.is_none());
        backend.publish_usage();
        Ok(())
    })?;
    let count = |name: &str, tenant: &str| {
        seen.get(&format!("tenant_cache_tenant_{name}_total{{app=app,tenant={tenant}}}"))
            .copied()
            .unwrap_or(0)
    };
    assert!(count("bytes_written", "acme") > 2 * VALUE as u64, "{seen:#?}");
    assert_eq!(count("budget_refusals", "acme"), 1, "{seen:#?}");
    assert_eq!(count("hits", "acme"), 0, "{seen:#?}");
    // Globex and initech are outside the top one: summed.
    assert_eq!(count("hits", "(others)"), 1, "{seen:#?}");
    assert_eq!(count("misses", "(others)"), 2, "{seen:#?}");
    assert!(count("batches", "(others)") >= 4, "{seen:#?}");
    assert!(count("bytes_written", "(others)") >= 5, "{seen:#?}");
    assert_eq!(count("batches", "globex"), 0, "no label of its own: {seen:#?}");
    Ok(())
}
