//! docs/semantics.md, guarantee 2: `clear-all` clears every tenant of one application, and only it.

use tenant_cache_tests::{MemcachedProcess, backend, cache};

#[test]
fn clear_all_clears_every_tenant_of_the_application_only() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut shop = cache(&backend, "shop")?;
    let mut blog = cache(&backend, "blog")?;
    let tenants: Vec<String> = (0..20).map(|n| format!("tenant-{n}")).collect();
    for tenant in &tenants {
        shop.set(tenant, "/info", b"shop", None)?;
        blog.set(tenant, "/info", b"blog", None)?;
    }
    shop.clear_all()?;
    for tenant in &tenants {
        assert_eq!(shop.get(tenant, "/info")?, None, "{tenant} survived clear-all");
        assert_eq!(
            blog.get(tenant, "/info")?.as_deref(),
            Some(&b"blog"[..]),
            "{tenant} of another app lost"
        );
    }
    // A second instance (another process, say) sees the clear-all too.
    let mut other_shop = cache(&backend, "shop")?;
    assert_eq!(other_shop.get("tenant-3", "/info")?, None);
    // And writes after it are visible.
    other_shop.set("tenant-3", "/info", b"after", None)?;
    assert_eq!(shop.get("tenant-3", "/info")?.as_deref(), Some(&b"after"[..]));
    Ok(())
}

#[test]
fn a_stale_instance_cannot_write_under_the_old_application_version() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut stale = cache(&backend, "shop")?;
    let mut clearer = cache(&backend, "shop")?;
    stale.set("Lisboa", "/a", b"before", None)?;
    clearer.clear_all()?;
    // `stale` still remembers the old versions; its write must land
    // visibly (redone under the new ones), and the old entry stay hidden.
    stale.set("Lisboa", "/b", b"after", None)?;
    assert_eq!(clearer.get("Lisboa", "/b")?.as_deref(), Some(&b"after"[..]));
    assert_eq!(clearer.get("Lisboa", "/a")?, None);
    Ok(())
}
