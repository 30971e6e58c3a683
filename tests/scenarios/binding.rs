//! docs/semantics.md, guarantee 9, against an app that imports the
//! memcached capability itself (as one composed with tenant-cache does):
//! on a grant bound to a tenant, the host refuses everything beyond that
//! tenant's records, whatever the app sends. It reads, forges and clears
//! no other tenant's entries, writes nothing every tenant reads, cannot
//! undo the operator's clear of its own tenant, and cannot skew what other
//! instances recall from the memo.

use tenant_cache_host::{Backend, Grant};
use tenant_cache_tests::{AppRun, MemcachedProcess, backend, cache, hostile_app, run_app, run_app_async};

/// What the operator (an unbound instance) stored before the app ran,
/// and the version record the app's own tenant had before the operator
/// cleared it.
struct Before {
    records: Vec<(String, Option<Vec<u8>>)>,
    old_version: String,
}

const WATCHED: [&str; 4] = ["tc:app:a", "tc:app:n:globex", "tc:app:d:globex:k", "tc:app:n:acme"];

fn prepare(server: &MemcachedProcess, backend: &Backend) -> anyhow::Result<Before> {
    let mut operator = cache(backend, "app")?;
    operator.set("globex", "k", b"secret", None)?;
    operator.set("acme", "x", b"before the clear", None)?;
    let old_version = server.raw_get("tc:app:n:acme")?.expect("acme has a version");
    operator.clear("acme")?;
    let records = WATCHED
        .iter()
        .map(|key| Ok((key.to_string(), server.raw_get_bytes(key)?)))
        .collect::<anyhow::Result<_>>()?;
    Ok(Before { records, old_version })
}

/// Every attempt of the app was refused, and only those.
fn every_attempt_denied(run: &AppRun) {
    assert_eq!(run.status, Ok(0), "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"bound: Some(\"acme\")"), "{run:?}");
    assert!(
        lines[1].starts_with("own: allowed"),
        "its own records work: {}",
        lines[1]
    );
    let attempts: Vec<&str> = lines[2..lines.len() - 1].to_vec();
    assert_eq!(attempts.len(), 24, "{attempts:#?}");
    for attempt in attempts {
        assert!(attempt.ends_with(": denied"), "{attempt}");
    }
    assert_eq!(lines.last(), Some(&"memo-victim: none"));
}

/// Nothing the app could reach changed, and the operator's view holds.
fn nothing_changed(server: &MemcachedProcess, backend: &Backend, before: &Before) -> anyhow::Result<()> {
    for (key, value) in &before.records {
        assert_eq!(&server.raw_get_bytes(key)?, value, "{key} changed");
    }
    let mut operator = cache(backend, "app")?;
    assert_eq!(operator.get("globex", "k")?.as_deref(), Some(&b"secret"[..]));
    assert_eq!(operator.get("acme", "x")?, None, "the clear of acme was undone");
    // The memo the operator's instances share was not skewed: a fresh
    // instance writes globex in one round trip.
    let sent = backend.batches_sent();
    cache(backend, "app")?.set("globex", "k2", b"v", None)?;
    assert_eq!(backend.batches_sent() - sent, 1);
    Ok(())
}

fn args(before: &Before) -> [&str; 3] {
    ["acme", "globex", before.old_version.as_str()]
}

#[test]
fn a_bound_app_importing_the_capability_reaches_no_other_tenant() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let before = prepare(&server, &backend)?;
    let grant = Grant::new(backend.clone(), "app").bound_to("acme");
    let run = run_app(&hostile_app(), grant, &args(&before));
    every_attempt_denied(&run);
    nothing_changed(&server, &backend, &before)
}

#[test]
fn a_bound_app_importing_the_async_capability_reaches_no_other_tenant() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let before = prepare(&server, &backend)?;
    let grant = Grant::new(backend.clone(), "app").bound_to("acme");
    let run = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run_app_async(&hostile_app(), grant, &args(&before)));
    every_attempt_denied(&run);
    nothing_changed(&server, &backend, &before)
}

#[test]
fn a_bound_app_may_create_a_missing_application_version_but_only_fresh() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut operator = cache(&backend, "app")?;
    operator.set("globex", "k", b"secret", None)?;
    // The application version is lost (evicted, say): the bound tenant's
    // own component recreates it with a version the host drew, and the
    // entries written under the lost one stay hidden.
    assert!(server.raw_delete("tc:app:a")?);
    let mut acme = tenant_cache_tests::runtime().instantiate(Grant::new(backend.clone(), "app").bound_to("acme"))?;
    acme.set("acme", "k", b"mine", None)?;
    assert_eq!(acme.get("acme", "k")?.as_deref(), Some(&b"mine"[..]));
    assert!(server.raw_get("tc:app:a")?.is_some());
    assert_eq!(cache(&backend, "app")?.get("globex", "k")?, None);
    Ok(())
}
