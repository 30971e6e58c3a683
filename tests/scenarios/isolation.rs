//! docs/semantics.md, guarantee 1: a clear hides every entry of its tenant and nothing else.

use tenant_cache_tests::{MemcachedProcess, backend, cache, cache_on};

#[test]
fn clear_hides_every_entry_of_the_tenant() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let mut cache = cache_on(&server, "app")?;
    for n in 0..50 {
        cache.set("Barcelona", &format!("/page/{n}"), format!("v{n}").as_bytes(), None)?;
    }
    assert_eq!(cache.get("Barcelona", "/page/7")?.as_deref(), Some(&b"v7"[..]));
    cache.clear("Barcelona")?;
    for n in 0..50 {
        assert_eq!(
            cache.get("Barcelona", &format!("/page/{n}"))?,
            None,
            "entry {n} survived the clear"
        );
    }
    // The tenant is usable again right away.
    cache.set("Barcelona", "/page/7", b"new", None)?;
    assert_eq!(cache.get("Barcelona", "/page/7")?.as_deref(), Some(&b"new"[..]));
    Ok(())
}

#[test]
fn clear_leaves_other_tenants_untouched() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let mut cache = cache_on(&server, "app")?;
    cache.set("Lisboa", "/info", b"2 days", None)?;
    cache.set("Barcelona", "/info", b"3 days", None)?;
    cache.set("Barcelona2", "/info", b"4 days", None)?;
    cache.clear("Barcelona")?;
    assert_eq!(cache.get("Barcelona", "/info")?, None);
    assert_eq!(cache.get("Lisboa", "/info")?.as_deref(), Some(&b"2 days"[..]));
    assert_eq!(cache.get("Barcelona2", "/info")?.as_deref(), Some(&b"4 days"[..]));
    Ok(())
}

#[test]
fn apps_with_the_same_tenant_names_are_isolated() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut shop = cache(&backend, "shop")?;
    let mut blog = cache(&backend, "blog")?;
    shop.set("Lisboa", "/info", b"shop", None)?;
    blog.set("Lisboa", "/info", b"blog", None)?;
    assert_eq!(shop.get("Lisboa", "/info")?.as_deref(), Some(&b"shop"[..]));
    assert_eq!(blog.get("Lisboa", "/info")?.as_deref(), Some(&b"blog"[..]));
    shop.clear("Lisboa")?;
    assert_eq!(shop.get("Lisboa", "/info")?, None);
    assert_eq!(blog.get("Lisboa", "/info")?.as_deref(), Some(&b"blog"[..]));
    shop.clear_all()?;
    assert_eq!(blog.get("Lisboa", "/info")?.as_deref(), Some(&b"blog"[..]));
    Ok(())
}

#[test]
fn clears_never_flush_foreign_items() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    server.raw_set("someone-elses-item", "precious")?;
    let mut cache = cache_on(&server, "app")?;
    cache.set("Lisboa", "/info", b"2 days", None)?;
    cache.clear("Lisboa")?;
    cache.clear_all()?;
    assert_eq!(server.raw_get("someone-elses-item")?.as_deref(), Some("precious"));
    // Every key the component wrote carries the application prefix.
    let keys = server.keys()?;
    assert!(
        keys.iter()
            .filter(|key| *key != "someone-elses-item" && *key != "tc:pool")
            .all(|key| key.starts_with("tc:app:")),
        "{keys:?}"
    );
    Ok(())
}

#[test]
fn delete_removes_one_entry_only() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let mut cache = cache_on(&server, "app")?;
    cache.set("Lisboa", "/a", b"a", None)?;
    cache.set("Lisboa", "/b", b"b", None)?;
    cache.set("Barcelona", "/a", b"a", None)?;
    cache.delete("Lisboa", "/a")?;
    cache.delete("Lisboa", "/never-set")?;
    assert_eq!(cache.get("Lisboa", "/a")?, None);
    assert_eq!(cache.get("Lisboa", "/b")?.as_deref(), Some(&b"b"[..]));
    assert_eq!(cache.get("Barcelona", "/a")?.as_deref(), Some(&b"a"[..]));
    Ok(())
}
