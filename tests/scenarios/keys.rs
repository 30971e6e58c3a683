//! docs/semantics.md, guarantee 5: every (tenant, key) maps to its own valid memcached key.

use tenant_cache_tests::{MemcachedProcess, cache_on};

/// Tenants and keys chosen to break naive `tenant:key` schemes and the
/// memcached wire format.
fn hostile() -> Vec<String> {
    let mut strings: Vec<String> = [
        "",
        " ",
        "a b",
        "\r\n",
        "x\r\nflush_all\r\n",
        "\0",
        ":",
        "::",
        "a:",
        ":a",
        "/",
        "%",
        "%3A",
        "#",
        "#abc",
        "*",
        "flush_all",
        "delete",
        "stats",
        "e\u{301}",
        "\u{202e}abc",
        "🦀",
        "a:1/x",
        "x:5/y",
        "a",
        "y",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    strings.extend([250, 251, 1000, 100_000].iter().map(|&n| "k".repeat(n)));
    // Long strings that differ only at the very end must not be truncated
    // into one.
    strings.push(format!("{}1", "k".repeat(999)));
    strings
}

#[test]
fn colliding_tenant_key_pairs_stay_distinct() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    server.raw_set("sentinel", "still-here")?;
    let mut cache = cache_on(&server, "app")?;
    // The classic collision: ("a", "x:5/y") and ("a:1/x", "y") both give
    // "a:1/x:5/y"-like keys under naive schemes with a counter of 1.
    cache.set("a", "x:5/y", b"first", None)?;
    cache.set("a:1/x", "y", b"second", None)?;
    assert_eq!(cache.get("a", "x:5/y")?.as_deref(), Some(&b"first"[..]));
    assert_eq!(cache.get("a:1/x", "y")?.as_deref(), Some(&b"second"[..]));

    let strings = hostile();
    let value = |t: usize, k: usize| format!("{t}/{k}").into_bytes();
    for (t, tenant) in strings.iter().enumerate() {
        for (k, key) in strings.iter().enumerate().step_by(3) {
            cache.set(tenant, key, &value(t, k), None)?;
        }
    }
    for (t, tenant) in strings.iter().enumerate() {
        for (k, key) in strings.iter().enumerate().step_by(3) {
            assert_eq!(cache.get(tenant, key)?, Some(value(t, k)), "tenant {t} key {k}");
        }
    }
    // No command was injected: the sentinel survived, and every key the
    // component wrote is a printable, prefixed key of at most 250 bytes
    // (besides the host's record of the pool).
    assert_eq!(server.raw_get("sentinel")?.as_deref(), Some("still-here"));
    for key in server
        .keys()?
        .iter()
        .filter(|key| *key != "sentinel" && *key != "tc:pool")
    {
        assert!(key.starts_with("tc:app:"), "{key:?}");
        assert!(
            key.len() <= 250 && key.bytes().all(|byte| byte.is_ascii_graphic()),
            "{key:?}"
        );
    }
    Ok(())
}

#[test]
fn clearing_a_hostile_tenant_clears_only_it() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let mut cache = cache_on(&server, "app")?;
    let strings = hostile();
    for tenant in &strings {
        cache.set(tenant, "k", tenant.as_bytes(), None)?;
    }
    for (cleared, victim) in strings.iter().enumerate() {
        cache.clear(victim)?;
        assert_eq!(cache.get(victim, "k")?, None, "{cleared}");
        for tenant in &strings[cleared + 1..] {
            assert_eq!(
                cache.get(tenant, "k")?.as_deref(),
                Some(tenant.as_bytes()),
                "cleared {cleared}"
            );
        }
    }
    Ok(())
}
