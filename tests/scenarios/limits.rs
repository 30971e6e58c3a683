//! What one call may cost the host, and values at the edge of what
//! memcached stores: a batch past a limit fails at once with a typed error
//! naming the limit; a large pipeline within the limits completes; a value
//! too large for memcached fails and removes its key on every path; a
//! value larger than this host reads is a miss, not a failure of its
//! tenant.

use std::time::{Duration, Instant};

use tenant_cache_host::{
    Backend, CacheError, Grant, Limit, MemcachedOptions, Plugin, RuntimeOptions, TenantCache, add_to_linker,
};
use tenant_cache_tests::{MemcachedProcess, backend, cache, misbehaving, runtime};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

const MIB: usize = 1024 * 1024;

#[test]
fn a_batch_whose_replies_pass_the_limit_fails_at_once_naming_it() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut attacker = misbehaving(RuntimeOptions::default())?.instantiate(Grant::new(backend, "attacker"))?;
    attacker.set("escape", "big", &vec![7u8; 1_000_000], None)?;
    // 1 000 gets of a 1 MB item: 1 GB of replies, past the component's
    // 64 MiB memory, which bounds what the host gathers.
    let started = Instant::now();
    match attacker.get("amplify", "big") {
        Err(CacheError::Internal(message)) => assert!(message.contains("ReplyBytes(67108864)"), "{message}"),
        other => panic!("expected the reply limit, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // The connection with unread replies was dropped; the next call works.
    assert_eq!(attacker.get("escape", "big")?.map(|value| value.len()), Some(1_000_000));
    Ok(())
}

#[test]
fn a_batch_borrowing_one_buffer_many_times_is_stopped_by_wasmtime() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut attacker = misbehaving(RuntimeOptions::default())?.instantiate(Grant::new(backend, "attacker"))?;
    // 1 000 sets borrowing one 1 MB value: 1 GB the host would copy in.
    match attacker.set("amplify", "k", &vec![7u8; 1_000_000], None) {
        Err(CacheError::Trap(error)) => assert!(format!("{error:#}").contains("fuel"), "{error:#}"),
        other => panic!("expected wasmtime's hostcall fuel to stop it, got {other:?}"),
    }
    assert_eq!(attacker.get("fine", "k")?.as_deref(), Some(&b"ok"[..]));
    Ok(())
}

#[test]
fn a_large_pipeline_within_the_limits_completes_and_one_beyond_is_refused() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut attacker = misbehaving(RuntimeOptions::default())?.instantiate(Grant::new(backend.clone(), "attacker"))?;
    // 100 000 gets of 150-byte keys: a 16 MB request, read while written.
    let started = Instant::now();
    assert_eq!(attacker.get("many", "100000:150")?.as_deref(), Some(&b"100000"[..]));
    eprintln!("100 000 gets of 150-byte keys in one batch: {:?}", started.elapsed());
    match attacker.get("many", "100001:10") {
        Err(CacheError::Internal(message)) => assert!(message.contains("CommandsPerBatch(100000)"), "{message}"),
        other => panic!("expected the command limit, got {other:?}"),
    }
    // Our own component, with get-many and set-many that large.
    let mut cache = cache(&backend, "app")?;
    let keys: Vec<String> = (0..40_000).map(|n| format!("{n:0>150}")).collect();
    let entries: Vec<(String, Vec<u8>)> = keys[..20_000]
        .iter()
        .map(|key| (key.clone(), vec![b'v'; 100]))
        .collect();
    cache.set_many("t", &entries, None)?;
    let values = cache.get_many("t", &keys)?;
    assert!(
        values[..20_000]
            .iter()
            .all(|value| value.as_deref() == Some(&[b'v'; 100][..]))
    );
    assert!(values[20_000..].iter().all(Option::is_none));
    match cache.get_many("t", &vec![String::from("k"); 100_000]) {
        Err(CacheError::OverLimit(Limit::CommandsPerBatch(100_000))) => {}
        other => panic!("expected the command limit, got {:?}", other.map(|values| values.len())),
    }
    Ok(())
}

#[test]
fn a_value_larger_than_this_host_reads_is_a_miss_not_a_failure() -> anyhow::Result<()> {
    let server = MemcachedProcess::start_with(&["-I", "2m"])?;
    let options = |limit| MemcachedOptions {
        item_size_limit: limit,
        ..MemcachedOptions::default()
    };
    let large = Backend::memcached(&[server.address()], options(2 * MIB as u64))?;
    let mut writer = cache(&large, "app")?;
    writer.set("t", "big", &vec![1u8; 3 * MIB / 2], None)?;
    writer.set("t", "small", b"fine", None)?;
    let default = Backend::memcached(&[server.address()], options(MIB as u64))?;
    let mut reader = cache(&default, "app")?;
    assert_eq!(reader.get("t", "big")?, None);
    assert_eq!(reader.get("t", "small")?.as_deref(), Some(&b"fine"[..]));
    let both = reader.get_many("t", &["big".into(), "small".into()])?;
    assert_eq!(both, [None, Some(b"fine".to_vec())]);
    Ok(())
}

/// One way of storing a value: which call and how fresh the instance.
type Setter = Box<dyn FnMut(&[u8]) -> Result<(), CacheError>>;

/// The ways to store "t"/"k": warm and fresh instances, `set` and
/// `set-many`, through `TenantCache` and through `Plugin` in an embedder's
/// own store.
fn setters(backend: &Backend) -> anyhow::Result<Vec<(&'static str, Setter)>> {
    let mut warm = cache(backend, "app")?;
    warm.set("t", "warm-up", b"x", None)?;
    let mut warm_many = cache(backend, "app")?;
    warm_many.set("t", "warm-up", b"x", None)?;
    let (fresh_backend, many_backend) = (backend.clone(), backend.clone());
    let engine = Engine::default();
    let component = Component::new(&engine, tenant_cache_host::COMPONENT)?;
    let mut linker = Linker::new(&engine);
    add_to_linker(&mut linker, |grant: &mut Grant| grant)?;
    let plugin_backend = backend.clone();
    let plugin = move |value: &[u8]| -> Result<(), CacheError> {
        let mut store = Store::new(&engine, Grant::new(plugin_backend.clone(), "app"));
        let plugin = Plugin::instantiate(&mut store, &component, &linker).map_err(CacheError::Trap)?;
        plugin.set(&mut store, "t", "k", value, None)
    };
    let entry = |value: &[u8]| [(String::from("k"), value.to_vec())];
    let fresh = move |backend: &Backend| cache(backend, "app").expect("an instance");
    Ok(vec![
        ("warm set", Box::new(move |value| warm.set("t", "k", value, None))),
        (
            "warm set-many",
            Box::new(move |value| warm_many.set_many("t", &entry(value), None)),
        ),
        (
            "fresh set",
            Box::new(move |value| fresh(&fresh_backend).set("t", "k", value, None)),
        ),
        (
            "fresh set-many",
            Box::new(move |value| fresh(&many_backend).set_many("t", &entry(value), None)),
        ),
        ("plugin set", Box::new(plugin)),
    ])
}

fn check_sizes_around_the_limit(backend: &Backend) -> anyhow::Result<()> {
    let mut reader = cache(backend, "app")?;
    let limit = backend.item_size_limit() as usize;
    let sizes: Vec<usize> = (limit - 160..=limit + 16)
        .step_by(8)
        .chain([limit - 1000, 2 * limit])
        .collect();
    for (path, mut set) in setters(backend)? {
        for &size in &sizes {
            reader.set("t", "k", b"old", None)?;
            let value: Vec<u8> = (0..size).map(|n| (n % 251) as u8).collect();
            match set(&value) {
                Ok(()) => assert!(
                    reader.get("t", "k")? == Some(value),
                    "{path}, {size} bytes: not read back"
                ),
                Err(CacheError::ValueTooLarge {
                    size: reported,
                    limit: reported_limit,
                }) => {
                    assert_eq!((reported, reported_limit), (size as u64, limit as u64), "{path}");
                    assert_eq!(
                        reader.get("t", "k")?,
                        None,
                        "{path}, {size} bytes: the old value survived"
                    );
                }
                Err(other) => panic!("{path}, {size} bytes: {other:?}"),
            }
        }
    }
    Ok(())
}

#[test]
fn a_value_too_large_fails_and_removes_its_key_on_every_path() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    check_sizes_around_the_limit(&backend(&[&server])?)?;
    check_sizes_around_the_limit(&Backend::embedded())
}

#[test]
fn a_host_that_knows_no_pool_yet_reads_in_one_batch_and_learns_the_pool_before_it_writes() -> anyhow::Result<()> {
    // The embedded store has no pool; a memcached one is found with the
    // first batch when it only reads (in the same round trip), and before
    // the first batch that writes (so a process listing the wrong servers
    // writes nothing).
    let server = MemcachedProcess::start()?;
    backend(&[&server]).and_then(|backend| Ok(cache(&backend, "app")?.set("t", "k", b"v", None)?))?;
    let reader = backend(&[&server])?;
    let mut instance: TenantCache = runtime().instantiate(Grant::new(reader.clone(), "app"))?;
    assert_eq!(instance.get("t", "k")?.as_deref(), Some(&b"v"[..]));
    assert_eq!(reader.batches_sent(), 1);
    let writer = backend(&[&server])?;
    let mut instance: TenantCache = runtime().instantiate(Grant::new(writer.clone(), "app"))?;
    instance.clear("t")?;
    assert_eq!(writer.batches_sent(), 2);
    instance.clear("t")?;
    assert_eq!(writer.batches_sent(), 3);
    Ok(())
}
