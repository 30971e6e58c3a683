//! `wasi:keyvalue` apps served by tenant-cache through the library's entry
//! point (`keyvalue::add_to_linker`): an ordinary command component
//! (`components/kv-app`) that knows nothing of tenants, bound to a tenant
//! by the host, on memcached and on the embedded store.

use tenant_cache_host::{Backend, CacheError, Grant};
use tenant_cache_tests::{
    AppRun, MemcachedProcess, backend, cache, kv_app, kv_atomics_app, kv_draft2_app, run_app, run_app_async, runtime,
};

/// Runs the kv-app on `backend` for `app`, bound to `tenant` if given.
fn app(backend: &Backend, tenant: Option<&str>, args: &[&str]) -> AppRun {
    let grant = Grant::new(backend.clone(), "shop");
    let grant = match tenant {
        Some(tenant) => grant.bound_to(tenant),
        None => grant,
    };
    run_app(&kv_app(), grant, args)
}

/// What a successful run printed.
fn printed(run: AppRun) -> String {
    assert_eq!(run.status, Ok(0), "{run:?}");
    run.stdout
}

fn backends(server: &MemcachedProcess) -> anyhow::Result<[Backend; 2]> {
    Ok([backend(&[server])?, Backend::embedded()])
}

#[test]
fn a_bound_app_reaches_its_own_tenant_only_whatever_bucket_it_names() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    for backend in backends(&server)? {
        printed(app(&backend, Some("acme"), &["set", "cart", "item", "apples"]));
        printed(app(&backend, Some("globex"), &["set", "cart", "item", "pears"]));
        assert_eq!(
            printed(app(&backend, Some("acme"), &["get", "cart", "item"])),
            "apples\n"
        );
        assert_eq!(
            printed(app(&backend, Some("globex"), &["get", "cart", "item"])),
            "pears\n"
        );
        // Buckets are namespaces: another bucket of the same tenant is empty.
        assert_eq!(
            printed(app(&backend, Some("acme"), &["get", "wishlist", "item"])),
            "(none)\n"
        );
        // Naming the other tenant, or its bucket as written in memcached,
        // opens a bucket inside the bound tenant all the same.
        for bucket in ["acme", "globex", "cart", "acme:cart", "../acme"] {
            assert_eq!(
                printed(app(&backend, Some("globex"), &["get", bucket, "item"])),
                if bucket == "cart" { "pears\n" } else { "(none)\n" },
                "{bucket}"
            );
        }
        // The bound instance serves the tenant-cache interface for its
        // tenant only, too.
        let mut bound = runtime().instantiate(Grant::new(backend.clone(), "shop").bound_to("globex"))?;
        assert!(matches!(
            bound.get("acme", "cart:item"),
            Err(CacheError::InvalidInput(_))
        ));
        assert!(matches!(bound.clear("acme"), Err(CacheError::InvalidInput(_))));
        assert!(matches!(bound.clear_all(), Err(CacheError::InvalidInput(_))));
        assert_eq!(bound.get("globex", "cart:item")?.as_deref(), Some(&b"pears"[..]));
    }
    Ok(())
}

#[test]
fn an_unbound_app_names_the_tenant_with_the_bucket() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    for backend in backends(&server)? {
        printed(app(&backend, None, &["set", "Lisboa", "/info", "2 days"]));
        // The bucket is the tenant, its keys the tenant's keys.
        let mut cache = cache(&backend, "shop")?;
        assert_eq!(cache.get("Lisboa", "/info")?.as_deref(), Some(&b"2 days"[..]));
        cache.set("Barcelona", "/info", b"3 days", None)?;
        assert_eq!(printed(app(&backend, None, &["get", "Barcelona", "/info"])), "3 days\n");
        // What a bound app stores in bucket B is key B:K of its tenant.
        printed(app(&backend, Some("acme"), &["set", "cart", "item", "apples"]));
        assert_eq!(cache.get("acme", "cart:item")?.as_deref(), Some(&b"apples"[..]));
    }
    Ok(())
}

#[test]
fn clears_from_outside_hide_every_bucket_of_the_app() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    for backend in backends(&server)? {
        for bucket in ["cart", "wishlist"] {
            printed(app(&backend, Some("acme"), &["set", bucket, "item", "apples"]));
            printed(app(&backend, Some("globex"), &["set", bucket, "item", "pears"]));
        }
        let mut cache = cache(&backend, "shop")?;
        cache.clear("acme")?;
        for bucket in ["cart", "wishlist"] {
            assert_eq!(
                printed(app(&backend, Some("acme"), &["get", bucket, "item"])),
                "(none)\n"
            );
            assert_eq!(
                printed(app(&backend, Some("globex"), &["get", bucket, "item"])),
                "pears\n"
            );
        }
        // Written again after the clear, it is visible again.
        printed(app(&backend, Some("acme"), &["set", "cart", "item", "plums"]));
        assert_eq!(
            printed(app(&backend, Some("acme"), &["get", "cart", "item"])),
            "plums\n"
        );
        cache.clear_all()?;
        for tenant in ["acme", "globex"] {
            assert_eq!(
                printed(app(&backend, Some(tenant), &["get", "cart", "item"])),
                "(none)\n"
            );
        }
    }
    Ok(())
}

#[test]
fn batch_calls_exists_and_delete_work_on_a_bucket() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    for backend in backends(&server)? {
        let acme = |args: &[&str]| printed(app(&backend, Some("acme"), args));
        acme(&["set-many", "cart", "a=1", "b=2", "c=3"]);
        assert_eq!(
            acme(&["get-many", "cart", "a", "b", "x", "c"]),
            "a=1\nb=2\nx (none)\nc=3\n"
        );
        assert_eq!(acme(&["exists", "cart", "b"]), "true\n");
        acme(&["delete-many", "cart", "a", "b", "never-set"]);
        assert_eq!(acme(&["get-many", "cart", "a", "b", "c"]), "a (none)\nb (none)\nc=3\n");
        acme(&["delete", "cart", "c"]);
        assert_eq!(acme(&["exists", "cart", "c"]), "false\n");
        // Another app of the platform (another grant) sees none of it.
        acme(&["set", "cart", "a", "1"]);
        let other = run_app(
            &kv_app(),
            Grant::new(backend.clone(), "blog").bound_to("acme"),
            &["get", "cart", "a"],
        );
        assert_eq!(printed(other), "(none)\n");
    }
    Ok(())
}

#[test]
fn list_keys_fails_with_an_error_that_says_why() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    printed(app(&backend, Some("acme"), &["set", "cart", "item", "apples"]));
    let run = app(&backend, Some("acme"), &["list", "cart"]);
    assert_eq!(run.status, Ok(1), "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("memcached cannot enumerate"), "{run:?}");
    Ok(())
}

#[test]
fn apps_count_with_atomics_at_both_drafts_on_one_counter_per_tenant() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    for backend in backends(&server)? {
        let grant = |tenant: &str| Grant::new(backend.clone(), "shop").bound_to(tenant);
        let draft = |tenant: &str, args: &[&str]| printed(run_app(&kv_atomics_app(), grant(tenant), args));
        let draft2 = |tenant: &str, args: &[&str]| printed(run_app(&kv_draft2_app(), grant(tenant), args));
        // A counter made by a signed increment (draft2) reads back signed.
        assert_eq!(draft2("acme", &["visit", "site", "visits", "3"]), "3\n");
        assert_eq!(
            draft("acme", &["visit", "site", "visits", "2"]),
            "5\n",
            "the same counter"
        );
        assert_eq!(draft2("acme", &["increment", "site", "visits", "-7"]), "-2\n");
        assert_eq!(draft("acme", &["get", "site", "visits"]), "-2\n");
        // One made by an unsigned increment (draft) reads back unsigned.
        assert_eq!(draft("acme", &["increment", "site", "bytes", "1"]), "1\n");
        assert_eq!(draft2("acme", &["increment", "site", "bytes", "-2"]), "-1\n");
        assert_eq!(draft2("acme", &["get", "site", "bytes"]), "18446744073709551615\n");
        assert_eq!(draft("acme", &["increment", "site", "bytes", "2"]), "1\n", "wrapping");
        assert_eq!(
            draft("globex", &["visit", "site", "visits", "1"]),
            "1\n",
            "another tenant"
        );
        // A compare-and-swap loop, on a counter and on a plain value.
        assert_eq!(draft2("acme", &["cas-add", "site", "visits", "10", "3"]), "28 0\n");
        assert_eq!(draft("acme", &["increment", "site", "visits", "1"]), "29\n");
        assert_eq!(draft2("acme", &["cas-add", "site", "total", "5", "2"]), "10 0\n");
        // A clear of the tenant hides its counters.
        runtime()
            .instantiate(Grant::new(backend.clone(), "shop"))?
            .clear("acme")?;
        assert_eq!(draft("acme", &["get", "site", "visits"]), "(none)\n");
        assert_eq!(draft("acme", &["visit", "site", "visits", "1"]), "1\n");
        // Not a counter: an error the app can print, not a trap.
        draft2("acme", &["set", "site", "name", "acme inc"]);
        let run = run_app(&kv_atomics_app(), grant("acme"), &["increment", "site", "name", "1"]);
        assert_eq!(run.status, Ok(1), "{run:?}");
        assert!(run.stderr.contains("not a counter"), "{run:?}");
    }
    Ok(())
}

#[test]
fn async_hosts_count_and_swap_too() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let grant = || Grant::new(backend.clone(), "shop");
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    tokio.block_on(async {
        let run = run_app_async(&kv_atomics_app(), grant(), &["visit", "acme", "visits", "4"]).await;
        assert_eq!(printed(run), "4\n");
        let run = run_app_async(&kv_draft2_app(), grant(), &["cas-add", "acme", "visits", "2", "2"]).await;
        assert_eq!(printed(run), "8 0\n");
    });
    let mut cache = runtime().instantiate(grant())?;
    assert_eq!(
        cache.increment("acme", "visits", 1)?,
        9,
        "the unbound bucket is the tenant"
    );
    Ok(())
}

#[test]
fn an_app_holds_a_bounded_number_of_buckets() -> anyhow::Result<()> {
    let backend = Backend::embedded();
    let limit = tenant_cache_host::keyvalue::MAX_OPEN_BUCKETS;
    let within = app(&backend, Some("acme"), &["open-many", &limit.to_string()]);
    assert_eq!(printed(within), format!("{limit} buckets open\n"));
    let past = app(&backend, Some("acme"), &["open-many", &(limit + 1).to_string()]);
    assert_eq!(past.status, Ok(1), "{past:?}");
    assert!(
        past.stderr.contains(&format!("bucket {limit}: this instance holds")),
        "{past:?}"
    );
    Ok(())
}

#[test]
fn keyvalue_calls_cost_one_round_trip_each_in_steady_state() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    // A brand-new process records the pool on its first batch: not counted.
    printed(app(&backend, None, &["set", "warm-up", "k", "v"]));
    for tenant in [Some("acme"), None] {
        let before = backend.batches_sent();
        // One get to learn the versions, 10 rounds of the seven calls, and
        // one more for the tenant's first write, which has the host draw
        // the versions the get found none of.
        printed(app(&backend, tenant, &["steady", "cart", "10"]));
        assert_eq!(backend.batches_sent() - before, 1 + 7 * 10 + 1, "{tenant:?}");
    }
    Ok(())
}

#[test]
fn the_async_entry_point_serves_an_app_on_tokio() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let grant = || Grant::new(backend.clone(), "shop").bound_to("acme");
        let set = run_app_async(&kv_app(), grant(), &["set", "cart", "item", "apples"]).await;
        assert_eq!(set.status, Ok(0), "{set:?}");
        let get = run_app_async(&kv_app(), grant(), &["get", "cart", "item"]).await;
        assert_eq!((get.status, get.stdout.as_str()), (Ok(0), "apples\n"));
        let before = backend.batches_sent();
        let steady = run_app_async(&kv_app(), grant(), &["steady", "cart", "5"]).await;
        assert_eq!(steady.status, Ok(0), "{steady:?}");
        assert_eq!(backend.batches_sent() - before, 1 + 7 * 5);
    });
    Ok(())
}

#[test]
fn a_draft2_app_is_served_by_the_same_buckets() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    for backend in backends(&server)? {
        let draft2 = |tenant: &str, args: &[&str]| {
            run_app(
                &kv_draft2_app(),
                Grant::new(backend.clone(), "shop").bound_to(tenant),
                args,
            )
        };
        printed(draft2("acme", &["set", "cart", "item", "apples"]));
        assert_eq!(printed(draft2("acme", &["get", "cart", "item"])), "apples\n");
        assert_eq!(printed(draft2("globex", &["get", "cart", "item"])), "(none)\n");
        // One bucket, whichever version the app speaks.
        assert_eq!(
            printed(app(&backend, Some("acme"), &["get", "cart", "item"])),
            "apples\n"
        );
        printed(app(&backend, Some("acme"), &["set", "cart", "other", "pears"]));
        assert_eq!(
            printed(draft2("acme", &["get-many", "cart", "item", "other", "none"])),
            "item=apples\nother=pears\nnone (none)\n"
        );
        let listed = draft2("acme", &["list", "cart"]);
        assert_eq!(listed.status, Ok(1), "{listed:?}");
        assert!(listed.stderr.contains("memcached cannot enumerate"), "{listed:?}");
        cache(&backend, "shop")?.clear("acme")?;
        assert_eq!(printed(draft2("acme", &["get", "cart", "item"])), "(none)\n");
    }
    Ok(())
}
