//! A host that creates an instance per request, with the pooling
//! allocator, takes no page faults for it: the component's stack and
//! static memory (its first heap included) fit in the part of a pooled
//! memory that wasmtime keeps resident between instances. A component that
//! outgrew it took two faults per instance here, about a third of what a
//! fresh instance costs.

use tenant_cache_host::{COMPONENT, Grant, Runtime, RuntimeOptions};
use tenant_cache_tests::{MemcachedProcess, backend};

/// Minor page faults this thread has taken so far (Linux).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("Linux /proc");
    // The fields after the command name, which is in parentheses and may
    // hold spaces: `state` comes first, `minflt` is the eighth.
    let after_name = &stat[stat.rfind(')').expect("a command name") + 2..];
    after_name
        .split(' ')
        .nth(7)
        .and_then(|field| field.parse().ok())
        .expect("minflt field")
}

#[test]
fn a_fresh_pooled_instance_per_request_takes_no_page_faults() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let runtime = Runtime::from_bytes(
        COMPONENT,
        RuntimeOptions {
            pooling: true,
            ..Default::default()
        },
    )?;
    let grant = Grant::new(backend(&[&server])?, "fresh");
    runtime
        .instantiate(grant.clone())?
        .set("Lisboa", "/info", b"2 days", None)?;
    // The first instances fault the pool's pages in once.
    for _ in 0..20 {
        runtime.instantiate(grant.clone())?.get("Lisboa", "/info")?;
    }
    let instances = 200;
    let before = minor_faults();
    for _ in 0..instances {
        let mut cache = runtime.instantiate(grant.clone())?;
        assert_eq!(cache.get("Lisboa", "/info")?.as_deref(), Some(&b"2 days"[..]));
    }
    let faults = minor_faults() - before;
    assert!(
        faults < instances / 10,
        "{faults} page faults for {instances} fresh instances"
    );
    Ok(())
}

#[test]
fn a_pooled_runtime_holds_as_many_live_instances_as_it_was_given() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let grant = Grant::new(backend(&[&server])?, "fresh");
    for max_instances in [256, 300] {
        let runtime = Runtime::from_bytes(
            COMPONENT,
            RuntimeOptions {
                pooling: true,
                max_instances,
                ..Default::default()
            },
        )?;
        let mut live = Vec::new();
        for n in 0..max_instances {
            let mut cache = runtime
                .instantiate(grant.clone())
                .map_err(|error| anyhow::anyhow!("instance {n} of {max_instances}: {error:#}"))?;
            cache.get("Lisboa", "/info")?;
            live.push(cache);
        }
        let one_more = runtime.instantiate(grant.clone()).map(drop);
        assert!(one_more.is_err(), "instance {max_instances} of {max_instances}");
        // A dropped instance's place is taken again.
        live.pop();
        runtime.instantiate(grant.clone())?.get("Lisboa", "/info")?;
    }
    Ok(())
}
